//! The backend of the Docker engine's containers: one container per replica, named
//! `<stack>-<service>-<n>`, labelled with the spec's hash.
//!
//! - [`ContainerBackend::observe`] reads what the planner needs beyond the containers: the
//!   engine's details of replicas that exited or are unhealthy, whether the image is
//!   present, and a sidecar's partners.
//! - [`replicas`]: what to do to the replicas, decided purely from spec, containers and
//!   their restart history; [`ContainerBackend::propose`] turns it into ordered [`Step`]s.
//! - [`work`]: carries the steps out against the engine, within the daemon's engine slots.
//! - [`shape`] (the engine objects a spec becomes), [`pull`] (the image made present per
//!   `pull_policy`), [`pairing`] (a sidecar's replicas beside its partner's).
//! - [`stack`]: a stack's networks and named volumes, observed, proposed and made the same
//!   way.

pub mod pairing;
pub mod pull;
pub mod replicas;
pub mod shape;
pub mod stack;
pub mod work;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use capstan_api::object::{HealAction, HealCause, Service, ServiceStatus, Stack};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::backend::{
    Backend, Done, Env, Mode, Observation, Proposal, Shared, StackView, View, Work,
};
use super::backoff::{ServiceHistory, Timing};
use super::error::ReconcileError;
use super::memory::ServiceMemory;
use super::status::{self, Progress};
use crate::files::HostFiles;
use crate::runtime::reflector::Containers;
use crate::runtime::{Detail, Health, Observed, ResourceConfig, Runtime, RuntimeError, State};
use replicas::{Changes, RemoveReason};

/// The engine, its containers' reflector, and what making a replica needs.
pub struct ContainerBackend {
    /// The engine's verbs (create, start, remove, networks, volumes).
    pub runtime: Arc<dyn Runtime>,
    /// The engine's containers, listed once and kept fresh by events.
    pub containers: Arc<Containers>,
    /// Replica operations (create+start, stop+remove, restart) in flight across all
    /// reconciles. One service's replicas go to the engine at once up to this bound, so a
    /// big scale-up is as fast as the engine allows, and many services together cannot
    /// swamp it (`serve --engine-parallelism`).
    pub engine_slots: tokio::sync::Semaphore,
    /// When each image was last pulled, and its failed pulls' back-off.
    pub pulls: pull::Pulls,
    /// Secrets and configs written on the host for the replicas.
    pub files: HostFiles,
    /// The bind rule checked again when a container is made ([`shape::bind_refused`]).
    pub policy: Option<Arc<capstan_api::policy::Profiles>>,
}

/// What the container planner reads besides the containers.
#[derive(Debug, Default)]
pub struct ContainerView {
    /// What only an inspect tells (OOM kill, last health output), for the replicas that
    /// exited or are unhealthy: never for healthy ones.
    pub details: BTreeMap<u32, Detail>,
    /// The image, when a replica may have to be made.
    pub image: Option<pull::ImageState>,
    /// A sidecar's partners' replicas (`network_mode: service:`, `volumes_from`).
    pub pairing: Option<pairing::Pairing>,
}

/// One step of the engine's work on a service.
// A plan holds a handful of steps for one reconcile: boxing their replicas buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Stop and remove a replica (highest ordinal first).
    Remove(Observed, RemoveReason),
    /// Make the networks and named volumes the service uses.
    EnsureResources,
    /// Write the service's secrets and configs on the host.
    WriteFiles,
    /// Write the service's status with `PullingImage` before a pull, so a long pull shows.
    AnnouncePull(Box<ServiceStatus>),
    Pull(String),
    /// Start a replica that was created but never started.
    Start(Observed),
    /// Start, restart or replace a replica that exited or is unhealthy.
    Heal(Observed, HealCause, HealAction),
    /// Replace an outdated (or dead) replica.
    Recreate(Observed),
    /// Create and start a replica.
    Create(u32),
    /// Create and start a start-first successor next to an outdated replica.
    Surge(u32),
    /// A successor takes over: the replica it replaces (drained) is removed, and the
    /// successor takes its name.
    Promote(Option<Observed>, Observed),
    /// Restart every running replica: capstan restarted dependencies of `restart: true`.
    RestartForDependencies(Vec<Observed>, Vec<String>),
    /// Stop and remove a removed service's replicas, and its files on the host.
    TakeDown {
        stack: String,
        service: String,
        replicas: Vec<Observed>,
        grace: Duration,
    },
}

