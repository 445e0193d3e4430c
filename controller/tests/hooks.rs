//! `post_start` and `pre_stop`, in-process: each runs in the replica through the engine's
//! exec API at the moment Compose runs it, a failed `post_start` unmakes the replica and says
//! so, and the kernel options reach the engine with a service's namespace resolved.

mod fixture;

use capstan_controller::runtime::fake::Call;
use fixture::*;

const HOOKED: &str = r#"
services:
  web:
    image: web:1
    scale: 2
    post_start: [{command: "touch /tmp/up"}]
    pre_stop: [{command: "flush --all"}, {command: sync}]
"#;

#[tokio::test(start_paused = true)]
async fn post_start_runs_in_each_new_replica_and_pre_stop_before_each_stop() {
    let f = Fixture::start().await;
    f.apply(HOOKED).await;
    f.until_converged(STACK, "web", 2).await;
    f.settle().await;
    for n in [1, 2] {
        assert_eq!(f.fake.execs(&replica("web", n)), vec!["touch /tmp/up"]);
    }

    f.scale(STACK, "web", 1).await;
    f.until_converged(STACK, "web", 1).await;
    f.settle().await;
    assert_eq!(
        f.fake.execs(&replica("web", 2)),
        vec!["touch /tmp/up", "flush --all", "sync"],
        "pre_stop ran, in order, before the scale-down removed it"
    );
    let calls = f.fake.calls();
    let last_exec = calls
        .iter()
        .rposition(|c| matches!(c, Call::Exec { name, .. } if *name == replica("web", 2)));
    let removed = calls
        .iter()
        .rposition(|c| matches!(c, Call::Remove { name } if *name == replica("web", 2)));
    assert!(last_exec < removed, "the hook ran before the removal");

    f.delete(STACK, false).await;
    f.until("the stack to be gone", || f.fake.containers().is_empty())
        .await;
    assert_eq!(
        f.fake.execs(&replica("web", 1)),
        vec!["touch /tmp/up", "flush --all", "sync"],
        "a deletion runs pre_stop too"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_post_start_unmakes_the_replica_and_the_status_names_the_hook() {
    let f = Fixture::start().await;
    f.fake.on_exec("*", 2);
    f.apply("services:\n  web:\n    image: web:1\n    post_start: [{command: [false]}]\n")
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let message = loop {
        let (reason, message) = f.condition(STACK, "web", "Degraded").await;
        if reason == "HookFailed" {
            break message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{reason}: {message}"
        );
        f.run_for(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        message.contains("post_start[0] `false` exited with code 2"),
        "{message}"
    );
    assert!(
        f.running().is_empty(),
        "no half-made replica is left running"
    );

    f.fake.on_exec("*", 0);
    f.until_converged(STACK, "web", 1).await;
}

#[tokio::test(start_paused = true)]
async fn kernel_options_reach_the_engine_and_a_services_namespace_is_its_first_replica() {
    let f = Fixture::start().await;
    f.apply(
        r#"
services:
  db: {image: db:1, ipc: shareable}
  web:
    image: web:1
    ipc: "service:db"
    cgroup: private
    cpu_period: 100ms
    cpu_quota: 50ms
    mem_swappiness: 0
    blkio_config: {device_read_iops: [{path: /dev/sda, rate: 100}]}
    external_links: ["cache-1:cache"]
"#,
    )
    .await;
    f.until_converged(STACK, "web", 1).await;
    let o = f.fake.options_of(&replica("web", 1)).unwrap();
    assert_eq!(o.ipc.as_deref(), Some("container:s-db-1"));
    assert_eq!(o.cgroup.as_deref(), Some("private"));
    assert_eq!((o.cpu_period, o.cpu_quota), (Some(100_000), Some(50_000)));
    assert_eq!(o.mem_swappiness, Some(0));
    assert_eq!(o.blkio.unwrap().device_read_iops[0].rate, 100);
    assert_eq!(o.external_links, vec!["cache-1:cache"]);
    let made: Vec<String> = f
        .fake
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Create { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert!(
        made.iter().position(|n| *n == replica("db", 1))
            < made.iter().position(|n| *n == replica("web", 1)),
        "the service whose namespace is joined is made first: {made:?}"
    );
}
