//! Leader election through an etcd lease: one daemon reconciles and talks to the engine; the
//! others serve the API and keep their caches warm, so a takeover acts at once.
//!
//! The [`Elector`] is the one writer of this daemon's [`Role`]; everyone else reads it
//! through a cheap [`Leadership`], which is also the fence of the reconciler's etcd writes
//! ([`crate::store::fence`]) and the gate of its engine calls ([`crate::runtime::fence`]).
//!
//! ```text
//!            campaign won                 keep-alive failed, past valid_until
//! Follower ───────────────► Leader ─────────────────────────────────────────► Unsure
//!    ▲  ▲   lease gone         ▲  ▲            etcd answers: lease alive        │
//!    │  └──────────────────────┘  └────────────────────────────────────────────┤
//!    │           lease gone (another daemon may lead now)                       │
//!    ├─────────────────────────────────────────────────────────────────────────┤
//!    │                                     a fresh attempt also failed          ▼
//!    └──────────── lease gone ─────────────────────────────────────────── Isolated
//! ```
//!
//! A leader acts only until `valid_until` (the last renewal it *sent* plus the TTL etcd
//! granted, minus a margin), so one that was paused or cut off stops acting when its lease
//! could lapse, not when it notices. `Isolated` is a leader that lost etcd: like a kubelet,
//! it keeps restarting the replicas it knows (never creating or removing any) until etcd
//! answers again.

use capstan_api::object::LeaderRecord;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::runtime::fence::{Gate, Verb};
use crate::store::fence::Fence;
use crate::store::kv::LeaseId;
use crate::store::lease::Campaign;
use crate::store::{now_rfc3339, Store};

/// How this daemon takes part in the election.
#[derive(Clone, Debug)]
pub struct Election {
    /// Unique among live daemons (`serve --id`; by default `<hostname>:<listen address>`,
    /// which two live daemons cannot share). A daemon that finds its own identity on the
    /// leader key takes it back at once: it is a previous run of itself.
    pub identity: String,
    /// The lease's time to live (`serve --lease-ttl`): a dead leader is replaced within it.
    pub ttl: Duration,
}

impl Default for Election {
    /// A fresh identity per instance (tests and benchmarks start several in one process).
    fn default() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        Election {
            identity: format!(
                "capstan-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
            ttl: Duration::from_secs(10),
        }
    }
}

/// This daemon's part in the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another daemon leads, or nobody yet.
    Follower,
    /// Holds the lease: may do anything until `valid_until`.
    Leader {
        /// The leader key's mod revision when it was won; every fenced write compares it.
        token: i64,
        valid_until: Instant,
    },
    /// Led, but its lease may have lapsed: acts on nothing until etcd answers.
    Unsure,
    /// Led when etcd became unreachable: only restarts existing replicas.
    Isolated,
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Leader { .. } => "leader",
            Role::Unsure => "unsure",
            Role::Isolated => "isolated",
        }
    }

    fn leads_now(&self) -> bool {
        matches!(self, Role::Leader { valid_until, .. } if Instant::now() < *valid_until)
    }

    /// May reconcile at all (fully as leader, heal-only when isolated).
    fn acts_now(&self) -> bool {
        self.leads_now() || *self == Role::Isolated
    }
}

/// Read-only view of this daemon's role: cheap to clone, checked before every write and
/// engine call.
#[derive(Clone)]
pub struct Leadership {
    role: watch::Receiver<Role>,
    pub identity: Arc<str>,
    pub ttl: Duration,
}

