//! The daemon while etcd is away. Killed: nothing on the host changes while the desired
//! state cannot be read (a removed replica is not replaced), the daemon stays up, and the
//! host converges once etcd is back. Frozen (`SIGSTOP`: it accepts connections and answers
//! nothing): reads come from the daemon's copy, marked stale, `/v1/leader` does not claim a
//! lead it cannot show, and writes are refused with a 503; every request completes instead
//! of waiting out the etcd client's timeout.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
}

/// Sends `SIGCONT` to etcd when dropped, also when the test fails while it is frozen.
struct Thaw<'a>(&'a Etcd);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

/// A client of the API that gives up after 3 s: an answer must come, not a hang.
fn client(d: &Daemon) -> reqwest::blocking::Client {
    (reqwest::blocking::Client::builder().unix_socket(d.socket()))
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

/// Status, whether `Capstan-Stale: true` was set, and the JSON body.
/// Prints how long the answer took (a measure, never asserted).
fn get(c: &reqwest::blocking::Client, path: &str) -> (u16, bool, serde_json::Value) {
    let sent = std::time::Instant::now();
    let resp = (c.get(format!("{API}{path}")).send())
        .unwrap_or_else(|e| panic!("GET {path} did not answer: {e}"));
    eprintln!(
        "GET {path}: {} in {} ms",
        resp.status().as_u16(),
        sent.elapsed().as_millis()
    );
    let stale = resp
        .headers()
        .get("capstan-stale")
        .is_some_and(|v| v == "true");
    let status = resp.status().as_u16();
    (
        status,
        stale,
        resp.json().unwrap_or(serde_json::Value::Null),
    )
}

/// The reads of a frozen etcd's daemon: the stack from the copy, marked, and a leader view
/// that claims the lead only with a record naming this daemon.
fn assert_truthful_reads(c: &reqwest::blocking::Client, stack: &str) {
    let (status, stale, list) = get(c, "/v1/stacks");
    assert_eq!((status, stale), (200, true), "{list}");
    let view = (list.as_array().unwrap().iter())
        .find(|v| v["name"] == stack)
        .unwrap_or_else(|| panic!("{stack} not in the copy: {list}"));
    assert_eq!(view["stale"], true, "{view}");
    assert_eq!(view["services"][0]["stale"], true, "{view}");
    let (status, stale, one) = get(c, &format!("/v1/stacks/{stack}/services/web"));
    assert_eq!((status, stale), (200, true), "{one}");
    assert_eq!(one["image"], IMAGE);
    let (status, _, leader) = get(c, "/v1/leader");
    assert_eq!(status, 200, "{leader}");
    assert_eq!(leader["stale"], true, "{leader}");
    let holds = leader["leader"]["holder"] == leader["this"];
    assert!(
        leader["role"] != "leader" || holds,
        "claims the lead without a record naming it: {leader}"
    );
}

#[test]
fn with_etcd_frozen_reads_answer_from_the_copy_marked_stale_and_writes_are_refused() {
    let h = Harness::start("frozen");
    let yaml = format!("services:\n  web:\n    image: {IMAGE}\n    deploy: {{replicas: 0}}\n");
    h.d.apply_nowait(&h.s, &yaml);
    let c = client(&h.d);
    wait_until(Duration::from_secs(30), "the stack in the copy", || {
        get(&c, &format!("/v1/stacks/{}", h.s.name)).0 == 200 && h.d.leads()
    });

    h.etcd.signal("STOP");
    let thaw = Thaw(&h.etcd);
    // Before the health probe notices: each read gives etcd its short chance, then the copy.
    assert_truthful_reads(&c, &h.s.name);
    let ready = format!("{}/readyz", h.d.url());
    wait_until(
        Duration::from_secs(30),
        "the daemon to see etcd silent",
        || reqwest::blocking::get(&ready).is_ok_and(|r| r.status().as_u16() == 503),
    );
    assert_truthful_reads(&c, &h.s.name);
    let put = (c
        .put(format!("{API}/v1/stacks/{}", h.s.name))
        .body(yaml.clone()))
    .send()
    .expect("a PUT answers while etcd is frozen");
    assert_eq!(put.status().as_u16(), 503);
    let body: serde_json::Value = put.json().unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("etcd does not answer"), "{body}");

    drop(thaw);
    wait_until(Duration::from_secs(30), "fresh answers again", || {
        let (status, stale, _) = get(&c, "/v1/stacks");
        status == 200 && !stale
    });
    let (_, stale, leader) = get(&c, "/v1/leader");
    assert!(!stale && leader.get("stale").is_none(), "{leader}");
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
