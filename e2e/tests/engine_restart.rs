//! Replicas come back after an engine restart: the Docker engine stopped (SIGTERM to dockerd, which stops
//! every container: capstan sets no engine restart policy) and started again the way this
//! machine runs it (`/usr/sbin/dockerd`, detached, logging to /var/log/dockerd.log). Every
//! replica comes back, none twice.
//!
//! Its own test binary, so no other test of this crate runs while the engine is down; and it
//! refuses to stop an engine that runs containers other than its own (it waits up to 10
//! minutes for them to go, then fails loudly), since stopping dockerd kills them all. An
//! [`Engine`] guard starts the engine again whatever happens, also when the test fails.
//!
//! `make chaos` also runs the ignored measurement: the time to all replicas back after an
//! engine restart, median of 3 (written to `bench/results/engine_restart.json`).

use capstan_e2e::*;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKERD_LOG: &str = "/var/log/dockerd.log";
const REPLICAS: u64 = 5;
const QUIET_WAIT: Duration = Duration::from_secs(600);

/// One engine restart at a time, also when both tests of this file are asked for.
static ENGINE: Mutex<()> = Mutex::new(());

fn engine_answers() -> bool {
    Command::new("timeout")
        .args(["5", "docker", "info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn dockerd_pids() -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-x", "dockerd"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The engine, stopped by [`Engine::stop`] and started again by [`Engine::start`] or, at the
/// latest, when the guard drops (a failing test included).
struct Engine {
    down: bool,
}

impl Engine {
    /// Waits until no container but the stack's exists: stopping dockerd kills them all.
    fn quiet(s: &StackGuard) -> Engine {
        let others = || -> Vec<String> {
            docker(&["ps", "-a", "--format", "{{.Names}}"])
                .lines()
                .filter(|n| !n.is_empty() && !n.starts_with(&s.name))
                .map(str::to_string)
                .collect()
        };
        let quiet = try_until(QUIET_WAIT, || match others() {
            o if o.is_empty() => Ok(()),
            o => Err(format!("{o:?}")),
        });
        if let Err(o) = quiet {
            panic!(
                "the engine restart test stops dockerd, which would kill these containers \
                 of others: {o}; run it on a quiet engine"
            );
        }
        assert!(
            engine_answers(),
            "the Docker engine must run before the test"
        );
        Engine { down: false }
    }

    /// SIGTERM to dockerd (it stops every container and its containerd), and waits until the
    /// socket no longer answers and the process is gone.
    fn stop(&mut self) {
        let pids = dockerd_pids();
        assert_eq!(pids.len(), 1, "one dockerd process, found {pids:?}");
        self.down = true;
        let ok = Command::new("kill")
            .args(["-TERM", &pids[0]])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -TERM {}", pids[0]);
        wait_until(Duration::from_secs(90), "dockerd to stop", || {
            !engine_answers() && dockerd_pids().is_empty()
        });
    }

    /// Starts `/usr/sbin/dockerd` detached (its own session, output appended to the machine's
    /// dockerd log) and waits until `docker info` answers; returns when it did.
    fn start(&mut self) -> Instant {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(&mut self) -> Result<Instant, String> {
        if !self.down {
            return Ok(Instant::now());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(DOCKERD_LOG)
            .map_err(|e| format!("open {DOCKERD_LOG}: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        Command::new("setsid")
            .args(["-f", DOCKERD])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .status()
            .map_err(|e| format!("start {DOCKERD}: {e}"))?;
        try_until(Duration::from_secs(120), || {
            engine_answers().then_some(()).ok_or_else(|| {
                format!("dockerd did not answer within 120 s of its start; see {DOCKERD_LOG}")
            })
        })?;
        self.down = false;
        Ok(Instant::now())
    }
}

impl Drop for Engine {
    /// Never panics (a panic in a drop during a failing test aborts): says what went wrong.
    fn drop(&mut self) {
        if self.down || !engine_answers() {
            self.down = true;
            eprintln!("starting the Docker engine again");
            if let Err(e) = self.try_start() {
                eprintln!("THE DOCKER ENGINE IS DOWN: {e}; start it with `setsid -f {DOCKERD}`");
            }
        }
    }
}

fn stack() -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    scale: {REPLICAS}\n")
}

/// Exactly the stack's `REPLICAS` replicas `web-1..5`, each once, all running.
fn all_back(s: &StackGuard) -> Result<(), String> {
    let rows = s.containers();
    let names: Vec<&str> = rows.iter().map(|(n, _, _)| n.as_str()).collect();
    let want: Vec<String> = (1..=REPLICAS as u32).map(|n| s.replica("web", n)).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    if names == want_sorted && rows.iter().all(|(_, _, st)| st == "running") {
        Ok(())
    } else {
        Err(format!("containers: {rows:?}"))
    }
}

/// What the daemon says while the engine is gone: `/readyz`'s status and
/// `capstan_docker_connected` (absent: `None`).
fn daemon_view(d: &Daemon) -> (u16, Option<f64>) {
    let ready = reqwest::blocking::get(format!("{}/readyz", d.url()))
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let metrics = d.metrics();
    let connected = metrics
        .lines()
        .any(|l| l.starts_with("capstan_docker_connected"))
        .then(|| metric_sum(&metrics, "capstan_docker_connected", &[]));
    (ready, connected)
}

struct Recovery {
    running_s: f64,
    ready_s: f64,
    recreated: usize,
}

/// One engine restart under a converged stack: stops the engine, reads the daemon's view
/// while it is down, starts it, and waits until every replica runs and then is ready again.
fn restart_once(d: &Daemon, s: &StackGuard, engine: &mut Engine) -> Recovery {
    let before = s.containers();
    let started = |name: &str| inspect(name, "{{.State.StartedAt}}");
    let started_before: Vec<String> = before.iter().map(|(n, _, _)| started(n)).collect();
    engine.stop();
    let gone = Instant::now();
    wait_until(Duration::from_secs(10), "/readyz to say 503", || {
        daemon_view(d).0 == 503
    });
    let turned = gone.elapsed();
    println!(
        "engine stopped answering -> /readyz 503 after {:.2} s",
        turned.as_secs_f64()
    );
    assert!(
        turned <= Duration::from_secs(2),
        "/readyz turned {turned:?} after the engine stopped answering"
    );
    // Still so once the daemon has probed the silent engine again, twice.
    d.wait_for_engine_probes(2);
    let (ready, connected) = daemon_view(d);
    println!("engine down: /readyz {ready}, capstan_docker_connected {connected:?}");
    let alive = reqwest::blocking::get(format!("{}/healthz", d.url()))
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    assert!(
        alive,
        "the daemon still answers /healthz while the engine is gone"
    );
    assert_eq!(ready, 503, "/readyz says the engine does not answer");
    wait_for(
        Duration::from_secs(20),
        "the service's status to say the engine does not answer",
        || {
            let svc = d.service(&s.name, "web");
            let degraded = svc["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded").cloned())
                .unwrap_or_default();
            (degraded["reason"] == "EngineUnreachable" && svc["ready"] == 0)
                .then_some(())
                .ok_or_else(|| svc.to_string())
        },
    );
    assert_eq!(connected, Some(0.0), "capstan_docker_connected is 0");
    assert_eq!(
        metric_sum(&d.metrics(), "capstan_service_replicas_ready", &[]),
        0.0,
        "no replica is reported ready while the engine cannot be asked"
    );

    let back = engine.start();
    wait_for(
        Duration::from_secs(120),
        "every replica running again, once each",
        || all_back(s),
    );
    let running_s = back.elapsed().as_secs_f64();
    wait_until(
        Duration::from_secs(120),
        "the service converged again",
        || d.converged(&s.name, "web", REPLICAS),
    );
    let ready_s = back.elapsed().as_secs_f64();
    all_back(s).unwrap();
    let after = s.containers();
    // They did go down with the engine (no live restore): each was started again since.
    for ((name, _, _), was) in before.iter().zip(&started_before) {
        assert_ne!(
            &started(name),
            was,
            "{name} was started again after the engine restart"
        );
    }
    let recreated = after
        .iter()
        .filter(|(n, id, _)| !before.iter().any(|(bn, bid, _)| bn == n && bid == id))
        .count();
    Recovery {
        running_s,
        ready_s,
        recreated,
    }
}

#[test]
fn every_replica_comes_back_once_after_the_docker_engine_is_stopped_and_started_again() {
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let s = StackGuard::prefixed("chaos", "engine");
    let etcd = Etcd::start();
    let d = Daemon::start(&etcd);
    d.apply(&s, &stack());
    // Declared after the daemon and the stack: dropped first, so the engine is back before
    // they clean up.
    let mut engine = Engine::quiet(&s);

    let r = restart_once(&d, &s, &mut engine);
    println!(
        "engine answering again -> all {REPLICAS} replicas running: {:.1} s, ready: {:.1} s ({} of {REPLICAS} recreated, the rest restarted in place)",
        r.running_s, r.ready_s, r.recreated
    );
    let svc = d.service(&s.name, "web");
    assert_eq!(svc["running"], REPLICAS, "{svc}");
    drop(engine);
}

#[test]
#[ignore = "a measurement that restarts the engine 3 times: make chaos"]
fn the_time_to_all_replicas_back_after_an_engine_restart_is_measured_over_three_restarts() {
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let s = StackGuard::prefixed("chaos", "engine-bench");
    let etcd = Etcd::start();
    let d = Daemon::start(&etcd);
    d.apply(&s, &stack());
    let mut engine = Engine::quiet(&s);
    let mut running = vec![];
    let mut ready = vec![];
    for i in 1..=3 {
        let r = restart_once(&d, &s, &mut engine);
        println!(
            "  restart {i}: all running {:.1} s, ready {:.1} s after the engine answered ({} recreated)",
            r.running_s, r.ready_s, r.recreated
        );
        running.push(r.running_s);
        ready.push(r.ready_s);
    }
    drop(engine);
    let (m_run, m_ready) = (median(running.clone()), median(ready.clone()));
    println!("engine restart, {REPLICAS} replicas, median of 3 (from the engine answering again)");
    println!("  {:<40} {:>6.1} s", "all replicas running", m_run);
    println!(
        "  {:<40} {:>6.1} s",
        "all replicas ready (healthy)", m_ready
    );
    write_results(
        "engine_restart",
        &serde_json::json!({
            "replicas": REPLICAS,
            "runs": 3,
            "all_running_s": {"median": m_run, "samples": running},
            "all_ready_s": {"median": m_ready, "samples": ready},
            "capstan_bin": capstan_bin().display().to_string(),
        }),
    );
}
