//! `reconcile(key, ctx) -> Result<Action>`: level-triggered and idempotent. It never learns
//! why it was called. A service key runs a pipeline of four stages, each in its own file
//! with a type between them:
//!
//! ```text
//! observe ──Observation──► plan (pure) ──Plan──► act ──Outcome──► report ──► Action
//! ```
//!
//! - [`observe`]: desired state from the reflector, containers from the container
//!   reflector, the `depends_on` gate.
//! - [`plan`]: what to do, decided purely from spec and containers.
//! - [`act`]: traffic leaves first, then the engine calls; the service is listed again.
//! - [`report`]: status (written last, only when it changed), metrics, dependents, requeue.
//!
//! A stack key reconciles the stack's own part ([`stack`]). Around them: [`shape`] (the
//! engine objects a spec becomes), [`status`] and [`drift`] (pure), [`deps`] (the gate),
//! [`backoff`] (per-replica crash-loop back-off), [`scratch`] (what this process wrote
//! last), [`error`] (failures, and how long a failing key waits), [`pull`] (the image made
//! present per `pull_policy` before replicas are created), [`pairing`] (a sidecar's replicas
//! beside its partner's: observed with the service, refining its plan).

pub mod act;
pub mod backoff;
pub mod deps;
pub mod drift;
pub mod error;
pub mod observe;
pub mod pairing;
pub mod plan;
pub mod pull;
pub mod report;
pub mod scratch;
pub mod shape;
pub mod stack;
pub mod status;

use futures::future::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use error::{error_policy, ReconcileError};

use crate::key::ObjectKey;
use crate::metrics::Metrics;
use crate::runtime::reflector::Containers;
use crate::runtime::Runtime;
use crate::scheduler::{FailureBackoff, Scheduler};
use crate::store::Store;
use crate::traffic::Traffic;
use crate::watch::Desired;
use backoff::RestartBook;
use observe::Seen;

/// What the reconcilers share. Each field is one collaborator of the pipeline.
pub struct Context {
    /// Status and deletion writes (desired state is read from `desired`).
    pub store: Store,
    /// The reflector's read-only view of desired state.
    pub desired: Desired,
    /// The engine's containers, listed once and kept fresh by events.
    pub containers: Arc<Containers>,
    /// The engine's verbs (create, start, remove, networks, volumes).
    pub runtime: Arc<dyn Runtime>,
    /// Where dependents and follow-ups are queued.
    pub scheduler: Arc<Scheduler<ObjectKey>>,
    /// Per-key exponential back-off of failing reconciles.
    pub failures: FailureBackoff<ObjectKey>,
    /// Per-replica crash-loop back-off.
    pub restarts: RestartBook,
    /// What this process wrote last, and what it still owes.
    pub scratch: scratch::Scratch,
    /// Endpoints, the built-in proxy, Traefik.
    pub traffic: Traffic,
    pub metrics: Arc<Metrics>,
    /// Replica operations (create+start, stop+remove, restart) in flight across all
    /// reconciles. One service's replicas go to the engine at once up to this bound, so a
    /// big scale-up is as fast as the engine allows, and many services together cannot
    /// swamp it (`serve --engine-parallelism`).
    pub engine_slots: tokio::sync::Semaphore,
    /// Whether this daemon may act, and how: workers wait while it follows; an isolated
    /// leader (etcd unreachable) only heals.
    pub leadership: crate::leader::Leadership,
    /// Whether the engine answers: while it does not, statuses say so and nothing is tried.
    pub health: Arc<crate::health::Health>,
    /// When each image was last pulled, and its failed pulls' back-off.
    pub pulls: pull::Pulls,
    /// Secrets and configs written on the host for the replicas.
    pub files: crate::files::HostFiles,
    /// The bind rule checked again when a container is made ([`shape::bind_refused`]).
    pub policy: Option<Arc<capstan_api::policy::Policy>>,
}

/// When to look at a key again, besides events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more to wait for; events and the periodic resync will call again.
    AwaitChange,
    Requeue(Duration),
}

