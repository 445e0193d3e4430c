//! The API tokens' secrets (only their SHA-256 is kept) and this daemon's short-lived copy
//! of the token list, through which [`super::auth`] looks a bearer token up.

use capstan_api::token::Role;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError};

/// A new token's secret: `capstan_` and 48 hex digits (192 random bits).
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!("capstan_{}", hex(&bytes)))
}

pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long a daemon trusts its copy of the token list: a token revoked through another
/// daemon sharing the etcd stops working here within this.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

/// What a token says of its holder: its name, role and policy profile, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub role: Role,
    pub profile: Option<String>,
}

/// The holders by SHA-256, as loaded at an instant.
type ByHash = (Instant, HashMap<String, Holder>);

/// The tokens by hash, reloaded from etcd when older than [`TOKEN_CACHE_TTL`].
#[derive(Default)]
pub struct Tokens {
    cached: RwLock<Option<ByHash>>,
}

impl Tokens {
    /// The holder of the token whose SHA-256 is `sha256`, if it exists.
    pub async fn lookup(&self, store: &Store, sha256: &str) -> Result<Option<Holder>, StoreError> {
        if let Some((at, map)) = &*self.cached.read().expect("token cache") {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(map.get(sha256).cloned());
            }
        }
        let map: HashMap<_, _> = (store.tokens().await?.into_iter())
            .map(|t| {
                let holder = Holder {
                    name: t.name,
                    role: t.role,
                    profile: t.policy,
                };
                (t.sha256, holder)
            })
            .collect();
        let found = map.get(sha256).cloned();
        *self.cached.write().expect("token cache") = Some((Instant::now(), map));
        Ok(found)
    }

    /// Forget the cached list (after a create or revoke through this daemon).
    pub fn invalidate(&self) {
        *self.cached.write().expect("token cache") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_random_and_only_its_hash_is_kept() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), "capstan_".len() + 48);
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(hash(&a), hash(&a));
        assert!(!hash(&a).contains(&a[8..]));
    }
}
