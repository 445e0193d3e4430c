//! What a stack may do, and hostile input: root on the socket, who can already do anything
//! through the engine, may apply stacks that would own the host (profile `privileged`);
//! under `baseline` they are refused, naming the rule, the profile and the caller; a host IP
//! that is not an IP is a field error; hostile nesting is refused at once while `/healthz`
//! keeps answering; a foreign `Host:` header is refused.
//!
//! Refusals write nothing, and what `privileged` accepts is checked with a dry run (a
//! privileged container with the host's `/` must not run on a shared engine). One test
//! starts a replica with an allowed bind, to show the rule is checked again when the
//! replica is made anew.

use capstan_e2e::*;
use std::io::{Read, Write};
use std::time::Instant;

/// (what, Compose file, the field the refusal names, the policy rule).
const HOST_OWNING: &[(&str, &str, &str, &str)] = &[
    (
        "a bind mount of /",
        "services: {web: {image: {IMAGE}, volumes: ['/:/host']}}",
        "services.web.volumes[0]",
        "bind_mounts",
    ),
    (
        "privileged",
        "services: {web: {image: {IMAGE}, privileged: true}}",
        "services.web.privileged",
        "privileged",
    ),
    (
        "the Docker socket",
        "services: {web: {image: {IMAGE}, volumes: ['/var/run/docker.sock:/var/run/docker.sock']}}",
        "services.web.volumes[0]",
        "bind_mounts",
    ),
    (
        "host networking",
        "services: {web: {image: {IMAGE}, network_mode: host}}",
        "services.web.network_mode",
        "host_network",
    ),
    (
        "the external host network",
        "services: {web: {image: {IMAGE}, networks: [h]}}\nnetworks: {h: {external: true, name: host}}",
        "networks.h",
        "host_network",
    ),
];

/// Root on the socket held to `baseline`, as an operator may choose.
const SOCKET_BASELINE: &str = "socket: baseline\n";

fn apply(d: &Daemon, s: &StackGuard, yaml: &str, dry_run: bool) -> std::process::Output {
    let file = s.file(&yaml.replace("{IMAGE}", IMAGE));
    let mut args = vec!["apply", "-f", &file, "--stack", &s.name];
    if dry_run {
        args.push("--dry-run");
    }
    d.cli(&args)
}

#[test]
fn root_on_the_socket_may_own_the_host_and_baseline_refuses_it_naming_rule_profile_and_caller() {
    let h = Harness::start("hard-policy");
    for (what, yaml, _, _) in HOST_OWNING {
        let out = apply(&h.d, &h.s, yaml, true);
        assert!(
            out.status.success(),
            "{what} refused to root on the socket:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let policy = std::env::temp_dir().join(format!("hard-policy-{}.yaml", std::process::id()));
    std::fs::write(&policy, SOCKET_BASELINE).unwrap();
    let held = Daemon::start_with(&h.etcd, &["--policy", policy.to_str().unwrap()]);
    std::fs::remove_file(&policy).unwrap();
    for (what, yaml, field, rule) in HOST_OWNING {
        let revision = h.etcd.revision();
        let out = apply(&held, &h.s, yaml, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} was accepted");
        let line = format!(
            "  {field}: policy rule {rule} (profile baseline, caller socket uid 0 gid 0): "
        );
        assert!(err.contains(&line), "{what}: no {line:?} in:\n{err}");
        assert!(
            err.contains("`socket:`"),
            "{what}: how to change it:\n{err}"
        );
        assert_eq!(h.etcd.revision(), revision, "{what}: etcd changed");
    }
}

fn put(d: &Daemon, stack: &str, body: String) -> (u16, serde_json::Value) {
    let resp = d
        .api()
        .put(format!("{API}/v1/stacks/{stack}"))
        .body(body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn a_host_ip_that_is_not_an_ip_is_a_field_error() {
    let h = Harness::start("hard-hostip");
    let body = format!(
        "services: {{web: {{image: {IMAGE}, ports: ['${{BIND_IP:-127.0.0.1}}:{}:80']}}}}",
        free_port()
    );
    let (status, err) = put(&h.d, &h.s.name, body);
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["details"][0]["field"], "services.web.ports[0]", "{err}");
    assert!(err["details"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not an IP address"));
}

#[test]
fn hostile_nesting_is_refused_quickly_and_healthz_keeps_answering() {
    let h = Harness::start("hard-nesting");
    for body in ["[".repeat(100_000), "{\"a\":".repeat(100_000)] {
        let start = Instant::now();
        let (status, err) = put(&h.d, &h.s.name, body);
        println!(
            "{} {}: refused in {:?}",
            status,
            err["details"][0]["reason"],
            start.elapsed()
        );
        assert_eq!(status, 400, "{err}");
        let reason = err["details"][0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("levels deep"), "{err}");
        let healthz = reqwest::blocking::get(format!("{}/healthz", h.d.url())).unwrap();
        assert!(healthz.status().is_success());
    }
}

/// One raw HTTP/1.1 request to `addr` with `host` as its Host header; the status code.
fn status_with_host(addr: &str, host: &str) -> (u16, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /v1/stacks HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    (status, answer)
}

/// DNS rebinding: a page in a browser on the host reaches a TCP listener under a foreign
/// name. The check comes before authentication (the listener's own names then get 401 for
/// want of a token); the Unix socket, which no browser reaches, takes any name.
#[test]
fn a_foreign_host_header_is_refused_and_the_listeners_own_names_are_served() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let h = Harness::start_with("hard-host", &["--listen", &addr]);
    let (status, answer) = status_with_host(&addr, "rebind.attacker.example:7878");
    assert_eq!(status, 421, "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, answer) = status_with_host(&addr, &host);
        assert_eq!(
            status, 401,
            "{host}: past the Host check, a token is asked: {answer}"
        );
    }
    let over_socket = h.d.api().get(format!("{API}/v1/stacks")).send().unwrap();
    assert_eq!(over_socket.status().as_u16(), 200);
}

/// A folder of the test's own, removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bind checked at apply may become a symlink later (`data -> /`): the controller checks
/// the rule again as it makes a container, so the replacement is refused, not bound to `/`.
#[test]
fn a_bind_path_made_a_symlink_to_root_after_apply_is_refused_when_the_replica_is_made_again() {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "capstan-e2e-binds-{}-{}",
        std::process::id(),
        free_port()
    )));
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let policy = dir.0.join("policy.yaml");
    let rules = format!("{SOCKET_BASELINE}bind_mounts: [{}]\n", dir.0.display());
    std::fs::write(&policy, rules).unwrap();
    let h = Harness::start_with("hard-symlink", &["--policy", policy.to_str().unwrap()]);
    let (d, s) = (&h.d, &h.s);
    let yaml = format!(
        "services:\n  web:\n    image: {IMAGE}\n    volumes: [\"{}:/data\"]\n",
        data.display()
    );
    d.apply(s, &yaml);

    std::fs::remove_dir(&data).unwrap();
    std::os::unix::fs::symlink("/", &data).unwrap();
    docker(&["rm", "-f", &s.replica("web", 1)]);
    d.wait_for_reason(&s.name, "web", "BindRefused", "now resolves to /,");
    assert!(s.containers().is_empty(), "no replica bound to /");
}
