//! Revisions in-process: an update whose replicas fail under `failure_action: rollback`
//! goes back to the previous revision's spec, and the store says so; `rollout undo`
//! (to any kept revision), `pause`, `resume` and `restart`.

mod fixture;

use capstan_controller::store::RolloutVerb;
use fixture::*;
use std::time::Duration;

fn web(image: &str) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    scale: 3\n    deploy:\n      update_config: {{parallelism: 1, failure_action: rollback, monitor: 10s}}\n      rollback_config: {{parallelism: 0}}\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n"
    )
}

fn healthy_after_one_second(f: &Fixture) {
    f.fake.on_start(
        "s-web-*",
        OnStart::Healthy {
            after: Duration::from_secs(1),
        },
    );
}

#[tokio::test(start_paused = true)]
async fn an_update_whose_replica_exits_is_rolled_back_and_the_store_says_so() {
    let f = Fixture::start().await;
    healthy_after_one_second(&f);
    f.apply(&web("web:1")).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;

    // web:2 exits with code 3 as soon as it starts.
    f.fake.clear_behaviours();
    f.fake.on_start(
        "s-web-*",
        OnStart::Exit {
            after: Duration::from_millis(100),
            code: 3,
        },
    );
    f.apply(&web("web:2")).await;
    let mut stored = None;
    for _ in 0..600 {
        let svc = f.store.service(STACK, "web").await.unwrap().unwrap();
        if svc.rolled_back.is_some() {
            stored = Some(svc);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let svc = stored.expect("the update was rolled back");
    // The old image is healthy again.
    f.fake.clear_behaviours();
    healthy_after_one_second(&f);
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;

    assert_eq!(svc.spec.image, "web:1");
    assert_eq!(svc.generation, 3, "a rollback is a new generation");
    let rb = svc.rolled_back.clone().unwrap();
    assert_eq!((rb.from_generation, rb.to_generation), (2, 1));
    assert_eq!(svc.previous().unwrap().spec.image, "web:2");
    assert_eq!(svc.revision.number, 3);
    assert_eq!(svc.revision.change, "automatic rollback to revision 1");
    for n in 1..=3 {
        assert_eq!(
            f.fake.image_of(&replica("web", n)).as_deref(),
            Some("web:1")
        );
    }
    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "RolledBack");
    assert!(
        message.contains("s-web-1-next exited with code 3"),
        "{message}"
    );
    assert!(message.contains("revision 1 (generation 1)"), "{message}");
    println!("{message}");

    // Applying the good spec again acknowledges the rollback.
    f.apply(&web("web:1")).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;
    let (reason, _) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "AsExpected");
}

#[tokio::test(start_paused = true)]
async fn a_failing_first_revision_is_not_rolled_back_since_nothing_came_before() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-web-*",
        OnStart::Exit {
            after: Duration::from_millis(100),
            code: 3,
        },
    );
    f.apply(&web("web:1")).await;
    f.settle().await;
    f.run_for(Duration::from_secs(30)).await;
    let svc = f.store.service(STACK, "web").await.unwrap().unwrap();
    assert!(svc.rolled_back.is_none());
    assert_eq!(svc.spec.image, "web:1");
}

#[tokio::test(start_paused = true)]
async fn undo_goes_back_to_the_previous_revision_and_a_second_undo_forward_again() {
    let f = Fixture::start().await;
    healthy_after_one_second(&f);
    for image in ["web:1", "web:2"] {
        f.apply(&web(image)).await;
        f.until_converged(STACK, "web", 3).await;
    }
    f.settle().await;

    let svc = f.store.undo(STACK, "web", None).await.unwrap();
    assert_eq!((svc.spec.image.as_str(), svc.generation), ("web:1", 3));
    assert_eq!(svc.previous().unwrap().spec.image, "web:2");
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;
    for n in 1..=3 {
        assert_eq!(
            f.fake.image_of(&replica("web", n)).as_deref(),
            Some("web:1")
        );
    }
    let again = f.store.undo(STACK, "web", None).await.unwrap();
    assert_eq!((again.spec.image.as_str(), again.generation), ("web:2", 4));
}

#[tokio::test(start_paused = true)]
async fn undo_without_a_previous_revision_is_refused() {
    let f = Fixture::start().await;
    healthy_after_one_second(&f);
    f.apply(&web("web:1")).await;
    let err = f.store.undo(STACK, "web", None).await.unwrap_err();
    assert!(err.to_string().contains("no previous revision"), "{err}");
}

