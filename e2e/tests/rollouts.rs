//! What an apply rolls out, and how: an unchanged file changes nothing, a changed image
//! replaces every replica under its name, and `deploy.update_config` (parallelism, order,
//! monitor, automatic rollback, `rollout undo`/`pause`/`resume`/`restart`, `diff`) acts on the
//! real replicas; an update whose replicas exit at once is rolled back to the previous
//! revision on its own, and the proxy fails no request during an update.

use capstan_e2e::*;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(90);
/// How often the rollout tests sample the engine while an update rolls.
const SAMPLE: Duration = Duration::from_millis(50);

fn web(image: &str, extra: &str) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    scale: 3\n{extra}    deploy:\n      update_config: {{parallelism: 1, failure_action: rollback, monitor: 10s}}\n      rollback_config: {{parallelism: 0}}\n"
    )
}

fn condition(svc: &serde_json::Value, type_: &str) -> (String, String) {
    let c = svc["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default();
    (
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn an_update_whose_replicas_exit_is_rolled_back_automatically_with_the_reason() {
    let h = Harness::start("roll-back");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(IMAGE, ""));
    wait_until(CONVERGE, "web to converge on the first revision", || {
        d.converged(&s.name, "web", 3)
    });

    // The second revision runs the new image with a command that exits 3 at once.
    let applied = Instant::now();
    d.apply_nowait(
        s,
        &web(IMAGE_V2, "    command: [\"sh\", \"-c\", \"exit 3\"]\n"),
    );
    let svc = wait_for(CONVERGE, "the update to be rolled back", || {
        let svc = d.service(&s.name, "web");
        if svc["rolledBack"].is_object() {
            Ok(svc)
        } else {
            Err(format!("{svc}"))
        }
    });
    println!(
        "rolled back {:?} after the apply (monitor 10s)",
        applied.elapsed()
    );
    wait_until(CONVERGE, "web to converge on the rolled-back spec", || {
        d.converged(&s.name, "web", 3)
    });
    println!("converged again {:?} after the apply", applied.elapsed());

    let status = d.cli(&["rollout", "status", &format!("{}/web", s.name)]);
    let said = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(status.status.code(), Some(1), "{said}");
    assert!(
        said.contains("rolled back: update to generation 2 failed"),
        "{said}"
    );
    let rb = &svc["rolledBack"];
    assert_eq!(
        (rb["fromGeneration"].as_i64(), rb["toGeneration"].as_i64()),
        (Some(2), Some(1)),
        "{rb}"
    );
    assert_eq!(svc["generation"], 3, "{svc}");
    assert_eq!(svc["image"], IMAGE, "etcd says what runs: {svc}");
    assert!(svc["spec"]["command"].is_null(), "{svc}");
    for n in 1..=3 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE);
    }
    let svc = d.service(&s.name, "web");
    let (reason, message) = condition(&svc, "Degraded");
    assert_eq!(reason, "RolledBack", "{svc}");
    // The replica is caught exited (code 3), or restarted and still not ready.
    assert!(message.contains(&s.replica("web", 1)), "{message}");
    assert!(
        message.contains("exited with code 3") || message.contains("not ready"),
        "{message}"
    );
    println!("{message}");
    assert_eq!(
        history(d, &format!("{}/web", s.name)),
        [(2, IMAGE_V2.into(), false), (3, IMAGE.into(), true)],
        "the failed revision stays in the history"
    );
}

#[test]
fn an_update_that_never_becomes_healthy_is_rolled_back_with_its_last_health_output() {
    let h = Harness::start("roll-unhealthy");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(IMAGE, ""));
    wait_until(CONVERGE, "web to converge on the first revision", || {
        d.converged(&s.name, "web", 3)
    });
    let probe = "    healthcheck:\n      test: [\"CMD-SHELL\", \"echo probe-says-no; exit 1\"]\n      interval: 1s\n      retries: 1\n";
    d.apply_nowait(s, &web(IMAGE_V2, probe));
    wait_until(CONVERGE, "the update to be rolled back", || {
        d.service(&s.name, "web")["rolledBack"].is_object()
    });
    wait_until(CONVERGE, "web to converge on the rolled-back spec", || {
        rolled_out(d, s, 3)
    });
    for n in 1..=3 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE);
    }
    let svc = d.service(&s.name, "web");
    let (reason, message) = condition(&svc, "Degraded");
    assert_eq!(reason, "RolledBack", "{svc}");
    assert!(message.contains("is unhealthy"), "{message}");
    assert!(
        message.contains("last health check of") && message.contains("probe-says-no"),
        "{message}"
    );
    assert_eq!(
        history(d, &format!("{}/web", s.name)),
        [(2, IMAGE_V2.into(), false), (3, IMAGE.into(), true)]
    );
}

