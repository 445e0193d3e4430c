//! Leader election and fencing: two daemons on one etcd elect one leader, a dead or paused leader
//! is replaced and fenced, a leader cut off from etcd keeps healing, and readiness tells
//! the truth within 2 s.

use capstan_e2e::*;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(90);
/// Short, so the tests wait little for a lease to lapse.
const TTL: &[&str] = &["--lease-ttl", "3s"];

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    scale: {replicas}\n")
}

/// Whether `a` (rather than `b`) leads, once exactly one of them says it does.
fn a_leads(a: &Daemon, b: &Daemon) -> bool {
    wait_for(Duration::from_secs(30), "one leader", || {
        match (a.leads(), b.leads()) {
            (true, false) => Ok(true),
            (false, true) => Ok(false),
            both => Err(format!("leads: {both:?}")),
        }
    })
}

/// (leader, follower) of `a` and `b`.
fn leader_of<'a>(a: &'a Daemon, b: &'a Daemon) -> (&'a Daemon, &'a Daemon) {
    if a_leads(a, b) {
        (a, b)
    } else {
        (b, a)
    }
}

/// The engine calls that change something, as the daemon's metrics count them.
fn engine_changes(d: &Daemon) -> f64 {
    let m = d.metrics();
    [
        "create",
        "start",
        "restart",
        "remove",
        "ensure_network",
        "ensure_volume",
        "remove_network",
        "remove_volume",
    ]
    .iter()
    .map(|op| {
        metric_sum(
            &m,
            "capstan_docker_request_duration_seconds_count",
            &[&format!("op=\"{op}\"")],
        )
    })
    .sum()
}

fn etcd_writes(d: &Daemon) -> f64 {
    metric_sum(
        &d.metrics(),
        "capstan_etcd_request_duration_seconds_count",
        &["op=\"txn\""],
    )
}

#[test]
fn two_daemons_applying_a_new_stack_at_once_make_one_network_and_each_replica_once() {
    // Guards first: locals drop in reverse, so the daemons stop before the guards clean
    // up (a live leader would make the removed replicas again).
    let stacks: Vec<StackGuard> = (0..3)
        .map(|r| StackGuard::new(&format!("two{r}")))
        .collect();
    let etcd = Etcd::start();
    let a = Daemon::start(&etcd);
    let b = a.start_peer(&[]);
    for s in &stacks {
        let file = s.file(&web(3));
        let apply = |d: &Daemon| d.cli_ok(&["apply", "-f", &file, "--stack", &s.name]);
        std::thread::scope(|scope| {
            scope.spawn(|| apply(&a));
            scope.spawn(|| apply(&b));
        });
        wait_until(CONVERGE, "the stack to converge", || {
            a.converged(&s.name, "web", 3)
        });
        assert_eq!(
            s.networks(),
            vec![format!("{}_default", s.name)],
            "one network of the name"
        );
        assert_eq!(s.containers().len(), 3, "{:?}", s.containers());
    }
    let (leader, follower) = leader_of(&a, &b);
    assert_eq!(
        engine_changes(follower),
        0.0,
        "the follower never changed the engine"
    );
    assert!(engine_changes(leader) > 0.0);
    let view = follower.leader();
    assert_eq!(view["leader"]["holder"], leader.leader()["this"], "{view}");
    let table = follower.cli_ok(&["get", "leader"]);
    let holder = view["leader"]["holder"].as_str().unwrap();
    assert!(
        table.contains(holder) && table.contains("follower"),
        "{table}"
    );
}

