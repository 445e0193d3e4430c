//! Secrets and configs, and secrets at rest: a secret read
//! from a file by the client is mounted in the replicas with its mode and owner, shows only
//! as a digest everywhere capstan speaks, is sealed in etcd, rolls out exactly the services
//! that use it when it changes, and leaves nothing on the host after `delete`; a daemon with
//! another key cannot read it and says so.

use capstan_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A process that stops at once on TERM.
const IDLE: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

const SECRET: &str = "s3cr3t-hunter2-value";
const CHANGED: &str = "s3cr3t-rotated-value";

fn compose() -> String {
    format!(
        r#"
services:
  app:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    secrets:
      - {{source: db_pw, uid: "1000", mode: 0440}}
    configs:
      - {{source: settings, target: /etc/app.conf}}
  other:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    configs: [settings]
secrets:
  db_pw: {{file: ./db_pw.txt}}
configs:
  settings: {{content: "level=debug"}}
"#
    )
}

fn exec(container: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", container];
    args.extend(cmd);
    docker(&args).trim().to_string()
}

fn container_id(s: &StackGuard, service: &str) -> String {
    inspect(&s.replica(service, 1), "{{.Id}}")
}

/// Every value under the daemon's prefix, read with etcdctl (not through capstan).
fn raw_etcd(etcd: &Etcd, prefix: &str) -> String {
    let out = etcd
        .etcdctl()
        .args(["get", "--prefix", prefix])
        .output()
        .expect("run etcdctl");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_secret(s: &StackGuard, value: &str) -> PathBuf {
    let dir = Path::new(&s.file(&compose()))
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::write(dir.join("db_pw.txt"), value).unwrap();
    dir
}

#[test]
fn a_secret_is_mounted_with_its_mode_shown_only_as_a_digest_and_its_change_rolls_out_only_its_users(
) {
    let h = Harness::start("secrets");
    let (d, s) = (&h.d, &h.s);
    write_secret(s, SECRET);
    d.apply(s, &compose());

    let app = s.replica("app", 1);
    assert_eq!(exec(&app, &["cat", "/run/secrets/db_pw"]), SECRET);
    assert_eq!(
        exec(&app, &["stat", "-c", "%a %u", "/run/secrets/db_pw"]),
        "440 1000"
    );
    assert_eq!(exec(&app, &["cat", "/etc/app.conf"]), "level=debug");
    assert_eq!(exec(&app, &["stat", "-c", "%a", "/etc/app.conf"]), "400");
    let other = s.replica("other", 1);
    assert_eq!(exec(&other, &["cat", "/settings"]), "level=debug");
    let written = exec(
        &app,
        &["sh", "-c", "echo x > /run/secrets/db_pw && echo written"],
    );
    assert_ne!(written, "written", "the secret is mounted read-only");

    // Nowhere capstan speaks shows the value: only its digest.
    let target = format!("{}/app", s.name);
    let outputs = [
        d.cli_ok(&["get", "services", "--stack", &s.name, "-o", "yaml"]),
        d.cli_ok(&["get", "services", "--stack", &s.name, "-o", "json"]),
        d.cli_ok(&["get", "stacks", "-o", "yaml"]),
        d.cli_ok(&["describe", &target]),
        d.metrics(),
        raw_etcd(&h.etcd, &d.prefix),
    ];
    for out in &outputs {
        assert!(!out.contains(SECRET), "the secret leaked:\n{out}");
    }
    assert!(outputs[0].contains("sha256:"), "{}", outputs[0]);
    let folder = d.state_dir.join("files").join(&s.name);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", folder.display());

    // A new value rolls out the service that mounts it, and only that one.
    let (app_before, other_before) = (container_id(s, "app"), container_id(s, "other"));
    write_secret(s, CHANGED);
    d.apply(s, &compose());
    wait_for(Duration::from_secs(60), "app to run the new secret", || {
        let now = exec(&s.replica("app", 1), &["cat", "/run/secrets/db_pw"]);
        (now == CHANGED).then_some(()).ok_or(now)
    });
    assert_ne!(container_id(s, "app"), app_before);
    assert_eq!(container_id(s, "other"), other_before);

    // Delete takes the files and the stored values with the stack.
    d.cli_ok(&["delete", &s.name]);
    wait_until(Duration::from_secs(60), "the stack to be gone", || {
        s.containers().is_empty() && h.etcd.keys(&d.prefix).is_empty()
    });
    assert!(!folder.exists(), "{} is left", folder.display());
}

#[test]
fn a_daemon_with_another_key_cannot_read_the_secrets_and_says_so_without_crashing() {
    let s = StackGuard::new("sealed");
    let etcd = Etcd::start();
    let mut first = Daemon::start(&etcd);
    write_secret(&s, SECRET);
    first.apply(&s, &compose());
    let key = std::fs::metadata(first.state_dir.join("encryption.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    first.stop();

    // Another host's daemon: its own state folder and key. The replica it must replace
    // needs the secret, which it cannot open.
    let elsewhere = first.state_dir.with_file_name("elsewhere");
    let other = first.start_peer(&["--state-dir", &elsewhere.display().to_string()]);
    docker(&["rm", "-f", &s.replica("app", 1)]);
    let target = format!("{}/app", s.name);
    let describe = wait_for(Duration::from_secs(60), "the status to say why", || {
        let describe = other.cli_ok(&["describe", &target]);
        (describe.contains("FilesUnavailable") && describe.contains("encryption key file"))
            .then_some(describe.clone())
            .ok_or(describe)
    });
    assert!(!describe.contains(SECRET), "{describe}");
    let healthz = reqwest::blocking::get(format!("{}/healthz", other.url())).unwrap();
    assert!(healthz.status().is_success(), "the daemon keeps serving");
    assert!(
        raw_etcd(&etcd, &other.prefix).contains("\"sealed\""),
        "the sealed value is still stored"
    );
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn a_key_file_others_can_read_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("capstan-e2e-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new(capstan_bin())
        .args(["serve", "--etcd", "http://127.0.0.1:9", "--socket"])
        .arg(dir.join("capstan.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--encryption-key-file")
        .arg(&key)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_for(
        Duration::from_secs(20),
        "serve to refuse the key file",
        || child.try_wait().unwrap().ok_or("still running".to_string()),
    );
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success());
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
