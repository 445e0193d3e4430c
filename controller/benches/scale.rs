//! The reconciler at scale, without Docker (issue 6): the real store, cache, watcher,
//! scheduler and workers over the in-memory Kv and runtime. For 100, 1,000, 2,000 and 5,000
//! services of 5 replicas: time to converge from empty, wall time and CPU of one full resync
//! with no drift (and that it writes nothing), the engine calls it makes (and how many are
//! container lists), and peak RSS. Each size runs in a process of
//! its own, so peak RSS is its own. Prints one JSON line per size.

use capstan_controller::controller::{Controller, Options};
use capstan_controller::key::ObjectKey;
use capstan_controller::metrics::Metrics;
use capstan_controller::runtime::fake::{Call, FakeRuntime};
use capstan_controller::scheduler::Scheduler;
use capstan_controller::store::memory::MemKv;
use capstan_controller::store::Store;
use capstan_controller::triggers;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPLICAS: u32 = 5;
const SERVICES_PER_STACK: usize = 10;
const WORKERS: usize = 8;

/// (user + system CPU seconds, peak RSS in MiB) of this process.
fn cpu_and_peak_rss() -> (f64, f64) {
    // Nanoseconds on CPU of every thread (the runtime's threads live as long as the process):
    // /proc/self/stat counts in 10 ms ticks, too coarse for a 100-service resync.
    let cpu: u64 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (cpu as f64 / 1e9, hwm / 1024.0)
}

async fn wait_idle(s: &Scheduler<ObjectKey>) {
    // Idle twice in a row, a few ms apart: a worker may be between keys.
    let mut calm = 0;
    while calm < 3 {
        calm = if s.is_idle() { calm + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run(services: usize) -> serde_json::Value {
    let kv = Arc::new(MemKv::default());
    let store = Store::new(kv.clone(), "/capstan");
    let runtime = Arc::new(FakeRuntime::default());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let options = Options {
        // Resyncs are made by hand below.
        resync: Duration::from_secs(3600),
        workers: WORKERS,
        engine_parallelism: 32,
        ..Options::default()
    };
    let controller = Controller::start(
        store.clone(),
        runtime.clone(),
        Arc::new(Metrics::default()),
        options,
        rx,
    );
    let (desired, scheduler) = (&controller.ctx.desired, &controller.ctx.scheduler);

    let stacks = services / SERVICES_PER_STACK;
    let specs: Vec<_> = (0..stacks)
        .map(|i| {
            let body: String = (0..SERVICES_PER_STACK)
                .map(|j| format!("  svc{j}: {{image: web:1, scale: {REPLICAS}}}\n"))
                .collect();
            capstan_api::parse_stack(&format!("s{i}"), &format!("services:\n{body}")).unwrap()
        })
        .collect();
    let (cpu0, _) = cpu_and_peak_rss();
    let t0 = Instant::now();
    for spec in &specs {
        store.apply(spec, None).await.unwrap();
    }
    let all_ready = || {
        (0..stacks).all(|i| {
            (0..SERVICES_PER_STACK).all(|j| {
                desired
                    .status(&format!("s{i}"), &format!("svc{j}"))
                    .is_some_and(|s| s.is_ready())
            })
        })
    };
    while !all_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let converge = t0.elapsed().as_secs_f64();
    wait_idle(scheduler).await;
    let (cpu1, _) = cpu_and_peak_rss();
    assert_eq!(runtime.len(), services * REPLICAS as usize);

    // One full resync with nothing to do.
    let writes = kv.writes();
    let calls = runtime.calls.load(std::sync::atomic::Ordering::Relaxed);
    runtime.clear_calls();
    let t1 = Instant::now();
    triggers::resync_once(&controller.triggers).await.unwrap();
    wait_idle(scheduler).await;
    let resync = t1.elapsed().as_secs_f64();
    let (cpu2, rss) = cpu_and_peak_rss();
    let resync_calls = runtime.calls.load(std::sync::atomic::Ordering::Relaxed) - calls;
    let resync_lists = runtime.count(|c| matches!(c, Call::List { .. }));
    assert_eq!(
        kv.writes(),
        writes,
        "a resync with no drift writes nothing to etcd"
    );
    serde_json::json!({
        "services": services,
        "replicas": services * REPLICAS as usize,
        "converge_s": converge,
        "converge_cpu_s": cpu1 - cpu0,
        "resync_s": resync,
        "resync_cpu_s": cpu2 - cpu1,
        "resync_runtime_calls": resync_calls,
        "resync_engine_lists": resync_lists,
        "resync_etcd_writes": kv.writes() - writes,
        "peak_rss_mib": rss,
    })
}

fn main() {
    if let Some(n) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<usize>().ok())
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        println!("{}", rt.block_on(run(n)));
        return;
    }
    let me = std::env::current_exe().unwrap();
    let mut rows = vec![];
    println!("reconciler at scale, in-memory runtime and store, {REPLICAS} replicas per service, {WORKERS} workers, 2 runtime threads");
    println!(
        "  {:>9} {:>9} {:>12} {:>12} {:>11} {:>13} {:>10} {:>13} {:>13}",
        "services",
        "replicas",
        "converge s",
        "resync s",
        "resync CPU",
        "CPU/1k svc ms",
        "peak RSS",
        "engine calls",
        "of them lists"
    );
    for n in [100, 1000, 2000, 5000] {
        let out = std::process::Command::new(&me)
            .arg(n.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let row: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
        let f = |k: &str| row[k].as_f64().unwrap();
        println!(
            "  {:>9} {:>9} {:>12.2} {:>12.3} {:>10.3}s {:>13.1} {:>7.1} MiB {:>13} {:>13}",
            n,
            row["replicas"].as_u64().unwrap(),
            f("converge_s"),
            f("resync_s"),
            f("resync_cpu_s"),
            f("resync_cpu_s") * 1e6 / n as f64,
            f("peak_rss_mib"),
            row["resync_runtime_calls"],
            row["resync_engine_lists"]
        );
        rows.push(row);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("scale.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
}
