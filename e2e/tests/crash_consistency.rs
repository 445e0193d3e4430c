//! Crash consistency: the daemon killed with SIGKILL at random points (after a random number
//! of its engine changes, or once the change converged) of a scale
//! 0 → 20 and 20 → 0, then started again, every time ends at exactly the desired replicas,
//! with no duplicate ordinal, no orphan container, network or volume, and a status that
//! converged at the current generation (nothing half-written in etcd). The same holds for a
//! kill during a start-first rollout (successors `-next` next to their replicas, renamed
//! as they take over) and during a deletion.
//!
//! `make test` runs 2 iterations (one kill during a scale up, one during a scale down, one
//! during a rollout each way); `make chaos` runs the same scenarios 50 times
//! (`CAPSTAN_CHAOS_ITERATIONS`). Every run prints its seed and a table;
//! `CAPSTAN_CHAOS_SEED=<seed>` replays the same kill points.

use capstan_e2e::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SCALE: u64 = 20;
/// The kill comes after this many engine changes (create, start, remove, ...) since the
/// request at most, or once the change converged: a scale 0 → 20 makes about 42 of them and
/// 20 → 0 about 20, a start-first rollout of 6 about 24, so the kills land before, during
/// and after the engine work.
const MAX_KILL_CHANGES: u64 = 50;
/// How often the kill point is looked for.
const SAMPLE: Duration = Duration::from_millis(20);
const CONVERGE: Duration = Duration::from_secs(180);

/// The two soaks take turns: removing dozens of containers at once from both made Docker
/// 20.10 hold a removed container's endpoint in a network for minutes (moby/moby#43286).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn iterations() -> u32 {
    std::env::var("CAPSTAN_CHAOS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// One service of busybox replicas without a healthcheck (running is ready), on the stack's
/// default network, all mounting one named volume: a network and a volume to leak.
fn stack(replicas: u64) -> String {
    stack_of(IMAGE, replicas)
}

fn stack_of(image: &str, replicas: u64) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    scale: {replicas}\n    healthcheck: {{disable: true}}\n    volumes: [\"data:/data\"]\nvolumes:\n  data: {{labels: {{capstan.shared: \"true\"}}}}\n"
    )
}

/// What the engine holds for the stack, judged against `desired` replicas of `web`.
#[derive(Debug, Default)]
struct Census {
    containers: usize,
    duplicates: Vec<String>,
    orphans: Vec<String>,
    not_running: Vec<String>,
}

fn census(s: &StackGuard, desired: u64) -> Census {
    let rows = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=capstan.stack={}", s.name),
        "--format",
        "{{.Names}}\t{{.State}}\t{{.Label \"capstan.service\"}}\t{{.Label \"capstan.replica\"}}",
    ]);
    let mut c = Census::default();
    let mut by_ordinal: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for row in rows.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = row.split('\t').collect();
        let (name, state, service, replica) = (f[0], f[1], f[2], f[3]);
        c.containers += 1;
        match replica.parse::<u64>() {
            Ok(n) if service == "web" && (1..=desired).contains(&n) => {
                by_ordinal.entry(n).or_default().push(name.to_string());
                if name != s.replica("web", n as u32) {
                    c.orphans
                        .push(format!("{name} (replica {n} under another name)"));
                }
            }
            _ => c
                .orphans
                .push(format!("{name} (service {service:?}, replica {replica:?})")),
        }
        if state != "running" {
            c.not_running.push(format!("{name} ({state})"));
        }
    }
    for (n, names) in by_ordinal {
        if names.len() > 1 {
            c.duplicates.push(format!("ordinal {n}: {names:?}"));
        }
    }
    // Anything named after the stack without its label would be a leak the label hides.
    let named = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^{}-", s.name),
        "--format",
        "{{.Names}}",
    ]);
    let unlabelled = named.lines().filter(|l| !l.is_empty()).count();
    if unlabelled != c.containers {
        c.orphans.push(format!(
            "{unlabelled} containers named after the stack, {} labelled",
            c.containers
        ));
    }
    // The stack declares one network and one volume: exactly those, once each.
    let want_net = format!("{}_default", s.name);
    let nets = s.networks();
    if nets != [want_net.clone()] {
        c.orphans
            .push(format!("networks {nets:?}, want [{want_net:?}]"));
    }
    let want_vol = format!("{}_data", s.name);
    let vols = s.volumes();
    if vols != [want_vol.clone()] {
        c.orphans
            .push(format!("volumes {vols:?}, want [{want_vol:?}]"));
    }
    c
}

/// Converged at `desired` in the API (status at the current generation) and on the engine
/// (exactly `desired` containers, all running).
fn settled(d: &Daemon, s: &StackGuard, desired: u64) -> Result<(), String> {
    let svc = d.services(&s.name);
    if svc.len() != 1 {
        return Err(format!("services listed: {svc:?}"));
    }
    let w = &svc[0];
    let api_ok = w["name"] == "web"
        && w["replicas"] == desired
        && w["running"] == desired
        && w["ready"] == desired
        && w["observedGeneration"] == w["generation"];
    let c = census(s, desired);
    if api_ok && c.containers as u64 == desired && c.not_running.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "api: replicas {} running {} ready {} generation {} observed {}; engine: {c:?}",
            w["replicas"], w["running"], w["ready"], w["generation"], w["observedGeneration"]
        ))
    }
}