impl Work for Step {
    fn describe(&self) -> String {
        match self {
            Step::Remove(c, reason) => format!("remove {} ({reason:?})", c.name),
            Step::EnsureResources => "ensure networks and volumes".into(),
            Step::WriteFiles => "write files".into(),
            Step::AnnouncePull(_) => "announce pull".into(),
            Step::Pull(image) => format!("pull {image}"),
            Step::Start(c) => format!("start {}", c.name),
            Step::Heal(c, cause, action) => {
                format!("{} {} ({})", action.as_str(), c.name, cause.as_str())
            }
            Step::Recreate(c) => format!("recreate {}", c.name),
            Step::Create(n) => format!("create {n}"),
            Step::Surge(n) => format!("surge {n}"),
            Step::Promote(_, s) => format!("promote {}", s.name),
            Step::RestartForDependencies(cs, _) => {
                let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
                format!("restart for dependencies {}", names.join(" "))
            }
            Step::TakeDown { replicas, .. } => format!("take down {} replicas", replicas.len()),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn view(obs: &Observation) -> &ContainerView {
    static EMPTY: std::sync::OnceLock<ContainerView> = std::sync::OnceLock::new();
    (obs.view.downcast_ref::<ContainerView>())
        .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
}

fn steps<'a>(work: &[&'a dyn Work]) -> Vec<&'a Step> {
    work.iter()
        .filter_map(|w| w.as_any().downcast_ref::<Step>())
        .collect()
}

#[async_trait]
impl Backend for ContainerBackend {
    async fn replicas(
        &self,
        stack: &str,
        service: &str,
        fresh: bool,
    ) -> Result<Vec<Observed>, ReconcileError> {
        let listed = match fresh {
            true => self.containers.refresh(stack, service).await,
            false => self.containers.service(stack, service).await,
        };
        listed.map_err(ReconcileError::List)
    }

    async fn observe(
        &self,
        ctx: &Env<'_>,
        stack: &Stack,
        service: &Service,
        replicas: &[Observed],
    ) -> Result<View, ReconcileError> {
        let mut view = ContainerView::default();
        let looked_at = replicas
            .iter()
            .filter(|c| c.health == Health::Unhealthy || matches!(c.state, State::Exited { .. }));
        for c in looked_at {
            if let (Some(n), Ok(d)) = (c.ordinal, self.runtime.inspect(&c.id).await) {
                view.details.insert(n, d);
            }
        }
        if replicas::may_make(&stack.name, &service.name, &service.spec, replicas) {
            view.image = Some(pull::look(&*self.runtime, &self.pulls, &service.spec).await);
        }
        view.pairing = pairing::observe(self, ctx.desired, stack, service, replicas).await?;
        Ok(Box::new(view))
    }

    fn propose(&self, obs: &Observation, memory: &ServiceMemory, mode: Mode) -> Proposal {
        propose(obs, memory, mode)
    }

    async fn execute(
        &self,
        ctx: &Env<'_>,
        obs: &Observation,
        work: &[&dyn Work],
    ) -> Result<Done, ReconcileError> {
        work::execute(self, ctx, obs, &steps(work)).await
    }

    fn remembered(&self) -> Vec<(&'static str, usize)> {
        vec![(
            "containers (container reflector)",
            self.containers.remembered(),
        )]
    }

