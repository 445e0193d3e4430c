//! A stack's own key: what its services share (the backend's networks and volumes), and the
//! teardown of a deleted stack (each service's replicas by the service's own reconcile,
//! then what they shared, then its keys). The same pipeline as a service's: the backend
//! observes, [`plan::plan_stack`] decides purely, [`act::act_stack`] carries it out.

use capstan_api::object::Service;
use std::sync::Arc;

use super::context::{Action, Context};
use super::error::ReconcileError;
use super::{act, plan};

pub async fn reconcile_stack(name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(stack) = ctx.desired.stack(name) else {
        return Ok(Action::AwaitChange);
    };
    let services: Vec<Arc<Service>> = (stack.services.iter())
        .filter(|_| stack.deletion.is_none())
        .filter_map(|s| ctx.desired.service(&stack.name, s))
        .collect();
    let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    let result = match ctx.backend.observe_stack(&stack).await {
        Ok(view) => {
            let plan = plan::plan_stack(&*ctx.backend, &stack, &services, &view);
            act::act_stack(ctx, &stack, &plan).await
        }
        Err(e) => Err(e),
    };
    if stack.deletion.is_some() {
        // What keeps a deletion from finishing, for `capstan get stacks`.
        let why = result.as_ref().err().map(|e| e.to_string());
        ctx.memory.blocked.set(name, why);
    }
    result
}
