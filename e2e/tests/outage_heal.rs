//! Heal latency during an etcd outage, measured (an ignored test: `make chaos`
//! runs it, `make test` does not). As `leadership.rs`'s
//! `a_replica_killed_during_an_etcd_outage_is_restarted_during_the_outage` does once: etcd
//! is killed (its data kept), the daemon turns `isolated`, a replica is killed with
//! `docker kill`, and the time from the kill to the replica running again (a new start
//! time) is measured while etcd is still away. etcd is then started again and the stack
//! must converge before the next run.
//!
//! Median over `CAPSTAN_OUTAGE_RUNS` (default 3) outages of one daemon (`--lease-ttl 3s`).
//! Written to `bench/results/outage_heal.json`.

use capstan_e2e::*;
use std::time::{Duration, Instant};

const SAMPLE: Duration = Duration::from_millis(20);
const CONVERGE: Duration = Duration::from_secs(90);

fn runs() -> usize {
    std::env::var("CAPSTAN_OUTAGE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// (running, start time) of a container, in one `docker inspect`.
fn state(container: &str) -> (bool, String) {
    let out = inspect(container, "{{.State.Running}} {{.State.StartedAt}}");
    let (running, started) = out.split_once(' ').unwrap_or((&out, ""));
    (running == "true", started.to_string())
}

/// One outage: etcd killed, the replica killed, the seconds until it runs again; etcd back
/// and the stack converged again afterwards.
fn one_outage(etcd: &mut Etcd, d: &Daemon, s: &StackGuard, run: usize) -> f64 {
    let replica = s.replica("web", 1);
    let (_, started) = state(&replica);
    etcd.stop();
    wait_until(
        Duration::from_secs(30),
        "the daemon to see etcd gone",
        || d.leader()["role"] == "isolated",
    );
    docker(&["kill", &replica]);
    let killed = Instant::now();
    poll_until(
        SAMPLE,
        Duration::from_secs(60),
        &format!("run {run}: the replica restarted during the outage"),
        || {
            let (running, now) = state(&replica);
            running && now != started
        },
    );
    let healed = killed.elapsed().as_secs_f64();
    etcd.restart();
    wait_until(CONVERGE, "the daemon to lead and converge again", || {
        d.leads() && d.converged(&s.name, "web", 2)
    });
    assert_eq!(s.running().len(), 2, "run {run}: {:?}", s.containers());
    healed
}

#[test]
#[ignore = "a measurement of about a minute: make chaos"]
fn heal_latency_of_a_replica_killed_during_an_etcd_outage_is_measured() {
    // Locals drop in reverse: the daemon first, then etcd, then the stack's leftovers.
    let s = StackGuard::prefixed("chaos", "outage-heal");
    let mut etcd = Etcd::start();
    let d = Daemon::start_with(&etcd, &["--lease-ttl", "3s"]);
    d.apply(
        &s,
        &format!("services:\n  web:\n    image: {IMAGE}\n    scale: 2\n"),
    );
    let runs = runs();
    let mut samples = vec![];
    for run in 1..=runs {
        let healed = one_outage(&mut etcd, &d, &s, run);
        println!(
            "  run {run}: replica killed during the etcd outage → running again {healed:.2} s"
        );
        samples.push(healed);
    }
    let m = median(samples.clone());
    println!("\nheal during an etcd outage, median of {runs} runs");
    println!("{:>36}  {:>10}", "", "median (s)");
    println!("{:>36}  {m:>10.2}", "replica killed → running again");
    write_results(
        "outage_heal",
        &serde_json::json!({
            "runs": runs,
            "kill_to_running_s": {"median": m, "samples": samples},
            "capstan_bin": capstan_bin().display().to_string(),
        }),
    );
}
