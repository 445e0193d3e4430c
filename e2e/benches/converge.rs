//! Convergence (issue 6): N replicas of capstan-demo/web:1 from nothing to all ready, and
//! from N back to 0. The contenders run interleaved, as a user comparing them on one quiet
//! engine would: per N, pair after pair of (engine, capstan), with one Compose run after each
//! pair, so slow phases of the machine hit both sides of a pair alike. Every contender runs
//! the service's healthcheck every 1 s (the image's test, timeout and retries):
//! - engine: the same N containers (same image, on a fresh network of their own with the
//!   service's DNS alias, as capstan and Compose make them) created and started through the
//!   Docker API with full concurrency by this benchmark, until the engine reports all N
//!   healthy;
//! - capstan: `capstan apply` of a fresh stack (so a fresh network) until the API reports N
//!   ready with N endpoints registered; also recorded: when the engine itself saw all N
//!   healthy (the rest is capstan's reporting delay);
//! - Compose: `docker-compose up -d --scale web=N` (Debian's 1.29) until all N are healthy.
//!
//! Every run is watched alike, without polling: the engine's events tell when N were healthy
//! at once (the up figure of the engine and Compose); capstan
//! is followed through its endpoints stream, then its service view is read until N are ready
//! (`CAPSTAN_BENCH_OBSERVE=poll` polls the view every 50 ms instead, as a `capstan get` loop
//! would: each poll reads etcd, which shares the 2 cores with the engine).
//!
//! Scale-down: capstan to 0 replicas; the engine removing all N at once; Compose `--scale web=0`.
//!
//! Reported: medians over the pairs, the capstan/engine ratio of each pair and their median.
//! Writes `bench/results/converge.json` with every sample, and per capstan run the Docker
//! API calls it made (`capstan_docker_request_duration_seconds` count and sum by op, diffed),
//! its etcd requests and heal actions, and the CPU its daemon and etcd used meanwhile.
//!
//! Knobs (environment): `CAPSTAN_BENCH_PAIRS` (default 3), `CAPSTAN_BENCH_N` (default
//! `20,50`), `CAPSTAN_BENCH_EVENTS=DIR`: record a `docker events` timeline of every run
//! (`DIR/<N>-<contender>-<pair>.jsonl`, with `{"bench":...}` marker lines) and keep the
//! daemon's debug log there.

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use capstan_e2e::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(50);
/// The service's healthcheck interval, for every contender.
const HEALTH_INTERVAL_NS: i64 = 1_000_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sizes() -> Vec<usize> {
    std::env::var("CAPSTAN_BENCH_N")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![20, 50])
}

fn count(filter: &str) -> usize {
    docker(&["ps", "-aq", "--filter", filter]).lines().count()
}

/// Watches the engine for `n` containers matching a label filter to be healthy at once, from
/// its events (`health_status`, and `die`/`destroy`, which end a container's health: a
/// replica capstan restarts or replaces counts again only once healthy again): no polling, so
/// no contender's engine pays for being watched, and the time is the engine's own. Subscribed
/// before the run starts.
struct HealthWatch {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<(i64, String, bool)>,
    n: usize,
}

