//! The store against a real etcd with its default limits (128 operations per transaction,
//! 1.5 MiB per request), through the daemon's HTTP API: a stack far larger than one
//! transaction, and optimistic concurrency under racing writers.

use capstan_e2e::*;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A Compose file of `n` services with no replicas (so no containers), each running `image`
/// with `env` in its environment.
fn many(n: usize, image: &str, env: &str) -> String {
    many_with(n, image, |_| env.to_string())
}

/// [`many`] with the environment value of service `i` given by `env(i)`.
fn many_with(n: usize, image: &str, env: impl Fn(usize) -> String) -> String {
    let mut out = String::from("services:\n");
    for i in 0..n {
        out.push_str(&format!(
            "  s{i:04}: {{image: \"{image}\", environment: {{V: \"{}\"}}, deploy: {{replicas: 0}}}}\n",
            env(i)
        ));
    }
    out
}

fn delete(d: &Daemon, stack: &str, rv: Option<i64>) -> (u16, serde_json::Value) {
    let mut url = format!("{API}/v1/stacks/{stack}");
    if let Some(rv) = rv {
        url.push_str(&format!("?resourceVersion={rv}"));
    }
    let resp = d
        .api()
        .delete(url)
        .send()
        .unwrap_or_else(|e| panic!("DELETE {stack}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

fn put(d: &Daemon, stack: &str, rv: Option<i64>, body: &str) -> (u16, serde_json::Value) {
    let mut url = format!("{API}/v1/stacks/{stack}");
    if let Some(rv) = rv {
        url.push_str(&format!("?resourceVersion={rv}"));
    }
    let resp = d
        .api()
        .put(url)
        .body(body.to_string())
        .send()
        .unwrap_or_else(|e| panic!("PUT {stack}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

fn get(d: &Daemon, path: &str) -> (u16, serde_json::Value) {
    let resp =
        (d.api().get(format!("{API}{path}")).send()).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

fn stack(d: &Daemon, name: &str) -> serde_json::Value {
    let (status, body) = get(d, &format!("/v1/stacks/{name}"));
    assert_eq!(status, 200, "GET stack {name}: {body}");
    body
}

/// The `V` environment value of every service of a stack view.
fn envs(view: &serde_json::Value) -> Vec<String> {
    view["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["spec"]["environment"]["V"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// etcd's current revision: each write transaction adds one.
fn revision(etcd: &Etcd) -> i64 {
    let out = etcd
        .etcdctl()
        .args(["endpoint", "status", "-w", "json"])
        .output()
        .expect("run etcdctl (make deps)");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("etcdctl endpoint status: {e}"));
    status[0]["Status"]["header"]["revision"].as_i64().unwrap()
}

/// Applies `yaml` and reports how long it took and how many etcd transactions it made.
fn timed_put(h: &Harness, yaml: &str, what: &str) -> serde_json::Value {
    let (rev0, t0) = (revision(&h.etcd), Instant::now());
    let (status, body) = put(&h.d, &h.s.name, None, yaml);
    let took = t0.elapsed();
    assert_eq!(status, 200, "{what}: {body}");
    eprintln!(
        "{what}: {:.2} s, {} etcd transactions",
        took.as_secs_f64(),
        revision(&h.etcd) - rev0
    );
    body
}

fn version_keys(h: &Harness) -> usize {
    h.etcd
        .keys(&format!("{}/v1/services/{}/", h.d.prefix, h.s.name))
        .len()
}

#[test]
fn a_stack_of_two_thousand_services_applies_updates_shrinks_and_deletes_with_etcds_default_limits()
{
    let h = Harness::start("big");
    let name = h.s.name.clone();
    let watches = h.d.etcd_calls("watch");
    timed_put(&h, &many(2000, IMAGE, "a"), "apply 2,000 services");
    let view = stack(&h.d, &name);
    assert_eq!(envs(&view).len(), 2000);
    assert!(envs(&view).iter().all(|v| v == "a"));

    let one = many_with(2000, IMAGE, |i| if i == 42 { "b" } else { "a" }.to_string());
    let res = timed_put(&h, &one, "update one service of 2,000");
    assert_eq!(res["services"]["s0042"], "configured");
    assert_eq!(res["services"]["s0041"], "unchanged");
    let view = stack(&h.d, &name);
    assert_eq!(envs(&view)[42], "b");
    assert_eq!(envs(&view).iter().filter(|v| *v == "a").count(), 1999);

    timed_put(&h, &many(2000, IMAGE, "c"), "update all 2,000 services");
    assert!(envs(&stack(&h.d, &name)).iter().all(|v| v == "c"));
    assert_eq!(version_keys(&h), 2000, "the old versions are collected");

    let res = timed_put(&h, &many(1, IMAGE, "c"), "cut 2,000 services back to 1");
    assert_eq!(res["services"].as_object().unwrap().len(), 2000);
    assert_eq!(envs(&stack(&h.d, &name)).len(), 1);
    assert_eq!(version_keys(&h), 1);

    timed_put(&h, &many(2000, IMAGE, "d"), "apply 2,000 services again");
    let (status, body) = delete(&h.d, &name, None);
    assert_eq!(status, 202, "{body}");
    wait_until(Duration::from_secs(300), "the stack to be deleted", || {
        get(&h.d, &format!("/v1/stacks/{name}")).0 == 404
    });
    assert!(h.etcd.keys(&h.d.prefix).is_empty(), "every key is gone");
    // A commit the daemon could not resolve (a version it never saw) breaks its watch,
    // and it watches again after a relist: it never had to.
    assert_eq!(
        h.d.etcd_calls("watch"),
        watches,
        "the daemon's etcd watch broke and was opened again"
    );
}

#[test]
fn of_twenty_racing_puts_naming_one_resource_version_exactly_one_wins_and_its_state_is_stored() {
    let h = Harness::start("race");
    let name = h.s.name.clone();
    let (status, first) = put(&h.d, &name, None, &many(3, IMAGE, "0"));
    assert_eq!(status, 200, "{first}");
    let rv = first["resourceVersion"].as_i64().unwrap();
    assert_eq!(stack(&h.d, &name)["resourceVersion"], rv);

    let start = Arc::new(Barrier::new(20));
    let racers: Vec<_> = (1..=20)
        .map(|i| {
            let (client, name, start) = (h.d.api(), name.clone(), start.clone());
            std::thread::spawn(move || {
                let body = many(3, IMAGE, &i.to_string());
                start.wait();
                let resp = client
                    .put(format!("{API}/v1/stacks/{name}?resourceVersion={rv}"))
                    .body(body)
                    .send()
                    .unwrap_or_else(|e| panic!("PUT: {e}"));
                let status = resp.status().as_u16();
                (i, status, resp.json::<serde_json::Value>().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter(|(_, s, _)| *s == 200).collect();
    let conflicts = results.iter().filter(|(_, s, _)| *s == 409).count();
    assert_eq!(winners.len(), 1, "exactly one 200: {results:?}");
    assert_eq!(conflicts, 19, "the rest 409: {results:?}");

    let (winner, _, body) = winners[0];
    let view = stack(&h.d, &name);
    assert_eq!(view["resourceVersion"], body["resourceVersion"]);
    assert!(body["resourceVersion"].as_i64().unwrap() > rv);
    assert!(
        envs(&view).iter().all(|v| *v == winner.to_string()),
        "{view}"
    );

    // A stale version is refused by apply, scale and delete too, and changes nothing.
    let (status, _) = put(&h.d, &name, Some(rv), &many(3, IMAGE, "late"));
    assert_eq!(status, 409);
    let client = h.d.api();
    let svc_rv = view["services"][0]["resourceVersion"].as_i64().unwrap();
    let scale = client
        .put(format!(
            "{API}/v1/stacks/{name}/services/s0000/scale?resourceVersion={}",
            svc_rv - 1
        ))
        .json(&serde_json::json!({ "replicas": 0 }))
        .send()
        .unwrap();
    assert_eq!(scale.status().as_u16(), 409);
    assert_eq!(delete(&h.d, &name, Some(rv)).0, 409);
    let after = stack(&h.d, &name);
    assert_eq!(after["resourceVersion"], view["resourceVersion"]);
    assert_eq!(after["phase"], "Active");

    // The current version is accepted, and the answer carries the next one.
    let current = view["resourceVersion"].as_i64().unwrap();
    let (status, body) = delete(&h.d, &name, Some(current));
    assert_eq!(status, 202, "{body}");
    assert!(
        body["resourceVersion"].as_i64().unwrap() > current,
        "{body}"
    );
    wait_until(Duration::from_secs(60), "the stack to be deleted", || {
        get(&h.d, &format!("/v1/stacks/{name}")).0 == 404
    });
}

/// SIGKILLs the daemon once etcd has seen `puts` writes under `prefix` since revision `from`
/// (read with `etcdctl watch`, which replays from `from`, so none is missed).
fn kill_after_puts(etcd: &Etcd, d: &Daemon, prefix: &str, from: i64, puts: usize) {
    let mut watch = etcd
        .etcdctl()
        .args(["watch", "--prefix"])
        .args(["--rev", &from.to_string(), prefix])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run etcdctl watch (make deps)");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            if line.map_or(true, |l| l == "PUT" && tx.send(()).is_err()) {
                return;
            }
        }
    });
    for seen in 0..puts {
        rx.recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the apply staged only {seen} of {puts} versions"));
    }
    let pid = d.pid().expect("the daemon runs").to_string();
    let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(killed.success());
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn a_daemon_killed_half_way_through_a_large_apply_leaves_the_old_or_the_new_stack_and_the_next_apply_cleans_up(
) {
    let mut h = Harness::start("kill");
    let name = h.s.name.clone();
    timed_put(&h, &many(2000, IMAGE, "v0"), "apply 2,000 services");
    let mut before = "v0".to_string();
    // Kill at a few points of an apply that changes every service (after its first staged
    // version, half-way, after the last): whatever the point, a reader sees all of one
    // version, and the next apply leaves no stray key.
    let prefix = format!("{}/v1/services/{name}/", h.d.prefix);
    for (round, staged) in [1usize, 1000, 2000].into_iter().enumerate() {
        let next = format!("v{}", round + 1);
        let (api, name2, body) = (h.d.api(), name.clone(), many(2000, IMAGE, &next));
        let from = revision(&h.etcd) + 1;
        let writer = std::thread::spawn(move || {
            api.put(format!("{API}/v1/stacks/{name2}"))
                .body(body)
                .send()
                .map(|r| r.status().as_u16())
        });
        kill_after_puts(&h.etcd, &h.d, &prefix, from, staged);
        let answered = writer.join().unwrap();
        h.d.restart();

        let seen = envs(&stack(&h.d, &name));
        assert_eq!(seen.len(), 2000);
        let all = |v: &str| seen.iter().all(|e| e == v);
        assert!(
            all(&before) || all(&next),
            "a mix after a kill at {staged} staged"
        );
        if answered.is_ok_and(|s| s == 200) {
            assert!(all(&next), "an apply that answered 200 is visible");
        }
        eprintln!(
            "killed after {staged} staged: {} visible, {} version keys",
            if all(&next) { "new" } else { "old" },
            version_keys(&h)
        );

        let again = format!("{next}-again");
        timed_put(&h, &many(2000, IMAGE, &again), "the next apply");
        assert!(envs(&stack(&h.d, &name)).iter().all(|e| *e == again));
        assert_eq!(version_keys(&h), 2000, "no stray version is left");
        before = again;
    }
}
