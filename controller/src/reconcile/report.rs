//! Stage 4, **report**: the plan's last step. The status computed from what acting left
//! (written only when it changed, guarded by the spec it describes), the service's metrics,
//! the dependents that decide on this service, and when to look again.

use std::time::Duration;
use tokio::time::Instant;

use super::backend::{Done, Observation};
use super::backoff::{ServiceHistory, Timing};
use super::context::{Action, Context};
use super::drift::{Drift, DriftKind};
use super::error::ReconcileError;
use super::memory::{echoed, last_written, Rollout, ServiceMemory};
use super::plan::Plan;
use super::status;
use crate::key::ObjectKey;
use crate::runtime::Observed;
use crate::store::now_rfc3339;

/// How long an unconverged service waits before it is looked at again without an event.
pub const UNCONVERGED_RECHECK: Duration = Duration::from_secs(10);

/// What the steps so far did, for the ones after them.
#[derive(Clone, Default)]
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
    let converged = status.is_converged(service.generation, service.spec.replicas)
        && by_kind.iter().all(|(_, n)| *n == 0);
    ctx.metrics
        .observe_service(service, &status, converged, &by_kind);
    measure(ctx, obs, plan, &status, converged);
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

/// What a status says for the service's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Moment {
    /// The spec changed since the last status.
    pub new_generation: bool,
    /// Converged, and no replica drifts.
    pub converged: bool,
    /// Every replica runs the current spec (drift aside).
    pub rolled_out: bool,
    /// Some replicas run an earlier spec.
    pub outdated: bool,
    pub paused: bool,
    /// Rolled back by capstan (that rollout was counted when it was decided).
    pub rolled_back: bool,
}

/// What the clocks measured.
#[derive(Debug, Default, PartialEq)]
pub struct Measured {
    pub converged_after: Option<Duration>,
    /// A rollout ended after this long, and whether it counts as completed.
    pub rollout_ended: Option<(Duration, bool)>,
    pub rollout_paused: bool,
}

/// Moves the service's convergence and rollout clocks. Convergence counts from a new
/// generation or from drift to the next converged status; a rollout from the first status
/// with outdated replicas to the spec's rollout converging, its pause counted once. Pure.
pub fn tick(m: &mut ServiceMemory, at: Moment, now: Instant) -> Measured {
    let mut measured = Measured::default();
    if at.new_generation {
        m.unconverged_since.get_or_insert(now);
    }
    match at.converged {
        true => measured.converged_after = m.unconverged_since.take().map(|t0| now - t0),
        false => _ = m.unconverged_since.get_or_insert(now),
    }
    if at.rolled_out {
        let took = m.rollout.take().map(|r| now - r.since);
        measured.rollout_ended = took.map(|t| (t, !at.rolled_back));
    } else if at.outdated {
        let rollout = m.rollout.get_or_insert(Rollout {
            since: now,
            pause_counted: false,
        });
        if at.paused && !rollout.pause_counted {
            rollout.pause_counted = true;
            measured.rollout_paused = true;
        }
    }
    measured
}

/// The clocks moved by `status`, and what they measured, to the metrics.
fn measure(
    ctx: &Context,
    obs: &Observation,
    plan: &Plan,
    status: &capstan_api::object::ServiceStatus,
    converged: bool,
) {
    let service = &obs.service;
    let (stack, name, replicas) = (&service.stack, &service.name, service.spec.replicas);
    let at = Moment {
        new_generation: (obs.previous.as_ref())
            .is_some_and(|p| p.observed_generation != service.generation),
        converged,
        rolled_out: status.is_converged(service.generation, replicas),
        outdated: status.updated < replicas.min(status.replicas),
        paused: plan.progress.paused.is_some(),
        rolled_back: service.rolled_back.is_some(),
    };
    let now = Instant::now();
    let measured = ctx.memory.update(stack, name, |m| tick(m, at, now));
    if let Some(took) = measured.converged_after {
        ctx.metrics.converged_after(stack, name, took);
    }
    if let Some((took, completed)) = measured.rollout_ended {
        ctx.metrics.rollout_ended(stack, name, took, completed);
    }
    if measured.rollout_paused {
        ctx.metrics.rollout_paused(stack, name);
    }
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
    let written = ctx.env().write_status(service, status).await;
    written.map(|_| ()).map_err(ReconcileError::Status)
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
    let mine = ctx.memory.read(stack, name, |m| m.status.clone());
    let previous = last_written(mine.as_ref(), stored);
    let status = status::engine_unreachable(previous.as_deref(), &now_rfc3339());
    if previous.as_deref() != Some(&status) {
        write(ctx, &service, &status).await?;
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_is_timed_once_from_its_first_outdated_status_and_its_pause_counted_once() {
        let (mut m, t0) = (ServiceMemory::default(), Instant::now());
        let s = |secs| t0 + Duration::from_secs(secs);
        let rolling = Moment {
            outdated: true,
            ..Default::default()
        };
        assert_eq!(tick(&mut m, rolling, s(0)), Measured::default());
        let paused = Moment {
            paused: true,
            ..rolling
        };
        assert!(tick(&mut m, paused, s(1)).rollout_paused);
        assert!(!tick(&mut m, paused, s(2)).rollout_paused, "once");
        let done = Moment {
            rolled_out: true,
            converged: true,
            ..Default::default()
        };
        let measured = tick(&mut m, done, s(5));
        assert_eq!(measured.rollout_ended, Some((Duration::from_secs(5), true)));
        assert_eq!(measured.converged_after, Some(Duration::from_secs(5)));
        assert_eq!(tick(&mut m, done, s(6)), Measured::default(), "ended once");
        assert_eq!(
            m,
            ServiceMemory::default(),
            "a converged service holds no clock"
        );
    }

    #[test]
    fn convergence_counts_from_a_new_generation_and_a_rollback_is_not_completed() {
        let (mut m, t0) = (ServiceMemory::default(), Instant::now());
        let converged = Moment {
            converged: true,
            rolled_out: true,
            ..Default::default()
        };
        assert_eq!(tick(&mut m, converged, t0), Measured::default());
        let changed = Moment {
            new_generation: true,
            converged: true,
            rolled_out: true,
            ..Default::default()
        };
        let took = tick(&mut m, changed, t0 + Duration::from_secs(3)).converged_after;
        assert_eq!(took, Some(Duration::ZERO), "converged at once");
        let outdated = Moment {
            outdated: true,
            ..Default::default()
        };
        tick(&mut m, outdated, t0);
        let back = Moment {
            rolled_back: true,
            ..converged
        };
        let ended = tick(&mut m, back, t0 + Duration::from_secs(2)).rollout_ended;
        assert_eq!(ended, Some((Duration::from_secs(2), false)));
    }
}
