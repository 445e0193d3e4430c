//! Stage 3, **act**: carries out a plan's steps, in order, and nothing else: [`act`] for a
//! present service, [`take_down`] for one that is gone, [`act_stack`] for a stack's key. A
//! step that fails ends the reconcile with its error, except a replica that could not be
//! removed: the status names it first.

use capstan_api::object::{HealAction, HealCause, HealEvent, Reason, Stack};
use std::collections::BTreeSet;

use super::backend::Observation;
use super::backend::Work;
use super::context::{Action, Context};
use super::error::reason_of;
use super::error::ReconcileError;
use super::memory::echoed;
use super::plan::Step;
use super::plan::{GonePlan, GoneStep, Plan, StackPlan, StackStep};
use super::report::{self, Acted};
use super::status::Problem;
use crate::key::ObjectKey;
use crate::runtime::Observed;

pub async fn act(ctx: &Context, obs: &Observation, plan: &Plan) -> Result<Action, ReconcileError> {
    let mut acted = Acted {
        replicas: obs.replicas.clone(),
        ..Default::default()
    };
    acted.done.problems = plan.progress.problems.clone();
    let mut action = plan.next;
    for step in &plan.steps {
        if let Some(next) = one(ctx, obs, plan, step, &mut acted).await? {
            action = next;
        }
    }
    Ok(action)
}

/// The backend's work, then the events of replicas made again after they vanished.
async fn work_on(
    ctx: &Context,
    obs: &Observation,
    plan: &Plan,
    work: &[&dyn Work],
    acted: &mut Acted,
) -> Result<(), ReconcileError> {
    let done = ctx.backend.execute(&ctx.env(), obs, work).await?;
    acted.done.problems.extend(done.problems);
    acted.done.events.extend(done.events);
    acted.done.health_output.extend(done.health_output);
    let failed: BTreeSet<u32> = acted.done.problems.iter().map(|p| p.ordinal).collect();
    let service = &obs.service;
    for n in plan
        .progress
        .vanished
        .iter()
        .filter(|n| !failed.contains(n))
    {
        let replica = service.spec.replica_name(&service.stack, &service.name, *n);
        tracing::info!(stack = %service.stack, service = %service.name, %replica, reason = "removed", "replaced a removed replica");
        acted.done.events.push(HealEvent {
            time: obs.now_rfc3339.clone(),
            replica,
            action: HealAction::Replace,
            reason: HealCause::Removed,
            message: "the container was removed; a new one was created".to_string(),
        });
    }
    for e in &acted.done.events {
        ctx.metrics.heal(&service.stack, &service.name, e.reason);
    }
    Ok(())
}

/// A replica that cannot be removed is named in the status; the key backs off.
async fn removal_reported(
    ctx: &Context,
    obs: &Observation,
    plan: &Plan,
    acted: &Acted,
    e: ReconcileError,
) -> ReconcileError {
    let ReconcileError::Remove { name, source } = &e else {
        return e;
    };
    let ordinal = (obs.replicas.iter())
        .find(|c| c.name == *name)
        .and_then(|c| c.ordinal);
    let mut acted = acted.clone();
    acted.done.problems = vec![Problem {
        ordinal: ordinal.unwrap_or(0),
        reason: reason_of(source),
        message: e.to_string(),
    }];
    if let Err(w) = report::write_status(ctx, obs, plan, &acted, &[]).await {
        let service = &obs.service;
        tracing::warn!(stack = %service.stack, service = %service.name, error = %w, "status of a failed removal not written");
    }
    e
}

/// One step; `Some`: when to look again.
async fn one(
    ctx: &Context,
    obs: &Observation,
    plan: &Plan,
    step: &Step,
    acted: &mut Acted,
) -> Result<Option<Action>, ReconcileError> {
    let service = &obs.service;
    let (stack, name) = (service.stack.as_str(), service.name.as_str());
    match step {
        Step::Remember(seen) => ctx.memory.update(stack, name, |m| seen.apply(m)),
        Step::RollBack { reason } => roll_back(ctx, obs, reason).await?,
        Step::Publish { leaving } => {
            let unserved = publish(ctx, obs, &acted.replicas, leaving).await?;
            acted.done.problems.extend(unserved);
        }
        Step::Republish => {
            let mut after = ctx.backend.replicas(stack, name, true).await?;
            ctx.backend.as_reported(obs, &mut after);
            acted.replicas = after;
            acted.relisted = true;
            let unserved = publish(ctx, obs, &acted.replicas, &BTreeSet::new()).await?;
            acted.done.problems.extend(unserved);
        }
        Step::RequestRestarts { dependents } => {
            for dependent in dependents {
                ctx.memory.update(stack, dependent, |m| {
                    m.owed_restarts.insert(name.to_string())
                });
                let key = ObjectKey::Service(stack.to_string(), dependent.clone());
                ctx.scheduler.enqueue(key);
            }
        }
        Step::WriteStatus { dependents } => {
            if !acted.relisted {
                ctx.backend.as_reported(obs, &mut acted.replicas);
            }
            return report::write_status(ctx, obs, plan, acted, dependents)
                .await
                .map(Some);
        }
        Step::Work(work) => {
            let work: Vec<&dyn Work> = work.iter().map(|w| w.as_ref()).collect();
            if let Err(e) = work_on(ctx, obs, plan, &work, acted).await {
                return Err(removal_reported(ctx, obs, plan, acted, e).await);
            }
        }
    }
    Ok(None)
}

