//! Deleting a stack: its containers and networks go, its named volumes only with
//! `--volumes`, every etcd key with them; a deletion held by a container capstan does not
//! own says why (in the client and in the API) and finishes once that container leaves.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
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
