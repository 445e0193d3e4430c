//! `deploy.update_config`, in-process: parallelism (and its default), order, and what a
//! failing update does under `failure_action: pause` and `continue`.

mod fixture;

use fixture::*;
use std::time::Duration;

fn web(image: &str, replicas: u32, update_config: &str) -> String {
    let deploy = if update_config.is_empty() {
        String::new()
    } else {
        format!("    deploy:\n      update_config: {update_config}\n")
    };
    format!(
        "services:\n  web:\n    image: {image}\n    scale: {replicas}\n{deploy}    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n"
    )
}

/// Every replica passes its healthcheck 2 s after it starts.
fn healthy_after_two_seconds(f: &Fixture) {
    f.fake.clear_behaviours();
    f.fake.on_start(
        "s-web-*",
        OnStart::Healthy {
            after: Duration::from_secs(2),
        },
    );
}

async fn converged_on(f: &Fixture, yaml: &str, replicas: u32) {
    f.apply(yaml).await;
    f.until_converged(STACK, "web", replicas).await;
    f.settle().await;
    f.fake.clear_calls();
}

fn ready_count(f: &Fixture, replicas: u32) -> u32 {
    (1..=replicas)
        .filter(|n| {
            f.fake
                .container(&replica("web", *n))
                .is_some_and(|c| c.is_ready())
        })
        .count() as u32
}

/// Start-first successors (`<replica>-next`) that exist.
fn successor_count(f: &Fixture, replicas: u32) -> u32 {
    (1..=replicas)
        .filter(|n| {
            (f.fake)
                .container(&format!("{}-next", replica("web", *n)))
                .is_some()
        })
        .count() as u32
}

