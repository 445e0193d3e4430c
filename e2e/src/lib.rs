//! Harness for the end-to-end tests: a private etcd (TLS, client certificates required, as
//! `make up` runs it) and a private `capstan serve` per test, the real binary, the real
//! Docker engine, and a [`StackGuard`] that removes everything a test's stack made
//! (containers, networks, volumes), also when the test fails.
//!
//! Missing prerequisites are a loud failure naming the fix, never a silent skip.

pub mod flood;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The demo image every test uses (`make images`).
pub const IMAGE: &str = "capstan-demo/web:1";
pub const IMAGE_V2: &str = "capstan-demo/web:2";

/// The base of API URLs sent through [`Daemon::api`], which connects to the daemon's socket.
pub const API: &str = "http://capstan";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Panics with a clear message unless Docker, etcd, the capstan binary and the images exist.
pub fn preflight() {
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match docker {
        Ok(o) if o.status.success() => {}
        _ => panic!("e2e tests need the Docker engine at /var/run/docker.sock; start it (these tests never skip)"),
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        panic!("e2e tests need etcd: run `make deps` (Debian's etcd-server)");
    }
    let bin = capstan_bin();
    if !bin.exists() {
        panic!(
            "capstan binary not found at {}: run `cargo build -p capstan` or `make test`",
            bin.display()
        );
    }
    for image in [IMAGE, IMAGE_V2] {
        let ok = Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            panic!("image {image} is missing: run `make images`");
        }
    }
}

pub fn capstan_bin() -> PathBuf {
    match std::env::var_os("CAPSTAN_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/capstan"),
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "capstan-e2e-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How long the harness's waits pause between two looks: a poll, never a wait for something.
pub const POLL: Duration = Duration::from_millis(200);

/// Polls `check` every [`POLL`] until it is true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, check: impl FnMut() -> bool) {
    poll_until(POLL, timeout, what, check)
}

/// [`wait_until`] looking every `every` instead: for the tests that sample the engine while
/// something happens (the fewest replicas serving during a rollout) or time it.
pub fn poll_until(every: Duration, timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(every);
    }
}

/// [`wait_until`] for a check that can say what is still missing: polls `attempt` every
/// [`POLL`] until it returns `Ok`, and panics with `what` and the last `Err` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, attempt: impl FnMut() -> Result<T, String>) -> T {
    try_until(timeout, attempt)
        .unwrap_or_else(|e| panic!("timed out after {timeout:?} waiting for: {what}\nstill: {e}"))
}

/// Polls `attempt` every [`POLL`] until it returns `Ok`; its last `Err` after `timeout`, for
/// the callers that gather failures instead of panicking at the first.
pub fn try_until<T>(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(t) => return Ok(t),
            Err(e) if start.elapsed() > timeout => return Err(e),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// How often the harness's daemons resync (`capstan serve --resync`).
pub const RESYNC: Duration = Duration::from_secs(5);

/// The sum of the samples of metric `name` in a Prometheus exposition whose labels include
/// every one of `labels` (`kind="stack"`); 0 when there is none.
pub fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labelset, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let matches = labels
                .iter()
                .all(|want| labelset.split(',').any(|have| have.trim() == want.trim()));
            matches.then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// `kill -SIGNAL` of a process the harness started; `what` names it if that fails.
fn send_signal(child: &Child, signal: &str, what: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{signal} of {what} failed");
}

/// A single-node etcd on loopback, with its data in a temp dir.
pub struct Etcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Clients and peers must come over TLS with a certificate of the test's CA, as with
    /// `make up`; false only for [`Self::start_plain`].
    tls: bool,
    child: Option<Child>,
}

impl Etcd {
    /// An etcd as `make up` runs it: it takes only TLS clients (and peers) with a
    /// certificate signed by a CA made for it (openssl, in etcd's temp dir): `ca.pem`,
    /// `server.pem`, `client.pem` and their keys ([`Self::pki`]). [`Daemon`] passes the
    /// client certificate itself; [`Self::etcdctl`] and [`Self::client_flags`] carry it.
    pub fn start() -> Etcd {
        Etcd::start_as(true)
    }

