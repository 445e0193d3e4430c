//! API tokens under `<prefix>/auth/tokens/<name>`, outside the watched `v1/` tree: the
//! record holds the token's SHA-256, never the token.

use super::kv::{Compare, Op};
use super::{decode, Store, StoreError};
use capstan_api::token::TokenRecord;

impl Store {
    fn tokens_prefix(&self) -> String {
        let prefix = self.root.trim_end_matches('/').trim_end_matches("v1");
        format!("{prefix}auth/tokens/")
    }

    /// Every token, by name.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let listing = self.kv.range(&self.tokens_prefix()).await?;
        listing.items.iter().map(decode).collect()
    }

    /// Stores a new token; a conflict if one of that name exists.
    pub async fn create_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let key = format!("{}{}", self.tokens_prefix(), record.name);
        let value = serde_json::to_vec(record).expect("a token record serialises");
        let created = (self.kv)
            .txn(
                vec![Compare::ModRevision(key.clone(), 0)],
                vec![Op::Put(key, value)],
            )
            .await?;
        if !created {
            return Err(StoreError::Conflict(format!(
                "token {} exists; revoke it first",
                record.name
            )));
        }
        Ok(())
    }

    /// Deletes a token; not found if there is none of that name.
    pub async fn revoke_token(&self, name: &str) -> Result<(), StoreError> {
        let key = format!("{}{name}", self.tokens_prefix());
        let Some(found) = self.kv.get(&key).await? else {
            return Err(StoreError::NotFound(format!("token {name} not found")));
        };
        let compare = Compare::ModRevision(key.clone(), found.mod_revision);
        if !self.kv.txn(vec![compare], vec![Op::Delete(key)]).await? {
            return Err(StoreError::Conflict(format!(
                "token {name} changed meanwhile; try again"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemKv;
    use capstan_api::token::Role;
    use std::sync::Arc;

    fn record(name: &str) -> TokenRecord {
        TokenRecord {
            policy: None,
            name: name.into(),
            role: Role::Read,
            sha256: "ab".repeat(32),
            created: 1,
        }
    }

    #[tokio::test]
    async fn a_token_is_stored_outside_the_watched_tree_once_and_revoked_once() {
        let kv = Arc::new(MemKv::default());
        let store = Store::new(kv.clone(), "/capstan");
        assert_eq!(store.tokens_prefix(), "/capstan/auth/tokens/");
        store.create_token(&record("ci")).await.unwrap();
        let again = store.create_token(&record("ci")).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))));
        assert_eq!(store.tokens().await.unwrap()[0].name, "ci");
        store.revoke_token("ci").await.unwrap();
        let gone = store.revoke_token("ci").await;
        assert!(matches!(gone, Err(StoreError::NotFound(_))));
        assert!(store.tokens().await.unwrap().is_empty());
    }
}
