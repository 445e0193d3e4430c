//! Stage 1, **observe**: one service's desired state from the reflector, its replicas and
//! what the backend reads for its planner, its dependencies' replicas, and what this daemon
//! remembers of it. Reads only: nothing here writes anything, not even the memory.

use capstan_api::object::{Service, Stack};
use std::sync::Arc;

pub use super::backend::Observation;
use super::context::Context;
use super::deps::{self, Gate};
use super::error::ReconcileError;
use super::memory::last_written;
use crate::runtime::Observed;
use crate::watch::Desired;

/// What a service key turned out to name.
pub enum Seen {
    /// etcd has no record of the stack (another installation's, or a lost etcd): its
    /// replicas are never ours to judge. Desired state is never inferred from an absence.
    UnknownStack {
        replicas: usize,
    },
    /// The stack names the service but its record has not arrived yet.
    NotYetListed,
    /// The service left its stack, or the stack is being deleted: take it down.
    Removed {
        stack: Arc<Stack>,
        service: Option<Arc<Service>>,
        replicas: Vec<Observed>,
        /// Whether a status was written for it.
        has_status: bool,
    },
    Present(Box<Observation>),
}

pub async fn observe(ctx: &Context, stack_name: &str, name: &str) -> Result<Seen, ReconcileError> {
    let started = std::time::Instant::now();
    let replicas = ctx.backend.replicas(stack_name, name, false).await?;
    let Some(stack) = ctx.desired.stack(stack_name) else {
        return Ok(Seen::UnknownStack {
            replicas: replicas.len(),
        });
    };
    let service = ctx.desired.service(stack_name, name);
    let memory = ctx.memory.recall(stack_name, name);
    let stored = ctx.desired.status(stack_name, name);
    let previous = last_written(memory.status.as_ref(), stored.clone());
    let removed = stack.deletion.is_some() || !stack.services.iter().any(|s| s == name);
    let service = match (removed, service) {
        (false, Some(svc)) => svc,
        (false, None) => return Ok(Seen::NotYetListed),
        (true, service) => {
            return Ok(Seen::Removed {
                stack,
                service,
                replicas,
                has_status: previous.is_some(),
            })
        }
    };
    let gate = dependency_gate(ctx, &stack, &service).await?;
    let service = followed(&ctx.desired, &stack, service);
    let view = ctx
        .backend
        .observe(&ctx.env(), &stack, &service, &replicas)
        .await?;
    Ok(Seen::Present(Box::new(Observation {
        dependents: ctx.desired.dependents(&stack, name),
        stack,
        service,
        replicas,
        previous,
        stored,
        gate,
        memory,
        view,
        clock: ctx.clock,
        now: tokio::time::Instant::now(),
        now_rfc3339: crate::store::now_rfc3339(),
        started,
    })))
}

/// Whether the service's dependencies meet their conditions, judged from their replicas
/// as the backend reports them (not from their possibly stale status).
async fn dependency_gate(
    ctx: &Context,
    stack: &Stack,
    service: &Service,
) -> Result<Gate, ReconcileError> {
    if service.spec.depends_on.is_empty() {
        return Ok(Gate::Open);
    }
    let mut states = vec![];
    for dep in service.spec.depends_on.keys() {
        let record = (ctx.desired.service(&stack.name, dep))
            .filter(|_| stack.services.contains(dep))
            .map(|r| followed(&ctx.desired, stack, r));
        let replicas = ctx.backend.replicas(&stack.name, dep, false).await?;
        states.push((dep.clone(), record, replicas));
    }
    let views: Vec<deps::DependencyState> = states
        .iter()
        .map(|(name, record, observed)| deps::DependencyState {
            name,
            service: record.as_deref(),
            observed,
        })
        .collect();
    Ok(deps::gate(&service.spec, &views))
}

/// `service` as it runs: a sidecar with its lead partner's replica count
/// ([`capstan_api::spec::ServiceSpec::desired_replicas`]), any other as stored.
pub fn followed(desired: &Desired, stack: &Stack, service: Arc<Service>) -> Arc<Service> {
    let replicas_of = |name: &str| {
        let record = desired.service(&stack.name, name);
        (record.filter(|_| stack.services.iter().any(|s| s == name))).map(|r| r.spec.replicas)
    };
    let n = service.spec.desired_replicas(replicas_of);
    if n == service.spec.replicas {
        return service;
    }
    let mut s = (*service).clone();
    s.spec.replicas = n;
    Arc::new(s)
}
