//! A stack's own part on the engine: the networks and named volumes its services share.
//! Observed ([`observe`]), proposed as [`StackWork`] steps purely ([`propose`]), and carried
//! out ([`execute`]) like a service's replicas.

use std::collections::BTreeSet;

use super::{remove_resource, resource, shape, ContainerBackend};
use crate::reconcile::backend::{Shared, StackView, Work};
use crate::reconcile::error::ReconcileError;
use crate::runtime::ResourceConfig;
use capstan_api::object::Stack;

/// What the engine holds for a stack, besides its services' containers.
#[derive(Debug, Default)]
pub struct Held {
    /// Engine names of the networks labelled with the stack.
    pub networks: Vec<String>,
    /// Engine names of its named volumes, read only when a deletion removes them.
    pub volumes: Vec<String>,
}

/// One step of the engine's work on a stack's shared part.
#[derive(Clone, Debug, PartialEq)]
pub enum StackWork {
    /// Make a network, or check an external one exists (idempotent).
    EnsureNetwork(ResourceConfig),
    /// Make a named volume, or check an external one exists (idempotent).
    EnsureVolume(ResourceConfig),
    /// Remove a network no service uses any more: one still attached to a replica being
    /// removed stays, and the stack is looked at again shortly.
    RemoveUnused(String),
    /// Remove a deleted stack's network.
    RemoveNetwork(String),
    /// Remove a deleted stack's volume (`capstan delete --volumes`).
    RemoveVolume(String),
    /// Remove the secrets and configs written on the host for the stack.
    RemoveFiles(String),
}

impl Work for StackWork {
    fn describe(&self) -> String {
        match self {
            StackWork::EnsureNetwork(n) => format!("ensure network {}", n.name),
            StackWork::EnsureVolume(v) => format!("ensure volume {}", v.name),
            StackWork::RemoveUnused(n) => format!("remove unused network {n}"),
            StackWork::RemoveNetwork(n) => format!("remove network {n}"),
            StackWork::RemoveVolume(v) => format!("remove volume {v}"),
            StackWork::RemoveFiles(s) => format!("remove files of {s}"),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The networks the engine holds for the stack; for a deleted stack also the services that
/// still run containers (and the volumes, when the deletion removes them). Reads only.
pub async fn observe(b: &ContainerBackend, stack: &Stack) -> Result<StackView, ReconcileError> {
    let name = stack.name.as_str();
    let mut left = BTreeSet::new();
    if stack.deletion.is_some() {
        let listed = b.runtime.list(Some(name), None).await;
        let listed = listed.map_err(ReconcileError::List)?;
        left.extend(listed.into_iter().map(|c| c.service));
    }
    let networks = b.runtime.stack_networks(name).await;
    let networks = networks.map_err(resource("network", name.into()))?;
    let volumes = match &stack.deletion {
        Some(d) if d.volumes => {
            let all = b.runtime.stack_volumes(name).await;
            all.map_err(resource("volume", name.into()))?
        }
        _ => vec![],
    };
    let held = Held { networks, volumes };
    Ok(StackView {
        left,
        view: Box::new(held),
    })
}

/// What the engine must do for the stack's shared part. Pure.
pub fn propose(stack: &Stack, shared: Shared<'_>, view: &StackView) -> Vec<Box<dyn Work>> {
    let held = view
        .view
        .downcast_ref::<Held>()
        .expect("the view observe made");
    let mut work: Vec<StackWork> = vec![];
    match shared {
        Shared::Keep(services) => {
            let networks = shape::networks(stack, services);
            let unused = (held.networks.iter()).filter(|n| !networks.iter().any(|w| w.name == **n));
            let unused: Vec<StackWork> = unused.cloned().map(StackWork::RemoveUnused).collect();
            work.extend(networks.into_iter().map(StackWork::EnsureNetwork));
            let volumes = shape::volumes(stack, services);
            work.extend(volumes.into_iter().map(StackWork::EnsureVolume));
            work.extend(unused);
        }
        Shared::Remove => {
            work.extend(held.networks.iter().cloned().map(StackWork::RemoveNetwork));
            work.extend(held.volumes.iter().cloned().map(StackWork::RemoveVolume));
            work.push(StackWork::RemoveFiles(stack.name.clone()));
        }
    }
    work.into_iter()
        .map(|w| Box::new(w) as Box<dyn Work>)
        .collect()
}

/// Carries the steps out in order; false when an unused network could not be removed yet.
pub async fn execute(b: &ContainerBackend, work: &[&dyn Work]) -> Result<bool, ReconcileError> {
    let mut settled = true;
    for step in work {
        let Some(step) = step.as_any().downcast_ref::<StackWork>() else {
            continue;
        };
        let rt = &*b.runtime;
        match step {
            StackWork::EnsureNetwork(n) => {
                (rt.ensure_network(n).await).map_err(resource("network", n.name.clone()))?
            }
            StackWork::EnsureVolume(v) => {
                (rt.ensure_volume(v).await).map_err(resource("volume", v.name.clone()))?
            }
            StackWork::RemoveUnused(n) => {
                if let Err(e) = rt.remove_network(n).await {
                    tracing::debug!(network = %n, error = %e, "unused network not removed yet");
                    settled = false;
                }
            }
            StackWork::RemoveNetwork(n) => {
                (rt.remove_network(n).await).map_err(remove_resource("network", n))?
            }
            StackWork::RemoveVolume(v) => {
                (rt.remove_volume(v).await).map_err(remove_resource("volume", v))?
            }
            StackWork::RemoveFiles(stack) => b.files.remove_stack(stack),
        }
    }
    Ok(settled)
}
