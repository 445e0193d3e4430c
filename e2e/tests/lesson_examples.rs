//! The four Compose examples of the lesson capstan grew from apply as written, through the
//! Unix socket with the daemon's defaults: its caller (root here, as in CI) can already do
//! anything through the engine, so it gets the `privileged` profile. Each passes a dry run;
//! Traefik's shape (host port 80, the Docker socket mounted read-write) runs for real with
//! a stand-in image built here (no registry is reachable), and the engine shows the socket
//! mounted and port 80 answering. A `deploy` token gets `baseline`, which refuses the
//! socket, naming the profile and the token; one created with `--policy restricted` is
//! refused a root user.
//!
//! The files are the lesson's, copied here (the repository does not carry the lesson).

use capstan_e2e::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

/// "Example: Scalable Web + Load Balancer + Database Stack".
const WEB_APP_DB: &str = r#"version: "3.9"
services:
  web:
    image: nginx:alpine
    ports:
      - "8080"
    deploy:
      replicas: 3
    networks:
      - frontend

  app:
    image: myapp:latest
    depends_on:
      - db
    environment:
      DB_HOST: db
    networks:
      - frontend
      - backend

  db:
    image: mysql:8
    environment:
      MYSQL_ROOT_PASSWORD: rootpass
      MYSQL_DATABASE: appdb
    volumes:
      - db_data:/var/lib/mysql
    networks:
      - backend

networks:
  frontend:
  backend:

volumes:
  db_data:
"#;

/// "Lab — Horizontal Scaling Simulation", step 1.
const HORIZONTAL: &str = r#"services:
  web:
    image: httpd:alpine
    ports:
      - "8080:80"
"#;

/// "Lab — Scaling with Shared Data".
const SHARED_DATA: &str = r#"services:
  web:
    image: nginx
    volumes:
      - shared_data:/usr/share/nginx/html
    ports:
      - "8080-8082:80"
volumes:
  shared_data:
"#;

/// "Advanced: Scaling with Compose + Traefik".
const TRAEFIK: &str = r#"version: "3.9"
services:
  traefik:
    image: traefik:v2.9
    command:
      - "--providers.docker=true"
      - "--entrypoints.web.address=:80"
    ports:
      - "80:80"
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock

  web:
    image: nginx
    labels:
      - "traefik.http.routers.web.rule=Host(`localhost`)"
      - "traefik.port=80"
    deploy:
      replicas: 3
"#;

const EXAMPLES: [(&str, &str); 4] = [
    ("web + app + db", WEB_APP_DB),
    ("horizontal scaling", HORIZONTAL),
    ("shared data", SHARED_DATA),
    ("traefik", TRAEFIK),
];

