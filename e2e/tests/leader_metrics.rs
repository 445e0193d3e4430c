//! The leader election as `/metrics` shows it: of two daemons on one etcd exactly
//! one says `capstan_leader 1`, and when it stops gracefully (SIGTERM: it resigns) the other
//! says 1 and counts the transition in `capstan_leader_transitions_total`.

use capstan_e2e::*;
use std::time::{Duration, Instant};

/// The default lease TTL: a takeover sooner than this can only come from the resignation.
const TTL: Duration = Duration::from_secs(10);

/// The value of the unlabelled sample `name` on the daemon's `/metrics`, if it has one.
fn sample(d: &Daemon, name: &str) -> Option<f64> {
    d.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `capstan_leader` of `a` and `b`, once both report it and exactly one of them says 1.
fn gauges(a: &Daemon, b: &Daemon) -> (f64, f64) {
    wait_for(
        Duration::from_secs(30),
        "exactly one leader gauge at 1",
        || {
            let (ga, gb) = (sample(a, "capstan_leader"), sample(b, "capstan_leader"));
            match (ga, gb) {
                (Some(x), Some(y)) if x + y == 1.0 && x * y == 0.0 => Ok((x, y)),
                other => Err(format!("capstan_leader: {other:?}")),
            }
        },
    )
}

#[test]
fn exactly_one_of_two_daemons_reports_leading_and_a_resigned_leaders_peer_takes_over_on_metrics() {
    let etcd = Etcd::start();
    let a = Daemon::start(&etcd);
    let b = a.start_peer(&[]);
    let (mut leader, follower) = if gauges(&a, &b).0 == 1.0 {
        (a, b)
    } else {
        (b, a)
    };
    assert!(leader.leads(), "the gauge agrees with GET /v1/leader");
    assert_eq!(follower.leader()["role"], "follower");
    let transitions = "capstan_leader_transitions_total";
    let before = sample(&follower, transitions).expect("the follower counts transitions");

    let stopped = Instant::now();
    leader.stop();
    wait_until(TTL, "the follower's gauge to say 1", || {
        sample(&follower, "capstan_leader") == Some(1.0)
    });
    println!(
        "leader stopped (SIGTERM) → its peer's capstan_leader is 1 after {:.2} s",
        stopped.elapsed().as_secs_f64()
    );
    assert!(follower.leads(), "the gauge agrees with GET /v1/leader");
    let after = sample(&follower, transitions).unwrap_or_default();
    assert_eq!(after, before + 1.0, "{transitions}: {before} → {after}");
}