impl HealthWatch {
    fn start(label: &str, n: usize) -> HealthWatch {
        let mut child = Command::new("docker")
            .args(["events", "--filter", "type=container"])
            .args(["--filter", "event=health_status", "--filter", "event=die"])
            .args(["--filter", "event=destroy", "--filter"])
            .arg(format!("label={label}"))
            .args(["--format", "{{.TimeNano}} {{.ID}} {{.Action}}"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut f = line.splitn(3, ' ');
                let (Some(t), Some(id), Some(action)) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                if let Ok(t) = t.parse() {
                    let healthy = action.trim() == "health_status: healthy";
                    let _ = tx.send((t, id.to_string(), healthy));
                }
            }
        });
        // `docker events` subscribes asynchronously; give it a moment before the run starts.
        std::thread::sleep(Duration::from_millis(300));
        HealthWatch { child, rx, n }
    }

    /// Seconds from `t0_ns` (host clock, as the engine's) until `n` were healthy at once;
    /// marked in `tl`.
    fn wait(self, t0_ns: i64, tl: &mut Option<Timeline>) -> f64 {
        let mut healthy = std::collections::HashSet::new();
        let mut at = t0_ns;
        while healthy.len() < self.n {
            let (t, id, is_healthy) = self
                .rx
                .recv_timeout(Duration::from_secs(600))
                .unwrap_or_else(|_| panic!("not {} healthy at once within 600 s", self.n));
            if is_healthy {
                healthy.insert(id);
            } else {
                healthy.remove(&id);
            }
            at = t;
        }
        Timeline::mark_at(tl, "engine-healthy", at);
        (at - t0_ns) as f64 / 1e9
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The engine goes on cleaning up after removals (unmounts, network teardown) for a moment
/// after it answered: give it that moment, so no contender pays for the one before.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

/// A `docker events` recording (containers and networks) of one run, with marker lines, when
/// `CAPSTAN_BENCH_EVENTS` names a folder.
struct Timeline {
    child: std::process::Child,
    file: std::fs::File,
}

impl Timeline {
    fn start(dir: Option<&Path>, name: &str) -> Option<Timeline> {
        let dir = dir?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.jsonl")))
            .unwrap();
        let child = Command::new("docker")
            .args(["events", "--format", "{{json .}}"])
            .args(["--filter", "type=container", "--filter", "type=network"])
            .stdout(file.try_clone().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        // `docker events` subscribes asynchronously; give it a moment before acting.
        std::thread::sleep(Duration::from_millis(300));
        Some(Timeline { child, file })
    }

    fn mark(tl: &mut Option<Timeline>, what: &str) {
        Timeline::mark_at(tl, what, now_ns());
    }

    fn mark_at(tl: &mut Option<Timeline>, what: &str, at_ns: i64) {
        if let Some(tl) = tl {
            let _ = writeln!(
                tl.file,
                "{}",
                serde_json::json!({"bench": what, "timeNano": at_ns})
            );
        }
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        // Let the last events arrive before the recording stops.
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's counters that tell what it asked of the engine and of itself.
fn counters(d: &Daemon) -> BTreeMap<String, f64> {
    let text = reqwest::blocking::get(format!("{}/metrics", d.url()))
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("capstan_docker_request_duration_seconds_count")
                || l.starts_with("capstan_docker_request_duration_seconds_sum")
                || l.starts_with("capstan_reconciles_total")
                || l.starts_with("capstan_etcd_request_duration_seconds_count")
                || l.starts_with("capstan_heal_actions")
        })
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn diff(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> serde_json::Value {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), serde_json::json!(d)))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// CPU seconds used so far by capstan's daemon and by its etcd (this benchmark's children):
/// they share the 2 cores with the engine while it converges.
fn daemon_and_etcd_cpu(d: &Daemon) -> (f64, f64) {
    let daemon = d.pid().map_or(0.0, |pid| cpu_and_rss(pid).0);
    let me = std::process::id().to_string();
    let etcd = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            if !head.ends_with("(etcd") || f.get(1) != Some(&me.as_str()) {
                return None;
            }
            Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / 100.0)
        })
        .sum();
    (daemon, etcd)
}

/// `CAPSTAN_BENCH_OBSERVE=poll`: watch capstan as `capstan get` in a loop would, polling its
/// service view every 50 ms. That view is read from etcd (linearizable: stack, services and
/// statuses, three requests), so the observer costs etcd CPU that the engine's observer (its
/// events) does not. By default the endpoints stream (served from capstan's cache) is
/// followed until N are registered, then the service view is read until N are ready.
fn observe_by_polling() -> bool {
    std::env::var("CAPSTAN_BENCH_OBSERVE").is_ok_and(|v| v == "poll")
}

