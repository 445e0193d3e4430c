//! `capstan logs` through the daemon: every replica's stdout and
//! stderr interleaved with padded `service-n |` prefixes, replicas that start later joining a
//! followed stream, `--tail` and `--since` limiting what is shown, and unknown names refused.

use capstan_e2e::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Says who it is on stdout and stderr every second; stops at once on TERM.
const CHATTY: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do echo hello from $$(hostname); echo grumble from $$(hostname) >&2; sleep 1; done"]"#;

/// Counts lines, one a second.
const COUNTER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$$((i+1)); echo line $$i; sleep 1; done"]"#;

/// A running `capstan logs -f`, its output collected line by line; killed when dropped.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(d: &Daemon, args: &[&str]) -> Follower {
        let mut child = Command::new(capstan_bin())
            .arg("logs")
            .args(args)
            .env("CAPSTAN_SERVER", d.server())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run capstan logs -f");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(vec![]));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    fn has(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }

    fn wait_for(&self, line: &str) {
        wait_for(Duration::from_secs(60), line, || {
            if self.has(line) {
                Ok(())
            } else {
                let seen = self.lines.lock().unwrap();
                Err(format!("{} lines, the last: {:?}", seen.len(), seen.last()))
            }
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_follow_shows_every_replicas_stdout_and_stderr_with_padded_prefixes_takes_in_replicas_that_join_and_stops_reading_when_the_client_goes(
) {
    let h = Harness::start("logs");
    let (d, s) = (&h.d, &h.s);
    let yaml = format!(
        r#"
services:
  talk:
    image: {IMAGE}
    command: {CHATTY}
    healthcheck: {{disable: true}}
    deploy: {{replicas: 2}}
  a:
    image: {IMAGE}
    command: {CHATTY}
    healthcheck: {{disable: true}}
"#
    );
    d.apply(s, &yaml);
    // The daemon's open files: its connections to the client and to the engine among them.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid().unwrap()))
            .unwrap()
            .count()
    };
    let before = fds();
    let follower = Follower::start(d, &[&s.name, "-f"]);
    for n in [1, 2] {
        let host = s.replica("talk", n);
        follower.wait_for(&format!("talk-{n} | hello from {host}"));
        follower.wait_for(&format!("talk-{n} | grumble from {host}"));
    }
    // `a-1` is padded to the width of `talk-1`, as `docker compose logs` does.
    follower.wait_for(&format!("a-1    | hello from {}", s.replica("a", 1)));

    d.cli_ok(&["scale", &format!("{}/talk=3", s.name)]);
    follower.wait_for(&format!("talk-3 | hello from {}", s.replica("talk", 3)));
    assert!(fds() > before, "the engine's logs streams are open");
    drop(follower);
    // The client gone, the daemon stops reading: every logs connection closes.
    wait_for(
        Duration::from_secs(60),
        "the logs connections closed",
        || {
            let now = fds();
            if now <= before {
                Ok(())
            } else {
                Err(format!("{now} open files, {before} before `logs -f`"))
            }
        },
    );

    // One service only: no line of another.
    let one = d.cli_ok(&["logs", &format!("{}/a", s.name)]);
    assert!(one.lines().count() > 0, "{one}");
    assert!(one.lines().all(|l| l.starts_with("a-1 | ")), "{one}");
}

#[test]
fn logs_tail_and_since_limit_the_lines_shown_and_unknown_names_are_refused() {
    let h = Harness::start("logs");
    let (d, s) = (&h.d, &h.s);
    let yaml = format!(
        r#"
services:
  count:
    image: {IMAGE}
    command: {COUNTER}
    healthcheck: {{disable: true}}
"#
    );
    d.apply(s, &yaml);
    let numbers = |out: &str| -> Vec<u64> {
        out.lines()
            .filter_map(|l| l.strip_prefix("count-1 | line "))
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let logs = |args: &[&str]| {
        let mut all = vec!["logs", s.name.as_str()];
        all.extend(args);
        numbers(&d.cli_ok(&all))
    };
    wait_until(Duration::from_secs(60), "5 lines counted", || {
        logs(&[]).len() >= 5
    });

    let tail = logs(&["--tail", "3"]);
    assert_eq!(tail.len(), 3, "{tail:?}");
    assert!(tail.windows(2).all(|w| w[1] == w[0] + 1), "{tail:?}");

    // Every line written before `seen` has a number up to `last`; the engine's `since` is in
    // whole seconds, so from the next second on only later lines remain.
    let last = *logs(&[]).last().unwrap();
    let seen = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let after = (seen + 1).to_string();
    let since = wait_for(Duration::from_secs(60), "lines after --since", || {
        let lines = logs(&["--since", &after]);
        if lines.is_empty() {
            Err("none yet".into())
        } else {
            Ok(lines)
        }
    });
    assert!(since.iter().all(|n| *n > last), "{since:?} after {last}");
    assert!(logs(&["--since", "1h"]).starts_with(&[1]));

    let unknown = d.cli(&["logs", "no-such-stack"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("stack no-such-stack not found"), "{err}");
    let unknown = d.cli(&["logs", &format!("{}/nope", s.name)]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("service nope not found in stack"), "{err}");
    let bad = d.cli(&["logs", &s.name, "--since", "yesterday"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("since:"), "{err}");
}

/// A follower of replicas that print nothing: the daemon must still notice its client left
/// (nothing is written that could fail), or it would list the engine every second for good.
#[test]
fn logs_follow_of_silent_replicas_stops_reading_when_the_client_goes() {
    let h = Harness::start("logs-silent");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &format!("services:\n  quiet:\n    image: {IMAGE}\n"));
    let lists = || {
        metric_sum(
            &d.metrics(),
            "capstan_docker_request_duration_seconds_count",
            &["op=\"list\""],
        )
    };
    let before = lists();
    let follower = Follower::start(d, &[&s.name, "-f"]);
    wait_until(
        Duration::from_secs(10),
        "the follower to list the engine",
        || lists() > before,
    );
    // While it follows, the daemon lists the engine every second.
    let t0 = lists();
    let since = std::time::Instant::now();
    wait_until(Duration::from_secs(10), "three more lists", || {
        lists() >= t0 + 3.0
    });
    let (while_following, took) = (lists() - t0, since.elapsed());
    drop(follower);
    // Once the client is gone, the daemon notices within eight engine probes (4 s of its
    // loops), and over the next eight, lists at most for a resync.
    d.wait_for_engine_probes(8);
    let t1 = lists();
    d.wait_for_engine_probes(8);
    let after = lists() - t1;
    println!("engine lists: {while_following} in {took:?} while following, {after} after");
    assert!(
        took <= Duration::from_secs(6),
        "the follower lists every second: {took:?}"
    );
    assert!(
        after <= 2.0,
        "reading stopped with the client gone: {after} lists in 8 probes"
    );
}
