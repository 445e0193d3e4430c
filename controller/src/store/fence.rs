//! Fencing: a [`Kv`] whose every transaction also requires that this daemon still holds
//! the leader key at the revision it won it. A daemon that lost its lease (paused,
//! partitioned) cannot write, even if it has not noticed yet: etcd refuses for it.

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;
use std::time::Duration;

use super::kv::*;

/// What a fenced writer asks before each write.
pub trait Fence: Send + Sync + 'static {
    /// The leader key's revision this daemon won, while it may still act on it; None when
    /// it may not write.
    fn write_token(&self) -> Option<i64>;
}

/// Reads pass through; writes carry the fence.
pub struct FencedKv {
    pub inner: Arc<dyn Kv>,
    pub leader_key: String,
    pub fence: Arc<dyn Fence>,
}

#[async_trait]
impl Kv for FencedKv {
    async fn range(&self, prefix: &str) -> Result<Listing, KvError> {
        self.inner.range(prefix).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        self.inner.get(key).await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool, KvError> {
        Ok(self.txn_at(compares, ops).await?.is_some())
    }

    async fn txn_at(
        &self,
        mut compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<Option<i64>, KvError> {
        let Some(token) = self.fence.write_token() else {
            return Err(KvError::Fenced(
                "this daemon does not hold the leader lease".into(),
            ));
        };
        compares.push(Compare::ModRevision(self.leader_key.clone(), token));
        if let Some(rev) = self.inner.txn_at(compares, ops).await? {
            return Ok(Some(rev));
        }
        // A failed compare: the caller's own, or the fence's. Only the first is the
        // caller's to handle.
        match self.inner.get(&self.leader_key).await? {
            Some(kv) if kv.mod_revision == token => Ok(None),
            _ => Err(KvError::Fenced(
                "the leader lease was lost; another daemon may hold it".into(),
            )),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Vec<WatchEvent>, KvError>>, KvError> {
        self.inner.watch(prefix, from_revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, KvError> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.inner.revoke_lease(lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemKv;
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct Token(AtomicI64);
    impl Fence for Token {
        fn write_token(&self) -> Option<i64> {
            Some(self.0.load(Ordering::SeqCst)).filter(|t| *t > 0)
        }
    }

    #[tokio::test]
    async fn a_write_is_refused_once_the_leader_key_is_someone_elses() {
        let mem = Arc::new(MemKv::default());
        mem.txn(vec![], vec![Op::Put("leader".into(), b"a".to_vec())])
            .await
            .unwrap();
        let won = mem.get("leader").await.unwrap().unwrap().mod_revision;
        let token = Arc::new(Token(AtomicI64::new(won)));
        let fenced = FencedKv {
            inner: mem.clone(),
            leader_key: "leader".into(),
            fence: token.clone(),
        };
        assert!(fenced
            .txn(vec![], vec![Op::Put("x".into(), b"1".to_vec())])
            .await
            .unwrap());
        mem.txn(vec![], vec![Op::Put("leader".into(), b"b".to_vec())])
            .await
            .unwrap();
        let err = fenced
            .txn(vec![], vec![Op::Put("x".into(), b"2".to_vec())])
            .await
            .unwrap_err();
        assert!(matches!(err, KvError::Fenced(_)), "{err}");
        assert_eq!(mem.get("x").await.unwrap().unwrap().value, b"1");
        token.0.store(0, Ordering::SeqCst);
        assert!(matches!(
            fenced.txn(vec![], vec![]).await.unwrap_err(),
            KvError::Fenced(_)
        ));
    }
}
