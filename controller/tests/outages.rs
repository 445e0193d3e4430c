//! Outages and failing engine calls, in-process: an unreachable etcd freezes the loop, and a
//! reconcile that keeps failing is retried, boundedly.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: web:1\n    scale: {replicas}\n")
}

#[tokio::test(start_paused = true)]
async fn an_etcd_outage_freezes_the_loop_and_the_host_converges_after() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    let before = f.ids();
    f.fake.clear_calls();

    f.etcd_down(true);
    f.until("the daemon to notice", || !f.daemon.desired.is_synced())
        .await;
    f.fake.remove_behind_back(&replica("web", 2));
    f.run_for(Duration::from_secs(60)).await;

    assert!(
        changes(&f.fake.calls()).is_empty(),
        "nothing is created, started or removed while desired state cannot be read: {:?}",
        changes(&f.fake.calls())
    );
    assert_eq!(f.ids(), before[..1], "replica 1 survives the outage");

    f.etcd_down(false);
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    assert_eq!(
        changes(&f.fake.calls()),
        [("create", replica("web", 2)), ("start", replica("web", 2))]
    );
    assert_eq!(f.ids()[0], before[0]);
}

/// What client-go's rate-limited queue does: a key that keeps failing waits longer each
/// time (0.5 s doubling to a minute), so a broken engine operation does not cost a call
/// every few seconds forever; and once the engine recovers, the key converges.
#[tokio::test(start_paused = true)]
async fn the_retries_of_a_failing_reconcile_get_further_apart() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    f.fake.clear_calls();
    f.fake.fail_remove(
        &replica("web", 2),
        engine_error(
            "remove",
            "driver failed to remove the container's filesystem",
        ),
        Times::Always,
    );

    f.scale(STACK, "web", 1).await;
    f.run_for(Duration::from_secs(120)).await;

    let tries = f.call_times(|c| matches!(c, Call::Remove { .. }));
    let gaps: Vec<f64> = tries
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(tries.len() >= 4, "retried: {gaps:?}");
    assert!(
        tries.len() <= 12,
        "{} tries in 2 minutes: {gaps:?}",
        tries.len()
    );
    let last = gaps[gaps.len() - 1];
    assert!(
        last >= 4.0 * gaps[0].max(1.0),
        "the last retry came {last} s after the one before, no later than the first: {gaps:?}"
    );
    assert_eq!(
        f.fake.container(&replica("web", 1)).map(|c| c.state),
        Some(State::Running),
        "replica 1 is untouched"
    );
    assert_eq!(f.fake.count(|c| matches!(c, Call::Create { .. })), 0);

    f.fake.clear_faults();
    f.until_converged(STACK, "web", 1).await;
    assert!(f.fake.container(&replica("web", 2)).is_none());
}

