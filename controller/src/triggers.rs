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
                    if !means_drift(&ev.action) {
                        continue;
                    }
                    since = Some(ev.time_nano);
                    // A stack etcd has no record of is another installation's, or an orphan
                    // that reconcile would leave alone anyway: no work for it.
                    let Some(stack) = cache.stack(&ev.stack) else {
                        continue;
                    };
                    tracing::debug!(stack = %ev.stack, service = %ev.service, action = %ev.action, "container event");
                    if !ev.service.is_empty() {
                        let key = ObjectKey::Service(ev.stack.clone(), ev.service.clone());
                        scheduler.enqueue(key.clone());
                        if ends_a_container(&ev.action) {
                            follow_up(&scheduler, key);
                        }
                    }
                    if stack.deletion.is_some() {
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

/// When to look again after a container ended. The engine announces a death before its
/// container list shows it (Docker 20.10 lists the container as running for another 50-65 ms),
/// so the reconcile the event itself triggers may find nothing to heal: look again soon, and
/// once more later for a busy engine, so the heal never waits for a resync.
const FOLLOW_UPS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(500)];

fn follow_up(scheduler: &Arc<Scheduler<ObjectKey>>, key: ObjectKey) {
    let [first, second] = FOLLOW_UPS;
    scheduler.enqueue_after(key.clone(), first);
    // The scheduler keeps one delayed request per key (the earliest): ask for the second
    // after the first has fired.
    let scheduler = scheduler.clone();
    tokio::spawn(async move {
        tokio::time::sleep(first).await;
        scheduler.enqueue_after(key, second - first);
    });
}

/// `die` and `destroy` only: `kill`, `oom` and `stop` come before the `die`, and their
/// follow-ups, being earlier, would take the `die`'s place and look too soon.
fn ends_a_container(action: &str) -> bool {
    matches!(action, "die" | "destroy")
}

/// Whether a container event can change what reconcile sees. Healthcheck execs alone emit
/// three events per check per replica (`exec_create`, `exec_start`, `exec_die`); reacting to
/// them would be per-container polling in disguise.
pub fn means_drift(action: &str) -> bool {
    let verb = action.split(':').next().unwrap_or_default().trim();
    matches!(
        verb,
        "start"
            | "restart"
            | "die"
            | "kill"
            | "stop"
            | "oom"
            | "destroy"
            | "health_status"
            | "pause"
            | "unpause"
            | "rename"
            | "update"
    )
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
        // Containers of known stacks only: those of services the stack no longer names are
        // orphans to remove; those of unknown stacks are never ours to judge.
        if !c.service.is_empty() && cache.stack(&c.stack).is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_death_is_looked_at_again_after_100_ms_and_again_after_500_ms() {
        let scheduler = Arc::new(Scheduler::default());
        let key = ObjectKey::Service("s".into(), "web".into());
        let start = tokio::time::Instant::now();
        follow_up(&scheduler, key.clone());
        let mut runs = vec![];
        for _ in 0..2 {
            assert_eq!(scheduler.next().await, key);
            runs.push(start.elapsed());
            scheduler.done(&key);
        }
        assert!(runs[0] >= FOLLOW_UPS[0], "{runs:?}");
        assert!(runs[1] >= FOLLOW_UPS[1], "{runs:?}");
    }

    #[test]
    fn only_die_and_destroy_are_followed_up_since_kill_oom_and_stop_precede_a_die() {
        assert!(ends_a_container("die") && ends_a_container("destroy"));
        for action in ["kill", "oom", "stop", "start", "health_status: unhealthy"] {
            assert!(!ends_a_container(action), "{action}");
        }
    }

    #[test]
    fn healthcheck_execs_are_not_drift_but_deaths_and_health_changes_are() {
        for action in [
            "exec_create: /bin/busybox wget",
            "exec_start: /bin/busybox wget",
            "exec_die",
            "attach",
            "resize",
            "top",
            "create",
        ] {
            assert!(!means_drift(action), "{action}");
        }
        for action in [
            "die",
            "destroy",
            "health_status: unhealthy",
            "health_status: healthy",
            "oom",
            "start",
            "kill",
        ] {
            assert!(means_drift(action), "{action}");
        }
    }
}
