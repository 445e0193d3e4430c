//! Health and healing on the real engine: an unhealthy, crashed, removed or port-blocked
//! replica is restarted or replaced with back-off (kept across a daemon restart), and the
//! startup order of `depends_on` (healthy, completed) holds on every reconcile.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
}

/// `2026-11-28T14:05:03`, the host's UTC clock (containers share it).
fn utc_now_seconds() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn condition(d: &Daemon, stack: &str, service: &str, type_: &str) -> (String, String) {
    let svc = d.service(stack, service);
    let c = svc["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default();
    (
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// A `db` that only turns healthy once the test touches /tmp/ready (start_period keeps its
/// failures from counting), and an `app` that waits for it.
fn db_and_app(app_extra: &str) -> String {
    format!(
        r#"services:
  db:
    image: {IMAGE}
    healthcheck:
      test: ["CMD", "/bin/busybox", "test", "-f", "/tmp/ready"]
      interval: 1s
      retries: 1
      start_period: 120s
  app:
    image: {IMAGE}
    depends_on:
      db: {{condition: service_healthy{app_extra}}}
"#
    )
}

#[test]
fn an_unhealthy_replica_is_restarted_and_healthy_again_while_the_others_are_untouched() {
    let h = Harness::start("unhealthy");
    let (d, s) = (&h.d, &h.s);
    d.apply(
        s,
        &format!("services:\n  web:\n    image: {IMAGE}\n    scale: 3\n"),
    );
    let started = |n: u32| inspect(&s.replica("web", n), "{{.State.StartedAt}}");
    let before: Vec<String> = (1..=3).map(started).collect();

    // The healthcheck fetches the page: without it, replica 2 turns unhealthy.
    docker(&["exec", &s.replica("web", 2), "rm", "/www/index.html"]);
    wait_until(CONVERGE, "replica 2 to be restarted", || {
        started(2) != before[1]
    });
    wait_until(CONVERGE, "the service to be ready again", || {
        d.converged(&s.name, "web", 3)
    });
    assert_eq!(
        inspect(&s.replica("web", 2), "{{.State.Health.Status}}"),
        "healthy"
    );
    assert_eq!(
        (started(1), started(3)),
        (before[0].clone(), before[2].clone()),
        "the healthy replicas were not touched"
    );

    let svc = d.service(&s.name, "web");
    assert!(svc["restarts"].as_u64().unwrap() >= 1, "{svc}");
    let events = svc["recentEvents"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["replica"] == s.replica("web", 2) && e["reason"] == "unhealthy"),
        "{events:?}"
    );
    let describe = d.cli_ok(&["describe", &format!("{}/web", s.name)]);
    assert!(
        describe.contains("Recent heal actions") && describe.contains("unhealthy"),
        "{describe}"
    );
}

#[test]
fn a_healthcheck_that_changes_only_the_timing_keeps_the_images_test() {
    let h = Harness::start("hc-timing");
    let (d, s) = (&h.d, &h.s);
    d.apply(
        s,
        &format!("services:\n  web:\n    image: {IMAGE}\n    healthcheck: {{interval: 1s}}\n"),
    );
    let hc: serde_json::Value = serde_json::from_str(&inspect(
        &s.replica("web", 1),
        "{{json .Config.Healthcheck}}",
    ))
    .unwrap();
    assert_eq!(hc["Interval"], 1_000_000_000u64, "{hc}");
    assert!(
        hc["Test"].to_string().contains("wget"),
        "the image's test: {hc}"
    );
    assert_eq!(
        inspect(&s.replica("web", 1), "{{.State.Health.Status}}"),
        "healthy"
    );
}

#[test]
fn a_crash_looping_replica_is_restarted_with_growing_back_off() {
    let h = Harness::start("crashloop");
    let (d, s) = (&h.d, &h.s);
    let events = Events::follow(&s.replica("crash", 1));
    d.apply_nowait(
        s,
        &format!(
            "services:\n  crash:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"exit 1\"]\n"
        ),
    );
    // The first start and four restarts: three back-offs to compare.
    let mut starts: Vec<f64> = vec![];
    wait_until(CONVERGE, "the first start and four restarts", || {
        starts.extend(events.drain("start").into_iter().map(|ns| ns as f64 / 1e9));
        starts.len() >= 5
    });
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // No wait before the first restart, then 1 s, 2 s, 4 s: each gap near the documented
    // delay, and growing. The delay runs from capstan's restart call, the gap between the
    // engine's start events: on a loaded engine a slow start shortens the next gap.
    for (i, gap) in gaps.iter().enumerate().skip(1) {
        let expected = 2f64.powi(i as i32 - 1);
        assert!(
            *gap >= expected * 0.7,
            "restart {i} came after {gap:.2}s, before its {expected}s back-off: {gaps:?}"
        );
    }
    assert!(
        gaps.windows(2).skip(1).all(|w| w[1] > w[0]),
        "the back-off grows: {gaps:?}"
    );
    // Just after a start, the status can still describe the running replica; the back-off
    // after its exit is what the condition names.
    wait_until(CONVERGE, "a CrashLoopBackOff condition", || {
        condition(d, &s.name, "crash", "Degraded").0 == "CrashLoopBackOff"
    });
    let (_, message) = condition(d, &s.name, "crash", "Degraded");
    assert!(message.contains(&s.replica("crash", 1)), "{message}");
}

#[test]
fn app_is_not_created_across_a_resync_until_db_is_healthy() {
    let h = Harness::start("order");
    let (d, s) = (&h.d, &h.s);
    d.apply_nowait(s, &db_and_app(""));
    wait_until(CONVERGE, "db to run", || {
        s.running().contains(&s.replica("db", 1))
    });
    wait_until(CONVERGE, "app to report that it waits", || {
        condition(d, &s.name, "app", "Ready").0 == "WaitingForDependencies"
    });
    d.wait_for_resync();
    assert!(
        !s.containers().iter().any(|c| c.0.contains("-app-")),
        "app must wait for db: {:?}",
        s.containers()
    );
    let (reason, message) = condition(d, &s.name, "app", "Ready");
    assert_eq!(reason, "WaitingForDependencies");
    assert!(message.contains("db to be healthy"), "{message}");

    let made_healthy_at = utc_now_seconds();
    docker(&["exec", &s.replica("db", 1), "touch", "/tmp/ready"]);
    wait_until(CONVERGE, "app to be ready once db is healthy", || {
        d.converged(&s.name, "app", 1)
    });
    let app_created = inspect(&s.replica("app", 1), "{{.Created}}");
    assert!(
        app_created[..19] >= made_healthy_at[..],
        "app was created at {app_created}, before db could be healthy ({made_healthy_at})"
    );
}

#[test]
fn a_migration_job_completes_before_app_starts_and_is_not_run_again_across_a_resync() {
    let h = Harness::start("migrate");
    let (d, s) = (&h.d, &h.s);
    let yaml = format!(
        "services:\n  migrate:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"sleep 2\"]\n    restart: \"no\"\n  app:\n    image: {IMAGE}\n    depends_on:\n      migrate: {{condition: service_completed_successfully}}\n"
    );
    d.apply(s, &yaml);
    let finished = inspect(&s.replica("migrate", 1), "{{.State.FinishedAt}}");
    let app_started = inspect(&s.replica("app", 1), "{{.State.StartedAt}}");
    assert_eq!(
        inspect(&s.replica("migrate", 1), "{{.State.ExitCode}}"),
        "0"
    );
    assert!(
        app_started > finished,
        "app started at {app_started}, before migrate finished at {finished}"
    );
    let (reason, _) = condition(d, &s.name, "migrate", "Ready");
    assert_eq!(reason, "Completed");
    d.wait_for_resync();
    assert_eq!(
        inspect(&s.replica("migrate", 1), "{{.State.FinishedAt}}"),
        finished,
        "the job runs once per generation"
    );
}

#[test]
fn a_failing_migration_holds_app_with_a_condition_naming_it() {
    let h = Harness::start("migfail");
    let (d, s) = (&h.d, &h.s);
    let yaml = format!(
        "services:\n  migrate:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"exit 3\"]\n    restart: \"no\"\n  app:\n    image: {IMAGE}\n    depends_on:\n      migrate: {{condition: service_completed_successfully}}\n"
    );
    d.apply_nowait(s, &yaml);
    wait_until(CONVERGE, "app to report the failed migration", || {
        condition(d, &s.name, "app", "Ready").0 == "DependencyFailed"
    });
    let (_, message) = condition(d, &s.name, "app", "Ready");
    assert!(
        message.contains("migrate") && message.contains("code 3"),
        "{message}"
    );
    assert!(
        !s.containers().iter().any(|c| c.0.contains("-app-")),
        "app must not start"
    );
    let out = d.cli(&[
        "apply",
        "-f",
        &s.file(&yaml),
        "--stack",
        &s.name,
        "--wait",
        "--timeout",
        "5s",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DependencyFailed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_daemon_restarted_while_db_is_unhealthy_does_not_start_app_across_a_resync() {
    let mut h = Harness::start("restartorder");
    let s = &h.s;
    h.d.apply_nowait(s, &db_and_app(""));
    wait_until(CONVERGE, "db to run", || {
        s.running().contains(&s.replica("db", 1))
    });

    h.d.restart();
    let (d, s) = (&h.d, &h.s);
    d.wait_for_resync();
    assert!(
        !s.containers().iter().any(|c| c.0.contains("-app-")),
        "app must still wait: {:?}",
        s.containers()
    );
    assert_eq!(
        condition(d, &s.name, "app", "Ready").0,
        "WaitingForDependencies"
    );

    docker(&["exec", &s.replica("db", 1), "touch", "/tmp/ready"]);
    wait_until(CONVERGE, "app to start once db is healthy", || {
        d.converged(&s.name, "app", 1)
    });
}

#[test]
fn a_dependent_with_restart_true_is_restarted_when_its_dependency_is_replaced() {
    let h = Harness::start("deprestart");
    let (d, s) = (&h.d, &h.s);
    let yaml = format!("services:\n  db:\n    image: {IMAGE}\n  app:\n    image: {IMAGE}\n    depends_on:\n      db: {{condition: service_healthy, restart: true}}\n");
    d.apply(s, &yaml);
    let app_started = inspect(&s.replica("app", 1), "{{.State.StartedAt}}");

    docker(&["rm", "-f", &s.replica("db", 1)]);
    wait_until(
        CONVERGE,
        "app to be restarted after db was replaced",
        || inspect(&s.replica("app", 1), "{{.State.StartedAt}}") != app_started,
    );
    wait_until(CONVERGE, "both to be ready", || {
        d.converged(&s.name, "db", 1) && d.converged(&s.name, "app", 1)
    });
    let events = d.service(&s.name, "app")["recentEvents"].clone();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "dependency-restarted"),
        "{events}"
    );
}

/// A host port held by another process: the engine refuses to start the replica. Capstan
/// backs off per replica as for a crash loop (it used to remove and recreate it 67 times
/// in 10 s), names the cause, and converges once the port is free.
#[test]
fn a_replica_whose_host_port_is_taken_backs_off_and_starts_once_the_port_is_free() {
    let h = Harness::start("porttaken");
    let (d, s) = (&h.d, &h.s);
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let yaml = format!(
        "services:\n  web:\n    image: {IMAGE}\n    ports:\n      - {{target: 80, published: \"{port}\", mode: host}}\n"
    );
    d.apply_nowait(s, &yaml);
    let starts = || d.docker_calls("start");
    wait_until(Duration::from_secs(30), "a first failed start", || {
        starts() >= 1.0
    });
    // Backing off (1 s, 2 s, 4 s, ...), the fourth try comes 7 s after the first; without
    // a back-off, a fraction of a second after it.
    let first = std::time::Instant::now();
    wait_until(Duration::from_secs(60), "four tries to start", || {
        starts() >= 4.0
    });
    let spread = first.elapsed();
    println!("four starts with the port taken, over {spread:?}");
    assert!(
        spread >= Duration::from_secs(4),
        "four starts in {spread:?}: no back-off"
    );
    let (reason, message) = condition(d, &s.name, "web", "Degraded");
    assert_eq!(reason, "PortInUse", "{message}");
    assert!(message.contains(&port.to_string()), "{message}");

    drop(holder);
    wait_until(
        CONVERGE,
        "the replica to start once the port is free",
        || d.converged(&s.name, "web", 1),
    );
}

/// The back-off position is in the status in etcd: a restarted daemon goes on with a
/// crash loop's back-off instead of restarting the replica at once.
#[test]
fn a_crash_looping_replica_keeps_its_back_off_across_a_daemon_restart() {
    let mut h = Harness::start("crashkeep");
    let name = h.s.replica("crash", 1);
    let events = Events::follow(&name);
    h.d.apply_nowait(
        &h.s,
        &format!(
            "services:\n  crash:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"exit 1\"]\n"
        ),
    );
    // Starts at about 0, 0, 1, 3 and 7 s: the next is due 8 s after the last.
    let mut starts: Vec<i64> = vec![];
    wait_until(CONVERGE, "the first start and four restarts", || {
        starts.extend(events.drain("start"));
        starts.len() >= 5
    });
    wait_until(CONVERGE, "the status to carry the crash loop", || {
        let svc = h.d.service(&h.s.name, "crash");
        svc["replicaStates"][0]["crashLoop"]["restarts"].as_u64() >= Some(4)
    });
    h.d.restart();
    starts.extend(events.drain("start"));
    let last = *starts.last().unwrap();
    let next = events.next("start", CONVERGE);
    let gap = (next - last) as f64 / 1e9;
    println!(
        "across the daemon restart, the crash loop's next start came {gap:.1} s after the last"
    );
    // A daemon that forgot the crash loop restarts it as soon as it is up (1-3 s here);
    // one that kept it waits out the 8 s back-off.
    assert!(
        gap >= 5.0,
        "the restarted daemon did not keep the back-off: {gap:.1} s between starts"
    );
    let svc = h.d.service(&h.s.name, "crash");
    assert!(
        svc["replicaStates"][0]["restarts"].as_u64() >= Some(5),
        "the RESTARTS count goes on: {svc}"
    );
}

#[test]
fn a_replica_removed_behind_capstans_back_is_replaced() {
    let h = Harness::start("heal");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(3));
    let before = s.containers();

    docker(&["rm", "-f", &s.replica("web", 2)]);
    wait_until(CONVERGE, "replica 2 to be replaced", || {
        let now = s.containers();
        now.len() == 3
            && now[1].0 == s.replica("web", 2)
            && now[1].1 != before[1].1
            && now[1].2 == "running"
    });
    let after = s.containers();
    assert_eq!(
        (&after[0], &after[2]),
        (&before[0], &before[2]),
        "the other replicas are untouched"
    );
}
