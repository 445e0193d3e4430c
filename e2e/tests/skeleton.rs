//! Issue 2, end to end: the real binary, the real Docker engine, a real etcd.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
}

#[test]
fn three_replicas_run_and_the_service_name_resolves_to_all_three() {
    let h = Harness::start("dns");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(3));

    assert_eq!(
        s.running(),
        vec![
            s.replica("web", 1),
            s.replica("web", 2),
            s.replica("web", 3)
        ]
    );
    for n in 1..=3 {
        let name = s.replica("web", n);
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"capstan.stack\"}}"),
            s.name
        );
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"capstan.service\"}}"),
            "web"
        );
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"capstan.replica\"}}"),
            n.to_string()
        );
        assert_eq!(
            inspect(&name, "{{.HostConfig.RestartPolicy.Name}}"),
            "no",
            "capstan, not the engine, owns restarts"
        );
    }
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        &format!("{}_default", s.name),
        IMAGE,
        "nslookup",
        "web",
    ]);
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Address") && !l.contains(":53"))
        .collect();
    assert_eq!(
        answers.len(),
        3,
        "nslookup web should answer 3 addresses:\n{out}"
    );

    let svc = d.service(&s.name, "web");
    for field in [
        "stack",
        "name",
        "replicas",
        "running",
        "ready",
        "observedGeneration",
        "generation",
    ] {
        assert!(
            !svc[field].is_null(),
            "get services -o json lacks {field}: {svc}"
        );
    }
    assert_eq!(
        (
            svc["replicas"].as_u64(),
            svc["ready"].as_u64(),
            svc["generation"].as_i64()
        ),
        (Some(3), Some(3), Some(1))
    );
}

#[test]
fn scaling_to_five_then_one_keeps_the_lowest_ordinal_and_zero_works_too() {
    let h = Harness::start("scale");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(3));
    let first = s.containers()[0].clone();

    d.cli_ok(&["scale", &format!("{}/web=5", s.name)]);
    wait_until(CONVERGE, "5 ready replicas", || {
        d.converged(&s.name, "web", 5)
    });
    assert_eq!(s.running().len(), 5);

    d.cli_ok(&["scale", &format!("{}/web=1", s.name)]);
    wait_until(CONVERGE, "1 ready replica", || {
        d.converged(&s.name, "web", 1) && s.containers().len() == 1
    });
    assert_eq!(
        s.containers()[0],
        first,
        "scale-down removes the highest ordinals and keeps replica 1 as it was"
    );

    d.cli_ok(&["scale", &format!("{}/web=0", s.name)]);
    wait_until(CONVERGE, "no replica", || {
        d.converged(&s.name, "web", 0) && s.containers().is_empty()
    });
    d.cli_ok(&["scale", &format!("{}/web=2", s.name)]);
    wait_until(CONVERGE, "2 replicas again", || {
        d.converged(&s.name, "web", 2)
    });
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

#[test]
fn a_foreign_container_named_like_a_replica_is_left_untouched_across_a_resync() {
    let h = Harness::start("foreign");
    let (d, s) = (&h.d, &h.s);
    let foreign = s.replica("web", 2);
    docker(&["run", "-d", "--name", &foreign, IMAGE]);
    let foreign_id = inspect(&foreign, "{{.Id}}");

    d.apply_nowait(s, &web(3));
    wait_until(CONVERGE, "replicas 1 and 3 to run", || {
        s.running() == vec![s.replica("web", 1), s.replica("web", 3)]
    });
    wait_until(CONVERGE, "a NameConflict condition", || {
        let svc = d.service(&s.name, "web");
        svc["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Degraded" && c["reason"] == "NameConflict")
        })
    });
    d.wait_for_resync();
    assert_eq!(
        inspect(&foreign, "{{.Id}}"),
        foreign_id,
        "the foreign container was not replaced"
    );
    assert_eq!(
        inspect(&foreign, "{{.State.Running}}"),
        "true",
        "the foreign container was not stopped"
    );
    assert_eq!(
        inspect(&foreign, "{{index .Config.Labels \"capstan.stack\"}}"),
        "",
        "and it is still not capstan's"
    );
}