impl Leadership {
    /// A leadership that always leads, for code run without an election.
    pub fn always() -> Self {
        let (tx, role) = watch::channel(Role::Leader {
            token: 0,
            valid_until: Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        });
        std::mem::forget(tx);
        Leadership {
            role,
            identity: "always".into(),
            ttl: Duration::ZERO,
        }
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Whether reconciles may only heal (etcd unreachable).
    pub fn is_isolated(&self) -> bool {
        self.role() == Role::Isolated
    }

    /// Waits until this daemon may act (lead, or heal while isolated).
    pub async fn acting(&mut self) {
        let _ = self.role.wait_for(|r| r.acts_now()).await;
    }

    /// Waits until this daemon may no longer act.
    pub async fn stopped_acting(&mut self) {
        let _ = self.role.wait_for(|r| !r.acts_now()).await;
    }
}

impl Fence for Leadership {
    fn write_token(&self) -> Option<i64> {
        match self.role() {
            r @ Role::Leader { token, .. } if r.leads_now() => Some(token),
            _ => None,
        }
    }
}

impl Gate for Leadership {
    fn permits(&self, verb: Verb) -> bool {
        let role = self.role();
        role.leads_now() || (role == Role::Isolated && verb != Verb::Change)
    }
}

/// Runs the election and writes this daemon's [`Role`].
pub struct Elector {
    /// Unfenced: the elector's own writes are how the fence is made.
    store: Store,
    election: Election,
    role: watch::Sender<Role>,
    metrics: Arc<Metrics>,
    lease: Option<LeaseId>,
    /// When the renewal that set `valid_until` was sent.
    last_renewal: Instant,
}

impl Elector {
    pub fn new(store: Store, election: Election, metrics: Arc<Metrics>) -> (Elector, Leadership) {
        let (role, rx) = watch::channel(Role::Follower);
        let leadership = Leadership {
            role: rx,
            identity: election.identity.clone().into(),
            ttl: election.ttl,
        };
        let elector = Elector {
            store,
            election,
            role,
            metrics,
            lease: None,
            last_renewal: Instant::now(),
        };
        (elector, leadership)
    }

    /// Campaigns and renews until `shutdown`; then resigns, so a follower takes over at once.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wait = match *self.role.borrow() {
                Role::Follower => None,
                Role::Leader { valid_until, .. } => Some(self.next_renewal(valid_until)),
                Role::Unsure => Some(Instant::now()),
                Role::Isolated => Some(Instant::now() + Duration::from_secs(1)),
            };
            let step = async {
                match wait {
                    None => self.campaign().await,
                    Some(at) => {
                        tokio::time::sleep_until(at).await;
                        self.renew().await
                    }
                }
            };
            tokio::select! {
                _ = step => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        self.resign().await;
    }

    /// A third of the TTL after the last renewal, sooner after a failed one, and never
    /// later than the moment the lease could lapse.
    fn next_renewal(&self, valid_until: Instant) -> Instant {
        let due = self.last_renewal + self.election.ttl / 3;
        let now = Instant::now();
        let at = if due > now {
            due
        } else {
            now + Duration::from_millis(500)
        };
        at.min(valid_until)
    }

    /// How long one etcd call of the election may take before it counts as failed.
    fn call_timeout(&self) -> Duration {
        (self.election.ttl / 5).clamp(Duration::from_millis(500), Duration::from_secs(2))
    }

    /// How often a follower looks whether the leader key is free.
    fn poll(&self) -> Duration {
        (self.election.ttl / 20).clamp(Duration::from_millis(100), Duration::from_millis(500))
    }

    fn set(&mut self, role: Role) {
        let was = *self.role.borrow();
        if std::mem::discriminant(&was) != std::mem::discriminant(&role) {
            tracing::info!(identity = %self.election.identity, from = was.name(), to = role.name(), "leadership changed");
        }
        self.metrics.set_leader(matches!(role, Role::Leader { .. }));
        self.role.send_replace(role);
    }

    /// One try as a follower: if the key is free (or a previous run of this daemon's),
    /// take it with a fresh lease; otherwise wait a poll.
    async fn campaign(&mut self) {
        let timeout = self.call_timeout();
        match tokio::time::timeout(timeout, self.store.leader()).await {
            Ok(Ok(Some((holder, _)))) if holder.holder != self.election.identity => {
                tokio::time::sleep(self.poll()).await;
                return;
            }
            Ok(Ok(_)) => {}
            _ => {
                tokio::time::sleep(self.poll()).await;
                return;
            }
        }
        let sent = Instant::now();
        let won = tokio::time::timeout(timeout, self.try_take()).await;
        match won {
            Ok(Some(token)) => {
                self.last_renewal = sent;
                let valid_until = sent + self.election.ttl - self.margin();
                self.set(Role::Leader { token, valid_until });
            }
            _ => tokio::time::sleep(self.poll()).await,
        }
    }

