//! The other two triggers besides the etcd watch: the Docker events stream, and the
//! periodic resync that catches whatever an event stream can miss. Both only enqueue keys.

use futures::StreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::key::ObjectKey;
use crate::runtime::reflector::Containers;
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::watch::Desired;

/// What the triggers feed: the container reflector (marked stale by events, relisted by a
/// resync) and the key queue.
#[derive(Clone)]
pub struct Triggers {
    pub desired: Desired,
    pub containers: Arc<Containers>,
    pub scheduler: Arc<Scheduler<ObjectKey>>,
}

/// Follows the engine's container events for capstan-owned containers. After a broken
/// stream it resumes from the last event seen and resyncs everything, since the engine
/// only replays a bounded history. While the engine is gone (restarting, stopped) it tries
/// again with a [`Reconnect`] back-off: 250 ms, doubling to 2 s.
pub async fn docker_events(
    runtime: Arc<dyn Runtime>,
    t: Triggers,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut since = None;
    let mut reconnect = Reconnect::default();
    loop {
        let mut stream = runtime.events(since);
        let opened = tokio::time::Instant::now();
        let mut delivered = false;
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = shutdown.changed() => return,
            };
            match next {
                Some(Ok(ev)) => {
                    delivered = true;
                    if !means_drift(&ev.action) {
                        continue;
                    }
                    since = Some(ev.time_nano);
                    t.containers.touch(&ev.stack, &ev.service);
                    // A stack etcd has no record of is another installation's, or an orphan
                    // that reconcile would leave alone anyway: no work for it.
                    let Some(stack) = t.desired.stack(&ev.stack) else {
                        continue;
                    };
                    tracing::debug!(stack = %ev.stack, service = %ev.service, action = %ev.action, "container event");
                    if !ev.service.is_empty() {
                        let key = (ev.stack.clone(), ev.service.clone());
                        t.scheduler
                            .enqueue(ObjectKey::Service(key.0.clone(), key.1.clone()));
                        enqueue_sidecars(&t, &stack, &ev.service);
                        if ends_a_container(&ev.action) {
                            follow_up(&t, key);
                        }
                    }
                    if stack.deletion.is_some() {
                        t.scheduler.enqueue(ObjectKey::Stack(ev.stack));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "docker event stream broke; reconnecting");
                    break;
                }
                None => break,
            }
        }
        let wait = reconnect.after(delivered, opened.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = resync_once(&t).await {
            tracing::warn!(error = %e, retry_in = ?reconnect.peek(), "resync after event stream loss failed");
        }
    }
}

/// The event stream's reconnection back-off. An engine that went away refuses at once, so a
/// fixed short wait would hammer its socket (and relist) while it restarts; a long one would
/// leave the replicas it stopped down after it is back. The wait starts at
/// [`Self::FIRST`] and doubles to [`Self::CAP`]; a stream that delivered an event or stayed
/// open for [`Self::HEALTHY`] was a working connection, and the next loss starts over.
#[derive(Debug)]
pub struct Reconnect {
    next: Duration,
}

impl Reconnect {
    pub const FIRST: Duration = Duration::from_millis(250);
    pub const CAP: Duration = Duration::from_secs(2);
    pub const HEALTHY: Duration = Duration::from_secs(10);

    /// How long to wait after a stream ended that delivered an event (or not) and was open
    /// for `lived`.
    pub fn after(&mut self, delivered: bool, lived: Duration) -> Duration {
        if delivered || lived >= Self::HEALTHY {
            self.next = Self::FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        wait
    }

    /// The wait after the next failed attempt.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { next: Self::FIRST }
    }
}

/// When to look again after a container ended. The engine announces a death before its
/// container list shows it (Docker 20.10 lists the container as running for another 50-65 ms),
/// so the reconcile the event itself triggers may find nothing to heal: look again soon, and
/// twice more later for a busy engine (under a load of 17 on 2 cores the list lagged past
/// 500 ms), so the heal never waits for a resync. Each follow-up marks the service's
/// containers stale, so it reads the engine afresh.
const FOLLOW_UPS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// A sidecar decides on its partner's containers (a partner that started again left it in
/// a namespace that is gone): it looks again whenever they change.
fn enqueue_sidecars(t: &Triggers, stack: &capstan_api::object::Stack, service: &str) {
    for name in &stack.services {
        let record = t.desired.service(&stack.name, name);
        if record.is_some_and(|s| s.spec.pairs_with(service)) {
            (t.scheduler).enqueue(ObjectKey::Service(stack.name.clone(), name.clone()));
        }
    }
}

