//! Rolling updates, in-process: a changed spec replaces replicas one at a time. Start-first
//! (the default) runs each replica's successor next to it and removes the replica once the
//! successor is ready; stop-first removes the replica, then makes its successor, and the
//! next replica goes once that one is ready.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;

fn web(image: &str) -> String {
    web_ordered(image, "start-first")
}

fn web_ordered(image: &str, order: &str) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    scale: 3\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n    deploy:\n      update_config:\n        order: {order}\n"
    )
}

/// Applies `web:1` then `web:2` in `order`, each replica healthy 2 s after it starts, and
/// returns the fewest replicas (by replica name) that were ready at once while it rolled.
async fn roll(f: &Fixture, order: &str) -> usize {
    f.fake.on_start(
        "s-web-*",
        OnStart::Healthy {
            after: Duration::from_secs(2),
        },
    );
    f.apply(&web_ordered("web:1", order)).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;
    f.fake.clear_calls();
    let before = f.ids();

    let res = f.apply(&web_ordered("web:2", order)).await;
    assert_eq!(
        res.services["web"],
        capstan_api::object::ApplyOutcome::Configured
    );
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
        assert!(f.elapsed() < deadline, "the rollout never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.settle().await;
    for (name, id) in f.ids() {
        assert_eq!(f.fake.image_of(&name).as_deref(), Some("web:2"));
        assert!(!before.iter().any(|(_, old)| *old == id), "{name} is new");
    }
    let status = f.status(STACK, "web").await.unwrap();
    assert_eq!((status.observed_generation, status.updated), (2, 3));
    worst
}

#[tokio::test(start_paused = true)]
async fn a_start_first_update_keeps_every_replica_serving_until_its_ready_successor_takes_its_name()
{
    let f = Fixture::start().await;
    let worst = roll(&f, "start-first").await;
    assert_eq!(worst, 3, "no replica was ever out of service");

    let calls = changes(&f.fake.calls());
    for n in 1..=3 {
        let (r, next) = (replica("web", n), format!("{}-next", replica("web", n)));
        let of_n: Vec<_> = (calls.iter())
            .filter(|(_, name)| *name == r || *name == next)
            .cloned()
            .collect();
        assert_eq!(
            of_n,
            [
                ("create", next.clone()),
                ("start", next.clone()),
                ("remove", r),
                ("rename", next),
            ],
            "the successor runs, then the replica goes and the successor takes its name"
        );
    }
    let started = f.call_times(|c| matches!(c, Call::Start { .. }));
    let removed = f.call_times(|c| matches!(c, Call::Remove { .. }));
    for n in 0..3 {
        assert!(
            removed[n] >= started[n] + Duration::from_secs(2),
            "replica {} was removed at {:?}, before its successor (started at {:?}) was ready",
            n + 1,
            removed[n],
            started[n]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_first_update_replaces_one_replica_at_a_time_each_ready_before_the_next_goes() {
    let f = Fixture::start().await;
    let worst = roll(&f, "stop-first").await;
    assert_eq!(worst, 2, "one replica at a time was out of service");

    let r = |n| replica("web", n);
    assert_eq!(
        changes(&f.fake.calls()),
        (1..=3)
            .flat_map(|n| [("remove", r(n)), ("create", r(n)), ("start", r(n))])
            .collect::<Vec<_>>(),
        "ordinal by ordinal, the old one removed before its successor is made"
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

    let next = format!("{}-next", replica("web", 1));
    assert_eq!(
        changes(&f.fake.calls()),
        [("create", next.clone()), ("start", next)],
        "its successor never takes over: all three replicas keep serving the old image"
    );
    assert_eq!(
        f.fake.image_of(&replica("web", 1)).as_deref(),
        Some("web:1")
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
    assert_eq!((status.ready, status.updated), (3, 0));
}
