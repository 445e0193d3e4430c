//! The stateful guard against the real engine: more than one replica writing one named
//! volume is refused by apply and by `capstan scale` (nothing stored), and a per-replica
//! volume (`data-{{replica}}`) stays with its ordinal across a replacement and a scale down
//! and up, until `delete --volumes`.

use capstan_e2e::*;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(90);

/// `db`, `scale` replicas mounting `source` (declared at the top level as `declared`) at
/// /data; each replica records its hostname in /data/first the first time it starts and
/// appends it to /data/starts at every start.
fn stack(scale: u32, source: &str) -> String {
    let script = "[ -f /data/first ] || hostname > /data/first; hostname >> /data/starts; trap 'exit 0' TERM INT; while true; do sleep 1; done";
    format!(
        "services:\n  db:\n    image: {IMAGE}\n    scale: {scale}\n    healthcheck: {{disable: true}}\n    command: [\"sh\", \"-c\", \"{script}\"]\n    volumes: [\"{source}:/data\"]\nvolumes:\n  \"{source}\": {{}}\n"
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// `cat /data/FILE` in replica `n` of db.
fn read(s: &StackGuard, n: u32, file: &str) -> String {
    docker(&["exec", &s.replica("db", n), "cat", &format!("/data/{file}")])
        .trim()
        .to_string()
}

#[test]
fn scaling_a_service_that_writes_a_named_volume_is_refused_by_apply_and_by_scale() {
    let h = Harness::start("stateful-guard");
    let (d, s, etcd) = (&h.d, &h.s, &h.etcd);
    let file = s.file(&stack(2, "data"));
    let out = d.cli(&["apply", "-f", &file, "--stack", &s.name]);
    let said = stderr(&out);
    assert!(
        !out.status.success(),
        "apply of 2 writers succeeded: {said}"
    );
    assert!(
        said.contains("services.db.volumes[0]") && said.contains("\"data\""),
        "the refusal names the field and the volume: {said}"
    );
    assert!(
        etcd.keys(&d.prefix).is_empty(),
        "a refused apply stores nothing"
    );
    assert!(s.containers().is_empty() && s.volumes().is_empty());

    d.apply(s, &stack(1, "data"));
    let out = d.cli(&["scale", &format!("{}/db=3", s.name)]);
    let said = stderr(&out);
    assert!(
        !out.status.success(),
        "scale to 3 writers succeeded: {said}"
    );
    assert!(
        said.contains("services.db.volumes[0]") && said.contains("\"data\""),
        "the refusal names the field and the volume: {said}"
    );
    let svc = d.service(&s.name, "db");
    assert_eq!(
        (svc["replicas"].as_u64(), svc["generation"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn each_replica_keeps_its_own_volume_across_replacement_and_scaling_until_delete_volumes() {
    let h = Harness::start("stateful-own");
    let (d, s) = (&h.d, &h.s);
    let per_replica = "data-{{replica}}";
    d.apply(s, &stack(2, per_replica));
    let vol = |n: u32| format!("{}_data-{n}", s.name);
    assert_eq!(s.volumes(), vec![vol(1), vol(2)]);
    for n in 1..=2 {
        assert_eq!(
            read(s, n, "first"),
            s.replica("db", n),
            "replica {n} writes its own volume"
        );
    }

    let old = inspect(&s.replica("db", 2), "{{.Id}}");
    docker(&["rm", "-f", &s.replica("db", 2)]);
    wait_until(CONVERGE, "replica 2 replaced", || {
        inspect(&s.replica("db", 2), "{{.Id}}") != old && d.converged(&s.name, "db", 2)
    });
    wait_until(CONVERGE, "replica 2 started again", || {
        read(s, 2, "starts").lines().count() == 2
    });
    assert_eq!(
        read(s, 2, "first"),
        s.replica("db", 2),
        "the replacement has replica 2's volume"
    );

    d.cli_ok(&["scale", &format!("{}/db=3", s.name)]);
    wait_until(CONVERGE, "3 replicas", || d.converged(&s.name, "db", 3));
    docker(&[
        "exec",
        &s.replica("db", 3),
        "sh",
        "-c",
        "echo kept > /data/marker",
    ]);
    d.cli_ok(&["scale", &format!("{}/db=1", s.name)]);
    wait_until(CONVERGE, "1 replica", || {
        d.converged(&s.name, "db", 1) && s.containers().len() == 1
    });
    assert_eq!(
        s.volumes(),
        vec![vol(1), vol(2), vol(3)],
        "scaling down keeps the volumes"
    );
    d.cli_ok(&["scale", &format!("{}/db=3", s.name)]);
    wait_until(CONVERGE, "3 replicas again", || {
        d.converged(&s.name, "db", 3)
    });
    assert_eq!(
        read(s, 3, "marker"),
        "kept",
        "replica 3 is back with volume 3's data"
    );
    assert_eq!(
        read(s, 1, "starts").lines().count(),
        1,
        "replica 1 was never replaced"
    );

    d.cli_ok(&["delete", &s.name]);
    assert_eq!(s.volumes().len(), 3, "delete without --volumes keeps them");
    d.apply(s, &stack(3, per_replica));
    assert_eq!(read(s, 3, "marker"), "kept", "and a new apply finds them");
    d.cli_ok(&["delete", &s.name, "--volumes"]);
    assert!(
        s.containers().is_empty() && s.volumes().is_empty(),
        "delete --volumes removes them all"
    );
}
