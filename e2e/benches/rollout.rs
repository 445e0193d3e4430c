//! Rolling updates (issue 13) against Swarm on the same engine, in one run: the same
//! N-replica image update (capstan-demo/web:1 <-> web:2, alternating, so no reset is needed)
//! by
//! - (i) capstan with Swarm's default update_config (parallelism 1, delay 0, stop-first,
//!   monitor 5s, failure_action pause);
//! - (ii) Swarm with its defaults (`docker service update --image`, detached; done when the
//!   service's `UpdateStatus.State` is `completed`);
//! - (iii) capstan with its own defaults (no update_config).
//!
//! capstan's update is done when the API reports every replica updated and ready. Rounds
//! interleave the three, so slow phases of the machine hit each alike. Then the rollback
//! latency: a 3-replica service with `failure_action: rollback` gets an image whose command
//! exits at once; measured on the engine's clock from the first failing replica's `die` to
//! the `destroy` that starts the rollback (the rollback is stored in between).
//!
//! Swarm mode is entered for the run (`docker swarm init --advertise-addr 127.0.0.1`) and
//! left afterwards (`docker swarm leave --force`), also when the run fails; an engine
//! already in a swarm is refused. Knobs: `CAPSTAN_BENCH_ROLLOUT_N` (default 10),
//! `CAPSTAN_BENCH_ROUNDS` (default 3). Prints medians and ratios; writes
//! `bench/results/rollout.json`.

use capstan_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(300);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Swarm mode for the run: left when dropped.
struct SwarmGuard {
    service: String,
    /// Swarm mode makes `docker_gwbridge` and leaves it behind; removed if it was not there.
    made_gwbridge: bool,
}

impl SwarmGuard {
    fn init(service: &str) -> SwarmGuard {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        assert_eq!(
            state.trim(),
            "inactive",
            "the engine is in a swarm already: this benchmark enters and leaves swarm mode itself"
        );
        let had_gwbridge = Command::new("docker")
            .args(["network", "inspect", "docker_gwbridge"])
            .output()
            .is_ok_and(|o| o.status.success());
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        SwarmGuard {
            service: service.to_string(),
            made_gwbridge: !had_gwbridge,
        }
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["service", "rm", &self.service])
            .output();
        let _ = Command::new("docker")
            .args(["swarm", "leave", "--force"])
            .output();
        if self.made_gwbridge {
            let _ = Command::new("docker")
                .args(["network", "rm", "docker_gwbridge"])
                .output();
        }
    }
}

fn image(round: usize) -> &'static str {
    if round.is_multiple_of(2) {
        IMAGE_V2
    } else {
        IMAGE
    }
}

fn stack_yaml(image: &str, n: usize, update_config: &str) -> String {
    format!("services:\n  web:\n    image: {image}\n    scale: {n}\n{update_config}")
}

const SWARM_DEFAULTS: &str = "    deploy:\n      update_config: {parallelism: 1, delay: 0s, order: stop-first, monitor: 5s, failure_action: pause}\n";

/// Seconds from the apply to every replica updated and ready.
fn capstan_update(d: &Daemon, s: &StackGuard, yaml: &str, n: usize) -> f64 {
    let t = Instant::now();
    d.apply_nowait(s, yaml);
    let n = n as u64;
    wait_until(TIMEOUT, "capstan's update", || {
        let v = d.service(&s.name, "web");
        v["observedGeneration"] == v["generation"]
            && v["updated"] == n
            && v["ready"] == n
            && v["replicas"] == n
    });
    t.elapsed().as_secs_f64()
}

/// Seconds from `docker service update` to the update's state `completed`.
fn swarm_update(service: &str, image: &str) -> f64 {
    let t = Instant::now();
    docker(&[
        "service",
        "update",
        "--detach",
        "--no-resolve-image",
        "--image",
        image,
        service,
    ]);
    wait_until(TIMEOUT, "Swarm's update", || {
        docker(&[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}}",
            service,
        ])
        .trim()
            == "completed"
    });
    t.elapsed().as_secs_f64()
}

fn swarm_create(service: &str, n: usize) {
    docker(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        service,
        "--replicas",
        &n.to_string(),
        IMAGE,
    ]);
    wait_until(TIMEOUT, "Swarm's service to run", || {
        docker(&[
            "service",
            "ls",
            "--filter",
            &format!("name={service}"),
            "--format",
            "{{.Replicas}}",
        ])
        .trim()
            == format!("{n}/{n}")
    });
}

