//! What capstan owns is what carries its stack's label, not what has the right name: a
//! container someone else made under a replica's name is left running and reported as a
//! conflict, and a network another stack made under this stack's name is never joined.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
}

#[test]
fn a_foreign_container_named_like_a_replica_is_left_untouched_across_a_resync() {
    let h = Harness::start("foreign");
    let (d, s) = (&h.d, &h.s);
    let foreign = s.replica("web", 2);
    docker(&["run", "-d", "--name", &foreign, IMAGE]);
    let foreign_id = inspect(&foreign, "{{.Id}}");

    d.apply_nowait(s, &web(3));
    wait_until(CONVERGE, "replicas 1 and 3 to run", || {
        s.running() == vec![s.replica("web", 1), s.replica("web", 3)]
    });
    wait_until(CONVERGE, "a NameConflict condition", || {
        let svc = d.service(&s.name, "web");
        svc["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Degraded" && c["reason"] == "NameConflict")
        })
    });
    d.wait_for_resync();
    assert_eq!(
        inspect(&foreign, "{{.Id}}"),
        foreign_id,
        "the foreign container was not replaced"
    );
    assert_eq!(
        inspect(&foreign, "{{.State.Running}}"),
        "true",
        "the foreign container was not stopped"
    );
    assert_eq!(
        inspect(&foreign, "{{index .Config.Labels \"capstan.stack\"}}"),
        "",
        "and it is still not capstan's"
    );
}

/// Ownership compares the stack label, not only the name: a network that capstan made for
/// another stack is never joined, even when its name is the one this stack would make.
#[test]
fn a_network_another_stack_made_under_this_stacks_name_is_never_joined() {
    let other = StackGuard::new("owner"); // removes the network it labels, last
    let h = Harness::start("joiner");
    let (d, s) = (&h.d, &h.s);
    let net = format!("{}_default", s.name);
    let owner = format!("capstan.stack={}", other.name);
    docker(&["network", "create", "--label", &owner, &net]);

    d.apply_nowait(s, &web(1));
    d.wait_for_reason(&s.name, "web", "NotOwned", &other.name);
    assert!(s.containers().is_empty(), "no replica was made on it");
    assert_eq!(
        inspect(&net, "{{index .Labels \"capstan.stack\"}}"),
        other.name
    );

    docker(&["network", "rm", &net]);
    wait_until(CONVERGE, "web to converge on a network of its own", || {
        d.converged(&s.name, "web", 1)
    });
    assert_eq!(inspect(&net, "{{index .Labels \"capstan.stack\"}}"), s.name);
}
