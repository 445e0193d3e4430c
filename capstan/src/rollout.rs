//! `capstan rollout status|history|undo|pause|resume|restart STACK/SERVICE`, as `kubectl
//! rollout` does them. `status` follows the service's rollout until it is done; the exit
//! code says how it ended.

use capstan_api::object::ServiceView;
use std::time::{Duration, Instant};

use crate::client::{split_target, Client};
use crate::RolloutCommand;

pub async fn run(api: &Client, action: RolloutCommand) -> anyhow::Result<i32> {
    match action {
        RolloutCommand::Status { target, timeout } => {
            let (stack, service) = split_target(&target)?;
            status(api, stack, service, timeout).await
        }
        RolloutCommand::History { target } => {
            let (stack, service) = split_target(&target)?;
            crate::output::history(&api.history(stack, service).await?);
            Ok(0)
        }
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let (stack, service) = split_target(&target)?;
            let v = api.undo(stack, service, to_revision).await?;
            println!(
                "{}/{} rolled back: now revision {} (generation {}, image {})",
                v.stack, v.name, v.revision, v.generation, v.image
            );
            Ok(0)
        }
        RolloutCommand::Pause { target } => verb(api, &target, "pause", "paused").await,
        RolloutCommand::Resume { target } => verb(api, &target, "resume", "resumed").await,
        RolloutCommand::Restart { target } => verb(api, &target, "restart", "restarting").await,
    }
}

async fn verb(api: &Client, target: &str, verb: &str, done: &str) -> anyhow::Result<i32> {
    let (stack, service) = split_target(target)?;
    let v = api.rollout(stack, service, verb).await?;
    println!(
        "{}/{} {done} (revision {}, generation {})",
        v.stack, v.name, v.revision, v.generation
    );
    Ok(0)
}

/// How a rollout stands, from the service's view.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Done,
    /// Stopped for good (paused, or rolled back): exit 1 with the reason.
    Failed(String),
    InProgress(String),
}

pub fn outcome(v: &ServiceView) -> Outcome {
    let condition = |t: &str| v.conditions.iter().find(|c| c.type_ == t);
    if let Some(c) = condition("Degraded").filter(|c| c.reason == "RolledBack") {
        return Outcome::Failed(format!("rolled back: {}", c.message));
    }
    if let Some(c) = condition("Progressing").filter(|c| c.reason == "Paused") {
        return Outcome::Failed(format!("paused: {}", c.message));
    }
    if v.converged() {
        return Outcome::Done;
    }
    Outcome::InProgress(format!(
        "{}/{} replicas updated, {} ready",
        v.updated, v.replicas, v.ready
    ))
}

/// Polls until the rollout is done (0), failed (1), or `timeout` passes (1).
pub async fn status(
    api: &Client,
    stack: &str,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let view = api.service(stack, service).await?;
        match outcome(&view) {
            Outcome::Done => {
                println!(
                    "{stack}/{service} successfully rolled out (generation {})",
                    view.generation
                );
                return Ok(0);
            }
            Outcome::Failed(why) => {
                println!("{stack}/{service} {why}");
                return Ok(1);
            }
            Outcome::InProgress(line) if start.elapsed() > timeout => {
                println!("{stack}/{service} not done after {timeout:?}: {line}");
                return Ok(1);
            }
            Outcome::InProgress(line) => {
                if line != last {
                    println!("waiting for {stack}/{service}: {line}");
                    last = line;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::object::Condition;

    fn view(reason: &str, type_: &str) -> ServiceView {
        ServiceView {
            replicas: 3,
            updated: 1,
            ready: 2,
            generation: 2,
            observed_generation: 2,
            conditions: vec![Condition {
                type_: type_.into(),
                status: "True".into(),
                reason: reason.into(),
                message: "s-web-1 exited with code 3".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_rolled_back_or_paused_rollout_has_failed_and_a_rolling_one_goes_on() {
        assert_eq!(
            outcome(&view("RolledBack", "Degraded")),
            Outcome::Failed("rolled back: s-web-1 exited with code 3".into())
        );
        assert!(matches!(
            outcome(&view("Paused", "Progressing")),
            Outcome::Failed(_)
        ));
        assert_eq!(
            outcome(&view("RollingUpdate", "Progressing")),
            Outcome::InProgress("1/3 replicas updated, 2 ready".into())
        );
    }
}