/// Applies `yaml` and watches the rollout to its end: the fewest replicas ready at once,
/// and the most successors running next to their replicas at once.
async fn while_rolling(f: &Fixture, yaml: &str, replicas: u32) -> (u32, u32) {
    f.apply(yaml).await;
    let deadline = f.elapsed() + Duration::from_secs(300);
    let (mut fewest, mut surge) = (replicas, 0);
    while !f.converged(STACK, "web", replicas).await {
        fewest = fewest.min(ready_count(f, replicas));
        surge = surge.max(successor_count(f, replicas));
        assert!(f.elapsed() < deadline, "the rollout never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.settle().await;
    for n in 1..=replicas {
        assert_eq!(
            f.fake.image_of(&replica("web", n)).as_deref(),
            Some("web:2")
        );
    }
    (fewest, surge)
}

#[tokio::test(start_paused = true)]
async fn parallelism_two_replaces_two_of_six_replicas_at_a_time_and_no_more() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    let config = "{parallelism: 2, order: stop-first}";
    converged_on(&f, &web("web:1", 6, config), 6).await;

    let rolled = while_rolling(&f, &web("web:2", 6, config), 6).await;
    assert_eq!(rolled, (4, 0), "two at a time out of service, never more");
    let removed =
        f.targets(|c| matches!(c, capstan_controller::runtime::fake::Call::Remove { .. }));
    assert_eq!(removed.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn parallelism_zero_starts_every_successor_at_once_and_every_replica_serves_meanwhile() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    converged_on(&f, &web("web:1", 4, "{parallelism: 0}"), 4).await;

    let rolled = while_rolling(&f, &web("web:2", 4, "{parallelism: 0}"), 4).await;
    assert_eq!(rolled, (4, 4));
}

#[tokio::test(start_paused = true)]
async fn parallelism_zero_stop_first_replaces_every_replica_at_once() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    let config = "{parallelism: 0, order: stop-first}";
    converged_on(&f, &web("web:1", 4, config), 4).await;

    let rolled = while_rolling(&f, &web("web:2", 4, config), 4).await;
    assert_eq!(rolled, (0, 0));
}

#[tokio::test(start_paused = true)]
async fn without_update_config_ten_replicas_roll_a_quarter_at_a_time() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    converged_on(&f, &web("web:1", 10, ""), 10).await;
    let started = f.elapsed();

    let rolled = while_rolling(&f, &web("web:2", 10, ""), 10).await;
    println!(
        "10 replicas rolled in {:?} of virtual time",
        f.elapsed() - started
    );
    assert_eq!(
        rolled,
        (10, 3),
        "start-first, 3 (10 / 4, rounded up) at a time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_update_pauses_the_rollout_and_names_the_failed_replica() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    converged_on(&f, &web("web:1", 3, "{parallelism: 1}"), 3).await;

    // The new image exits at once.
    f.fake.clear_behaviours();
    f.fake.on_start(
        "s-web-*",
        OnStart::Exit {
            after: Duration::from_millis(100),
            code: 3,
        },
    );
    f.apply(&web("web:2", 3, "{parallelism: 1}")).await;
    f.settle().await;
    f.run_for(Duration::from_secs(60)).await;

    for n in 2..=3 {
        assert_eq!(
            f.fake.image_of(&replica("web", n)).as_deref(),
            Some("web:1"),
            "replica {n} keeps serving the old image"
        );
    }
    let (reason, message) = f.condition(STACK, "web", "Progressing").await;
    assert_eq!(reason, "Paused", "{message}");
    assert!(
        message.contains("s-web-1-next exited with code 3"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_not_ready_within_monitor_counts_as_failed() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    let config = "{parallelism: 1, monitor: 10s}";
    converged_on(&f, &web("web:1", 3, config), 3).await;

    // The new image's healthcheck never passes.
    f.fake.clear_behaviours();
    f.apply(&web("web:2", 3, config)).await;
    f.settle().await;
    f.run_for(Duration::from_secs(20)).await;

    let (reason, message) = f.condition(STACK, "web", "Progressing").await;
    assert_eq!(reason, "Paused", "{message}");
    assert!(
        message.contains("s-web-1-next is not ready 10s after it started"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_action_continue_rolls_on_past_failing_replicas() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    let config = "{parallelism: 1, failure_action: continue, monitor: 5s}";
    converged_on(&f, &web("web:1", 3, config), 3).await;

    f.fake.clear_behaviours();
    f.fake.on_start(
        "s-web-*",
        OnStart::Exit {
            after: Duration::from_millis(100),
            code: 3,
        },
    );
    f.apply(&web("web:2", 3, config)).await;
    f.until("every replica runs the new image", || {
        (1..=3).all(|n| f.fake.image_of(&replica("web", n)).as_deref() == Some("web:2"))
    })
    .await;
    let (reason, _) = f.condition(STACK, "web", "Progressing").await;
    assert_ne!(reason, "Paused");
}

#[tokio::test(start_paused = true)]
async fn a_service_publishing_a_host_port_is_replaced_in_place_and_progressing_says_why() {
    let f = Fixture::start().await;
    healthy_after_two_seconds(&f);
    let yaml = |image: &str| {
        web(image, 2, "{order: start-first}").replace(
            "    scale: 2\n",
            "    scale: 2\n    ports: [\"127.0.0.1:18080-18081:80/udp\"]\n",
        )
    };
    converged_on(&f, &yaml("web:1"), 2).await;

    f.apply(&yaml("web:2")).await;
    let mut said = String::new();
    while !f.converged(STACK, "web", 2).await {
        let (reason, message) = f.condition(STACK, "web", "Progressing").await;
        if reason == "RollingUpdate" {
            said = message;
        }
        assert_eq!(successor_count(&f, 2), 0, "no successor next to a replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        said.contains(
            "replaced in place (stop-first): host port 18080 is bound by one container at a time"
        ),
        "{said}"
    );
    let r = |n| replica("web", n);
    assert_eq!(
        changes(&f.fake.calls()),
        (1..=2)
            .flat_map(|n| [("remove", r(n)), ("create", r(n)), ("start", r(n))])
            .collect::<Vec<_>>()
    );
}
