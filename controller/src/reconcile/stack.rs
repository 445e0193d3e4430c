//! A stack's own part: the networks and volumes its services use, taking down a service the
//! stack no longer names, and the teardown of a deleted stack (containers, then networks,
//! then volumes if asked, then its keys).

use capstan_api::object::{Deletion, Service, Stack};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{act, shape, Action, Context, ReconcileError};
use crate::key::ObjectKey;
use crate::runtime::{Observed, ResourcePlan, Runtime, RuntimeError};

pub async fn reconcile_stack(name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(stack) = ctx.desired.stack(name) else {
        return Ok(Action::AwaitChange);
    };
    let Some(deletion) = &stack.deletion else {
        return ensure_stack_resources(&stack, ctx).await;
    };
    let result = tear_down(&stack, deletion, ctx).await;
    let why = result.as_ref().err().map(|e| e.to_string());
    ctx.scratch.blocked.set(name, why);
    result
}

/// Takes down a service its stack no longer names (or a deleted stack's): out of traffic,
/// its replicas stopped and removed, its status and bookkeeping forgotten.
pub async fn take_down_service(
    ctx: &Context,
    stack: &Stack,
    name: &str,
    service: Option<&Service>,
    containers: &[Observed],
) -> Result<Action, ReconcileError> {
    ctx.traffic.unpublish(&stack.name, name).await?;
    ctx.metrics.forget_service(&stack.name, name);
    let grace = service.map_or(capstan_api::spec::DEFAULT_STOP_GRACE, shape::grace);
    if !containers.is_empty() {
        act::remove_all(ctx, containers, grace).await?;
        let left = ctx.containers.refresh(&stack.name, name).await;
        left.map_err(ReconcileError::List)?;
    }
    let has_status = ctx
        .scratch
        .last_status(&ctx.desired, &stack.name, name)
        .is_some();
    if has_status && stack.deletion.is_none() {
        ctx.store
            .delete_status(&stack.name, name)
            .await
            .map_err(ReconcileError::Status)?;
    }
    forget_service(ctx, &stack.name, name);
    ctx.files.remove_service(&stack.name, name);
    if stack.deletion.is_some() {
        ctx.scheduler.enqueue(ObjectKey::Stack(stack.name.clone()));
    }
    Ok(Action::AwaitChange)
}

/// Forgets everything this process keeps for a service that is gone: its metric series and
/// clocks, the scratch, the restart book, a pull announcement, the endpoints it wrote and
/// its proxy listeners. Also for a service whose stack's record is gone already: a stack
/// without replicas is finalized at once, before the workers have taken down its services.
pub fn forget_service(ctx: &Context, stack: &str, name: &str) {
    ctx.metrics.forget_service(stack, name);
    ctx.scratch.forget(stack, name);
    ctx.restarts.forget_service(stack, name);
    ctx.pulls.take_announced(stack, name);
    ctx.traffic.forget(stack, name);
}

/// Creates the networks and named volumes `services` use (idempotent); returns the networks.
pub async fn ensure_resources(
    runtime: &dyn Runtime,
    stack: &Stack,
    services: &[&Service],
) -> Result<Vec<ResourcePlan>, ReconcileError> {
    let networks = shape::networks(stack, services);
    for net in &networks {
        runtime
            .ensure_network(net)
            .await
            .map_err(resource("network", net.name.clone()))?;
    }
    for vol in shape::volumes(stack, services) {
        runtime
            .ensure_volume(&vol)
            .await
            .map_err(resource("volume", vol.name.clone()))?;
    }
    Ok(networks)
}

/// `map_err` for a failed network or volume operation.
fn resource(kind: &'static str, name: String) -> impl FnOnce(RuntimeError) -> ReconcileError {
    move |source| ReconcileError::Resource { kind, name, source }
}

fn remove_resource(kind: &'static str, name: &str) -> impl FnOnce(RuntimeError) -> ReconcileError {
    let name = name.to_string();
    move |source| ReconcileError::RemoveResource { kind, name, source }
}

/// Removes a deleted stack's containers, then its networks (and volumes, if asked), then its
/// keys.
async fn tear_down(
    stack: &Stack,
    deletion: &Deletion,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = stack.name.as_str();
    let left = ctx
        .runtime
        .list(Some(name), None)
        .await
        .map_err(ReconcileError::List)?;
    if !left.is_empty() {
        // Each service's own reconcile removes its containers (draining them first).
        let services: BTreeSet<String> = left.into_iter().map(|c| c.service).collect();
        for svc in services {
            ctx.scheduler
                .enqueue(ObjectKey::Service(name.to_string(), svc));
        }
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    let networks = ctx.runtime.stack_networks(name).await;
    for net in networks.map_err(resource("network", name.into()))? {
        let removed = ctx.runtime.remove_network(&net).await;
        removed.map_err(remove_resource("network", &net))?;
    }
    if deletion.volumes {
        let volumes = ctx.runtime.stack_volumes(name).await;
        for vol in volumes.map_err(resource("volume", name.into()))? {
            let removed = ctx.runtime.remove_volume(&vol).await;
            removed.map_err(remove_resource("volume", &vol))?;
        }
    }
    ctx.files.remove_stack(name);
    ctx.store
        .finalize_deletion(stack)
        .await
        .map_err(|source| ReconcileError::Finalize {
            stack: name.into(),
            source,
        })?;
    tracing::info!(stack = name, volumes = deletion.volumes, "stack deleted");
    Ok(Action::AwaitChange)
}

/// Creates the networks and volumes the stack's services use, and removes capstan-made
/// networks the stack no longer uses.
async fn ensure_stack_resources(stack: &Stack, ctx: &Context) -> Result<Action, ReconcileError> {
    let services: Vec<Arc<Service>> = stack
        .services
        .iter()
        .filter_map(|s| ctx.desired.service(&stack.name, s))
        .collect();
    let refs: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    let wanted = ensure_resources(&*ctx.runtime, stack, &refs).await?;
    let mut action = Action::AwaitChange;
    let networks = ctx.runtime.stack_networks(&stack.name).await;
    for net in networks.map_err(resource("network", stack.name.clone()))? {
        if !wanted.iter().any(|w| w.name == net) {
            if let Err(e) = ctx.runtime.remove_network(&net).await {
                // Still attached to a replica being removed: try again shortly.
                tracing::debug!(network = %net, error = %e, "unused network not removed yet");
                action = Action::Requeue(Duration::from_secs(2));
            }
        }
    }
    Ok(action)
}