#[test]
fn diff_exits_0_without_changes_1_with_changes_and_2_on_an_error_and_changes_nothing() {
    let h = Harness::start("roll-diff");
    let (d, s) = (&h.d, &h.s);
    let yaml = |image: &str| format!("services:\n  web:\n    image: {image}\n    scale: 2\n");
    d.apply(s, &yaml(IMAGE));
    let diff = |yaml: &str| {
        let file = s.file(yaml);
        let out = d.cli(&["diff", "-f", &file, "--stack", &s.name]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, _) = diff(&yaml(IMAGE));
    assert_eq!((code, stdout.as_str()), (Some(0), ""));

    let (code, stdout, _) = diff(&format!(
        "services:\n  web:\n    image: {IMAGE_V2}\n    scale: 2\n  api:\n    image: {IMAGE}\n"
    ));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "~ {}/web (changed)\n    image:\n      - \"{IMAGE}\"\n      + \"{IMAGE_V2}\"\n",
            s.name
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("+ {}/api (new service)", s.name)),
        "{stdout}"
    );
    println!("{stdout}");

    let (code, _, stderr) = diff("services: {web: {image: x, imgae: y}}");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("services.web.imgae"), "{stderr}");

    assert_eq!(
        d.service(&s.name, "web")["image"],
        IMAGE,
        "diff applies nothing"
    );
}

#[test]
fn rollout_undo_returns_the_service_to_the_previous_image() {
    let h = Harness::start("roll-undo");
    let (d, s) = (&h.d, &h.s);
    let yaml = |image: &str| format!("services:\n  web:\n    image: {image}\n    scale: 2\n");
    d.apply(s, &yaml(IMAGE));
    d.apply(s, &yaml(IMAGE_V2));
    let out = d.cli_ok(&["rollout", "undo", &format!("{}/web", s.name)]);
    assert!(out.contains("generation 3"), "{out}");
    wait_until(CONVERGE, "web to converge on the first image again", || {
        d.converged(&s.name, "web", 2)
    });
    let said = d.cli_ok(&["rollout", "status", &format!("{}/web", s.name)]);
    assert!(
        said.contains("successfully rolled out (generation 3)"),
        "{said}"
    );
    let svc = d.service(&s.name, "web");
    assert_eq!(
        (&svc["image"], &svc["generation"]),
        (&IMAGE.into(), &3.into()),
        "{svc}"
    );
    for n in 1..=2 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE);
    }
}