pub async fn reconcile(key: &ObjectKey, ctx: &Context) -> Result<Action, ReconcileError> {
    if ctx.leadership.is_isolated() {
        return match key {
            ObjectKey::Service(stack, service) => heal_only(stack, service, ctx).await,
            ObjectKey::Stack(_) => Ok(Action::Requeue(Duration::from_secs(2))),
        };
    }
    if !ctx.desired.is_synced() {
        // Frozen: never act on desired state we could not read.
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    if ctx.health.docker_down() {
        return match key {
            ObjectKey::Service(stack, service) => {
                report::engine_unreachable(ctx, stack, service).await
            }
            ObjectKey::Stack(_) => Ok(Action::Requeue(Duration::from_secs(2))),
        };
    }
    match key {
        ObjectKey::Service(stack, service) => reconcile_service(stack, service, ctx).await,
        ObjectKey::Stack(stack) => stack::reconcile_stack(stack, ctx).await,
    }
}

/// The pipeline: observe → plan → act → report.
async fn reconcile_service(
    stack: &str,
    name: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let obs = match observe::observe(ctx, stack, name).await? {
        Seen::Present(obs) => obs,
        Seen::NotYetListed => return Ok(Action::Requeue(Duration::from_secs(1))),
        Seen::UnknownStack { containers } => {
            // Of a deleted stack (its services' keys are queued when its record goes), or
            // of another installation's: nothing here is kept for it.
            stack::forget_service(ctx, stack, name);
            if containers > 0 {
                tracing::debug!(
                    stack,
                    service = name,
                    containers,
                    "containers of an unknown stack left alone"
                );
            }
            return Ok(Action::AwaitChange);
        }
        Seen::Removed {
            stack,
            service,
            containers,
        } => {
            return stack::take_down_service(ctx, &stack, name, service.as_deref(), &containers)
                .await
        }
    };
    let mut plan = plan_for(ctx, stack, name, &obs);
    if let Some(failed) = plan.rollback.take() {
        if roll_back(ctx, &obs, &failed).await? {
            return Ok(Action::Requeue(Duration::from_secs(1)));
        }
        plan.paused = Some(failed);
    }
    let outcome = match act::act(ctx, &obs, &plan).await {
        Err(e) => {
            // A replica that cannot be removed is named in the status; the key backs off.
            if let Some(failed) = act::Outcome::removal_failed(&obs, &e) {
                if let Err(w) = report::report(ctx, &obs, &plan, failed).await {
                    tracing::warn!(stack, service = name, error = %w, "status of a failed removal not written");
                }
            }
            return Err(e);
        }
        Ok(outcome) => outcome,
    };
    let mut obs = obs;
    if ctx.pulls.take_announced(stack, name) {
        // A `PullingImage` status was written meanwhile: the report compares against it.
        obs.previous = ctx.scratch.last_status(&ctx.desired, stack, name);
    }
    let image_problem = outcome.problems.iter().find(|p| p.is_image()).cloned();
    let action = report::report(ctx, &obs, &plan, outcome).await?;
    match image_problem {
        // The status says why; the key backs off like any failing one.
        Some(p) => Err(ReconcileError::Image {
            reason: p.reason,
            message: p.message,
        }),
        None => Ok(action),
    }
}

/// `failure_action: rollback`: the previous revision's spec is stored again, recording the
/// rollback, and the rollout that follows replaces the failed replicas. False when there is
/// nothing to return to (a first revision, or a rollback that failed too): the rollout pauses.
async fn roll_back(
    ctx: &Context,
    obs: &observe::Observation,
    failed: &str,
) -> Result<bool, ReconcileError> {
    let service = &obs.service;
    let Some(to) = service.previous().filter(|_| service.rolled_back.is_none()) else {
        return Ok(false);
    };
    let message = format!(
        "update to generation {} failed and was rolled back to revision {} (generation {}): {failed}{}",
        service.generation,
        to.meta.number,
        to.generation,
        health_notes(ctx, obs).await
    );
    let written = ctx
        .store
        .roll_back(&service.stack, &service.name, service.generation, &message)
        .await
        .map_err(ReconcileError::Status)?;
    if written.is_some() {
        tracing::warn!(stack = %service.stack, service = %service.name, "{message}");
        ctx.metrics.rolled_back(&service.stack, &service.name);
    }
    Ok(true)
}

/// The last health-check output of each unhealthy replica of the current spec, for a
/// rollback's message ("; last health check of web-2: ...").
async fn health_notes(ctx: &Context, obs: &observe::Observation) -> String {
    let hash = obs.service.spec.container_hash();
    let mut notes = String::new();
    let unhealthy = obs
        .containers
        .iter()
        .filter(|c| c.spec_hash == hash && c.health == crate::runtime::Health::Unhealthy);
    for c in unhealthy {
        if let Ok(Some(out)) = ctx.runtime.inspect(&c.id).await.map(|d| d.health_output) {
            notes.push_str(&format!(
                "; last health check of {}: {}",
                c.name,
                out.trim()
            ));
        }
    }
    notes
}

/// The plan for what `obs` saw, with the service's restart history, continued from the
/// crash-loop positions its stored status carries when this daemon has none of its own yet.
fn plan_for(ctx: &Context, stack: &str, name: &str, obs: &observe::Observation) -> plan::Plan {
    if let Some(stored) = ctx.desired.status(stack, name) {
        ctx.restarts.adopt(stack, name, &stored);
    }
    let history = ctx
        .restarts
        .for_service(stack, name, backoff::Timing::of(&obs.service.spec));
    let spec = &obs.service.spec;
    let mut plan = plan::plan(
        stack,
        name,
        spec,
        &obs.containers,
        &history,
        (obs.gate.is_open(), spec.surge_blocker(&obs.stack.volumes)),
    );
    if let Some(pairing) = &obs.pairing {
        pairing.refine(stack, spec.replicas, &mut plan, &obs.containers);
    }
    plan
}

/// While etcd is unreachable: restart the replicas of what the last synced cache says that
/// exited or turned unhealthy (as the restart policy and back-off allow), and nothing else:
/// no create, no removal, no status. The statuses owed are written once etcd is back.
async fn heal_only(stack: &str, name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let again = Ok(Action::Requeue(Duration::from_secs(2)));
    let obs = match observe::observe(ctx, stack, name).await? {
        Seen::Present(obs) => obs,
        _ => return again,
    };
    let full = plan_for(ctx, stack, name, &obs);
    let heals = plan::Plan {
        heal: full
            .heal
            .into_iter()
            .filter(|(_, _, action)| *action != plan::HealAction::Replace)
            .collect(),
        ..Default::default()
    };
    if !heals.is_empty() {
        act::heal(ctx, &obs, &heals).await?;
    }
    again
}

/// A worker: takes keys from the scheduler until shutdown, one at a time.
pub async fn worker(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let mut leadership = ctx.leadership.clone();
    loop {
        tokio::select! {
            _ = leadership.acting() => {}
            _ = shutdown.changed() => return,
        }
        let key = tokio::select! {
            k = ctx.scheduler.next() => k,
            _ = shutdown.changed() => return,
        };
        let started = Instant::now();
        let result = reconcile_catching_panics(&key, &ctx).await;
        settle(&ctx, &key, result, started);
        ctx.scheduler.done(&key);
        ctx.metrics.set_queue_depth(ctx.scheduler.depth());
        if *shutdown.borrow() {
            return;
        }
    }
}

/// A bug in one reconcile must not take its worker down with the key still marked as
/// running: that service would never be reconciled again.
async fn reconcile_catching_panics(
    key: &ObjectKey,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    match std::panic::AssertUnwindSafe(reconcile(key, ctx))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(key = %key, panic = %msg, "reconcile panicked; this is a bug");
            Err(ReconcileError::Panicked(msg))
        }
    }
}

