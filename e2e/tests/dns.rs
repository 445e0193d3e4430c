//! A service's replicas on the real engine: each runs under its ordinal name
//! (`<stack>-<service>-<n>`) with capstan's labels and no engine restart policy, the
//! service's name resolves to every replica's address on the stack's network, and
//! `get services -o json` reports them.

use capstan_e2e::*;

fn web(replicas: u32) -> String {
    format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: {replicas}\n")
}

#[test]
fn three_replicas_run_and_the_service_name_resolves_to_all_three() {
    let h = Harness::start("dns");
    let (d, s) = (&h.d, &h.s);
    d.apply(s, &web(3));

    assert_eq!(
        s.running(),
        vec![
            s.replica("web", 1),
            s.replica("web", 2),
            s.replica("web", 3)
        ]
    );
    for n in 1..=3 {
        let name = s.replica("web", n);
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"capstan.stack\"}}"),
            s.name
        );
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"capstan.service\"}}"),
            "web"
        );
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"capstan.replica\"}}"),
            n.to_string()
        );
        assert_eq!(
            inspect(&name, "{{.HostConfig.RestartPolicy.Name}}"),
            "no",
            "capstan, not the engine, owns restarts"
        );
    }
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        &format!("{}_default", s.name),
        IMAGE,
        "nslookup",
        "web",
    ]);
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Address") && !l.contains(":53"))
        .collect();
    assert_eq!(
        answers.len(),
        3,
        "nslookup web should answer 3 addresses:\n{out}"
    );

    let svc = d.service(&s.name, "web");
    for field in [
        "stack",
        "name",
        "replicas",
        "running",
        "ready",
        "observedGeneration",
        "generation",
    ] {
        assert!(
            !svc[field].is_null(),
            "get services -o json lacks {field}: {svc}"
        );
    }
    assert_eq!(
        (
            svc["replicas"].as_u64(),
            svc["ready"].as_u64(),
            svc["generation"].as_i64()
        ),
        (Some(3), Some(3), Some(1))
    );
}
