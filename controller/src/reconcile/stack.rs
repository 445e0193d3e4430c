//! A stack's own key: what its services share (the backend's networks and volumes), and the
//! teardown of a deleted stack (each service's replicas by the service's own reconcile,
//! then what they shared, then its keys).

use capstan_api::object::{Deletion, Service, Stack};
use std::sync::Arc;
use std::time::Duration;

use super::context::{Action, Context};
use super::error::ReconcileError;
use crate::key::ObjectKey;

pub async fn reconcile_stack(name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(stack) = ctx.desired.stack(name) else {
        return Ok(Action::AwaitChange);
    };
    let Some(deletion) = &stack.deletion else {
        let services: Vec<Arc<Service>> = (stack.services.iter())
            .filter_map(|s| ctx.desired.service(&stack.name, s))
            .collect();
        let refs: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
        return Ok(match ctx.backend.ensure_stack(&stack, &refs).await? {
            true => Action::AwaitChange,
            // Still attached to a replica being removed: try again shortly.
            false => Action::Requeue(Duration::from_secs(2)),
        });
    };
    let result = tear_down(&stack, deletion, ctx).await;
    let why = result.as_ref().err().map(|e| e.to_string());
    ctx.memory.blocked.set(name, why);
    result
}

/// Removes a deleted stack's replicas (through its services' keys), then what they shared
/// (and the volumes, if asked), then its keys.
async fn tear_down(
    stack: &Stack,
    deletion: &Deletion,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = stack.name.as_str();
    let left = ctx.backend.services_left(name).await?;
    if !left.is_empty() {
        // Each service's own reconcile removes its replicas (draining them first).
        for svc in left {
            ctx.scheduler
                .enqueue(ObjectKey::Service(name.to_string(), svc));
        }
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    ctx.backend.remove_stack(name, deletion.volumes).await?;
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
