//! Memory follows the work: the daemon's RSS at start, after applying 2,000 services with
//! `scale: 0`, after changing every one of them (an environment value), and after deleting
//! the stack and the daemon having forgotten it; three cycles, for each allocator the binary
//! can use (`CAPSTAN_ALLOCATOR`), each in a daemon and an etcd of its own, one after the
//! other in the same run. Prints the table and, per cycle, the ratio after-delete /
//! before-apply (target ≤ 1.5); writes `bench/results/memory.json`. Fails when the default
//! allocator misses the target after the first cycle, or its RSS grows from one cycle's
//! deletion to the next by more than a tenth: the first cycle also pays a one-time ~10 MiB
//! (the same with 100 services as with 2,000), which the table shows apart.
//!
//! `CAPSTAN_BENCH_MEMORY_SERVICES` (default 2000) sets the size, `CAPSTAN_BENCH_ALLOCATORS`
//! (comma-separated names of [`VARIANTS`]) which allocators are measured.

use capstan_e2e::*;
use std::time::{Duration, Instant};

const CYCLES: usize = 3;
const TARGET: f64 = 1.5;

/// (name, `CAPSTAN_ALLOCATOR`, `MALLOC_ARENA_MAX`): the allocators compared; the last one
/// is the binary's default.
const VARIANTS: [(&str, &str, Option<&str>); 4] = [
    ("glibc", "glibc", None),
    ("glibc-arena2", "glibc", Some("2")),
    ("glibc-trim", "glibc-trim", None),
    ("jemalloc", "jemalloc", None),
];
const DEFAULT: &str = "jemalloc";

fn services() -> usize {
    std::env::var("CAPSTAN_BENCH_MEMORY_SERVICES")
        .ok()
        .map(|v| v.parse().expect("CAPSTAN_BENCH_MEMORY_SERVICES: a number"))
        .unwrap_or(2000)
}

/// The stack: `n` services of replicas 0, each with environment value `V=value`.
fn stack(n: usize, value: &str) -> String {
    let mut yaml = String::from("services:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  svc{i:04}:\n    image: {IMAGE}\n    scale: 0\n    environment: {{V: \"{value}\"}}\n"
        ));
    }
    yaml
}

fn rss(d: &Daemon) -> f64 {
    cpu_and_rss(d.pid().expect("the daemon runs")).1
}

