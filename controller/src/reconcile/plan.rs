//! Stage 2, **plan**: everything one reconcile will do, as an ordered list of steps, decided
//! purely from what was observed. Every engine call, etcd write, enqueue and memory write a
//! reconcile makes is one of its steps, or a backend's [`Work`] step; `act` carries them out
//! and does nothing else. Three kinds of key, three kinds of plan:
//!
//! - [`plan`]: a service present in its stack ([`Step`]s);
//! - [`take_down`] and [`forget`]: a service that is gone ([`GoneStep`]s);
//! - [`plan_stack`]: a stack's own part, and a deleted stack's teardown ([`StackStep`]s).

use capstan_api::object::{Service, Stack};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::backend::{Backend, Mode, Shared, StackView, Work};
use super::backoff;
use super::context::Action;
use super::memory::{Restarts, ServiceMemory};
use super::observe::Observation;
pub use super::status::Progress;
use crate::key::ObjectKey;
use crate::runtime::Observed;

/// What a reconcile remembers of what it saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sightings {
    /// Replicas seen healthy for the first time: ordinal → container.
    pub healthy: BTreeMap<u32, String>,
    /// Crash-loop positions taken over from the stored status (once per daemon).
    pub adopted: Option<BTreeMap<u32, Restarts>>,
}

impl Sightings {
    fn is_empty(&self) -> bool {
        self.healthy.is_empty() && self.adopted.is_none()
    }

    /// The memory with these sightings in it.
    pub fn apply(&self, memory: &mut ServiceMemory) {
        memory.healthy.extend(self.healthy.clone());
        if let Some(adopted) = &self.adopted {
            memory.adopted = true;
            memory.restarts.extend(adopted.clone());
        }
    }
}

/// One thing a reconcile of a present service does.
#[derive(Debug)]
pub enum Step {
    /// Remember what was seen (the memory is written, nothing else).
    Remember(Sightings),
    /// `failure_action: rollback`: store the previous revision's spec again, saying why.
    RollBack { reason: String },
    /// Point traffic at the ready replicas not `leaving`, and drain those (their ids).
    Publish { leaving: BTreeSet<String> },
    /// The backend's work, in order; it goes to the backend at once, which runs replicas'
    /// work concurrently. What it did is remembered as it is done: restarts made,
    /// replicas that could not be made, an owed restart carried out.
    Work(Vec<Box<dyn Work>>),
    /// List the replicas again and point traffic at what runs now.
    Republish,
    /// Ask these dependents (of `restart: true`) to restart their replicas: written to
    /// their memory, and their keys queued.
    RequestRestarts { dependents: Vec<String> },
    /// Write the status computed from what runs now, if it changed; then queue these
    /// dependents, which decide on it. The service's clocks move with it (convergence and
    /// rollout times, to the metrics), and the causes of replicas that now exist are
    /// forgotten.
    WriteStatus { dependents: Vec<String> },
}

/// One thing a reconcile of a service that is gone does.
#[derive(Debug)]
pub enum GoneStep {
    /// Take the removed service out of traffic: proxy, endpoints, Traefik.
    Unpublish,
    /// A backend step that takes a removed service's replicas down.
    TakeDown(Box<dyn Work>),
    /// Delete the removed service's status.
    DeleteStatus,
    /// Forget everything remembered about the service (memory, metric series, proxies).
    Forget,
    Enqueue(ObjectKey),
}

/// One thing a reconcile of a stack's key does.
#[derive(Debug)]
pub enum StackStep {
    /// The backend's work on what the services share. When something unused is still
    /// attached to a replica going away, the stack is looked at again in 2 s.
    Work(Vec<Box<dyn Work>>),
    /// Queue a service's key (a deleted stack's services take their replicas down).
    Enqueue(ObjectKey),
    /// Remove the deleted stack's records from the store: the deletion is done.
    Finalize,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Remember(_) => write!(f, "remember"),
            Step::RollBack { .. } => write!(f, "roll back"),
            Step::Publish { leaving } if leaving.is_empty() => write!(f, "publish"),
            Step::Publish { leaving } => write!(f, "publish without {}", leaving.len()),
            Step::Work(work) => write!(f, "{}", lines(work)),
            Step::Republish => write!(f, "republish"),
            Step::RequestRestarts { dependents } => {
                write!(f, "request restarts of {}", dependents.join(" "))
            }
            Step::WriteStatus { .. } => write!(f, "write status"),
        }
    }
}

