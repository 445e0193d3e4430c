//! Heal latency (issue 3), measured against the real engine, with the engine's own clock:
//!
//! - unhealthy: from the engine's `health_status: unhealthy` event to the `kill` that
//!   capstan's restart call causes;
//! - killed: from the `die` of a `docker kill`ed replica to its `start` again, beside the
//!   engine's own time to start a stopped container (`docker start`, measured alike).
//!
//! Each run heals a different replica, so crash-loop back-off never applies. Prints medians
//! and writes `bench/results/heal.json`.

use capstan_e2e::*;
use std::time::{Duration, Instant};

const RUNS: u32 = 7;

fn main() {
    bench_preflight();
    let h = Harness::start("bench-heal");
    let (d, s) = (&h.d, &h.s);
    let n = RUNS * 2;
    d.apply_within(
        s,
        &format!("services:\n  web:\n    image: {IMAGE}\n    scale: {n}\n"),
        "3m",
    );

    let mut unhealthy_ms = vec![];
    for i in 1..=RUNS {
        let replica = s.replica("web", i);
        let events = Events::follow(&replica);
        docker(&["exec", &replica, "rm", "/www/index.html"]);
        let t_unhealthy = events.next("health_status: unhealthy", Duration::from_secs(30));
        let t_kill = events.next("kill", Duration::from_secs(30));
        unhealthy_ms.push((t_kill - t_unhealthy) as f64 / 1e6);
    }

    let mut killed_ms = vec![];
    for i in RUNS + 1..=n {
        let replica = s.replica("web", i);
        let events = Events::follow(&replica);
        docker(&["kill", &replica]);
        let t_die = events.next("die", Duration::from_secs(30));
        let t_start = events.next("start", Duration::from_secs(30));
        killed_ms.push((t_start - t_die) as f64 / 1e6);
    }

    // The engine's own start of a stopped container, through the same CLI path a user has.
    let probe = format!("{}-probe", s.name);
    docker(&["create", "--name", &probe, IMAGE]);
    let mut engine_start_ms = vec![];
    for _ in 0..RUNS {
        let t = Instant::now();
        docker(&["start", &probe]);
        engine_start_ms.push(t.elapsed().as_secs_f64() * 1e3);
        docker(&["kill", &probe]);
    }
    docker(&["rm", "-f", &probe]);
    wait_until(
        Duration::from_secs(60),
        "the service to converge again",
        || d.converged(&s.name, "web", n as u64),
    );

    let (u, k, e) = (
        median(unhealthy_ms.clone()),
        median(killed_ms.clone()),
        median(engine_start_ms.clone()),
    );
    println!("heal latency, medians of {RUNS} runs (engine clock)");
    println!(
        "  {:<52} {:>9.1} ms   (target < 200 ms)",
        "unhealthy event -> restart (kill) issued", u
    );
    println!(
        "  {:<52} {:>9.1} ms",
        "docker kill: die -> replica started again", k
    );
    println!(
        "  {:<52} {:>9.1} ms",
        "engine alone: docker start of a stopped container", e
    );
    println!(
        "  {:<52} {:>9.1} ms   (target < 1000 ms)",
        "capstan's share: (die -> started) - engine start",
        k - e
    );
    let json = serde_json::json!({
        "runs": RUNS,
        "unhealthy_to_restart_ms": {"median": u, "samples": unhealthy_ms},
        "kill_to_running_ms": {"median": k, "samples": killed_ms},
        "engine_start_ms": {"median": e, "samples": engine_start_ms},
    });
    write_results("heal", &json);
}
