//! Traffic to ready replicas only: endpoints of ready replicas, the built-in proxy, draining, Traefik,
//! port ranges. Real Docker, real etcd, real HTTP.

use capstan_e2e::*;
use std::collections::BTreeSet;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(90);

/// A service whose port the proxy serves at any replica count, so that it keeps answering
/// while the service scales down to one replica and back up.
fn proxied_web(port: u16, replicas: u32, image: &str) -> String {
    format!("services:\n  web:\n    image: {image}\n    scale: {replicas}\n    ports: [{{target: 80, published: {port}, host_ip: 127.0.0.1, x-capstan-proxy: true}}]\n    stop_grace_period: 2s\n")
}

fn bodies(url: &str, n: usize) -> Vec<String> {
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    (0..n)
        .map(|_| {
            client
                .get(url)
                .send()
                .unwrap()
                .text()
                .unwrap()
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn requests_through_the_proxy_reach_all_three_replicas() {
    let h = Harness::start("proxy");
    let (d, s) = (&h.d, &h.s);
    let port = free_port();
    d.apply(s, &proxied_web(port, 3, IMAGE));
    let seen: BTreeSet<String> = bodies(&format!("http://127.0.0.1:{port}/"), 30)
        .into_iter()
        .collect();
    let replicas: BTreeSet<String> = (1..=3).map(|n| s.replica("web", n)).collect();
    assert_eq!(seen, replicas, "every replica answers through the one port");
    for n in 1..=3 {
        assert_eq!(
            docker(&["port", &s.replica("web", n)]).trim(),
            "",
            "replicas publish nothing themselves"
        );
    }
}

#[test]
fn a_steady_request_loop_sees_no_failure_while_scaling_and_rolling_out() {
    let h = Harness::start("nofail");
    let (d, s) = (&h.d, &h.s);
    let port = free_port();
    d.apply(s, &proxied_web(port, 3, IMAGE));

    let load = LoadLoop::start(&format!("http://127.0.0.1:{port}/"));
    d.cli_ok(&["scale", &format!("{}/web=1", s.name)]);
    wait_until(CONVERGE, "1 replica", || {
        d.converged(&s.name, "web", 1) && s.containers().len() == 1
    });
    d.cli_ok(&["scale", &format!("{}/web=4", s.name)]);
    wait_until(CONVERGE, "4 replicas", || d.converged(&s.name, "web", 4));
    d.apply(s, &proxied_web(port, 4, IMAGE_V2));
    // The loop goes on until every replica of the new spec has answered it.
    let rolled_out = now_ns();
    let replicas: BTreeSet<String> = (1..=4).map(|n| s.replica("web", n)).collect();
    wait_until(CONVERGE, "an answer from each rolled-out replica", || {
        let answered: BTreeSet<String> = load
            .samples_since(rolled_out)
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| r.body)
            .collect();
        answered.is_superset(&replicas)
    });
    let samples = load.finish();

    assert_every_request_answered(&samples);
    for n in 1..=4 {
        assert_eq!(inspect(&s.replica("web", n), "{{.Config.Image}}"), IMAGE_V2);
    }
}

#[test]
fn an_unhealthy_replica_stops_receiving_requests_before_it_is_restarted() {
    let h = Harness::start("drain");
    let (d, s) = (&h.d, &h.s);
    let port = free_port();
    d.apply(s, &proxied_web(port, 3, IMAGE));
    let sick = s.replica("web", 2);
    let events = Events::follow(&sick);

    let load = LoadLoop::start(&format!("http://127.0.0.1:{port}/"));
    // Without its page, replica 2 answers 404 until its healthcheck reports it unhealthy.
    docker(&["exec", &sick, "rm", "/www/index.html"]);
    let unhealthy_at = events.next("health_status: unhealthy", CONVERGE);
    let kill_at = events.next("kill", CONVERGE);
    wait_until(CONVERGE, "the service to be ready again", || {
        d.converged(&s.name, "web", 3)
    });
    let samples = load.finish();

    assert!(unhealthy_at < kill_at);
    let to_sick: Vec<&Sample> = samples.iter().filter(|r| r.status == 404).collect();
    assert!(
        !to_sick.is_empty(),
        "the loop saw replica 2 broken before it was detected"
    );
    let late: Vec<&Sample> = to_sick
        .iter()
        .copied()
        .filter(|r| r.at_ns > unhealthy_at + 150_000_000)
        .collect();
    assert!(
        late.is_empty(),
        "replica 2 still got requests {:?} ms after it was reported unhealthy",
        late.iter()
            .map(|r| (r.at_ns - unhealthy_at) / 1_000_000)
            .collect::<Vec<_>>()
    );
    assert!(
        samples.iter().all(|r| r.status == 200 || r.status == 404),
        "no connection failed"
    );
}

#[test]
fn the_endpoints_in_etcd_and_the_api_agree_with_the_containers() {
    let h = Harness::start("endpoints");
    let (d, s, etcd) = (&h.d, &h.s, &h.etcd);
    d.apply(
        s,
        &format!("services:\n  web:\n    image: {IMAGE}\n    scale: 3\n    ports: [\"80\"]\n"),
    );
    let network = format!("{}_default", s.name);
    let truth: BTreeSet<(String, String)> = (1..=3)
        .map(|n| (s.replica("web", n), s.ip("web", n)))
        .collect();
    let of = |v: &serde_json::Value| -> BTreeSet<(String, String)> {
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["replica"].as_str().unwrap().to_string(),
                    e["addresses"][&network].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let url = format!("{API}/v1/stacks/{}/services/web/endpoints", s.name);
    let api: serde_json::Value = d.api().get(&url).send().unwrap().json().unwrap();
    assert_eq!(of(&api), truth);
    let key = format!("{}/v1/endpoints/{}/web", d.prefix, s.name);
    let out = etcd
        .etcdctl()
        .args(["get", &key, "--print-value-only"])
        .output()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(of(&stored), truth, "etcd key {key}");
    assert!(
        api["endpoints"][0]["ports"][0]["hostPort"]
            .as_u64()
            .is_some(),
        "the engine-chosen host port is listed: {api}"
    );

    // A watcher gets the current endpoints, then the change.
    let mut watch = d.api().get(format!("{url}?watch=true")).send().unwrap();
    d.cli_ok(&["scale", &format!("{}/web=2", s.name)]);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let start = std::time::Instant::now();
    while text.matches("event: endpoints").count() < 2 && start.elapsed() < Duration::from_secs(30)
    {
        use std::io::Read;
        let n = watch.read(&mut buf).unwrap();
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let last = text.split("event: endpoints").last().unwrap();
    let data = last.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let update: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        update["endpoints"].as_array().unwrap().len(),
        2,
        "the watcher saw the scale-down: {update}"
    );
}

#[test]
fn traefik_gets_routers_and_ready_servers_for_two_services() {
    let root = format!("traefik-e2e-{}", free_port());
    let h = Harness::start_with("traefik", &["--traefik-etcd-root", &root]);
    let (d, s, etcd) = (&h.d, &h.s, &h.etcd);
    let yaml = format!(
        "services:\n  web:\n    image: {IMAGE}\n    scale: 2\n    labels:\n      traefik.http.routers.web.rule: \"Host(`web.localhost`)\"\n  api:\n    image: {IMAGE}\n    labels:\n      traefik.http.services.api.loadbalancer.server.port: \"80\"\n"
    );
    d.apply(s, &yaml);
    let ip = |svc: &str, n: u32| s.ip(svc, n);
    let cfg: serde_json::Value = (d.api().get(format!("{API}/v1/traefik")).send())
        .unwrap()
        .json()
        .unwrap();
    let web = format!("{}-web", s.name);
    let api = format!("{}-api", s.name);
    assert_eq!(
        cfg["http"]["routers"]["web"]["rule"],
        "Host(`web.localhost`)"
    );
    assert_eq!(cfg["http"]["routers"]["web"]["service"], web.as_str());
    let urls = |svc: &str| -> BTreeSet<String> {
        cfg["http"]["services"][svc]["loadBalancer"]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["url"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        urls(&web),
        BTreeSet::from([
            format!("http://{}:80", ip("web", 1)),
            format!("http://{}:80", ip("web", 2))
        ])
    );
    assert_eq!(
        urls(&api),
        BTreeSet::from([format!("http://{}:80", ip("api", 1))])
    );

    let keys = etcd.keys(&format!("{root}/http/services/{web}/"));
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys
        .iter()
        .all(|k| k.ends_with("/url") && k.contains("/loadbalancer/servers/")));
    d.cli_ok(&["scale", &format!("{}/web=1", s.name)]);
    wait_until(CONVERGE, "the KV layout to follow the scale-down", || {
        etcd.keys(&format!("{root}/http/services/{web}/")).len() == 1
    });
}

#[test]
fn a_port_range_gives_each_replica_its_own_host_port() {
    let h = Harness::start("range");
    let (d, s) = (&h.d, &h.s);
    let base = free_port().clamp(20000, 60000);
    let yaml = format!("services:\n  web:\n    image: {IMAGE}\n    scale: 3\n    ports: [\"127.0.0.1:{base}-{}:80\"]\n", base + 2);
    d.apply(s, &yaml);
    for n in 1..=3u16 {
        let port = base + n - 1;
        assert_eq!(
            docker(&["port", &s.replica("web", n as u32), "80/tcp"]).trim(),
            format!("127.0.0.1:{port}")
        );
        assert_eq!(
            bodies(&format!("http://127.0.0.1:{port}/"), 1)[0],
            s.replica("web", n as u32)
        );
    }
}
