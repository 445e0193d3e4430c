//! The Compose keys the engine takes as they are (namespaces, cgroup and CPU scheduler
//! settings, block IO limits, device cgroup rules, swappiness, `external_links`) reach the
//! real engine and take effect, and `post_start`/`pre_stop` hooks run in the replicas through
//! the engine's exec API: after a replica starts, and before a scale-down stops one.
//!
//! Checked through the engine (`docker inspect`, `docker exec`), never the daemon's log. Not
//! here, and unit-tested instead: `cpu_count`/`cpu_percent` (Windows-only fields: the engine
//! on Linux discards them with a warning, as it does for Compose), `cpu_rt_*` (the engine
//! needs `--cpu-rt-runtime` for a container to get real-time time), `storage_opt` (only
//! overlay on xfs with project quotas takes it; this engine runs fuse-overlayfs), `blkio`
//! weights (this kernel has no proportional block IO scheduler) and privileged hooks (this
//! engine cannot start privileged processes).

use capstan_e2e::*;
use std::time::Duration;

/// A process that stops at once on TERM or INT.
const IDLE: &str = r#"["sh", "-c", "trap 'exit 0' TERM INT; while true; do sleep 1; done"]"#;

const CONVERGE: Duration = Duration::from_secs(90);

/// A folder removed when the test ends, pass or fail.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "capstan-e2e-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A container and a network capstan does not make, named under the stack so that the
/// stack's guard removes them too (the network carries the stack's label for the same
/// reason: the guard removes the stack's labelled networks).
fn foreign_container(stack: &str) -> (String, String) {
    let (net, name) = (format!("{stack}-ext"), format!("{stack}-cache"));
    docker(&[
        "network",
        "create",
        "--label",
        &format!("capstan.stack={stack}"),
        &net,
    ]);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &net,
        "--init",
        IMAGE,
        "sleep",
        "3600",
    ]);
    (net, name)
}

fn exec(container: &str, script: &str) -> String {
    docker(&["exec", container, "sh", "-c", script])
        .trim()
        .to_string()
}

#[test]
fn namespace_and_cgroup_keys_take_effect_in_the_engine_and_hooks_run_in_the_replicas() {
    let policy = TempDir::new("namespaces-policy");
    let policy_file = policy.0.join("policy.yaml");
    std::fs::write(
        &policy_file,
        "host_namespaces: true\ndevices: [/dev/null, 'c 1:3 mr']\n",
    )
    .unwrap();
    let h = Harness::start_with("namespaces", &["--policy", policy_file.to_str().unwrap()]);
    let (d, s) = (&h.d, &h.s);
    let (ext, cache) = foreign_container(&s.name);
    let out = TempDir::new("namespaces-out");
    let yaml = format!(
        r#"
services:
  db:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    ipc: shareable
  app:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    user: "1000"
    ipc: "service:db"
    pid: host
    uts: host
    userns_mode: host
    cgroup: private
    cgroup_parent: /docker
    cpu_period: 100ms
    cpu_quota: 50000
    mem_swappiness: 10
    blkio_config:
      device_read_bps: [{{path: /dev/vda, rate: 1mb}}]
      device_write_iops: [{{path: /dev/vda, rate: 300}}]
    device_cgroup_rules: ["c 1:3 mr"]
    external_links: ["{cache}:cache"]
    networks: [default, ext]
    post_start:
      - command: ["sh", "-c", "echo \"$$(id -u) $$(pwd) $$HOOK_VAR\" > /tmp/post_start"]
        user: "0"
        working_dir: /www
        environment: {{HOOK_VAR: ran}}
  worker:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    scale: 2
    volumes: ["{out}:/out"]
    pre_stop:
      - command: ["sh", "-c", "hostname > /out/stopped-$$(hostname)"]
networks:
  ext: {{external: true, name: {ext}}}
"#,
        out = out.0.display()
    );
    d.apply(s, &yaml);

    let app = s.replica("app", 1);
    let db = s.replica("db", 1);
    let host = |format: &str| inspect(&app, format);
    // The engine keeps the container it resolved the name to.
    let db_id = inspect(&db, "{{.Id}}");
    assert_eq!(
        host("{{.HostConfig.IpcMode}}"),
        format!("container:{db_id}")
    );
    assert_eq!(
        exec(&app, "readlink /proc/self/ns/ipc"),
        exec(&db, "readlink /proc/self/ns/ipc"),
        "app shares db's IPC namespace"
    );
    assert_eq!(host("{{.HostConfig.PidMode}}"), "host");
    // In the host's PID namespace the replica sees its own process under its host PID.
    let pid = host("{{.State.Pid}}");
    let cmdline = exec(&app, &format!("tr '\\0' ' ' < /proc/{pid}/cmdline"));
    assert!(cmdline.contains("trap"), "host PID {pid} is {cmdline:?}");
    assert_eq!(host("{{.HostConfig.UTSMode}}"), "host");
    let engine_host = docker(&["info", "--format", "{{.Name}}"]);
    assert_eq!(
        exec(&app, "hostname"),
        engine_host.trim(),
        "the host's name"
    );
    assert_eq!(host("{{.HostConfig.UsernsMode}}"), "host");
    assert_eq!(host("{{.HostConfig.CgroupnsMode}}"), "private");
    assert_eq!(host("{{.HostConfig.CgroupParent}}"), "/docker");
    assert_eq!(
        host("{{.HostConfig.CpuPeriod}} {{.HostConfig.CpuQuota}}"),
        "100000 50000"
    );
    assert_eq!(host("{{.HostConfig.MemorySwappiness}}"), "10");
    assert_eq!(
        host("{{json .HostConfig.BlkioDeviceReadBps}}"),
        r#"[{"Path":"/dev/vda","Rate":1048576}]"#
    );
    assert_eq!(
        host("{{json .HostConfig.BlkioDeviceWriteIOps}}"),
        r#"[{"Path":"/dev/vda","Rate":300}]"#
    );
    assert_eq!(
        host("{{json .HostConfig.DeviceCgroupRules}}"),
        r#"["c 1:3 mr"]"#
    );
    let links = host(&format!(
        "{{{{json (index .NetworkSettings.Networks \"{ext}\").Links}}}}"
    ));
    assert!(links.contains("cache"), "{links}");
    let cache_ip = inspect(
        &cache,
        &format!("{{{{(index .NetworkSettings.Networks \"{ext}\").IPAddress}}}}"),
    );
    let resolved = exec(&app, "nslookup cache 127.0.0.11 2>/dev/null");
    assert!(
        resolved.contains(&cache_ip),
        "the external link's alias resolves to {cache} ({cache_ip}): {resolved}"
    );
    // The post_start hook ran as root (by number: the test image has no /etc/passwd) in /www
    // with its variable, though the service runs as 1000.
    wait_until(CONVERGE, "the post_start hook's file", || {
        !exec(&app, "cat /tmp/post_start 2>/dev/null").is_empty()
    });
    assert_eq!(exec(&app, "cat /tmp/post_start"), "0 /www ran");
    assert_eq!(exec(&app, "id -u"), "1000");

    // A scale-down runs pre_stop in the replica it stops, before stopping it.
    let stopped = out.0.join(format!("stopped-{}", s.replica("worker", 2)));
    assert!(!stopped.exists());
    d.cli_ok(&["scale", &format!("{}/worker=1", s.name)]);
    wait_until(CONVERGE, "worker to be scaled down", || {
        !s.running().contains(&s.replica("worker", 2))
    });
    let said = std::fs::read_to_string(&stopped).unwrap_or_default();
    assert_eq!(said.trim(), s.replica("worker", 2));
    assert!(
        !out.0
            .join(format!("stopped-{}", s.replica("worker", 1)))
            .exists(),
        "the replica that stays ran no pre_stop"
    );

    // The same file again changes nothing: the hooks and options hash stably.
    let before = s.containers();
    d.apply(s, &yaml.replace("scale: 2", "scale: 1"));
    assert_eq!(s.containers(), before);
}

