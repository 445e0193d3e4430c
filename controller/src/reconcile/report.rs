//! Stage 4, **report**: the plan's last step. The status computed from what acting left
//! (written only when it changed, guarded by the spec it describes), the service's metrics,
//! the dependents that decide on this service, and when to look again.

use std::time::Duration;

use super::backend::{Done, Observation};
use super::backoff::{ServiceHistory, Timing};
use super::context::{Action, Context};
use super::drift::{Drift, DriftKind};
use super::error::ReconcileError;
use super::memory::{echoed, last_written};
use super::plan::Plan;
use super::status;
use crate::key::ObjectKey;
use crate::runtime::Observed;
use crate::store::now_rfc3339;

/// How long an unconverged service waits before it is looked at again without an event.
pub const UNCONVERGED_RECHECK: Duration = Duration::from_secs(10);

/// What the steps so far did, for the ones after them.
#[derive(Default)]
pub struct Acted {
    /// The replicas as they run now (as observed, until listed again).
    pub replicas: Vec<Observed>,
    /// The backend's work: problems, heal events, health output.
    pub done: Done,
    /// Whether the replicas were listed again after the work.
    pub relisted: bool,
}

/// Computes the status, writes it if it changed, and queues `dependents` then.
pub async fn write_status(
    ctx: &Context,
    obs: &Observation,
    plan: &Plan,
    acted: &Acted,
    dependents: &[String],
) -> Result<Action, ReconcileError> {
    let service = &obs.service;
    let (stack, name) = (service.stack.as_str(), service.name.as_str());
    if (obs.previous.as_ref()).is_some_and(|p| p.observed_generation != service.generation) {
        ctx.metrics.generation_changed(stack, name);
    }
    let memory = ctx.memory.recall(stack, name);
    // A `PullingImage` status written while acting counts as the last one.
    let last = last_written(memory.status.as_ref(), obs.stored.clone());
    let history = ServiceHistory {
        memory: &memory,
        clock: &ctx.clock,
        timing: Timing::of(&service.spec),
        now: tokio::time::Instant::now(),
    };
    let problems = match acted.done.problems.is_empty() {
        true => still_unmade(ctx, obs, acted),
        false => acted.done.problems.clone(),
    };
    let now = now_rfc3339();
    let status = status::compute(status::Inputs {
        service,
        observed: &acted.replicas,
        progress: &plan.progress,
        gate: &obs.gate,
        problems: &problems,
        history: &history,
        health_output: &acted.done.health_output,
        new_events: acted.done.events.clone(),
        previous: last.as_deref(),
        now: &now,
    });
    let changed_outside = plan.progress.changed_outside;
    let drift = Drift::of(service, &acted.replicas, changed_outside);
    let by_kind = DriftKind::ALL.map(|k| (k.as_str(), drift.get(k)));
    ctx.metrics.observe_service(service, &status, &by_kind);
    (ctx.metrics).observe_rollout(service, &status, plan.progress.paused.is_some());
    if last.as_deref() == Some(&status) {
        ctx.memory
            .update(stack, name, |m| echoed(&mut m.status, obs.stored.as_ref()));
    } else {
        write(ctx, service, &status).await?;
        // Dependents decide on this service's state: let them look again.
        for dependent in dependents {
            ctx.scheduler
                .enqueue(ObjectKey::Service(stack.to_string(), dependent.clone()));
        }
    }
    let image = problems.iter().find(|p| p.is_image());
    if let Some(p) = image {
        // The status says why; the key backs off like any failing one.
        return Err(ReconcileError::Image {
            reason: p.reason,
            message: p.message.clone(),
        });
    }
    let progress = &plan.progress;
    let waiting = (progress.backing_off.values())
        .chain(progress.settling.values())
        .chain(progress.rollout_wait.iter());
    Ok(match waiting.min() {
        Some(left) => Action::Requeue(*left),
        None if status.is_ready() => Action::AwaitChange,
        None => Action::Requeue(UNCONVERGED_RECHECK),
    })
}

/// Why the replicas not made yet could not be made, as remembered from earlier tries; the
/// causes of replicas that exist now are forgotten.
fn still_unmade(ctx: &Context, obs: &Observation, acted: &Acted) -> Vec<super::status::Problem> {
    let made: std::collections::BTreeSet<u32> =
        acted.replicas.iter().filter_map(|c| c.ordinal).collect();
    let service = &obs.service;
    ctx.memory.update(&service.stack, &service.name, |m| {
        m.unmade.retain(|n, _| !made.contains(n));
        m.unmade.values().cloned().collect()
    })
}

/// Writes `status`, guarded by the spec's resourceVersion: a status for a superseded spec
/// is dropped. This process remembers its own write until the store echoes it.
async fn write(
    ctx: &Context,
    service: &capstan_api::object::Service,
    status: &capstan_api::object::ServiceStatus,
) -> Result<(), ReconcileError> {
    let written = ctx
        .store
        .write_status(service, status)
        .await
        .map_err(ReconcileError::Status)?;
    if written {
        let status = std::sync::Arc::new(status.clone());
        ctx.memory
            .update(&service.stack, &service.name, |m| m.status = Some(status));
    }
    Ok(())
}

/// While the engine does not answer: the service's status says so (written once, as it
/// changes), and the key looks again soon.
pub async fn engine_unreachable(
    ctx: &Context,
    stack: &str,
    name: &str,
) -> Result<Action, ReconcileError> {
    let again = Ok(Action::Requeue(Duration::from_secs(2)));
    let Some(service) = ctx.desired.service(stack, name) else {
        return again;
    };
    let stored = ctx.desired.status(stack, name);
    let mine = ctx.memory.recall(stack, name).status;
    let previous = last_written(mine.as_ref(), stored);
    let status = status::engine_unreachable(previous.as_deref(), &now_rfc3339());
    if previous.as_deref() != Some(&status) {
        write(ctx, &service, &status).await?;
    }
    again
}