    fn as_reported(&self, obs: &Observation, replicas: &mut [Observed]) {
        if let Some(pairing) = &view(obs).pairing {
            pairing.hold_readiness(replicas);
        }
    }

    fn take_down(
        &self,
        stack: &str,
        service: &str,
        replicas: &[Observed],
        grace: Duration,
    ) -> Box<dyn Work> {
        Box::new(Step::TakeDown {
            stack: stack.to_string(),
            service: service.to_string(),
            replicas: replicas.to_vec(),
            grace,
        })
    }

    async fn take_down_now(&self, ctx: &Env<'_>, work: &dyn Work) -> Result<(), ReconcileError> {
        let Some(Step::TakeDown {
            stack,
            service,
            replicas,
            grace,
        }) = work.as_any().downcast_ref::<Step>()
        else {
            return Ok(());
        };
        if !replicas.is_empty() {
            // The service's last known spec, while the store still has it, says its hooks.
            let spec = ctx.desired.service(stack, service);
            let pre_stop = spec.as_ref().map_or(&[][..], |s| &s.spec.pre_stop[..]);
            work::remove_all(self, replicas, pre_stop, *grace).await?;
            self.replicas(stack, service, true).await?;
        }
        self.files.remove_service(stack, service);
        Ok(())
    }

    async fn observe_stack(&self, stack: &Stack) -> Result<StackView, ReconcileError> {
        stack::observe(self, stack).await
    }

    fn propose_stack(
        &self,
        stack: &Stack,
        shared: Shared<'_>,
        view: &StackView,
    ) -> Vec<Box<dyn Work>> {
        stack::propose(stack, shared, view)
    }

    async fn execute_stack(&self, work: &[&dyn Work]) -> Result<bool, ReconcileError> {
        stack::execute(self, work).await
    }
}

/// The engine steps for one service, in the order they run, and where its replicas stand.
/// Pure.
fn propose(obs: &Observation, memory: &ServiceMemory, mode: Mode) -> Proposal {
    let (stack, name, spec) = (&obs.service.stack, &obs.service.name, &obs.service.spec);
    let view = view(obs);
    let history = ServiceHistory {
        memory,
        clock: &obs.clock,
        timing: Timing::of(spec),
        now: obs.now,
    };
    let gate = (obs.gate.is_open(), spec.surge_blocker(&obs.stack.volumes));
    let mut changes = replicas::changes(stack, name, spec, &obs.replicas, &history, gate);
    if let Some(pairing) = &view.pairing {
        pairing.refine(stack, spec.replicas, &mut changes, &obs.replicas);
    }
    if mode == Mode::HealOnly {
        changes
            .heal
            .retain(|(_, _, action)| *action != HealAction::Replace);
        let heals = changes
            .heal
            .into_iter()
            .map(|(c, why, how)| Step::Heal(c, why, how));
        return Proposal {
            work: heals.map(|s| Box::new(s) as Box<dyn Work>).collect(),
            ..Default::default()
        };
    }
    let rollback =
        (changes.progress.rollback.take()).map(|failed| rollback_reason(obs, view, &failed));
    let mut problems = vec![];
    let image_ready = match changes.makes() {
        true => match &view.image {
            Some(image) => match image.verdict(spec) {
                Ok(pull) => Some(pull),
                Err(p) => {
                    problems.push(p);
                    None
                }
            },
            None => Some(None),
        },
        false => Some(None),
    };
    let mut work = ordered(obs, &changes, image_ready, memory);
    let leaving = changes.leaving();
    let restarts = work.iter().any(|s| matches!(s, Step::Heal(..)));
    let changed_outside = changes.strays() + vanished(obs, &changes).len() as u32;
    let progress = Progress {
        vanished: vanished(obs, &changes),
        changed_outside,
        rollback,
        problems,
        ..changes.progress.clone()
    };
    let restarts = restarts || !progress.vanished.is_empty();
    Proposal {
        work: work
            .drain(..)
            .map(|s| Box::new(s) as Box<dyn Work>)
            .collect(),
        leaving,
        restarts,
        progress,
    }
}

