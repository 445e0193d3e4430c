//! `capstan run STACK/SERVICE [-e KEY=VALUE]... [-- COMMAND...]`: a one-off container from
//! the service's spec, as `docker compose run` (`POST .../services/{service}/run`). Its
//! output goes to this process's stdout and stderr as it comes; the exit code is the
//! container's. Interrupted, the connection closes and the daemon stops and removes it.

use anyhow::{bail, Context as _};
use capstan_api::run::{RunRecord, RunRequest};
use std::io::Write;

use crate::client::Client;

/// Runs it and returns the container's exit code (0-255 as a shell sees it).
pub async fn run(api: &Client, target: &str, req: &RunRequest) -> anyhow::Result<i32> {
    let Some((stack, service)) = target.split_once('/') else {
        bail!("expected STACK/SERVICE, got {target:?}");
    };
    let mut resp = api.run(stack, service, req).await?;
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the run's stream")? {
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let record: RunRecord =
                serde_json::from_slice(&line).context("an unreadable record of the run")?;
            if let Some(code) = print(record)? {
                return Ok(code);
            }
        }
    }
    bail!("the daemon ended the run without the container's exit code")
}

/// Prints one record; the exit code once the run is over.
fn print(record: RunRecord) -> anyhow::Result<Option<i32>> {
    match record {
        RunRecord::Started { container } => tracing::debug!(%container, "one-off started"),
        RunRecord::Alive => {}
        RunRecord::Line {
            stderr: false,
            text,
        } => writeln!(std::io::stdout(), "{text}")?,
        RunRecord::Line { stderr: true, text } => writeln!(std::io::stderr(), "{text}")?,
        RunRecord::Exit { code } => return Ok(Some(code.clamp(0, 255) as i32)),
        RunRecord::Error { message } => bail!("the run failed: {message}"),
    }
    Ok(None)
}
