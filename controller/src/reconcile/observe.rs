//! Stage 1, **observe**: one service's desired state from the reflector and its containers
//! from the container reflector, with what its dependencies' containers say. Reads only.

use capstan_api::object::{Service, ServiceStatus, Stack};
use std::sync::Arc;
use std::time::Instant;

use super::deps::{self, Gate};
use super::{Context, ReconcileError};
use crate::runtime::Observed;

/// Everything the later stages decide on.
pub struct Observation {
    pub stack: Arc<Stack>,
    pub service: Arc<Service>,
    /// The service's containers, as the engine reports them (fresh after any event).
    pub containers: Vec<Observed>,
    /// The status last written for the service, to compare the new one against.
    pub previous: Option<Arc<ServiceStatus>>,
    /// Whether `depends_on` lets replicas be created and started.
    pub gate: Gate,
    /// A sidecar's partners' replicas (`network_mode: service:`, `volumes_from`).
    pub pairing: Option<super::pairing::Pairing>,
    /// When the reconcile began, for the endpoint-latency metric.
    pub started: Instant,
}

/// What a service key turned out to name.
pub enum Seen {
    /// etcd has no record of the stack (another installation's, or a lost etcd): its
    /// containers are never ours to judge. Desired state is never inferred from an absence.
    UnknownStack {
        containers: usize,
    },
    /// The stack names the service but its record has not arrived yet.
    NotYetListed,
    /// The service left its stack, or the stack is being deleted: take it down.
    Removed {
        stack: Arc<Stack>,
        service: Option<Arc<Service>>,
        containers: Vec<Observed>,
    },
    Present(Observation),
}

pub async fn observe(ctx: &Context, stack_name: &str, name: &str) -> Result<Seen, ReconcileError> {
    let started = Instant::now();
    let containers = ctx
        .containers
        .service(stack_name, name)
        .await
        .map_err(ReconcileError::List)?;
    let Some(stack) = ctx.desired.stack(stack_name) else {
        return Ok(Seen::UnknownStack {
            containers: containers.len(),
        });
    };
    let service = ctx.desired.service(stack_name, name);
    let removed = stack.deletion.is_some() || !stack.services.iter().any(|s| s == name);
    let service = match (removed, service) {
        (false, Some(svc)) => svc,
        (false, None) => return Ok(Seen::NotYetListed),
        (true, service) => {
            return Ok(Seen::Removed {
                stack,
                service,
                containers,
            })
        }
    };
    ctx.restarts.saw(stack_name, name, &containers);
    let gate = dependency_gate(ctx, &stack, &service).await?;
    let previous = ctx.scratch.last_status(&ctx.desired, stack_name, name);
    let pairing = super::pairing::observe(ctx, &stack, &service, &containers).await?;
    let service = super::pairing::followed(&ctx.desired, &stack, service);
    Ok(Seen::Present(Observation {
        stack,
        service,
        containers,
        previous,
        gate,
        pairing,
        started,
    }))
}

/// Whether the service's dependencies meet their conditions, judged from their containers
/// as the engine reports them (not from their possibly stale status).
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
            .map(|r| super::pairing::followed(&ctx.desired, stack, r));
        let containers = ctx
            .containers
            .service(&stack.name, dep)
            .await
            .map_err(ReconcileError::List)?;
        states.push((dep.clone(), record, containers));
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

/// The services of `stack` that depend on `name`, or pair with it as its sidecars.
pub fn dependents(ctx: &Context, stack: &Stack, name: &str) -> Vec<Arc<Service>> {
    let depends =
        |svc: &Service| svc.spec.depends_on.contains_key(name) || svc.spec.pairs_with(name);
    stack
        .services
        .iter()
        .filter_map(|s| ctx.desired.service(&stack.name, s))
        .filter(|svc| depends(svc))
        .collect()
}
