//! Healing, in-process: replicas removed, exited, unhealthy or crash looping, as Docker
//! events report them, and the restart policy and back-off that govern what capstan does.

mod fixture;

use capstan_api::object::{HealAction, HealCause};

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;

fn web(replicas: u32, extra: &str) -> String {
    format!("services:\n  web:\n    image: web:1\n    scale: {replicas}\n{extra}")
}

/// A healthcheck, so replicas start `starting` and are ready once it passes.
const HEALTHCHECK: &str = "    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n";

async fn converged_web(replicas: u32, extra: &str) -> Fixture {
    let f = Fixture::start().await;
    f.apply(&web(replicas, extra)).await;
    f.until_converged(STACK, "web", replicas).await;
    f.settle().await;
    f.fake.clear_calls();
    f
}

fn starts_of(f: &Fixture, name: &str) -> Vec<Duration> {
    f.call_times(|c| matches!(c, Call::Start { name: n } if n == name))
}

#[tokio::test(start_paused = true)]
async fn a_replica_removed_behind_capstans_back_is_replaced_and_the_others_are_untouched() {
    let f = converged_web(3, "").await;
    let before = f.ids();

    let removed_at = f.elapsed();
    f.fake.remove_behind_back(&replica("web", 2));
    f.until("replica 2 to run again", || {
        f.running().contains(&replica("web", 2))
    })
    .await;
    f.settle().await;

    let after = f.ids();
    assert_eq!((&after[0], &after[2]), (&before[0], &before[2]));
    assert_eq!(after[1].0, before[1].0);
    assert_ne!(
        after[1].1, before[1].1,
        "a new container under the same name"
    );
    assert_eq!(
        changes(&f.fake.calls()),
        [("create", replica("web", 2)), ("start", replica("web", 2))],
        "nothing else was touched"
    );
    let created = f.call_times(|c| matches!(c, Call::Create { .. }))[0];
    assert!(
        created - removed_at < Duration::from_secs(1),
        "the destroy event triggered the heal, no resync needed: {created:?}"
    );
    let status = f.status(STACK, "web").await.unwrap();
    assert!(
        status
            .recent_events
            .iter()
            .any(|e| e.replica == replica("web", 2)
                && e.action == HealAction::Replace
                && e.reason == HealCause::Removed),
        "{:?}",
        status.recent_events
    );
    assert!(f.converged(STACK, "web", 3).await);
}

