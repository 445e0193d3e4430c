//! The leader key: who holds the lease. Only [`crate::leader`] calls these; the reconciler's
//! writes carry the winning revision as their fence ([`super::fence`]).

use capstan_api::object::LeaderRecord;
use std::time::Duration;

use super::kv::{Compare, LeaseId, Op};
use super::{decode, encode, Store, StoreError};

/// The outcome of one attempt to take the leader key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Campaign {
    /// This daemon holds the key; `token` is its mod revision, which every fenced write
    /// compares.
    Won { token: i64 },
    /// Another daemon holds it.
    Held(LeaderRecord),
}

impl Store {
    pub fn leader_key(&self) -> String {
        format!("{}leader", self.root)
    }

    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        Ok(self.kv.grant_lease(ttl).await?)
    }

    /// The TTL `lease` has again, or None when it is gone (expired or revoked).
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        Ok(self.kv.keep_alive(lease).await?)
    }

    /// Ends `lease` at once, and with it the leader key if this daemon held it (resigning).
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        Ok(self.kv.revoke_lease(lease).await?)
    }

    /// Takes the leader key for `record` under `lease` if nobody holds it, or if the holder
    /// has this daemon's own identity (a previous run of it that died before its lease
    /// ran out: two live daemons never share an identity, which names the address each
    /// listens on).
    pub async fn campaign(
        &self,
        record: &LeaderRecord,
        lease: LeaseId,
    ) -> Result<Campaign, StoreError> {
        let key = self.leader_key();
        let current = self.kv.get(&key).await?;
        let expected = match &current {
            None => 0,
            Some(kv) => {
                let holder: LeaderRecord = decode(kv)?;
                if holder.holder != record.holder {
                    return Ok(Campaign::Held(holder));
                }
                kv.mod_revision
            }
        };
        let put = Op::PutWithLease(key.clone(), encode(record), lease);
        if !self
            .kv
            .txn(vec![Compare::ModRevision(key.clone(), expected)], vec![put])
            .await?
        {
            // Someone else won in between: report them.
            return match self.leader().await? {
                Some((holder, _)) => Ok(Campaign::Held(holder)),
                None => Err(StoreError::Conflict("the leader key changed; retry".into())),
            };
        }
        match self.kv.get(&key).await? {
            Some(kv) if decode::<LeaderRecord>(&kv)?.holder == record.holder => Ok(Campaign::Won {
                token: kv.mod_revision,
            }),
            Some(kv) => Ok(Campaign::Held(decode(&kv)?)),
            None => Err(StoreError::Conflict(
                "the leader key vanished as it was taken; retry".into(),
            )),
        }
    }

    /// The current holder, with the key's mod revision.
    pub async fn leader(&self) -> Result<Option<(LeaderRecord, i64)>, StoreError> {
        match self.kv.get(&self.leader_key()).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }
}
