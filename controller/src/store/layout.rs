//! The versioned layout, read side: a service's spec lives in an immutable key per version,
//! `services/<stack>/<service>/<token>`, which no reader sees until the stack record
//! (`stacks/<stack>`) names that token in its `versions`. An apply of any size therefore
//! becomes visible in one small transaction (the record's), and a half-written one is never
//! visible at all.
//!
//! [`Resolver`] turns raw keys into committed objects: from a listing (one revision) and then
//! from watch events, in revision order.

use capstan_api::object::{Endpoints, Service, ServiceStatus, Stack};
use std::collections::{BTreeMap, HashMap};

use super::kv::{ETCD_MAX_REQUEST_BYTES, ETCD_MAX_TXN_OPS};
use super::{decode, KeyKind, KeyValue, Op, Snapshot, Store, StoreError, WatchEvent};

/// The most operations capstan puts in one transaction: below etcd's default of 128, leaving
/// room for compares a wrapper adds (the leader fence).
pub const MAX_OPS: usize = ETCD_MAX_TXN_OPS - 28;
/// The most bytes (keys and values) capstan puts in one transaction: two thirds of etcd's
/// default request limit, leaving room for the protocol's own bytes.
pub const MAX_BYTES: usize = ETCD_MAX_REQUEST_BYTES * 2 / 3;

/// A fresh token for a version key: random, so two applies racing on one stack never write
/// the same key (each stages its own; the record's compare-and-swap picks the winner).
pub fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put(k, v) | Op::PutWithLease(k, v, _) => k.len() + v.len(),
        Op::Delete(k) | Op::DeletePrefix(k) => k.len(),
    }
}

/// Whether `ops` fit in one transaction within [`MAX_OPS`] and [`MAX_BYTES`].
pub fn fits(ops: &[Op]) -> bool {
    ops.len() <= MAX_OPS && ops.iter().map(op_bytes).sum::<usize>() <= MAX_BYTES
}

/// `ops` cut, in order, into transactions within [`MAX_OPS`] and [`MAX_BYTES`] (an op larger
/// than that goes alone, and etcd decides).
pub fn batches(ops: Vec<Op>) -> Vec<Vec<Op>> {
    let mut out: Vec<Vec<Op>> = vec![];
    let mut bytes = 0;
    for op in ops {
        let size = op_bytes(&op);
        match out.last_mut() {
            Some(last) if last.len() < MAX_OPS && bytes + size <= MAX_BYTES => {
                bytes += size;
                last.push(op);
            }
            _ => {
                bytes = size;
                out.push(vec![op]);
            }
        }
    }
    out
}

/// One raw change, as readers see it.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A stack's record was committed (None: removed), with every service whose committed
    /// version changed in that commit (None: no longer in the stack). Readers apply it whole.
    Commit {
        stack: String,
        record: Option<Stack>,
        services: Vec<(String, Option<Service>)>,
    },
    Status(String, String, Option<ServiceStatus>),
    Endpoints(String, String, Option<Endpoints>),
}

/// Every version key seen (committed or not) and each stack's committed record.
#[derive(Default)]
pub struct Resolver {
    versions: HashMap<String, Service>,
    records: HashMap<String, Stack>,
}

impl Resolver {
    /// A listing of everything under the prefix at one revision: the resolver that follows
    /// it, and the committed objects.
    pub fn from_listing(
        store: &Store,
        items: &[KeyValue],
        revision: i64,
    ) -> Result<(Resolver, Snapshot), StoreError> {
        let mut r = Resolver::default();
        let mut snap = Snapshot {
            revision,
            ..Default::default()
        };
        for kv in items {
            match store.classify(&kv.key) {
                Some(KeyKind::Stack(s)) => {
                    r.records.insert(s, Store::decode_stack(kv)?);
                }
                Some(KeyKind::ServiceVersion(..)) => {
                    r.versions
                        .insert(kv.key.clone(), Store::decode_service(kv)?);
                }
                Some(KeyKind::Status(s, v)) => snap.statuses.push((s, v, decode(kv)?)),
                Some(KeyKind::Endpoints(..)) => snap.endpoints.push(decode(kv)?),
                None => {}
            }
        }
        let mut records: Vec<&Stack> = r.records.values().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        for record in records {
            for (svc, token) in &record.versions {
                snap.services
                    .push(r.committed(store, &record.name, svc, token)?);
            }
            snap.stacks.push(record.clone());
        }
        Ok((r, snap))
    }