/// A failure the operator has to act on belongs in the service's status, like the other
/// reasons a replica is not as declared (NameConflict, ImageNotFound).
#[tokio::test(start_paused = true)]
async fn a_replica_that_cannot_be_removed_is_reported_in_status() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.fake.fail_remove(
        &replica("web", 2),
        engine_error(
            "remove",
            "driver failed to remove the container's filesystem",
        ),
        Times::Always,
    );
    f.scale(STACK, "web", 1).await;
    f.run_for(Duration::from_secs(20)).await;

    let status = f.status(STACK, "web").await.unwrap();
    assert_eq!(status.observed_generation, 2, "{status:?}");
    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "EngineError", "{message}");
    assert!(message.contains(&replica("web", 2)), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_fails_to_start_is_removed_not_left_half_made_and_made_once_it_can() {
    let f = Fixture::start().await;
    f.fake.fail_start(
        &replica("web", 2),
        engine_error("start", "OCI runtime create failed"),
        Times::N(3),
    );
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;

    let name = replica("web", 2);
    let attempt = [
        ("create", name.clone()),
        ("start", name.clone()),
        ("remove", name.clone()),
    ];
    let mut expected: Vec<(&str, String)> = [&attempt[..], &attempt[..], &attempt[..]].concat();
    expected.extend([("create", name.clone()), ("start", name.clone())]);
    let made: Vec<(&str, String)> = changes(&f.fake.calls())
        .into_iter()
        .filter(|(_, n)| *n == name)
        .collect();
    assert_eq!(made, expected);
    let failed: Vec<bool> = f
        .fake
        .records()
        .into_iter()
        .filter(|r| r.call == Call::Start { name: name.clone() })
        .map(|r| r.ok)
        .collect();
    assert_eq!(failed, [false, false, false, true]);
    assert_eq!(f.running(), [replica("web", 1), name]);
}

/// A start that fails (a host port already taken, say) is followed by the removal of the
/// half-made replica, whose `destroy` event triggers the next reconcile at once: without the
/// replica's back-off the engine would be hammered at full speed. The failure is injected 20
/// times only, so that a hot loop would end and the test can tell how fast it went.
#[tokio::test(start_paused = true)]
async fn a_replica_that_keeps_failing_to_start_is_not_retried_in_a_hot_loop() {
    let f = Fixture::start().await;
    f.fake.fail_start(
        &replica("web", 2),
        engine_error(
            "start",
            "driver failed programming external connectivity: port is already allocated",
        ),
        Times::N(20),
    );
    let from = f.elapsed();
    f.apply(&web(2)).await;
    f.run_for(Duration::from_secs(10)).await;

    let tries: Vec<Duration> = f
        .call_times(|c| matches!(c, Call::Start { name } if *name == replica("web", 2)))
        .into_iter()
        .map(|t| t - from)
        .collect();
    assert!(
        tries
            .iter()
            .filter(|t| **t < Duration::from_secs(10))
            .count()
            <= 6,
        "{} starts in the first 10 s: {tries:?}",
        tries.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_cannot_join_its_network_is_degraded_with_network_error_and_backs_off() {
    let f = Fixture::start().await;
    let why = "failed to create endpoint s-web-1 on network s_default: could not attach";
    f.fake.fail_start(
        &replica("web", 1),
        engine_error("start", why),
        Times::Always,
    );
    f.apply(&web(1)).await;
    f.run_for(Duration::from_secs(10)).await;

    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "NetworkError", "{message}");
    assert!(message.contains("could not attach"), "{message}");
    let starts = f
        .fake
        .count(|c| matches!(c, Call::Start { name } if *name == replica("web", 1)));
    assert!(starts <= 6, "{starts} starts in 10 s: it backs off");
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_that_cannot_be_pulled_is_reported_as_image_pull_back_off() {
    let f = Fixture::start().await;
    f.fake.set_image_missing("web:9", true);
    f.apply("services:\n  web:\n    image: web:9\n").await;
    f.run_for(Duration::from_secs(5)).await;
    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "ImagePullBackOff", "{message}");
    assert!(message.contains("web:9"), "{message}");
    assert!(f.fake.containers().is_empty());

    f.fake.set_image_missing("web:9", false);
    f.until_converged(STACK, "web", 1).await;
}

/// While the engine does not answer, the stored status says so (no replica counted ready)
/// instead of the last good news; once it answers, the service is judged afresh.
#[tokio::test(start_paused = true)]
async fn while_the_engine_does_not_answer_the_status_says_so_and_recovers_after() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;

    f.fake.set_down(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while f.condition(STACK, "web", "Degraded").await.0 != "EngineUnreachable" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no EngineUnreachable condition: {:?}",
            f.status(STACK, "web").await
        );
        f.run_for(Duration::from_millis(200)).await;
    }
    let status = f.status(STACK, "web").await.unwrap();
    assert_eq!(status.ready, 0, "{status:?}");
    let (reason, _) = f.condition(STACK, "web", "Ready").await;
    assert_eq!(reason, "EngineUnreachable");

    f.fake.set_down(false);
    f.until_converged(STACK, "web", 2).await;
    assert_eq!(f.condition(STACK, "web", "Degraded").await.0, "AsExpected");
}