/// The RSS once it stopped falling: an allocator may give freed pages back some seconds
/// after they were freed. Waits until five samples a second apart agree within 1 MiB (two
/// minutes at most; then the last sample).
fn settled_rss(d: &Daemon) -> f64 {
    let start = Instant::now();
    let mut last: Vec<f64> = vec![];
    loop {
        last.push(rss(d));
        if last.len() > 5 {
            last.remove(0);
        }
        let spread = last.iter().cloned().fold(f64::MIN, f64::max)
            - last.iter().cloned().fold(f64::MAX, f64::min);
        if (last.len() == 5 && spread < 1.0) || start.elapsed() > Duration::from_secs(120) {
            return *last.last().unwrap();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits until the daemon has forgotten `stack`: the API lists no stack and the metrics
/// hold no series of it.
fn wait_forgotten(d: &Daemon, stack: &str) {
    let label = format!("stack=\"{stack}\"");
    wait_for(Duration::from_secs(600), "the stack forgotten", || {
        let stacks: Vec<serde_json::Value> = d
            .api()
            .get(format!("{API}/v1/stacks"))
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())?;
        let series = d.metrics().lines().filter(|l| l.contains(&label)).count();
        match (stacks.len(), series) {
            (0, 0) => Ok(()),
            (s, n) => Err(format!("{s} stacks listed, {n} series of the stack")),
        }
    });
}

/// One cycle's RSS, MiB.
struct Cycle {
    before: f64,
    applied: f64,
    changed: f64,
    deleted: f64,
}

fn cycle(d: &Daemon, s: &StackGuard, n: usize, round: usize) -> Cycle {
    let before = settled_rss(d);
    d.apply_within(s, &stack(n, &format!("{round}-a")), "20m");
    let applied = rss(d);
    d.apply_within(s, &stack(n, &format!("{round}-b")), "20m");
    let changed = rss(d);
    d.cli_ok(&["delete", &s.name]);
    wait_forgotten(d, &s.name);
    let deleted = settled_rss(d);
    Cycle {
        before,
        applied,
        changed,
        deleted,
    }
}

/// Three cycles in a daemon of its own that uses the allocator `variant` names.
fn measure(variant: &(&str, &str, Option<&str>), n: usize) -> (f64, Vec<Cycle>) {
    let (name, allocator, arenas) = *variant;
    // The daemon inherits the environment; the bench runs on this one thread.
    std::env::set_var("CAPSTAN_ALLOCATOR", allocator);
    match arenas {
        Some(a) => std::env::set_var("MALLOC_ARENA_MAX", a),
        None => std::env::remove_var("MALLOC_ARENA_MAX"),
    }
    let h = Harness::start_with(&format!("bench-mem-{name}"), &["--resync", "30s"]);
    std::env::remove_var("CAPSTAN_ALLOCATOR");
    std::env::remove_var("MALLOC_ARENA_MAX");
    let start = settled_rss(&h.d);
    let cycles = (0..CYCLES).map(|i| cycle(&h.d, &h.s, n, i)).collect();
    (start, cycles)
}

fn main() {
    bench_preflight();
    let n = services();
    let wanted: Option<Vec<String>> = std::env::var("CAPSTAN_BENCH_ALLOCATORS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    for w in wanted.iter().flatten() {
        assert!(
            VARIANTS.iter().any(|v| v.0 == w),
            "CAPSTAN_BENCH_ALLOCATORS: {w:?} is none of {:?}",
            VARIANTS.map(|v| v.0)
        );
    }
    println!("memory: {n} services (scale 0) applied, all changed, deleted; {CYCLES} cycles per allocator; RSS in MiB");
    println!(
        "{:<14} {:>5} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}",
        "allocator", "cycle", "before", "applied", "changed", "deleted", "del/bef", "del/start"
    );
    let mut results = vec![];
    let mut default_ok = true;
    for variant in VARIANTS
        .iter()
        .filter(|v| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == v.0)))
    {
        let (start, cycles) = measure(variant, n);
        println!("{:<14} start {start:>7.1}", variant.0);
        let mut rows = vec![];
        for (i, c) in cycles.iter().enumerate() {
            let ratio = c.deleted / c.before;
            println!(
                "{:<14} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.2} {:>8.2}",
                variant.0,
                i + 1,
                c.before,
                c.applied,
                c.changed,
                c.deleted,
                ratio,
                c.deleted / start
            );
            let grew = i > 0 && c.deleted > cycles[i - 1].deleted * 1.1;
            if variant.0 == DEFAULT && i > 0 && (ratio > TARGET || grew) {
                default_ok = false;
            }
            rows.push(serde_json::json!({
                "before_mib": c.before, "applied_mib": c.applied, "changed_mib": c.changed,
                "deleted_mib": c.deleted, "deleted_over_before": ratio,
                "deleted_over_start": c.deleted / start,
            }));
        }
        results.push(serde_json::json!({
            "allocator": variant.0, "start_mib": start, "cycles": rows,
        }));
    }
    println!(
        "target: after-delete / before-apply ≤ {TARGET} ({DEFAULT} is the default; checked from the second cycle on: the first also pays a one-time warm-up)"
    );
    write_results(
        "memory",
        &serde_json::json!({ "services": n, "cycles": CYCLES, "target": TARGET, "allocators": results }),
    );
    assert!(
        default_ok,
        "the default allocator ({DEFAULT}) missed the target: see the table above"
    );
}
