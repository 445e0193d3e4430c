//! Deleting a stack, in-process: containers go first, then networks, then volumes (only
//! when asked), and only then the stack's keys; a teardown that cannot finish says why and
//! finishes once it can.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;

const SHOP: &str = r#"services:
  web:
    image: web:1
    scale: 2
    networks: [front]
    volumes: ["data:/data"]
  db:
    image: db:1
    networks: [front, back]
networks:
  front: {}
  back: {}
volumes:
  data: {labels: {capstan.shared: "true"}}
"#;

async fn applied(f: &Fixture) {
    f.apply(SHOP).await;
    f.until_converged(STACK, "web", 2).await;
    f.until_converged(STACK, "db", 1).await;
    f.settle().await;
}

/// Indexes in the call log of the calls that satisfy `pred`.
fn positions(calls: &[Call], pred: impl Fn(&Call) -> bool) -> Vec<usize> {
    calls
        .iter()
        .enumerate()
        .filter(|(_, c)| pred(c))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn delete_removes_containers_then_networks_then_the_keys_and_keeps_volumes() {
    let f = Fixture::start().await;
    applied(&f).await;
    assert_eq!(f.fake.networks(), ["s_back", "s_front"]);
    assert_eq!(f.fake.volumes(), ["s_data"]);
    f.fake.clear_calls();

    f.delete(STACK, false).await;
    f.until("the stack's keys to be gone", || {
        f.daemon.desired.stack(STACK).is_none()
    })
    .await;
    f.settle().await;

    assert!(f.fake.containers().is_empty());
    assert!(f.fake.networks().is_empty());
    assert_eq!(
        f.fake.volumes(),
        ["s_data"],
        "named volumes stay without --volumes"
    );
    assert!(f.keys().await.is_empty(), "{:?}", f.keys().await);

    let calls = f.fake.calls();
    let removes = positions(&calls, |c| matches!(c, Call::Remove { .. }));
    let nets = positions(&calls, |c| matches!(c, Call::RemoveNetwork { .. }));
    assert_eq!(removes.len(), 3);
    assert_eq!(nets.len(), 2);
    assert!(
        removes.iter().max() < nets.iter().min(),
        "every container is gone before a network is removed: {calls:#?}"
    );
    assert_eq!(f.fake.count(|c| matches!(c, Call::RemoveVolume { .. })), 0);
    assert_eq!(
        f.fake
            .count(|c| matches!(c, Call::Create { .. } | Call::Start { .. })),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn delete_with_volumes_removes_them_last_and_the_stack_can_be_applied_again() {
    let f = Fixture::start().await;
    applied(&f).await;
    f.delete(STACK, false).await;
    f.until("the first deletion to finish", || {
        f.daemon.desired.stack(STACK).is_none()
    })
    .await;

    applied(&f).await;
    f.fake.clear_calls();
    f.delete(STACK, true).await;
    f.until("the second deletion to finish", || {
        f.daemon.desired.stack(STACK).is_none()
    })
    .await;
    f.settle().await;

    assert!(f.fake.containers().is_empty());
    assert!(f.fake.networks().is_empty());
    assert!(f.fake.volumes().is_empty());
    assert!(f.keys().await.is_empty());
    let calls = f.fake.calls();
    let removes = positions(&calls, |c| matches!(c, Call::Remove { .. }));
    let nets = positions(&calls, |c| matches!(c, Call::RemoveNetwork { .. }));
    let vols = positions(&calls, |c| matches!(c, Call::RemoveVolume { .. }));
    assert_eq!((removes.len(), nets.len(), vols.len()), (3, 2, 1));
    assert!(removes.iter().max() < nets.iter().min());
    assert!(
        nets.iter().max() < vols.iter().min(),
        "volumes after networks: {calls:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deletion_held_by_a_foreign_container_on_its_network_retries_and_finishes_once_it_leaves()
{
    let f = Fixture::start().await;
    f.apply("services:\n  web:\n    image: web:1\n").await;
    f.until_converged(STACK, "web", 1).await;
    // Somebody attached a debugging container of their own to the stack's network.
    f.fake.add_foreign_on("s-debug", &["s_default"]);
    f.fake.clear_calls();

    f.delete(STACK, false).await;
    f.run_for(Duration::from_secs(20)).await;

    assert_eq!(
        f.running(),
        ["s-debug"],
        "the replicas are gone, the foreign container untouched"
    );
    assert_eq!(f.fake.networks(), ["s_default"]);
    assert!(!f.keys().await.is_empty(), "the stack is still recorded");
    let blocked = f.daemon.blocked.get(STACK).unwrap_or_default();
    assert!(
        blocked.contains("removing network s_default") && blocked.contains("active endpoints"),
        "the wait names the network and the reason: {blocked}"
    );
    // Retried, but not in a hot loop: the replicas' events bring a few tries in the first
    // second, then the teardown error backs off exponentially (reconcile::error).
    let tries = f.call_times(|c| matches!(c, Call::RemoveNetwork { .. }));
    assert!(
        tries.len() >= 4 && tries.len() <= 10,
        "{} tries in 20 s: {tries:?}",
        tries.len()
    );
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    let last = gaps[gaps.len() - 1];
    assert!(
        last >= Duration::from_secs(4) && gaps.iter().all(|g| *g <= last),
        "the waits grow: {tries:?}"
    );

    f.fake.remove_behind_back("s-debug");
    f.until("the deletion to finish", || {
        f.daemon.desired.stack(STACK).is_none()
    })
    .await;
    assert!(f.fake.networks().is_empty());
    assert!(f.keys().await.is_empty());
    assert!(
        !f.fake.calls().contains(&Call::Remove {
            name: "s-debug".into()
        }),
        "capstan never removes what it does not own"
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_dropped_from_the_file_is_removed_with_its_status() {
    let f = Fixture::start().await;
    applied(&f).await;
    f.fake.clear_calls();

    let res = f
        .apply("services:\n  web:\n    image: web:1\n    scale: 2\n    networks: [front]\n    volumes: [\"data:/data\"]\nnetworks:\n  front: {}\nvolumes:\n  data: {labels: {capstan.shared: \"true\"}}\n")
        .await;
    assert_eq!(
        res.services["db"],
        capstan_api::object::ApplyOutcome::Removed
    );
    let applied_at = f.elapsed();
    f.until("db's replica and network to be gone", || {
        f.fake.container(&replica("db", 1)).is_none() && f.fake.networks() == ["s_front"]
    })
    .await;
    assert!(
        f.elapsed() - applied_at < Duration::from_secs(5),
        "{:?}",
        f.call_times(|c| matches!(c, Call::RemoveNetwork { .. }))
    );
    f.settle().await;

    assert_eq!(changes(&f.fake.calls()), [("remove", replica("db", 1))]);
    assert!(f.status(STACK, "db").await.is_none());
    assert_eq!(
        f.fake.networks(),
        ["s_front"],
        "the network only db used is removed"
    );
    assert!(f.converged(STACK, "web", 2).await);
}
