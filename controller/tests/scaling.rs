//! Scaling, in-process: the replica count is met by creating the missing ordinals and
//! removing the highest ones first.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: web:1\n    scale: {replicas}\n")
}

#[tokio::test(start_paused = true)]
async fn three_replicas_are_created_started_and_reported_ready() {
    let f = Fixture::start().await;
    f.apply(&web(3)).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;

    assert_eq!(
        f.running(),
        [replica("web", 1), replica("web", 2), replica("web", 3)]
    );
    for c in f.fake.containers() {
        assert_eq!((c.stack.as_str(), c.service.as_str()), (STACK, "web"));
        assert_eq!(c.name, replica("web", c.ordinal.unwrap()));
    }
    let mut made = changes(&f.fake.calls());
    made.sort();
    let mut expected: Vec<(&str, String)> = (1..=3)
        .flat_map(|n| [("create", replica("web", n)), ("start", replica("web", n))])
        .collect();
    expected.sort();
    assert_eq!(
        made, expected,
        "one create and one start per replica, nothing else"
    );
    assert_eq!(f.fake.networks(), ["s_default"]);
    let status = f.status(STACK, "web").await.unwrap();
    assert_eq!((status.replicas, status.ready, status.updated), (3, 3, 3));
    assert_eq!(status.observed_generation, 1);
}

#[tokio::test(start_paused = true)]
async fn scaling_up_creates_only_the_new_ordinals_and_down_removes_the_highest_first() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    let first = f.ids();

    f.fake.clear_calls();
    f.scale(STACK, "web", 5).await;
    f.until_converged(STACK, "web", 5).await;
    f.settle().await;
    let mut created = f.targets(|c| matches!(c, Call::Create { .. }));
    created.sort();
    assert_eq!(
        created,
        [replica("web", 3), replica("web", 4), replica("web", 5)]
    );
    assert_eq!(f.fake.count(|c| matches!(c, Call::Remove { .. })), 0);
    assert_eq!(&f.ids()[..2], &first[..], "replicas 1 and 2 untouched");

    f.fake.clear_calls();
    f.scale(STACK, "web", 1).await;
    f.until_converged(STACK, "web", 1).await;
    f.settle().await;
    assert_eq!(
        f.targets(|c| matches!(c, Call::Remove { .. })),
        [
            replica("web", 5),
            replica("web", 4),
            replica("web", 3),
            replica("web", 2)
        ],
        "surplus replicas go highest ordinal first"
    );
    assert_eq!(f.fake.count(|c| matches!(c, Call::Create { .. })), 0);
    assert_eq!(f.ids(), first[..1], "replica 1 is the same container");
}

#[tokio::test(start_paused = true)]
async fn scaling_to_zero_removes_every_replica_and_scaling_back_creates_them_anew() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    let before = f.ids();

    f.scale(STACK, "web", 0).await;
    f.until_converged(STACK, "web", 0).await;
    f.settle().await;
    assert!(f.fake.containers().is_empty());
    let status = f.status(STACK, "web").await.unwrap();
    assert_eq!((status.replicas, status.ready), (0, 0));

    f.scale(STACK, "web", 2).await;
    f.until_converged(STACK, "web", 2).await;
    let after = f.ids();
    assert_eq!(after.len(), 2);
    assert!(
        after
            .iter()
            .zip(&before)
            .all(|(a, b)| a.0 == b.0 && a.1 != b.1),
        "same names, new containers: {before:?} → {after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn applying_the_same_file_twice_changes_nothing_in_etcd_or_on_the_engine() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    let (writes, ids) = (f.etcd.writes(), f.ids());
    f.fake.clear_calls();

    let res = f.apply(&web(2)).await;
    assert!(
        res.services
            .values()
            .all(|o| *o == capstan_api::object::ApplyOutcome::Unchanged),
        "{res:?}"
    );
    f.run_for(std::time::Duration::from_secs(65)).await; // past two resyncs
    assert_eq!(f.etcd.writes(), writes, "no spec or status write");
    assert_eq!(f.ids(), ids);
    assert_eq!(f.fake.count(Call::mutates), 0, "{:?}", f.fake.calls());
}

/// The container reflector: a resync lists the engine once for every service together, and
/// the reconciles it triggers read that list; nothing lists a service of its own while no
/// event touched it.
#[tokio::test(start_paused = true)]
async fn an_idle_resync_lists_the_engine_once_whatever_the_number_of_services() {
    let f = Fixture::start().await;
    let body: String = (0..20)
        .map(|i| format!("  svc{i}:\n    image: web:1\n    scale: 2\n"))
        .collect();
    f.apply(&format!("services:\n{body}")).await;
    for i in 0..20 {
        f.until_converged(STACK, &format!("svc{i}"), 2).await;
    }
    f.settle().await;
    f.fake.clear_calls();

    f.run_for(std::time::Duration::from_secs(61)).await; // two resyncs
    let lists: Vec<Call> = f
        .fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::List { .. }))
        .collect();
    let everything = Call::List {
        stack: None,
        service: None,
    };
    assert_eq!(
        lists,
        [everything.clone(), everything],
        "one list of everything per resync, none per service"
    );
    assert_eq!(f.fake.count(Call::mutates), 0);
}