#[test]
fn when_the_leader_is_killed_the_follower_takes_over_and_converges_a_change() {
    let s = StackGuard::new("failover");
    let etcd = Etcd::start();
    let a = Daemon::start_with(&etcd, TTL);
    let b = a.start_peer(TTL);
    let port = free_port();
    let published = |n: u32| format!("{}    ports: [\"127.0.0.1:{port}:80\"]\n", web(n));
    a.apply(&s, &published(2));
    let (mut leader, follower) = if a_leads(&a, &b) { (a, b) } else { (b, a) };

    leader.kill();
    let killed = Instant::now();
    follower.cli_ok(&["scale", &format!("{}/web=4", s.name)]);
    wait_until(CONVERGE, "the follower to take over", || follower.leads());
    let took_over = killed.elapsed();
    wait_until(CONVERGE, "the new leader to converge", || {
        follower.converged(&s.name, "web", 4)
    });
    println!(
        "leader killed → the follower leads: {:.1} s, → the change converged: {:.1} s (lease TTL 3 s)",
        took_over.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    assert!(follower.leads());
    let answer = reqwest::blocking::get(format!("http://127.0.0.1:{port}/"));
    assert!(
        answer.is_ok_and(|r| r.status().is_success()),
        "the new leader's proxy serves the port"
    );
    assert_eq!(s.running().len(), 4, "{:?}", s.containers());
    let ordinals: Vec<String> = s.containers().into_iter().map(|c| c.0).collect();
    assert_eq!(
        ordinals,
        (1..=4).map(|n| s.replica("web", n)).collect::<Vec<_>>()
    );
}

/// A leader paused past its lease (a stopped VM, a long GC pause) is replaced; when it
/// runs again it must not act on what it believed: no engine change, no etcd write.
#[test]
fn a_leader_paused_past_its_lease_makes_no_engine_call_and_no_write_when_it_resumes() {
    let s = StackGuard::new("fence");
    let etcd = Etcd::start();
    let a = Daemon::start_with(&etcd, TTL);
    let b = a.start_peer(TTL);
    a.apply(&s, &web(2));
    let (old, new) = leader_of(&a, &b);
    wait_until(CONVERGE, "the stack to converge", || {
        old.converged(&s.name, "web", 2)
    });
    // Paused right after a resync, so that no call of the leader's own is in flight when it
    // stops: a resync's idempotent `ensure_network` that completes after `CONT` was made
    // while it led, and would count as a call made after resuming.
    old.wait_for_resync();
    let (changes, writes) = (engine_changes(old), etcd_writes(old));

    old.signal("STOP");
    let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(Duration::from_secs(30), "the other daemon to lead", || {
            new.leads()
        });
        new.cli_ok(&["scale", &format!("{}/web=1", s.name)]);
        wait_until(CONVERGE, "the new leader to converge", || {
            new.converged(&s.name, "web", 1)
        });
    }));
    old.signal("CONT");
    if let Err(e) = resumed {
        std::panic::resume_unwind(e);
    }
    wait_for(Duration::from_secs(30), "the old leader to follow", || {
        let view = old.leader();
        (view["role"] == "follower")
            .then_some(())
            .ok_or(view.to_string())
    });
    // Whatever the old leader had queued or in flight when it froze has had its turn once
    // its loops ran on as a follower: its engine probe ticked and it read etcd again.
    let reads = old.etcd_calls("range") + old.etcd_calls("get");
    old.wait_for_engine_probes(4);
    wait_until(
        Duration::from_secs(30),
        "the old leader to read etcd again",
        || old.etcd_calls("range") + old.etcd_calls("get") > reads,
    );

    assert_eq!(
        engine_changes(old),
        changes,
        "no engine change after resuming"
    );
    assert_eq!(etcd_writes(old), writes, "no etcd write after resuming");
    assert_eq!(s.running(), vec![s.replica("web", 1)]);
    assert!(new.leads());
}

