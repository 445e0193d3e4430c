//! The HTTP client behind the CLI commands, and the two commands that do more than one call:
//! `apply` (with `--wait`) and `delete` (which waits for the teardown).

use anyhow::{bail, Context as _};
use capstan_api::object::{ApplyResult, ErrorBody, ScaleRequest, ServiceView, StackView};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str) -> Self {
        Client {
            base: server.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach capstan at {} (is `capstan serve` running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).context("unexpected response from capstan");
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => {
                let mut msg = body.error;
                for d in body.details {
                    msg.push_str(&format!("\n  {}: {}", d.field, d.reason));
                }
                bail!("{msg}")
            }
            Err(_) => bail!(
                "capstan answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }

    pub async fn apply(&self, stack: &str, body: String) -> anyhow::Result<ApplyResult> {
        self.send(
            self.http
                .put(format!("{}/v1/stacks/{stack}", self.base))
                .header("content-type", "application/yaml")
                .body(body),
        )
        .await
    }

    pub async fn stack(&self, stack: &str) -> anyhow::Result<Option<StackView>> {
        let resp = self
            .http
            .get(format!("{}/v1/stacks/{stack}", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach capstan at {}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "capstan answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(Some(serde_json::from_slice(&bytes)?))
    }

    pub async fn stacks(&self) -> anyhow::Result<Vec<StackView>> {
        self.send(self.http.get(format!("{}/v1/stacks", self.base)))
            .await
    }

    pub async fn services(&self, stack: Option<&str>) -> anyhow::Result<Vec<ServiceView>> {
        let mut req = self.http.get(format!("{}/v1/services", self.base));
        if let Some(s) = stack {
            req = req.query(&[("stack", s)]);
        }
        self.send(req).await
    }

    pub async fn service(&self, stack: &str, service: &str) -> anyhow::Result<ServiceView> {
        self.send(self.http.get(format!(
            "{}/v1/stacks/{stack}/services/{service}",
            self.base
        )))
        .await
    }

    pub async fn scale(
        &self,
        stack: &str,
        service: &str,
        replicas: u32,
    ) -> anyhow::Result<ServiceView> {
        self.send(
            self.http
                .put(format!(
                    "{}/v1/stacks/{stack}/services/{service}/scale",
                    self.base
                ))
                .json(&ScaleRequest { replicas }),
        )
        .await
    }

    pub async fn delete(&self, stack: &str, volumes: bool) -> anyhow::Result<serde_json::Value> {
        self.send(
            self.http
                .delete(format!("{}/v1/stacks/{stack}", self.base))
                .query(&[("volumes", volumes)]),
        )
        .await
    }
}

pub fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('/') {
        Some((s, v)) if !s.is_empty() && !v.is_empty() => Ok((s, v)),
        _ => bail!("expected STACK/SERVICE, got {target:?}"),
    }
}

/// The stack name Compose would use: the file's `name:`, else its folder's name.
fn default_stack_name(file: &Path, text: &str) -> anyhow::Result<String> {
    if let Some(name) = capstan_api::compose::declared_name(text) {
        return Ok(name);
    }
    let dir = file
        .canonicalize()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let raw = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let name = capstan_api::names::normalize_stack_name(raw);
    if name.is_empty() {
        bail!("cannot derive a stack name from folder {raw:?}; pass --stack NAME");
    }
    Ok(name)
}

/// Rewrites relative bind-mount sources (`./html:/www`) against the file's folder, as
/// Compose does, so the server gets absolute paths.
fn resolve_relative_binds(file: &Path, text: &str) -> anyhow::Result<String> {
    let mut doc = match capstan_api::compose::yaml::parse(text) {
        Ok(doc) => doc,
        // Let the server report the syntax error with its usual shape.
        Err(_) => return Ok(text.to_string()),
    };
    let base: PathBuf = file
        .canonicalize()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_default();
    let mut changed = false;
    if let Some(services) = doc.get_mut("services").and_then(|s| s.as_mapping_mut()) {
        for (_, svc) in services.iter_mut() {
            let Some(vols) = svc.get_mut("volumes").and_then(|v| v.as_sequence_mut()) else {
                continue;
            };
            for v in vols.iter_mut() {
                let Some(s) = v.as_str() else { continue };
                let Some((source, rest)) = s.split_once(':') else {
                    continue;
                };
                let abs = if let Some(r) = source.strip_prefix("~/") {
                    PathBuf::from(&home).join(r)
                } else if source.starts_with('.') {
                    base.join(source)
                } else {
                    continue;
                };
                let abs = abs.components().collect::<PathBuf>();
                *v = capstan_api::compose::yaml::Value::String(format!("{}:{rest}", abs.display()));
                changed = true;
            }
        }
    }
    Ok(if changed {
        // JSON is YAML, and writes every value exactly.
        serde_json::to_string(&doc)?
    } else {
        text.to_string()
    })
}

pub async fn apply(
    api: &Client,
    file: &Path,
    stack: Option<String>,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let stack = match stack {
        Some(s) => s,
        None => default_stack_name(file, &text)?,
    };
    let body = resolve_relative_binds(file, &text)?;
    let result = api.apply(&stack, body).await?;
    for (svc, outcome) in &result.services {
        println!("{stack}/{svc} {outcome}");
    }
    if !wait {
        return Ok(0);
    }
    wait_converged(api, &stack, timeout).await
}

async fn wait_converged(api: &Client, stack: &str, timeout: Duration) -> anyhow::Result<i32> {
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut last_lines: Vec<String> = vec![];
    loop {
        let view = api
            .stack(stack)
            .await?
            .with_context(|| format!("stack {stack} disappeared while waiting"))?;
        let lines: Vec<String> = view
            .services
            .iter()
            .map(|s| {
                let state = if s.converged() {
                    "ready".to_string()
                } else {
                    s.summary()
                };
                format!(
                    "  {:<20} {:>4}/{:<4} {}",
                    s.name, s.ready, s.replicas, state
                )
            })
            .collect();
        if lines != last_lines {
            if tty && !last_lines.is_empty() {
                print!("\x1b[{}A\x1b[J", last_lines.len());
            }
            for l in &lines {
                println!("{l}");
            }
            last_lines = lines;
        }
        if view.services.iter().all(|s| s.converged()) {
            println!(
                "stack {stack} converged in {:.1}s",
                start.elapsed().as_secs_f64()
            );
            return Ok(0);
        }
        if start.elapsed() >= timeout {
            eprintln!(
                "timed out after {} waiting for stack {stack}:",
                humantime::format_duration(timeout)
            );
            for s in view.services.iter().filter(|s| !s.converged()) {
                let why = s
                    .summary_condition()
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_else(|| "not yet observed by the controller".into());
                eprintln!("  {}: {}/{} ready; {why}", s.name, s.ready, s.replicas);
            }
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn delete(
    api: &Client,
    stack: &str,
    volumes: bool,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    api.delete(stack, volumes).await?;
    if !wait {
        println!("stack {stack} deletion requested");
        return Ok(0);
    }
    let start = Instant::now();
    let mut said = None;
    while let Some(view) = api.stack(stack).await? {
        // Say what the teardown waits for, once each time it changes.
        if view.deletion_blocked_by.is_some() && view.deletion_blocked_by != said {
            eprintln!(
                "  waiting: {}",
                view.deletion_blocked_by.as_deref().unwrap_or("")
            );
            said = view.deletion_blocked_by.clone();
        }
        if start.elapsed() >= timeout {
            let why = view
                .deletion_blocked_by
                .map(|why| format!(": {why}"))
                .unwrap_or_default();
            eprintln!(
                "stack {stack} is still being torn down after {}{why}",
                humantime::format_duration(timeout)
            );
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("stack {stack} deleted");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_bind_sources_are_resolved_against_the_files_folder() {
        let dir = std::env::temp_dir().join(format!("capstan-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("compose.yaml");
        let text =
            "services:\n  web:\n    image: x\n    volumes: [\"./html:/www:ro\", \"data:/d\"]\n";
        std::fs::write(&file, text).unwrap();
        let out = resolve_relative_binds(&file, text).unwrap();
        let base = dir.canonicalize().unwrap();
        assert!(
            out.contains(&format!("{}/html:/www:ro", base.display())),
            "{out}"
        );
        assert!(out.contains("data:/d"));
        assert_eq!(
            default_stack_name(&file, text).unwrap(),
            capstan_api::names::normalize_stack_name(base.file_name().unwrap().to_str().unwrap())
        );
        assert_eq!(
            default_stack_name(&file, "name: shop\nservices: {}").unwrap(),
            "shop"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