/// Requeues `key` as its result says, with per-key exponential back-off after a failure,
/// and records the result.
fn settle(
    ctx: &Context,
    key: &ObjectKey,
    result: Result<Action, ReconcileError>,
    started: Instant,
) {
    let kind = match key {
        ObjectKey::Service(..) => "service",
        ObjectKey::Stack(_) => "stack",
    };
    let took = started.elapsed();
    tracing::debug!(key = %key, result = ?result.as_ref().map_err(|e| e.to_string()), took_ms = took.as_millis() as u64, "reconciled");
    let action = match result {
        Ok(action) => {
            if ctx.failures.succeeded(key) {
                tracing::info!(key = %key, "reconcile succeeded again");
                ctx.metrics.backing_off(&key.to_string(), None);
            }
            action
        }
        Err(e) => {
            let (delay, failures) = ctx.failures.failed(key, error_policy(&e));
            tracing::warn!(key = %key, error = %e, failures, retry_in_ms = delay.as_millis() as u64, "reconcile failed; backing off");
            ctx.metrics
                .reconciled(kind, "error", took, Some(e.kind().as_str()));
            ctx.metrics.backing_off(&key.to_string(), Some(delay));
            ctx.scheduler.enqueue_after(key.clone(), delay);
            return;
        }
    };
    match action {
        Action::AwaitChange => ctx.metrics.reconciled(kind, "success", took, None),
        Action::Requeue(after) => {
            ctx.metrics.reconciled(kind, "requeue", took, None);
            ctx.scheduler.enqueue_after(key.clone(), after);
        }
    }
}
