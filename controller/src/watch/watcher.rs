//! Keeps the reflector in step with etcd: list, then watch from the list's revision; on a
//! compacted revision or a broken connection, back off and list again. The loop is an
//! explicit state machine so every transition is visible. The watcher owns key decoding:
//! what leaves it is a typed [`Event`].

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::reflector::{Event, Writer};
use crate::key::ObjectKey;
use crate::scheduler::Scheduler;
use crate::store::{KeyKind, KvError, Store, StoreError, WatchEvent};

enum Phase {
    /// Read everything, replace the copy.
    List,
    /// Follow changes from this revision on.
    Watch { from: i64 },
    /// etcd failed; wait, then list again.
    Backoff { delay: Duration },
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The watcher's task: the writer, and where the keys it yields go.
pub struct Watcher {
    pub store: Store,
    pub writer: Writer,
    pub scheduler: Arc<Scheduler<ObjectKey>>,
    /// Consecutive failures, for the back-off and for logging only the first.
    failures: u32,
}

impl Watcher {
    pub fn new(store: Store, writer: Writer, scheduler: Arc<Scheduler<ObjectKey>>) -> Self {
        Watcher {
            store,
            writer,
            scheduler,
            failures: 0,
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut phase = Phase::List;
        while !*shutdown.borrow() {
            phase = match phase {
                Phase::List => self.list().await,
                Phase::Watch { from } => tokio::select! {
                    next = self.follow(from) => next,
                    _ = shutdown.changed() => return,
                },
                Phase::Backoff { delay } => tokio::select! {
                    _ = tokio::time::sleep(delay) => Phase::List,
                    _ = shutdown.changed() => return,
                },
            };
        }
    }

    fn emit(&mut self, event: Event) {
        for key in self.writer.apply(event) {
            self.scheduler.enqueue(key);
        }
    }

    async fn list(&mut self) -> Phase {
        match self.store.snapshot().await {
            Ok(snap) => {
                let from = snap.revision + 1;
                if self.failures > 0 {
                    tracing::info!(
                        revision = snap.revision,
                        "etcd is reachable again; desired state relisted"
                    );
                }
                self.failures = 0;
                self.emit(Event::Relisted(snap));
                Phase::Watch { from }
            }
            Err(e) => self.failed("cannot list desired state", &e),
        }
    }

    /// Follows the watch until it ends; returns what comes next.
    async fn follow(&mut self, from: i64) -> Phase {
        let mut stream = match self.store.watch(from).await {
            Ok(stream) => stream,
            Err(e) => return self.failed("cannot watch etcd", &e),
        };
        loop {
            match stream.next().await {
                Some(Ok(batch)) => {
                    for ev in &batch {
                        if let Some(event) = decode(&self.store, ev) {
                            self.emit(event);
                        }
                    }
                }
                Some(Err(KvError::Compacted {
                    requested,
                    compacted,
                })) => {
                    tracing::info!(requested, compacted, "watch revision compacted; relisting");
                    return Phase::List;
                }
                Some(Err(e)) => return self.failed("etcd watch broke", &e),
                None => return self.failed("etcd watch ended", &"stream closed"),
            }
        }
    }

    /// Freezes the loop and backs off.
    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) -> Phase {
        self.emit(Event::Lost);
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(%error, "{what}; the control loop is frozen until etcd answers");
        }
        Phase::Backoff {
            delay: backoff(self.failures),
        }
    }
}

/// One raw key change as a typed event; `None` for keys capstan does not own, and for a
/// record that does not decode (logged: it is left out rather than guessed at).
pub fn decode(store: &Store, ev: &WatchEvent) -> Option<Event> {
    let (key, kv) = match ev {
        WatchEvent::Put(kv) => (kv.key.as_str(), Some(kv)),
        WatchEvent::Delete { key, .. } => (key.as_str(), None),
    };
    fn value<T>(key: &str, decoded: Option<Result<T, StoreError>>) -> Result<Option<T>, ()> {
        match decoded {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(e)) => {
                tracing::error!(%key, error = %e, "ignoring a record that does not decode");
                Err(())
            }
        }
    }
    let event = match store.classify(key)? {
        KeyKind::Stack(s) => Event::Stack(s, value(key, kv.map(Store::decode_stack)).ok()?),
        KeyKind::Service(s, v) => {
            Event::Service(s, v, value(key, kv.map(Store::decode_service)).ok()?)
        }
        KeyKind::Status(s, v) => {
            Event::Status(s, v, value(key, kv.map(Store::decode_status)).ok()?)
        }
        KeyKind::Endpoints(s, v) => {
            Event::Endpoints(s, v, value(key, kv.map(Store::decode_endpoints)).ok()?)
        }
    };
    Some(event)
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(200) * 2u32.saturating_pow(failures.min(6))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemKv;
    use crate::store::KeyValue;

    fn put(key: &str, value: &str) -> WatchEvent {
        WatchEvent::Put(KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: 7,
        })
    }

    #[test]
    fn keys_are_decoded_into_typed_events_and_foreign_or_broken_ones_are_dropped() {
        let store = Store::new(Arc::new(MemKv::default()), "/capstan");
        let svc = capstan_api::object::Service {
            stack: "s".into(),
            name: "web".into(),
            ..Default::default()
        };
        let svc = serde_json::to_string(&svc).unwrap();
        match decode(&store, &put("/capstan/v1/services/s/web", &svc)) {
            Some(Event::Service(s, v, Some(svc))) => {
                assert_eq!((s.as_str(), v.as_str()), ("s", "web"));
                assert_eq!(svc.resource_version, 7, "the revision is the version");
            }
            other => panic!("{other:?}"),
        }
        let gone = WatchEvent::Delete {
            key: "/capstan/v1/stacks/s".into(),
            mod_revision: 8,
        };
        assert_eq!(decode(&store, &gone), Some(Event::Stack("s".into(), None)));
        assert_eq!(decode(&store, &put("/other/v1/stacks/s", "{}")), None);
        assert_eq!(
            decode(&store, &put("/capstan/v1/stacks/s", "not json")),
            None
        );
    }

    #[test]
    fn the_relist_back_off_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(2), Duration::from_millis(800));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
