//! Sidecars on the real engine: `network_mode: service:web` puts replica n of `probe` in the
//! network namespace of replica n of `web`, so it reaches its own partner on localhost,
//! across a scale 1 → 3 → 2 of the partner, a `docker kill` of one partner replica, and an
//! update that replaces every partner replica.

use capstan_e2e::*;
use std::process::Command;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(90);

/// `web` serves its hostname on :80; `probe` idles beside each replica, and the image's
/// healthcheck (a fetch of 127.0.0.1:80) makes it ready only while its partner serves.
fn stack(web_replicas: u32) -> String {
    stack_of(IMAGE, web_replicas)
}

fn stack_of(web_image: &str, web_replicas: u32) -> String {
    format!(
        "services:\n  web:\n    image: {web_image}\n    scale: {web_replicas}\n  probe:\n    image: {IMAGE}\n    network_mode: service:web\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM INT; while true; do sleep 1; done\"]\n"
    )
}

/// What `probe-n` gets from localhost:80: its partner's hostname, or why nothing.
fn localhost_of(s: &StackGuard, n: u32) -> String {
    let out = Command::new("docker")
        .args(["exec", &s.replica("probe", n)])
        .args(["sh", "-c", "wget -q -O - http://127.0.0.1/"])
        .output()
        .expect("docker exec");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match out.status.success() {
        true => said,
        false => format!("(failed: {})", String::from_utf8_lossy(&out.stderr).trim()),
    }
}

fn paired(s: &StackGuard, replicas: u32) -> bool {
    (1..=replicas).all(|n| localhost_of(s, n) == s.replica("web", n))
}

fn wait_converged(d: &Daemon, s: &StackGuard, replicas: u64) {
    for service in ["web", "probe"] {
        wait_until(CONVERGE, &format!("{service} at {replicas}"), || {
            d.converged(&s.name, service, replicas)
        });
    }
    wait_until(CONVERGE, "each probe to reach its own partner", || {
        paired(s, replicas as u32)
    });
}

fn started_at(s: &StackGuard, service: &str, n: u32) -> String {
    inspect(&s.replica(service, n), "{{.State.StartedAt}}")
}

#[test]
fn a_sidecar_shares_localhost_with_its_own_partner_replica_across_scaling_and_a_partner_kill() {
    let h = Harness::start("sidecar");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &stack(1));
    wait_converged(d, s, 1);

    d.cli_ok(&["scale", &format!("{}/web=3", s.name)]);
    wait_converged(d, s, 3);
    d.cli_ok(&["scale", &format!("{}/web=2", s.name)]);
    wait_converged(d, s, 2);
    wait_until(CONVERGE, "probe-3 to go with web-3", || {
        !s.running().contains(&s.replica("probe", 3))
    });
    let mode = inspect(&s.replica("probe", 2), "{{.HostConfig.NetworkMode}}");
    let web2 = inspect(&s.replica("web", 2), "{{.Id}}");
    assert_eq!(mode, format!("container:{web2}"));

    let (probe1, web2_before) = (started_at(s, "probe", 1), started_at(s, "web", 2));
    docker(&["kill", &s.replica("web", 2)]);
    wait_until(CONVERGE, "web-2 to be started again", || {
        started_at(s, "web", 2) != web2_before
    });
    wait_until(CONVERGE, "probe-2 to reach web-2 again", || paired(s, 2));
    wait_converged(d, s, 2);
    assert_eq!(started_at(s, "probe", 1), probe1, "probe-1 was left alone");
    let events = d.service(&s.name, "probe")["recentEvents"].to_string();
    assert!(events.contains("partner-restarted"), "{events}");

    d.apply(s, &stack_of(IMAGE_V2, 2));
    wait_converged(d, s, 2);
    for n in 1..=2 {
        let web = inspect(&s.replica("web", n), "{{.Id}} {{.Config.Image}}");
        let (id, image) = web.split_once(' ').unwrap();
        assert_eq!(image, IMAGE_V2);
        let mode = inspect(&s.replica("probe", n), "{{.HostConfig.NetworkMode}}");
        assert_eq!(
            mode,
            format!("container:{id}"),
            "probe-{n} beside the new web-{n}"
        );
    }
    let events = d.service(&s.name, "probe")["recentEvents"].to_string();
    assert!(events.contains("partner-replaced"), "{events}");

    let out = d.cli(&["scale", &format!("{}/probe=5", s.name)]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && said.contains("scale web"),
        "{said}"
    );
}

#[test]
fn a_one_off_of_a_sidecar_joins_the_first_partner_replica() {
    let h = Harness::start("sidecar-run");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &stack(2));
    wait_converged(d, s, 2);
    let out = d.cli(&[
        "run",
        &format!("{}/probe", s.name),
        "--",
        "sh",
        "-c",
        "wget -q -O - http://127.0.0.1/",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(said, s.replica("web", 1));
}
