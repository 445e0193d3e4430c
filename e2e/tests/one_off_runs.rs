//! One-off commands, `capstan run STACK/SERVICE -- CMD`: a one-off container made from
//! a service's spec on the stack's network, its output and exit code passed through, and
//! nothing left behind, also when the client is interrupted. Every byte the container
//! wrote arrives, in order: a last line without its line break, output written just before
//! the exit, and stdout and stderr apart.

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

/// One replica: the one-off tests need the service, not its replicas.
fn one() -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    stop_grace_period: 1s\n")
}

/// `capstan run` of `command` in `S/web`: its exit code, stdout and stderr, as bytes.
fn run(d: &Daemon, s: &StackGuard, command: &[&str]) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let target = format!("{}/web", s.name);
    let mut args = vec!["run", &target, "--"];
    args.extend_from_slice(command);
    let out = d.cli(&args);
    (out.status.code(), out.stdout, out.stderr)
}

#[test]
fn fifty_one_offs_each_deliver_their_output_without_a_line_break_exactly() {
    let h = Harness::start("run-exact");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &one());
    // Five clients at once, ten runs each.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..5)
            .map(|w| {
                scope.spawn(move || {
                    let mut failures = vec![];
                    for i in (w * 10)..(w * 10 + 10) {
                        let want = format!("value-{i}");
                        let (code, stdout, stderr) = run(d, s, &["printf", &want]);
                        if code != Some(0) || stdout != want.as_bytes() {
                            failures.push(format!(
                                "run {i}: exit {code:?}, stdout {:?}, stderr {:?}",
                                String::from_utf8_lossy(&stdout),
                                String::from_utf8_lossy(&stderr)
                            ));
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 50 runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(oneoffs(s).is_empty(), "removed: {:?}", oneoffs(s));
}

#[test]
fn a_mebibyte_written_just_before_the_exit_arrives_whole() {
    let h = Harness::start("run-large");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &one());
    let script = "yes 0123456789abcdef | head -c 1048576; exit 7";
    let (code, stdout, stderr) = run(d, s, &["sh", "-c", script]);
    assert_eq!(code, Some(7), "{}", String::from_utf8_lossy(&stderr));
    assert_eq!(stdout.len(), 1 << 20, "every byte");
    let want: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    assert!(stdout == want, "in order");
    assert!(oneoffs(s).is_empty(), "removed: {:?}", oneoffs(s));
}

#[test]
fn stdout_and_stderr_arrive_apart_whole_and_unescaped() {
    let h = Harness::start("run-streams");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &one());
    let script = r#"printf out1; printf err1 >&2; printf '\nout2'; printf 'err2\n' >&2; printf '\033[31mred'; printf tail >&2"#;
    let (code, stdout, stderr) = run(d, s, &["sh", "-c", script]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&stderr));
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "out1\nout2\x1b[31mred",
        "the container's own bytes"
    );
    assert_eq!(String::from_utf8_lossy(&stderr), "err1err2\ntail");
}