/// `rollout history` as a list of (revision, image, current).
fn history(d: &Daemon, target: &str) -> Vec<(i64, String, bool)> {
    let out = d.cli_ok(&["rollout", "history", target]);
    println!("{out}");
    assert!(
        out.starts_with("REVISION") && out.contains(" (current)"),
        "{out}"
    );
    let v: serde_json::Value = d
        .api()
        .get(format!(
            "{API}/v1/stacks/{}/history",
            target.replace('/', "/services/")
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["image"].as_str().unwrap().to_string(),
                r["current"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Every replica ready and on the current spec.
fn rolled_out(d: &Daemon, s: &StackGuard, n: u64) -> bool {
    d.converged(&s.name, "web", n) && d.service(&s.name, "web")["updated"] == n
}

fn replica_ids(s: &StackGuard, n: u32) -> Vec<String> {
    (1..=n)
        .map(|i| inspect(&s.replica("web", i), "{{.Id}}"))
        .collect()
}

#[test]
fn history_undo_to_a_revision_restart_and_pause_resume_act_on_the_real_replicas() {
    let h = Harness::start("roll-hist");
    let (d, s) = (&h.d, &h.s);
    let target = format!("{}/web", s.name);
    let yaml = |image: &str, scale: u32| {
        format!("services:\n  web:\n    image: {image}\n    scale: {scale}\n")
    };
    d.apply(s, &yaml(IMAGE, 2));
    d.apply(s, &yaml(IMAGE_V2, 2));
    d.apply(s, &yaml(IMAGE_V2, 3));
    assert_eq!(
        history(d, &target),
        [(1, IMAGE.into(), false), (2, IMAGE_V2.into(), true)],
        "a scale is no revision"
    );

    // Back to revision 1: a new revision 3, and 1 leaves the history (it is current).
    d.cli_ok(&["rollout", "undo", &target, "--to-revision", "1"]);
    wait_until(CONVERGE, "web back on revision 1's image", || {
        rolled_out(d, s, 3)
    });
    for n in 1..=3 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE);
    }
    assert_eq!(
        history(d, &target),
        [(2, IMAGE_V2.into(), false), (3, IMAGE.into(), true)]
    );
    let out = d.cli(&["rollout", "undo", &target, "--to-revision", "9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("revision 9"), "{err}");

    // A restart: every replica anew, same image, honouring update_config.
    let before = replica_ids(s, 3);
    d.cli_ok(&["rollout", "restart", &target]);
    wait_until(CONVERGE, "every replica replaced", || {
        rolled_out(d, s, 3) && replica_ids(s, 3).iter().zip(&before).all(|(a, b)| a != b)
    });
    assert_eq!(inspect(&s.replica("web", 2), "{{.Config.Image}}"), IMAGE);

    // Paused: an apply of a new image replaces nothing until resumed.
    d.cli_ok(&["rollout", "pause", &target]);
    let paused = replica_ids(s, 3);
    d.apply_nowait(s, &yaml(IMAGE_V2, 3));
    wait_until(CONVERGE, "the service to say its rollout is paused", || {
        let svc = d.service(&s.name, "web");
        svc["observedGeneration"] == svc["generation"]
            && condition(&svc, "Progressing").0 == "Paused"
    });
    assert_eq!(
        replica_ids(s, 3),
        paused,
        "a paused rollout replaced a replica"
    );
    let out = d.cli(&["rollout", "status", &target, "--timeout", "5s"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("paused"), "{said}");
    d.cli_ok(&["rollout", "resume", &target]);
    wait_until(CONVERGE, "the resumed rollout to finish", || {
        rolled_out(d, s, 3)
    });
    for n in 1..=3 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE_V2);
    }
}

#[test]
fn the_proxy_fails_no_request_during_an_update_two_at_a_time_and_during_an_automatic_rollback() {
    let h = Harness::start("roll-nofail");
    let (d, s) = (&h.d, &h.s);
    let port = free_port();
    let yaml = |image: &str, extra: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    scale: 4\n    ports: [\"127.0.0.1:{port}:80\"]\n    stop_grace_period: 2s\n{extra}    deploy:\n      update_config: {{parallelism: 2, failure_action: rollback, monitor: 10s}}\n"
        )
    };
    d.apply(s, &yaml(IMAGE, ""));
    let load = LoadLoop::start(&format!("http://127.0.0.1:{port}/"));

    d.apply(s, &yaml(IMAGE_V2, ""));
    let updated = d.service(&s.name, "web");
    assert_eq!(updated["image"], IMAGE_V2, "{updated}");

    // The next update exits at once and is rolled back to IMAGE_V2.
    d.apply_nowait(
        s,
        &yaml(IMAGE, "    command: [\"sh\", \"-c\", \"exit 3\"]\n"),
    );
    wait_until(CONVERGE, "the rollback to be stored", || {
        d.service(&s.name, "web")["rolledBack"].is_object()
    });
    wait_until(CONVERGE, "web to converge on the rolled-back spec", || {
        d.converged(&s.name, "web", 4)
    });
    let samples = load.finish();
    println!(
        "{} requests during an update with parallelism 2 and a rollback",
        samples.len()
    );
    assert_every_request_answered(&samples);
    for n in 1..=4 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE_V2);
    }
}

/// Start-first with one replica behind the proxy (declared, since one replica on a fixed
/// port is otherwise the engine's): its successor serves next to it until ready, so an
/// update of a single replica fails no request, and the successor ends with the replica's
/// name.
#[test]
fn a_single_replica_updated_start_first_fails_no_request_and_its_successor_takes_its_name() {
    let h = Harness::start("roll-surge");
    let (d, s) = (&h.d, &h.s);
    let port = free_port();
    let yaml = |image: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    ports: [{{target: 80, published: {port}, host_ip: 127.0.0.1, x-capstan-proxy: true}}]\n    stop_grace_period: 2s\n    deploy:\n      update_config: {{order: start-first}}\n"
        )
    };
    d.apply(s, &yaml(IMAGE));
    let before = replica_ids(s, 1);
    let load = LoadLoop::start(&format!("http://127.0.0.1:{port}/"));

    d.apply_nowait(s, &yaml(IMAGE_V2));
    // Watch the engine while it rolls: the successor runs next to the replica, and the
    // replica never stops serving before the successor does.
    let (replica, next) = (s.replica("web", 1), format!("{}-next", s.replica("web", 1)));
    let (mut successor, mut fewest) = (None, 1);
    poll_until(SAMPLE, CONVERGE, "the update to roll out", || {
        if let Some((_, id, _)) = s.containers().into_iter().find(|c| c.0 == next) {
            successor = Some(id);
        }
        fewest = fewest.min(serving(s));
        rolled_out(d, s, 1)
    });
    let samples = load.finish();
    println!(
        "{} requests during a start-first update of one replica",
        samples.len()
    );
    assert_every_request_answered(&samples);
    assert_eq!(fewest, 1, "a healthy container served throughout");
    let successor = successor.expect("a successor ran next to the replica");
    let names: Vec<(String, String)> = (s.containers().into_iter()).map(|c| (c.0, c.1)).collect();
    assert_eq!(
        names,
        vec![(replica.clone(), successor)],
        "the successor itself took the name"
    );
    assert_eq!(inspect(&replica, "{{.Config.Image}}"), IMAGE_V2);
    assert_eq!(inspect(&replica, "{{.Config.Hostname}}"), replica);
    assert_ne!(replica_ids(s, 1), before);
}

