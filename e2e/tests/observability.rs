//! The dashboard and alert rules work on real data from the first minute: a real Prometheus
//! scrapes a real daemon every second. After one apply and nothing else, every PromQL
//! expression of the dashboard and of the recording rules returns a series, and every series an alert selects exists (the daemon creates its
//! counters and histograms at 0: a panel shows 0, not "No data"); after a scale, a heal and
//! a rollout, they all still parse, evaluate and return data, and the counts are right.

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

/// Every `capstan_...` series selector in `expr` (the metric name and its `{...}`
/// matchers, if any): what an alert's expression compares, and must exist to be compared.
fn selectors(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = expr;
    while let Some(at) = rest.find("capstan_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let len = match tail[name_len..].starts_with('{') {
            true => name_len + tail[name_len..].find('}').expect("closing brace") + 1,
            false => name_len,
        };
        if !preceded {
            out.push(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    out
}

/// The rules file, parsed.
fn rules() -> serde_json::Value {
    serde_saphyr::from_str(
        &std::fs::read_to_string(charts().join("prometheus/capstan-rules.yaml")).unwrap(),
    )
    .unwrap()
}

/// Every dashboard query and recording rule (their expressions and the series they record)
/// without a series, and every series an alert selects that does not exist; an expression
/// that does not parse or evaluate fails the test at once.
fn without_data(prom: &Prometheus, queries: &[(String, String)]) -> Vec<String> {
    let (mut failures, mut missing, mut alert_failures) = (vec![], vec![], vec![]);
    let mut check = |what: String, expr: &str| match prom.query(expr) {
        Ok(0) => missing.push(format!("{what}: no data for {expr}")),
        Ok(_) => {}
        Err(e) => failures.push(format!("{what}: {expr}: {e}")),
    };
    for (title, expr) in queries {
        check(title.clone(), expr);
    }
    for group in rules()["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            match (rule["record"].as_str(), rule["alert"].as_str()) {
                (Some(record), _) => {
                    check(format!("recording rule {record}"), expr);
                    check(format!("recorded series {record}"), record);
                }
                // An alert's expression returns data only while it fires: it must evaluate,
                // and the series it compares must exist.
                (None, alert) => {
                    let alert = alert.unwrap_or("?");
                    if let Err(e) = prom.query(expr) {
                        alert_failures.push(format!("alert {alert}: {expr}: {e}"));
                    }
                    for selector in selectors(expr) {
                        check(format!("alert {alert}"), &selector);
                    }
                }
            }
        }
    }
    failures.extend(alert_failures);
    assert!(
        failures.is_empty(),
        "{} expression(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    missing
}

/// Waits until [`without_data`] finds nothing: data comes as Prometheus scrapes (every
/// second) and evaluates the rules; a rate() needs two samples in its window, a recorded
/// series an evaluation after them.
fn wait_for_every_series(prom: &Prometheus, queries: &[(String, String)], after: &str) {
    wait_for(
        Duration::from_secs(30),
        &format!("every dashboard and rule expression to return data {after}"),
        || match without_data(prom, queries).as_slice() {
            [] => Ok(()),
            missing => Err(format!(
                "{} without data:\n{}",
                missing.len(),
                missing.join("\n")
            )),
        },
    );
}

#[test]
fn selectors_are_read_out_of_an_alert_expression() {
    assert_eq!(
        selectors(
            r#"(sum by (stack) (increase(capstan_rollouts_total{result="paused"}[1h])) > 0) and on (stack) (capstan_service_converged == 0) or capstan:x:rate5m"#
        ),
        vec![
            r#"capstan_rollouts_total{result="paused"}"#.to_string(),
            "capstan_service_converged".to_string()
        ]
    );
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
    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "the dashboard has {} queries",
        queries.len()
    );

    // One apply and nothing else: no heal, no rollout, no error yet, and still a series
    // for every panel and every alert.
    d.apply(s, &yaml(IMAGE, 2));
    wait_for_every_series(&prom, &queries, "after one apply");

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
        .find(|l| {
            l.starts_with("capstan_heal_actions_total{")
                && l.contains(&s.name)
                && l.contains("reason=\"removed\"")
        })
        .unwrap_or_else(|| panic!("no heal counted:\n{text}"));
    assert!(heal.ends_with(" 1"), "{heal}");
    let completed = text
        .lines()
        .find(|l| l.starts_with("capstan_rollouts_total{") && l.contains("result=\"completed\""))
        .unwrap_or_else(|| panic!("no rollout counted:\n{text}"));
    assert!(completed.ends_with(" 1"), "{completed}");

    wait_until(
        Duration::from_secs(30),
        "prometheus to have scraped the heal",
        || {
            prom.query(r#"capstan_heal_actions_total{reason="removed"} > 0"#)
                .unwrap_or(0)
                > 0
        },
    );
    wait_for_every_series(&prom, &queries, "after a scale, a heal and a rollout");

    // Idle, the loop costs only its resync: healthcheck execs are not drift, and the etcd
    // watch holds (it used to break every few seconds and relist everything). At rest only
    // the resync reconciles the stack: over two resyncs, the one service is reconciled once
    // per resync (one more for a resync under way at the start), and the two resyncs come a
    // period apart. The rollout's last replaced replica died just now, and a death is looked
    // at again up to 2 s later: the world is at rest a full resync period on.
    d.wait_for_resync();
    d.wait_for_resync();
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
