//! Sidecars: a service whose replicas pair with another service's (`network_mode:
//! service:NAME`, `volumes_from`). Replica n of the sidecar joins the network namespace of
//! its partner's replica n (or mounts its volumes), as a pod's containers share one:
//!
//! - it is made only once that replica runs (a namespace is joined at start), and started
//!   again whenever that replica started after it (its old namespace went with the old
//!   process);
//! - it is made anew when the partner's replica is replaced: the `capstan.partners` label
//!   records the partner containers it was made with;
//! - it has as many replicas as its partner, so scaling the partner scales it;
//! - it is ready only while its partner's replica is.
//!
//! [`observe`] gathers the partners' replicas; the rest is pure.

use capstan_api::names;
use capstan_api::object::{HealAction, HealCause, Service, Stack};
use capstan_api::spec::Partner;
use std::collections::{BTreeMap, HashMap};

use super::replicas::Changes;
use super::ContainerBackend;
use crate::reconcile::error::ReconcileError;
use crate::runtime::{ContainerConfig, Health, Observed, Runtime, RuntimeError, State};
use crate::watch::Desired;

/// What a sidecar's replicas pair with, as observed.
#[derive(Clone, Debug, Default)]
pub struct Pairing {
    /// One per partner of the spec, the network's first.
    sides: Vec<Side>,
    /// When running replicas last started (Unix ns), the sidecar's and its network
    /// partner's, by container id.
    started: HashMap<String, i64>,
}

#[derive(Clone, Debug)]
struct Side {
    partner: Partner,
    /// `volumes_from` (and whether read-only); `None` for the network partner.
    volumes: Option<bool>,
    /// The partner's replicas under their replica names, by ordinal.
    replicas: BTreeMap<u32, Observed>,
}

impl Side {
    fn replica(&self, ordinal: u32) -> Option<&Observed> {
        self.replicas.get(&self.partner.ordinal_for(ordinal))
    }

    fn replica_name(&self, stack: &str, ordinal: u32) -> String {
        let n = self.partner.ordinal_for(ordinal);
        (self.replicas.get(&n)).map_or_else(
            || names::container(stack, &self.partner.service, n),
            |c| c.name.clone(),
        )
    }
}

/// The partners of `service` with their replicas; `None` for a service that is no sidecar.
pub async fn observe(
    backend: &ContainerBackend,
    desired: &Desired,
    stack: &Stack,
    service: &Service,
    own: &[Observed],
) -> Result<Option<Pairing>, ReconcileError> {
    if service.spec.partners().next().is_none() {
        return Ok(None);
    }
    let containers = &backend.containers;
    let list = |partner: String| async move { containers.service(&stack.name, &partner).await };
    let mut pairing = gather(desired, stack, service, list)
        .await
        .map_err(ReconcileError::List)?;
    pairing.started = start_times(&*backend.runtime, &pairing, own).await;
    Ok(Some(pairing))
}

/// The partners of `service` for a one-off container (`capstan run`), listed from the
/// engine (any daemon serves a run, and only the leader's container reflector is fed).
pub async fn for_run(
    runtime: &dyn Runtime,
    desired: &Desired,
    stack: &Stack,
    service: &Service,
) -> Result<Pairing, RuntimeError> {
    let list =
        |partner: String| async move { runtime.list(Some(&stack.name), Some(&partner)).await };
    gather(desired, stack, service, list).await
}

/// Each partner of `service` (the network's first) with its replicas, as `list` finds the
/// containers of a partner service.
async fn gather<F, Fut>(
    desired: &Desired,
    stack: &Stack,
    service: &Service,
    list: F,
) -> Result<Pairing, RuntimeError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Observed>, RuntimeError>>,
{
    let spec = &service.spec;
    let network = (spec.options.network_mode.as_ref()).and_then(|m| m.partner());
    let volumes = (spec.options.volumes_from.iter()).map(|v| (&v.partner, Some(v.read_only)));
    let mut pairing = Pairing::default();
    for (partner, volumes) in network.map(|p| (p, None)).into_iter().chain(volumes) {
        let record = (desired.service(&stack.name, &partner.service))
            .filter(|_| stack.services.contains(&partner.service));
        let containers = list(partner.service.clone()).await?;
        let replicas = match &record {
            Some(r) => replicas_of(&stack.name, r, containers),
            None => BTreeMap::new(),
        };
        pairing.sides.push(Side {
            partner: partner.clone(),
            volumes,
            replicas,
        });
    }
    Ok(pairing)
}

/// The partner's containers that carry its replicas' names (not successors, not strays).
fn replicas_of(
    stack: &str,
    partner: &Service,
    containers: Vec<Observed>,
) -> BTreeMap<u32, Observed> {
    containers
        .into_iter()
        .filter_map(|c| {
            let n = c.ordinal?;
            (c.name == partner.spec.replica_name(stack, &partner.name, n)).then_some((n, c))
        })
        .collect()
}

