//! A restarted daemon adopts the replicas it finds running: the same containers, none
//! restarted or made twice, also after a full resync.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
}

#[test]
fn a_restarted_daemon_adopts_running_replicas_without_restarting_them_across_a_resync() {
    let mut h = Harness::start("adopt");
    let s = &h.s;
    h.d.apply(s, &web(3));
    let started = |name: &str| inspect(name, "{{.State.StartedAt}}");
    let before: Vec<(String, String, String)> = s.containers();
    let started_before: Vec<String> = before.iter().map(|c| started(&c.0)).collect();

    h.d.restart();
    let (d, s) = (&h.d, &h.s);
    wait_until(
        CONVERGE,
        "the new daemon to report the service converged",
        || d.converged(&s.name, "web", 3),
    );
    d.wait_for_resync();
    assert_eq!(s.containers(), before, "same container IDs, no duplicates");
    let started_after: Vec<String> = before.iter().map(|c| started(&c.0)).collect();
    assert_eq!(started_after, started_before, "no replica was restarted");
}
