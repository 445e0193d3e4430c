//! Idle cost (issue 6): 100 real replicas (20 services x 5) managed for 2 minutes with no
//! change: the daemon's CPU seconds and RSS, etcd writes, and Docker API calls per minute
//! (read from the daemon's own metrics). Default resync (30 s). Writes `bench/results/idle.json`.
//!
//! The replicas keep the image's healthcheck but run it every 10 s instead of 2 s: a hundred
//! execs every 2 s saturate a 2-core engine (it wedged Docker 20.10 once), and the cost being
//! measured is capstan's, which does not depend on the interval (execs are not drift).

use capstan_e2e::*;
use std::time::Duration;

const IDLE: Duration = Duration::from_secs(120);

/// Sum of the samples of `family` whose labels contain `filter`.
fn metric(d: &Daemon, family: &str, filter: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", d.url()))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    bench_preflight();
    let h = Harness::start_with("bench-idle", &["--resync", "30s"]);
    let (d, s) = (&h.d, &h.s);
    let body: String = (0..20)
        .map(|i| {
            format!(
                "  web{i}:\n    image: {IMAGE}\n    scale: 5\n    healthcheck: {{interval: 10s}}\n"
            )
        })
        .collect();
    d.apply_within(s, &format!("services:\n{body}"), "5m");
    std::thread::sleep(Duration::from_secs(10));

    let pid = d.pid().unwrap();
    let writes = || {
        metric(
            d,
            "capstan_etcd_request_duration_seconds_count",
            "op=\"txn\"",
        )
    };
    let docker_count = |filter| metric(d, "capstan_docker_request_duration_seconds_count", filter);
    // The readiness probe's /_ping (one a second) is counted apart from the loop's calls.
    let pings = || docker_count("op=\"ping\"");
    let docker_calls = || docker_count("") - pings();
    let reconciles = || metric(d, "capstan_reconciles_total", "");
    let (cpu0, _) = cpu_and_rss(pid);
    let (w0, c0, r0, p0) = (writes(), docker_calls(), reconciles(), pings());
    std::thread::sleep(IDLE);
    let (cpu1, rss) = cpu_and_rss(pid);
    let (w1, c1, r1, p1) = (writes(), docker_calls(), reconciles(), pings());
    let minutes = IDLE.as_secs_f64() / 60.0;

    println!(
        "idle cost: 100 managed replicas (20 services x 5), {}s with no change, resync 30 s",
        IDLE.as_secs()
    );
    println!(
        "  daemon CPU                 {:>8.2} s ({:.2}% of one core)",
        cpu1 - cpu0,
        (cpu1 - cpu0) / IDLE.as_secs_f64() * 100.0
    );
    println!("  daemon RSS                 {:>8.1} MiB", rss);
    println!("  etcd writes                {:>8.0}   (target 0)", w1 - w0);
    println!("  Docker API calls / minute  {:>8.1}   (per resync: one container list for all services, and the stack's network check)", (c1 - c0) / minutes);
    println!("  reconciles / minute        {:>8.1}", (r1 - r0) / minutes);
    println!(
        "  readiness pings / minute   {:>8.1}   (GET /_ping, so /readyz turns within 2 s)",
        (p1 - p0) / minutes
    );
    let json = serde_json::json!({
        "replicas": 100, "seconds": IDLE.as_secs(),
        "cpu_s": cpu1 - cpu0, "rss_mib": rss, "etcd_writes": w1 - w0,
        "docker_calls_per_min": (c1 - c0) / minutes, "reconciles_per_min": (r1 - r0) / minutes,
        "docker_pings_per_min": (p1 - p0) / minutes,
    });
    write_results("idle", &json);
}