/// Start times of the running sidecar replicas and of the network partners they pair with:
/// two inspects per running pair, for sidecars only.
async fn start_times(
    runtime: &dyn Runtime,
    pairing: &Pairing,
    own: &[Observed],
) -> HashMap<String, i64> {
    let mut started = HashMap::new();
    let Some(network) = pairing.network() else {
        return started;
    };
    for c in own.iter().filter(|c| c.state == State::Running) {
        let Some(partner) = c.ordinal.and_then(|n| network.replica(n)) else {
            continue;
        };
        if partner.state != State::Running {
            continue;
        }
        for id in [&c.id, &partner.id] {
            if let Ok(Some(at)) = runtime.inspect(id).await.map(|d| d.started_at) {
                started.insert(id.clone(), at);
            }
        }
    }
    started
}

impl Pairing {
    fn network(&self) -> Option<&Side> {
        self.sides.iter().find(|s| s.volumes.is_none())
    }

    /// Why replica `ordinal` cannot be made or started now: a partner's replica is missing,
    /// or (for the network partner) not running. `None` when it can.
    pub fn waits(&self, stack: &str, ordinal: u32) -> Option<String> {
        for side in &self.sides {
            let name = side.replica_name(stack, ordinal);
            match (side.replica(ordinal), side.volumes) {
                (None, _) => return Some(format!("{name} to be made")),
                (Some(p), None) if p.state != State::Running => {
                    return Some(format!("{name} to run"));
                }
                _ => {}
            }
        }
        None
    }

    /// The partner containers replica `ordinal` pairs with, as its label records them.
    fn label(&self, ordinal: u32) -> Option<String> {
        let ids: Option<Vec<String>> = (self.sides.iter())
            .map(|s| Some(format!("{}={}", s.partner.service, s.replica(ordinal)?.id)))
            .collect();
        ids.map(|ids| ids.join(","))
    }

    /// Replica `ordinal`'s container joins its partners: the network namespace, the
    /// volumes, and the label that records them.
    pub fn attach(&self, plan: &mut ContainerConfig, ordinal: u32) {
        for side in &self.sides {
            let Some(partner) = side.replica(ordinal) else {
                continue;
            };
            match side.volumes {
                None => plan.join = Some(partner.id.clone()),
                Some(true) => plan.volumes_from.push(format!("{}:ro", partner.id)),
                Some(false) => plan.volumes_from.push(partner.id.clone()),
            }
        }
        if let Some(label) = self.label(ordinal) {
            plan.labels.insert(names::PARTNERS.into(), label);
        }
    }

    /// Adjusts the plan of the sidecar's own replicas to their partners: a replica whose
    /// partner cannot take it yet is neither made nor started (and the plan says what it
    /// waits for); one made with another partner container is made anew (unless the plan is
    /// gated); one that started before its network partner last did is restarted.
    pub fn refine(&self, stack: &str, replicas: u32, plan: &mut Changes, own: &[Observed]) {
        let waiting: BTreeMap<u32, String> = (1..=replicas)
            .filter_map(|n| Some((n, self.waits(stack, n)?)))
            .collect();
        let leaving: Vec<String> = (plan.remove.iter().map(|(r, _)| r).chain(&plan.recreate))
            .map(|r| r.id.clone())
            .collect();
        let current = |c: &&Observed| {
            c.ordinal
                .is_some_and(|n| n <= replicas && !waiting.contains_key(&n))
                && !leaving.contains(&c.id)
        };
        for c in own.iter().filter(current) {
            let n = c.ordinal.unwrap_or(0);
            if c.partners != self.label(n) {
                // A closed `depends_on` gate makes no container, not even a sidecar's anew.
                if !plan.progress.gated {
                    drop_actions(plan, n);
                    plan.heal
                        .push((c.clone(), HealCause::PartnerReplaced, HealAction::Replace));
                }
            } else if self.partner_restarted(c, n) {
                drop_actions(plan, n);
                plan.heal
                    .push((c.clone(), HealCause::PartnerRestarted, HealAction::Restart));
            }
        }
        for n in waiting.keys() {
            drop_actions(plan, *n);
        }
        plan.progress.unpaired = waiting;
    }

    /// Replica `c` runs, and its network partner started after it did.
    fn partner_restarted(&self, c: &Observed, ordinal: u32) -> bool {
        let Some(partner) = self.network().and_then(|s| s.replica(ordinal)) else {
            return false;
        };
        match (self.started.get(&c.id), self.started.get(&partner.id)) {
            (Some(own), Some(theirs)) => c.state == State::Running && theirs > own,
            _ => false,
        }
    }

    /// A sidecar's replica is ready only while its partners' replicas are: one whose
    /// partner is not is shown as still starting.
    pub fn hold_readiness(&self, containers: &mut [Observed]) {
        for c in containers.iter_mut().filter(|c| c.is_ready()) {
            let n = c.ordinal.unwrap_or(0);
            let fit = self.sides.iter().all(|s| {
                s.replica(n).is_some_and(|p| {
                    p.is_ready() || (s.volumes.is_some() && p.state == State::Exited { code: 0 })
                })
            });
            if !fit {
                c.health = Health::Starting;
            }
        }
    }
}

/// Takes every planned action on replica `ordinal` out of the plan (removals stay).
fn drop_actions(plan: &mut Changes, ordinal: u32) {
    plan.create.retain(|n| *n != ordinal);
    plan.start.retain(|c| c.ordinal != Some(ordinal));
    plan.recreate.retain(|c| c.ordinal != Some(ordinal));
    plan.heal.retain(|(c, _, _)| c.ordinal != Some(ordinal));
}