    /// The same as [`Self::start`] (every etcd of the harness takes TLS clients only); kept
    /// for the tests that name it.
    pub fn start_tls() -> Etcd {
        Etcd::start_as(true)
    }

    /// An etcd without TLS or authentication on `http://127.0.0.1`, which anyone local
    /// could write to: only for the tests of what capstan says about such an etcd.
    pub fn start_plain() -> Etcd {
        Etcd::start_as(false)
    }

    fn start_as(tls: bool) -> Etcd {
        preflight();
        let mut etcd = Etcd {
            dir: scratch_dir("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            child: None,
        };
        if tls {
            make_certificates(&etcd.dir);
        }
        etcd.spawn();
        etcd
    }

    /// A file of the test's CA ([`Self::start`]).
    pub fn pki(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// The `capstan serve` flags that present the client certificate (`--etcd-cacert`,
    /// `--etcd-cert`, `--etcd-key`); none for [`Self::start_plain`]. For the tests that
    /// start `capstan serve` themselves; [`Daemon`] passes them on its own.
    pub fn client_flags(&self) -> Vec<String> {
        if !self.tls {
            return vec![];
        }
        [
            ("--etcd-cacert", "ca.pem"),
            ("--etcd-cert", "client.pem"),
            ("--etcd-key", "client-key.pem"),
        ]
        .iter()
        .flat_map(|(flag, file)| [flag.to_string(), self.pki(file)])
        .collect()
    }

    /// `etcdctl` against this etcd (with the client certificate when it takes TLS only).
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url()]);
        if self.tls {
            cmd.args(["--cacert", &self.pki("ca.pem")])
                .args(["--cert", &self.pki("client.pem")])
                .args(["--key", &self.pki("client-key.pem")]);
        }
        cmd
    }

    fn tls_args(&self) -> Vec<String> {
        if !self.tls {
            return vec![];
        }
        [
            ("--cert-file", "server.pem"),
            ("--key-file", "server-key.pem"),
            ("--trusted-ca-file", "ca.pem"),
            ("--peer-cert-file", "server.pem"),
            ("--peer-key-file", "server-key.pem"),
            ("--peer-trusted-ca-file", "ca.pem"),
        ]
        .iter()
        .flat_map(|(flag, file)| [flag.to_string(), self.pki(file)])
        .chain(["--client-cert-auth", "--peer-client-cert-auth"].map(String::from))
        .collect()
    }

    /// An HTTP client of etcd's own endpoints (`/health`), with the client certificate
    /// when etcd takes TLS only.
    fn http(&self) -> reqwest::blocking::Client {
        let mut client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2));
        if self.tls {
            let read = |name: &str| std::fs::read(self.dir.join(name)).unwrap();
            let ca = reqwest::Certificate::from_pem(&read("ca.pem")).unwrap();
            let mut identity = read("client.pem");
            identity.extend(read("client-key.pem"));
            client = client
                .tls_certs_only([ca])
                .identity(reqwest::Identity::from_pem(&identity).unwrap());
        }
        client.build().unwrap()
    }

    fn healthy(&self, http: &reqwest::blocking::Client) -> bool {
        http.get(format!("{}/health", self.url()))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    fn spawn(&mut self) {
        let client = self.url();
        let scheme = if self.tls { "https" } else { "http" };
        let peer = format!("{scheme}://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .args(["--name", "e2e", "--data-dir"])
            .arg(self.dir.join("data"))
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
            .args(["--initial-cluster", &format!("e2e={peer}")])
            .args(self.tls_args())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let http = self.http();
        wait_until(Duration::from_secs(20), "etcd to become healthy", || {
            self.healthy(&http)
        });
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to etcd: a frozen etcd answers nothing.
    pub fn signal(&self, signal: &str) {
        send_signal(
            self.child.as_ref().expect("etcd is running"),
            signal,
            "etcd",
        );
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (its data stays): the outage tests.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// etcd's current revision, read with etcdctl: it grows with every write, so an
    /// unchanged revision proves that nothing was written in between.
    pub fn revision(&self) -> u64 {
        let out = self
            .etcdctl()
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .expect("run etcdctl (make deps)");
        assert!(
            out.status.success(),
            "etcdctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        status[0]["Status"]["header"]["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("no revision in etcdctl's answer: {status}"))
    }

    /// Keys under `prefix`, read with etcdctl (not through capstan), but the leader key:
    /// what the stacks left behind.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .etcdctl()
            .args(["get", "--prefix", "--keys-only", prefix])
            .output()
            .expect("run etcdctl (make deps)");
        assert!(
            out.status.success(),
            "etcdctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty() && !l.ends_with("/v1/leader"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate (CN `capstan-e2e`),
/// P-256 keys, valid for a day, made with openssl in `dir`.
fn make_certificates(dir: &Path) {
    // Each command as one string: no argument here contains a space.
    let run = |cmd: &str| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(cmd.split(' '))
            .output()
            .expect("run openssl (make deps)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {cmd}: {err}");
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    run(&format!(
        "req -x509 {key} -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=capstan-e2e-ca"
    ));
    for (name, cn, usage) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "capstan-e2e", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), usage).unwrap();
        run(&format!(
            "req {key} -keyout {name}-key.pem -out {name}.csr -subj /CN={cn}"
        ));
        run(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
             -out {name}.pem -days 1 -extfile {name}.ext"
        ));
    }
}

/// A `capstan serve` of the test's own.
pub struct Daemon {
    dir: PathBuf,
    /// `--metrics-listen`'s port: probes and metrics, without authentication.
    port: u16,
    etcd_url: String,
    /// The flags that present etcd's client certificate ([`Etcd::client_flags`]), left out
    /// when the test's own flags name `--etcd-cacert`.
    etcd_flags: Vec<String>,
    pub prefix: String,
    /// `--state-dir` (unless the test's flags name one): secrets, configs and the encryption
    /// key, in the first daemon's scratch folder; its peers share it, as daemons of one host.
    pub state_dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    pub fn start(etcd: &Etcd) -> Daemon {
        Daemon::start_with(etcd, &[])
    }

    /// With extra `serve` flags; etcd's client certificate is passed unless they name one.
    pub fn start_with(etcd: &Etcd, extra: &[&str]) -> Daemon {
        Daemon::start_as(&etcd.url(), etcd.client_flags(), extra)
    }

    /// Against the etcd at `etcd_url` (one the test started itself): `extra` carries the
    /// credentials it needs (`--etcd-cacert`, ...).
    pub fn start_at(etcd_url: &str, extra: &[&str]) -> Daemon {
        Daemon::start_as(etcd_url, vec![], extra)
    }

    fn start_as(etcd_url: &str, etcd_flags: Vec<String>, extra: &[&str]) -> Daemon {
        let prefix = format!("/capstan-e2e-{}", free_port());
        let dir = scratch_dir("daemon");
        let mut d = Daemon {
            state_dir: dir.join("state"),
            dir,
            port: free_port(),
            etcd_url: etcd_url.to_string(),
            etcd_flags,
            prefix,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("capstan.log"))
            .unwrap();
        let child = Command::new(capstan_bin())
            .args([
                "serve",
                "--etcd",
                &self.etcd_url,
                "--socket",
                &self.socket().to_string_lossy(),
                "--metrics-listen",
                &format!("127.0.0.1:{}", self.port),
                "--prefix",
                &self.prefix,
                "--resync",
                &format!("{}s", RESYNC.as_secs()),
            ])
            // `serve --audit-log`, by its variable: a daemon built before the flag (a
            // benchmark's baseline) starts all the same.
            .env("CAPSTAN_AUDIT_LOG", self.dir.join("audit.log"))
            .args(&self.extra)
            .args(
                (!self.extra.iter().any(|a| a == "--etcd-cacert"))
                    .then_some(&self.etcd_flags)
                    .into_iter()
                    .flatten(),
            )
            .args(
                (!self.extra.iter().any(|a| a == "--state-dir"))
                    .then(|| ["--state-dir".into(), self.state_dir.display().to_string()])
                    .into_iter()
                    .flatten(),
            )
            .env("RUST_LOG", "info,capstan_controller=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start capstan serve");
        self.child = Some(child);
        let ready = format!("{}/readyz", self.url());
        wait_until(Duration::from_secs(30), "capstan to become ready", || {
            reqwest::blocking::get(&ready)
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
    }

    /// `/healthz`, `/readyz` and `/metrics`, unauthenticated (`--metrics-listen`); the API
    /// itself is on [`Self::socket`] (reach it with [`Self::api`] or [`Self::cli`]).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The API's Unix socket, in the daemon's scratch folder (the daemon creates `run/`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/capstan.sock")
    }

    /// `CAPSTAN_SERVER` for this daemon.
    pub fn server(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// An HTTP client of the API over the socket: request `{API}/v1/...`.
    pub fn api(&self) -> reqwest::blocking::Client {
        (reqwest::blocking::Client::builder().unix_socket(self.socket()))
            .build()
            .unwrap()
    }

    /// [`Self::api`] for long-lived streams (watches).
    pub fn api_without_timeout(&self) -> reqwest::blocking::Client {
        (reqwest::blocking::Client::builder().unix_socket(self.socket()))
            .timeout(None)
            .build()
            .unwrap()
    }

    /// The daemon's process ID (benchmarks read its CPU time and memory from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the daemon gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            // Killed if it has not exited within 35 s.
            let _ = try_until(Duration::from_secs(35), || {
                (c.try_wait().ok().flatten()).ok_or_else(|| "running".to_string())
            });
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A second daemon on the same etcd and prefix (a peer in the leader election), with
    /// its own port and so its own identity.
    pub fn start_peer(&self, extra: &[&str]) -> Daemon {
        let mut d = Daemon {
            dir: scratch_dir("daemon"),
            port: free_port(),
            etcd_url: self.etcd_url.clone(),
            etcd_flags: self.etcd_flags.clone(),
            prefix: self.prefix.clone(),
            state_dir: self.state_dir.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        d.spawn();
        d
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, ...) to the daemon.
    pub fn signal(&self, signal: &str) {
        send_signal(
            self.child.as_ref().expect("capstan serve is running"),
            signal,
            "capstan serve",
        );
    }

    /// `kill -9`, and waits for the process to be gone; [`Self::start_again`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again after [`Self::kill`] (same port, same identity).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    /// `GET /v1/leader`.
    pub fn leader(&self) -> serde_json::Value {
        (self.api().get(format!("{API}/v1/leader")).send())
            .and_then(|r| r.json())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Whether this daemon says it leads.
    pub fn leads(&self) -> bool {
        self.leader()["role"] == "leader"
    }

    /// Runs a client command against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(capstan_bin())
            .args(args)
            .env("CAPSTAN_SERVER", self.server())
            .output()
            .expect("run capstan")
    }

    /// Runs a client command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "capstan {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `capstan apply` of `yaml` as the test's stack, waiting until it converged (90 s at most).
    pub fn apply(&self, s: &StackGuard, yaml: &str) -> String {
        self.apply_within(s, yaml, "90s")
    }

    /// [`Self::apply`] with another `--timeout` (benchmarks with many replicas).
    pub fn apply_within(&self, s: &StackGuard, yaml: &str, timeout: &str) -> String {
        let file = s.file(yaml);
        self.cli_ok(&[
            "apply",
            "-f",
            &file,
            "--stack",
            &s.name,
            "--wait",
            "--timeout",
            timeout,
        ])
    }

    /// `capstan apply` of `yaml` as the test's stack, without waiting.
    pub fn apply_nowait(&self, s: &StackGuard, yaml: &str) -> String {
        let file = s.file(yaml);
        self.cli_ok(&["apply", "-f", &file, "--stack", &s.name])
    }

    /// `capstan get services --stack S -o json`.
    pub fn services(&self, stack: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.cli_ok(&["get", "services", "--stack", stack, "-o", "json"]))
            .unwrap()
    }

    pub fn service(&self, stack: &str, name: &str) -> serde_json::Value {
        self.services(stack)
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("service {stack}/{name} not listed"))
    }

    /// Whether `capstan get` reports the service converged at `replicas`.
    pub fn converged(&self, stack: &str, name: &str, replicas: u64) -> bool {
        let s = self.service(stack, name);
        s["replicas"] == replicas
            && s["ready"] == replicas
            && s["running"] == replicas
            && s["observedGeneration"] == s["generation"]
    }

    /// Waits (up to a minute) until a condition of the service has reason `reason` and a
    /// message containing `words`.
    pub fn wait_for_reason(&self, stack: &str, name: &str, reason: &str, words: &str) {
        wait_until(
            Duration::from_secs(60),
            &format!("a {reason} condition saying {words:?}"),
            || {
                let svc = self.service(stack, name);
                svc["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["reason"] == reason
                            && c["message"].as_str().is_some_and(|m| m.contains(words))
                    })
                })
            },
        );
    }

    /// The daemon's log, for a failing test to print (the harness prints its tail when a
    /// test panics): tests assert on the API, `/metrics` and the engine, never on it.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("capstan.log")).unwrap_or_default()
    }

    /// The daemon's Prometheus exposition (`GET /metrics`).
    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.url()))
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
    }

    /// Reconciles the daemon finished so far of `kind` keys (`stack`, `service`), whatever
    /// their result (`capstan_reconciles_total`).
    pub fn reconciles(&self, kind: &str) -> u64 {
        reconciles_in(&self.metrics(), kind)
    }

    /// Calls of `op` (`create`, `pull`, `ping`, ...) the daemon made to the engine so far, as
    /// `/metrics` counts them (`capstan_docker_request_duration_seconds_count`).
    pub fn docker_calls(&self, op: &str) -> f64 {
        let op = format!("op=\"{op}\"");
        metric_sum(
            &self.metrics(),
            "capstan_docker_request_duration_seconds_count",
            &[&op],
        )
    }

    /// Requests of `op` (`watch`, `range`, `txn`, ...) the daemon made to etcd so far.
    pub fn etcd_calls(&self, op: &str) -> f64 {
        let op = format!("op=\"{op}\"");
        metric_sum(
            &self.metrics(),
            "capstan_etcd_request_duration_seconds_count",
            &[&op],
        )
    }

    /// API requests of `verb` (`apply`, `build`, ...) answered so far, whatever the result
    /// (`capstan_api_requests_total`).
    pub fn api_requests(&self, verb: &str) -> f64 {
        let verb = format!("verb=\"{verb}\"");
        metric_sum(&self.metrics(), "capstan_api_requests_total", &[&verb])
    }

    /// Returns once the daemon's engine probe (a ping every 500 ms) has run `n` more times:
    /// the daemon's loops went on for that long. For the tests that prove that something does
    /// not happen, as a positive signal instead of a fixed wait.
    pub fn wait_for_engine_probes(&self, n: u32) {
        let before = self.docker_calls("ping");
        wait_until(
            Duration::from_secs(2 * u64::from(n) + 10),
            &format!("{n} engine probes past {before}"),
            || self.docker_calls("ping") >= before + f64::from(n),
        );
    }

    /// The records of the daemon's audit log (`serve --audit-log`, one JSON object a line):
    /// an output capstan documents field by field, apart from the daemon's log, which no
    /// test reads.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Returns once the daemon has resynced since the call: a resync (every [`RESYNC`])
    /// enqueues every stack and every service, and each has been reconciled again. For the
    /// tests that prove that nothing happens: whatever the daemon would do on its own, it has
    /// had its chance to do. Takes up to one period.
    ///
    /// Read from `capstan_reconciles_total` in a world at rest (no etcd change, no container
    /// event, nothing backing off), where only the resync reconciles a stack: the stack
    /// reconciles grow by one per stack when a resync ran, and the service reconciles by one
    /// per service when it reached them all. A call that lands inside a resync (milliseconds
    /// of reconciles every period) can return when that one is done.
    pub fn wait_for_resync(&self) {
        let stacks: Vec<serde_json::Value> = (self.api().get(format!("{API}/v1/stacks")).send())
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("GET /v1/stacks: {e}"));
        let services: u64 = stacks
            .iter()
            .map(|s| s["services"].as_array().map_or(0, |v| v.len() as u64))
            .sum();
        let text = self.metrics();
        let (stacks0, services0) = (
            reconciles_in(&text, "stack"),
            reconciles_in(&text, "service"),
        );
        let want = (stacks0 + stacks.len() as u64, services0 + services);
        wait_until(
            RESYNC * 4,
            &format!(
                "a resync: {} stack and {services} service reconciles past {stacks0} and {services0}",
                stacks.len()
            ),
            || {
                let text = self.metrics();
                reconciles_in(&text, "stack") >= want.0 && reconciles_in(&text, "service") >= want.1
            },
        );
    }
}