    fn committed(
        &self,
        store: &Store,
        stack: &str,
        svc: &str,
        token: &str,
    ) -> Result<Service, StoreError> {
        let key = store.version_key(stack, svc, token);
        self.versions
            .get(&key)
            .cloned()
            .ok_or_else(|| StoreError::Dangling {
                stack: stack.into(),
                service: svc.into(),
                token: token.into(),
            })
    }

    /// One watch batch, in revision order; within a revision, version keys first (a record
    /// and the versions it names may commit in one transaction).
    pub fn apply_batch(
        &mut self,
        store: &Store,
        batch: &[WatchEvent],
    ) -> Vec<Result<Change, StoreError>> {
        let mut order: Vec<&WatchEvent> = batch.iter().collect();
        let is_version = |e: &WatchEvent| {
            let key = match e {
                WatchEvent::Put(kv) => kv.key.as_str(),
                WatchEvent::Delete { key, .. } => key.as_str(),
            };
            matches!(store.classify(key), Some(KeyKind::ServiceVersion(..)))
        };
        order.sort_by_key(|e| (e.revision(), !is_version(e)));
        order
            .into_iter()
            .filter_map(|e| self.apply(store, e).transpose())
            .collect()
    }

    /// One raw key change; None for a version key (invisible until committed) and for keys
    /// capstan does not own.
    pub fn apply(&mut self, store: &Store, ev: &WatchEvent) -> Result<Option<Change>, StoreError> {
        let (key, kv) = match ev {
            WatchEvent::Put(kv) => (kv.key.as_str(), Some(kv)),
            WatchEvent::Delete { key, .. } => (key.as_str(), None),
        };
        Ok(Some(match store.classify(key) {
            None => return Ok(None),
            Some(KeyKind::ServiceVersion(..)) => {
                match kv {
                    Some(kv) => self.versions.insert(key.into(), Store::decode_service(kv)?),
                    None => self.versions.remove(key),
                };
                // Services are stored inline and big: the room of a deleted 2,000-service
                // stack's versions was 16 MiB, held for ever.
                crate::memory::shrink_if_sparse(&mut self.versions);
                return Ok(None);
            }
            Some(KeyKind::Stack(s)) => {
                let record = kv.map(Store::decode_stack).transpose()?;
                self.commit(store, s, record)?
            }
            Some(KeyKind::Status(s, v)) => Change::Status(s, v, kv.map(decode).transpose()?),
            Some(KeyKind::Endpoints(s, v)) => Change::Endpoints(s, v, kv.map(decode).transpose()?),
        }))
    }

    /// The services whose committed version differs between the stack's previous record and
    /// `record`.
    fn commit(
        &mut self,
        store: &Store,
        stack: String,
        record: Option<Stack>,
    ) -> Result<Change, StoreError> {
        let empty = BTreeMap::new();
        let old = self.records.get(&stack).map_or(&empty, |r| &r.versions);
        let new = record.as_ref().map_or(&empty, |r| &r.versions);
        let mut services = vec![];
        for (svc, token) in new {
            if old.get(svc) != Some(token) {
                let committed = self.committed(store, &stack, svc, token)?;
                services.push((svc.clone(), Some(committed)));
            }
        }
        for svc in old.keys().filter(|s| !new.contains_key(*s)) {
            services.push((svc.clone(), None));
        }
        match &record {
            Some(r) => self.records.insert(stack.clone(), r.clone()),
            None => self.records.remove(&stack),
        };
        crate::memory::shrink_if_sparse(&mut self.records);
        Ok(Change::Commit {
            stack,
            record,
            services,
        })
    }
}
