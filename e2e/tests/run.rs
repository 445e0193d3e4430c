//! Issue 11, end to end: `capstan run STACK/SERVICE -- CMD`, a one-off container made from
//! a service's spec on the stack's network, its output and exit code passed through, and
//! nothing left behind, also when the client is interrupted.

use capstan_e2e::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn web() -> String {
    format!(
        "services:\n  web:\n    image: {IMAGE}\n    scale: 2\n    stop_grace_period: 1s\n    environment:\n      GREETING: hello\n"
    )
}

/// The one-off containers of stack `s`, by name.
fn oneoffs(s: &StackGuard) -> Vec<String> {
    let label = format!("label=capstan.oneoff.stack={}", s.name);
    let out = docker(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
    out.lines().map(str::to_string).collect()
}

#[test]
fn run_passes_output_and_exit_code_through_on_the_stacks_network_and_leaves_nothing_behind() {
    let h = Harness::start("run");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web());
    let replicas = s.containers();
    let target = format!("{}/web", s.name);
    let script = "echo $GREETING $EXTRA; wget -qO- http://web/ >/dev/null && echo reached web; echo oops >&2; exit 3";

    let out = d.cli(&[
        "run",
        &target,
        "-e",
        "EXTRA=there",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains("hello there"),
        "the service's environment and -e: {stdout}"
    );
    assert!(
        stdout.contains("reached web"),
        "on the stack's network: {stdout}"
    );
    assert!(stderr.contains("oops"), "stderr stays stderr: {stderr}");
    assert!(oneoffs(s).is_empty(), "removed: {:?}", oneoffs(s));
    assert_eq!(s.containers(), replicas, "the replicas were not touched");

    let out = d.cli(&["run", &format!("{}/nope", s.name), "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("service nope not found"), "{err}");
}

#[test]
fn an_interrupted_run_stops_and_removes_its_container() {
    let h = Harness::start("run-interrupted");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web());
    let mut client = Command::new(capstan_bin())
        .args(["run", &format!("{}/web", s.name), "--", "sleep", "300"])
        .env("CAPSTAN_SERVER", d.server())
        .stdout(Stdio::null())
        .spawn()
        .expect("run capstan");
    wait_until(Duration::from_secs(30), "the one-off to run", || {
        oneoffs(s).len() == 1
    });
    client.kill().unwrap();
    let _ = client.wait();
    wait_until(Duration::from_secs(30), "the one-off to be removed", || {
        oneoffs(s).is_empty()
    });
    assert_eq!(s.running().len(), 2, "the replicas still run");
}