/// `capstan_reconciles_total` of `kind` keys in an exposition, whatever the result.
fn reconciles_in(exposition: &str, kind: &str) -> u64 {
    metric_sum(
        exposition,
        "capstan_reconciles_total",
        &[&format!("kind=\"{kind}\"")],
    ) as u64
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("---- capstan log (last 200 lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A unique stack name, and the removal of everything it made when dropped.
pub struct StackGuard {
    pub name: String,
    dir: PathBuf,
}

impl StackGuard {
    pub fn new(tag: &str) -> StackGuard {
        StackGuard::prefixed("e2e", tag)
    }

    /// A stack named `<prefix>-<tag>-<unique>` (the chaos tests use `chaos`).
    pub fn prefixed(prefix: &str, tag: &str) -> StackGuard {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 100_000;
        let name = format!(
            "{prefix}-{tag}-{}{}{}",
            std::process::id() % 1000,
            N.fetch_add(1, Ordering::SeqCst),
            nanos
        );
        StackGuard {
            name,
            dir: scratch_dir("stack"),
        }
    }

    /// Writes `yaml` to a file in a folder of its own and returns its path.
    pub fn file(&self, yaml: &str) -> String {
        let path = self.dir.join("compose.yaml");
        std::fs::write(&path, yaml).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// `<stack>-<service>-<n>`
    pub fn replica(&self, service: &str, n: u32) -> String {
        format!("{}-{service}-{n}", self.name)
    }

    /// Containers capstan made for this stack: (name, id, state), sorted by name.
    pub fn containers(&self) -> Vec<(String, String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=capstan.stack={}", self.name),
            "--format",
            "{{.Names}}\t{{.ID}}\t{{.State}}",
        ]);
        let mut rows: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|l| {
                let mut p = l.split('\t');
                Some((
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                ))
            })
            .collect();
        rows.sort();
        rows
    }

    /// Replica `n` of `service`'s address on the stack's default network.
    pub fn ip(&self, service: &str, n: u32) -> String {
        let network = format!("{}_default", self.name);
        inspect(
            &self.replica(service, n),
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        )
    }

    pub fn running(&self) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|(_, _, s)| s == "running")
            .map(|(n, _, _)| n)
            .collect()
    }

    pub fn networks(&self) -> Vec<String> {
        lines(&docker(&[
            "network",
            "ls",
            "--filter",
            &format!("label=capstan.stack={}", self.name),
            "--format",
            "{{.Name}}",
        ]))
    }

    pub fn volumes(&self) -> Vec<String> {
        lines(&docker(&[
            "volume",
            "ls",
            "--filter",
            &format!("label=capstan.stack={}", self.name),
            "--format",
            "{{.Name}}",
        ]))
    }
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        // Everything labelled with the stack, and anything the test made under its name.
        let by_label = format!("label=capstan.stack={}", self.name);
        let by_name = format!("name=^{}", self.name);
        let remove_containers = || {
            let mut ids = lines(&docker(&["ps", "-aq", "--filter", &by_label]));
            ids.extend(lines(&docker(&["ps", "-aq", "--filter", &by_name])));
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                docker(&args);
            }
        };
        remove_containers();
        // The engine can take a moment to let go of the endpoints of containers it just
        // removed ("has active endpoints"), longer on a busy engine, and a create the killed
        // daemon had in flight may land late: remove again until nothing is left.
        let networks = || lines(&docker(&["network", "ls", "-q", "--filter", &by_label]));
        let _ = try_until(Duration::from_secs(30), || {
            remove_containers();
            let nets = networks();
            for net in &nets {
                docker(&["network", "rm", net]);
            }
            match networks() {
                left if left.is_empty() => Ok(()),
                left => Err(format!("{left:?}")),
            }
        });
        for vol in lines(&docker(&["volume", "ls", "-q", "--filter", &by_label])) {
            docker(&["volume", "rm", "-f", &vol]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a docker CLI command; returns stdout (failures return what was printed).
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker inspect -f FORMAT TARGET`, trimmed.
pub fn inspect(target: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, target])
        .trim()
        .to_string()
}

/// One test's world. Fields drop in declaration order: the daemon stops first, so it cannot
/// heal what the [`StackGuard`] then removes.
pub struct Harness {
    pub d: Daemon,
    pub etcd: Etcd,
    pub s: StackGuard,
}

impl Harness {
    pub fn start(tag: &str) -> Harness {
        Harness::start_with(tag, &[])
    }

    pub fn start_with(tag: &str, serve_flags: &[&str]) -> Harness {
        let s = StackGuard::new(tag);
        let etcd = Etcd::start();
        let d = Daemon::start_with(&etcd, serve_flags);
        Harness { d, etcd, s }
    }
}

/// A steady HTTP request loop against `url`, one new connection per request, until stopped.
pub struct LoadLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<Sample>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// One request: when the answer came (host clock, ns), its status (0: no answer), its body.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_ns: i64,
    pub status: u16,
    pub body: String,
}

/// Fails unless the loop ran (more than 100 requests) and every request got a 200.
pub fn assert_every_request_answered(samples: &[Sample]) {
    let failures: Vec<&Sample> = samples.iter().filter(|r| r.status != 200).collect();
    assert!(
        samples.len() > 100,
        "the loop ran: {} requests",
        samples.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        samples.len(),
        failures.first()
    );
}

impl LoadLoop {
    pub fn start(url: &str) -> LoadLoop {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let samples = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let url = url.to_string();
        let (flag, sink) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            while !flag.load(Ordering::SeqCst) {
                let (status, body) = match client.get(&url).send() {
                    Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                sink.lock().unwrap().push(Sample {
                    at_ns: now_ns(),
                    status,
                    body: body.trim().to_string(),
                });
                // The loop's pace (about 200 requests a second at most), not a wait for
                // anything: on 2 cores an unpaced loop would starve what it measures.
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        LoadLoop {
            stop,
            samples,
            handle: Some(handle),
        }
    }

    /// The answers that came at or after `at_ns` (host clock), so far.
    pub fn samples_since(&self, at_ns: i64) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at_ns >= at_ns)
            .cloned()
            .collect()
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

impl Drop for LoadLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The host clock in ns (the engine's events use the same clock).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Follows `docker events` for one container live, from before the test acts: the engine only
/// replays its last 256 events, which parallel tests' healthchecks overflow in seconds.
/// Yields (engine time in ns, action) of every event from the call on, with no wait for the
/// subscription: it asks for `--since` the call, and the engine hands over what it buffered
/// since then and subscribes in one step, so the few milliseconds before the stream is live
/// come from that replay.
pub struct Events {
    child: std::process::Child,
    rx: mpsc::Receiver<(i64, String)>,
}

impl Events {
    pub fn follow(container: &str) -> Events {
        let since = now_ns();
        let mut child = Command::new("docker")
            .args([
                "events",
                "--since",
                &format!("{}.{:09}", since / 1_000_000_000, since % 1_000_000_000),
                "--filter",
                &format!("container={container}"),
                "--format",
                "{{.TimeNano}} {{.Action}}",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker events");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((t, action)) = line.split_once(' ') {
                    if let Ok(t) = t.parse() {
                        let _ = tx.send((t, action.to_string()));
                    }
                }
            }
        });
        Events { child, rx }
    }

    /// The engine times of every event so far whose action starts with `prefix`.
    pub fn drain(&self, prefix: &str) -> Vec<i64> {
        self.rx
            .try_iter()
            .filter(|(_, a)| a.starts_with(prefix))
            .map(|(t, _)| t)
            .collect()
    }

    /// The engine time of the next event whose action starts with `prefix`.
    pub fn next(&self, prefix: &str, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, action)) if action.starts_with(prefix) => return t,
                Ok(_) => {}
                Err(_) => panic!("no {prefix:?} event within {timeout:?}"),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes one benchmark's results to `bench/results/<name>.json` (`make bench` merges them).
pub fn write_results(name: &str, results: &serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    let text = serde_json::to_string_pretty(results).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
}

/// The median of some samples (benchmarks).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// (user + system CPU seconds, RSS in MiB) of a process, from /proc (benchmarks).
pub fn cpu_and_rss(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    (cpu, rss / 1024.0)
}

/// Benchmarks need a quiet engine: their figures are meaningless beside other containers, and
/// a busy 2-core engine with a hundred healthchecks can wedge. Panics, listing what runs,
/// unless no container exists (`CAPSTAN_BENCH_ALLOW_BUSY=1` overrides).
pub fn bench_preflight() {
    preflight();
    let others = docker(&["ps", "-a", "--format", "{{.Names}} ({{.Status}})"]);
    if !others.trim().is_empty() && std::env::var_os("CAPSTAN_BENCH_ALLOW_BUSY").is_none() {
        panic!(
            "benchmarks need a quiet engine, but these containers exist:\n{others}\
             remove them (or set CAPSTAN_BENCH_ALLOW_BUSY=1 to measure anyway)"
        );
    }
}

/// Removes every container, then every network, matching a filter (`label=...`) when
/// dropped: what a benchmark made outside capstan (the engine baseline, Compose) is gone also
/// when it panics.
pub struct LeftoverGuard {
    pub filter: String,
}

impl Drop for LeftoverGuard {
    fn drop(&mut self) {
        let ids = lines(&docker(&["ps", "-aq", "--filter", &self.filter]));
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            docker(&args);
        }
        for net in lines(&docker(&["network", "ls", "-q", "--filter", &self.filter])) {
            docker(&["network", "rm", &net]);
        }
    }
}

/// A small seeded random source (SplitMix64) for the chaos tests: print the seed, and
/// `CAPSTAN_CHAOS_SEED` replays a run.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `CAPSTAN_CHAOS_SEED` when set, else from the clock; returns the seed too.
    pub fn from_env() -> (Rng, u64) {
        let seed = std::env::var("CAPSTAN_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_ns() as u64);
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