/// Follows `url?watch=true` (server-sent events) until it lists `n` endpoints.
fn wait_endpoints(client: reqwest::blocking::Client, url: &str, n: usize) {
    let (tx, rx) = std::sync::mpsc::channel();
    let stream = format!("{url}?watch=true");
    std::thread::spawn(move || {
        use std::io::BufRead;
        loop {
            // 404 until the daemon's cache has the service the apply just wrote.
            let resp = match client.get(&stream).send() {
                Ok(r) if r.status().is_success() => r,
                _ => {
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            for line in std::io::BufReader::new(resp).lines().map_while(Result::ok) {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
                let listed = v["endpoints"].as_array().map_or(0, |a| a.len());
                if tx.send(listed).is_err() {
                    return;
                }
            }
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(listed) if listed >= n => return,
            Ok(_) => {}
            Err(_) => panic!("{url}: not {n} endpoints within 600 s"),
        }
    }
}

/// One contender's run: up and down seconds, and what else it tells.
struct Run {
    up: f64,
    down: f64,
    extra: serde_json::Value,
}

/// capstan, on a fresh stack (so a fresh network). The guard goes into `stacks`, which
/// outlives the daemon.
fn capstan_run(
    d: &Daemon,
    stacks: &mut Vec<StackGuard>,
    n: usize,
    mut tl: Option<Timeline>,
) -> Run {
    stacks.push(StackGuard::new("bench-conv"));
    let s = stacks.last().unwrap();
    let http = d.api();
    let get = |path: &str| -> serde_json::Value {
        http.get(format!("{API}/v1/stacks/{}/services/web{path}", s.name))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default()
    };
    let filter = format!("label=capstan.stack={}", s.name);
    let file = s.file(&format!(
        "services:\n  web:\n    image: {IMAGE}\n    scale: {n}\n    healthcheck:\n      interval: 1s\n"
    ));
    let before = counters(d);
    let cpu_before = daemon_and_etcd_cpu(d);
    let watch = HealthWatch::start(&format!("capstan.stack={}", s.name), n);
    Timeline::mark(&mut tl, "apply");
    let (t, t0_ns) = (Instant::now(), now_ns());
    d.cli_ok(&["apply", "-f", &file, "--stack", &s.name]);
    // Ready as capstan's API reports it (what `capstan get` shows): N ready at the current
    // generation, N endpoints registered.
    let ready = || {
        let v = get("");
        v["ready"] == n && v["observedGeneration"] == v["generation"]
    };
    let endpoints = || {
        get("/endpoints")["endpoints"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    if observe_by_polling() {
        while !(ready() && endpoints() == n) {
            std::thread::sleep(POLL);
        }
    } else {
        wait_endpoints(
            d.api_without_timeout(),
            &format!("{API}/v1/stacks/{}/services/web/endpoints", s.name),
            n,
        );
        while !ready() {
            std::thread::sleep(POLL);
        }
    }
    let up = t.elapsed().as_secs_f64();
    Timeline::mark(&mut tl, "ready");
    let engine_healthy = watch.wait(t0_ns, &mut tl);
    let cpu_after = daemon_and_etcd_cpu(d);
    let ops = diff(&before, &counters(d));
    let t = Instant::now();
    Timeline::mark(&mut tl, "down");
    d.cli_ok(&["scale", &format!("{}/web=0", s.name)]);
    while count(&filter) > 0 {
        std::thread::sleep(POLL);
    }
    let down = t.elapsed().as_secs_f64();
    Timeline::mark(&mut tl, "gone");
    drop(tl);
    // The stack's network goes too, and the daemon forgets the stack.
    d.cli_ok(&["delete", &s.name]);
    Run {
        up,
        down,
        extra: serde_json::json!({
            "stack": s.name,
            "engine_healthy": engine_healthy,
            "docker_ops_up": ops,
            "daemon_cpu_s_up": cpu_after.0 - cpu_before.0,
            "etcd_cpu_s_up": cpu_after.1 - cpu_before.1,
        }),
    }
}

/// The engine alone, through its API with every container in flight at once, on a fresh
/// network `<tag>-<run>_default` (`run`: N * 100 + pair).
fn engine_run(
    rt: &tokio::runtime::Runtime,
    n: usize,
    tag: &str,
    run: usize,
    mut tl: Option<Timeline>,
) -> Run {
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_socket_defaults()
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
        let label = format!("capstan-bench={tag}");
        let labels = HashMap::from([
            ("capstan-bench".to_string(), tag.to_string()),
            ("capstan-bench-run".to_string(), format!("{tag}-{run}")),
        ]);
        let network = format!("{tag}-{run}_default");
        let watch = HealthWatch::start(&format!("capstan-bench-run={tag}-{run}"), n);
        Timeline::mark(&mut tl, "apply");
        let t0_ns = now_ns();
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
            let (labels, network) = (labels.clone(), network.clone());
            let name = format!("{tag}-{run}-{i}");
            async move {
                let endpoint = bollard::models::EndpointSettings {
                    aliases: Some(vec!["web".into()]),
                    ..Default::default()
                };
                let body = bollard::models::ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    labels: Some(labels),
                    // The image's test, timeout and retries; only the interval is the service's.
                    healthcheck: Some(bollard::models::HealthConfig {
                        interval: Some(HEALTH_INTERVAL_NS),
                        ..Default::default()
                    }),
                    networking_config: Some(bollard::models::NetworkingConfig {
                        endpoints_config: Some(HashMap::from([(network, endpoint)])),
                    }),
                    ..Default::default()
                };
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
        let up = watch.wait(t0_ns, &mut tl);
        Timeline::mark(&mut tl, "ready");
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
        Timeline::mark(&mut tl, "down");
        let t = Instant::now();
        let removals = ids.iter().map(|id| {
            docker.remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
        });
        futures::future::join_all(removals).await;
        // The engine may answer 403 "has active endpoints" for a moment after force-removing
        // the containers of a network: retry, and leave a network it keeps to the guard.
        let removing = Instant::now();
        while let Err(e) = docker.remove_network(&network).await {
            if removing.elapsed() > Duration::from_secs(10) {
                eprintln!("warning: network {network} not removed: {e}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let down = t.elapsed().as_secs_f64();
        Timeline::mark(&mut tl, "gone");
        Run {
            up,
            down,
            extra: serde_json::json!({"network": network}),
        }
    })
}

/// Compose v1, as a user runs it.
fn compose_run(dir: &Path, project: &str, n: usize, mut tl: Option<Timeline>) -> Run {
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
    let watch = HealthWatch::start(&format!("com.docker.compose.project={project}"), n);
    Timeline::mark(&mut tl, "apply");
    let t0_ns = now_ns();
    compose(&["up", "-d", "--scale", &format!("web={n}")]);
    let up = watch.wait(t0_ns, &mut tl);
    Timeline::mark(&mut tl, "ready");
    let t = Instant::now();
    compose(&["up", "-d", "--scale", "web=0"]);
    while count(&filter) > 0 {
        std::thread::sleep(POLL);
    }
    let down = t.elapsed().as_secs_f64();
    Timeline::mark(&mut tl, "gone");
    // Removes the network: the next run makes a fresh one.
    compose(&["down"]);
    Run {
        up,
        down,
        extra: serde_json::json!({}),
    }
}

/// The Compose project's directory; `docker-compose down` and removal when dropped.
struct ComposeProject {
    dir: PathBuf,
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
    let pairs: usize = env_or("CAPSTAN_BENCH_PAIRS", 3).max(1);
    let events_dir = std::env::var_os("CAPSTAN_BENCH_EVENTS").map(PathBuf::from);
    if let Some(dir) = &events_dir {
        std::fs::create_dir_all(dir).unwrap();
    }
    // Declared before the daemon, so dropped after it: nothing heals what they remove.
    let mut stacks: Vec<StackGuard> = vec![];
    let h = Harness::start_with("bench-conv", &["--resync", "30s"]);
    let d = &h.d;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let compose = ComposeProject {
        dir: std::env::temp_dir().join(format!("capstan-bench-compose-{}", std::process::id())),
        name: format!("{}c", h.s.name.replace('-', "")),
    };
    std::fs::create_dir_all(&compose.dir).unwrap();
    std::fs::write(
        compose.dir.join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  web:\n    image: {IMAGE}\n    healthcheck:\n      interval: 1s\n"
        ),
    )
    .unwrap();
    let engine_tag = format!("{}-engine", h.s.name);
    // Dropped before the Compose project (declared later), which then removes its network.
    let _leftovers = [
        LeftoverGuard {
            filter: format!("label=capstan-bench={engine_tag}"),
        },
        LeftoverGuard {
            filter: format!("label=com.docker.compose.project={}", compose.name),
        },
    ];
    let timeline = |n: usize, who: &str, pair: usize| {
        Timeline::start(events_dir.as_deref(), &format!("{n}-{who}-{pair}"))
    };

    let mut results = serde_json::Map::new();
    println!(
        "convergence, interleaved: {pairs} pairs (engine, capstan) per N, one Compose run after \
         each; medians over the pairs; healthcheck every 1 s for all; capstan ready = with \
         endpoints registered"
    );
    println!(
        "  {:>4}  {:>10} {:>10} {:>10}  {:>14} {:>15}",
        "N", "capstan s", "engine s", "compose s", "capstan/engine", "capstan/compose"
    );
    for n in sizes() {
        let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
        for pair in 0..pairs {
            settle();
            let r = engine_run(
                &rt,
                n,
                &engine_tag,
                n * 100 + pair,
                timeline(n, "engine", pair),
            );
            runs.entry("engine").or_default().push(r);
            settle();
            let r = capstan_run(d, &mut stacks, n, timeline(n, "capstan", pair));
            runs.entry("capstan").or_default().push(r);
            settle();
            let r = compose_run(&compose.dir, &compose.name, n, timeline(n, "compose", pair));
            runs.entry("compose").or_default().push(r);
        }
        let ups = |who: &str| runs[who].iter().map(|r| r.up).collect::<Vec<f64>>();
        let downs = |who: &str| runs[who].iter().map(|r| r.down).collect::<Vec<f64>>();
        let ratio = |a: Vec<f64>, b: Vec<f64>| -> Vec<f64> {
            a.iter().zip(&b).map(|(a, b)| a / b).collect()
        };
        let up_ratios = ratio(ups("capstan"), ups("engine"));
        let down_ratios = ratio(downs("capstan"), downs("engine"));
        let compose_ratios = ratio(ups("capstan"), ups("compose"));
        let med = |who: &str| (median(ups(who)), median(downs(who)));
        let ((cu, cd), (eu, ed), (ku, kd)) = (med("capstan"), med("engine"), med("compose"));
        println!(
            "  {:>4}  {:>10.2} {:>10.2} {:>10.2}  {:>14.2} {:>15.2}   up, median of pair ratios {:.2} (targets: <= 1.05, < 1)",
            n,
            cu,
            eu,
            ku,
            cu / eu,
            cu / ku,
            median(up_ratios.clone()),
        );
        println!(
            "  {:>4}  {:>10.2} {:>10.2} {:>10.2}  {:>14.2} {:>15.2}   down to 0, median of pair ratios {:.2}",
            n,
            cd,
            ed,
            kd,
            cd / ed,
            cd / kd,
            median(down_ratios.clone()),
        );
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "        up samples: engine [{}]  capstan [{}] (engine saw all healthy at [{}])  compose [{}]; capstan/engine per pair [{}]",
            fmt(&ups("engine")),
            fmt(&ups("capstan")),
            fmt(&runs["capstan"]
                .iter()
                .map(|r| r.extra["engine_healthy"].as_f64().unwrap_or(f64::NAN))
                .collect::<Vec<_>>()),
            fmt(&ups("compose")),
            fmt(&up_ratios),
        );
        let extra = |key: &str| -> Vec<f64> {
            runs["capstan"]
                .iter()
                .map(|r| r.extra[key].as_f64().unwrap_or(f64::NAN))
                .collect()
        };
        let heals: Vec<f64> = runs["capstan"]
            .iter()
            .map(|r| {
                r.extra["docker_ops_up"].as_object().map_or(0.0, |ops| {
                    ops.iter()
                        .filter(|(k, _)| k.starts_with("capstan_heal_actions"))
                        .filter_map(|(_, v)| v.as_f64())
                        .fold(0.0, |a, b| a + b)
                })
            })
            .collect();
        println!(
            "        capstan's own CPU while converging: daemon [{}] s, etcd [{}] s; replicas it healed meanwhile [{}]",
            fmt(&extra("daemon_cpu_s_up")),
            fmt(&extra("etcd_cpu_s_up")),
            fmt(&heals),
        );
        let samples = serde_json::json!({
            "up": {"capstan": ups("capstan"), "engine": ups("engine"), "compose": ups("compose")},
            "down": {"capstan": downs("capstan"), "engine": downs("engine"), "compose": downs("compose")},
        });
        let order: serde_json::Value = runs
            .iter()
            .map(|(who, rs)| {
                let rs: Vec<serde_json::Value> = rs
                    .iter()
                    .map(|r| serde_json::json!({"up": r.up, "down": r.down, "extra": r.extra}))
                    .collect();
                (who.to_string(), serde_json::Value::from(rs))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        let (up_med, down_med, compose_med) = (
            median(up_ratios.clone()),
            median(down_ratios.clone()),
            median(compose_ratios.clone()),
        );
        results.insert(
            n.to_string(),
            serde_json::json!({
                "pairs": pairs,
                "order": "per pair: engine, capstan, compose",
                "capstan_observed_by": if observe_by_polling() { "polling its service view every 50 ms" } else { "its endpoints stream, then its service view" },
                "healthcheck_interval_s": HEALTH_INTERVAL_NS as f64 / 1e9,
                "up": {"capstan": cu, "engine": eu, "compose": ku},
                "down": {"capstan": cd, "engine": ed, "compose": kd},
                "capstan_over_engine": {
                    "up": {"per_pair": up_ratios, "median": up_med},
                    "down": {"per_pair": down_ratios, "median": down_med},
                },
                "capstan_over_compose": {"up": {"per_pair": compose_ratios, "median": compose_med}},
                "samples": samples,
                "runs": order,
            }),
        );
    }
    if let Some(dir) = &events_dir {
        std::fs::write(dir.join("capstan.log"), d.log()).unwrap();
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("converge.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}