impl fmt::Display for GoneStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoneStep::Unpublish => write!(f, "unpublish"),
            GoneStep::TakeDown(w) => write!(f, "{}", w.describe()),
            GoneStep::DeleteStatus => write!(f, "delete status"),
            GoneStep::Forget => write!(f, "forget"),
            GoneStep::Enqueue(key) => write!(f, "enqueue {key}"),
        }
    }
}

impl fmt::Display for StackStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackStep::Work(work) => write!(f, "{}", lines(work)),
            StackStep::Enqueue(key) => write!(f, "enqueue {key}"),
            StackStep::Finalize => write!(f, "finalize deletion"),
        }
    }
}

/// A backend's steps, one line each.
fn lines(work: &[Box<dyn Work>]) -> String {
    let lines: Vec<String> = work.iter().map(|w| w.describe()).collect();
    lines.join("\n")
}

/// Everything one reconcile of a present service does, in order.
#[derive(Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Where the replicas stand, for the status.
    pub progress: Progress,
    /// When to look again, unless the status step says otherwise.
    pub next: Action,
}

/// Everything one reconcile of a service that is gone does, in order.
#[derive(Debug)]
pub struct GonePlan {
    pub steps: Vec<GoneStep>,
    pub next: Action,
}

/// Everything one reconcile of a stack's key does, in order.
#[derive(Debug)]
pub struct StackPlan {
    pub steps: Vec<StackStep>,
    /// When to look again, unless the backend's work says otherwise.
    pub next: Action,
}

