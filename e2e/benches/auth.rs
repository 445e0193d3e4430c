//! What authentication costs (issue 12): apply latency and GET throughput over the Unix
//! socket (peer credentials, no token) against TCP with TLS and a bearer token, one
//! keep-alive connection each, medians. Writes `bench/results/auth.json`.
//!
//! The stack has no replicas (`replicas: 0`), so an apply is the API, validation and etcd
//! only, not the engine.

use capstan_e2e::*;
use std::process::Command;
use std::time::Instant;

const APPLIES: usize = 200;
const GETS: usize = 2000;

/// A CA and a certificate it signed for 127.0.0.1, with `openssl`: (ca, cert, key).
fn certificates(dir: &std::path::Path) -> [String; 3] {
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let script = format!(
        "set -e; cd '{d}'
         openssl req -x509 -nodes -days 1 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
           -keyout ca.key -out ca.pem -subj '/CN=bench CA' 2>/dev/null
         openssl req -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
           -keyout key.pem -out leaf.csr -subj /CN=localhost 2>/dev/null
         printf 'basicConstraints=CA:FALSE\\nsubjectAltName=IP:127.0.0.1\\n' > leaf.ext
         openssl x509 -req -days 1 -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
           -out cert.pem -extfile leaf.ext 2>/dev/null",
        d = dir.display()
    );
    let ok = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(ok.success(), "openssl could not make the certificates");
    [p("ca.pem"), p("cert.pem"), p("key.pem")]
}

struct Result {
    apply_ms: f64,
    get_ms: f64,
    gets_per_s: f64,
}

/// `APPLIES` applies (each changing one variable) and `GETS` GETs through `http` at `base`.
fn measure(http: &reqwest::blocking::Client, base: &str, stack: &str) -> Result {
    let url = format!("{base}/v1/stacks/{stack}");
    let put = |i: usize| {
        let body = format!(
            "services: {{web: {{image: {IMAGE}, deploy: {{replicas: 0}}, environment: {{N: '{i}'}}}}}}"
        );
        let t = Instant::now();
        let resp = http.put(&url).body(body).send().unwrap();
        assert!(resp.status().is_success(), "apply: {}", resp.status());
        t.elapsed().as_secs_f64() * 1000.0
    };
    let get = || {
        let t = Instant::now();
        let resp = http.get(&url).send().unwrap();
        assert!(resp.status().is_success(), "get: {}", resp.status());
        resp.bytes().unwrap();
        t.elapsed().as_secs_f64() * 1000.0
    };
    for i in 0..20 {
        put(i);
        get();
    }
    let applies: Vec<f64> = (0..APPLIES).map(|i| put(1000 + i)).collect();
    let start = Instant::now();
    let gets: Vec<f64> = (0..GETS).map(|_| get()).collect();
    let gets_per_s = GETS as f64 / start.elapsed().as_secs_f64();
    Result {
        apply_ms: median(applies),
        get_ms: median(gets),
        gets_per_s,
    }
}

fn main() {
    preflight();
    let dir = std::env::temp_dir().join(format!("capstan-bench-auth-{}", std::process::id()));
    let [ca, cert, key] = certificates(&dir);
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--listen", &listen, "--tls-cert", &cert, "--tls-key", &key];
    let h = Harness::start_with("bench-auth", &flags);
    let token =
        h.d.cli_ok(&["token", "create", "bench", "--role", "deploy"]);
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", token.trim());
    headers.insert("authorization", bearer.parse().unwrap());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let tls = reqwest::blocking::Client::builder()
        .tls_certs_only([ca])
        .default_headers(headers)
        .build()
        .unwrap();

    let unix = measure(&h.d.api(), API, &h.s.name);
    let tcp = measure(&tls, &format!("https://{listen}"), &h.s.name);
    println!("auth cost: {APPLIES} applies and {GETS} GETs per transport, one keep-alive connection, medians");
    println!("  transport                apply ms    GET ms   GETs/s");
    for (name, r) in [("unix socket", &unix), ("tcp + tls + token", &tcp)] {
        println!(
            "  {name:<22} {:>9.2} {:>9.3} {:>8.0}",
            r.apply_ms, r.get_ms, r.gets_per_s
        );
    }
    let json = |r: &Result| serde_json::json!({"apply_ms_p50": r.apply_ms, "get_ms_p50": r.get_ms, "gets_per_s": r.gets_per_s});
    write_results(
        "auth",
        &serde_json::json!({"unix": json(&unix), "tcp_tls_token": json(&tcp), "applies": APPLIES, "gets": GETS}),
    );
    let _ = std::fs::remove_dir_all(dir);
}
