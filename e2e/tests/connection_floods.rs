//! The daemon survives connection floods (hardening issue): while thousands of idle and
//! half-sent connections press on TCP `--listen`, the Unix socket and the metrics listener
//! still answer and a killed replica runs again, and the daemon closes a half-sent
//! connection after the header-read timeout (shortened to 1 s here by the hidden
//! `--header-read-timeout`).
//!
//! The daemon's open-files limit is set to 1,024 soft *and* hard once it runs, so it is the
//! listeners' budgets that keep it answering, not the raise to the hard limit at start.

use capstan_e2e::flood::{limit_open_files, open_files_limit, Flood, PARTIAL_REQUEST};
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

    // The daemon ends the half-sent request: end of stream (or a reset), never a hang.
    probe
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 64];
    match probe.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the half-sent connection should be closed, got {other:?}"),
    }
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
