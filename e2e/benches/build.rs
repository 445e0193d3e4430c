//! `build:` (issue 11): what an apply of a stack whose build context did not change costs,
//! beside `docker-compose up -d` (Debian's Compose 1.29) on the same files; and a first build
//! through capstan beside `DOCKER_BUILDKIT=0 docker build --no-cache` of the same context.
//!
//! Engine calls are counted by a proxy of the engine's socket that counts HTTP requests:
//! Compose talks to it through `DOCKER_HOST`, and so does the daemon's build client (the
//! image check and the build); the reconciler's own calls are its
//! `capstan_docker_request_duration_seconds` count. Both are diffed around each run; the
//! daemon's background calls in that window (the readiness probe's pings) are included.
//!
//! Knob: `CAPSTAN_BENCH_RUNS` (default 5 unchanged applies per contender, 3 first builds).

use capstan_e2e::*;
use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counts the HTTP requests that pass from its socket to the engine's.
struct EngineProxy {
    path: PathBuf,
    requests: Arc<AtomicU64>,
}

impl EngineProxy {
    fn start(dir: &Path) -> EngineProxy {
        let path = dir.join("engine-proxy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let requests = Arc::new(AtomicU64::default());
        let counter = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let counter = counter.clone();
                std::thread::spawn(move || relay(client, counter));
            }
        });
        EngineProxy { path, requests }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Copies both ways; counts request lines (`GET /... HTTP/1.1`) going to the engine.
fn relay(client: UnixStream, counter: Arc<AtomicU64>) {
    let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
        return;
    };
    let (mut from_engine, mut to_client) =
        (engine.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_engine, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Write);
    });
    let (mut to_engine, mut client) = (engine, client);
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = vec![];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to_engine.write_all(&buf[..n]).is_err() {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                if is_request_line(&partial) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                partial.clear();
            } else if partial.len() < 16 * 1024 {
                partial.push(b);
            }
        }
    }
    let _ = to_engine.shutdown(std::net::Shutdown::Write);
}

fn is_request_line(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    ["GET /", "POST /", "PUT /", "DELETE /", "HEAD /"]
        .iter()
        .any(|m| text.starts_with(m))
        && (text.ends_with(" HTTP/1.1") || text.ends_with(" HTTP/1.0"))
}

/// Removes the images the benchmark built, also when it panics; declared before the daemon.
struct BuiltImages {
    filter: String,
    names: Vec<String>,
}

impl Drop for BuiltImages {
    fn drop(&mut self) {
        for id in docker(&["images", "-q", "--filter", &self.filter]).lines() {
            docker(&["rmi", "-f", id.trim()]);
        }
        for name in &self.names {
            docker(&["rmi", "-f", name]);
        }
    }
}

