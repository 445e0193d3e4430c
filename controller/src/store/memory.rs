//! An in-memory [`Kv`] with etcd's revision semantics, for unit tests and simulations.

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::kv::*;

pub struct MemKv {
    state: Mutex<State>,
    events: broadcast::Sender<Vec<WatchEvent>>,
    /// True while "unreachable": open watches end with an error, as etcd's do when the
    /// connection is lost.
    down: watch::Sender<bool>,
    /// True while "frozen" (etcd stopped by `SIGSTOP`): every call waits, unanswered, until
    /// thawed; open watches stay open and quiet.
    frozen: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    revision: i64,
    data: BTreeMap<String, KeyValue>,
    /// Every event, so a watch can start from an old revision.
    history: Vec<WatchEvent>,
    /// Counts writes, for tests that assert "no write".
    txns_committed: u64,
    down: bool,
    /// Live leases: when each expires, its TTL, and the keys put with it.
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    /// A crash: once this many writes have committed, every call fails until `set_down(false)`.
    crash_after: Option<u64>,
}

struct Lease {
    ttl: Duration,
    expires: Instant,
    keys: Vec<String>,
}

impl Default for MemKv {
    fn default() -> Self {
        MemKv {
            state: Mutex::new(State {
                revision: 1,
                ..Default::default()
            }),
            events: broadcast::channel(4096).0,
            down: watch::channel(false).0,
            frozen: watch::channel(false).0,
        }
    }
}

impl MemKv {
    /// How many transactions changed something.
    pub fn writes(&self) -> u64 {
        self.state.lock().unwrap().txns_committed
    }

    /// Makes every call fail as if etcd were unreachable, and ends the open watches. Coming
    /// back up also clears [`MemKv::fail_after_writes`].
    pub fn set_down(&self, down: bool) {
        let mut st = self.state.lock().unwrap();
        st.down = down;
        if !down {
            st.crash_after = None;
        }
        drop(st);
        self.down.send_replace(down);
    }

    /// Makes every call wait without an answer (as a frozen etcd's do) until unfrozen.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    async fn thawed(&self) {
        let mut frozen = self.frozen.subscribe();
        let _ = frozen.wait_for(|f| !*f).await;
    }

    /// Lets `writes` more transactions commit, then fails every call (the next write
    /// included) as if the writer had crashed there: a half-done multi-transaction write stays
    /// half done. `set_down(false)` is the restart.
    pub fn fail_after_writes(&self, writes: u64) {
        let mut st = self.state.lock().unwrap();
        st.crash_after = Some(st.txns_committed + writes);
    }

    fn check(&self) -> Result<(), KvError> {
        if self.state.lock().unwrap().down {
            return Err(KvError::Unavailable("memory kv is down".into()));
        }
        self.expire_leases();
        Ok(())
    }

    /// Like etcd, an expired lease takes its keys with it (one delete event each). Done
    /// lazily, on the next call.
    fn expire_leases(&self) {
        let mut st = self.state.lock().unwrap();
        let now = Instant::now();
        let expired: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let keys = st.leases.remove(&id).map(|l| l.keys).unwrap_or_default();
            drop(st);
            self.delete_keys(keys);
            st = self.state.lock().unwrap();
        }
    }

    fn delete_keys(&self, keys: Vec<String>) {
        let mut st = self.state.lock().unwrap();
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|k| st.data.contains_key(k))
            .collect();
        if keys.is_empty() {
            return;
        }
        st.revision += 1;
        let rev = st.revision;
        let batch: Vec<WatchEvent> = keys
            .into_iter()
            .map(|key| {
                st.data.remove(&key);
                WatchEvent::Delete {
                    key,
                    mod_revision: rev,
                }
            })
            .collect();
        st.history.extend(batch.iter().cloned());
        let _ = self.events.send(batch);
    }
}