#[tokio::test(start_paused = true)]
async fn an_exited_replica_is_started_again_in_place_under_restart_always() {
    let f = converged_web(2, "    restart: always\n").await;
    let before = f.ids();

    f.fake.exit(&replica("web", 1), 0);
    f.settle().await;

    assert_eq!(changes(&f.fake.calls()), [("start", replica("web", 1))]);
    assert_eq!(f.ids(), before, "the same container, started again");
    assert_eq!(f.running(), [replica("web", 1), replica("web", 2)]);
    let status = f.status(STACK, "web").await.unwrap();
    assert!(status
        .recent_events
        .iter()
        .any(|e| e.action == HealAction::Start
            && e.reason == HealCause::Exited
            && e.message.contains("code 0")));
    assert_eq!(status.restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_a_replica_that_exited_1_but_leaves_one_that_exited_0() {
    let f = converged_web(2, "    restart: on-failure\n").await;

    f.fake.exit(&replica("web", 1), 0);
    f.fake.exit(&replica("web", 2), 1);
    f.settle().await;
    f.run_for(Duration::from_secs(65)).await; // past rechecks and two resyncs

    assert_eq!(changes(&f.fake.calls()), [("start", replica("web", 2))]);
    assert_eq!(
        f.fake.container(&replica("web", 1)).unwrap().state,
        State::Exited { code: 0 }
    );
    assert_eq!(
        f.fake.container(&replica("web", 2)).unwrap().state,
        State::Running
    );
}

#[tokio::test(start_paused = true)]
async fn restart_no_holds_an_exited_replica_and_reports_replica_exited() {
    let f = converged_web(1, "    restart: \"no\"\n").await;

    f.fake.exit(&replica("web", 1), 1);
    f.settle().await;
    f.run_for(Duration::from_secs(65)).await;

    assert!(changes(&f.fake.calls()).is_empty(), "{:?}", f.fake.calls());
    assert_eq!(
        f.fake.container(&replica("web", 1)).unwrap().state,
        State::Exited { code: 1 }
    );
    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "ReplicaExited", "{message}");
    assert!(
        message.contains(&replica("web", 1)) && message.contains("code 1"),
        "{message}"
    );
    assert_eq!(f.condition(STACK, "web", "Ready").await.0, "ReplicaExited");
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_replica_is_restarted_with_back_off_and_replaced_after_two_restarts() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-web-*",
        OnStart::Healthy {
            after: Duration::from_secs(1),
        },
    );
    f.apply(&web(2, HEALTHCHECK)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    f.fake.clear_calls();
    let (name, old) = (
        replica("web", 1),
        f.fake.container(&replica("web", 1)).unwrap().id,
    );

    // This container's check keeps failing half a second after every (re)start; a fresh
    // container (a new ID) passes it.
    f.fake.on_start(
        &old,
        OnStart::Unhealthy {
            after: Duration::from_millis(500),
        },
    );
    f.fake
        .set_health_output(&name, "wget: server returned error: HTTP/1.1 500");
    f.fake.set_health(&name, Health::Unhealthy);
    f.until("replica 1 to be replaced", || {
        f.fake.container(&name).is_some_and(|c| c.id != old)
    })
    .await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;

    let calls = f.fake.calls();
    assert_eq!(
        changes(&calls),
        [
            ("restart", name.clone()),
            ("restart", name.clone()),
            ("remove", name.clone()),
            ("create", name.clone()),
            ("start", name.clone()),
        ],
        "restarted twice, then replaced; replica 2 untouched"
    );
    let restarts = f.call_times(|c| matches!(c, Call::Restart { .. }));
    let removed = f.call_times(|c| matches!(c, Call::Remove { .. }))[0];
    let second = restarts[1] - restarts[0];
    let third = removed - restarts[1];
    assert!(
        second >= Duration::from_secs(1) && second < Duration::from_millis(1500),
        "the second restart waits out 1 s of back-off: {second:?}"
    );
    assert!(
        third >= Duration::from_secs(2) && third < Duration::from_millis(2500),
        "the replacement waits out 2 s: {third:?}"
    );
    assert!(
        calls.contains(&Call::Inspect { name: name.clone() }),
        "the health output is looked up"
    );
    let status = f.status(STACK, "web").await.unwrap();
    let heals: Vec<(&str, &str)> = status
        .recent_events
        .iter()
        .map(|e| (e.action.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        heals,
        [
            ("restart", "unhealthy"),
            ("restart", "unhealthy"),
            ("replace", "unhealthy")
        ]
    );
    assert!(
        status.recent_events[0].message.contains("HTTP/1.1 500"),
        "{:?}",
        status.recent_events[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_looping_replica_is_restarted_at_once_then_after_1_2_4_and_8_seconds() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-crash-*",
        OnStart::Exit {
            after: Duration::ZERO,
            code: 1,
        },
    );
    f.apply("services:\n  crash:\n    image: web:1\n    command: [\"sh\", \"-c\", \"exit 1\"]\n")
        .await;
    f.run_for(Duration::from_secs(20)).await;

    let name = replica("crash", 1);
    let starts = starts_of(&f, &name);
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert_eq!(starts.len(), 6, "starts at 0, 0, 1, 3, 7, 15 s: {starts:?}");
    for (gap, expected) in gaps.iter().zip([0.0, 1.0, 2.0, 4.0, 8.0]) {
        assert!(
            *gap >= expected && *gap < expected + 0.2,
            "expected a {expected} s gap: {gaps:?}"
        );
    }
    assert_eq!(
        f.fake.count(|c| matches!(c, Call::Create { .. })),
        1,
        "restarted in place, never recreated"
    );
    assert_eq!(f.fake.count(|c| matches!(c, Call::Remove { .. })), 0);
    let (reason, message) = f.condition(STACK, "crash", "Degraded").await;
    assert_eq!(reason, "CrashLoopBackOff", "{message}");
    assert!(message.contains(&name), "{message}");
}

#[tokio::test(start_paused = true)]
async fn the_back_off_caps_at_60_seconds() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-crash-*",
        OnStart::Exit {
            after: Duration::ZERO,
            code: 1,
        },
    );
    f.apply("services:\n  crash:\n    image: web:1\n").await;
    f.run_for(Duration::from_secs(400)).await;

    let starts = starts_of(&f, &replica("crash", 1));
    let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    // 0, 1, 2, 4, 8, 16, 32, then 60 for good.
    assert_eq!(&gaps[..7], &[0, 1, 2, 4, 8, 16, 32], "{gaps:?}");
    assert!(gaps[7..].iter().all(|g| *g == 60), "{gaps:?}");
    assert!(gaps.len() >= 9, "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_stayed_up_a_quiet_minute_starts_its_back_off_afresh() {
    let f = Fixture::start().await;
    let crash = OnStart::Exit {
        after: Duration::ZERO,
        code: 1,
    };
    let name = replica("crash", 1);
    f.fake.on_start("s-crash-*", crash);
    f.apply("services:\n  crash:\n    image: web:1\n").await;
    // Starts at 0, 0 and 1 s crash; the one at 3 s stays up.
    f.until("three starts", || starts_of(&f, &name).len() == 3)
        .await;
    f.fake.clear_behaviours();
    f.until("a fourth start", || starts_of(&f, &name).len() == 4)
        .await;
    f.run_for(Duration::from_secs(100)).await;
    assert_eq!(starts_of(&f, &name).len(), 4, "it stayed up");

    f.fake.on_start("s-crash-*", crash);
    let crashed_at = f.elapsed();
    f.fake.exit(&name, 1);
    f.run_for(Duration::from_secs(5)).await;
    let starts = starts_of(&f, &name);
    // Up for 100 s, then crashed: restarted at once, then 1 s and 2 s later, as after a
    // first crash (without the reset, the second would wait 8 s).
    assert_eq!(starts.len(), 7, "{starts:?}");
    assert!(
        starts[4] - crashed_at < Duration::from_millis(200),
        "at once after the crash: {starts:?}"
    );
    let gaps: Vec<f64> = starts[4..]
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!((1.0..1.2).contains(&gaps[0]), "then 1 s: {gaps:?}");
    assert!((2.0..2.2).contains(&gaps[1]), "then 2 s: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn an_oom_killed_replica_is_restarted_and_the_heal_says_oom() {
    let f = converged_web(1, "").await;
    f.fake.oom_kill(&replica("web", 1));
    f.settle().await;

    let calls = f.fake.calls();
    assert_eq!(changes(&calls), [("start", replica("web", 1))]);
    assert!(calls.contains(&Call::Inspect {
        name: replica("web", 1)
    }));
    let status = f.status(STACK, "web").await.unwrap();
    let last = status.recent_events.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.reason.as_str()),
        ("start", "oom")
    );
    assert!(last.message.contains("137"), "{last:?}");
}

/// A cold start on a busy engine times health checks out: a replica that has not been
/// healthy since it started gets its start-up grace (the healthcheck's `start_period`, at
/// least 30 s) before capstan restarts it, so healing does not add load to a slow start. One
/// that was healthy and turned unhealthy is restarted at once.
#[tokio::test(start_paused = true)]
async fn a_replica_never_healthy_since_it_started_is_healed_only_after_its_start_up_grace() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-web-*",
        OnStart::Unhealthy {
            after: Duration::from_secs(2),
        },
    );
    let from = f.elapsed();
    f.apply(&web(1, HEALTHCHECK)).await;
    f.until("the replica to turn unhealthy", || {
        f.fake
            .container(&replica("web", 1))
            .is_some_and(|c| c.health == Health::Unhealthy)
    })
    .await;
    f.run_for(Duration::from_secs(40)).await;

    let restarts: Vec<Duration> = f
        .call_times(|c| matches!(c, Call::Restart { .. }))
        .into_iter()
        .map(|t| t - from)
        .collect();
    assert!(!restarts.is_empty(), "healed in the end");
    assert!(
        restarts[0] >= Duration::from_secs(29),
        "not within its start-up grace: {restarts:?}"
    );
    let (reason, _) = f.condition(STACK, "web", "Degraded").await;
    assert!(
        reason == "Unhealthy" || reason == "CrashLoopBackOff",
        "{reason}"
    );
}

