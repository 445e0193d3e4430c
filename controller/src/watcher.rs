//! Keeps the [`Cache`] in step with etcd: list, then watch from the list's revision; on a
//! compacted revision or a broken connection, back off and list again. The loop is an
//! explicit state machine so every transition is visible.

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::cache::{Cache, ObjectKey};
use crate::scheduler::Scheduler;
use crate::store::{KvError, Store};

enum Phase {
    /// Read everything, replace the cache.
    List,
    /// Follow changes from this revision on.
    Watch { from: i64 },
    /// etcd failed; wait, then list again.
    Backoff { delay: Duration },
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `shutdown` turns true.
pub async fn run(
    store: Store,
    cache: Arc<Cache>,
    scheduler: Arc<Scheduler<ObjectKey>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut phase = Phase::List;
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        phase = match phase {
            Phase::List => match store.snapshot().await {
                Ok(snap) => {
                    let from = snap.revision + 1;
                    if failures > 0 {
                        tracing::info!(
                            revision = snap.revision,
                            "etcd is reachable again; desired state relisted"
                        );
                    }
                    failures = 0;
                    for key in cache.replace(snap) {
                        scheduler.enqueue(key);
                    }
                    Phase::Watch { from }
                }
                Err(e) => {
                    cache.mark_unsynced();
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "cannot list desired state; the control loop is frozen until etcd answers");
                    }
                    Phase::Backoff {
                        delay: backoff(failures),
                    }
                }
            },
            Phase::Watch { from } => {
                let stream = tokio::select! {
                    s = store.kv().watch(store.root(), from) => s,
                    _ = shutdown.changed() => return,
                };
                match stream {
                    Err(e) => {
                        cache.mark_unsynced();
                        failures += 1;
                        tracing::warn!(error = %e, "cannot watch etcd; the control loop is frozen until it answers");
                        Phase::Backoff {
                            delay: backoff(failures),
                        }
                    }
                    Ok(mut stream) => loop {
                        let next = tokio::select! {
                            n = stream.next() => n,
                            _ = shutdown.changed() => return,
                        };
                        match next {
                            Some(Ok(batch)) => {
                                for key in cache.apply(&store, &batch) {
                                    scheduler.enqueue(key);
                                }
                            }
                            Some(Err(KvError::Compacted {
                                requested,
                                compacted,
                            })) => {
                                tracing::info!(
                                    requested,
                                    compacted,
                                    "watch revision compacted; relisting"
                                );
                                break Phase::List;
                            }
                            Some(Err(e)) => {
                                cache.mark_unsynced();
                                failures += 1;
                                tracing::warn!(error = %e, "etcd watch broke; the control loop is frozen until etcd answers");
                                break Phase::Backoff {
                                    delay: backoff(failures),
                                };
                            }
                            None => {
                                cache.mark_unsynced();
                                failures += 1;
                                break Phase::Backoff {
                                    delay: backoff(failures),
                                };
                            }
                        }
                    },
                }
            }
            Phase::Backoff { delay } => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
                Phase::List
            }
        };
    }
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(200) * 2u32.saturating_pow(failures.min(6))).min(MAX_BACKOFF)
}
