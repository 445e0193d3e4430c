//! Services built from source (`build:`): the client packs the context, the daemon builds it with the
//! engine's classic builder, the replicas run the built image. Real Docker, real etcd.

use capstan_e2e::*;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Removes every image built for the tracked stacks (by label) and every intermediate image
/// a build printed (` ---> <id>`), also when the test fails. Declared before the [`Harness`]
/// so that it drops after it: the replicas using the images are gone by then.
#[derive(Default)]
struct Images {
    stacks: RefCell<Vec<String>>,
    ids: RefCell<Vec<String>>,
}

impl Images {
    fn track(&self, stack: &str) {
        self.stacks.borrow_mut().push(stack.to_string());
    }

    /// Remembers the image ids a build's output names.
    fn seen(&self, out: &Output) {
        let text = String::from_utf8_lossy(&out.stderr);
        for line in text.lines() {
            if let Some(id) = line.trim().strip_prefix("---> ") {
                if id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                    self.ids.borrow_mut().push(id.to_string());
                }
            }
        }
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for stack in self.stacks.borrow().iter() {
            let filter = format!("label=capstan.build.stack={stack}");
            for id in docker(&["images", "-q", "--filter", &filter]).lines() {
                docker(&["rmi", "-f", id.trim()]);
            }
        }
        for id in self.ids.borrow().iter().rev() {
            docker(&["rmi", id]);
        }
    }
}