/// The back-off position lives in the status in etcd: a restarted (or newly elected)
/// daemon goes on with a crash loop's back-off instead of hammering the engine again.
#[tokio::test(start_paused = true)]
async fn a_crash_looping_replica_keeps_its_back_off_across_a_daemon_restart() {
    let mut f = Fixture::start().await;
    f.fake.on_start(
        "s-crash-*",
        OnStart::Exit {
            after: Duration::ZERO,
            code: 1,
        },
    );
    f.apply("services:\n  crash:\n    image: web:1\n").await;
    let name = replica("crash", 1);
    // Starts at 0, 0, 1, 3, 7 and 15 s; the next is due 16 s later.
    f.until("six starts", || starts_of(&f, &name).len() == 6)
        .await;
    f.run_for(Duration::from_secs(1)).await;
    let stored = f.status(STACK, "crash").await.unwrap();
    let loop_ = stored.replica_states[0].crash_loop.clone();
    assert_eq!(loop_.map(|l| l.restarts), Some(5), "{stored:?}");

    f.restart_daemon().await;
    let restarted = f.elapsed();
    f.until("the next start", || starts_of(&f, &name).len() == 7)
        .await;
    let waited = starts_of(&f, &name)[6].saturating_sub(restarted);
    assert!(
        waited >= Duration::from_secs(10),
        "the new daemon restarted the crash loop {waited:?} after it started"
    );
    let status = f.status(STACK, "crash").await.unwrap();
    assert!(
        status.replica_states[0].restarts >= 6,
        "the count goes on: {status:?}"
    );
}
