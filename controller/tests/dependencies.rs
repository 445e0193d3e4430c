//! `depends_on`, in-process: a dependent is created only once its dependencies meet their
//! condition, and the gate is asked on every reconcile, a restarted daemon's too.

mod fixture;

use capstan_api::object::HealCause;

use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::time::Duration;

const DB_AND_APP: &str = r#"services:
  db:
    image: db:1
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
  app:
    image: web:1
    depends_on:
      db: {condition: service_healthy}
"#;

fn job_and_app(code: i64) -> String {
    format!(
        r#"services:
  migrate:
    image: web:1
    command: ["sh", "-c", "sleep 2; exit {code}"]
    restart: "no"
  app:
    image: web:1
    depends_on:
      migrate: {{condition: service_completed_successfully}}
"#
    )
}

fn app_created(f: &Fixture) -> Vec<Duration> {
    f.call_times(|c| matches!(c, Call::Create { name } if name.contains("-app-")))
}

#[tokio::test(start_paused = true)]
async fn app_is_not_created_until_db_is_healthy() {
    let f = Fixture::start().await;
    f.apply(DB_AND_APP).await;
    f.settle().await;
    f.run_for(Duration::from_secs(40)).await; // past rechecks and a resync

    let db = f.fake.container(&replica("db", 1)).unwrap();
    assert_eq!((db.state, db.health), (State::Running, Health::Starting));
    assert!(app_created(&f).is_empty(), "{:?}", f.fake.calls());
    assert!(f.fake.container(&replica("app", 1)).is_none());
    let (reason, message) = f.condition(STACK, "app", "Ready").await;
    assert_eq!(reason, "WaitingForDependencies");
    assert!(
        message.contains("db to be healthy (0/1 ready)"),
        "{message}"
    );

    let healthy_at = f.elapsed();
    f.fake.set_health(&replica("db", 1), Health::Healthy);
    f.until_converged(STACK, "app", 1).await;
    let created = app_created(&f);
    assert_eq!(created.len(), 1);
    assert!(
        created[0] >= healthy_at && created[0] - healthy_at < Duration::from_secs(1),
        "app is created on db's health event, not later: healthy at {healthy_at:?}, created at {:?}",
        created[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_daemon_restarted_while_db_is_not_healthy_does_not_start_app() {
    let mut f = Fixture::start().await;
    f.apply(DB_AND_APP).await;
    f.until("db to run", || f.running().contains(&replica("db", 1)))
        .await;

    f.restart_daemon().await;
    f.run_for(Duration::from_secs(40)).await;
    assert!(app_created(&f).is_empty(), "{:?}", f.fake.calls());
    assert_eq!(
        f.condition(STACK, "app", "Ready").await.0,
        "WaitingForDependencies"
    );
    assert_eq!(
        f.fake.count(|c| matches!(c, Call::Create { .. })),
        1,
        "db was adopted, not created again"
    );

    f.fake.set_health(&replica("db", 1), Health::Healthy);
    f.until_converged(STACK, "app", 1).await;
}

#[tokio::test(start_paused = true)]
async fn an_init_job_runs_once_to_completion_before_app_is_created() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-migrate-*",
        OnStart::Exit {
            after: Duration::from_secs(2),
            code: 0,
        },
    );
    f.apply(&job_and_app(0)).await;
    f.until_converged(STACK, "app", 1).await;

    let job = f.fake.container(&replica("migrate", 1)).unwrap();
    assert_eq!(job.state, State::Exited { code: 0 });
    let job_started =
        f.call_times(|c| matches!(c, Call::Start { name } if name.contains("-migrate-")));
    let created = app_created(&f);
    assert!(
        created[0] >= job_started[0] + Duration::from_secs(2),
        "app created at {:?}, before the job (started at {:?}) finished",
        created[0],
        job_started[0]
    );
    let (reason, message) = f.condition(STACK, "migrate", "Ready").await;
    assert_eq!(reason, "Completed", "{message}");

    f.run_for(Duration::from_secs(65)).await;
    assert_eq!(
        f.fake
            .count(|c| matches!(c, Call::Start { name } if name == &replica("migrate", 1))),
        1,
        "the job runs once per generation"
    );
    assert_eq!(
        f.fake.container(&replica("migrate", 1)).unwrap().id,
        job.id,
        "and its finished container is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_init_job_holds_app_with_a_condition_naming_it() {
    let f = Fixture::start().await;
    f.fake.on_start(
        "s-migrate-*",
        OnStart::Exit {
            after: Duration::from_secs(2),
            code: 3,
        },
    );
    f.apply(&job_and_app(3)).await;
    f.settle().await;
    f.run_for(Duration::from_secs(65)).await;

    assert!(app_created(&f).is_empty(), "{:?}", f.fake.calls());
    let (reason, message) = f.condition(STACK, "app", "Ready").await;
    assert_eq!(reason, "DependencyFailed", "{message}");
    assert!(
        message.contains("migrate") && message.contains("code 3"),
        "{message}"
    );
    assert_eq!(
        f.fake
            .count(|c| matches!(c, Call::Start { name } if name == &replica("migrate", 1))),
        1,
        "restart: \"no\" is never restarted"
    );
    assert_eq!(
        f.condition(STACK, "migrate", "Degraded").await.0,
        "ReplicaExited"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dependent_with_restart_true_is_restarted_when_its_dependency_is_replaced() {
    let f = Fixture::start().await;
    f.apply(
        "services:\n  db:\n    image: db:1\n  app:\n    image: web:1\n    depends_on:\n      db: {condition: service_healthy, restart: true}\n",
    )
    .await;
    f.until_converged(STACK, "app", 1).await;
    f.settle().await;
    f.fake.clear_calls();
    let app = f.fake.container(&replica("app", 1)).unwrap().id;

    f.fake.remove_behind_back(&replica("db", 1));
    f.until("app to be restarted", || {
        f.fake.count(|c| matches!(c, Call::Restart { .. })) > 0
    })
    .await;
    f.settle().await;

    assert_eq!(
        changes(&f.fake.calls()),
        [
            ("create", replica("db", 1)),
            ("start", replica("db", 1)),
            ("restart", replica("app", 1))
        ]
    );
    assert_eq!(f.fake.container(&replica("app", 1)).unwrap().id, app);
    let status = f.status(STACK, "app").await.unwrap();
    assert!(
        status
            .recent_events
            .iter()
            .any(|e| e.reason == HealCause::DependencyRestarted),
        "{:?}",
        status.recent_events
    );
}