struct Row {
    iteration: u32,
    direction: &'static str,
    kill_at: u64,
    at_kill: usize,
    converge_s: f64,
    census: Census,
}

#[test]
fn a_daemon_killed_at_random_points_of_a_scale_up_and_down_always_ends_at_exactly_the_desired_replicas(
) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = StackGuard::prefixed("chaos", "kill");
    let etcd = Etcd::start();
    let mut d = Daemon::start(&etcd);
    let (mut rng, seed) = Rng::from_env();
    let n = iterations();
    println!("chaos: {n} iterations, seed {seed} (replay: CAPSTAN_CHAOS_SEED={seed})");
    d.apply(&s, &stack(0));

    let mut rows = vec![];
    for i in 1..=n {
        let desired = if i % 2 == 1 { SCALE } else { 0 };
        let kill_at = rng.below(MAX_KILL_CHANGES);
        let base = engine_changes(&d);
        d.cli_ok(&["scale", &format!("{}/web={desired}", s.name)]);
        let (at_kill, restarted) = kill_and_restart(&mut d, &s, (base, kill_at), |d| {
            d.converged(&s.name, "web", desired)
        });
        wait_for(
            CONVERGE,
            &format!(
                "iteration {i} (seed {seed}): {desired} replicas after a kill at change {kill_at}"
            ),
            || settled(&d, &s, desired),
        );
        let converge_s = restarted.elapsed().as_secs_f64();
        let c = census(&s, desired);
        println!(
            "  iteration {i:>2}: to {desired:>2}, killed at change {kill_at:>2} with {at_kill:>2} containers, converged {converge_s:.1} s after the restart"
        );
        assert!(
            c.containers as u64 == desired && c.duplicates.is_empty() && c.orphans.is_empty(),
            "iteration {i} (seed {seed}), scale to {desired}, killed at change {kill_at}: {c:?}"
        );
        rows.push(Row {
            iteration: i,
            direction: if desired == SCALE {
                "0 -> 20"
            } else {
                "20 -> 0"
            },
            kill_at,
            at_kill,
            converge_s,
            census: c,
        });
    }

    // The last state holds: one more full resync changes nothing.
    let last = if n % 2 == 1 { SCALE } else { 0 };
    let before = s.containers();
    d.wait_for_resync();
    assert_eq!(s.containers(), before, "a resync after the last restart");
    settled(&d, &s, last).unwrap();

    println!("\nchaos: seed {seed}");
    println!(
        "{:>4}  {:<8} {:>9} {:>8} {:>12} {:>10} {:>10} {:>7}",
        "iter",
        "scale",
        "kill at",
        "at kill",
        "converge (s)",
        "containers",
        "duplicates",
        "orphans"
    );
    for r in &rows {
        println!(
            "{:>4}  {:<8} {:>9} {:>8} {:>12.1} {:>10} {:>10} {:>7}",
            r.iteration,
            r.direction,
            r.kill_at,
            r.at_kill,
            r.converge_s,
            r.census.containers,
            r.census.duplicates.len(),
            r.census.orphans.len()
        );
    }
    let times: Vec<f64> = rows.iter().map(|r| r.converge_s).collect();
    println!(
        "converge after restart: median {:.1} s, max {:.1} s",
        median(times.clone()),
        times.iter().cloned().fold(0.0, f64::max)
    );
    deletes_cleanly(&d, &s);
    drop(d);
}

