//! Stage 4, **report**: the status computed from what acting left (written last, only when
//! it changed, guarded by the spec it describes), the service's metrics, the dependents
//! that decide on this service, and when to look again.

use std::time::Duration;

use super::act::Outcome;
use super::drift::{Drift, DriftKind};
use super::observe::{dependents, Observation};
use super::plan::Plan;
use super::{status, Action, Context, ReconcileError};
use crate::key::ObjectKey;
use crate::store::now_rfc3339;

/// How long an unconverged service waits before it is looked at again without an event.
pub const UNCONVERGED_RECHECK: Duration = Duration::from_secs(10);

pub async fn report(
    ctx: &Context,
    obs: &Observation,
    plan: &Plan,
    mut outcome: Outcome,
) -> Result<Action, ReconcileError> {
    let service = &obs.service;
    if let Some(pairing) = &obs.pairing {
        pairing.hold_readiness(&mut outcome.containers);
    }
    let (stack, name) = (service.stack.as_str(), service.name.as_str());
    if obs
        .previous
        .as_ref()
        .is_some_and(|p| p.observed_generation != service.generation)
    {
        ctx.metrics.generation_changed(stack, name);
    }
    for e in &outcome.events {
        ctx.metrics.heal(stack, name, e.reason);
    }
    let history = ctx
        .restarts
        .for_service(stack, name, super::backoff::Timing::of(&service.spec));
    let now = now_rfc3339();
    let status = status::compute(status::Inputs {
        service,
        observed: &outcome.containers,
        plan,
        gate: &obs.gate,
        problems: &outcome.problems,
        history: &history,
        health_output: &outcome.health_output,
        new_events: outcome.events,
        previous: obs.previous.as_deref(),
        now: &now,
    });
    let drift = Drift::of(service, &outcome.containers, outcome.changed_outside);
    let by_kind = DriftKind::ALL.map(|k| (k.as_str(), drift.get(k)));
    ctx.metrics.observe_service(service, &status, &by_kind);
    ctx.metrics
        .observe_rollout(service, &status, plan.paused.is_some());
    if obs.previous.as_deref() != Some(&status) {
        // Guarded by the spec's resourceVersion: a status for a superseded spec is dropped.
        let written = ctx
            .store
            .write_status(service, &status)
            .await
            .map_err(ReconcileError::Status)?;
        if written {
            ctx.scratch.wrote_status(stack, name, status.clone());
        }
        // Dependents decide on this service's state: let them look again.
        for dependent in dependents(ctx, &obs.stack, name) {
            ctx.scheduler.enqueue(ObjectKey::Service(
                stack.to_string(),
                dependent.name.clone(),
            ));
        }
    }
    let waiting = plan
        .backing_off
        .values()
        .chain(plan.settling.values())
        .chain(plan.rollout_wait.iter());
    Ok(match waiting.min() {
        Some(left) => Action::Requeue(*left),
        None if status.is_ready() => Action::AwaitChange,
        None => Action::Requeue(UNCONVERGED_RECHECK),
    })
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
    let previous = ctx.scratch.last_status(&ctx.desired, stack, name);
    let status = status::engine_unreachable(previous.as_deref(), &now_rfc3339());
    if previous.as_deref() != Some(&status) {
        let written = ctx
            .store
            .write_status(&service, &status)
            .await
            .map_err(ReconcileError::Status)?;
        if written {
            ctx.scratch.wrote_status(stack, name, status);
        }
    }
    again
}