/// The steps, one line each (a backend's steps one line each too): what a test compares.
fn describe<S: fmt::Display>(steps: &[S]) -> Vec<String> {
    let all = steps.iter().map(S::to_string);
    all.flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

impl Plan {
    pub fn describe(&self) -> Vec<String> {
        describe(&self.steps)
    }
}

impl GonePlan {
    pub fn describe(&self) -> Vec<String> {
        describe(&self.steps)
    }
}

impl StackPlan {
    pub fn describe(&self) -> Vec<String> {
        describe(&self.steps)
    }
}

/// What is new in what was seen, compared with the memory. Pure.
fn sightings(obs: &Observation) -> Sightings {
    let adopted = match (&obs.stored, obs.memory.adopted) {
        (Some(stored), false) => Some(backoff::adopted(&obs.memory, stored, &obs.clock, obs.now)),
        _ => None,
    };
    // Nothing to take over is nothing to remember: looked at again next time, cheaply.
    let adopted = adopted.filter(|a| !a.is_empty());
    Sightings {
        healthy: backoff::newly_healthy(&obs.memory, &obs.replicas),
        adopted,
    }
}

/// The plan for a service present in its stack. Pure: the backend's proposal is too.
pub fn plan(obs: &Observation, backend: &dyn Backend, mode: Mode) -> Plan {
    let seen = sightings(obs);
    let mut memory = obs.memory.clone();
    seen.apply(&mut memory);
    let proposal = backend.propose(obs, &memory, mode);
    let mut steps = vec![];
    if !seen.is_empty() {
        steps.push(Step::Remember(seen));
    }
    let mut progress = proposal.progress;
    if mode == Mode::HealOnly {
        if !proposal.work.is_empty() {
            steps.push(Step::Work(proposal.work));
        }
        let next = Action::Requeue(Duration::from_secs(2));
        return Plan {
            steps,
            progress,
            next,
        };
    }
    if let Some(failed) = progress.rollback.take() {
        let service = &obs.service;
        match service.previous().filter(|_| service.rolled_back.is_none()) {
            Some(to) => {
                let reason = format!(
                    "update to generation {} failed and was rolled back to revision {} (generation {}): {failed}",
                    service.generation, to.meta.number, to.generation,
                );
                steps.push(Step::RollBack { reason });
                let next = Action::Requeue(Duration::from_secs(1));
                return Plan {
                    steps,
                    progress,
                    next,
                };
            }
            // Nothing to return to (a first revision, or a rollback that failed too).
            None => progress.paused = Some(failed),
        }
    }
    let acting = !proposal.work.is_empty();
    steps.push(Step::Publish {
        leaving: proposal.leaving,
    });
    if acting {
        steps.push(Step::Work(proposal.work));
    }
    if proposal.restarts {
        let dependents = restarting_dependents(&obs.dependents, &obs.service.name);
        if !dependents.is_empty() {
            steps.push(Step::RequestRestarts { dependents });
        }
    }
    if acting {
        steps.push(Step::Republish);
    }
    let dependents = obs.dependents.iter().map(|d| d.name.clone()).collect();
    steps.push(Step::WriteStatus { dependents });
    Plan {
        steps,
        progress,
        next: Action::AwaitChange,
    }
}

/// The dependents that declared `restart: true` on `name`.
fn restarting_dependents(dependents: &[std::sync::Arc<Service>], name: &str) -> Vec<String> {
    let restarting = dependents.iter().filter(|d| {
        let declared = d.spec.depends_on.get(name);
        declared.is_some_and(|d| d.restart)
    });
    restarting.map(|d| d.name.clone()).collect()
}

/// The plan for a service its stack no longer names, or of a stack being deleted: out of
/// traffic, its replicas stopped and removed, its status and memory forgotten. Pure.
pub fn take_down(
    backend: &dyn Backend,
    stack: &Stack,
    name: &str,
    service: Option<&Service>,
    replicas: &[Observed],
    has_status: bool,
) -> GonePlan {
    let grace = service.map_or(capstan_api::spec::DEFAULT_STOP_GRACE, |s| {
        s.spec.stop_grace()
    });
    let work = backend.take_down(&stack.name, name, replicas, grace);
    let mut steps = vec![GoneStep::Unpublish, GoneStep::TakeDown(work)];
    let deleting = stack.deletion.is_some();
    if has_status && !deleting {
        steps.push(GoneStep::DeleteStatus);
    }
    steps.push(GoneStep::Forget);
    if deleting {
        // The stack's teardown waits for its services' replicas to be gone.
        steps.push(GoneStep::Enqueue(ObjectKey::Stack(stack.name.clone())));
    }
    GonePlan {
        steps,
        next: Action::AwaitChange,
    }
}

/// The plan for a service of a stack etcd has no record of: forget it, touch nothing.
pub fn forget() -> GonePlan {
    GonePlan {
        steps: vec![GoneStep::Forget],
        next: Action::AwaitChange,
    }
}

/// The plan of a stack's key. Pure. A live stack: the backend's work on what its
/// `services` share. A deleted one: while its services still run replicas, their keys are
/// queued (each takes its replicas down) and the stack looks again shortly; then what they
/// shared goes, and the deletion is finalized.
pub fn plan_stack(
    backend: &dyn Backend,
    stack: &Stack,
    services: &[&Service],
    view: &StackView,
) -> StackPlan {
    let mut steps = vec![];
    if stack.deletion.is_none() {
        let work = backend.propose_stack(stack, Shared::Keep(services), view);
        if !work.is_empty() {
            steps.push(StackStep::Work(work));
        }
        let next = Action::AwaitChange;
        return StackPlan { steps, next };
    }
    if !view.left.is_empty() {
        let keys = (view.left.iter()).map(|s| ObjectKey::Service(stack.name.clone(), s.clone()));
        steps.extend(keys.map(StackStep::Enqueue));
        let next = Action::Requeue(Duration::from_secs(1));
        return StackPlan { steps, next };
    }
    let work = backend.propose_stack(stack, Shared::Remove, view);
    if !work.is_empty() {
        steps.push(StackStep::Work(work));
    }
    steps.push(StackStep::Finalize);
    StackPlan {
        steps,
        next: Action::AwaitChange,
    }
}
