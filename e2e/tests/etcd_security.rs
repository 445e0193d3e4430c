//! Issue 12, "Secrets at rest" (its etcd part): capstan reaches an etcd that takes only TLS
//! clients with a certificate and has authentication on, with `--etcd-cacert`,
//! `--etcd-cert`/`--etcd-key` and `--etcd-user` (the password from a 0600 file), and runs
//! a stack with a secret through it, sealed in etcd. Without the credentials etcd refuses,
//! and wrong ones stop the daemon with a clear error instead of a retry loop.

use capstan_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Users `root` and `capstan` (granted the root role), then `auth enable`.
fn enable_auth(etcd: &Etcd, password: &str) {
    let run = |args: &[&str]| {
        let out = etcd.etcdctl().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["user", "add", "root:root-secret"]);
    run(&["user", "add", &format!("capstan:{password}")]);
    run(&["user", "grant-role", "capstan", "root"]);
    run(&["auth", "enable"]);
}

fn tls_flags(etcd: &Etcd) -> Vec<String> {
    [
        ("--etcd-cacert", "ca.pem"),
        ("--etcd-cert", "client.pem"),
        ("--etcd-key", "client-key.pem"),
    ]
    .iter()
    .flat_map(|(flag, file)| [flag.to_string(), etcd.pki(file)])
    .collect()
}

#[test]
fn capstan_runs_a_stack_on_an_etcd_with_tls_client_certificates_and_authentication() {
    let s = StackGuard::new("etcd-tls");
    let etcd = Etcd::start_tls();
    enable_auth(&etcd, "capstan-secret");
    let password = s.file("capstan-secret\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut flags = tls_flags(&etcd);
    flags.extend(["--etcd-user", "capstan", "--etcd-password-file", &password].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = Daemon::start_with(&etcd, &flags);

    let compose = format!(
        "services:\n  web:\n    image: {IMAGE}\n    secrets: [pw]\nsecrets:\n  pw: {{file: ./pw.txt}}\n"
    );
    let file = s.file(&compose);
    let folder = std::path::Path::new(&file).parent().unwrap();
    std::fs::write(folder.join("pw.txt"), "tls-guarded-secret").unwrap();
    d.apply(&s, &compose);
    assert_eq!(d.service(&s.name, "web")["ready"], 1);
    let cat = docker(&["exec", &s.replica("web", 1), "cat", "/run/secrets/pw"]);
    assert_eq!(cat.trim(), "tls-guarded-secret");
    let out = etcd
        .etcdctl()
        .args(["--user", "root:root-secret", "get", "--prefix", &d.prefix])
        .output()
        .unwrap();
    let stored = String::from_utf8_lossy(&out.stdout);
    assert!(
        stored.contains("\"sealed\"") && !stored.contains("tls-guarded-secret"),
        "{stored}"
    );

    // The client certificate alone is no etcd user: without a password etcd refuses.
    let out = etcd
        .etcdctl()
        .args(["get", "--prefix", "--keys-only", &d.prefix])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "etcd answered without credentials");
    println!("etcdctl without a user: {err}");
    assert!(
        !d.log().contains("capstan-secret"),
        "the password was logged"
    );
    d.cli_ok(&["delete", &s.name]);
}

#[test]
fn wrong_etcd_credentials_stop_the_daemon_with_a_clear_error() {
    let etcd = Etcd::start_tls();
    enable_auth(&etcd, "right-one");
    let dir = std::env::temp_dir().join(format!("etcd-wrong-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("capstan.sock");
    let mut child = Command::new(capstan_bin())
        .args([
            "serve",
            "--etcd",
            &etcd.url(),
            "--socket",
            &socket.to_string_lossy(),
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--prefix", "/capstan-e2e-wrong", "--etcd-user", "capstan"])
        .args(tls_flags(&etcd))
        .env("CAPSTAN_ETCD_PASSWORD", "not-the-one")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("capstan serve kept running with a wrong etcd password");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success());
    assert!(
        stderr.contains("etcd refused capstan's credentials"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-one"),
        "the password was printed: {stderr}"
    );
}
