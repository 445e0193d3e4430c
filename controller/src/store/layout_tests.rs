//! The versioned layout against a [`MemKv`] with etcd's default limits: resourceVersions,
//! races, stacks far over one transaction, and crashes half-way.

use super::layout::Change;
use super::memory::MemKv;
use super::*;
use capstan_api::parse_stack;
use futures::StreamExt;
use std::collections::BTreeSet;

fn store() -> (Store, Arc<MemKv>) {
    let kv = Arc::new(MemKv::default());
    (Store::new(kv.clone(), "/capstan"), kv)
}

/// A stack of `n` services with no replicas, each running `image`.
fn many(n: usize, image: &str) -> StackSpec {
    let services: Vec<String> = (0..n)
        .map(|i| format!("  s{i:04}: {{image: \"{image}\", deploy: {{replicas: 0}}}}"))
        .collect();
    parse_stack("big", &format!("services:\n{}\n", services.join("\n"))).unwrap()
}

fn spec(yaml: &str) -> StackSpec {
    parse_stack("shop", yaml).unwrap()
}

const TWO: &str = "services: {web: {image: web:1}, db: {image: db:1}}";

/// Every key of the stack's service versions.
async fn version_keys(store: &Store, stack: &str) -> Vec<String> {
    let items = store.kv.range(&store.services_prefix(stack)).await.unwrap();
    items.items.into_iter().map(|kv| kv.key).collect()
}

async fn images(store: &Store, stack: &str) -> BTreeMap<String, String> {
    let view = store.stack_view(stack).await.unwrap().unwrap();
    view.services
        .into_iter()
        .map(|s| (s.name, s.spec.image))
        .collect()
}

#[tokio::test]
async fn every_change_to_a_service_changes_its_version_and_its_stacks_and_a_status_changes_neither()
{
    let (store, _) = store();
    let first = store.apply(&spec(TWO), None).await.unwrap();
    let view = store.stack_view("shop").await.unwrap().unwrap();
    assert_eq!(view.resource_version, first.resource_version);
    let db = |v: &StackView| v.services.iter().find(|s| s.name == "db").unwrap().clone();
    let web = |v: &StackView| v.services.iter().find(|s| s.name == "web").unwrap().clone();

    let next = "services: {web: {image: web:2}, db: {image: db:1}}";
    let second = store.apply(&spec(next), None).await.unwrap();
    let after = store.stack_view("shop").await.unwrap().unwrap();
    assert!(second.resource_version > first.resource_version);
    assert_eq!(after.resource_version, second.resource_version);
    assert!(web(&after).resource_version > web(&view).resource_version);
    assert_eq!(db(&after).resource_version, db(&view).resource_version);

    let scaled = store.scale("shop", "db", 3, None).await.unwrap();
    let after_scale = store.stack_view("shop").await.unwrap().unwrap();
    assert!(after_scale.resource_version > after.resource_version);
    assert_eq!(db(&after_scale).resource_version, scaled.resource_version);
    assert!(scaled.resource_version > db(&after).resource_version);

    let svc = store.service("shop", "web").await.unwrap().unwrap();
    assert!(store
        .write_status(&svc, &ServiceStatus::default())
        .await
        .unwrap());
    let after_status = store.stack_view("shop").await.unwrap().unwrap();
    assert_eq!(after_status.resource_version, after_scale.resource_version);
    assert_eq!(
        web(&after_status).resource_version,
        web(&after_scale).resource_version
    );
}

