//! Two daemons on one etcd, in-process: one leads and acts, the other follows with a warm
//! cache and takes over when the leader dies; a leader cut off from etcd keeps healing and
//! does nothing else.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;
use tokio::time::Instant;

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: web:1\n    scale: {replicas}\n")
}

const TTL: Duration = Duration::from_secs(10);

fn second(f: &Fixture) -> Daemon {
    let opts = Options {
        identity: "second".into(),
        ..f.opts.clone()
    };
    wire(f.store.clone(), f.fake.clone(), &opts)
}

#[tokio::test(start_paused = true)]
async fn of_two_daemons_on_one_etcd_one_leads_and_each_replica_is_created_once() {
    let f = Fixture::start().await;
    let other = second(&f);
    f.until("a leader", || f.daemon.leads() || other.leads())
        .await;
    f.apply(&web(3)).await;
    f.until_converged(STACK, "web", 3).await;
    f.settle().await;

    assert!(f.daemon.leads() != other.leads(), "exactly one leads");
    assert_eq!(f.fake.count(|c| matches!(c, Call::Create { .. })), 3);
    assert_eq!(f.fake.networks().len(), 1, "one network, made once");
    other.stop().await;
}

#[tokio::test(start_paused = true)]
async fn when_the_leader_dies_the_follower_converges_a_change_within_the_lease_ttl() {
    let mut f = Fixture::start().await;
    f.until("the first daemon to lead", || f.daemon.leads())
        .await;
    let other = second(&f);
    f.until("the follower to sync", || other.desired.is_synced())
        .await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    assert!(!other.leads());

    let leader = std::mem::replace(&mut f.daemon, other);
    leader.crash();
    let died = Instant::now();
    f.scale(STACK, "web", 4).await;
    f.until_converged(STACK, "web", 4).await;

    let took = died.elapsed();
    assert!(f.daemon.leads());
    assert!(
        took <= TTL + Duration::from_secs(2),
        "took over and converged {took:?} after the leader died"
    );
    assert_eq!(f.fake.count(|c| matches!(c, Call::Create { .. })), 4);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_resigns_is_replaced_at_once() {
    let mut f = Fixture::start().await;
    f.until("the first daemon to lead", || f.daemon.leads())
        .await;
    let other = second(&f);
    f.apply(&web(1)).await;
    f.until_converged(STACK, "web", 1).await;

    let leader = std::mem::replace(&mut f.daemon, other);
    let stopped = Instant::now();
    leader.stop().await;
    f.until("the follower to lead", || f.daemon.leads()).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "took over {:?} after the leader resigned",
        stopped.elapsed()
    );
}

/// As a kubelet does: while etcd is unreachable, the leader restarts what exits, from its
/// last synced cache; it creates and removes nothing, and writes the status once etcd is
/// back.
#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_etcd_keeps_restarting_replicas_and_creates_nothing() {
    let f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    f.fake.clear_calls();

    f.etcd_down(true);
    f.until("the leader to notice", || {
        f.daemon.leadership.role().name() == "isolated"
    })
    .await;
    f.fake.exit(&replica("web", 1), 1);
    f.until("replica 1 to run again", || {
        f.running().contains(&replica("web", 1))
    })
    .await;
    f.fake.remove_behind_back(&replica("web", 2));
    f.run_for(Duration::from_secs(30)).await;

    assert_eq!(
        changes(&f.fake.calls()),
        [("start", replica("web", 1))],
        "only the heal: nothing created or removed while etcd is away"
    );
    f.etcd_down(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = f.status(STACK, "web").await.unwrap();
        if status.replica_states.iter().any(|r| r.restarts >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restart made during the outage is in the status written after: {status:?}"
        );
        f.run_for(Duration::from_millis(100)).await;
    }
    f.until("replica 2 to be made again once etcd is back", || {
        f.running().contains(&replica("web", 2))
    })
    .await;
}