/// As a kubelet does: while etcd is away the leader keeps restarting what its last synced
/// cache says, within the usual heal time, and reports in once etcd is back.
#[test]
fn a_replica_killed_during_an_etcd_outage_is_restarted_during_the_outage() {
    let mut h = Harness::start_with("outage", TTL);
    h.d.apply(&h.s, &web(2));
    let started = inspect(&h.s.replica("web", 1), "{{.State.StartedAt}}");

    h.etcd.stop();
    wait_until(
        Duration::from_secs(30),
        "the leader to see etcd gone",
        || h.d.leader()["role"] == "isolated",
    );
    docker(&["kill", &h.s.replica("web", 1)]);
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the replica to run again during the outage",
        || {
            inspect(&h.s.replica("web", 1), "{{.State.Running}}") == "true"
                && inspect(&h.s.replica("web", 1), "{{.State.StartedAt}}") != started
        },
    );
    println!(
        "replica killed during the etcd outage → running again: {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    let apply = h.d.cli(&["scale", &format!("{}/web=3", h.s.name)]);
    assert!(!apply.status.success(), "a write fails while etcd is away");
    let err = String::from_utf8_lossy(&apply.stderr);
    assert!(err.contains("etcd does not answer"), "{err}");

    h.etcd.restart();
    wait_until(CONVERGE, "the leader to report in", || {
        h.d.leads() && h.d.converged(&h.s.name, "web", 2)
    });
    assert_eq!(h.s.running().len(), 2);
}

/// `/readyz` is what a load balancer or a supervisor asks: a frozen etcd must turn it
/// within 2 s, not after a request timeout, and it turns back once etcd answers.
#[test]
fn readyz_and_the_etcd_gauge_turn_within_two_seconds_of_a_frozen_etcd() {
    let h = Harness::start("readyz");
    let readyz = || {
        reqwest::blocking::Client::new()
            .get(format!("{}/readyz", h.d.url()))
            .timeout(Duration::from_secs(1))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(readyz(), 200);
    h.etcd.signal("STOP");
    let frozen = Instant::now();
    let turned = std::panic::catch_unwind(|| {
        wait_until(Duration::from_secs(10), "/readyz to say 503", || {
            readyz() == 503
        });
        frozen.elapsed()
    });
    let gauge = metric_sum(&h.d.metrics(), "capstan_etcd_connected", &[]);
    h.etcd.signal("CONT");
    let turned = turned.unwrap_or_else(|e| std::panic::resume_unwind(e));
    println!(
        "etcd frozen → /readyz 503 after {:.2} s",
        turned.as_secs_f64()
    );
    assert!(
        turned <= Duration::from_secs(2),
        "/readyz turned {turned:?} after etcd froze"
    );
    assert_eq!(gauge, 0.0);
    wait_until(Duration::from_secs(10), "/readyz to say 200 again", || {
        readyz() == 200
    });
}

/// Creates a network through the engine's API, which (unlike `docker network create`)
/// lets a second network take a name already in use.
fn create_network_allowing_duplicates(name: &str, stack: &str) {
    let body = serde_json::json!({
        "Name": name,
        "CheckDuplicate": false,
        "Labels": {"capstan.stack": stack},
    });
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--unix-socket",
            "/var/run/docker.sock",
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "-d",
            &body.to_string(),
            "http://localhost/v1.41/networks/create",
        ])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What two racing daemons once left behind: two networks of the stack's name. Capstan
/// finds the duplicate, removes it and converges, instead of failing every reconcile on
/// an ambiguous name.
#[test]
fn a_network_that_exists_twice_is_repaired_and_the_stack_converges() {
    let h = Harness::start("dupnet");
    let network = format!("{}_default", h.s.name);
    create_network_allowing_duplicates(&network, &h.s.name);
    create_network_allowing_duplicates(&network, &h.s.name);
    let ids = || {
        lines_of(&docker(&[
            "network",
            "ls",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=capstan.stack={}", h.s.name),
        ]))
    };
    let both = ids();
    assert_eq!(both.len(), 2, "the engine holds two of the name");

    h.d.apply(&h.s, &web(2));
    let kept = ids();
    assert_eq!(h.s.networks(), vec![network.clone()]);
    assert!(
        kept.len() == 1 && both.contains(&kept[0]),
        "one of the two is kept, repaired in place: {kept:?} of {both:?}"
    );
    assert_eq!(h.s.running().len(), 2);
    for n in 1..=2 {
        let on = inspect(
            &h.s.replica("web", n),
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").NetworkID}}}}"),
        );
        assert_eq!(on, kept[0], "replica {n} is on the network kept");
    }
}

fn lines_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