/// The steps of `changes` in the order they run: removals, what making replicas needs (the
/// networks and volumes, the files, the image), then starts, heals, replacements, creations
/// and promotions, then the restarts dependencies owe. `image`: `None` when the image cannot
/// be had (nothing is made), `Some(Some(pull))` when it is pulled first.
fn ordered(
    obs: &Observation,
    changes: &Changes,
    image: Option<Option<pull::Pull>>,
    memory: &ServiceMemory,
) -> Vec<Step> {
    let makes = changes.makes() && image.is_some();
    let mut steps: Vec<Step> = (changes.remove.iter())
        .map(|(c, why)| Step::Remove(c.clone(), *why))
        .collect();
    if makes {
        steps.push(Step::EnsureResources);
    }
    if makes || !changes.start.is_empty() || !changes.heal.is_empty() {
        steps.push(Step::WriteFiles);
    }
    if let Some(Some(pull)) = image.filter(|_| makes) {
        let (spec, policy) = (&obs.service.spec, pull.policy.as_compose());
        let previous = obs.previous.as_deref();
        let now = &obs.now_rfc3339;
        let status = status::pulling(previous, &spec.image, &policy, spec.replicas, now);
        if obs.previous.as_deref() != Some(&status) {
            steps.push(Step::AnnouncePull(Box::new(status)));
        }
        steps.push(Step::Pull(obs.service.spec.image.clone()));
    }
    steps.extend(changes.start.iter().cloned().map(Step::Start));
    let heals = changes
        .heal
        .iter()
        .filter(|(_, _, a)| makes || *a != HealAction::Replace);
    steps.extend(heals.map(|(c, why, how)| Step::Heal(c.clone(), *why, *how)));
    if makes {
        steps.extend(changes.recreate.iter().cloned().map(Step::Recreate));
        steps.extend(changes.create.iter().copied().map(Step::Create));
        steps.extend(changes.surge.iter().copied().map(Step::Surge));
    }
    steps.extend((changes.promote.iter()).map(|(old, s)| Step::Promote(old.clone(), s.clone())));
    if obs.gate.is_open() && !memory.owed_restarts.is_empty() {
        let running = obs.replicas.iter().filter(|c| c.state == State::Running);
        let deps = memory.owed_restarts.iter().cloned().collect();
        steps.push(Step::RestartForDependencies(
            running.cloned().collect(),
            deps,
        ));
    }
    steps
}

/// Replicas the last status listed that are made again: removed behind capstan's back.
fn vanished(obs: &Observation, changes: &Changes) -> BTreeSet<u32> {
    obs.previous
        .iter()
        .flat_map(|p| p.replica_states.iter().map(|r| r.ordinal))
        .filter(|n| changes.create.contains(n))
        .collect()
}

/// Why an update is rolled back: which replicas failed, with the last health-check output
/// of each unhealthy replica of the current spec ("; last health check of web-2: ...").
fn rollback_reason(obs: &Observation, view: &ContainerView, failed: &str) -> String {
    let hash = obs.service.spec.container_hash();
    let mut reason = failed.to_string();
    let unhealthy =
        (obs.replicas.iter()).filter(|c| c.spec_hash == hash && c.health == Health::Unhealthy);
    for c in unhealthy {
        let out = c
            .ordinal
            .and_then(|n| view.details.get(&n)?.health_output.clone());
        if let Some(out) = out {
            reason.push_str(&format!(
                "; last health check of {}: {}",
                c.name,
                out.trim()
            ));
        }
    }
    reason
}

/// Creates the networks and named volumes `services` use (idempotent); returns the networks.
pub async fn ensure_resources(
    runtime: &dyn Runtime,
    stack: &Stack,
    services: &[&Service],
) -> Result<Vec<ResourceConfig>, ReconcileError> {
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
