//! `capstan config` as a user runs it, with no daemon anywhere: its exit codes, its flags,
//! and that its document is, for every Compose conformance case (`e2e/conformance/`), the
//! very body `capstan apply` sends. The body is caught by a stand-in for the daemon on a
//! Unix socket that answers one dry run.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A folder of its own, removed afterwards.
struct Folder(PathBuf);

impl Folder {
    fn new(tag: &str) -> Folder {
        let dir =
            std::env::temp_dir().join(format!("capstan-config-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Folder(dir.canonicalize().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> &Folder {
        std::fs::write(self.0.join(name), text).unwrap();
        self
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The capstan binary in `cwd`, told of a server that does not exist, with only `env`
/// (and HOME) in its environment and `stdin` on its standard input.
fn capstan(cwd: &Path, env: &[(String, String)], args: &[String], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.current_dir(cwd)
        .env_clear()
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("CAPSTAN_SERVER", "unix:///nonexistent/capstan.sock")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run capstan");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn config(cwd: &Path, args: &[&str]) -> Output {
    let mut all = vec!["config".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    capstan(cwd, &[], &all, b"")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn said(out: &Output) -> String {
    format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr))
}

const SHOP: &str = "services:\n  web: {image: \"web:${TAG:-1}\", volumes: [data:/d]}\n  \
                    debug: {image: busybox, profiles: [debug]}\nvolumes: {data: {}}\n";

#[test]
fn quiet_exits_0_for_a_valid_project_and_prints_nothing_with_no_daemon_reachable() {
    let dir = Folder::new("quiet-ok");
    dir.write("compose.yaml", SHOP);
    let out = config(&dir.0, &["-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(out.stdout.is_empty(), "{}", said(&out));
}

#[test]
fn quiet_exits_1_naming_the_field_of_every_problem() {
    let dir = Folder::new("quiet-bad");
    dir.write(
        "compose.yaml",
        "services:\n  web: {image: web, ports: [\"99999:80\"]}\n  db: {image: db, restart: sometimes}\n",
    );
    let out = config(&dir.0, &["--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services.web.ports[0]: "), "{err}");
    assert!(err.contains("services.db.restart: "), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn quiet_exits_1_for_an_error_of_the_file_layer_too() {
    let dir = Folder::new("quiet-unset");
    dir.write(
        "compose.yaml",
        "services:\n  web: {image: \"${TAG:?set TAG}\"}\n",
    );
    let out = config(&dir.0, &["-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services.web.image"), "{err}");
}

#[test]
fn each_list_flag_prints_one_name_a_line() {
    let dir = Folder::new("lists");
    dir.write("compose.yaml", SHOP);
    let cases: [(&[&str], &str); 5] = [
        (&["--services"], "web\n"),
        (&["--services", "--profile", "debug"], "debug\nweb\n"),
        (&["--volumes"], "data\n"),
        (&["--profiles"], "debug\n"),
        (&["--images"], "web:1\n"),
    ];
    for (args, expected) in cases {
        let out = config(&dir.0, args);
        assert!(out.status.success(), "{args:?}: {}", said(&out));
        assert_eq!(stdout(&out), expected, "{args:?}");
    }
}

#[test]
fn two_list_flags_at_once_are_refused() {
    let dir = Folder::new("two-lists");
    dir.write("compose.yaml", SHOP);
    let out = config(&dir.0, &["--services", "--volumes"]);
    assert!(!out.status.success(), "{}", said(&out));
}

#[test]
fn format_json_prints_the_document_as_json_and_yaml_is_the_default() {
    let dir = Folder::new("formats");
    dir.write("compose.yaml", SHOP).write(".env", "TAG=5\n");
    let json = config(&dir.0, &["--format", "json", "--stack", "shop"]);
    assert!(json.status.success(), "{}", said(&json));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["name"], "shop");
    assert_eq!(doc["services"]["web"]["image"], "web:5");
    let yaml = config(&dir.0, &["--stack", "shop"]);
    assert!(yaml.status.success(), "{}", said(&yaml));
    let doc_yaml = capstan_api::compose::yaml::parse(&stdout(&yaml)).unwrap();
    let doc_json = capstan_api::compose::yaml::parse(&stdout(&json)).unwrap();
    assert_eq!(doc_yaml, doc_json);
}

#[test]
fn dash_f_dash_reads_the_file_from_standard_input() {
    let dir = Folder::new("stdin");
    let args: Vec<String> = ["config", "-f", "-", "--services"].map(String::from).into();
    let out = capstan(&dir.0, &[], &args, SHOP.as_bytes());
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(stdout(&out), "web\n");
}

/// Stands in for the daemon: answers one `PUT /v1/stacks/{stack}?dryRun=true` and hands
/// back the stack of its URL and the body it received.
fn daemon_stand_in(socket: &Path) -> std::thread::JoinHandle<(String, String)> {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let path = request_line.split_whitespace().nth(1).unwrap().to_string();
        assert!(path.ends_with("?dryRun=true"), "{request_line}");
        let stack = path
            .trim_start_matches("/v1/stacks/")
            .split('?')
            .next()
            .unwrap();
        let answer = serde_json::json!({
            "stack": stack, "resourceVersion": 0, "services": {}, "dryRun": true,
        })
        .to_string();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        (stack.to_string(), String::from_utf8(body).unwrap())
    })
}

/// How one conformance case runs `capstan apply` (its expect.yaml's `apply:`), with the
/// placeholders filled in.
struct Case {
    name: String,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    /// Every argument after the subcommand.
    args: Vec<String>,
    stdin: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/conformance");
    let mut out = vec![];
    for entry in std::fs::read_dir(&root).expect("e2e/conformance exists") {
        let dir = entry.unwrap().path().canonicalize().unwrap();
        let Ok(text) = std::fs::read_to_string(dir.join("expect.yaml")) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expect: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let apply = &expect["apply"];
        let stack = format!("cfg-{name}");
        let fill = |v: &serde_json::Value| {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            text.replace("{stack}", &stack)
                .replace("{dir}", &dir.display().to_string())
                .replace("{port}", "18999")
        };
        let mut args = vec![];
        for f in apply["files"].as_array().into_iter().flatten() {
            args.extend(["-f".to_string(), fill(f)]);
        }
        let stdin = apply["stdin"].as_str().map(|f| {
            args.extend(["-f".to_string(), "-".to_string()]);
            std::fs::read(dir.join(f)).unwrap()
        });
        args.extend(apply["args"].as_array().into_iter().flatten().map(fill));
        args.extend(["--stack".to_string(), stack.clone()]);
        let env = (apply["env"].as_object().into_iter().flatten())
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect();
        let cwd = dir.join(apply["cwd"].as_str().unwrap_or("."));
        out.push(Case {
            name,
            cwd,
            env,
            args,
            stdin: stdin.unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What `apply --dry-run` sends for the case, caught by the stand-in daemon.
fn sent_by_apply(case: &Case, socket: &Path) -> (String, String) {
    let _ = std::fs::remove_file(socket);
    let daemon = daemon_stand_in(socket);
    let mut args = vec!["apply".to_string(), "--dry-run".to_string()];
    args.extend(case.args.iter().cloned());
    let mut env = case.env.clone();
    env.push((
        "CAPSTAN_SERVER".into(),
        format!("unix://{}", socket.display()),
    ));
    let out = capstan(&case.cwd, &env, &args, &case.stdin);
    assert!(out.status.success(), "{}: apply: {}", case.name, said(&out));
    daemon.join().unwrap()
}

/// What `capstan config` prints for the case, in `format`.
fn shown_by_config(case: &Case, format: &str) -> String {
    let mut args = vec!["config".to_string(), "--format".into(), format.into()];
    args.extend(case.args.iter().cloned());
    let out = capstan(&case.cwd, &case.env, &args, &case.stdin);
    assert!(
        out.status.success(),
        "{}: config: {}",
        case.name,
        said(&out)
    );
    stdout(&out)
}

#[test]
fn config_shows_exactly_the_document_apply_sends_for_every_conformance_case() {
    let dir = Folder::new("equal");
    let socket = dir.0.join("capstan.sock");
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "only {} conformance cases found",
        cases.len()
    );
    for case in &cases {
        let (stack, body) = sent_by_apply(case, &socket);
        let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
        let json = shown_by_config(case, "json");
        let shown: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(shown, sent, "{}: config --format json", case.name);
        assert_eq!(
            sent["name"],
            stack.as_str(),
            "{}: the URL's stack",
            case.name
        );
        // YAML as the server reads it: the same document, value for value.
        let parse = capstan_api::compose::yaml::parse;
        let yaml = shown_by_config(case, "yaml");
        assert_eq!(
            parse(&yaml).unwrap(),
            parse(&body).unwrap(),
            "{}: config (YAML):\n{yaml}",
            case.name
        );
    }
}