    /// Grants a lease and campaigns with it; a lost campaign's lease is revoked.
    async fn try_take(&mut self) -> Option<i64> {
        let lease = self.store.grant_lease(self.election.ttl).await.ok()?;
        let record = LeaderRecord {
            holder: self.election.identity.clone(),
            since: now_rfc3339(),
            lease_ttl_seconds: self.election.ttl.as_secs(),
        };
        match self.store.campaign(&record, lease).await {
            Ok(Campaign::Won { token }) => {
                self.lease = Some(lease);
                Some(token)
            }
            Ok(Campaign::Held(_)) | Err(_) => {
                let _ = self.store.revoke_lease(lease).await;
                None
            }
        }
    }

    /// The part of the TTL a leader gives up, for engine calls already in flight and
    /// clocks that do not run at quite the same rate.
    fn margin(&self) -> Duration {
        self.election.ttl / 4
    }

    /// One renewal of the lease, and what its answer means for the role.
    async fn renew(&mut self) {
        let Some(lease) = self.lease else {
            self.set(Role::Follower);
            return;
        };
        let role = *self.role.borrow();
        let sent = Instant::now();
        let answer = tokio::time::timeout(self.call_timeout(), self.store.keep_alive(lease)).await;
        match answer {
            Ok(Ok(Some(ttl))) => {
                self.last_renewal = sent;
                let token = match role {
                    Role::Leader { token, .. } => token,
                    // Back from Unsure or Isolated: the key still holds the revision won.
                    _ => match self.store.leader().await {
                        Ok(Some((holder, rev))) if holder.holder == self.election.identity => rev,
                        _ => return self.lost(lease).await,
                    },
                };
                let valid_until = sent + ttl.saturating_sub(self.margin());
                self.set(Role::Leader { token, valid_until });
            }
            Ok(Ok(None)) => self.lost(lease).await,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "renewing the leader lease failed");
                self.unanswered(role, sent).await
            }
            Err(_) => {
                tracing::debug!("renewing the leader lease timed out");
                self.unanswered(role, sent).await
            }
        }
    }

    /// etcd did not answer a renewal sent at `sent`.
    async fn unanswered(&mut self, role: Role, sent: Instant) {
        // Whatever the renewal said, etcd answering with another holder settles it.
        if role != Role::Follower {
            let read = tokio::time::timeout(self.call_timeout(), self.store.leader()).await;
            if let Ok(Ok(holder)) = read {
                if holder.is_none_or(|(h, _)| h.holder != self.election.identity) {
                    if let Some(lease) = self.lease {
                        return self.lost(lease).await;
                    }
                }
            }
        }
        match role {
            Role::Leader { valid_until, .. } if Instant::now() < valid_until => {}
            // An attempt made after the lease could lapse also failed: etcd is away, not
            // this process (a paused process's first fresh attempt reaches etcd).
            Role::Leader { valid_until, .. } if sent >= valid_until => self.set(Role::Isolated),
            Role::Leader { .. } => self.set(Role::Unsure),
            Role::Unsure => self.set(Role::Isolated),
            Role::Isolated | Role::Follower => {}
        }
    }

    async fn lost(&mut self, lease: LeaseId) {
        tracing::warn!(identity = %self.election.identity, "the leader lease is gone; another daemon may lead now");
        let _ = self.store.revoke_lease(lease).await;
        self.lease = None;
        self.set(Role::Follower);
    }

    /// Gives the lease up, so a follower takes over at once.
    async fn resign(&mut self) {
        if let Some(lease) = self.lease.take() {
            let _ = tokio::time::timeout(self.call_timeout(), self.store.revoke_lease(lease)).await;
            tracing::info!(identity = %self.election.identity, "resigned the leader lease");
        }
        self.set(Role::Follower);
    }
}