/// Containers of `s`'s service `web` serving now: running and healthy (the image has a
/// healthcheck), replicas and start-first successors alike.
fn serving(s: &StackGuard) -> usize {
    let out = docker(&[
        "ps",
        "--filter",
        &format!("label=capstan.stack={}", s.name),
        "--filter",
        "label=capstan.service=web",
        "--format",
        "{{.Status}}",
    ]);
    out.lines().filter(|l| l.contains("(healthy)")).count()
}

/// Rolls 6 replicas from IMAGE to IMAGE_V2 two at a time in `order`; the fewest serving at
/// once, sampled every 50 ms on the engine, and the most containers at once.
fn roll_six(d: &Daemon, s: &StackGuard, order: &str) -> (usize, usize) {
    let yaml = |image: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    scale: 6\n    stop_grace_period: 1s\n    deploy:\n      update_config: {{parallelism: 2, order: {order}}}\n"
        )
    };
    d.apply(s, &yaml(IMAGE));
    wait_until(CONVERGE, "six healthy replicas", || serving(s) == 6);
    d.apply_nowait(s, &yaml(IMAGE_V2));
    let (mut fewest, mut most) = (6, 6);
    poll_until(SAMPLE, CONVERGE, "six replicas to roll out", || {
        fewest = fewest.min(serving(s));
        most = most.max(s.containers().len());
        rolled_out(d, s, 6)
    });
    for n in 1..=6 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE_V2);
    }
    (fewest, most)
}

#[test]
fn parallelism_two_of_six_start_first_keeps_all_six_serving_and_stop_first_never_fewer_than_four() {
    let h = Harness::start("roll-six");
    let (d, s) = (&h.d, &h.s);
    let (fewest, most) = roll_six(d, s, "start-first");
    println!("start-first: at least {fewest} serving, at most {most} containers");
    assert_eq!(
        fewest, 6,
        "start-first: a replica goes only once its successor serves"
    );
    assert!(most <= 8, "two successors at a time, never more: {most}");

    let h = Harness::start("roll-six-stop");
    let (d, s) = (&h.d, &h.s);
    let (fewest, most) = roll_six(d, s, "stop-first");
    println!("stop-first: at least {fewest} serving, at most {most} containers");
    assert!(
        fewest >= 4,
        "stop-first: two at a time out of service: {fewest}"
    );
    assert_eq!(most, 6, "stop-first never runs more than the replicas");
}

/// `web` with `replicas` replicas of `image` and no update settings.
fn plain(image: &str, replicas: u32) -> String {
    format!("services:\n  web:\n    image: {image}\n    deploy:\n      replicas: {replicas}\n")
}

#[test]
fn applying_the_same_file_twice_changes_nothing_across_a_resync() {
    let h = Harness::start("idem");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &plain(IMAGE, 2));
    let before = s.containers();
    let keys_rev = d.service(&s.name, "web")["resourceVersion"].clone();

    let out = d.apply(s, &plain(IMAGE, 2));
    assert!(out.contains("unchanged"), "{out}");
    let svc = d.service(&s.name, "web");
    assert_eq!(
        (svc["generation"].as_i64(), &svc["resourceVersion"]),
        (Some(1), &keys_rev),
        "no write to the spec"
    );
    d.wait_for_resync();
    assert_eq!(s.containers(), before, "no restart");
}

#[test]
fn a_changed_image_rolls_every_replica_to_the_new_spec() {
    let h = Harness::start("roll");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &plain(IMAGE, 2));
    let before = s.containers();

    let out = d.apply(s, &plain(IMAGE_V2, 2));
    assert!(out.contains("configured"), "{out}");
    let after = s.containers();
    assert_eq!(after.len(), 2);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.0, b.0, "replicas keep their names");
        assert_ne!(a.1, b.1, "and are new containers");
        assert_eq!(inspect(&a.0, "{{.Config.Image}}"), IMAGE_V2);
    }
    assert_eq!(d.service(&s.name, "web")["generation"].as_i64(), Some(2));
}
