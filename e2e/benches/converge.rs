//! Convergence (issue 6): N replicas of capstan-demo/web:1 from nothing to all ready, and
//! from N back to 0, medians of 3 runs, side by side:
//! - capstan: `capstan apply` until the API reports N ready with N endpoints registered;
//! - the engine's own limit: the same N containers (same image, on a network of their own with
//!   the service's DNS alias, as capstan and Compose make them) created and started through
//!   the Docker API with full concurrency by this benchmark, until the engine reports all N
//!   healthy;
//! - Compose: `docker-compose up -d --scale web=N` (Debian's 1.29) until all N are healthy.
//!
//! Scale-down: capstan to 0 replicas; the engine removing all N at once; Compose `--scale web=0`.
//! Writes `bench/results/converge.json`.

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use capstan_e2e::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const POLL: Duration = Duration::from_millis(50);

fn healthy_count(filter: &str) -> usize {
    docker(&["ps", "-q", "--filter", filter, "--filter", "health=healthy"])
        .lines()
        .count()
}

fn count(filter: &str) -> usize {
    docker(&["ps", "-aq", "--filter", filter]).lines().count()
}

/// The engine goes on cleaning up after removals (unmounts, network teardown) for a moment
/// after it answered: give it that moment, so no contender pays for the one before.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

/// capstan: (up, down) seconds.
fn capstan_run(d: &Daemon, s: &StackGuard, n: usize) -> (f64, f64) {
    let svc = || d.service(&s.name, "web");
    let endpoints = || -> usize {
        let v: serde_json::Value = reqwest::blocking::get(format!(
            "{}/v1/stacks/{}/services/web/endpoints",
            d.url(),
            s.name
        ))
        .unwrap()
        .json()
        .unwrap();
        v["endpoints"].as_array().map_or(0, |a| a.len())
    };
    let t = Instant::now();
    d.apply_nowait(
        s,
        &format!("services:\n  web:\n    image: {IMAGE}\n    scale: {n}\n"),
    );
    loop {
        let v = svc();
        if v["ready"] == n && v["observedGeneration"] == v["generation"] && endpoints() == n {
            break;
        }
        std::thread::sleep(POLL);
    }
    let up = t.elapsed().as_secs_f64();
    let t = Instant::now();
    d.cli_ok(&["scale", &format!("{}/web=0", s.name)]);
    while count(&format!("label=capstan.stack={}", s.name)) > 0 {
        std::thread::sleep(POLL);
    }
    (up, t.elapsed().as_secs_f64())
}

/// The engine alone, through its API with every container in flight at once.
fn engine_run(rt: &tokio::runtime::Runtime, n: usize, tag: &str) -> (f64, f64) {
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_socket_defaults()
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
        let label = format!("capstan-bench={tag}");
        let labels = HashMap::from([("capstan-bench".to_string(), tag.to_string())]);
        let network = format!("{tag}_default");
        let t = Instant::now();
        docker
            .create_network(bollard::models::NetworkCreateRequest {
                name: network.clone(),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let jobs = (0..n).map(|i| {
            let docker = docker.clone();
            let tag = tag.to_string();
            let (labels, network) = (labels.clone(), network.clone());
            async move {
                let endpoint = bollard::models::EndpointSettings {
                    aliases: Some(vec!["web".into()]),
                    ..Default::default()
                };
                let body = bollard::models::ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    labels: Some(labels),
                    networking_config: Some(bollard::models::NetworkingConfig {
                        endpoints_config: Some(HashMap::from([(network, endpoint)])),
                    }),
                    ..Default::default()
                };
                let name = format!("{tag}-{i}");
                let id = docker
                    .create_container(
                        Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                        body,
                    )
                    .await
                    .unwrap()
                    .id;
                docker.start_container(&id, None).await.unwrap();
            }
        });
        futures::future::join_all(jobs).await;
        while healthy_count(&format!("label={label}")) < n {
            tokio::time::sleep(POLL).await;
        }
        let up = t.elapsed().as_secs_f64();
        let filters = HashMap::from([("label".to_string(), vec![label.clone()])]);
        let ids: Vec<String> = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        let t = Instant::now();
        let removals = ids.iter().map(|id| {
            docker.remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
        });
        futures::future::join_all(removals).await;
        docker.remove_network(&network).await.unwrap();
        (up, t.elapsed().as_secs_f64())
    })
}