#[test]
fn host_namespaces_and_device_rules_are_refused_by_the_baseline_profile_naming_the_rule() {
    // Root on the socket gets `privileged` by default, which allows all of this: the
    // operator puts socket callers under `baseline`.
    let policy =
        std::env::temp_dir().join(format!("namespaces-policy-{}.yaml", std::process::id()));
    std::fs::write(&policy, "socket: baseline\n").unwrap();
    let h = Harness::start_with(
        "namespaces-refused",
        &["--policy", policy.to_str().unwrap()],
    );
    std::fs::remove_file(&policy).unwrap();
    let (d, s) = (&h.d, &h.s);
    let file = s.file(&format!(
        r#"
services:
  web:
    image: {IMAGE}
    pid: host
    ipc: "container:other"
    device_cgroup_rules: ["a *:* rwm"]
    post_start: [{{command: "true", privileged: true}}]
"#
    ));
    let out = d.cli(&["apply", "-f", &file, "--stack", &s.name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for (field, rule) in [
        ("services.web.pid", "host_namespaces"),
        ("services.web.ipc", "host_namespaces"),
        ("services.web.device_cgroup_rules[0]", "devices"),
        ("services.web.post_start[0].privileged", "privileged"),
    ] {
        assert!(
            err.contains(&format!("{field}: policy rule {rule} (profile baseline,")),
            "{field} ({rule}) missing from:\n{err}"
        );
    }
    assert!(h.etcd.keys(&d.prefix).is_empty(), "nothing was stored");
    assert!(s.containers().is_empty());
}

#[test]
fn a_failing_post_start_hook_is_named_in_the_status_and_leaves_no_replica_running() {
    let h = Harness::start("hook-fails");
    let (d, s) = (&h.d, &h.s);
    d.apply_nowait(
        s,
        &format!(
            "services:\n  web:\n    image: {IMAGE}\n    command: {IDLE}\n    healthcheck: {{disable: true}}\n    post_start: [{{command: [sh, -c, 'exit 7']}}]\n"
        ),
    );
    d.wait_for_reason(
        &s.name,
        "web",
        "HookFailed",
        "post_start[0] `sh -c exit 7` exited with code 7",
    );
    // Between tries nothing runs: the replica whose hook failed was removed.
    wait_until(CONVERGE, "no replica left running", || {
        s.running().is_empty()
    });
}