/// A build context in the stack's folder: the static busybox, a Dockerfile copying the whole
/// context to `/ctx`, `msg.txt`, and `ignored.txt` that `.dockerignore` leaves out.
fn context(compose: &str, dockerfile: &str) -> PathBuf {
    let dir = Path::new(compose).parent().unwrap().join("ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).expect("busybox-static is installed");
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("msg.txt"), "v1\n").unwrap();
    std::fs::write(dir.join("ignored.txt"), "must not be sent\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "# test\nignored.*\n!msg.txt\n").unwrap();
    dir
}

const DOCKERFILE: &str =
    "FROM scratch\nCOPY . /ctx/\nCMD [\"/ctx/busybox\", \"sleep\", \"3600\"]\n";

const STACK: &str = "services:\n  app:\n    build: ./ctx\n    deploy:\n      replicas: 2\n";

fn apply(h: &Harness, file: &str) -> Output {
    h.d.cli(&[
        "apply",
        "-f",
        file,
        "--stack",
        &h.s.name,
        "--wait",
        "--timeout",
        "120s",
    ])
}

fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Build requests the daemon answered (`POST /v1/builds`, `/metrics`): the client sends one
/// only for a context whose tag the engine does not hold yet.
fn builds(d: &Daemon) -> f64 {
    d.api_requests("build")
}

#[test]
fn a_built_service_runs_its_image_an_unchanged_context_is_not_rebuilt_and_a_change_rolls_out() {
    let images = Images::default();
    let h = Harness::start("build");
    images.track(&h.s.name);
    let file = h.s.file(STACK);
    let ctx = context(&file, DOCKERFILE);

    let first = apply(&h, &file);
    images.seen(&first);
    let stderr = assert_ok(&first);
    assert!(
        stderr.contains(" : COPY . /ctx/") && stderr.contains("Step 2/"),
        "progress is shown: {stderr}"
    );
    let svc = h.d.service(&h.s.name, "app");
    let tag = svc["image"].as_str().unwrap().to_string();
    let prefix = format!("capstan.local/{}/app:", h.s.name);
    assert!(
        tag.starts_with(&prefix) && tag.len() == prefix.len() + 16,
        "{tag}"
    );
    for n in 1..=2 {
        assert_eq!(inspect(&h.s.replica("app", n), "{{.Config.Image}}"), tag);
    }
    let replica = h.s.replica("app", 1);
    assert_eq!(
        docker(&["exec", &replica, "/ctx/busybox", "cat", "/ctx/msg.txt"]),
        "v1\n"
    );
    let listing = docker(&["exec", &replica, "/ctx/busybox", "ls", "-a", "/ctx"]);
    assert!(
        !listing.contains("ignored.txt"),
        ".dockerignore honoured: {listing}"
    );
    assert!(
        listing.contains(".dockerignore") && listing.contains("Dockerfile"),
        "{listing}"
    );
    let compose_name = format!("{}-app", h.s.name);
    assert_eq!(
        inspect(&compose_name, "{{.Id}}"),
        inspect(&tag, "{{.Id}}"),
        "without `image`, the image is also named <stack>-<service>, as Compose v2 names it"
    );
    let yaml =
        h.d.cli_ok(&["get", "services", "--stack", &h.s.name, "-o", "yaml"]);
    assert!(
        yaml.contains("digest: sha256:"),
        "the stored spec says it is built: {yaml}"
    );
    let generation = svc["generation"].clone();
    assert_eq!(builds(&h.d), 1.0);

    let again = apply(&h, &file);
    let stderr = assert_ok(&again);
    assert!(stderr.contains("up to date, not built"), "{stderr}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));
    assert_eq!(builds(&h.d), 1.0, "no second build call reached the daemon");
    assert_eq!(h.d.service(&h.s.name, "app")["generation"], generation);

    std::fs::write(ctx.join("msg.txt"), "v2\n").unwrap();
    let changed = apply(&h, &file);
    images.seen(&changed);
    assert_ok(&changed);
    let svc = h.d.service(&h.s.name, "app");
    let new_tag = svc["image"].as_str().unwrap().to_string();
    assert_ne!(new_tag, tag, "a changed file is a new tag");
    assert!(new_tag.starts_with(&prefix));
    assert_ne!(svc["generation"], generation, "and a rollout");
    for n in 1..=2 {
        let r = h.s.replica("app", n);
        assert_eq!(inspect(&r, "{{.Config.Image}}"), new_tag);
        assert_eq!(
            docker(&["exec", &r, "/ctx/busybox", "cat", "/ctx/msg.txt"]),
            "v2\n"
        );
    }
}

#[test]
fn a_failing_build_step_exits_non_zero_shows_the_step_and_its_output_and_stores_nothing() {
    let images = Images::default();
    let h = Harness::start("buildfail");
    images.track(&h.s.name);
    let file = h.s.file(STACK);
    context(
        &file,
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo the-step-said-this; exit 3\"]\n",
    );
    let out = apply(&h, &file);
    images.seen(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the-step-said-this"),
        "the step's output: {stderr}"
    );
    assert!(
        stderr.contains("the build failed at Step 3/")
            && stderr.contains(" : RUN [\"/bin/busybox\""),
        "the failing step is named: {stderr}"
    );
    assert!(stderr.contains("non-zero code: 3"), "{stderr}");
    let stacks = h.d.cli_ok(&["get", "stacks", "-o", "json"]);
    assert!(!stacks.contains(&h.s.name), "nothing stored: {stacks}");
    assert!(h.s.containers().is_empty());
}

#[test]
fn a_context_over_the_limit_is_refused_naming_the_limit_by_the_client_and_the_daemon() {
    let images = Images::default();
    let h = Harness::start_with("buildlimit", &["--max-build-context", "4k"]);
    images.track(&h.s.name);
    let file = h.s.file(STACK);
    context(&file, DOCKERFILE);
    let out = apply(&h, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("over the daemon's limit of 4096 bytes"),
        "{stderr}"
    );
    assert!(stderr.contains("--max-build-context"), "{stderr}");
    assert_eq!(builds(&h.d), 0.0, "nothing was uploaded");

    // The daemon refuses by itself too, when a client sends more than the limit.
    let options = serde_json::json!({
        "stack": h.s.name, "service": "app",
        "tag": format!("capstan.local/{}/app:0123456789abcdef", h.s.name),
        "spec": {"context": "/x"},
    });
    let resp = (h.d.api().post(format!("{API}/v1/builds")))
        .query(&[("options", options.to_string())])
        .body(vec![0u8; 8192])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = resp.json().unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("limit of 4096 bytes"),
        "{body}"
    );
    let stacks = h.d.cli_ok(&["get", "stacks", "-o", "json"]);
    assert!(!stacks.contains(&h.s.name), "nothing stored: {stacks}");
}

#[test]
fn capstan_build_builds_without_applying_and_names_the_image_as_compose_does() {
    let images = Images::default();
    let h = Harness::start("buildonly");
    images.track(&h.s.name);
    let (name, extra) = (
        format!("{}-named/app:v1", h.s.name),
        format!("{}-extra/app:v1", h.s.name),
    );
    let file = h.s.file(&format!(
        "services:\n  app:\n    image: {name}\n    build:\n      context: ./ctx\n      tags: [\"{extra}\"]\n"
    ));
    context(&file, DOCKERFILE);

    let out =
        h.d.cli(&["build", "-f", &file, "--stack", &h.s.name, "app"]);
    images.seen(&out);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let tag = stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(tag.starts_with("capstan.local/"), "{stdout}");
    let id = inspect(&tag, "{{.Id}}");
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        id,
        "`image` names the built image"
    );
    assert_eq!(
        inspect(&extra, "{{.Id}}"),
        id,
        "and so does each of `build.tags`"
    );
    let stacks = h.d.cli_ok(&["get", "stacks", "-o", "json"]);
    assert!(
        !stacks.contains(&h.s.name),
        "build applies nothing: {stacks}"
    );

    let out =
        h.d.cli(&["build", "-f", &file, "--stack", &h.s.name, "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no `build:`"));

    let applied = apply(&h, &file);
    let stderr = assert_ok(&applied);
    assert!(stderr.contains("up to date, not built"), "{stderr}");
    assert_eq!(builds(&h.d), 1.0);
    assert_eq!(inspect(&h.s.replica("app", 1), "{{.Config.Image}}"), tag);
}