/// Compose v1, as a user runs it.
fn compose_run(dir: &std::path::Path, project: &str, n: usize) -> (f64, f64) {
    let compose = |args: &[&str]| {
        let out = Command::new("docker-compose")
            .arg("-p")
            .arg(project)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("docker-compose (Debian's docker-compose)");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let filter = format!("label=com.docker.compose.project={project}");
    let t = Instant::now();
    compose(&["up", "-d", "--scale", &format!("web={n}")]);
    while healthy_count(&filter) < n {
        std::thread::sleep(POLL);
    }
    let up = t.elapsed().as_secs_f64();
    let t = Instant::now();
    compose(&["up", "-d", "--scale", "web=0"]);
    while count(&filter) > 0 {
        std::thread::sleep(POLL);
    }
    let down = t.elapsed().as_secs_f64();
    compose(&["down"]);
    (up, down)
}

/// The Compose project's directory; `docker-compose down` and removal when dropped.
struct ComposeProject {
    dir: std::path::PathBuf,
    name: String,
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.name, "down", "-v"])
            .current_dir(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    bench_preflight();
    let h = Harness::start_with("bench-conv", &["--resync", "30s"]);
    let (d, s) = (&h.d, &h.s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let compose = ComposeProject {
        dir: std::env::temp_dir().join(format!("capstan-bench-compose-{}", std::process::id())),
        name: format!("{}c", s.name.replace('-', "")),
    };
    std::fs::create_dir_all(&compose.dir).unwrap();
    std::fs::write(
        compose.dir.join("docker-compose.yml"),
        format!("version: \"2.4\"\nservices:\n  web:\n    image: {IMAGE}\n"),
    )
    .unwrap();
    let engine_tag = format!("{}-engine", s.name);
    // Dropped before the Compose project (declared later), which then removes its network.
    let _leftovers = [
        LeftoverGuard {
            filter: format!("label=capstan-bench={engine_tag}"),
        },
        LeftoverGuard {
            filter: format!("label=com.docker.compose.project={}", compose.name),
        },
    ];

    let mut results = serde_json::Map::new();
    println!("convergence, medians of {RUNS} runs (all ready, healthcheck every 2 s; capstan also with endpoints registered)");
    println!(
        "  {:>4}  {:>10} {:>10} {:>10}  {:>14} {:>15}",
        "N", "capstan s", "engine s", "compose s", "capstan/engine", "capstan/compose"
    );
    for n in [20usize, 50] {
        let (mut cu, mut cd, mut eu, mut ed, mut ku, mut kd) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            settle();
            let (u, dn) = engine_run(&rt, n, &engine_tag);
            eu.push(u);
            ed.push(dn);
            settle();
            let (u, dn) = capstan_run(d, s, n);
            cu.push(u);
            cd.push(dn);
            settle();
            let (u, dn) = compose_run(&compose.dir, &compose.name, n);
            ku.push(u);
            kd.push(dn);
        }
        let samples = serde_json::json!({
            "up": {"capstan": &cu, "engine": &eu, "compose": &ku},
            "down": {"capstan": &cd, "engine": &ed, "compose": &kd},
        });
        let (cu, cd, eu, ed, ku, kd) = (
            median(cu),
            median(cd),
            median(eu),
            median(ed),
            median(ku),
            median(kd),
        );
        println!(
            "  {:>4}  {:>10.2} {:>10.2} {:>10.2}  {:>14.2} {:>15.2}   up (targets: <= 1.15, < 1)",
            n,
            cu,
            eu,
            ku,
            cu / eu,
            cu / ku
        );
        println!(
            "  {:>4}  {:>10.2} {:>10.2} {:>10.2}  {:>14.2} {:>15.2}   down to 0",
            n,
            cd,
            ed,
            kd,
            cd / ed,
            cd / kd
        );
        results.insert(
            n.to_string(),
            serde_json::json!({"up": {"capstan": cu, "engine": eu, "compose": ku}, "down": {"capstan": cd, "engine": ed, "compose": kd}, "samples": samples}),
        );
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("converge.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}