#[tokio::test]
async fn a_stale_version_is_refused_by_apply_scale_and_delete_and_nothing_changes() {
    let (store, kv) = store();
    let first = store.apply(&spec(TWO), None).await.unwrap();
    let web = store.service("shop", "web").await.unwrap().unwrap();
    store.scale("shop", "db", 2, None).await.unwrap();
    let (writes, before) = (kv.writes(), store.snapshot().await.unwrap());

    let next = spec("services: {web: {image: web:9}, db: {image: db:1}}");
    let stale = Some(first.resource_version);
    let err = store.apply(&next, stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");
    let err = store.dry_run(&next, stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");
    let err = store
        .request_deletion("shop", false, stale)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");
    // web itself did not change, so its version still holds; a version of another object
    // does not.
    let other = Some(web.resource_version + 1000);
    let err = store.scale("shop", "web", 4, other).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");

    assert_eq!(kv.writes(), writes, "nothing written");
    let after = store.snapshot().await.unwrap();
    assert_eq!(after.stacks, before.stacks);
    assert_eq!(after.services, before.services);

    let ok = store.scale("shop", "web", 4, Some(web.resource_version));
    assert_eq!(ok.await.unwrap().spec.replicas, 4);
    let current = store.stack_view("shop").await.unwrap().unwrap();
    let rv = store
        .request_deletion("shop", false, Some(current.resource_version))
        .await
        .unwrap();
    assert!(
        rv > current.resource_version,
        "the delete returns the new version"
    );
}

/// `n` applies race, all naming the version of a stack of `size` services; each changes
/// every service to its own image.
async fn race(size: usize, n: usize) {
    let (store, _) = store();
    let first = store.apply(&many(size, "img:0"), None).await.unwrap();
    let rv = Some(first.resource_version);
    let tasks: Vec<_> = (1..=n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(
                async move { (i, store.apply(&many(size, &format!("img:{i}")), rv).await) },
            )
        })
        .collect();
    let mut winners = vec![];
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(res)) => winners.push((i, res.resource_version)),
            (_, Err(StoreError::Stale { .. } | StoreError::Conflict(_))) => {}
            (_, Err(e)) => panic!("a loser must get a conflict, not {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of {n} wins: {winners:?}");
    let (winner, winner_rv) = winners[0];
    let view = store.stack_view("big").await.unwrap().unwrap();
    assert_eq!(view.resource_version, winner_rv);
    let image = format!("img:{winner}");
    assert!(view.services.iter().all(|s| s.spec.image == image));
    // The losers' staged versions are collected by the winner or the next apply.
    store.apply(&many(size, "img:final"), None).await.unwrap();
    assert_eq!(version_keys(&store, "big").await.len(), size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_racing_applies_naming_one_version_exactly_one_wins() {
    race(3, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_racing_applies_of_a_stack_larger_than_one_transaction_exactly_one_wins() {
    race(300, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_racing_scales_naming_one_version_exactly_one_wins() {
    let (store, _) = store();
    store.apply(&spec(TWO), None).await.unwrap();
    let rv = store
        .service("shop", "web")
        .await
        .unwrap()
        .unwrap()
        .resource_version;
    let tasks: Vec<_> = (1..=20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.scale("shop", "web", i + 1, Some(rv)).await })
        })
        .collect();
    let mut won = vec![];
    for t in tasks {
        if let Ok(svc) = t.await.unwrap() {
            won.push(svc.spec.replicas);
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let svc = store.service("shop", "web").await.unwrap().unwrap();
    assert_eq!(svc.spec.replicas, won[0]);
}

#[tokio::test]
async fn a_stack_of_two_thousand_services_applies_updates_shrinks_and_deletes_within_etcds_limits()
{
    let (store, kv) = store();
    let writes = kv.writes();
    let res = store.apply(&many(2000, "img:1"), None).await.unwrap();
    assert_eq!(res.services.len(), 2000);
    assert_eq!(images(&store, "big").await.len(), 2000);
    let txns = kv.writes() - writes;
    assert!(txns >= 2000 / layout::MAX_OPS as u64, "{txns} transactions");

    let mut one = many(2000, "img:1");
    one.services.get_mut("s0042").unwrap().image = "img:2".into();
    let res = store.apply(&one, None).await.unwrap();
    let changed: Vec<_> = res
        .services
        .iter()
        .filter(|(_, o)| **o != ApplyOutcome::Unchanged)
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(images(&store, "big").await["s0042"], "img:2");

    store.apply(&many(2000, "img:3"), None).await.unwrap();
    let all = images(&store, "big").await;
    assert!(all.values().all(|i| i == "img:3"));
    assert_eq!(
        version_keys(&store, "big").await.len(),
        2000,
        "old versions collected"
    );

    let res = store.apply(&many(1, "img:3"), None).await.unwrap();
    assert_eq!(
        res.services
            .values()
            .filter(|o| **o == ApplyOutcome::Removed)
            .count(),
        1999
    );
    assert_eq!(images(&store, "big").await.len(), 1);
    assert_eq!(version_keys(&store, "big").await.len(), 1);

    store.apply(&many(2000, "img:4"), None).await.unwrap();
    store.request_deletion("big", false, None).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert!(store.finalize_deletion(&snap.stacks[0]).await.unwrap());
    assert!(kv.range("/capstan/").await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_crash_half_way_through_a_large_apply_leaves_the_previous_stack_and_the_next_apply_cleans_up(
) {
    // Staging 2,000 changed services takes about 20 transactions, then one commits, then a
    // few collect the old versions: crash before, at and after the commit.
    for crash_after in [0, 1, 7, 19, 20, 21, 23] {
        let (store, kv) = store();
        store.apply(&many(2000, "img:1"), None).await.unwrap();
        kv.fail_after_writes(crash_after);
        let crashed = store.apply(&many(2000, "img:2"), None).await;
        kv.set_down(false);
        let seen = images(&store, "big").await;
        assert_eq!(seen.len(), 2000);
        let old = seen.values().all(|i| i == "img:1");
        let new = seen.values().all(|i| i == "img:2");
        assert!(old || new, "after a crash at write {crash_after}: a mix");
        assert!(new || crashed.is_err(), "the old stack after a success");

        store.apply(&many(2000, "img:3"), None).await.unwrap();
        assert!(images(&store, "big").await.values().all(|i| i == "img:3"));
        let keys = version_keys(&store, "big").await;
        assert_eq!(keys.len(), 2000, "crash at write {crash_after}: leftovers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_the_watch_never_see_half_of_a_large_apply() {
    let (store, _) = store();
    store.apply(&many(600, "img:1"), None).await.unwrap();
    let (mut resolver, snap) = store.resolved_snapshot().await.unwrap();
    let mut stream = store.watch(snap.revision + 1).await.unwrap();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while !seen.contains("img:2") {
                let images: BTreeSet<String> =
                    (images(&store, "big").await.into_values()).collect();
                assert_eq!(images.len(), 1, "a reader saw a mix: {images:?}");
                seen.extend(images);
                tokio::task::yield_now().await;
            }
        })
    };
    store.apply(&many(600, "img:2"), None).await.unwrap();
    let mut commits = vec![];
    while commits.is_empty() {
        let batch = stream.next().await.unwrap().unwrap();
        for change in resolver.apply_batch(&store, &batch) {
            commits.push(change.unwrap());
        }
    }
    match &commits[..] {
        [Change::Commit { services, .. }] => {
            assert_eq!(services.len(), 600, "one commit carries every service");
            let images: BTreeSet<&str> = services
                .iter()
                .map(|(_, s)| s.as_ref().unwrap().spec.image.as_str())
                .collect();
            assert_eq!(images, BTreeSet::from(["img:2"]));
        }
        other => panic!("{other:?}"),
    }
    reader.await.unwrap();
}

#[tokio::test]
async fn a_status_is_written_while_another_service_of_its_stack_changes_but_not_for_an_old_spec() {
    let (store, _) = store();
    store.apply(&spec(TWO), None).await.unwrap();
    let web = store.service("shop", "web").await.unwrap().unwrap();
    store.scale("shop", "db", 2, None).await.unwrap();
    assert!(store
        .write_status(&web, &ServiceStatus::default())
        .await
        .unwrap());
    store.scale("shop", "web", 2, None).await.unwrap();
    assert!(!store
        .write_status(&web, &ServiceStatus::default())
        .await
        .unwrap());
}

#[tokio::test]
async fn old_versions_a_crash_left_after_the_commit_are_collected_even_by_an_identical_apply() {
    let (store, kv) = store();
    store.apply(&many(300, "img:1"), None).await.unwrap();
    // 3 transactions stage 300 versions, the 4th commits; the crash hits the collection.
    kv.fail_after_writes(4);
    store.apply(&many(300, "img:2"), None).await.unwrap();
    kv.set_down(false);
    assert_eq!(version_keys(&store, "big").await.len(), 600);
    let res = store.apply(&many(300, "img:2"), None).await.unwrap();
    assert!(res.services.values().all(|o| *o == ApplyOutcome::Unchanged));
    assert_eq!(version_keys(&store, "big").await.len(), 300);
}

#[tokio::test]
async fn versions_a_crash_staged_are_collected_by_the_next_scale() {
    let (store, kv) = store();
    store.apply(&many(300, "img:1"), None).await.unwrap();
    kv.fail_after_writes(2);
    assert!(store.apply(&many(300, "img:2"), None).await.is_err());
    kv.set_down(false);
    assert_eq!(
        version_keys(&store, "big").await.len(),
        500,
        "two batches staged"
    );
    store.scale("big", "s0007", 2, None).await.unwrap();
    assert_eq!(version_keys(&store, "big").await.len(), 300);
    assert!(images(&store, "big").await.values().all(|i| i == "img:1"));
}
