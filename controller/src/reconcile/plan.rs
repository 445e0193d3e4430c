//! Stage 2, **plan**: everything one reconcile of a service will do, as an ordered list of
//! [`Step`]s, decided purely from the [`Observation`]. Every engine call, etcd write, enqueue
//! and memory write a reconcile makes is one of its steps, or a backend's [`Work`] step;
//! `act` carries them out and does nothing else.

use capstan_api::object::{Service, Stack};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::backend::{Backend, Mode, Work};
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

/// One thing a reconcile does.
#[derive(Debug)]
pub enum Step {
    /// Remember what was seen (the memory is written, nothing else).
    Remember(Sightings),
    /// `failure_action: rollback`: store the previous revision's spec again, saying why.
    RollBack {
        reason: String,
    },
    /// Point traffic at the ready replicas not `leaving`, and drain those (their ids).
    Publish {
        leaving: BTreeSet<String>,
    },
    /// A step of the backend's work. What it did is remembered as it is done: restarts
    /// made, replicas that could not be made, an owed restart carried out.
    Work(Box<dyn Work>),
    /// List the replicas again and point traffic at what runs now.
    Republish,
    /// Ask these dependents (of `restart: true`) to restart their replicas: written to
    /// their memory, and their keys queued.
    RequestRestarts {
        dependents: Vec<String>,
    },
    /// Write the status computed from what runs now, if it changed; then queue these
    /// dependents, which decide on it. The service's clocks move with it (convergence and
    /// rollout times, to the metrics), and the causes of replicas that now exist are
    /// forgotten.
    WriteStatus {
        dependents: Vec<String>,
    },
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

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Remember(_) => write!(f, "remember"),
            Step::RollBack { .. } => write!(f, "roll back"),
            Step::Publish { leaving } if leaving.is_empty() => write!(f, "publish"),
            Step::Publish { leaving } => write!(f, "publish without {}", leaving.len()),
            Step::Work(w) | Step::TakeDown(w) => write!(f, "{}", w.describe()),
            Step::Republish => write!(f, "republish"),
            Step::RequestRestarts { dependents } => {
                write!(f, "request restarts of {}", dependents.join(" "))
            }
            Step::WriteStatus { .. } => write!(f, "write status"),
            Step::Unpublish => write!(f, "unpublish"),
            Step::DeleteStatus => write!(f, "delete status"),
            Step::Forget => write!(f, "forget"),
            Step::Enqueue(key) => write!(f, "enqueue {key}"),
        }
    }
}

/// Everything one reconcile of a service does, in order.
#[derive(Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Where the replicas stand, for the status.
    pub progress: Progress,
    /// When to look again, unless the status step says otherwise.
    pub next: Action,
}

impl Plan {
    /// The steps, one line each: what a test compares.
    pub fn describe(&self) -> Vec<String> {
        self.steps.iter().map(Step::to_string).collect()
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
        steps.extend(proposal.work.into_iter().map(Step::Work));
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
    steps.extend(proposal.work.into_iter().map(Step::Work));
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
) -> Plan {
    let grace = service.map_or(capstan_api::spec::DEFAULT_STOP_GRACE, |s| {
        s.spec.stop_grace()
    });
    let mut steps = vec![Step::Unpublish];
    steps.push(Step::TakeDown(backend.take_down(
        &stack.name,
        name,
        replicas,
        grace,
    )));
    let deleting = stack.deletion.is_some();
    if has_status && !deleting {
        steps.push(Step::DeleteStatus);
    }
    steps.push(Step::Forget);
    if deleting {
        // The stack's teardown waits for its services' replicas to be gone.
        steps.push(Step::Enqueue(ObjectKey::Stack(stack.name.clone())));
    }
    Plan {
        steps,
        progress: Progress::default(),
        next: Action::AwaitChange,
    }
}

/// The plan for a service of a stack etcd has no record of: forget it, touch nothing.
pub fn forget() -> Plan {
    Plan {
        steps: vec![Step::Forget],
        progress: Progress::default(),
        next: Action::AwaitChange,
    }
}