/// `failure_action: rollback`: the previous revision's spec is stored again, recording the
/// rollback, and the rollout that follows replaces the failed replicas.
async fn roll_back(ctx: &Context, obs: &Observation, reason: &str) -> Result<(), ReconcileError> {
    let service = &obs.service;
    let written = ctx
        .store
        .roll_back(&service.stack, &service.name, service.generation, reason)
        .await
        .map_err(ReconcileError::Status)?;
    if written.is_some() {
        tracing::warn!(stack = %service.stack, service = %service.name, "{reason}");
        ctx.metrics.rolled_back(&service.stack, &service.name);
    }
    Ok(())
}

/// Points traffic at the ready replicas not `leaving`; ports that could not be served are
/// problems. Remembers the endpoints written.
async fn publish(
    ctx: &Context,
    obs: &Observation,
    replicas: &[Observed],
    leaving: &BTreeSet<String>,
) -> Result<Vec<Problem>, ReconcileError> {
    let service = &obs.service;
    let (stack, name) = (service.stack.as_str(), service.name.as_str());
    let stored = ctx.desired.endpoints(stack, name);
    let mine = ctx.memory.read(stack, name, |m| m.endpoints.clone());
    let last = super::memory::last_written(mine.as_ref(), stored.clone());
    let published = (ctx.traffic)
        .publish(service, replicas, leaving, obs.started, last)
        .await?;
    ctx.memory.update(stack, name, |m| match published.written {
        Some(eps) => m.endpoints = Some(eps),
        None => echoed(&mut m.endpoints, stored.as_ref()),
    });
    let unserved = published.unserved.into_iter().map(|u| Problem {
        ordinal: 0,
        reason: Reason::PortInUse,
        message: format!("cannot listen on {} for the proxy: {}", u.bind, u.error),
    });
    Ok(unserved.collect())
}

/// Carries out the plan of a service that is gone: none of its steps needs an observation.
pub async fn take_down(
    ctx: &Context,
    stack: &str,
    name: &str,
    plan: &GonePlan,
) -> Result<Action, ReconcileError> {
    for step in &plan.steps {
        match step {
            GoneStep::Unpublish => {
                let had = ctx.memory.read(stack, name, |m| m.endpoints.is_some());
                ctx.traffic.unpublish(stack, name, had).await?;
            }
            GoneStep::TakeDown(work) => {
                ctx.backend.take_down_now(&ctx.env(), work.as_ref()).await?
            }
            GoneStep::DeleteStatus => {
                let deleted = ctx.store.delete_status(stack, name).await;
                deleted.map_err(ReconcileError::Status)?;
            }
            GoneStep::Forget => forget(ctx, stack, name),
            GoneStep::Enqueue(key) => ctx.scheduler.enqueue(key.clone()),
        }
    }
    Ok(plan.next)
}

/// Carries out the plan of a stack's key.
pub async fn act_stack(
    ctx: &Context,
    stack: &Stack,
    plan: &StackPlan,
) -> Result<Action, ReconcileError> {
    let mut action = plan.next;
    for step in &plan.steps {
        match step {
            StackStep::Work(work) => {
                let work: Vec<&dyn Work> = work.iter().map(|w| w.as_ref()).collect();
                if !ctx.backend.execute_stack(&work).await? {
                    action = Action::Requeue(std::time::Duration::from_secs(2));
                }
            }
            StackStep::Enqueue(key) => ctx.scheduler.enqueue(key.clone()),
            StackStep::Finalize => {
                let finalized = ctx.store.finalize_deletion(stack).await;
                finalized.map_err(|source| ReconcileError::Finalize {
                    stack: stack.name.clone(),
                    source,
                })?;
                tracing::info!(stack = %stack.name, "stack deleted");
            }
        }
    }
    Ok(action)
}

/// Forgets everything this process keeps for a service that is gone: its memory, its
/// metric series and clocks, its proxy listeners.
fn forget(ctx: &Context, stack: &str, name: &str) {
    ctx.memory.forget(stack, name);
    ctx.metrics.forget_service(stack, name);
    ctx.traffic.forget(stack, name);
}