/// The context: the static busybox, a Dockerfile with a RUN step, and a file that makes each
/// round's content new (so no layer cache helps either contender).
fn write_context(dir: &Path, nonce: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         COPY nonce.txt /nonce.txt\nCMD [\"/bin/sleep\", \"3600\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("nonce.txt"), nonce).unwrap();
}

fn run_ok(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn reconciler_calls(d: &Daemon) -> f64 {
    metric_sum(
        &d.metrics(),
        "capstan_docker_request_duration_seconds_count",
        &[],
    )
}

fn main() {
    bench_preflight();
    let runs: usize = std::env::var("CAPSTAN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let dir = std::env::temp_dir().join(format!("capstan-bench-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = EngineProxy::start(&dir);
    let project = format!("capstanbenchbuild{}", std::process::id());
    let mut images = BuiltImages {
        filter: String::new(),
        names: vec![format!("{project}_app")],
    };
    let _compose = LeftoverGuard {
        filter: format!("label=com.docker.compose.project={project}"),
    };
    // The daemon's build client reads DOCKER_HOST; its reconciler does not.
    std::env::set_var("DOCKER_HOST", proxy.host());
    let h = Harness::start_with("bench-build", &["--resync", "30s"]);
    std::env::remove_var("DOCKER_HOST");
    images.filter = format!("label=capstan.build.stack={}", h.s.name);
    let (d, stack) = (&h.d, h.s.name.clone());
    let file = dir.join("compose.yaml");
    std::fs::write(&file, "services:\n  app:\n    build: ./ctx\n").unwrap();
    let file = file.to_string_lossy().into_owned();
    let ctx = dir.join("ctx");

    // First builds: capstan (through the API) and `docker build`, each on new content.
    let (mut capstan_first, mut docker_first) = (vec![], vec![]);
    for round in 0..3 {
        write_context(&ctx, &format!("{}-{round}\n", now_ns()));
        capstan_first.push(run_ok(
            Command::new(capstan_bin())
                .args(["build", "-f", &file, "--stack", &stack])
                .env("CAPSTAN_SERVER", d.server()),
        ));
        let tag = format!("capstan-bench-build:{}-{round}", std::process::id());
        images.names.push(tag.clone());
        docker_first.push(run_ok(
            Command::new("docker")
                .args(["build", "-q", "--no-cache", "-t", &tag])
                .arg(&ctx)
                .env("DOCKER_BUILDKIT", "0"),
        ));
    }

    // Unchanged applies: capstan, then Compose, on the same files.
    run_ok(
        Command::new(capstan_bin())
            .args(["apply", "-f", &file, "--stack", &stack, "--wait"])
            .env("CAPSTAN_SERVER", d.server()),
    );
    let compose = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &project, "-f", &file])
            .args(args)
            .env("DOCKER_HOST", proxy.host());
        c
    };
    run_ok(&mut compose(&["up", "-d"]));
    let builds_before = d.log().matches("building an image").count();
    let (mut capstan_t, mut capstan_calls, mut compose_t, mut compose_calls) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (p0, r0) = (proxy.count(), reconciler_calls(d));
        capstan_t.push(run_ok(
            Command::new(capstan_bin())
                .args(["apply", "-f", &file, "--stack", &stack])
                .env("CAPSTAN_SERVER", d.server()),
        ));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let calls = (proxy.count() - p0) as f64 + reconciler_calls(d) - r0;
        capstan_calls.push(calls);
        let p0 = proxy.count();
        compose_t.push(run_ok(&mut compose(&["up", "-d"])));
        compose_calls.push((proxy.count() - p0) as f64);
    }
    assert_eq!(
        d.log().matches("building an image").count(),
        builds_before,
        "capstan rebuilt an unchanged context"
    );
    run_ok(&mut compose(&["down"]));

    let (ct, cc, kt, kc) = (
        median(capstan_t.clone()),
        median(capstan_calls.clone()),
        median(compose_t.clone()),
        median(compose_calls.clone()),
    );
    let (cf, df) = (median(capstan_first.clone()), median(docker_first.clone()));
    println!("build: medians ({runs} unchanged applies each; 3 first builds each)");
    println!("  {:<44} {:>8} {:>12}", "", "seconds", "engine calls");
    println!(
        "  {:<44} {:>8.3} {:>12}",
        "capstan apply, context unchanged", ct, cc
    );
    println!(
        "  {:<44} {:>8.3} {:>12}",
        "docker-compose up -d (1.29), unchanged", kt, kc
    );
    println!(
        "  {:<44} {:>8.2} {:>12.2}",
        "capstan / compose",
        ct / kt,
        cc / kc
    );
    println!(
        "  {:<44} {:>8.3}",
        "first build: capstan build (upload + build)", cf
    );
    println!(
        "  {:<44} {:>8.3}",
        "first build: DOCKER_BUILDKIT=0 docker build", df
    );
    println!("  {:<44} {:>8.2}", "capstan / docker build", cf / df);
    write_results(
        "build",
        &serde_json::json!({
            "unchanged_apply": {
                "capstan_s": capstan_t, "capstan_engine_calls": capstan_calls,
                "compose_s": compose_t, "compose_engine_calls": compose_calls,
                "ratio_time": ct / kt, "ratio_calls": cc / kc,
            },
            "first_build": {
                "capstan_s": capstan_first, "docker_build_s": docker_first, "ratio": cf / df,
            },
        }),
    );
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}
