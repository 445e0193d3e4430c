//! Rolling updates, in-process: a changed spec replaces replicas one at a time, and the next
//! old replica is only removed once the new one is ready.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;

fn web(image: &str) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    scale: 3\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n"
    )
}

#[tokio::test(start_paused = true)]
async fn a_changed_image_replaces_one_replica_at_a_time_each_ready_before_the_next_goes() {
    let f = Fixture::start().await;
    // Each replica passes its healthcheck 2 s after it starts.
    f.fake.on_start(
        "s-web-*",
        OnStart::Healthy {
            after: Duration::from_secs(2),
        },
    );
    f.apply(&web("web:1")).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;
    f.fake.clear_calls();
    let before = f.ids();

    let res = f.apply(&web("web:2")).await;
    assert_eq!(
        res.services["web"],
        capstan_api::object::ApplyOutcome::Configured
    );
    // Watch the world while it rolls: at most one of the three replicas is missing or not
    // ready at any moment.
    let deadline = f.elapsed() + Duration::from_secs(120);
    let mut worst = 3;
    while !f.converged(STACK, "web", 3).await {
        let ready = (1..=3)
            .filter(|n| {
                f.fake
                    .container(&replica("web", *n))
                    .is_some_and(|c| c.is_ready())
            })
            .count();
        worst = worst.min(ready);
        assert!(
            ready >= 2,
            "{ready}/3 ready at {:?}: {:#?}",
            f.elapsed(),
            f.fake.containers()
        );
        assert!(f.elapsed() < deadline, "the rollout never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.settle().await;
    assert_eq!(worst, 2, "one replica at a time was out of service");

    let r = |n| replica("web", n);
    assert_eq!(
        changes(&f.fake.calls()),
        [
            ("remove", r(1)),
            ("create", r(1)),
            ("start", r(1)),
            ("remove", r(2)),
            ("create", r(2)),
            ("start", r(2)),
            ("remove", r(3)),
            ("create", r(3)),
            ("start", r(3)),
        ],
        "ordinal by ordinal, the old one removed before its successor is made (names are fixed)"
    );
    let started = f.call_times(|c| matches!(c, Call::Start { .. }));
    let removed = f.call_times(|c| matches!(c, Call::Remove { .. }));
    for n in 0..2 {
        assert!(
            removed[n + 1] >= started[n] + Duration::from_secs(2),
            "replica {} was removed at {:?}, before replica {} (started at {:?}) was ready",
            n + 2,
            removed[n + 1],
            n + 1,
            started[n]
        );
    }
    for (name, id) in f.ids() {
        assert_eq!(f.fake.image_of(&name).as_deref(), Some("web:2"));
        assert!(!before.iter().any(|(_, old)| *old == id), "{name} is new");
    }
    let status = f.status(STACK, "web").await.unwrap();
    assert_eq!((status.observed_generation, status.updated), (2, 3));
}

#[tokio::test(start_paused = true)]
async fn a_new_replica_that_never_turns_ready_stops_the_rollout() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-web-*",
        OnStart::Healthy {
            after: Duration::from_secs(1),
        },
    );
    f.apply(&web("web:1")).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;
    f.fake.clear_calls();

    // The new image's healthcheck never passes.
    f.fake.clear_behaviours();
    f.apply(&web("web:2")).await;
    f.settle().await;
    f.run_for(Duration::from_secs(65)).await;

    assert_eq!(
        changes(&f.fake.calls()),
        [
            ("remove", replica("web", 1)),
            ("create", replica("web", 1)),
            ("start", replica("web", 1)),
        ],
        "replicas 2 and 3 keep serving the old image"
    );
    assert_eq!(
        f.fake.image_of(&replica("web", 2)).as_deref(),
        Some("web:1")
    );
    assert_eq!(
        f.fake.image_of(&replica("web", 3)).as_deref(),
        Some("web:1")
    );
    let status = f.status(STACK, "web").await.unwrap();
    assert_eq!((status.ready, status.updated), (2, 1));
}
