//! What the reconcilers share, and what a reconcile returns. Below every stage.

use std::sync::Arc;
use std::time::Duration;

use super::backend::{Backend, Env};
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

impl Context {
    /// What the backend may use of the loop.
    pub fn env(&self) -> Env<'_> {
        Env {
            store: &self.store,
            desired: &self.desired,
            memory: &self.memory,
        }
    }

    /// Entries of each per-service memory, by name: zero everywhere once every stack is
    /// deleted and the daemon has caught up (a metric's series are checked in its
    /// exposition, not here).
    pub fn remembered(&self) -> Vec<(&'static str, usize)> {
        let mut all = vec![
            ("desired state (reflector)", self.desired.remembered()),
            ("service memories", self.memory.remembered()),
            ("proxy listeners (traffic)", self.traffic.remembered()),
            ("failing keys (back-off)", self.failures.remembered()),
            (
                "keys queued or delayed (scheduler)",
                self.scheduler.remembered(),
            ),
        ];
        all.extend(self.backend.remembered());
        all
    }
}
