//! What the reconcilers share, and what a reconcile returns. Below every stage.

use std::sync::Arc;
use std::time::Duration;

use super::backend::Backend;
use super::backoff::Clock;
use super::memory::Memories;
use crate::key::ObjectKey;
use crate::metrics::Metrics;
use crate::scheduler::{FailureBackoff, Scheduler};
use crate::store::Store;
use crate::traffic::Traffic;
use crate::watch::Desired;

/// What the reconcilers share. Each field is one collaborator of the pipeline.
pub struct Context {
    /// Status, rollback and deletion writes (desired state is read from `desired`).
    pub store: Store,
    /// The reflector's read-only view of desired state.
    pub desired: Desired,
    /// What runs the replicas: observed, planned and driven through it.
    pub backend: Arc<dyn Backend>,
    /// Where dependents and follow-ups are queued.
    pub scheduler: Arc<Scheduler<ObjectKey>>,
    /// Per-key exponential back-off of failing reconciles.
    pub failures: FailureBackoff<ObjectKey>,
    /// What this process remembers about each service, one record per service.
    pub memory: Memories,
    /// The clock replica ages and crash-loop positions are measured on.
    pub clock: Clock,
    /// Endpoints, the built-in proxy, Traefik.
    pub traffic: Traffic,
    pub metrics: Arc<Metrics>,
    /// Whether this daemon may act, and how: workers wait while it follows; an isolated
    /// leader (etcd unreachable) only heals.
    pub leadership: crate::leader::Leadership,
    /// Whether the engine answers: while it does not, statuses say so and nothing is tried.
    pub health: Arc<crate::health::Health>,
}

/// When to look at a key again, besides events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more to wait for; events and the periodic resync will call again.
    AwaitChange,
    Requeue(Duration),
}
