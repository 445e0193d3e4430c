//! Container options, in-process: a replica named by `container_name` converges once and is
//! left alone, and adding options to a service rolls only that service.

mod fixture;

use fixture::*;

#[tokio::test(start_paused = true)]
async fn a_container_name_replica_converges_once_and_stays() {
    let f = Fixture::start().await;
    f.apply(
        "services:\n  web:\n    image: web:1\n    container_name: front\n  db:\n    image: db:1\n",
    )
    .await;
    f.until_converged(STACK, "web", 1).await;
    f.until_converged(STACK, "db", 1).await;
    f.settle().await;
    let names: Vec<String> = f.fake.containers().into_iter().map(|c| c.name).collect();
    assert!(names.contains(&"front".to_string()), "{names:?}");
    let first = f.ids();

    f.fake.clear_calls();
    f.settle().await;
    assert_eq!(f.ids(), first, "not taken for a stray and recreated");
    assert!(changes(&f.fake.calls()).is_empty());

    // Options on db roll db only; web keeps its container.
    f.apply("services:\n  web:\n    image: web:1\n    container_name: front\n  db:\n    image: db:1\n    cap_add: [NET_ADMIN]\n    user: \"999\"\n")
        .await;
    f.until_converged(STACK, "db", 1).await;
    f.settle().await;
    let made = changes(&f.fake.calls());
    assert!(made.iter().all(|(_, name)| name != "front"), "{made:?}");
    assert!(
        made.iter().any(|(_, name)| name == &replica("db", 1)),
        "{made:?}"
    );
}