#[async_trait]
impl Kv for MemKv {
    async fn range(&self, prefix: &str) -> Result<Listing, KvError> {
        self.thawed().await;
        self.check()?;
        let st = self.state.lock().unwrap();
        let items = st
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Listing {
            items,
            revision: st.revision,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        self.thawed().await;
        self.check()?;
        Ok(self.state.lock().unwrap().data.get(key).cloned())
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool, KvError> {
        Ok(self.txn_at(compares, ops).await?.is_some())
    }

    async fn txn_at(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<i64>, KvError> {
        self.thawed().await;
        self.check()?;
        check_limits(&compares, &ops)?;
        let mut st = self.state.lock().unwrap();
        if st.crash_after.is_some_and(|n| st.txns_committed >= n) {
            st.down = true;
            drop(st);
            self.down.send_replace(true);
            return Err(KvError::Unavailable("memory kv crashed".into()));
        }
        for Compare::ModRevision(key, rev) in &compares {
            if st.data.get(key).map_or(0, |kv| kv.mod_revision) != *rev {
                return Ok(None);
            }
        }
        check_overlaps(&ops)?;
        if ops.is_empty() {
            return Ok(Some(st.revision));
        }
        for op in &ops {
            if let Op::PutWithLease(_, _, lease) = op {
                if !st.leases.contains_key(lease) {
                    return Err(KvError::Rejected("requested lease not found".into()));
                }
            }
        }
        st.revision += 1;
        let rev = st.revision;
        let batch = apply_ops(&mut st, ops, rev);
        st.txns_committed += 1;
        st.history.extend(batch.iter().cloned());
        let _ = self.events.send(batch);
        Ok(Some(rev))
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Vec<WatchEvent>, KvError>>, KvError> {
        self.thawed().await;
        self.check()?;
        let (past, live) = {
            let st = self.state.lock().unwrap();
            let past: Vec<WatchEvent> = st
                .history
                .iter()
                .filter(|e| e.revision() >= from_revision)
                .cloned()
                .collect();
            (past, self.events.subscribe())
        };
        let prefix = prefix.to_string();
        let keep = move |batch: Vec<WatchEvent>| {
            let batch: Vec<WatchEvent> = batch
                .into_iter()
                .filter(|e| match e {
                    WatchEvent::Put(kv) => kv.key.starts_with(&prefix),
                    WatchEvent::Delete { key, .. } => key.starts_with(&prefix),
                })
                .collect();
            (!batch.is_empty()).then_some(Ok(batch))
        };
        let keep2 = keep.clone();
        let past = futures::stream::iter(if past.is_empty() { vec![] } else { vec![past] })
            .filter_map(move |b| futures::future::ready(keep(b)));
        let live = tokio_stream_from(live).filter_map(move |b| {
            futures::future::ready(match b {
                Ok(batch) => keep2(batch),
                Err(e) => Some(Err(e)),
            })
        });
        let mut down = self.down.subscribe();
        let lost = async move {
            let _ = down.wait_for(|d| *d).await;
        };
        let broken = futures::stream::once(async {
            Err(KvError::Unavailable("connection to etcd lost".into()))
        });
        Ok(past.chain(live).take_until(lost).chain(broken).boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.thawed().await;
        self.check()?;
        let mut st = self.state.lock().unwrap();
        st.next_lease += 1;
        let id = st.next_lease;
        st.leases.insert(
            id,
            Lease {
                ttl,
                expires: Instant::now() + ttl,
                keys: vec![],
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, KvError> {
        self.thawed().await;
        self.check()?;
        let mut st = self.state.lock().unwrap();
        Ok(st.leases.get_mut(&lease).map(|l| {
            l.expires = Instant::now() + l.ttl;
            l.ttl
        }))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.thawed().await;
        self.check()?;
        let keys = self.state.lock().unwrap().leases.remove(&lease);
        if let Some(l) = keys {
            self.delete_keys(l.keys);
        }
        Ok(())
    }
}

/// etcd's default limits: at most [`ETCD_MAX_TXN_OPS`] compares and as many operations, and
/// a request of at most [`ETCD_MAX_REQUEST_BYTES`] (counted as the bytes of keys and values,
/// a little less than etcd counts), so tests catch a write that a real etcd would refuse.
fn check_limits(compares: &[Compare], ops: &[Op]) -> Result<(), KvError> {
    if compares.len() > ETCD_MAX_TXN_OPS || ops.len() > ETCD_MAX_TXN_OPS {
        return Err(KvError::Rejected(
            "etcdserver: too many operations in txn request".into(),
        ));
    }
    let compared: usize = compares
        .iter()
        .map(|Compare::ModRevision(k, _)| k.len() + 8)
        .sum();
    let written: usize = ops
        .iter()
        .map(|op| match op {
            Op::Put(k, v) | Op::PutWithLease(k, v, _) => k.len() + v.len(),
            Op::Delete(k) | Op::DeletePrefix(k) => k.len(),
        })
        .sum();
    if compared + written > ETCD_MAX_REQUEST_BYTES {
        return Err(KvError::Rejected("etcdserver: request is too large".into()));
    }
    Ok(())
}

/// Like etcd: one transaction may not touch a key twice (a put and a delete of it, or two
/// puts).
fn check_overlaps(ops: &[Op]) -> Result<(), KvError> {
    let mut touched = std::collections::BTreeSet::new();
    for op in ops {
        let overlaps = match op {
            Op::Put(k, _) | Op::Delete(k) | Op::PutWithLease(k, _, _) => !touched.insert(k.clone()),
            Op::DeletePrefix(p) => {
                let hit = touched.iter().any(|k: &String| k.starts_with(p.as_str()))
                    || ops
                        .iter()
                        .any(|o| matches!(o, Op::Put(k, _) | Op::PutWithLease(k, _, _) if k.starts_with(p.as_str())));
                touched.insert(p.clone());
                hit
            }
        };
        if overlaps {
            return Err(KvError::Rejected(
                "duplicate key given in txn request".into(),
            ));
        }
    }
    Ok(())
}

/// Applies `ops` at revision `rev`; returns the events they make.
fn apply_ops(st: &mut State, ops: Vec<Op>, rev: i64) -> Vec<WatchEvent> {
    let mut batch = vec![];
    for op in ops {
        match op {
            Op::Put(key, value) => {
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    mod_revision: rev,
                };
                st.data.insert(key, kv.clone());
                batch.push(WatchEvent::Put(kv));
            }
            Op::PutWithLease(key, value, lease) => {
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    mod_revision: rev,
                };
                st.data.insert(key.clone(), kv.clone());
                if let Some(l) = st.leases.get_mut(&lease) {
                    l.keys.push(key);
                }
                batch.push(WatchEvent::Put(kv));
            }
            Op::Delete(key) => {
                if st.data.remove(&key).is_some() {
                    batch.push(WatchEvent::Delete {
                        key,
                        mod_revision: rev,
                    });
                }
            }
            Op::DeletePrefix(prefix) => {
                let keys: Vec<String> = st
                    .data
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect();
                for key in keys {
                    st.data.remove(&key);
                    batch.push(WatchEvent::Delete {
                        key,
                        mod_revision: rev,
                    });
                }
            }
        }
    }
    batch
}

/// Like etcd, a watcher that falls too far behind is cancelled (as compacted), never fed a
/// stream with holes: the watcher then relists.
fn tokio_stream_from(
    rx: broadcast::Receiver<Vec<WatchEvent>>,
) -> BoxStream<'static, Result<Vec<WatchEvent>, KvError>> {
    futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(batch) => Some((Ok(batch), Some(rx))),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((
                Err(KvError::Compacted {
                    requested: 0,
                    compacted: 0,
                }),
                None,
            )),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puts(n: usize, size: usize) -> Vec<Op> {
        (0..n)
            .map(|i| Op::Put(format!("k{i}"), vec![b'x'; size]))
            .collect()
    }

    #[tokio::test]
    async fn a_transaction_over_etcds_default_limits_is_refused_and_writes_nothing() {
        let kv = MemKv::default();
        let too_many = kv.txn(vec![], puts(ETCD_MAX_TXN_OPS + 1, 1)).await;
        assert!(matches!(too_many, Err(KvError::Rejected(_))));
        let compares = (0..=ETCD_MAX_TXN_OPS)
            .map(|i| Compare::ModRevision(format!("k{i}"), 0))
            .collect();
        let too_many = kv.txn(compares, puts(1, 1)).await;
        assert!(matches!(too_many, Err(KvError::Rejected(_))));
        let too_big = kv.txn(vec![], puts(2, ETCD_MAX_REQUEST_BYTES / 2)).await;
        assert!(matches!(too_big, Err(KvError::Rejected(_))));
        assert_eq!(kv.writes(), 0);
        assert!(kv.txn(vec![], puts(ETCD_MAX_TXN_OPS, 1)).await.unwrap());
    }

    #[tokio::test]
    async fn a_crash_after_k_writes_fails_every_call_until_the_restart() {
        let kv = MemKv::default();
        kv.fail_after_writes(2);
        assert!(kv.txn(vec![], puts(1, 1)).await.unwrap());
        assert!(kv.txn(vec![], puts(1, 1)).await.unwrap());
        assert!(kv.txn(vec![], puts(1, 1)).await.is_err());
        assert!(kv.get("k0").await.is_err());
        kv.set_down(false);
        assert!(kv.txn(vec![], puts(1, 1)).await.unwrap());
        assert_eq!(kv.writes(), 3);
    }
}