/// Ownership compares the stack label, not only the name: a network that capstan made for
/// another stack is never joined, even when its name is the one this stack would make.
#[test]
fn a_network_another_stack_made_under_this_stacks_name_is_never_joined() {
    let other = StackGuard::new("owner"); // removes the network it labels, last
    let h = Harness::start("joiner");
    let (d, s) = (&h.d, &h.s);
    let net = format!("{}_default", s.name);
    let owner = format!("capstan.stack={}", other.name);
    docker(&["network", "create", "--label", &owner, &net]);

    d.apply_nowait(s, &web(1));
    d.wait_for_reason(&s.name, "web", "NotOwned", &other.name);
    assert!(s.containers().is_empty(), "no replica was made on it");
    assert_eq!(
        inspect(&net, "{{index .Labels \"capstan.stack\"}}"),
        other.name
    );

    docker(&["network", "rm", &net]);
    wait_until(CONVERGE, "web to converge on a network of its own", || {
        d.converged(&s.name, "web", 1)
    });
    assert_eq!(inspect(&net, "{{index .Labels \"capstan.stack\"}}"), s.name);
}

#[test]
fn a_restarted_daemon_adopts_running_replicas_without_restarting_them_across_a_resync() {
    let mut h = Harness::start("adopt");
    let s = &h.s;
    h.d.apply(s, &web(3));
    let started = |name: &str| inspect(name, "{{.State.StartedAt}}");
    let before: Vec<(String, String, String)> = s.containers();
    let started_before: Vec<String> = before.iter().map(|c| started(&c.0)).collect();

    h.d.restart();
    let (d, s) = (&h.d, &h.s);
    wait_until(
        CONVERGE,
        "the new daemon to report the service converged",
        || d.converged(&s.name, "web", 3),
    );
    d.wait_for_resync();
    assert_eq!(s.containers(), before, "same container IDs, no duplicates");
    let started_after: Vec<String> = before.iter().map(|c| started(&c.0)).collect();
    assert_eq!(started_after, started_before, "no replica was restarted");
}

