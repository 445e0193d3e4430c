//! Who may call the API: the Unix socket's file permissions, bearer tokens and roles on
//! TCP, TLS off loopback, client certificates, and the audit log of every change.

use capstan_e2e::*;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A scratch folder others may traverse (for the `nobody` user), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "capstan-e2e-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CLI against `server` with extra environment (token, CA).
fn cli_at(server: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(capstan_bin());
    cmd.args(args)
        .env("CAPSTAN_SERVER", server)
        .env_remove("CAPSTAN_TOKEN")
        .env_remove("CAPSTAN_CACERT")
        .env_remove("CAPSTAN_CLIENT_CERT")
        .env_remove("CAPSTAN_CLIENT_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run capstan")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `capstan token create NAME --role ROLE` over the daemon's socket: the secret.
fn token(d: &Daemon, name: &str, role: &str) -> String {
    let out = d.cli_ok(&["token", "create", name, "--role", role]);
    let secret = out.trim().to_string();
    assert!(secret.starts_with("capstan_"), "a token is printed: {out}");
    secret
}

/// `capstan get stacks` as `nobody`, from a copy of the binary `nobody` may run.
fn get_stacks_as_nobody(scratch: &Scratch, d: &Daemon) -> Output {
    let bin = scratch.path("capstan");
    std::fs::copy(capstan_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A process another thread of this binary forks while the copy is being written holds
    // it open for writing until it execs: "Text file busy" until then.
    let run = || {
        let out = (Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(&bin))
        .args(["--server", &d.server(), "get", "stacks"])
        .output()
        .expect("runuser (util-linux) runs the CLI as nobody");
        match text(&out).contains("Text file busy") {
            true => Err(text(&out)),
            false => Ok(out),
        }
    };
    try_until(std::time::Duration::from_secs(10), run).unwrap_or_else(|e| panic!("{e}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_user_outside_the_sockets_group_cannot_reach_the_default_socket() {
    let h = Harness::start("auth-socket");
    let scratch = Scratch::new("nobody");
    assert_eq!(mode(&h.d.socket()), 0o660);
    assert_eq!(mode(h.d.socket().parent().unwrap()), 0o750);
    let out = get_stacks_as_nobody(&scratch, &h.d);
    assert!(
        !out.status.success(),
        "nobody reached the API: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("ermission denied"),
        "refused by the file permissions: {}",
        text(&out)
    );
    h.d.cli_ok(&["get", "stacks"]);
}

#[test]
fn a_member_of_the_socket_group_may_call_the_api() {
    let h = Harness::start_with("auth-group", &["--socket-group", "nogroup"]);
    let scratch = Scratch::new("nogroup");
    let out = get_stacks_as_nobody(&scratch, &h.d);
    assert!(out.status.success(), "nogroup's member: {}", text(&out));
}

#[test]
fn on_tcp_a_caller_needs_a_token_and_a_read_token_may_get_but_not_apply() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let h = Harness::start_with("auth-tcp", &["--listen", &listen]);
    let tcp = format!("http://{listen}");
    let anonymous = reqwest::blocking::get(format!("{tcp}/v1/stacks")).unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = anonymous.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let out = cli_at(
        &tcp,
        &[("CAPSTAN_TOKEN", "capstan_forged")],
        &["get", "stacks"],
    );
    assert!(
        text(&out).contains("invalid or revoked token"),
        "{}",
        text(&out)
    );

    let read = token(&h.d, "reader", "read");
    let as_reader = [("CAPSTAN_TOKEN", read.as_str())];
    let out = cli_at(&tcp, &as_reader, &["get", "stacks"]);
    assert!(out.status.success(), "a read token may get: {}", text(&out));
    let file =
        h.s.file(&format!("services:\n  web:\n    image: {IMAGE}\n"));
    let apply = ["apply", "-f", &file, "--stack", &h.s.name];
    let out = cli_at(&tcp, &as_reader, &apply);
    assert!(!out.status.success());
    assert!(text(&out).contains("needs role deploy"), "{}", text(&out));
    let raw = reqwest::blocking::Client::new()
        .put(format!("{tcp}/v1/stacks/{}", h.s.name))
        .bearer_auth(&read)
        .body(format!("services: {{web: {{image: {IMAGE}}}}}"))
        .send()
        .unwrap();
    assert_eq!(raw.status().as_u16(), 403);
    assert!(raw.json::<serde_json::Value>().unwrap()["error"].is_string());
    let stacks = h.d.cli_ok(&["get", "stacks", "-o", "json"]);
    assert_eq!(stacks.trim(), "[]", "nothing applied");

    let scratch = Scratch::new("token");
    let file = scratch.path("token");
    std::fs::write(&file, format!("{read}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = file.to_string_lossy();
    let from_file = [("CAPSTAN_TOKEN_FILE", &*file)];
    let out = cli_at(&tcp, &from_file, &["get", "stacks"]);
    assert!(text(&out).contains("readable by others"), "{}", text(&out));
    std::fs::set_permissions(&*file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = cli_at(&tcp, &from_file, &["get", "stacks"]);
    assert!(out.status.success(), "a 0600 token file: {}", text(&out));

    let list = h.d.cli_ok(&["token", "list"]);
    assert!(list.contains("reader") && list.contains("read"), "{list}");
    assert!(!list.contains(&read[8..]), "the secret is never listed");
    h.d.cli_ok(&["token", "revoke", "reader"]);
    let out = cli_at(&tcp, &as_reader, &["get", "stacks"]);
    assert!(
        text(&out).contains("invalid or revoked token"),
        "{}",
        text(&out)
    );

    let m = h.d.metrics();
    let count = |verb: &str, result: &str| {
        let labels = [format!("verb=\"{verb}\""), format!("result=\"{result}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        metric_sum(&m, "capstan_api_requests_total", &labels)
    };
    assert!(count("get", "unauthorized") >= 3.0, "{m}");
    assert!(count("apply", "forbidden") >= 2.0, "{m}");
    assert!(count("token-create", "ok") >= 1.0, "{m}");
}

#[test]
fn the_audit_log_records_an_apply_with_the_callers_uid_or_token_name_and_its_profile() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let h = Harness::start_with("auth-audit", &["--listen", &listen, "--log-format", "json"]);
    let file =
        h.s.file(&format!("services:\n  web:\n    image: {IMAGE}\n"));
    h.d.cli_ok(&["apply", "-f", &file, "--stack", &h.s.name]);
    let deploy = token(&h.d, "ci-deploy", "deploy");
    let file = h.s.file(&format!(
        "services:\n  web:\n    image: {IMAGE}\n    scale: 2\n"
    ));
    let out = cli_at(
        &format!("http://{listen}"),
        &[("CAPSTAN_TOKEN", &deploy)],
        &["apply", "-f", &file, "--stack", &h.s.name],
    );
    assert!(out.status.success(), "{}", text(&out));
    let audit = h.d.audit_records();
    let applied_by = |caller: &str, profile: &str, summary: &str| {
        audit.iter().any(|l| {
            l["caller"] == caller
                && l["profile"] == profile
                && l["verb"] == "apply"
                && l["stack"] == h.s.name.as_str()
                && l["summary"] == summary
                && l["result"] == "ok"
                && l["timestamp"].is_string()
        })
    };
    assert!(
        applied_by("uid=0 gid=0", "privileged", "web=created"),
        "{audit:#?}"
    );
    assert!(
        applied_by("token=ci-deploy", "baseline", "web=configured"),
        "{audit:#?}"
    );
    assert!(
        audit.iter().any(|l| l["verb"] == "token-create"),
        "{audit:#?}"
    );
    assert!(
        !audit.iter().any(|l| l["verb"] == "get"),
        "reads are not audited: {audit:#?}"
    );
    h.d.cli_ok(&["delete", &h.s.name]);
}

#[test]
fn a_tcp_listener_off_loopback_without_tls_refuses_to_start() {
    let scratch = Scratch::new("notls");
    let listen = format!("0.0.0.0:{}", free_port());
    let socket = scratch.path("run/capstan.sock");
    let mut child = Command::new(capstan_bin())
        .args(["serve", "--listen", &listen, "--etcd", "http://127.0.0.1:9"])
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(30), "serve to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.unwrap().success());
    assert!(
        err.contains(&format!("refusing to listen on {listen} without TLS"))
            && err.contains("--tls-cert"),
        "{err}"
    );
    assert!(!socket.exists(), "nothing was started");
}

/// A CA, and a certificate it signed for localhost and 127.0.0.1: (ca, cert, key).
fn certificates(scratch: &Scratch) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| scratch.path(n).to_string_lossy().into_owned();
    let ext = scratch.path("leaf.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let steps: Vec<Vec<String>> = vec![
        [&["req", "-x509", "-nodes", "-days", "2"][..], &ec]
            .concat()
            .into_iter()
            .map(String::from)
            .chain(["-keyout", &p("ca.key"), "-out", &p("ca.pem")].map(String::from))
            .chain(["-subj", "/CN=capstan e2e CA"].map(String::from))
            .collect(),
        [&["req", "-nodes"][..], &ec]
            .concat()
            .into_iter()
            .map(String::from)
            .chain(["-keyout", &p("key.pem"), "-out", &p("leaf.csr")].map(String::from))
            .chain(["-subj", "/CN=localhost"].map(String::from))
            .collect(),
        [
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &p("ca.pem"),
        ]
        .map(String::from)
        .into_iter()
        .chain(["-CAkey", &p("ca.key"), "-CAcreateserial"].map(String::from))
        .chain(["-out", &p("cert.pem"), "-extfile", &p("leaf.ext")].map(String::from))
        .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    }
    (
        scratch.path("ca.pem"),
        scratch.path("cert.pem"),
        scratch.path("key.pem"),
    )
}

#[test]
fn a_tls_listener_with_a_self_signed_certificate_serves_the_cli_given_the_ca() {
    let scratch = Scratch::new("tls");
    let (ca, cert, key) = certificates(&scratch);
    let port = free_port();
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let listen = format!("127.0.0.1:{port}");
    let flags = ["--listen", &listen, "--tls-cert", &cert, "--tls-key", &key];
    let h = Harness::start_with("auth-tls", &flags);
    let read = token(&h.d, "tls-reader", "read");
    let ca = ca.to_string_lossy();
    for server in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
    ] {
        let env = [("CAPSTAN_TOKEN", read.as_str()), ("CAPSTAN_CACERT", &ca)];
        let out = cli_at(&server, &env, &["get", "stacks"]);
        assert!(out.status.success(), "{server}: {}", text(&out));
        let out = cli_at(&server, &[("CAPSTAN_CACERT", &ca)], &["get", "stacks"]);
        assert!(
            text(&out).contains("authentication required"),
            "{}",
            text(&out)
        );
    }
    let server = format!("https://127.0.0.1:{port}");
    let out = cli_at(&server, &[("CAPSTAN_TOKEN", &read)], &["get", "stacks"]);
    assert!(
        !out.status.success(),
        "a certificate no trusted CA signed is refused"
    );
    let out = cli_at(
        &format!("http://127.0.0.1:{port}"),
        &[("CAPSTAN_TOKEN", &read)],
        &["get", "stacks"],
    );
    assert!(!out.status.success(), "no plain HTTP on a TLS listener");
}

/// `openssl` with `args` split at spaces (none of these paths or subjects holds one).
fn openssl(args: &str) {
    let out = Command::new("openssl")
        .args(args.split(' '))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args}: {}", text(&out));
}

const EC: &str = "-nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1";

/// A self-signed CA of its own in `scratch`: `{name}.pem`, `{name}.key`.
fn other_ca(scratch: &Scratch, name: &str) {
    let p = |n: &str| scratch.path(n).to_string_lossy().into_owned();
    let (pem, key) = (p(&format!("{name}.pem")), p(&format!("{name}.key")));
    openssl(&format!(
        "req -x509 -days 2 {EC} -keyout {key} -out {pem} -subj /CN={name}-ca"
    ));
}

/// A client certificate with subject `subject`, signed by CA `ca` (`{ca}.pem`, `{ca}.key`
/// in `scratch`): (certificate, key), the key 0600.
fn client_certificate(scratch: &Scratch, name: &str, subject: &str, ca: &str) -> (String, String) {
    let p = |n: &str| scratch.path(n).to_string_lossy().into_owned();
    let (cert, key, csr, ext) = (
        p(name) + ".pem",
        p(name) + ".key",
        p(name) + ".csr",
        p("client.ext"),
    );
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(&format!(
        "req {EC} -keyout {key} -out {csr} -subj {subject}"
    ));
    let (ca_pem, ca_key) = (p(ca) + ".pem", p(ca) + ".key");
    openssl(&format!(
        "x509 -req -days 2 -in {csr} -CA {ca_pem} -CAkey {ca_key} -CAcreateserial -out {cert} -extfile {ext}"
    ));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

#[test]
fn a_client_certificate_the_client_ca_signed_names_the_caller_and_its_role() {
    let scratch = Scratch::new("mtls");
    let (ca, cert, key) = certificates(&scratch);
    let (ca, cert, key) = (
        ca.to_string_lossy(),
        cert.to_string_lossy(),
        key.to_string_lossy(),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = [
        "--listen",
        &listen,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--log-format",
        "json",
    ];
    let h = Harness::start_with("auth-mtls", &flags);
    let deployer = client_certificate(&scratch, "deployer", "/CN=ci-pipeline/O=deploy", "ca");
    let reader = client_certificate(&scratch, "reader", "/CN=dashboard/O=read", "ca");
    let roleless = client_certificate(&scratch, "roleless", "/CN=someone", "ca");
    other_ca(&scratch, "rogue");
    let rogue = client_certificate(&scratch, "mallory", "/CN=mallory/O=admin", "rogue");
    let server = format!("https://{listen}");
    let with = |(c, k): &(String, String), args: &[&str]| {
        let env = [
            ("CAPSTAN_CACERT", &*ca),
            ("CAPSTAN_CLIENT_CERT", c.as_str()),
            ("CAPSTAN_CLIENT_KEY", k.as_str()),
        ];
        cli_at(&server, &env, args)
    };
    let file =
        h.s.file(&format!("services:\n  web:\n    image: {IMAGE}\n"));
    let apply = ["apply", "-f", &file, "--stack", &h.s.name];

    let out = with(&deployer, &apply);
    assert!(out.status.success(), "{}", text(&out));
    let out = with(&reader, &apply);
    assert!(
        text(&out).contains("cert=dashboard has role read"),
        "{}",
        text(&out)
    );
    let out = with(&reader, &["get", "stacks"]);
    assert!(text(&out).contains(&h.s.name), "{}", text(&out));
    let out = with(&roleless, &["get", "stacks"]);
    assert!(
        text(&out).contains("needs a CN naming the caller and an O naming its role"),
        "{}",
        text(&out)
    );
    let out = with(&rogue, &["get", "stacks"]);
    assert!(
        !out.status.success() && !text(&out).contains(&h.s.name),
        "a certificate another CA signed is refused: {}",
        text(&out)
    );
    let out = cli_at(&server, &[("CAPSTAN_CACERT", &*ca)], &["get", "stacks"]);
    assert!(
        text(&out).contains("authentication required"),
        "without a certificate, a token is still needed: {}",
        text(&out)
    );
    let audited = (h.d.audit_records().into_iter())
        .any(|l| l["caller"] == "cert=ci-pipeline" && l["verb"] == "apply" && l["result"] == "ok");
    assert!(audited, "the audit log names the certificate's CN");
    h.d.cli_ok(&["delete", &h.s.name]);
}
