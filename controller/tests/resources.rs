//! A network or volume the engine refuses to create, in-process: the services that need it
//! are never left `Pending` without a word. Their status names the resource and gives the
//! engine's words; the rest of the stack runs; and once the engine takes the resource, the
//! service converges.

mod fixture;

use capstan_controller::runtime::fake::{Op, Times};
use fixture::*;
use std::time::Duration;

const STACK_FILE: &str = r#"
services:
  db:
    image: db:1
    volumes: ["data:/var/lib/data"]
  web:
    image: web:1
    networks: [front]
  worker:
    image: web:1
networks: {front: {}}
volumes:
  data: {driver: nosuchdriver}
"#;

/// Runs the loop until `service`'s `Degraded` condition has `reason`, and returns its
/// message.
async fn degraded_with(f: &Fixture, service: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (got, message) = f.condition(STACK, service, "Degraded").await;
        if got == reason {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} condition on {service}: {:?}",
            f.status(STACK, service).await
        );
        f.run_for(Duration::from_millis(200)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_volume_the_engine_refuses_is_named_in_the_status_of_the_service_that_mounts_it() {
    let f = Fixture::start().await;
    let words = "error looking up volume plugin nosuchdriver: plugin \"nosuchdriver\" not found";
    f.fake.fail(
        Op::EnsureVolume,
        "s_data",
        engine_error("create volume", words),
        Times::Always,
    );
    f.apply(STACK_FILE).await;

    let message = degraded_with(&f, "db", "ResourceRefused").await;
    assert!(message.contains("volume s_data"), "{message}");
    assert!(message.contains(words), "{message}");
    let (ready, _) = f.condition(STACK, "db", "Ready").await;
    assert_eq!(ready, "ResourceRefused", "the Ready condition says why too");
    f.until_converged(STACK, "web", 1).await;
    f.until_converged(STACK, "worker", 1).await;
    assert!(
        !f.running().contains(&replica("db", 1)),
        "no replica of db is made without its volume"
    );

    f.fake.clear_faults();
    f.until_converged(STACK, "db", 1).await;
    assert_eq!(f.condition(STACK, "db", "Degraded").await.0, "AsExpected");
}

#[tokio::test(start_paused = true)]
async fn a_network_the_engine_refuses_is_named_in_the_status_of_the_services_that_join_it() {
    let f = Fixture::start().await;
    let words = "invalid network name: the engine refuses it";
    f.fake.fail(
        Op::EnsureNetwork,
        "s_front",
        engine_error("create network", words),
        Times::Always,
    );
    f.apply(STACK_FILE).await;

    let message = degraded_with(&f, "web", "ResourceRefused").await;
    assert!(message.contains("network s_front"), "{message}");
    assert!(message.contains(words), "{message}");
    f.until_converged(STACK, "worker", 1).await;
}