#[test]
fn an_invalid_file_is_refused_naming_the_field_and_nothing_reaches_etcd() {
    let h = Harness::start("invalid");
    let (d, s, etcd) = (&h.d, &h.s, &h.etcd);
    let body = format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: three\n    ipc: host\n");
    let resp = d
        .api()
        .put(format!("{API}/v1/stacks/{}", s.name))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: serde_json::Value = resp.json().unwrap();
    let fields: Vec<&str> = err["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["services.web.ipc", "services.web.deploy.replicas"],
        "{err}"
    );
    assert!(err["details"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("\"three\""));

    let out = d.cli(&["apply", "-f", &s.file(&body), "--stack", &s.name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("services.web.deploy.replicas"));
    assert!(
        etcd.keys(&d.prefix).is_empty(),
        "etcd is untouched: {:?}",
        etcd.keys(&d.prefix)
    );
    assert!(s.containers().is_empty());
}

#[test]
fn an_etcd_outage_changes_nothing_while_it_lasts_and_the_host_converges_after() {
    let mut h = Harness::start("outage");
    let s = &h.s;
    h.d.apply(s, &web(2));
    let before = s.containers();

    h.etcd.stop();
    let (d, s) = (&h.d, &h.s);
    let ready = format!("{}/readyz", d.url());
    wait_until(
        Duration::from_secs(15),
        "readyz to report the lost etcd",
        || {
            reqwest::blocking::get(&ready)
                .map(|r| r.status().as_u16() == 503)
                .unwrap_or(false)
        },
    );
    docker(&["rm", "-f", &s.replica("web", 2)]);
    // Frozen, every look at the service ends in a requeue: wait for two that come after the
    // removal (a key is reconciled by one worker at a time, so the second began after it).
    let frozen = || {
        metric_sum(
            &d.metrics(),
            "capstan_reconciles_total",
            &["kind=\"service\"", "result=\"requeue\""],
        )
    };
    let frozen_before = frozen();
    wait_until(
        CONVERGE,
        "the frozen loop to look at the service twice since the removal",
        || frozen() >= frozen_before + 2.0,
    );
    let now = s.containers();
    assert!(
        now.contains(&before[0]),
        "replica 1 must survive the etcd outage: {now:?}"
    );
    assert!(
        !now.iter().any(|c| c.0 == s.replica("web", 2)),
        "nothing is replaced while the desired state cannot be read: {now:?}"
    );
    assert!(
        reqwest::blocking::get(format!("{}/healthz", d.url()))
            .unwrap()
            .status()
            .is_success(),
        "the daemon stays up"
    );

    h.etcd.restart();
    let (d, s) = (&h.d, &h.s);
    wait_until(
        CONVERGE,
        "the removed replica to be replaced once etcd is back",
        || s.running().len() == 2 && d.converged(&s.name, "web", 2),
    );
    assert_eq!(s.containers()[0], before[0]);
}

#[test]
fn delete_removes_containers_and_networks_and_volumes_only_when_asked() {
    let h = Harness::start("delete");
    let (d, s, etcd) = (&h.d, &h.s, &h.etcd);
    let yaml = format!(
        "services:\n  web:\n    image: {IMAGE}\n    scale: 2\n    networks: [front]\n    volumes: [\"data:/data\"]\n  db:\n    image: {IMAGE}\n    networks: [front, back]\nnetworks:\n  front: {{}}\n  back: {{}}\nvolumes:\n  data: {{labels: {{capstan.shared: \"true\"}}}}\n"
    );
    d.apply(s, &yaml);
    assert_eq!(s.containers().len(), 3);
    assert_eq!(
        s.networks(),
        vec![format!("{}_back", s.name), format!("{}_front", s.name)]
    );
    assert_eq!(s.volumes(), vec![format!("{}_data", s.name)]);

    d.cli_ok(&["delete", &s.name]);
    assert!(s.containers().is_empty() && s.networks().is_empty());
    assert_eq!(
        s.volumes(),
        vec![format!("{}_data", s.name)],
        "named volumes stay without --volumes"
    );
    assert!(
        etcd.keys(&d.prefix).is_empty(),
        "every key of the stack is gone"
    );

    d.apply(s, &yaml);
    d.cli_ok(&["delete", &s.name, "--volumes"]);
    assert!(s.containers().is_empty() && s.networks().is_empty() && s.volumes().is_empty());
}

#[test]
fn a_deletion_held_by_a_foreign_container_says_why_and_finishes_once_it_leaves() {
    let h = Harness::start("delheld");
    let (d, s, etcd) = (&h.d, &h.s, &h.etcd);
    d.apply(s, &web(1));
    let network = format!("{}_default", s.name);
    // Somebody attached a debugging container of their own to the stack's network.
    let debug = format!("{}-debug", s.name);
    docker(&["run", "-d", "--name", &debug, "--network", &network, IMAGE]);

    let out = d.cli(&["delete", &s.name, "--timeout", "6s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("removing network {network}"))
            && stderr.contains("active endpoints"),
        "the wait names the network and the reason: {stderr}"
    );
    assert!(s.containers().is_empty(), "the replicas are gone");
    assert_eq!(
        inspect(&debug, "{{.State.Running}}"),
        "true",
        "the foreign container is never touched"
    );
    let view: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["get", "stacks", "-o", "json"])).unwrap();
    assert!(
        view.to_string().contains("active endpoints"),
        "the API says why too: {view}"
    );

    docker(&["rm", "-f", &debug]);
    wait_until(CONVERGE, "the deletion to finish", || {
        s.networks().is_empty() && etcd.keys(&d.prefix).is_empty()
    });
}

#[test]
fn applying_the_same_file_twice_changes_nothing_across_a_resync() {
    let h = Harness::start("idem");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(2));
    let before = s.containers();
    let keys_rev = d.service(&s.name, "web")["resourceVersion"].clone();

    let out = d.apply(s, &web(2));
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
    d.apply(s, &web(2));
    let before = s.containers();

    let out = d.apply(s, &web(2).replace(IMAGE, IMAGE_V2));
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