/// The end state is also one a user can delete: `capstan delete --volumes` removes every
/// container, the network and the volume. One engine bug is told apart and reported, not
/// failed on: Docker 20.10 can keep a phantom endpoint in a network whose containers were
/// removed concurrently (moby/moby#43286, "has active endpoints" with no container
/// attached; only a dockerd restart clears it). Seen once in a 50-kill soak.
fn deletes_cleanly(d: &Daemon, s: &StackGuard) {
    let out = d.cli(&["delete", &s.name, "--volumes", "--timeout", "60s"]);
    let (containers, networks, volumes) = (s.containers(), s.networks(), s.volumes());
    if out.status.success() && containers.is_empty() && networks.is_empty() && volumes.is_empty() {
        return;
    }
    assert!(
        containers.is_empty()
            && volumes.is_empty()
            && networks.len() == 1
            && phantom_endpoint(&networks[0]),
        "capstan delete left {containers:?} {networks:?} {volumes:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "WARNING: the engine keeps a phantom endpoint in {} (no container attached; \
         moby/moby#43286): it stays until dockerd restarts",
        networks[0]
    );
}

/// Whether `net` is held by the engine's phantom endpoint (moby/moby#43286): no container
/// attached, yet removing it fails with "has active endpoints".
fn phantom_endpoint(net: &str) -> bool {
    let attached = inspect(net, "{{len .Containers}}");
    let rm = std::process::Command::new("docker")
        .args(["network", "rm", net])
        .output()
        .expect("docker network rm");
    attached == "0" && String::from_utf8_lossy(&rm.stderr).contains("has active endpoints")
}

/// Engine calls that change something (`/metrics`), so far: the kill points are counted in
/// them.
fn engine_changes(d: &Daemon) -> f64 {
    let m = d.metrics();
    let ops = [
        "create",
        "start",
        "remove",
        "rename",
        "ensure_network",
        "ensure_volume",
        "remove_network",
        "remove_volume",
    ];
    (ops.iter())
        .map(|op| {
            let op = format!("op=\"{op}\"");
            metric_sum(&m, "capstan_docker_request_duration_seconds_count", &[&op])
        })
        .sum()
}

/// Once the daemon has made `kill_at` engine changes since `base` (or is `done` with the
/// change first), SIGKILL it and start it again: how many containers the stack had at the
/// kill, and when the new daemon started.
fn kill_and_restart(
    d: &mut Daemon,
    s: &StackGuard,
    (base, kill_at): (f64, u64),
    done: impl Fn(&Daemon) -> bool,
) -> (usize, Instant) {
    poll_until(SAMPLE, CONVERGE, "the kill point", || {
        engine_changes(d) >= base + kill_at as f64 || done(d)
    });
    d.kill();
    let at_kill = s.containers().len();
    let restarted = Instant::now();
    d.start_again();
    (at_kill, restarted)
}

/// Every container of the stack runs `image`.
fn all_of_image(s: &StackGuard, image: &str) -> Result<(), String> {
    let rows = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=capstan.stack={}", s.name),
        "--format",
        "{{.Names}} {{.Image}}",
    ]);
    let other: Vec<&str> = (rows.lines())
        .filter(|l| !l.ends_with(&format!(" {image}")))
        .collect();
    match other.is_empty() {
        true => Ok(()),
        false => Err(format!("not yet {image}: {other:?}")),
    }
}

const ROLLING: u64 = 6;

#[test]
fn a_daemon_killed_at_random_points_of_a_rollout_or_a_deletion_leaves_only_what_a_restarted_daemon_adopts(
) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = StackGuard::prefixed("chaos", "roll");
    let etcd = Etcd::start();
    let mut d = Daemon::start(&etcd);
    let (mut rng, seed) = Rng::from_env();
    d.apply(&s, &stack_of(IMAGE, ROLLING));
    for i in 1..=iterations() {
        let image = if i % 2 == 1 { IMAGE_V2 } else { IMAGE };
        let kill_at = rng.below(MAX_KILL_CHANGES);
        let base = engine_changes(&d);
        d.apply_nowait(&s, &stack_of(image, ROLLING));
        let (at_kill, restarted) = kill_and_restart(&mut d, &s, (base, kill_at), |d| {
            d.converged(&s.name, "web", ROLLING)
        });
        let what = format!("rollout {i} to {image} (seed {seed}), killed at change {kill_at}");
        wait_for(CONVERGE, &what, || {
            settled(&d, &s, ROLLING).and_then(|_| all_of_image(&s, image))
        });
        let c = census(&s, ROLLING);
        println!(
            "  rollout {i:>2}: to {image}, killed at change {kill_at:>2} with {at_kill:>2} containers, converged {:.1} s after the restart",
            restarted.elapsed().as_secs_f64()
        );
        assert!(
            c.duplicates.is_empty() && c.orphans.is_empty(),
            "{what}: {c:?}"
        );
    }

    let kill_at = rng.below(ROLLING + 3);
    let base = engine_changes(&d);
    let url = format!("{API}/v1/stacks/{}?volumes=true", s.name);
    let resp = d.api().delete(url).send().expect("DELETE");
    assert_eq!(resp.status().as_u16(), 202);
    let stack_url = format!("{API}/v1/stacks/{}", s.name);
    kill_and_restart(&mut d, &s, (base, kill_at), |d| {
        (d.api().get(&stack_url).send()).is_ok_and(|r| r.status().as_u16() == 404)
    });
    let what = format!("the deletion (seed {seed}), killed at change {kill_at}");
    let mut phantom = None;
    wait_until(CONVERGE, &what, || {
        let view = d.api().get(format!("{API}/v1/stacks/{}", s.name)).send();
        let view = view.ok().filter(|r| r.status().as_u16() != 404);
        let gone = view.is_none();
        let blocked = view
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .and_then(|v| v["deletionBlockedBy"].as_str().map(str::to_string))
            .is_some_and(|why| why.contains("has active endpoints"));
        let networks = s.networks();
        let one = networks.len() == 1;
        if blocked && one && s.containers().is_empty() && phantom_endpoint(&networks[0]) {
            phantom = Some(networks[0].clone());
            return true; // only a dockerd restart clears it; capstan waits on it, rightly
        }
        gone && s.containers().is_empty() && networks.is_empty() && s.volumes().is_empty()
    });
    match phantom {
        None => println!("  deletion: killed at change {kill_at}, nothing left after the restart"),
        Some(net) => println!(
            "WARNING: every container is gone, but the engine keeps a phantom endpoint in {net} \
             (no container attached; moby/moby#43286): it stays until dockerd restarts"
        ),
    }
}
