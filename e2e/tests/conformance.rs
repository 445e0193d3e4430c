//! The Compose conformance suite: Compose files written for this project in the
//! style people write them, one folder per case under `e2e/conformance/`, each applied the way
//! a user would (`capstan apply` run in the case's folder) against the real engine.
//!
//! A case is a folder with its Compose files (and `.env`, override files, env files, ...) and
//! an `expect.yaml`:
//!
//! ```yaml
//! apply:                 # how `capstan apply` is run (all optional)
//!   cwd: sub/dir         # the folder apply runs in, within the case (default: the case's)
//!   files: [a.yaml]      # -f files in order; none: Compose's own discovery from `cwd`
//!   stdin: a.yaml        # -f - with this file on standard input
//!   args: [--profile, debug]
//!   env: {KEY: value}    # the client's whole environment (nothing else is inherited)
//! services: [web, db]    # exactly the services the dry run and the apply report
//! containers:            # <service>-<n> (prefixed with the stack), or /NAME for container_name
//!   web-1:
//!     env:TZ: Europe/Paris                   # a variable of Config.Env (null: absent)
//!     label:com.example.tier: web            # a label (null: absent)
//!     mount:/data: volume {stack}_data rw=true mode=z propagation=
//!     '{{.Config.User}}': "1000"             # any docker inspect template
//!     '{{json .NetworkSettings}}': {contains: ["a", "b"]}
//! networks: {back: {'{{.Internal}}': "true"}}  # docker network inspect of <stack>_back
//! volumes: {data: {'{{.Driver}}': local}}      # docker volume inspect of <stack>_data
//! http: ["http://127.0.0.1:{port}/"]           # must answer 200
//! ```
//!
//! `{stack}`, `{dir}` (the case folder) and `{port}` (a free port, one per case) are replaced
//! in every value and template. The stack is named with `--stack`, which Compose files see as
//! `${COMPOSE_PROJECT_NAME}` (as with `docker compose -p`). Every case is first applied with
//! `--dry-run` (exit 0, each expected service "created", and etcd's revision unchanged:
//! nothing written), then for real with `--wait`, inspected, dry-run again (each service
//! "unchanged": the resolved file is stable), and deleted. Adding a case is adding a
//! folder. `CAPSTAN_CONFORMANCE=a,b` runs only those cases.

use capstan_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

struct Case {
    name: String,
    dir: PathBuf,
    expect: Value,
}

/// Every case folder (a folder with an `expect.yaml`), by name.
fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let only: Option<Vec<String>> = std::env::var("CAPSTAN_CONFORMANCE")
        .ok()
        .map(|s| s.split(',').map(|c| c.trim().to_string()).collect());
    let mut out = vec![];
    for entry in std::fs::read_dir(&root).expect("e2e/conformance exists") {
        let dir = entry.unwrap().path();
        let file = dir.join("expect.yaml");
        if !file.is_file() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let expect: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", file.display()));
        check_keys(&file, &expect);
        let dir = dir.canonicalize().unwrap();
        out.push(Case { name, dir, expect });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// An expect.yaml with a misspelt key would check less than it says: refuse it.
fn check_keys(file: &Path, expect: &Value) {
    let allowed = [
        "apply",
        "services",
        "containers",
        "networks",
        "volumes",
        "http",
    ];
    let apply = ["cwd", "files", "stdin", "args", "env"];
    let top = expect.as_object().into_iter().flatten();
    let under = expect["apply"].as_object().into_iter().flatten();
    for (key, known) in top
        .map(|(k, _)| (k, &allowed[..]))
        .chain(under.map(|(k, _)| (k, &apply[..])))
    {
        assert!(
            known.contains(&key.as_str()),
            "{}: unknown key {key:?} (known: {})",
            file.display(),
            known.join(", ")
        );
    }
}

/// One case's run: its stack and the values its placeholders stand for.
struct Run<'a> {
    case: &'a Case,
    stack: String,
    port: u16,
}

