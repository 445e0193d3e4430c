//! Issue 12's etcd client TLS and user/password, end to end: the test makes a CA, a server
//! and a client certificate with openssl, starts an etcd that requires TLS with client
//! certificates and has auth enabled, and runs a stack with a secret through a daemon that
//! connects with `--etcd-cacert/--etcd-cert/--etcd-key` and `--etcd-user` (its password from
//! a 0600 file, never on the command line).

use capstan_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const PASSWORD: &str = "etcd-root-pw-e2e";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server (127.0.0.1) and a client certificate it signed.
fn certificates(dir: &Path) {
    let day = ["-days", "1"];
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=capstan-e2e-ca",
            day[0],
            day[1],
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "127.0.0.1"), ("client", "capstan-client")] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-extfile",
                &ext,
                day[0],
                day[1],
            ],
        );
    }
}

/// An etcd serving TLS only, requiring client certificates; killed and removed when dropped.
struct TlsEtcd {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl TlsEtcd {
    fn start(dir: &Path) -> TlsEtcd {
        let port = free_port();
        let client = format!("https://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .current_dir(dir)
            .args(["--name", "tls", "--data-dir", "data"])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("tls={peer}")])
            .args(["--cert-file", "server.pem", "--key-file", "server.key"])
            .args(["--trusted-ca-file", "ca.pem", "--client-cert-auth"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = TlsEtcd {
            dir: dir.to_path_buf(),
            port,
            child,
        };
        wait_until(Duration::from_secs(20), "etcd with TLS to answer", || {
            etcd.ctl(&["endpoint", "health"], false).status.success()
        });
        etcd
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// etcdctl over TLS with the client certificate, as root when `as_root`.
    fn ctl(&self, args: &[&str], as_root: bool) -> std::process::Output {
        let mut cmd = Command::new("etcdctl");
        cmd.current_dir(&self.dir).env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.url(),
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
        ]);
        if as_root {
            cmd.args(["--user", &format!("root:{PASSWORD}")]);
        }
        cmd.args(args).output().expect("run etcdctl")
    }

    fn ctl_ok(&self, args: &[&str], as_root: bool) -> String {
        let out = self.ctl(args, as_root);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the test's folder (certificates, etcd's data, the password file) when dropped.
struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_daemon_reaches_an_etcd_with_tls_client_certificates_and_auth_with_a_password_from_a_file() {
    preflight();
    let s = StackGuard::new("etcdtls");
    let folder = Folder(std::env::temp_dir().join(format!("capstan-e2e-etcdtls-{}", free_port())));
    let dir = folder.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let etcd = TlsEtcd::start(&dir);
    etcd.ctl_ok(&["user", "add", &format!("root:{PASSWORD}")], false);
    etcd.ctl_ok(&["auth", "enable"], false);
    let refused = etcd.ctl(&["get", "--prefix", "/"], false);
    assert!(!refused.status.success(), "auth is on: no user, no answer");

    let password = dir.join("etcd-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let d = Daemon::start_at(
        &etcd.url(),
        &[
            "--etcd-cacert",
            &path("ca.pem"),
            "--etcd-cert",
            &path("client.pem"),
            "--etcd-key",
            &path("client.key"),
            "--etcd-user",
            "root",
            "--etcd-password-file",
            &path("etcd-password"),
        ],
    );
    let compose = format!(
        "services:\n  app:\n    image: {IMAGE}\n    secrets: [pw]\nsecrets:\n  pw: {{file: ./pw.txt}}\n"
    );
    let file = s.file(&compose);
    std::fs::write(
        Path::new(&file).parent().unwrap().join("pw.txt"),
        "tls-guarded-secret",
    )
    .unwrap();
    d.apply(&s, &compose);
    let cat = docker(&["exec", &s.replica("app", 1), "cat", "/run/secrets/pw"]);
    assert_eq!(cat.trim(), "tls-guarded-secret");

    let stored = etcd.ctl_ok(&["get", "--prefix", &d.prefix], true);
    assert!(
        stored.contains("\"sealed\"") && !stored.contains("tls-guarded-secret"),
        "{stored}"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid().unwrap())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(PASSWORD),
        "the password is not on the command line"
    );
    assert!(!d.log().contains(PASSWORD));
}
