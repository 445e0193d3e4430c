//! The other two triggers besides the etcd watch: the Docker events stream, and the
//! periodic resync that catches whatever an event stream can miss. Both only enqueue keys.

use futures::StreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::cache::{Cache, ObjectKey};
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;

/// Follows the engine's container events for capstan-owned containers. After a broken
/// stream it resumes from the last event seen and resyncs everything, since the engine
/// only replays a bounded history.
pub async fn docker_events(
    runtime: Arc<dyn Runtime>,
    cache: Arc<Cache>,
    scheduler: Arc<Scheduler<ObjectKey>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut since = None;
    loop {
        let mut stream = runtime.events(since);
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = shutdown.changed() => return,
            };
            match next {
                Some(Ok(ev)) => {
                    since = Some(ev.time_nano);
                    tracing::debug!(stack = %ev.stack, service = %ev.service, action = %ev.action, "container event");
                    if !ev.service.is_empty() {
                        scheduler.enqueue(ObjectKey::Service(ev.stack.clone(), ev.service.clone()));
                    }
                    if cache.stack(&ev.stack).is_some_and(|s| s.deletion.is_some()) {
                        scheduler.enqueue(ObjectKey::Stack(ev.stack));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "docker event stream broke; reconnecting");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = resync_once(&*runtime, &cache, &scheduler).await {
            tracing::warn!(error = %e, "resync after event stream loss failed");
        }
    }
}

/// Enqueues every key the cache knows plus every service that owns a container, so
/// orphans of removed services are found too. One container list, no per-container calls.
pub async fn resync_once(
    runtime: &dyn Runtime,
    cache: &Cache,
    scheduler: &Scheduler<ObjectKey>,
) -> Result<(), crate::runtime::RuntimeError> {
    let mut keys: BTreeSet<ObjectKey> = cache.keys().into_iter().collect();
    for c in runtime.list(None, None).await? {
        if !c.service.is_empty() {
            keys.insert(ObjectKey::Service(c.stack, c.service));
        }
    }
    for key in keys {
        scheduler.enqueue(key);
    }
    Ok(())
}

/// Resyncs once the cache has first synced, then every `period`.
pub async fn periodic_resync(
    runtime: Arc<dyn Runtime>,
    cache: Arc<Cache>,
    scheduler: Arc<Scheduler<ObjectKey>>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    while !cache.is_synced() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return,
        }
    }
    loop {
        if cache.is_synced() {
            if let Err(e) = resync_once(&*runtime, &cache, &scheduler).await {
                tracing::warn!(error = %e, "resync failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}