impl Run<'_> {
    fn subst(&self, s: &str) -> String {
        s.replace("{stack}", &self.stack)
            .replace("{dir}", &self.case.dir.display().to_string())
            .replace("{port}", &self.port.to_string())
    }

    fn text(&self, v: &Value) -> String {
        match v {
            Value::String(s) => self.subst(s),
            other => other.to_string(),
        }
    }

    /// `capstan apply` as the case says, in its folder, with `extra` flags.
    fn apply(&self, d: &Daemon, extra: &[&str]) -> Output {
        let apply = &self.case.expect["apply"];
        let mut cmd = Command::new(capstan_bin());
        cmd.current_dir(self.case.dir.join(apply["cwd"].as_str().unwrap_or(".")))
            .env_clear()
            .env("CAPSTAN_SERVER", d.server())
            .env("HOME", std::env::var("HOME").unwrap_or_default());
        if let Some(env) = apply["env"].as_object() {
            for (k, v) in env {
                cmd.env(k, self.text(v));
            }
        }
        cmd.arg("apply");
        for f in apply["files"].as_array().into_iter().flatten() {
            cmd.args(["-f", &self.text(f)]);
        }
        let stdin = apply["stdin"].as_str().map(|f| {
            cmd.args(["-f", "-"]);
            std::fs::read(self.case.dir.join(f)).unwrap()
        });
        for a in apply["args"].as_array().into_iter().flatten() {
            cmd.arg(self.text(a));
        }
        cmd.args(["--stack", &self.stack]).args(extra);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run capstan apply");
        let mut input = child.stdin.take().unwrap();
        input.write_all(&stdin.unwrap_or_default()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn services(&self) -> BTreeSet<String> {
        self.case.expect["services"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: expect.yaml lists no services", self.case.name))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The dry run: valid, the expected services, and nothing written.
fn dry_run(d: &Daemon, etcd: &Etcd, run: &Run) -> Result<(), String> {
    let before = etcd.revision();
    dry_run_says(d, run, "created")?;
    let after = etcd.revision();
    if after != before {
        return Err(format!(
            "the dry run wrote to etcd: revision {before} → {after}"
        ));
    }
    let stacks = d.cli_ok(&["get", "stacks", "-o", "json"]);
    if stacks.contains(&format!("\"{}\"", run.stack)) {
        return Err(format!("the dry run left a stack behind: {stacks}"));
    }
    Ok(())
}

/// `apply --dry-run` succeeds and says `outcome` for exactly the expected services.
fn dry_run_says(d: &Daemon, run: &Run, outcome: &str) -> Result<(), String> {
    let out = run.apply(d, &["--dry-run"]);
    if !out.status.success() {
        return Err(format!("the dry run failed:\n{}", said(&out)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{}/", run.stack);
    let mut listed = BTreeSet::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match (line.strip_prefix(&prefix), words.as_slice()) {
            (Some(_), [_, said, "(dry", "run)"]) if *said == outcome => {}
            _ => {
                return Err(format!(
                    "a dry-run line that is not \"<service> {outcome} (dry run)\": {line:?}"
                ))
            }
        }
        let service = words[0].strip_prefix(&prefix).unwrap_or_default();
        listed.insert(service.to_string());
    }
    if listed != run.services() {
        return Err(format!(
            "the dry run lists {listed:?}, the case expects {:?}",
            run.services()
        ));
    }
    Ok(())
}

/// The real apply, then every expectation.
fn apply_and_inspect(d: &Daemon, run: &Run) -> Result<(), String> {
    let out = run.apply(d, &["--wait", "--timeout", "120s"]);
    if !out.status.success() {
        return Err(format!("apply --wait failed:\n{}", said(&out)));
    }
    let stored: BTreeSet<String> = d
        .services(&run.stack)
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    if stored != run.services() {
        return Err(format!(
            "the stack has services {stored:?}, the case expects {:?}",
            run.services()
        ));
    }
    let mut wrong = vec![];
    let expect = &run.case.expect;
    for (key, checks) in expect["containers"].as_object().into_iter().flatten() {
        let target = match key.strip_prefix('/') {
            Some(name) => run.subst(name),
            None => format!("{}-{key}", run.stack),
        };
        check_all(run, &target, &["inspect", "-f"], checks, &mut wrong);
    }
    for (kind, cmd) in [("networks", "network"), ("volumes", "volume")] {
        for (key, checks) in expect[kind].as_object().into_iter().flatten() {
            let target = match key.strip_prefix('/') {
                Some(name) => run.subst(name),
                None => format!("{}_{key}", run.stack),
            };
            check_all(run, &target, &[cmd, "inspect", "-f"], checks, &mut wrong);
        }
    }
    for url in expect["http"].as_array().into_iter().flatten() {
        let url = run.text(url);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let answered = wait_for_ok(|| match client.get(&url).send() {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("status {}", r.status())),
            Err(e) => Err(e.to_string()),
        });
        if let Err(e) = answered {
            wrong.push(format!("GET {url}: {e}"));
        }
    }
    if let Err(e) = dry_run_says(d, run, "unchanged") {
        wrong.push(format!("applied again: {e}"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n  "))
    }
}

/// Retries `attempt` for up to 10 s (the proxy learns of a new replica from the engine's
/// events); the last error if it never succeeds.
fn wait_for_ok(attempt: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    try_until(Duration::from_secs(10), attempt)
}

/// Each `template: expected` of one object, mismatches added to `wrong`.
fn check_all(run: &Run, target: &str, inspect: &[&str], checks: &Value, wrong: &mut Vec<String>) {
    let read = |format: &str| {
        let mut args = inspect.to_vec();
        args.extend([format, target]);
        let out = Command::new("docker").args(&args).output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    };
    for (key, want) in checks.as_object().into_iter().flatten() {
        let (format, pick) = sugar(&run.subst(key));
        let got = read(&format).map(|raw| pick(&raw));
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                wrong.push(format!("{target}: {key}: {e}"));
                continue;
            }
        };
        let ok = match want {
            Value::Null => got.is_none(),
            Value::Object(m) if m.contains_key("contains") => {
                let got = got.clone().unwrap_or_default();
                m["contains"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|part| got.contains(&run.text(part)))
            }
            other => got.as_deref() == Some(run.text(other).as_str()),
        };
        if !ok {
            wrong.push(format!("{target}: {key}: got {got:?}, want {want}"));
        }
    }
}

type Pick = Box<dyn Fn(&str) -> Option<String>>;

/// The inspect template for a check key, and how to read the value from its output.
fn sugar(key: &str) -> (String, Pick) {
    if let Some(name) = key.strip_prefix("env:") {
        let name = name.to_string();
        let pick = move |raw: &str| {
            let env: Vec<String> = serde_json::from_str(raw).unwrap_or_default();
            env.iter()
                .find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
        };
        return ("{{json .Config.Env}}".into(), Box::new(pick));
    }
    if let Some(name) = key.strip_prefix("label:") {
        let name = name.to_string();
        let pick = move |raw: &str| {
            let labels: Value = serde_json::from_str(raw).unwrap_or_default();
            labels[&name].as_str().map(str::to_string)
        };
        return ("{{json .Config.Labels}}".into(), Box::new(pick));
    }
    if let Some(dest) = key.strip_prefix("mount:") {
        let format = format!(
            "{{{{range .Mounts}}}}{{{{if eq .Destination \"{dest}\"}}}}{{{{.Type}}}} \
             {{{{if eq .Type \"volume\"}}}}{{{{.Name}}}}{{{{else}}}}{{{{.Source}}}}{{{{end}}}} \
             rw={{{{.RW}}}} mode={{{{.Mode}}}} propagation={{{{.Propagation}}}}{{{{end}}}}{{{{end}}}}"
        );
        return (format, Box::new(|raw: &str| Some(raw.to_string())));
    }
    (key.to_string(), Box::new(|raw: &str| Some(raw.to_string())))
}

/// How many cases are applied at once.
const LANES: usize = 3;

#[test]
fn every_conformance_case_applies_with_the_meaning_compose_gives_it() {
    let cases = cases();
    assert!(!cases.is_empty(), "no case under e2e/conformance");
    // Declared before the daemon: dropped after it, so it cannot heal what they remove.
    let guards: Vec<StackGuard> = cases
        .iter()
        .map(|c| StackGuard::new(&format!("conf-{}", &c.name[..c.name.len().min(12)])))
        .collect();
    let etcd = Etcd::start();
    // The cases bind files of their own folders, wherever the checkout lives (CI clones it
    // outside the default policy's prefixes): allow just those, as an operator would.
    let policy =
        std::env::temp_dir().join(format!("conformance-policy-{}.yaml", std::process::id()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    std::fs::write(
        &policy,
        format!("bind_mounts: [{:?}]\n", root.display().to_string()),
    )
    .unwrap();
    let d = Daemon::start_with(&etcd, &["--policy", &policy.to_string_lossy()]);
    let _ = std::fs::remove_file(&policy);
    let runs: Vec<Run> = cases
        .iter()
        .zip(&guards)
        .map(|(case, g)| Run {
            case,
            stack: g.name.clone(),
            port: free_port(),
        })
        .collect();
    // Every dry run first, while etcd holds nothing a reconcile could rewrite.
    let mut failures: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            dry_run(&d, &etcd, r)
                .err()
                .map(|e| format!("{}: {e}", r.case.name))
        })
        .collect();
    let dry_failed =
        |run: &Run| (failures.iter()).any(|f| f.starts_with(&format!("{}:", run.case.name)));
    let to_apply: Vec<&Run> = runs.iter().filter(|r| !dry_failed(r)).collect();
    // LANES cases at a time: each is a stack of its own, on a port of its own.
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..LANES)
            .map(|lane| {
                let (d, to_apply) = (&d, &to_apply);
                scope.spawn(move || {
                    let mine = to_apply.iter().skip(lane).step_by(LANES);
                    (mine.map(|run| {
                        let applied = apply_and_inspect(d, run)
                            .map_err(|e| format!("{}: {e}", run.case.name));
                        let _ = d.cli(&["delete", &run.stack, "--volumes"]);
                        applied
                    }))
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        (lanes.into_iter())
            .flat_map(|lane| lane.join().expect("a lane of cases panicked"))
            .collect()
    });
    let applied = results.iter().filter(|r| r.is_ok()).count();
    failures.extend(results.into_iter().filter_map(Result::err));
    failures.sort();
    println!("conformance: {applied} of {} cases apply", runs.len());
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
