//! The seam between the service-level loop and what runs a service's replicas.
//!
//! The service level (desired state, dependency gates, rollout bookkeeping, status and
//! conditions, endpoints, metrics) sees replicas only as [`Observed`]: a container of the
//! engine, or a task of an orchestrator that runs whole services. Everything else sits behind
//! [`Backend`]: what it reads to plan ([`Backend::observe`]), what it proposes to do, purely
//! ([`Backend::propose`]), and how it does it ([`Backend::execute`]). Its steps are opaque
//! [`Work`] to the service level, which lists them in the plan in the order given.
//!
//! [`super::containers`] is the backend of the Docker engine's containers, one per replica.

use async_trait::async_trait;
use capstan_api::object::{HealEvent, Service, ServiceStatus, Stack};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::backoff::Clock;
use super::deps::Gate;
use super::error::ReconcileError;
use super::memory::{Memories, ServiceMemory};
use super::status::{Problem, Progress};
use crate::runtime::Observed;
use crate::store::Store;
use crate::watch::Desired;

/// What the loop lends a backend: the store (files, a status written before a long pull),
/// desired state, and the services' memories (restarts made, replicas not made).
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub store: &'a Store,
    pub desired: &'a Desired,
    pub memory: &'a Memories,
}

impl Env<'_> {
    /// Writes a service's status (guarded by the spec it describes) and, if it was
    /// written, remembers it as the last one written: the one rule for every status write.
    pub async fn write_status(
        &self,
        service: &Service,
        status: &ServiceStatus,
    ) -> Result<bool, crate::store::StoreError> {
        let written = self.store.write_status(service, status).await?;
        if written {
            let status = Arc::new(status.clone());
            (self.memory).update(&service.stack, &service.name, |m| m.status = Some(status));
        }
        Ok(written)
    }
}

/// Everything the planner decides on.
pub struct Observation {
    pub stack: Arc<Stack>,
    pub service: Arc<Service>,
    /// The service's replicas, as the backend reports them (fresh after any event).
    pub replicas: Vec<Observed>,
    /// The status last written for the service, to compare the new one against.
    pub previous: Option<Arc<ServiceStatus>>,
    /// The status the store holds (it may lag this daemon's own write).
    pub stored: Option<Arc<ServiceStatus>>,
    /// Whether `depends_on` lets replicas be created and started.
    pub gate: Gate,
    /// The services of the stack that depend on this one, or pair with it as sidecars.
    pub dependents: Vec<Arc<Service>>,
    /// What this daemon remembers of the service (a copy).
    pub memory: ServiceMemory,
    /// What the backend read for its planner.
    pub view: View,
    pub clock: Clock,
    /// When the observation was made, on the runtime's clock.
    pub now: tokio::time::Instant,
    /// The same, as a status dates it.
    pub now_rfc3339: String,
    /// When the reconcile began, for the endpoint-latency metric.
    pub started: std::time::Instant,
}

/// One step of a backend's work, as the plan lists it.
pub trait Work: fmt::Debug + Send + Sync + 'static {
    /// One line, for logs and tests: `create s-web-1`.
    fn describe(&self) -> String;
    /// For the backend that made it, to take it back.
    fn as_any(&self) -> &dyn Any;
}

/// What a backend proposes for one service. Pure: made from an observation alone.
#[derive(Debug, Default)]
pub struct Proposal {
    /// Its steps, in order.
    pub work: Vec<Box<dyn Work>>,
    /// Replicas the work stops or replaces: out of traffic (drained) before it starts.
    pub leaving: BTreeSet<String>,
    /// Whether the work restarts or replaces replicas of the service: its dependents that
    /// declared `restart: true` restart after it.
    pub restarts: bool,
    /// Where the replicas stand, for the status and the next look.
    pub progress: Progress,
}

/// What a backend's work did.
#[derive(Clone, Debug, Default)]
pub struct Done {
    /// What kept replicas from being made, by ordinal.
    pub problems: Vec<Problem>,
    /// Replicas restarted or replaced, for the status's recent events and the heal metric.
    pub events: Vec<HealEvent>,
    /// The last health output of the replicas looked at closely, by ordinal.
    pub health_output: BTreeMap<u32, String>,
}

/// What the backend read for its planner, besides the replicas.
pub type View = Box<dyn Any + Send + Sync>;

/// What a stack's planner reads of the backend.
pub struct StackView {
    /// The services of the stack that still run replicas.
    pub left: BTreeSet<String>,
    /// What the backend read for its own stack planner.
    pub view: View,
}

/// What becomes of what a stack's services share.
#[derive(Clone, Copy)]
pub enum Shared<'a> {
    /// Made and kept for these services; what none of them uses goes.
    Keep(&'a [&'a Service]),
    /// The stack is deleted and its replicas are gone: everything goes (its volumes, if
    /// the deletion asked for them; the backend reads that from the stack).
    Remove,
}

/// How much a reconcile may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Everything the spec asks for.
    Converge,
    /// etcd is unreachable: restart what exited or turned unhealthy, nothing else (no
    /// create, no removal, no status).
    HealOnly,
}

/// What runs the replicas of services.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The service's replicas as last seen (`fresh`: listed again now).
    async fn replicas(
        &self,
        stack: &str,
        service: &str,
        fresh: bool,
    ) -> Result<Vec<Observed>, ReconcileError>;

    /// What its planner needs to read besides the replicas. Reads only.
    async fn observe(
        &self,
        ctx: &Env<'_>,
        stack: &Stack,
        service: &Service,
        replicas: &[Observed],
    ) -> Result<View, ReconcileError>;

    /// What to do to bring the replicas to the spec. Pure.
    fn propose(&self, obs: &Observation, memory: &ServiceMemory, mode: Mode) -> Proposal;

    /// Carries out `work` (steps of its own proposal), in order.
    async fn execute(
        &self,
        ctx: &Env<'_>,
        obs: &Observation,
        work: &[&dyn Work],
    ) -> Result<Done, ReconcileError>;

    /// The replicas as the status should count them (a sidecar is ready only while its
    /// partner is).
    fn as_reported(&self, _obs: &Observation, _replicas: &mut [Observed]) {}

    /// What the backend itself holds per service, by name, for the memory census.
    fn remembered(&self) -> Vec<(&'static str, usize)> {
        vec![]
    }

    /// The step that takes a removed service's replicas down.
    fn take_down(
        &self,
        stack: &str,
        service: &str,
        replicas: &[Observed],
        grace: Duration,
    ) -> Box<dyn Work>;

    /// Carries out a take-down step.
    async fn take_down_now(&self, ctx: &Env<'_>, work: &dyn Work) -> Result<(), ReconcileError>;

    /// What the stack's planner needs: the services that still run replicas, and what
    /// the backend holds for the stack besides them. Reads only.
    async fn observe_stack(&self, stack: &Stack) -> Result<StackView, ReconcileError>;

    /// The work on what the stack's services share (networks, volumes): made and kept
    /// for the services, or removed with a deleted stack. Pure.
    fn propose_stack(
        &self,
        stack: &Stack,
        shared: Shared<'_>,
        view: &StackView,
    ) -> Vec<Box<dyn Work>>;

    /// Carries out `work` (steps of its own stack proposal), in order; false when
    /// something unused could not be removed yet (still attached to a replica going away).
    async fn execute_stack(&self, work: &[&dyn Work]) -> Result<bool, ReconcileError>;
}
