//! capstan on a locked-down etcd (the etcd part of "secrets at rest"): capstan reaches an etcd that takes only TLS
//! clients with a certificate and has authentication on, with `--etcd-cacert`,
//! `--etcd-cert`/`--etcd-key` and `--etcd-user` (the password from a 0600 file), and runs
//! a stack with a secret through it, sealed in etcd. Without the credentials etcd refuses,
//! and wrong ones stop the daemon with a clear error instead of a retry loop.
//!
//! "The store accepts only capstan": the etcd of `make up` (`scripts/etcd.sh`) lets no
//! other local user read or write it, and a daemon on an etcd that takes anyone says so
//! (`capstan_etcd_unauthenticated`).

use capstan_e2e::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

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

#[test]
fn capstan_runs_a_stack_on_an_etcd_with_tls_client_certificates_and_authentication() {
    let s = StackGuard::new("etcd-tls");
    let etcd = Etcd::start_tls();
    enable_auth(&etcd, "capstan-secret");
    let password = s.file("capstan-secret\n");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The harness passes the client certificate; the user comes on top.
    let flags = ["--etcd-user", "capstan", "--etcd-password-file", &password];
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
    let spoken = [d.metrics(), d.cli_ok(&["get", "stacks", "-o", "json"])].concat();
    assert!(
        !spoken.contains("capstan-secret"),
        "the password shows in an answer: {spoken}"
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
        .args(etcd.client_flags())
        .env("CAPSTAN_ETCD_PASSWORD", "not-the-one")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = try_until(Duration::from_secs(30), || {
        (child.try_wait().unwrap()).ok_or_else(|| "running".to_string())
    });
    let Ok(status) = stopped else {
        let _ = child.kill();
        panic!("capstan serve kept running with a wrong etcd password");
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

#[test]
fn a_daemon_on_an_etcd_that_takes_anyone_sets_the_unauthenticated_gauge_and_one_on_tls_does_not() {
    let plain = Etcd::start_plain();
    let open = Daemon::start(&plain);
    let gauge = |d: &Daemon| {
        let text = d.metrics();
        // Exported whatever its value, so a dashboard never shows "no data" for "fine".
        assert!(
            text.lines()
                .any(|l| l.starts_with("capstan_etcd_unauthenticated ")),
            "no capstan_etcd_unauthenticated in:\n{text}"
        );
        metric_sum(&text, "capstan_etcd_unauthenticated", &[])
    };
    assert_eq!(gauge(&open), 1.0, "a plain etcd on TCP");

    let tls = Etcd::start();
    let guarded = Daemon::start(&tls);
    assert_eq!(
        gauge(&guarded),
        0.0,
        "an etcd taking client certificates only"
    );
}

/// `scripts/etcd.sh` (what `make up` runs) with its data in a folder of the test's and
/// ports of its own; `stop`, and the folder removed, when dropped, also on failure.
struct ScriptEtcd {
    dir: PathBuf,
    port: u16,
    peer_port: u16,
}

impl ScriptEtcd {
    /// The data folder sits in a 0755 folder and is 0755 itself (`make up`'s `.data` is
    /// 0750), so `nobody` may walk to the files: what keeps it out is their own modes.
    fn start() -> ScriptEtcd {
        preflight();
        let dir = std::env::temp_dir().join(format!(
            "capstan-e2e-script-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let etcd = ScriptEtcd {
            dir,
            port: free_port(),
            peer_port: free_port(),
        };
        std::fs::create_dir_all(etcd.data()).unwrap();
        for folder in [&etcd.dir, &etcd.data()] {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        etcd.script("start");
        etcd
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn script(&self, verb: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(verb)
            .env("DATA", self.data())
            .env("ETCD_PORT", self.port.to_string())
            .env("ETCD_PEER_PORT", self.peer_port.to_string())
            .output()
            .expect("run bash");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "scripts/etcd.sh {verb}:\n{text}");
        text
    }

    fn pki(&self, name: &str) -> String {
        self.data().join("pki").join(name).display().to_string()
    }

    /// `etcdctl` arguments against `scheme://127.0.0.1:port`, failing within seconds.
    fn etcdctl(&self, scheme: &str, credentials: &[&str], args: &[&str]) -> Vec<String> {
        let endpoint = format!("{scheme}://127.0.0.1:{}", self.port);
        [
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints",
            endpoint.as_str(),
        ]
        .into_iter()
        .chain(["--dial-timeout", "2s", "--command-timeout", "3s"])
        .chain(credentials.iter().copied())
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
    }

    /// `--cacert`, `--cert`, `--key` of capstan's client certificate.
    fn client_certificate(&self) -> Vec<String> {
        [
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client-key.pem",
        ]
        .chunks(2)
        .flat_map(|p| [p[0].to_string(), self.pki(p[1])])
        .collect()
    }
}

impl Drop for ScriptEtcd {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .env("DATA", self.data())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `args` as the user `nobody` (the tests run as root, as in CI).
fn as_nobody(args: &[String]) -> Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .args(args)
        .output()
        .expect("run runuser")
}

/// Runs `args` as the test's own user, the one that ran `scripts/etcd.sh`.
fn as_owner(args: &[String]) -> Output {
    Command::new(&args[0])
        .args(&args[1..])
        .output()
        .expect("run etcdctl")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn nobody_can_read_or_write_the_store_of_a_make_up_setup_and_its_owner_can() {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(
        uid.trim(),
        "0",
        "this test runs commands as `nobody` with runuser: run it as root (CI does)"
    );
    let etcd = ScriptEtcd::start();
    let put = ["put", "/capstan-e2e/policy", "root-containers-allowed"];
    let get = ["get", "/capstan-e2e/policy"];
    let ca = ["--cacert".to_string(), etcd.pki("ca.pem")];
    let ca: Vec<&str> = ca.iter().map(String::as_str).collect();
    let cert = etcd.client_certificate();
    let cert: Vec<&str> = cert.iter().map(String::as_str).collect();

    // The owner, with capstan's certificate, reads and writes.
    let out = as_owner(&etcd.etcdctl("https", &cert, &put));
    assert!(out.status.success(), "the owner's put: {}", said(&out));

    // nobody: plain HTTP, and TLS without a client certificate, both refused. The CA
    // certificate is public (nobody reads it), so the TLS attempt fails on the missing
    // client certificate alone; the owner fails the same way without it.
    let readable = as_nobody(&["cat".into(), etcd.pki("ca.pem")]);
    assert!(
        readable.status.success(),
        "nobody reads ca.pem: {}",
        said(&readable)
    );
    for (scheme, credentials) in [("http", &[][..]), ("https", &ca[..])] {
        for args in [&put[..], &get[..]] {
            let out = as_nobody(&etcd.etcdctl(scheme, credentials, args));
            assert!(
                !out.status.success(),
                "nobody ran etcdctl {args:?} over {scheme}: {}",
                said(&out)
            );
        }
    }
    let out = as_owner(&etcd.etcdctl("https", &ca, &get));
    assert!(
        !out.status.success(),
        "TLS without a client certificate: {}",
        said(&out)
    );

    // Nor can nobody take a key, nor talk raft to the peer port.
    let uid = std::fs::metadata(etcd.data()).unwrap().uid();
    for key in ["ca-key.pem", "client-key.pem", "server-key.pem"] {
        let meta = std::fs::metadata(etcd.pki(key)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{key}'s mode");
        assert_eq!(meta.uid(), uid, "{key} belongs to whoever ran the script");
        let out = as_nobody(&["cat".into(), etcd.pki(key)]);
        assert!(
            !out.status.success() && said(&out).contains("Permission denied"),
            "nobody read {key}: {}",
            said(&out)
        );
    }
    for scheme in ["http", "https"] {
        let url = format!("{scheme}://127.0.0.1:{}/members", etcd.peer_port);
        let args = [
            "curl",
            "-fsS",
            "--max-time",
            "3",
            "--cacert",
            &etcd.pki("ca.pem"),
            &url,
        ];
        let out = as_nobody(&args.map(String::from));
        assert!(
            !out.status.success(),
            "nobody reached the peer URL over {scheme}: {}",
            said(&out)
        );
    }

    // The owner reads what it wrote; a second start, and a restart, keep the CA and the
    // data (`make up` twice).
    let before = std::fs::read(etcd.pki("ca.pem")).unwrap();
    assert!(etcd.script("start").contains("already running"));
    etcd.script("stop");
    etcd.script("start");
    assert_eq!(
        std::fs::read(etcd.pki("ca.pem")).unwrap(),
        before,
        "the CA was made anew"
    );
    let out = as_owner(&etcd.etcdctl("https", &cert, &get));
    assert!(
        out.status.success() && said(&out).contains("root-containers-allowed"),
        "the owner's get after a restart: {}",
        said(&out)
    );
}