fn apply(d: &Daemon, s: &StackGuard, yaml: &str, extra: &[&str]) -> Output {
    let file = s.file(yaml);
    let mut args = vec!["apply", "-f", &file, "--stack", &s.name];
    args.extend_from_slice(extra);
    d.cli(&args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_lessons_four_examples_pass_a_dry_run_through_the_socket_with_the_daemons_defaults() {
    let h = Harness::start("lesson-dry");
    for (what, yaml) in EXAMPLES {
        let revision = h.etcd.revision();
        let out = apply(&h.d, &h.s, yaml, &["--dry-run"]);
        assert!(out.status.success(), "{what}:\n{}", text(&out));
        assert_eq!(h.etcd.revision(), revision, "{what}: a dry run wrote");
    }
}

/// A local image standing in for Traefik: the static busybox serving a page on port 80,
/// whatever arguments the service's `command:` gives it. Removed on drop, also on failure.
struct StandIn {
    tag: String,
    dir: std::path::PathBuf,
}

impl StandIn {
    fn build() -> StandIn {
        let tag = format!("capstan-e2e/traefik-stand-in:{}", free_port());
        let dir = std::env::temp_dir().join(format!("capstan-e2e-standin-{}", free_port()));
        let img = StandIn { tag, dir };
        std::fs::create_dir_all(img.dir.join("www")).unwrap();
        std::fs::copy("/bin/busybox", img.dir.join("busybox"))
            .expect("busybox-static is installed");
        std::fs::write(img.dir.join("www/index.html"), "traefik stand-in\n").unwrap();
        let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
            ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"exec /bin/busybox httpd -f -p 80 -h /www\", \"traefik\"]\n";
        std::fs::write(img.dir.join("Dockerfile"), dockerfile).unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", &img.tag])
            .arg(&img.dir)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("run docker build");
        assert!(out.status.success(), "docker build: {}", text(&out));
        img
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        docker(&["rmi", "-f", &self.tag]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails, saying why, unless host port 80 is free: the test must own it.
fn port_80_is_free() {
    if let Err(e) = TcpListener::bind("0.0.0.0:80") {
        panic!("host port 80 is not free on this machine ({e}): stop what listens on it (ss -ltnp 'sport = :80') and run again");
    }
}

fn get_80() -> Result<String, String> {
    let mut conn = TcpStream::connect("127.0.0.1:80").map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

#[test]
fn traefiks_shape_runs_for_real_with_the_docker_socket_and_host_port_80() {
    port_80_is_free();
    let stand_in = StandIn::build();
    let h = Harness::start("lesson-traefik");
    let yaml = TRAEFIK
        .replace("traefik:v2.9", &stand_in.tag)
        .replace("image: nginx", &format!("image: {IMAGE}"));
    let out = apply(&h.d, &h.s, &yaml, &["--wait", "--timeout", "120s"]);
    assert!(out.status.success(), "{}", text(&out));

    let traefik = h.s.replica("traefik", 1);
    let mounts = inspect(
        &traefik,
        "{{range .Mounts}}{{.Source}} {{.Destination}} {{.RW}};{{end}}",
    );
    assert!(
        mounts.contains("/var/run/docker.sock /var/run/docker.sock true;"),
        "the engine's mounts: {mounts}"
    );
    let ls = docker(&[
        "exec",
        &traefik,
        "/bin/busybox",
        "ls",
        "-l",
        "/var/run/docker.sock",
    ]);
    assert!(ls.starts_with('s'), "a socket inside the container: {ls:?}");

    let answer = wait_for(Duration::from_secs(30), "host port 80 to answer", || {
        get_80().and_then(|a| match a.contains("traefik stand-in") {
            true => Ok(a),
            false => Err(format!("another answer: {a:?}")),
        })
    });
    let status = answer.lines().next().unwrap_or_default();
    assert!(status.ends_with(" 200 OK"), "{answer}");
}

#[test]
fn a_deploy_token_is_refused_the_docker_socket_naming_profile_baseline_and_the_token() {
    let listen = format!("127.0.0.1:{}", free_port());
    let h = Harness::start_with("lesson-token", &["--listen", &listen]);
    let server = format!("http://{listen}");
    let as_token = |token: &str, yaml: &str| {
        let file = h.s.file(yaml);
        Command::new(capstan_bin())
            .args(["apply", "-f", &file, "--stack", &h.s.name, "--dry-run"])
            .env("CAPSTAN_SERVER", &server)
            .env("CAPSTAN_TOKEN", token)
            .output()
            .expect("run capstan")
    };
    let ci = h.d.cli_ok(&["token", "create", "ci", "--role", "deploy"]);
    let out = as_token(ci.trim(), TRAEFIK);
    assert!(
        !out.status.success(),
        "the socket was granted to a deploy token"
    );
    let err = text(&out);
    assert!(
        err.contains("services.traefik.volumes[0]: policy rule bind_mounts (profile baseline, caller token \"ci\"): "),
        "{err}"
    );
    assert!(err.contains("--policy PROFILE"), "how to change it: {err}");
    assert!(!err.contains("policy rule ports"), "any host port: {err}");

    let locked = h.d.cli_ok(&[
        "token",
        "create",
        "locked",
        "--role",
        "deploy",
        "--policy",
        "restricted",
    ]);
    let out = as_token(locked.trim(), HORIZONTAL);
    let err = text(&out);
    assert!(!out.status.success(), "restricted let a root user through");
    assert!(
        err.contains("services.web.user: policy rule run_as_non_root (profile restricted, caller token \"locked\"): "),
        "{err}"
    );
    let user = HORIZONTAL.replace(
        "image: httpd:alpine",
        "image: httpd:alpine\n    user: \"1000\"",
    );
    let out = as_token(locked.trim(), &user);
    assert!(out.status.success(), "{}", text(&out));

    let out = h.d.cli(&[
        "token",
        "create",
        "typo",
        "--role",
        "deploy",
        "--policy",
        "restriced",
    ]);
    assert!(!out.status.success(), "a token with an undefined profile");
    assert!(text(&out).contains("profiles are"), "{}", text(&out));
}
