//! Pulling images, in-process: the image is made present as `pull_policy` says before
//! replicas are created; a failed pull is `ImagePullBackOff` with the registry's words,
//! retried with back-off and creating nothing; `never` never pulls.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;

const IMAGE: &str = "127.0.0.1:5000/web:1";

fn service(replicas: u32, policy: Option<&str>) -> String {
    let policy = policy.map_or(String::new(), |p| format!("    pull_policy: {p}\n"));
    format!("services:\n  web:\n    image: {IMAGE}\n    scale: {replicas}\n{policy}")
}

fn is_pull(c: &Call) -> bool {
    matches!(c, Call::Pull { .. })
}

fn is_create(c: &Call) -> bool {
    matches!(c, Call::Create { .. })
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_pulled_once_and_then_the_replicas_are_created() {
    let f = Fixture::start().await;
    f.fake.set_image_missing(IMAGE, true);
    f.fake.push_to_registry(IMAGE);
    f.apply(&service(3, None)).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;
    let calls = f.fake.calls();
    let first_pull = calls.iter().position(is_pull).expect("a pull");
    let first_create = calls.iter().position(is_create).expect("a create");
    assert!(first_pull < first_create, "{calls:#?}");
    assert_eq!(f.fake.count(is_pull), 1, "one pull for the three replicas");
    assert_eq!(f.targets(is_pull), [IMAGE]);

    // Present now: a replica made later needs no pull (`missing` is the default).
    f.scale(STACK, "web", 4).await;
    f.until_converged(STACK, "web", 4).await;
    assert_eq!(f.fake.count(is_pull), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_is_image_pull_back_off_with_the_registrys_words_and_creates_nothing() {
    let f = Fixture::start().await;
    f.fake.set_image_missing(IMAGE, true);
    f.apply(&service(2, None)).await;
    f.run_for(Duration::from_secs(20)).await;
    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "ImagePullBackOff", "{message}");
    assert!(
        message.contains(IMAGE) && message.contains("manifest unknown"),
        "{message}"
    );
    assert_eq!(f.fake.count(is_create), 0);
    // Retried with back-off: 0.5 s doubling, so a handful of pulls in 20 s, spaced wider
    // and wider; not a hot loop.
    let pulls = f.call_times(is_pull);
    assert!(
        (3..=8).contains(&pulls.len()),
        "{} pulls in 20 s: {pulls:?}",
        pulls.len()
    );
    let gaps: Vec<Duration> = pulls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]),
        "the waits between pulls never shrink: {gaps:?}"
    );

    // Once the registry has it, the next try pulls it and the replicas are made.
    f.fake.push_to_registry(IMAGE);
    f.until_converged(STACK, "web", 2).await;
    let (reason, _) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "AsExpected");
}

#[tokio::test(start_paused = true)]
async fn pull_policy_never_with_a_missing_image_says_so_and_never_pulls() {
    let f = Fixture::start().await;
    f.fake.set_image_missing(IMAGE, true);
    f.fake.push_to_registry(IMAGE);
    f.apply(&service(1, Some("never"))).await;
    f.run_for(Duration::from_secs(10)).await;
    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "ErrImageNeverPull", "{message}");
    assert!(
        message.contains(IMAGE) && message.contains("never"),
        "{message}"
    );
    assert_eq!(f.fake.count(is_pull), 0);
    assert_eq!(f.fake.count(is_create), 0);

    // Loaded by hand: it is used, still without a pull.
    f.fake.set_image_missing(IMAGE, false);
    f.until_converged(STACK, "web", 1).await;
    assert_eq!(f.fake.count(is_pull), 0);
}

#[tokio::test(start_paused = true)]
async fn while_the_image_is_pulled_the_status_says_pulling_image_and_names_it() {
    let f = Fixture::start().await;
    f.fake.set_image_missing(IMAGE, true);
    f.fake.push_to_registry(IMAGE);
    f.fake.set_pull_time(Duration::from_secs(30));
    f.apply(&service(1, None)).await;
    let mut seen = None;
    for _ in 0..200 {
        let (reason, message) = f.condition(STACK, "web", "Progressing").await;
        if reason == "PullingImage" {
            seen = Some(message);
            break;
        }
        f.run_for(Duration::from_millis(100)).await;
    }
    let message = seen.expect("a PullingImage condition while the pull runs");
    assert!(message.contains(IMAGE), "{message}");
    assert_eq!(
        f.fake.count(is_create),
        0,
        "nothing is created before the image is there"
    );
    f.until_converged(STACK, "web", 1).await;
    let (reason, _) = f.condition(STACK, "web", "Progressing").await;
    assert_eq!(reason, "Converged");
}

#[tokio::test(start_paused = true)]
async fn pull_policy_always_pulls_again_before_each_new_replica_even_when_present() {
    let f = Fixture::start().await;
    f.fake.push_to_registry(IMAGE);
    f.apply(&service(1, Some("always"))).await;
    f.until_converged(STACK, "web", 1).await;
    assert_eq!(f.fake.count(is_pull), 1, "present, and pulled all the same");
    f.scale(STACK, "web", 2).await;
    f.until_converged(STACK, "web", 2).await;
    assert_eq!(f.fake.count(is_pull), 2);
    // Restarting an existing replica creates nothing and pulls nothing.
    f.fake.exit(&replica("web", 1), 1);
    f.run_for(Duration::from_secs(5)).await;
    f.until_converged(STACK, "web", 2).await;
    assert_eq!(f.fake.count(is_pull), 2);
}

#[tokio::test(start_paused = true)]
async fn an_image_that_cannot_be_pulled_keeps_the_old_replicas_of_a_rollout_serving() {
    let f = Fixture::start().await;
    f.apply(&service(2, None)).await;
    f.until_converged(STACK, "web", 2).await;
    let before = f.ids();
    f.fake.set_image_missing("127.0.0.1:5000/web:2", true);
    f.apply(&service(2, None).replace("web:1", "web:2")).await;
    f.run_for(Duration::from_secs(10)).await;
    let (reason, _) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "ImagePullBackOff");
    assert_eq!(
        f.ids(),
        before,
        "no replica was removed for one that cannot be made"
    );
    assert_eq!(f.running().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_duration_pulls_again_only_once_the_last_pull_is_older_than_it() {
    let f = Fixture::start().await;
    f.fake.push_to_registry(IMAGE);
    f.fake.set_image_missing(IMAGE, true);
    f.apply(&service(1, Some("every_1m"))).await;
    f.until_converged(STACK, "web", 1).await;
    assert_eq!(f.fake.count(is_pull), 1, "missing: pulled");
    f.scale(STACK, "web", 2).await;
    f.until_converged(STACK, "web", 2).await;
    assert_eq!(f.fake.count(is_pull), 1, "pulled less than a minute ago");
    f.run_for(Duration::from_secs(61)).await;
    f.scale(STACK, "web", 3).await;
    f.until_converged(STACK, "web", 3).await;
    assert_eq!(
        f.fake.count(is_pull),
        2,
        "the last pull is older than a minute"
    );
}
