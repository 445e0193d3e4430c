//! `capstan run STACK/SERVICE [-e KEY=VALUE]... [-- COMMAND...]`: a one-off container from
//! the service's spec, as `docker compose run` (`POST .../services/{service}/run`). Its
//! output goes to this process's stdout and stderr byte for byte as it comes (as `docker
//! run` passes it: not escaped); the exit code is the container's. Interrupted, the
//! connection closes and the daemon stops and removes it.

use anyhow::bail;
use capstan_api::run::{Decoder, RunRecord, RunRequest};
use std::io::Write;

use crate::client::Client;

/// Runs it and returns the container's exit code (0-255 as a shell sees it).
pub async fn run(api: &Client, target: &str, req: &RunRequest) -> anyhow::Result<i32> {
    let Some((stack, service)) = target.split_once('/') else {
        bail!("expected STACK/SERVICE, got {target:?}");
    };
    let mut resp = api.run(stack, service, req).await?;
    let mut decoder = Decoder::default();
    while let Some(chunk) = (resp.chunk().await).map_err(|e| api.dropped(e, "the run's output"))? {
        for record in decoder.feed(&chunk)? {
            if let Some(code) = print(record)? {
                return Ok(code);
            }
        }
    }
    decoder.finish()?;
    bail!(
        "capstan at {} ended the run without the container's exit code (did the daemon stop?)",
        api.server()
    )
}

/// Prints one record; the exit code once the run is over. Output is flushed at once: the
/// process may exit right after, and a piece without a line break would be lost in a buffer.
fn print(record: RunRecord) -> anyhow::Result<Option<i32>> {
    match record {
        RunRecord::Started { container } => tracing::debug!(%container, "one-off started"),
        RunRecord::Alive => {}
        RunRecord::Output { stderr, bytes } => write_out(stderr, &bytes)?,
        RunRecord::Line { stderr, mut text } => {
            text.push('\n');
            write_out(stderr, text.as_bytes())?
        }
        RunRecord::Exit { code } => return Ok(Some(code.clamp(0, 255) as i32)),
        RunRecord::Error { message } => bail!("the run failed: {message}"),
    }
    Ok(None)
}

fn write_out(stderr: bool, bytes: &[u8]) -> std::io::Result<()> {
    if stderr {
        let mut err = std::io::stderr().lock();
        err.write_all(bytes)?;
        err.flush()
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }
}