/// Milliseconds from a broken replica's `die` to the `destroy` that starts the rollback (of
/// that replica: a successor of the rolled-back spec is removed first).
fn rollback_latency(d: &Daemon, s: &StackGuard) -> f64 {
    let cfg = "    deploy:\n      update_config: {parallelism: 1, failure_action: rollback, monitor: 5s}\n";
    let good = stack_yaml(IMAGE, 3, cfg);
    let broken =
        format!("{good}    command: [\"sh\", \"-c\", \"exit 3\"]\n").replace(IMAGE, IMAGE_V2);
    // Start-first: the broken image runs in replica 1's successor, next to it.
    let events = Events::follow(&format!("{}-next", s.replica("web", 1)));
    d.apply_nowait(s, &broken);
    let died = events.next("die", TIMEOUT);
    let destroyed = events.next("destroy", TIMEOUT);
    wait_until(TIMEOUT, "the rollback to finish", || {
        d.service(&s.name, "web")["rolledBack"].is_object() && d.converged(&s.name, "web", 3)
    });
    d.apply(s, &good);
    (destroyed - died) as f64 / 1e6
}

fn main() {
    bench_preflight();
    let n = env_or("CAPSTAN_BENCH_ROLLOUT_N", 10);
    let rounds = env_or("CAPSTAN_BENCH_ROUNDS", 3);
    let service = format!("capstan-bench-swarm-{}", std::process::id());
    let swarm = SwarmGuard::init(&service);
    // Declared before the daemon, so they are cleaned after it stopped.
    let own = StackGuard::new("bench-roll-own");
    let rb_stack = StackGuard::new("bench-roll-back");
    let h = Harness::start("bench-roll-swarmcfg");
    let (d, s) = (&h.d, &h.s);
    d.apply_within(s, &stack_yaml(IMAGE, n, SWARM_DEFAULTS), "5m");
    d.apply_within(&own, &stack_yaml(IMAGE, n, ""), "5m");
    swarm_create(&swarm.service, n);

    let (mut i, mut ii, mut iii) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        let img = image(round);
        i.push(capstan_update(d, s, &stack_yaml(img, n, SWARM_DEFAULTS), n));
        ii.push(swarm_update(&swarm.service, img));
        iii.push(capstan_update(d, &own, &stack_yaml(img, n, ""), n));
        println!(
            "round {}: capstan (Swarm's config) {:.1}s, Swarm {:.1}s, capstan (own defaults) {:.1}s",
            round + 1,
            i[round],
            ii[round],
            iii[round]
        );
    }
    drop(swarm);
    let _ = d.cli(&["delete", &s.name]);
    let _ = d.cli(&["delete", &own.name]);

    let cfg = "    deploy:\n      update_config: {parallelism: 1, failure_action: rollback, monitor: 5s}\n";
    d.apply_within(&rb_stack, &stack_yaml(IMAGE, 3, cfg), "3m");
    let rollback_ms: Vec<f64> = (0..rounds)
        .map(|_| rollback_latency(d, &rb_stack))
        .collect();

    let (mi, mii, miii, mrb) = (
        median(i.clone()),
        median(ii.clone()),
        median(iii.clone()),
        median(rollback_ms.clone()),
    );
    println!("{n}-replica image update, medians of {rounds}");
    println!("  (i)   capstan, Swarm's default update_config  {mi:>7.1} s");
    println!("  (ii)  Swarm, its defaults                     {mii:>7.1} s");
    println!("  (iii) capstan, its own defaults               {miii:>7.1} s");
    println!("  (i)/(ii)   {:.2}   (target <= 1.0)", mi / mii);
    println!("  (iii)/(ii) {:.2}   (target <= 0.5)", miii / mii);
    println!("rollback: failing replica's die -> rollback's first destroy {mrb:.0} ms (target < 1000 ms)");
    write_results(
        "rollout",
        &serde_json::json!({
            "replicas": n,
            "rounds": rounds,
            "capstan_swarm_config_s": {"median": mi, "samples": i},
            "swarm_defaults_s": {"median": mii, "samples": ii},
            "capstan_defaults_s": {"median": miii, "samples": iii},
            "ratio_i_ii": mi / mii,
            "ratio_iii_ii": miii / mii,
            "rollback_start_ms": {"median": mrb, "samples": rollback_ms},
        }),
    );
}