fn images(svc: &capstan_api::object::Service) -> Vec<(i64, String)> {
    capstan_api::object::RevisionView::list(svc)
        .into_iter()
        .map(|r| (r.revision, r.image))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn undo_to_a_revision_restores_its_spec_as_a_new_revision_and_keeps_the_others() {
    let f = Fixture::start().await;
    healthy_after_one_second(&f);
    for image in ["web:1", "web:2", "web:3"] {
        f.apply(&web(image)).await;
        f.until_converged(STACK, "web", 3).await;
    }
    f.scale(STACK, "web", 2).await;
    let svc = f.store.service(STACK, "web").await.unwrap().unwrap();
    assert_eq!(
        images(&svc),
        [
            (1, "web:1".into()),
            (2, "web:2".into()),
            (3, "web:3".into())
        ],
        "a scale is no revision"
    );
    assert_eq!(svc.revision.change, "image: web:2 → web:3");

    let svc = f.store.undo(STACK, "web", Some(1)).await.unwrap();
    assert_eq!((svc.spec.image.as_str(), svc.spec.replicas), ("web:1", 2));
    assert_eq!(
        images(&svc),
        [
            (2, "web:2".into()),
            (3, "web:3".into()),
            (4, "web:1".into())
        ]
    );
    assert_eq!(svc.revision.change, "rollout undo to revision 1");
    f.until_converged(STACK, "web", 2).await;
    assert_eq!(
        f.fake.image_of(&replica("web", 2)).as_deref(),
        Some("web:1")
    );

    let err = f.store.undo(STACK, "web", Some(1)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("revision 1 of s/web is not in its history (it has 2, 3, 4)"),
        "{err}"
    );
    let same = f.store.undo(STACK, "web", Some(4)).await.unwrap();
    assert_eq!(
        same.generation, svc.generation,
        "undo to the current revision writes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_rollout_replaces_nothing_until_it_is_resumed_and_an_apply_keeps_the_pause() {
    let f = Fixture::start().await;
    healthy_after_one_second(&f);
    f.apply(&web("web:1")).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;

    f.store
        .rollout(STACK, "web", RolloutVerb::Pause)
        .await
        .unwrap();
    f.apply(&web("web:2")).await;
    f.run_for(Duration::from_secs(30)).await;
    for n in 1..=3 {
        assert_eq!(
            f.fake.image_of(&replica("web", n)).as_deref(),
            Some("web:1")
        );
    }
    let (reason, message) = f.condition(STACK, "web", "Progressing").await;
    assert_eq!(reason, "Paused");
    assert!(message.contains("capstan rollout resume"), "{message}");
    let svc = f.store.service(STACK, "web").await.unwrap().unwrap();
    assert!(
        svc.spec.rollout.paused,
        "an apply keeps what `rollout pause` set"
    );

    f.store
        .rollout(STACK, "web", RolloutVerb::Resume)
        .await
        .unwrap();
    f.until_converged(STACK, "web", 3).await;
    for n in 1..=3 {
        assert_eq!(
            f.fake.image_of(&replica("web", n)).as_deref(),
            Some("web:2")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_replaces_every_replica_with_the_same_spec_as_a_new_revision() {
    let f = Fixture::start().await;
    healthy_after_one_second(&f);
    f.apply(&web("web:1")).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;
    let before = f.ids();

    let svc = f
        .store
        .rollout(STACK, "web", RolloutVerb::Restart)
        .await
        .unwrap();
    assert_eq!(svc.revision.number, 2);
    assert_eq!(svc.revision.change, "rollout restart");
    f.until_converged(STACK, "web", 3).await;
    let after = f.ids();
    assert_eq!(after.len(), 3);
    for (name, id) in &after {
        assert!(
            !before.iter().any(|(n, i)| n == name && i == id),
            "{name} was not replaced"
        );
        assert_eq!(f.fake.image_of(name).as_deref(), Some("web:1"));
    }
    // The same file applied again changes nothing: the restart is not the file's.
    let result = f.apply(&web("web:1")).await;
    assert_eq!(
        result.services["web"],
        capstan_api::object::ApplyOutcome::Unchanged
    );
}
