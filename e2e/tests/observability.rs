//! The dashboard and alert rules work on real data: a real Prometheus scrapes a real daemon every second; after an
//! apply, a scale and a heal, every PromQL expression in the dashboard and the rules parses
//! and evaluates, and those that describe the fleet return data.

use capstan_e2e::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn charts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts")
}

struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        assert!(
            Command::new("prometheus").arg("--version").output().is_ok(),
            "e2e tests need Prometheus: run `make deps` (Debian's prometheus)"
        );
        let dir = std::env::temp_dir().join(format!("capstan-e2e-prom-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = charts()
            .join("prometheus/capstan-rules.yaml")
            .canonicalize()
            .unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: capstan\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, dir, port };
        wait_until(Duration::from_secs(30), "prometheus to be ready", || {
            reqwest::blocking::get(format!("http://127.0.0.1:{port}/-/ready"))
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
        p
    }

    /// Evaluates `expr` now: Err(message) if it does not parse or evaluate, else the result count.
    fn query(&self, expr: &str) -> Result<usize, String> {
        let resp: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", expr)])
            .send()
            .map_err(|e| e.to_string())?
            .json()
            .map_err(|e| e.to_string())?;
        if resp["status"] != "success" {
            return Err(format!("{}: {}", resp["errorType"], resp["error"]));
        }
        let result = &resp["data"]["result"];
        Ok(match result.as_array() {
            Some(items) => items.len(),
            None => 1, // a scalar
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The dashboard's queries with its variables filled in as Grafana would ("All").
fn dashboard_queries() -> Vec<(String, String)> {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(charts().join("grafana/capstan-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut out = vec![];
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$stack", ".*")
                .replace("$service", ".*")
                .replace("$__rate_interval", "20s");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(metric{sel}, label) is Grafana's; its series selector is PromQL.
            let inner = q
                .trim_start_matches("label_values(")
                .rsplit_once(',')
                .unwrap()
                .0
                .replace("$stack", ".*");
            out.push((format!("variable {}", var["name"]), inner));
        }
    }
    out
}

#[test]
fn every_dashboard_and_rule_expression_returns_data_from_a_live_prometheus_and_the_idle_daemon_then_only_resyncs(
) {
    let h = Harness::start("metrics");
    let (d, s) = (&h.d, &h.s);
    let prom = Prometheus::start(d.url().trim_start_matches("http://"));

    let port = free_port();
    let yaml = |image: &str, n: u32| {
        format!("services:\n  web:\n    image: {image}\n    scale: {n}\n    ports: [\"127.0.0.1:{port}:80\"]\n")
    };
    d.apply(s, &yaml(IMAGE, 2));
    d.cli_ok(&["scale", &format!("{}/web=3", s.name)]);
    wait_until(Duration::from_secs(60), "3 replicas", || {
        d.converged(&s.name, "web", 3)
    });
    docker(&["rm", "-f", &s.replica("web", 2)]);
    wait_until(Duration::from_secs(60), "the heal", || {
        d.converged(&s.name, "web", 3) && s.running().len() == 3
    });
    // A rollout, for the rollout panels and alerts.
    d.apply(s, &yaml(IMAGE_V2, 3));

    // The daemon's own exposition says what the dashboard expects, before Prometheus does.
    let text = d.metrics();
    let heal = text
        .lines()
        .find(|l| l.starts_with("capstan_heal_actions_total{") && l.contains(&s.name))
        .unwrap_or_else(|| panic!("no heal counted:\n{text}"));
    assert!(
        heal.contains("reason=\"removed\"") && heal.ends_with(" 1"),
        "{heal}"
    );
    let completed = text
        .lines()
        .find(|l| l.starts_with("capstan_rollouts_total{") && l.contains("result=\"completed\""))
        .unwrap_or_else(|| panic!("no rollout counted:\n{text}"));
    assert!(completed.ends_with(" 1"), "{completed}");

    wait_until(
        Duration::from_secs(30),
        "prometheus to have scraped the heal",
        || prom.query("capstan_heal_actions_total").unwrap_or(0) > 0,
    );

    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "the dashboard has {} queries",
        queries.len()
    );
    let rules: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(charts().join("prometheus/capstan-rules.yaml")).unwrap(),
    )
    .unwrap();
    // Every expression parses and evaluates at once; its data comes as Prometheus scrapes
    // (every second) and evaluates the rules: a rate() needs two samples in its window, a
    // recorded series an evaluation after them.
    wait_for(
        Duration::from_secs(30),
        "every dashboard and rule expression to return data",
        || {
            let (mut failures, mut missing) = (vec![], vec![]);
            for (title, expr) in &queries {
                match prom.query(expr) {
                    Ok(0) => missing.push(format!("{title}: no data for {expr}")),
                    Ok(_) => {}
                    Err(e) => failures.push(format!("{title}: {expr}: {e}")),
                }
            }
            for group in rules["groups"].as_array().unwrap() {
                for rule in group["rules"].as_array().unwrap() {
                    let expr = rule["expr"].as_str().unwrap();
                    match (prom.query(expr), rule["record"].as_str()) {
                        (Err(e), _) => failures.push(format!("rule {expr}: {e}")),
                        (Ok(0), Some(record)) => {
                            missing.push(format!("recording rule {record}: no data"))
                        }
                        // An alert's expression returns data only while it fires; it must
                        // evaluate.
                        _ => {}
                    }
                    if let Some(record) = rule["record"].as_str() {
                        if prom.query(record).unwrap_or(0) == 0 {
                            missing.push(format!("recorded series {record} missing"));
                        }
                    }
                }
            }
            assert!(
                failures.is_empty(),
                "{} expression(s) failed:\n{}",
                failures.len(),
                failures.join("\n")
            );
            match missing.len() {
                0 => Ok(()),
                n => Err(format!("{n} without data:\n{}", missing.join("\n"))),
            }
        },
    );

    // Idle, the loop costs only its resync: healthcheck execs are not drift, and the etcd
    // watch holds (it used to break every few seconds and relist everything). At rest only
    // the resync reconciles the stack: over two resyncs, the one service is reconciled once
    // per resync (one more for a resync under way at the start), and the two resyncs come a
    // period apart.
    let (stacks, services) = (d.reconciles("stack"), d.reconciles("service"));
    let watches = d.etcd_calls("watch");
    let idle_since = Instant::now();
    wait_until(RESYNC * 4, "two resyncs", || {
        d.reconciles("stack") >= stacks + 2
    });
    let idle = idle_since.elapsed();
    let (resyncs, reconciled) = (
        d.reconciles("stack") - stacks,
        d.reconciles("service") - services,
    );
    assert!(
        reconciled <= resyncs + 1,
        "{reconciled} service reconciles in {resyncs} idle resyncs ({idle:?})"
    );
    assert!(
        idle >= RESYNC / 2,
        "{resyncs} stack reconciles in {idle:?}: something besides the resync reconciles it"
    );
    assert_eq!(
        d.etcd_calls("watch"),
        watches,
        "the etcd watch broke while idle: the daemon watched again"
    );

    for args in [
        vec!["check", "rules", "capstan-rules.yaml"],
        vec!["test", "rules", "capstan-rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(charts().join("prometheus"))
            .output()
            .expect("promtool (make deps)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
