//! The built-in proxy under load (issue 4): `wrk` against the same three replicas through
//! capstan's proxy, through HAProxy (TCP mode, round-robin, Debian's haproxy), and directly
//! against one replica, in one run. Prints throughput, p50/p99 latency and the ratios
//! capstan/HAProxy, plus the daemon's CPU and memory under that load. Writes
//! `bench/results/proxy.json`.
//!
//! Throughput is measured saturated (32 connections), latency below saturation (6, two per
//! replica): busybox httpd listens with a backlog of 9, so at 32 connections the replicas drop
//! SYNs that are retransmitted after 1 s, and both proxies' p99 becomes that same ~1 s tail,
//! which says nothing about either proxy.

use capstan_e2e::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const DURATION: &str = "10s";
const SATURATED: &str = "32";
const UNSATURATED: &str = "6";

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(url: &str, connections: &str) -> Load {
    let out = Command::new("wrk")
        .args(["-t2", "-c", connections, "-d", DURATION, "--latency", url])
        .output()
        .expect("wrk (make bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk printed no throughput:\n{text}"));
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map(|v| parse_latency(v.trim()))
            .unwrap_or_else(|| panic!("wrk printed no {p}:\n{text}"))
    };
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"));
    if let Some(e) = errors {
        eprintln!("  note for {url}: {}", e.trim());
    }
    Load {
        rps,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
    }
}

fn parse_latency(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn main() {
    bench_preflight();
    let h = Harness::start("bench-proxy");
    let (d, s) = (&h.d, &h.s);
    let port = free_port();
    let yaml = format!("services:\n  web:\n    image: {IMAGE}\n    scale: 3\n    ports: [\"127.0.0.1:{port}:80\"]\n");
    d.apply(s, &yaml);
    let ips: Vec<String> = (1..=3).map(|n| s.ip("web", n)).collect();

    let haproxy_port = free_port();
    let cfg =
        std::env::temp_dir().join(format!("capstan-bench-haproxy-{}.cfg", std::process::id()));
    let servers: String = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("    server r{i} {ip}:80\n"))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 4096\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\nfrontend f\n    bind 127.0.0.1:{haproxy_port}\n    default_backend b\nbackend b\n    balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let mut haproxy = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (make bench installs it)");
    std::thread::sleep(Duration::from_millis(500));

    let pid = d.pid().unwrap();
    let (cpu0, _) = cpu_and_rss(pid);
    let capstan = wrk(&format!("http://127.0.0.1:{port}/"), SATURATED);
    let (cpu1, rss) = cpu_and_rss(pid);
    let secs: f64 = DURATION.trim_end_matches('s').parse().unwrap();
    let proxy_cpu = (cpu1 - cpu0) / secs;
    let haproxy_load = wrk(&format!("http://127.0.0.1:{haproxy_port}/"), SATURATED);
    let direct = wrk(&format!("http://{}:80/", ips[0]), SATURATED);
    let capstan_lat = wrk(&format!("http://127.0.0.1:{port}/"), UNSATURATED);
    let haproxy_lat = wrk(&format!("http://127.0.0.1:{haproxy_port}/"), UNSATURATED);
    let direct_lat = wrk(&format!("http://{}:80/", ips[0]), UNSATURATED);
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let _ = std::fs::remove_file(&cfg);

    println!("proxy: wrk -t2 -d{DURATION}, a new connection per request (busybox httpd closes)");
    println!(
        "  {:<28} {:>14} {:>12} {:>12} {:>12}",
        "",
        format!("req/s (c{SATURATED})"),
        format!("p99 (c{SATURATED})"),
        format!("p50 (c{UNSATURATED})"),
        format!("p99 (c{UNSATURATED})")
    );
    for (name, l, u) in [
        ("capstan proxy (3 replicas)", &capstan, &capstan_lat),
        ("HAProxy tcp (3 replicas)", &haproxy_load, &haproxy_lat),
        ("direct (1 replica)", &direct, &direct_lat),
    ] {
        println!(
            "  {:<28} {:>14.0} {:>9.2} ms {:>9.2} ms {:>9.2} ms",
            name, l.rps, l.p99_ms, u.p50_ms, u.p99_ms
        );
    }
    println!(
        "  capstan/HAProxy throughput      {:>8.2}   (target >= 0.9)",
        capstan.rps / haproxy_load.rps
    );
    println!(
        "  capstan - HAProxy p99           {:>8.2} ms (target <= 1 ms; {UNSATURATED} connections)",
        capstan_lat.p99_ms - haproxy_lat.p99_ms
    );
    println!(
        "  capstan daemon at {SATURATED} connections {:>5.2} cores, {:.1} MiB RSS",
        proxy_cpu, rss
    );
    let load = |l: &Load, u: &Load| serde_json::json!({"rps": l.rps, "p99_ms_saturated": l.p99_ms, "p50_ms": u.p50_ms, "p99_ms": u.p99_ms});
    let mut capstan_json = load(&capstan, &capstan_lat);
    capstan_json["cpu_cores"] = proxy_cpu.into();
    capstan_json["rss_mib"] = rss.into();
    let json = serde_json::json!({
        "wrk": {"threads": 2, "connections_saturated": SATURATED, "connections_latency": UNSATURATED, "duration": DURATION},
        "capstan": capstan_json,
        "haproxy": load(&haproxy_load, &haproxy_lat),
        "direct": load(&direct, &direct_lat),
        "ratio_throughput": capstan.rps / haproxy_load.rps,
        "p99_delta_ms": capstan_lat.p99_ms - haproxy_lat.p99_ms,
    });
    write_results("proxy", &json);
}
