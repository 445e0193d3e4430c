//! Memory follows the work, in-process: once a stack is deleted, no memory the daemon keeps
//! per service (the reflectors, the reconciler's scratch, the restart book, the traffic
//! bookkeeping, the scheduler, the metrics' series and clocks) holds anything of it.

mod fixture;

use fixture::*;

/// Services in the big stack: more than one etcd transaction holds.
const N: usize = 300;

/// [`N`] services of one replica each, with the environment value `V=value`.
fn many(image: &str, value: &str) -> String {
    many_of(image, value, 1)
}

/// [`N`] services of `scale` replicas each.
fn many_of(image: &str, value: &str, scale: u32) -> String {
    let services: Vec<String> = (0..N)
        .map(|i| {
            format!(
                "  s{i:03}:\n    image: {image}\n    scale: {scale}\n    environment: {{V: \"{value}\"}}\n"
            )
        })
        .collect();
    format!("services:\n{}", services.join(""))
}

/// The per-service memories that still hold something, by name.
fn remembered(f: &Fixture) -> Vec<(&'static str, usize)> {
    let all = f.daemon.context().remembered();
    all.into_iter().filter(|(_, n)| *n > 0).collect()
}

/// The lines of the metrics exposition that name `stack`.
fn series_of(f: &Fixture, stack: &str) -> Vec<String> {
    let label = format!("stack=\"{stack}\"");
    let key = format!("key=\"{stack}/");
    let text = f.daemon.context().metrics.encode();
    text.lines()
        .filter(|l| l.contains(&label) || l.contains(&key))
        .map(str::to_string)
        .collect()
}

/// Deletes the stack and waits until its keys are gone, the daemon has settled and one
/// resync has run (the container reflector forgets on its relist).
async fn delete_and_settle(f: &Fixture, stack: &str) {
    f.delete(stack, false).await;
    f.until("the stack's keys to be gone", || {
        f.daemon.desired.stack(stack).is_none()
    })
    .await;
    f.settle().await;
    f.run_for(f.opts.resync).await;
    f.settle().await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_big_stack_leaves_nothing_in_any_per_service_memory() {
    let f = Fixture::start().await;
    f.apply(&many("img:1", "a")).await;
    for i in 0..N {
        f.until_converged(STACK, &format!("s{i:03}"), 1).await;
    }
    f.settle().await;
    // Every service rolls out: rollout clocks, convergence histograms, written endpoints.
    f.apply(&many("img:2", "b")).await;
    for i in 0..N {
        f.until_converged(STACK, &format!("s{i:03}"), 1).await;
    }
    f.settle().await;
    f.fake.exit(&format!("{STACK}-s000-1"), 1);
    f.until_converged(STACK, "s000", 1).await;
    assert!(
        !series_of(&f, STACK).is_empty(),
        "the stack's services are measured while they exist"
    );

    delete_and_settle(&f, STACK).await;

    assert!(f.fake.containers().is_empty());
    assert_eq!(remembered(&f), vec![], "memories still holding entries");
    assert_eq!(series_of(&f, STACK), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_service_deleted_while_its_reconcile_fails_leaves_no_back_off_behind() {
    let f = Fixture::start().await;
    f.fake.set_image_missing("gone:1", true);
    f.apply("services:\n  web:\n    image: gone:1\n").await;
    f.until("the service to back off", || {
        series_of(&f, STACK)
            .iter()
            .any(|l| l.starts_with("capstan_reconcile_backoff_seconds{"))
    })
    .await;

    delete_and_settle(&f, STACK).await;

    assert_eq!(remembered(&f), vec![], "memories still holding entries");
    assert_eq!(series_of(&f, STACK), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_deleted_stack_without_replicas_leaves_nothing_behind_though_it_goes_at_once() {
    // One worker: the stack's teardown runs, and its keys go, while its services wait.
    let f = Fixture::start_with(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    f.apply(&many_of("img:1", "a", 0)).await;
    for i in 0..N {
        f.until_converged(STACK, &format!("s{i:03}"), 0).await;
    }
    f.apply(&many_of("img:1", "b", 0)).await;
    for i in 0..N {
        f.until_converged(STACK, &format!("s{i:03}"), 0).await;
    }
    f.settle().await;
    assert!(!series_of(&f, STACK).is_empty());

    // No container to wait for: the stack's keys go before most of its services are
    // reconciled.
    delete_and_settle(&f, STACK).await;

    assert_eq!(remembered(&f), vec![], "memories still holding entries");
    assert_eq!(series_of(&f, STACK), Vec::<String>::new());
}
