//! Ownership, in-process: a restarted daemon adopts what it finds, capstan never touches a
//! container it does not own, and never judges a stack etcd does not know.

mod fixture;

use capstan_controller::runtime::fake::Call;
use capstan_controller::runtime::{ContainerConfig, Runtime};
use fixture::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: web:1\n    scale: {replicas}\n  db:\n    image: db:1\n")
}

#[tokio::test(start_paused = true)]
async fn a_restarted_daemon_adopts_running_replicas_without_touching_them() {
    let mut f = Fixture::start().await;
    f.apply(&web(3)).await;
    f.until_converged(STACK, "web", 3).await;
    f.until_converged(STACK, "db", 1).await;
    f.settle().await;
    let before = f.ids();
    f.fake.clear_calls();

    f.restart_daemon().await;
    f.settle().await;
    f.run_for(Duration::from_secs(65)).await; // past two resyncs of the new daemon

    assert_eq!(f.ids(), before, "same container IDs, no duplicates");
    assert!(
        changes(&f.fake.calls()).is_empty(),
        "no create, start, restart or remove: {:?}",
        f.fake.calls()
    );
    assert!(
        f.fake.count(|c| matches!(c, Call::List { .. })) > 0,
        "the new daemon did look"
    );
    assert!(f.converged(STACK, "web", 3).await);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_daemon_heals_what_changed_while_it_was_away() {
    let mut f = Fixture::start().await;
    f.apply(&web(2)).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    let before = f.ids();
    f.fake.clear_calls();

    // While no daemon runs, replica 2 is removed and replica 1 exits: nobody sees the
    // events, so the new daemon's first look must find both.
    f.restart_daemon_with(|engine| {
        engine.remove_behind_back(&replica("web", 2));
        engine.exit(&replica("web", 1), 1);
    })
    .await;
    f.until("both replicas to run again", || f.running().len() == 3)
        .await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;

    let mut made = changes(&f.fake.calls());
    made.sort();
    assert_eq!(
        made,
        [
            ("create", replica("web", 2)),
            ("start", replica("web", 1)),
            ("start", replica("web", 2)),
        ]
    );
    let after = f.ids();
    assert_eq!(after[1], before[1], "replica 1 was started again in place");
    assert_ne!(after[2].1, before[2].1, "replica 2 is new");
}

#[tokio::test(start_paused = true)]
async fn a_foreign_container_holding_a_replicas_name_is_never_touched_and_reported() {
    let f = Fixture::start().await;
    let foreign = f.fake.add_foreign(&replica("web", 2));

    f.apply(&web(3)).await;
    f.until("replicas 1 and 3 to run", || {
        f.running().iter().filter(|n| n.contains("-web-")).count() == 3
    })
    .await;
    f.settle().await;
    f.run_for(Duration::from_secs(65)).await;

    let c = f.fake.container(&replica("web", 2)).unwrap();
    assert_eq!((c.id.as_str(), c.state), (foreign.as_str(), State::Running));
    assert!(c.stack.is_empty(), "still not capstan's");
    assert_eq!(
        f.fake
            .count(|c| matches!(c, Call::Remove { .. } | Call::Restart { .. })),
        0,
        "{:?}",
        f.fake.calls()
    );
    let (reason, message) = f.condition(STACK, "web", "Degraded").await;
    assert_eq!(reason, "NameConflict", "{message}");
    assert!(message.contains(&replica("web", 2)), "{message}");
    let tries = f
        .fake
        .count(|c| matches!(c, Call::Create { name } if *name == replica("web", 2)));
    assert!(
        (2..=12).contains(&tries),
        "the name is tried again, but not in a hot loop: {tries} creates in ~66 s"
    );

    // Once its owner removes it, the replica takes its name.
    f.fake.remove_behind_back(&replica("web", 2));
    f.until_converged(STACK, "web", 3).await;
    assert_ne!(f.fake.container(&replica("web", 2)).unwrap().id, foreign);
}

#[tokio::test(start_paused = true)]
async fn containers_of_a_stack_etcd_does_not_know_are_left_alone() {
    let f = Fixture::start().await;
    // Another installation's replica, labelled like capstan's.
    let plan = ContainerConfig {
        name: "other-web-1".into(),
        hostname: "other-web-1".into(),
        image: "web:1".into(),
        command: None,
        entrypoint: None,
        env: vec![],
        labels: BTreeMap::from([
            ("capstan.stack".into(), "other".into()),
            ("capstan.service".into(), "web".into()),
            ("capstan.replica".into(), "1".into()),
            ("capstan.spec-hash".into(), "x".into()),
        ]),
        networks: vec![],
        ports: vec![],
        mounts: vec![],
        healthcheck: None,
        stop_grace: Duration::from_secs(10),
        addresses: Default::default(),
        options: Default::default(),
        join: None,
        volumes_from: vec![],
    };
    let id = f.fake.create(&plan).await.unwrap();
    f.fake.start(&id).await.unwrap();
    f.apply(&web(1)).await;
    f.until_converged(STACK, "web", 1).await;
    f.fake.exit("other-web-1", 1);
    f.run_for(Duration::from_secs(65)).await;

    assert_eq!(
        f.fake.count(|c| c.target() == "other-web-1" && c.mutates()),
        2,
        "only the test's own create and start"
    );
    assert_eq!(
        f.fake.container("other-web-1").unwrap().state,
        State::Exited { code: 1 }
    );
}

/// The Degraded condition's (reason, message) once its reason is `reason`.
async fn degraded_with(f: &Fixture, service: &str, reason: &str) -> String {
    for _ in 0..100 {
        let (r, message) = f.condition(STACK, service, "Degraded").await;
        if r == reason {
            return message;
        }
        f.run_for(Duration::from_millis(200)).await;
    }
    panic!("{service} never became Degraded/{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_network_or_volume_another_stack_made_is_never_joined_and_the_status_says_whose_it_is() {
    let f = Fixture::start().await;
    f.fake.add_owned_by("network", "s_default", "other");
    f.fake.add_owned_by("volume", "s_data", "other");
    f.fake.add_volume("s_cache"); // made by hand, or by Compose: used as Compose uses it
    let yaml = "services:\n  web:\n    image: web:1\n  db:\n    image: db:1\n    volumes: [\"data:/data\", \"cache:/cache\"]\nvolumes:\n  data: {}\n  cache: {}\n";
    f.apply(yaml).await;

    let message = degraded_with(&f, "web", "NotOwned").await;
    assert!(
        message.contains("network s_default belongs to stack other"),
        "{message}"
    );
    assert!(
        (f.fake.calls().iter()).all(|c| !matches!(c, Call::Create { .. })),
        "no replica is made on another stack's network"
    );

    f.fake.remove_network("s_default").await.unwrap();
    f.until_converged(STACK, "web", 1).await;
    let message = degraded_with(&f, "db", "NotOwned").await;
    assert!(
        message.contains("volume s_data belongs to stack other"),
        "{message}"
    );
    f.fake.remove_volume("s_data").await.unwrap();
    f.until_converged(STACK, "db", 1).await;
    assert!(f.fake.volumes().contains(&"s_cache".to_string()));
}
