//! `capstan config` beside `docker-compose config` (Debian's Compose 1.29): the time to read,
//! resolve and print a project, on the project's largest test Compose file (the
//! `stack-shop` conformance case: anchors, `.env`, an override file, a profile) and on a
//! generated file of 500 services. Neither talks to a daemon or the engine. The target is
//! capstan in at most 0.2 × Compose's time: a user checking what capstan understood should
//! not wait for it.
//!
//! Compose 1.29 predates the top-level `name:`, so both read the shop without that line and
//! are given the name (`-p`, `--stack`) instead. Knob: `CAPSTAN_BENCH_RUNS` (default 7 runs
//! per contender and file, after one unmeasured run of each).

use capstan_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// CPU seconds (user + system) of every child waited for so far.
fn children_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given, nothing else.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Runs `cmd` in `dir`; its (wall, CPU) seconds, once it succeeded and printed `expect`.
/// CPU time is the steadier figure on a machine others share: it does not count waiting
/// for a core.
fn timed(dir: &Path, cmd: &mut Command, expect: &str) -> (f64, f64) {
    let (t, cpu) = (Instant::now(), children_cpu());
    let out = cmd.current_dir(dir).output().expect("run");
    let elapsed = (t.elapsed().as_secs_f64(), children_cpu() - cpu);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expect),
        "{cmd:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// The shop case, copied without its `name:` line.
fn shop(dir: &Path) -> PathBuf {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/stack-shop");
    let shop = dir.join("shop");
    std::fs::create_dir_all(&shop).unwrap();
    for entry in std::fs::read_dir(&case).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text: String = (text.lines())
            .filter(|l| !l.starts_with("name:"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(shop.join(path.file_name().unwrap()), text).unwrap();
    }
    shop
}

/// 500 services of the shape real files have: interpolation, a published port, a named
/// volume and a bind, a healthcheck, logging options, a dependency on the one before. No
/// anchor: 500 aliases of one block are over the reader's alias budget today (issue 22).
fn generated(dir: &Path) -> PathBuf {
    let big = dir.join("big");
    std::fs::create_dir_all(big.join("conf")).unwrap();
    let mut text = String::from("services:\n");
    let mut volumes = String::from("\nvolumes:\n");
    for i in 0..500 {
        text.push_str(&format!(
            "  svc-{i}:\n    restart: unless-stopped\n    logging:\n      driver: json-file\n      \
             options: {{max-size: 10m, max-file: \"3\"}}\n    image: \"capstan-demo/web:${{TAG:-1}}\"\n    \
             command: [\"sh\", \"-c\", \"echo svc-{i}\"]\n    environment:\n      \
             INDEX: \"{i}\"\n      LEVEL: ${{LEVEL:-info}}\n      URL: http://svc-{i}:80/\n    \
             labels: {{com.example.index: \"{i}\"}}\n    ports: [\"127.0.0.1:{}:80\"]\n    \
             volumes: [\"data-{i}:/data\", \"./conf:/etc/conf:ro\"]\n    healthcheck:\n      \
             test: [\"CMD\", \"true\"]\n      interval: 10s\n      retries: 3\n",
            20000 + i
        ));
        if i > 0 {
            text.push_str(&format!("    depends_on: [svc-{}]\n", i - 1));
        }
        volumes.push_str(&format!("  data-{i}: {{}}\n"));
    }
    std::fs::write(big.join("compose.yaml"), text + &volumes).unwrap();
    big
}

/// The medians of both contenders on one project: (capstan, compose) seconds, every sample.
fn measure(dir: &Path, extra: &[&str], expect: &str, runs: usize) -> serde_json::Value {
    let capstan = || {
        let mut c = Command::new(capstan_bin());
        c.args(["config", "--stack", "benchcfg"]).args(extra);
        c
    };
    let compose = || {
        let mut c = Command::new("docker-compose");
        c.args(["-p", "benchcfg"]).args(extra).arg("config");
        c
    };
    timed(dir, &mut capstan(), expect);
    timed(dir, &mut compose(), expect);
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..runs {
        ours.push(timed(dir, &mut capstan(), expect));
        theirs.push(timed(dir, &mut compose(), expect));
    }
    let wall = |v: &[(f64, f64)]| v.iter().map(|s| s.0).collect::<Vec<f64>>();
    let cpu = |v: &[(f64, f64)]| v.iter().map(|s| s.1).collect::<Vec<f64>>();
    let (o, t) = (median(wall(&ours)), median(wall(&theirs)));
    let (oc, tc) = (median(cpu(&ours)), median(cpu(&theirs)));
    serde_json::json!({
        "capstan_s": wall(&ours), "compose_s": wall(&theirs),
        "capstan_cpu_s": cpu(&ours), "compose_cpu_s": cpu(&theirs),
        "capstan_median_s": o, "compose_median_s": t, "ratio": o / t,
        "capstan_median_cpu_s": oc, "compose_median_cpu_s": tc, "ratio_cpu": oc / tc,
    })
}

fn main() {
    let compose = Command::new("docker-compose").arg("version").output();
    assert!(
        compose.is_ok_and(|o| o.status.success()),
        "docker-compose (Debian's package, 1.29) is needed: `make deps` with `bench`, or \
         apt-get install docker-compose"
    );
    let runs: usize = std::env::var("CAPSTAN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let dir = std::env::temp_dir().join(format!("capstan-bench-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shop = measure(&shop(&dir), &["--profile", "dev"], "mailcatcher", runs);
    let big = measure(&generated(&dir), &[], "svc-499", runs);
    let _ = std::fs::remove_dir_all(&dir);

    println!("config: medians of {runs} runs each (target: capstan at most 0.20 x Compose)");
    println!(
        "  {:<36} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7}",
        "", "capstan s", "compose s", "ratio", "cpu s", "cpu s", "ratio"
    );
    for (what, r) in [
        ("stack-shop (97 lines, 7 services)", &shop),
        ("generated, 500 services", &big),
    ] {
        let f = |k: &str| r[k].as_f64().unwrap();
        let verdict = if f("ratio") <= 0.2 {
            ""
        } else {
            "  (over the target)"
        };
        println!(
            "  {:<36} {:>9.4} {:>9.4} {:>7.3} {:>9.4} {:>9.4} {:>7.3}{verdict}",
            what,
            f("capstan_median_s"),
            f("compose_median_s"),
            f("ratio"),
            f("capstan_median_cpu_s"),
            f("compose_median_cpu_s"),
            f("ratio_cpu"),
        );
    }
    write_results(
        "config",
        &serde_json::json!({"runs": runs, "stack_shop": shop, "generated_500": big}),
    );
}
