//! A stack larger than one etcd transaction, in-process: it is staged in several and
//! committed in one, and the watcher hands the reflector whole commits, so the controller
//! converges, rolls and shrinks it like any other stack.

mod fixture;

use fixture::*;
use std::collections::BTreeSet;

/// More services than etcd's 128 operations per transaction, one replica each.
const N: usize = 150;

fn many(n: usize, image: &str) -> String {
    let services: Vec<String> = (0..n)
        .map(|i| format!("  s{i:03}:\n    image: {image}\n"))
        .collect();
    format!("services:\n{}", services.join(""))
}

#[tokio::test(start_paused = true)]
async fn a_stack_larger_than_one_transaction_converges_rolls_and_shrinks_as_a_whole() {
    let f = Fixture::start().await;
    f.apply(&many(N, "img:1")).await;
    for i in 0..N {
        f.until_converged(STACK, &format!("s{i:03}"), 1).await;
    }
    f.settle().await;
    let first: BTreeSet<String> = f
        .fake
        .containers()
        .into_iter()
        .map(|c| c.spec_hash)
        .collect();
    assert_eq!(f.fake.containers().len(), N);

    f.apply(&many(N, "img:2")).await;
    for i in 0..N {
        f.until_converged(STACK, &format!("s{i:03}"), 1).await;
    }
    f.settle().await;
    let rolled = f.fake.containers();
    assert_eq!(rolled.len(), N);
    assert!(
        rolled.iter().all(|c| !first.contains(&c.spec_hash)),
        "every replica rolled"
    );

    f.apply(&many(1, "img:2")).await;
    f.until("the other services' replicas to go", || {
        f.fake.containers().len() == 1
    })
    .await;
    f.settle().await;
    assert_eq!(f.fake.containers()[0].service, "s000");
    let keys = f.keys().await;
    let services = keys.iter().filter(|k| k.contains("/v1/services/")).count();
    let statuses = keys.iter().filter(|k| k.contains("/v1/status/")).count();
    assert_eq!((services, statuses), (1, 1), "{keys:?}");
}