fn follow_up(t: &Triggers, (stack, service): (String, String)) {
    let t = t.clone();
    tokio::spawn(async move {
        let mut waited = Duration::ZERO;
        for at in FOLLOW_UPS {
            tokio::time::sleep(at - waited).await;
            waited = at;
            t.containers.touch(&stack, &service);
            t.scheduler
                .enqueue(ObjectKey::Service(stack.clone(), service.clone()));
        }
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

/// Relists every container in one engine call (the container reflector) and enqueues every
/// key the reflector knows plus every service that owns a container, so orphans of removed
/// services are found too. The reconciles that follow read the relisted copy: an idle
/// resync costs one engine list in all.
pub async fn resync_once(t: &Triggers) -> Result<(), crate::runtime::RuntimeError> {
    let mut keys: BTreeSet<ObjectKey> = t.desired.keys().into_iter().collect();
    let listed = match t.containers.relist().await {
        Ok(listed) => listed,
        Err(e) => {
            // What is desired is looked at even when the engine cannot be listed: the
            // statuses then say so.
            for key in keys {
                t.scheduler.enqueue(key);
            }
            return Err(e);
        }
    };
    for (stack, service) in listed {
        // Containers of known stacks only: those of services the stack no longer names are
        // orphans to remove; those of unknown stacks are never ours to judge.
        if !service.is_empty() && t.desired.stack(&stack).is_some() {
            keys.insert(ObjectKey::Service(stack, service));
        }
    }
    for key in keys {
        t.scheduler.enqueue(key);
    }
    Ok(())
}

/// Resyncs once desired state has first synced, then every `period`.
pub async fn periodic_resync(t: Triggers, period: Duration, mut shutdown: watch::Receiver<bool>) {
    while !t.desired.is_synced() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return,
        }
    }
    loop {
        if t.desired.is_synced() {
            if let Err(e) = resync_once(&t).await {
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
    async fn a_death_is_looked_at_again_after_100_ms_500_ms_and_2_s_reading_the_engine_afresh() {
        let scheduler = Arc::new(Scheduler::default());
        let runtime = Arc::new(crate::runtime::fake::FakeRuntime::default());
        let t = Triggers {
            desired: crate::watch::Writer::default().reader(),
            containers: Arc::new(Containers::new(runtime.clone())),
            scheduler: scheduler.clone(),
        };
        t.containers.relist().await.unwrap();
        let key = ObjectKey::Service("s".into(), "web".into());
        let start = tokio::time::Instant::now();
        follow_up(&t, ("s".into(), "web".into()));
        let mut runs = vec![];
        for _ in FOLLOW_UPS {
            assert_eq!(scheduler.next().await, key);
            runs.push(start.elapsed());
            scheduler.done(&key);
            let before = runtime.calls.load(std::sync::atomic::Ordering::Relaxed);
            t.containers.service("s", "web").await.unwrap();
            let after = runtime.calls.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(after - before, 1, "each follow-up lists the service again");
        }
        assert_eq!(runs, FOLLOW_UPS);
    }

    #[test]
    fn a_stream_that_keeps_failing_is_retried_after_250_ms_doubling_to_2_s_and_a_working_one_starts_over(
    ) {
        let mut r = Reconnect::default();
        let quick = Duration::from_millis(5);
        let waits: Vec<Duration> = (0..6).map(|_| r.after(false, quick)).collect();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(
            waits,
            [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]
        );
        assert_eq!(r.after(true, quick), ms(250), "it delivered an event");
        assert_eq!(r.after(false, quick), ms(500));
        assert_eq!(
            r.after(false, Reconnect::HEALTHY),
            ms(250),
            "it stayed open long enough to count as connected"
        );
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
