//! The few key-value operations capstan needs from etcd, behind a trait so the typed store,
//! the watcher and the reconciler also run against `super::memory::MemKv` in tests (the
//! `testing` feature).

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::time::Duration;

/// An etcd lease: keys put with it vanish once it is not kept alive for its TTL.
pub type LeaseId = i64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// etcd's revision of the last write to this key.
    pub mod_revision: i64,
}

/// A transaction guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this; 0 means the key must not exist.
    ModRevision(String, i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    DeletePrefix(String),
    /// A put whose key is deleted when the lease expires or is revoked.
    PutWithLease(String, Vec<u8>, LeaseId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// etcd could not be reached or timed out. Retryable.
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    /// etcd refused the request itself (a bug, not an outage). Not retryable as is.
    #[error("etcd rejected the request: {0}")]
    Rejected(String),
    /// A watch asked for history etcd has compacted away. The watcher relists.
    #[error("etcd compacted revision {requested}; oldest kept is {compacted}")]
    Compacted { requested: i64, compacted: i64 },
    /// This daemon does not hold the leader lease (any more): it may not write.
    #[error("not the leader: {0}")]
    Fenced(String),
}

/// etcd's default `--max-txn-ops`: the most compares, and the most operations, one
/// transaction may hold.
pub const ETCD_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const ETCD_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// A snapshot of everything under a prefix, at one revision.
pub struct Listing {
    pub items: Vec<KeyValue>,
    pub revision: i64,
}

#[async_trait]
pub trait Kv: Send + Sync + 'static {
    async fn range(&self, prefix: &str) -> Result<Listing, KvError>;
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError>;
    /// Applies `ops` if every compare holds. Ok(false) when one did not.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool, KvError>;
    /// Like [`Kv::txn`], and says at which revision the write committed: `Some(revision)`, or
    /// `Some(0)` when this implementation cannot tell (a wrapper that only forwards `txn`);
    /// None when a compare did not hold.
    async fn txn_at(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<i64>, KvError> {
        Ok(self.txn(compares, ops).await?.then_some(0))
    }
    /// Batches of events under `prefix` from `from_revision` on (inclusive).
    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Vec<WatchEvent>, KvError>>, KvError>;
    /// A new lease of `ttl`.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError>;
    /// Renews `lease`: the TTL it has again, or None when it no longer exists (expired or
    /// revoked).
    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, KvError>;
    /// Ends `lease` now; its keys are deleted.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError>;
}
