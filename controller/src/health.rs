//! Whether etcd and the engine answer *now*. Asked twice a second (the engine once a
//! second) with a short timeout, so an unreachable or frozen peer shows in `/readyz`,
//! `capstan_etcd_connected` and `capstan_docker_connected` within 2 s: a request that hangs
//! is not an answer. Followers ask too: readiness is about the daemon, not the leader.
//! It also keeps etcd's last answer (when, and the leader key then): while etcd is silent
//! the API answers from the daemon's copy and says how old it is ([`crate::server`]).

use capstan_api::object::LeaderRecord;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::Store;

const PERIOD: Duration = Duration::from_millis(500);
/// Longer than a healthy answer takes by far; short enough that period + timeout < 2 s.
const TIMEOUT: Duration = Duration::from_millis(900);

/// The engine's answer: not asked yet, answering, or not.
const UNASKED: u8 = 0;
const ANSWERS: u8 = 1;
const SILENT: u8 = 2;

/// The last answers. Nothing has answered before the first probe.
pub struct Health {
    etcd: AtomicBool,
    docker: AtomicU8,
    /// What etcd said last, for the API to answer from while etcd does not.
    last: Mutex<LastAnswer>,
}

/// etcd's last answer to the probe.
#[derive(Default)]
struct LastAnswer {
    /// When etcd last answered: how old the daemon's copy of desired state may be.
    at: Option<std::time::Instant>,
    /// The leader key as it read then (`Some(None)`: nobody held it); None before any answer.
    leader: Option<Option<LeaderRecord>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            etcd: AtomicBool::new(false),
            docker: AtomicU8::new(UNASKED),
            last: Mutex::default(),
        }
    }
}

impl Health {
    /// Both answering (tests of the API without a probe).
    pub fn answering() -> Self {
        Health {
            etcd: AtomicBool::new(true),
            docker: AtomicU8::new(ANSWERS),
            last: Mutex::new(LastAnswer {
                at: Some(std::time::Instant::now()),
                leader: None,
            }),
        }
    }

    /// Whole seconds since etcd last answered this daemon; None if it never did.
    pub fn etcd_silent_for(&self) -> Option<u64> {
        let last = self.last.lock().unwrap();
        last.at.map(|at| at.elapsed().as_secs())
    }

    /// The leader key as etcd last gave it (`Some(None)`: nobody held it); None if etcd
    /// never answered this daemon.
    pub fn last_leader(&self) -> Option<Option<LeaderRecord>> {
        self.last.lock().unwrap().leader.clone()
    }

    /// etcd answered a read of the leader key with `leader`, now.
    pub fn leader_read(&self, leader: Option<LeaderRecord>) {
        let mut last = self.last.lock().unwrap();
        last.at = Some(std::time::Instant::now());
        last.leader = Some(leader);
    }

    /// Whether etcd answers, as the probe saw it; a test of the API sets it.
    pub fn set_etcd(&self, answers: bool) {
        self.etcd.store(answers, Ordering::SeqCst);
    }

    pub fn etcd(&self) -> bool {
        self.etcd.load(Ordering::SeqCst)
    }

    pub fn docker(&self) -> bool {
        self.docker.load(Ordering::SeqCst) == ANSWERS
    }

    /// The engine was asked and did not answer (not merely: not asked yet).
    pub fn docker_down(&self) -> bool {
        self.docker.load(Ordering::SeqCst) == SILENT
    }

    /// Why the daemon is not ready, if it is not; `synced` is the reflector's.
    pub fn not_ready(&self, synced: bool) -> Option<&'static str> {
        if !self.etcd() {
            Some("etcd does not answer")
        } else if !self.docker() {
            Some("the Docker engine does not answer")
        } else if !synced {
            Some("desired state not synced from etcd")
        } else {
            None
        }
    }

    /// Asks until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        runtime: Arc<dyn Runtime>,
        metrics: Arc<Metrics>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = 0u64;
        loop {
            let etcd = async {
                match tokio::time::timeout(TIMEOUT, store.leader()).await {
                    Ok(Ok(found)) => {
                        self.leader_read(found.map(|(record, _)| record));
                        true
                    }
                    _ => false,
                }
            };
            let docker = async {
                if tick.is_multiple_of(2) {
                    Some(matches!(
                        tokio::time::timeout(TIMEOUT, runtime.ping()).await,
                        Ok(Ok(()))
                    ))
                } else {
                    None
                }
            };
            let (etcd, docker) = tokio::join!(etcd, docker);
            self.record(etcd, docker, &metrics);
            tick += 1;
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    fn record(&self, etcd: bool, docker: Option<bool>, metrics: &Metrics) {
        if self.etcd.swap(etcd, Ordering::SeqCst) != etcd {
            tracing::warn!(answers = etcd, "etcd reachability changed");
        }
        metrics.set_etcd_connected(etcd);
        if let Some(docker) = docker {
            let state = if docker { ANSWERS } else { SILENT };
            if self.docker.swap(state, Ordering::SeqCst) != state {
                tracing::warn!(answers = docker, "Docker engine reachability changed");
            }
            metrics.set_docker_connected(docker);
        }
    }
}
