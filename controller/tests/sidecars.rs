//! Sidecars, in-process: `network_mode: service:web` pairs replica n of the sidecar with
//! replica n of `web`, across scaling, restarts and replacement of the partner.

mod fixture;

use capstan_api::object::{HealAction, HealCause};
use capstan_controller::runtime::fake::Call;
use capstan_controller::runtime::{Health, State};
use fixture::*;

fn stack(web_image: &str, replicas: u32, web_extra: &str) -> String {
    format!(
        "services:\n  web:\n    image: {web_image}\n    scale: {replicas}\n    restart: always\n{web_extra}  log:\n    image: log:1\n    network_mode: service:web\n"
    )
}

async fn paired(replicas: u32) -> Fixture {
    let f = Fixture::start().await;
    f.apply(&stack("web:1", replicas, "")).await;
    f.until_converged(STACK, "web", replicas).await;
    f.until_converged(STACK, "log", replicas).await;
    f.settle().await;
    f.fake.clear_calls();
    f
}

fn joined(f: &Fixture, n: u32) -> Option<String> {
    f.fake.joined(&replica("log", n))
}

#[tokio::test(start_paused = true)]
async fn each_sidecar_replica_joins_the_partner_replica_of_its_ordinal_and_follows_its_scale() {
    let f = paired(2).await;
    assert_eq!(joined(&f, 1), Some(replica("web", 1)));
    assert_eq!(joined(&f, 2), Some(replica("web", 2)));

    f.scale(STACK, "web", 3).await;
    f.until_converged(STACK, "log", 3).await;
    assert_eq!(joined(&f, 3), Some(replica("web", 3)));

    f.scale(STACK, "web", 1).await;
    f.until_converged(STACK, "log", 1).await;
    f.settle().await;
    let logs: Vec<String> = (f.fake.containers().into_iter())
        .filter(|c| c.service == "log")
        .map(|c| c.name)
        .collect();
    assert_eq!(logs, [replica("log", 1)], "scaled down with its partner");
    assert_eq!(joined(&f, 1), Some(replica("web", 1)));
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_restarts_when_its_partner_does_and_only_that_one() {
    let f = paired(2).await;
    let before = f.ids();

    f.fake.exit(&replica("web", 2), 1);
    f.until("log-2 to be restarted", || {
        f.fake
            .count(|c| matches!(c, Call::Restart { name } if *name == replica("log", 2)))
            > 0
    })
    .await;
    f.settle().await;

    assert_eq!(
        changes(&f.fake.calls()),
        [("start", replica("web", 2)), ("restart", replica("log", 2))],
        "the partner started again, then its sidecar rejoined it; replica 1 untouched"
    );
    assert_eq!(f.ids(), before, "no container was replaced");
    let status = f.status(STACK, "log").await.unwrap();
    assert!(status
        .recent_events
        .iter()
        .any(|e| e.replica == replica("log", 2)
            && e.reason == HealCause::PartnerRestarted
            && e.action == HealAction::Restart));
    assert_eq!(
        status.restarts, 0,
        "following a partner is no crash of its own"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_is_made_anew_beside_a_replaced_partner() {
    let f = paired(2).await;
    let old_log = f.fake.container(&replica("log", 1)).unwrap().id;

    f.apply(&stack("web:2", 2, "")).await;
    f.until("both sidecars to join the new partners", || {
        (1..=2).all(|n| {
            let web = f.fake.container(&replica("web", n));
            let log = f.fake.container(&replica("log", n));
            matches!((web, log), (Some(w), Some(l))
                if f.fake.image_of(&w.name).as_deref() == Some("web:2")
                && l.partners.as_deref() == Some(&format!("web={}", w.id))
                && l.state == State::Running)
        })
    })
    .await;
    f.until_converged(STACK, "log", 2).await;

    assert_ne!(f.fake.container(&replica("log", 1)).unwrap().id, old_log);
    assert_eq!(joined(&f, 1), Some(replica("web", 1)));
    let status = f.status(STACK, "log").await.unwrap();
    assert!(status
        .recent_events
        .iter()
        .any(|e| e.reason == HealCause::PartnerReplaced && e.action == HealAction::Replace));
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_waits_for_its_partner_and_is_ready_only_while_the_partner_is() {
    let f = Fixture::start().await;
    let check = "    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n";
    f.fake.set_image_missing("web:1", true);
    f.apply(&stack("web:1", 1, check)).await;
    f.settle().await;

    assert!(f.fake.container(&replica("log", 1)).is_none());
    let (reason, message) = f.condition(STACK, "log", "Progressing").await;
    assert_eq!(reason, "WaitingForPartner");
    assert!(
        message.contains("waits for s-web-1 to be made"),
        "{message}"
    );

    f.fake.set_image_missing("web:1", false);
    f.until("the sidecar to run", || {
        f.running().contains(&replica("log", 1))
    })
    .await;
    f.settle().await;
    let log = f.status(STACK, "log").await.unwrap();
    assert_eq!(log.ready, 0, "its partner is still starting");

    f.fake.set_health(&replica("web", 1), Health::Healthy);
    f.until_converged(STACK, "log", 1).await;
    assert_eq!(f.status(STACK, "log").await.unwrap().ready, 1);
}

#[tokio::test(start_paused = true)]
async fn a_volumes_from_sidecar_mounts_its_own_partner_replicas_volumes_read_only_when_asked() {
    let f = Fixture::start().await;
    f.apply("services:\n  data:\n    image: d:1\n    scale: 2\n  tool:\n    image: t:1\n    volumes_from: [\"data:ro\", data]\n")
        .await;
    f.until_converged(STACK, "tool", 2).await;
    for n in 1..=2 {
        let data = f.fake.container(&replica("data", n)).unwrap().id;
        let tool = replica("tool", n);
        assert_eq!(
            f.fake.volumes_from(&tool),
            [format!("{data}:ro"), data.clone()]
        );
        assert_eq!(f.fake.joined(&tool), None, "no network partner");
        let label = f.fake.container(&tool).unwrap().partners;
        assert_eq!(label, Some(format!("data={data},data={data}")));
    }
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_of_one_named_replica_keeps_its_own_count_and_every_replica_joins_that_one() {
    let f = Fixture::start().await;
    let one = replica("web", 2);
    f.apply(&format!("services:\n  web:\n    image: web:1\n    scale: 2\n  probe:\n    image: p:1\n    scale: 3\n    network_mode: container:{one}\n"))
        .await;
    f.until_converged(STACK, "probe", 3).await;
    for n in 1..=3 {
        assert_eq!(joined_by(&f, "probe", n), Some(one.clone()));
    }
}

fn joined_by(f: &Fixture, service: &str, n: u32) -> Option<String> {
    f.fake.joined(&replica(service, n))
}
