//! The daemon survives connection floods (hardening issue): while thousands of idle and
//! half-sent connections press on TCP `--listen`, the Unix socket and the metrics listener
//! still answer and a killed replica runs again, and the daemon closes a half-sent
//! connection after the header-read timeout (shortened to 1 s here by the hidden
//! `--header-read-timeout`).
//!
//! The daemon's open-files limit is set to 1,024 soft *and* hard once it runs, so it is the
//! listeners' budgets that keep it answering, not the raise to the hard limit at start.

use capstan_e2e::flood::{limit_open_files, open_files, open_files_limit, Flood, PARTIAL_REQUEST};
use capstan_e2e::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connections of each kind: far beyond TCP's budget (512) and the file limit (1,024).
const EACH: usize = 1500;

#[test]
fn a_flood_on_tcp_leaves_the_socket_the_metrics_and_healing_working() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let h = Harness::start_with(
        "floods",
        &["--listen", &listen, "--header-read-timeout", "1s"],
    );
    let (d, s) = (&h.d, &h.s);
    let pid = d.pid().expect("the daemon runs");
    limit_open_files(pid, 1024, 1024);
    assert_eq!(open_files_limit(pid), ("1024".into(), "1024".into()));
    d.apply(
        s,
        &format!("services:\n  web:\n    image: {IMAGE}\n    scale: 2\n"),
    );

    // Opened before the flood, so the daemon accepts it at once.
    let mut probe = TcpStream::connect(addr).unwrap();
    probe.write_all(PARTIAL_REQUEST).unwrap();

    let flood = Flood::start(addr, EACH, EACH);
    wait_until(
        Duration::from_secs(60),
        "the flood to hold more connections than TCP's budget",
        || flood.open() > 1000,
    );

    // The flood's connections beyond TCP's budget (512) wait in the kernel's backlog: the
    // daemon's own descriptors stay near the budget (the rest: etcd, the engine, logs).
    let fds = open_files(pid);
    assert!(fds < 512 + 100, "the daemon holds {fds} descriptors");

    // The daemon ends the half-sent request: end of stream (or a reset), never a hang.
    assert!(
        closed_by_the_daemon(&mut probe, Duration::from_secs(60)),
        "the half-sent connection is closed"
    );
    wait_until(
        Duration::from_secs(60),
        "the daemon to close the flood's half-sent connections",
        || flood.closed_by_peer() > 0,
    );

    let health = d.api().get(format!("{API}/healthz")).send().unwrap();
    assert!(
        health.status().is_success(),
        "/healthz on the socket: {health:?}"
    );
    assert!(d.metrics().contains("capstan_"), "/metrics answers");

    let replica = s.replica("web", 1);
    let started = inspect(&replica, "{{.State.StartedAt}}");
    docker(&["kill", &replica]);
    wait_until(
        Duration::from_secs(120),
        "the killed replica to run again during the flood",
        || {
            inspect(&replica, "{{.State.Running}}") == "true"
                && inspect(&replica, "{{.State.StartedAt}}") != started
        },
    );
    wait_until(
        Duration::from_secs(60),
        "the service to report converged during the flood",
        || d.converged(&s.name, "web", 2),
    );
    assert!(flood.open() > 1000, "the flood still presses on TCP");
    drop(flood);
}

/// A folder for the test's certificate, removed at the end.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads until the daemon closes the connection: end of stream or a reset, within `limit`.
fn closed_by_the_daemon(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn a_tls_handshake_that_never_finishes_is_closed_after_the_header_read_timeout() {
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "capstan-e2e-floods-tls-{}-{}",
        std::process::id(),
        free_port()
    )));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let (cert, key) = (scratch.0.join("cert.pem"), scratch.0.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "1", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed to make the test's certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (listen, cert, key) = (
        addr.to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let h = Harness::start_with(
        "floods-tls",
        &[
            "--listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--header-read-timeout",
            "1s",
        ],
    );
    // The first bytes of a TLS record (a handshake, TLS 1.0 framing), then nothing.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00]).unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(closed_by_the_daemon(&mut stalled, Duration::from_secs(60)));
    assert!(closed_by_the_daemon(&mut silent, Duration::from_secs(60)));
    assert!(
        h.d.metrics().contains("capstan_"),
        "the daemon still answers"
    );
}

/// `capstan logs STACK -f`, its lines collected as they come.
struct Follower {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Follower {
    fn start(d: &Daemon, stack: &str) -> Follower {
        use std::io::BufRead;
        let mut child = std::process::Command::new(capstan_bin())
            .args(["logs", stack, "-f"])
            .env("CAPSTAN_SERVER", d.server())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run capstan logs -f");
        let stdout = child.stdout.take().unwrap();
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let sink = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    fn wait_for(&self, words: &str) {
        wait_until(Duration::from_secs(60), words, || {
            self.lines.lock().unwrap().iter().any(|l| l.contains(words))
        });
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_streaming_response_outlives_the_idle_timeout_that_closes_a_silent_connection() {
    let h = Harness::start_with("floods-stream", &["--idle-timeout", "1s"]);
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &format!("services:\n  web:\n    image: {IMAGE}\n"));
    let replica = s.replica("web", 1);
    let say = |words: &str| {
        docker(&[
            "exec",
            &replica,
            "sh",
            "-c",
            &format!("echo {words} > /proc/1/fd/1"),
        ]);
    };
    let follower = Follower::start(d, &s.name);
    say("before-the-idle-timeout");
    follower.wait_for("before-the-idle-timeout");

    // A connection opened now, silent, is closed once the idle timeout has passed...
    let mut silent = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(silent.read(&mut buf), Ok(0)),
        "the silent connection is closed"
    );
    // ... while the follow stream, older and just as quiet on its way in, still streams.
    say("after-the-idle-timeout");
    follower.wait_for("after-the-idle-timeout");
}
