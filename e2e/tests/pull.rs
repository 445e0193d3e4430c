//! Pulling images from a registry, against a real registry on loopback: Debian's `docker-registry`
//! (Docker Distribution) on a free port under 127.0.0.1, which the engine treats as an
//! insecure-allowed registry, once without auth and once with htpasswd (bcrypt) auth. The
//! local test image is pushed to it, its tag removed from the engine, and a stack naming it
//! applied: the daemon pulls it and the replicas run. Wrong credentials give
//! `ImagePullBackOff` with the registry's words and the password appears nowhere;
//! `pull_policy: never` with a missing image is `ErrImageNeverPull` with no pull;
//! `pull_policy: always` pulls again for a new replica.
//!
//! Every test declares its guards (pushed and pulled tags, the docker client config used
//! to log in, the registry and its storage) before its daemon, so they are removed after
//! it stopped, also when the test fails. The operator's own `~/.docker` is never touched.

use capstan_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "capstan-e2e-pull-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Docker Distribution registry on 127.0.0.1, storage in a temp folder; stopped and its
/// folder removed on drop.
struct Registry {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    /// With `user`/`password` in an htpasswd file (bcrypt, `htpasswd -B`) when given.
    fn start(auth: Option<(&str, &str)>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "the pull tests need {REGISTRY_BIN}: run `make deps` (Debian's docker-registry)"
        );
        let dir = temp_dir("registry");
        let port = free_port();
        let mut reg = Registry {
            dir,
            port,
            child: None,
        };
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            reg.dir.join("storage").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = reg.dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-B", "-b", "-c"])
                .arg(&htpasswd)
                .args([user, password])
                .output()
                .expect("the pull tests need htpasswd: run `make deps` (Debian's apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: capstan-e2e\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = reg.dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(reg.dir.join("registry.log")).unwrap();
        reg.child = Some(
            Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry"),
        );
        let url = format!("http://{}/v2/", reg.host());
        wait_until(Duration::from_secs(20), "the registry to answer", || {
            reqwest::blocking::get(&url)
                .map(|r| r.status().as_u16() == 200 || r.status().as_u16() == 401)
                .unwrap_or(false)
        });
        reg
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tags a test pushed or the daemon pulled, and a docker client config folder of the
/// test's own (for `docker login`): removed on drop.
struct Images {
    refs: Vec<String>,
    client: PathBuf,
}

impl Images {
    fn new() -> Images {
        Images {
            refs: vec![],
            client: temp_dir("client"),
        }
    }

    /// Runs `docker --config <ours> ARGS`; panics with its output unless it succeeds.
    fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .arg("--config")
            .arg(&self.client)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker login` into our own client config (its `auths` entry is base64 `auth`).
    fn login(&self, host: &str, user: &str, password: &str) -> PathBuf {
        let out = Command::new("docker")
            .arg("--config")
            .arg(&self.client)
            .args(["login", host, "-u", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(password.as_bytes())?;
                child.wait_with_output()
            })
            .expect("run docker login");
        assert!(out.status.success(), "docker login to {host} failed");
        self.client.join("config.json")
    }

    /// Tags the local image `local` as `reference` and pushes it.
    fn push(&mut self, local: &str, reference: &str) {
        self.refs.push(reference.to_string());
        self.docker(&["tag", local, reference]);
        self.docker(&["push", reference]);
    }

    /// Removes the tag from the engine (the image stays under its other name).
    fn untag(&self, reference: &str) {
        self.docker(&["rmi", reference]);
        assert!(!present(reference), "{reference} is still on the engine");
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for r in &self.refs {
            docker(&["rmi", "-f", r]);
            // A pull or push also leaves `REPO@sha256:...` references behind.
            let repo = r.rsplit_once(':').map_or(r.as_str(), |(repo, _)| repo);
            let filter = format!("reference={repo}");
            let format = "{{.Repository}}@{{.Digest}}";
            let digests = docker(&[
                "image",
                "ls",
                "--digests",
                "--filter",
                &filter,
                "--format",
                format,
            ]);
            for d in digests.lines().filter(|d| !d.ends_with("<none>")) {
                docker(&["rmi", d]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.client);
    }
}

fn present(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn image_id(target: &str) -> String {
    inspect(target, "{{.Image}}")
}

fn stack(reference: &str, replicas: u32, policy: Option<&str>) -> String {
    let policy = policy.map_or(String::new(), |p| format!("    pull_policy: {p}\n"));
    format!("services:\n  web:\n    image: {reference}\n    scale: {replicas}\n{policy}")
}

/// (reason, message) of the service's `type_` condition.
fn condition(d: &Daemon, s: &StackGuard, type_: &str) -> (String, String) {
    let svc = d.service(&s.name, "web");
    let c = svc["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default();
    (
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// Everything a person or a collector can read of the daemon's answers: `get -o json`,
/// `-o yaml`, `describe`, and the metrics.
fn every_output(d: &Daemon, s: &StackGuard) -> String {
    let mut all = String::new();
    all.push_str(&d.cli_ok(&["get", "services", "--stack", &s.name, "-o", "json"]));
    all.push_str(&d.cli_ok(&["get", "services", "--stack", &s.name, "-o", "yaml"]));
    all.push_str(&d.cli_ok(&["describe", &format!("{}/web", s.name)]));
    all.push_str(&d.metrics());
    all
}

#[test]
fn an_image_only_in_a_registry_without_auth_is_pulled_and_runs() {
    preflight();
    let mut images = Images::new();
    let registry = Registry::start(None);
    let h = Harness::start("pull-open");
    let reference = format!("{}/e2e/web:{}", registry.host(), h.s.name);
    images.push(IMAGE, &reference);
    images.untag(&reference);

    let t = std::time::Instant::now();
    h.d.apply(&h.s, &stack(&reference, 2, None));
    let applied = t.elapsed();
    assert_eq!(h.s.running().len(), 2);
    assert!(present(&reference), "the daemon pulled it");
    assert_eq!(image_id(&h.s.replica("web", 1)), inspect(IMAGE, "{{.Id}}"));
    assert!(h.d.docker_calls("pull") >= 1.0, "the pull is in /metrics");
    // For the record, not asserted: the same pull by the docker CLI.
    images.untag(&reference);
    let t = std::time::Instant::now();
    images.docker(&["pull", "-q", &reference]);
    let metrics = h.d.metrics();
    let op = ["op=\"pull\""];
    let pulls = metric_sum(
        &metrics,
        "capstan_docker_request_duration_seconds_count",
        &op,
    );
    let pulling = metric_sum(&metrics, "capstan_docker_request_duration_seconds_sum", &op);
    eprintln!(
        "apply --wait with a pull, 2 replicas: {applied:?}; the daemon's {pulls} pull(s): {pulling:.3} s; docker pull alone: {:?}",
        t.elapsed()
    );
    assert_eq!(pulls, 1.0, "one pull for both replicas");
}

#[test]
fn with_htpasswd_auth_the_credentials_of_registry_auth_pull_the_image() {
    preflight();
    let (user, password) = ("capstan", "pull-pass-7Hq2xZ");
    let mut images = Images::new();
    let registry = Registry::start(Some((user, password)));
    // `docker login` writes the credentials into our own client config, as base64 `auth`:
    // the very file handed to `serve --registry-auth`.
    let auth_file = images.login(&registry.host(), user, password);
    let auth_path = auth_file.to_string_lossy().into_owned();
    let h = Harness::start_with("pull-auth", &["--registry-auth", &auth_path]);
    let reference = format!("{}/e2e/web:{}", registry.host(), h.s.name);
    images.push(IMAGE, &reference);
    images.untag(&reference);

    h.d.apply(&h.s, &stack(&reference, 1, None));
    assert_eq!(h.s.running().len(), 1);
    assert!(present(&reference));
    let seen = every_output(&h.d, &h.s);
    assert!(
        !seen.contains(password),
        "the password appears in an output"
    );
}

#[test]
fn with_wrong_credentials_the_status_says_image_pull_back_off_with_the_registrys_words() {
    preflight();
    let (user, password) = ("capstan", "right-pass-Qm4vW1");
    let wrong = "wrong-pass-Zr8kT3";
    let mut images = Images::new();
    let registry = Registry::start(Some((user, password)));
    images.login(&registry.host(), user, password);
    let auth = images.client.join("wrong-auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths": {{"http://{}": {{"username": "{user}", "password": "{wrong}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let auth_path = auth.to_string_lossy().into_owned();
    let h = Harness::start_with("pull-wrong", &["--registry-auth", &auth_path]);
    let reference = format!("{}/e2e/web:{}", registry.host(), h.s.name);
    images.push(IMAGE, &reference);
    images.untag(&reference);

    h.d.apply_nowait(&h.s, &stack(&reference, 1, None));
    let (reason, message) = wait_for(Duration::from_secs(60), "ImagePullBackOff", || {
        let c = condition(&h.d, &h.s, "Degraded");
        match c.0 == "ImagePullBackOff" {
            true => Ok(c),
            false => Err(format!("{c:?}")),
        }
    });
    assert_eq!(reason, "ImagePullBackOff");
    eprintln!("Degraded: {reason}: {message}");
    assert!(
        message.contains(&reference) && message.contains("unauthorized"),
        "the registry's words: {message}"
    );
    assert!(h.s.containers().is_empty(), "nothing is created");
    assert!(!present(&reference));
    let seen = every_output(&h.d, &h.s);
    assert!(
        !seen.contains(wrong) && !seen.contains(password),
        "a password appears in an output"
    );
    assert!(
        registry.log().contains("authentication failure")
            || registry.log().contains("invalid")
            || registry.log().contains("401"),
        "the registry refused the daemon's credentials"
    );
}

#[test]
fn pull_policy_never_with_a_missing_image_says_so_and_pulls_nothing() {
    preflight();
    let registry = Registry::start(None);
    let h = Harness::start("pull-never");
    let reference = format!("{}/e2e/absent:{}", registry.host(), h.s.name);

    h.d.apply_nowait(&h.s, &stack(&reference, 1, Some("never")));
    let (_, message) = wait_for(Duration::from_secs(60), "ErrImageNeverPull", || {
        let c = condition(&h.d, &h.s, "Degraded");
        match c.0 == "ErrImageNeverPull" {
            true => Ok(c),
            false => Err(format!("{c:?}")),
        }
    });
    assert!(
        message.contains(&reference) && message.contains("never"),
        "{message}"
    );
    assert!(h.s.containers().is_empty());
    assert!(!present(&reference));
    assert_eq!(h.d.docker_calls("pull"), 0.0, "no pull was tried");
    assert!(
        !registry.log().contains("/v2/e2e/absent"),
        "the registry was never asked"
    );
}

#[test]
fn pull_policy_always_pulls_again_for_a_new_replica() {
    preflight();
    let mut images = Images::new();
    let registry = Registry::start(None);
    let h = Harness::start("pull-always");
    let reference = format!("{}/e2e/web:{}", registry.host(), h.s.name);
    images.push(IMAGE, &reference);

    h.d.apply(&h.s, &stack(&reference, 1, Some("always")));
    let v1 = inspect(IMAGE, "{{.Id}}");
    let v2 = inspect(IMAGE_V2, "{{.Id}}");
    assert_eq!(image_id(&h.s.replica("web", 1)), v1);

    // The registry moves on to v2, while the engine's tag still names v1.
    images.push(IMAGE_V2, &reference);
    images.docker(&["tag", IMAGE, &reference]);
    assert_eq!(inspect(&reference, "{{.Id}}"), v1);

    h.d.cli_ok(&["scale", &format!("{}/web=2", h.s.name)]);
    wait_until(Duration::from_secs(60), "replica 2 to run", || {
        h.s.running().len() == 2
    });
    assert_eq!(
        image_id(&h.s.replica("web", 2)),
        v2,
        "pulled again before replica 2 was made"
    );
    assert_eq!(inspect(&reference, "{{.Id}}"), v2);
    assert_eq!(
        image_id(&h.s.replica("web", 1)),
        v1,
        "replica 1 is left alone"
    );
}
