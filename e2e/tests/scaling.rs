//! Scaling on the real engine: `capstan scale` up and down (down removes the highest
//! ordinals and keeps the lowest as they were), to zero and back.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
}

#[test]
fn scaling_to_five_then_one_keeps_the_lowest_ordinal_and_zero_works_too() {
    let h = Harness::start("scale");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(3));
    let first = s.containers()[0].clone();

    d.cli_ok(&["scale", &format!("{}/web=5", s.name)]);
    wait_until(CONVERGE, "5 ready replicas", || {
        d.converged(&s.name, "web", 5)
    });
    assert_eq!(s.running().len(), 5);

    d.cli_ok(&["scale", &format!("{}/web=1", s.name)]);
    wait_until(CONVERGE, "1 ready replica", || {
        d.converged(&s.name, "web", 1) && s.containers().len() == 1
    });
    assert_eq!(
        s.containers()[0],
        first,
        "scale-down removes the highest ordinals and keeps replica 1 as it was"
    );

    d.cli_ok(&["scale", &format!("{}/web=0", s.name)]);
    wait_until(CONVERGE, "no replica", || {
        d.converged(&s.name, "web", 0) && s.containers().is_empty()
    });
    d.cli_ok(&["scale", &format!("{}/web=2", s.name)]);
    wait_until(CONVERGE, "2 replicas again", || {
        d.converged(&s.name, "web", 2)
    });
}
