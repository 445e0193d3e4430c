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
use crate::store::layout::{Change, Resolver};
use crate::store::{KvError, Store, StoreError};

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
    /// Resolves the versioned layout's keys into commits; rebuilt by every list.
    resolver: Resolver,
}

impl Watcher {
    pub fn new(store: Store, writer: Writer, scheduler: Arc<Scheduler<ObjectKey>>) -> Self {
        Watcher {
            store,
            writer,
            scheduler,
            failures: 0,
            resolver: Resolver::default(),
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
        match self.store.resolved_snapshot().await {
            Ok((resolver, snap)) => {
                self.resolver = resolver;
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
                    for change in self.resolver.apply_batch(&self.store, &batch) {
                        match change {
                            Ok(change) => self.emit(event(change)),
                            Err(e @ StoreError::Dangling { .. }) => {
                                return self.failed("a commit names a version never seen", &e)
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "ignoring a record that does not decode")
                            }
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

/// A resolved change as the reflector's event.
fn event(change: Change) -> Event {
    match change {
        Change::Commit {
            stack,
            record,
            services,
        } => Event::Commit {
            stack,
            record,
            services,
        },
        Change::Status(s, v, status) => Event::Status(s, v, status),
        Change::Endpoints(s, v, eps) => Event::Endpoints(s, v, eps),
    }
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(200) * 2u32.saturating_pow(failures.min(6))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemKv;
    use crate::store::{KeyValue, WatchEvent};

    fn put(key: &str, value: &str, rev: i64) -> WatchEvent {
        WatchEvent::Put(KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: rev,
        })
    }

    fn record(versions: &[(&str, &str)]) -> String {
        let st = capstan_api::object::Stack {
            name: "s".into(),
            services: versions.iter().map(|(v, _)| v.to_string()).collect(),
            versions: versions
                .iter()
                .map(|(v, t)| (v.to_string(), t.to_string()))
                .collect(),
            ..Default::default()
        };
        serde_json::to_string(&st).unwrap()
    }

    #[test]
    fn a_staged_version_is_invisible_until_the_stack_record_commits_it_and_foreign_keys_are_dropped(
    ) {
        let store = Store::new(Arc::new(MemKv::default()), "/capstan");
        let mut r = Resolver::default();
        let svc = capstan_api::object::Service {
            stack: "s".into(),
            name: "web".into(),
            ..Default::default()
        };
        let svc = serde_json::to_string(&svc).unwrap();
        let staged = put("/capstan/v1/services/s/web/t1", &svc, 7);
        let commit = put("/capstan/v1/stacks/s", &record(&[("web", "t1")]), 8);
        assert!(
            r.apply_batch(&store, &[staged]).is_empty(),
            "staged: invisible"
        );
        match r.apply_batch(&store, &[commit]).pop() {
            Some(Ok(Change::Commit {
                stack,
                record,
                services,
            })) => {
                assert_eq!(stack, "s");
                assert_eq!(record.unwrap().resource_version, 8);
                let (name, svc) = &services[0];
                assert_eq!(name, "web");
                let svc = svc.as_ref().unwrap();
                assert_eq!((svc.resource_version, svc.version.as_str()), (7, "t1"));
            }
            other => panic!("{other:?}"),
        }
        let gone = WatchEvent::Delete {
            key: "/capstan/v1/stacks/s".into(),
            mod_revision: 9,
        };
        match r.apply_batch(&store, &[gone]).pop() {
            Some(Ok(Change::Commit {
                record: None,
                services,
                ..
            })) => {
                assert_eq!(services, vec![("web".to_string(), None)]);
            }
            other => panic!("{other:?}"),
        }
        assert!(r
            .apply_batch(&store, &[put("/other/v1/stacks/s", "{}", 10)])
            .is_empty());
        let broken = put("/capstan/v1/stacks/s", "not json", 11);
        assert!(matches!(
            r.apply_batch(&store, &[broken]).pop(),
            Some(Err(StoreError::Corrupt { .. }))
        ));
        let dangling = put("/capstan/v1/stacks/s", &record(&[("web", "nope")]), 12);
        assert!(matches!(
            r.apply_batch(&store, &[dangling]).pop(),
            Some(Err(StoreError::Dangling { .. }))
        ));
    }

    #[test]
    fn a_record_and_the_versions_it_names_in_one_revision_resolve_whatever_their_order() {
        let store = Store::new(Arc::new(MemKv::default()), "/capstan");
        let mut r = Resolver::default();
        let svc = serde_json::to_string(&capstan_api::object::Service::default()).unwrap();
        let batch = [
            put("/capstan/v1/stacks/s", &record(&[("web", "t1")]), 7),
            put("/capstan/v1/services/s/web/t1", &svc, 7),
        ];
        let out = r.apply_batch(&store, &batch);
        assert!(
            matches!(out.as_slice(), [Ok(Change::Commit { .. })]),
            "{out:?}"
        );
    }

    #[test]
    fn the_relist_back_off_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(2), Duration::from_millis(800));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
