//! Connection floods (hardening issue): 2,000 idle and 2,000 half-sent connections held
//! against TCP `--listen 127.0.0.1:PORT` (each opened again as soon as the daemon closes
//! it), and meanwhile:
//!
//! - `/healthz` on the Unix socket, a new connection every 50 ms: median, p99, max
//!   (target: under 100 ms);
//! - the heal time of a `docker kill`ed replica (engine clock, `die` -> `start`), beside the
//!   same heal time without the flood: the ratio (target: about 1).
//!
//! Two cases: the daemon started under a soft limit of 1,024 open files (systemd's usual),
//! which it raises to the hard limit at start; and a daemon whose hard limit is 1,024 too
//! (set once it runs), where only the listeners' budgets keep it answering.
//!
//! Loopback only; bounded in count (4,000 connections, a few kills) and time (a minute or
//! two per case); every connection, container and process is gone at the end. Writes
//! `bench/results/flood.json`.

use capstan_e2e::flood::{limit_open_files, open_files, open_files_limit, with_soft_limit, Flood};
use capstan_e2e::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDLE: usize = 2000;
const HALF_SENT: usize = 2000;
/// Kills per phase (without, then with the flood), each of a different replica.
const RUNS: u32 = 5;
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// A probe slower than this counts as failed (and as this long).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    bench_preflight();
    let soft = case("soft limit 1,024, raised to the hard limit at start", false);
    let hard = case("hard limit 1,024 (budgets only)", true);
    write_results(
        "flood",
        &serde_json::json!({
            "idle_connections": IDLE,
            "half_sent_connections": HALF_SENT,
            "runs": RUNS,
            "soft_1024": soft,
            "hard_1024": hard,
        }),
    );
}

/// One daemon, healed without then with the flood; prints and returns the figures.
fn case(title: &str, hard_1024: bool) -> serde_json::Value {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let h = with_soft_limit(1024, || {
        Harness::start_with("bench-flood", &["--listen", &listen])
    });
    let (d, s) = (&h.d, &h.s);
    let pid = d.pid().expect("the daemon runs");
    if hard_1024 {
        limit_open_files(pid, 1024, 1024);
    }
    let limits = open_files_limit(pid);
    d.apply_within(
        s,
        &format!(
            "services:\n  web:\n    image: {IMAGE}\n    scale: {}\n",
            RUNS * 2
        ),
        "3m",
    );

    let quiet_ms = heal_times(s, 1..=RUNS);

    let flood = Flood::start(addr, IDLE, HALF_SENT);
    wait_until(
        Duration::from_secs(60),
        "the flood to hold more connections than TCP's budget",
        || flood.open() > 1000,
    );
    let probes = Probes::start(d, pid);
    let flooded_ms = heal_times(s, RUNS + 1..=RUNS * 2);
    let (health_ms, failed, max_fds) = probes.stop();
    let (open, closed) = (flood.open(), flood.closed_by_peer());
    drop(flood);

    let (q, f) = (median(quiet_ms.clone()), median(flooded_ms.clone()));
    let (hm, h99, hmax) = (
        median(health_ms.clone()),
        percentile(&health_ms, 0.99),
        percentile(&health_ms, 1.0),
    );
    println!("connection flood: {title}; daemon open-files limit {limits:?}");
    println!(
        "  flood: {IDLE} idle + {HALF_SENT} half-sent on TCP; {open} open at the end, {closed} closed by the daemon"
    );
    println!(
        "  {:<44} median {hm:>7.1} ms  p99 {h99:>7.1} ms  max {hmax:>7.1} ms  ({} probes, {failed} failed; target < 100 ms)",
        "/healthz on the socket during the flood",
        health_ms.len()
    );
    println!(
        "  {:<44} {q:>7.1} ms without, {f:>7.1} ms with the flood: ratio {:.2}",
        "docker kill: die -> started (medians)",
        f / q
    );
    println!("  the daemon's open descriptors during the flood: at most {max_fds}");
    serde_json::json!({
        "daemon_open_files_limit": [limits.0, limits.1],
        "healthz_ms": {"median": hm, "p99": h99, "max": hmax, "failed": failed, "samples": health_ms.len()},
        "heal_without_flood_ms": {"median": q, "samples": quiet_ms},
        "heal_with_flood_ms": {"median": f, "samples": flooded_ms},
        "heal_ratio": f / q,
        "max_open_fds": max_fds,
        "flood_open_at_end": open,
        "closed_by_daemon": closed,
    })
}

/// Kills each replica `n` of `web` in turn; the time from its `die` to its `start` again.
fn heal_times(s: &StackGuard, replicas: std::ops::RangeInclusive<u32>) -> Vec<f64> {
    let mut ms = vec![];
    for i in replicas {
        let replica = s.replica("web", i);
        let events = Events::follow(&replica);
        docker(&["kill", &replica]);
        let t_die = events.next("die", Duration::from_secs(30));
        let t_start = events.next("start", Duration::from_secs(60));
        ms.push((t_start - t_die) as f64 / 1e6);
    }
    ms
}

/// `/healthz` on the socket every [`PROBE_EVERY`], each on a new connection, and the
/// daemon's open descriptors, on a thread of their own.
struct Probes {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<f64>, u32, usize)>,
}

impl Probes {
    fn start(d: &Daemon, pid: u32) -> Probes {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::blocking::Client::builder()
            .unix_socket(d.socket())
            .pool_max_idle_per_host(0)
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut ms, mut failed, mut max_fds) = (vec![], 0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    let ok = (client.get(format!("{API}/healthz")).send())
                        .is_ok_and(|r| r.status().is_success());
                    let took = t.elapsed();
                    failed += u32::from(!ok);
                    let took = if ok { took } else { PROBE_TIMEOUT.max(took) };
                    ms.push(took.as_secs_f64() * 1e3);
                    max_fds = max_fds.max(open_files(pid));
                    std::thread::sleep(PROBE_EVERY.saturating_sub(took));
                }
                (ms, failed, max_fds)
            }
        });
        Probes { stop, thread }
    }

    /// Latencies (ms), failures, and the most descriptors the daemon had open.
    fn stop(self) -> (Vec<f64>, u32, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the probe thread")
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len());
    v[i - 1]
}
