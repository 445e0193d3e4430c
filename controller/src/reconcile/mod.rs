//! `reconcile(key, ctx) -> Result<Action>`: level-triggered and idempotent. It never learns
//! why it was called. A service key runs a pipeline of three stages, each in its own file
//! with a type between them:
//!
//! ```text
//! observe ──Observation──► plan (pure) ──Plan──► act ──► Action
//! ```
//!
//! - [`observe`]: desired state from the reflector, the replicas and what the backend reads
//!   for its planner, the `depends_on` gate, and a copy of what this daemon remembers of
//!   the service ([`memory`]). Reads only.
//! - [`plan`]: every step the reconcile takes, in order: the memory it writes, the
//!   rollback, traffic before and after, the backend's work, dependents' restarts, and the
//!   status write ([`report`]) last. Pure.
//! - [`act`]: carries the steps out, and nothing else.
//!
//! The service level knows replicas only as [`crate::runtime::Observed`]; observing,
//! planning and executing their work sits behind [`backend::Backend`], of which
//! [`containers`] is the Docker engine's. A stack key reconciles the stack's own part
//! ([`stack`]). Around them: [`context`] (what every stage shares), [`status`] and [`drift`]
//! (pure), [`deps`] (the gate), [`backoff`] (per-replica crash-loop back-off), [`error`]
//! (failures, and how long a failing key waits).

pub mod act;
pub mod backend;
pub mod backoff;
pub mod containers;
pub mod context;
pub mod deps;
pub mod drift;
pub mod error;
pub mod memory;
pub mod observe;
pub mod plan;
pub mod report;
pub mod stack;
pub mod status;

use futures::future::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use context::{Action, Context};
pub use error::{error_policy, ReconcileError};

use crate::key::ObjectKey;
use backend::Mode;
use observe::Seen;

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

/// The pipeline: observe → plan → act.
async fn reconcile_service(
    stack: &str,
    name: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let obs = match observe::observe(ctx, stack, name).await? {
        Seen::Present(obs) => obs,
        Seen::NotYetListed => return Ok(Action::Requeue(Duration::from_secs(1))),
        Seen::UnknownStack { replicas } => {
            // Of a deleted stack (its services' keys are queued when its record goes), or
            // of another installation's: nothing here is kept for it.
            if replicas > 0 {
                tracing::debug!(
                    stack,
                    service = name,
                    replicas,
                    "replicas of an unknown stack left alone"
                );
            }
            return act::take_down(ctx, stack, name, &plan::forget()).await;
        }
        Seen::Removed {
            stack: record,
            service,
            replicas,
            has_status,
        } => {
            let backend = &*ctx.backend;
            let service = service.as_deref();
            let plan = plan::take_down(backend, &record, name, service, &replicas, has_status);
            return act::take_down(ctx, stack, name, &plan).await;
        }
    };
    let plan = plan::plan(&obs, &*ctx.backend, Mode::Converge);
    act::act(ctx, &obs, &plan).await
}

/// While etcd is unreachable: restart the replicas of what the last synced cache says that
/// exited or turned unhealthy (as the restart policy and back-off allow), and nothing else:
/// no create, no removal, no status. The statuses owed are written once etcd is back.
async fn heal_only(stack: &str, name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let obs = match observe::observe(ctx, stack, name).await? {
        Seen::Present(obs) => obs,
        _ => return Ok(Action::Requeue(Duration::from_secs(2))),
    };
    let plan = plan::plan(&obs, &*ctx.backend, Mode::HealOnly);
    act::act(ctx, &obs, &plan).await
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
