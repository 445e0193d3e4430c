//! The values of secrets and configs: `files/<stack>/<kind>/<sha256 hex>`, content-addressed
//! and immutable. An apply stages the values its services mount before the record's commit
//! (so no committed spec names a value that is not stored), and after it collects the values
//! no current spec of the stack nor one in its services' revision history names (a rollback
//! or `rollout undo` needs its old values). Secret
//! values are sealed with the daemon's key ([`crate::seal`]) when it has one; configs are
//! stored as they are.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use capstan_api::files::{digest, FileKind};
use capstan_api::object::Service;
use capstan_api::spec::{ServiceSpec, StackSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

use super::{decode, encode, Op, Store, StoreError};
use crate::seal::{Sealed, Sealer};

/// One stored value: in the clear (configs, or secrets of a daemon without a key) or sealed.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<Sealed>,
}

/// Every (kind, digest) `spec` mounts.
pub fn mounted(spec: &ServiceSpec) -> impl Iterator<Item = (FileKind, &str)> {
    let secrets = spec
        .secrets
        .iter()
        .map(|m| (FileKind::Secret, m.digest.as_str()));
    let configs = spec
        .configs
        .iter()
        .map(|m| (FileKind::Config, m.digest.as_str()));
    secrets.chain(configs)
}

impl Store {
    /// The same store, sealing secret values with `sealer`.
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> Store {
        self.sealer = Some(sealer);
        self
    }

    pub(super) fn files_prefix(&self, stack: &str) -> String {
        format!("{}files/{stack}/", self.root)
    }

    fn file_key(&self, stack: &str, kind: FileKind, digest: &str) -> String {
        let hex = digest.trim_start_matches("sha256:");
        format!("{}files/{stack}/{}/{hex}", self.root, kind.word())
    }

    /// What a value is bound to when sealed: its key below the prefix.
    fn context<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(&self.root).unwrap_or(key)
    }

    /// Puts of the values `spec`'s services mount, whose content this spec carries.
    pub(super) fn file_puts(&self, spec: &StackSpec) -> Vec<Op> {
        let mut wanted = BTreeSet::new();
        for svc in spec.services.values() {
            wanted.extend(mounted(svc));
        }
        let mut ops = vec![];
        for (kind, d) in wanted {
            let objects = match kind {
                FileKind::Secret => &spec.secrets,
                FileKind::Config => &spec.configs,
            };
            let Some(obj) = objects.values().find(|o| o.digest == d) else {
                continue;
            };
            if digest(&obj.content.0) != d {
                continue; // A spec without the content (not from a parsed file): nothing to put.
            }
            let key = self.file_key(&spec.name, kind, d);
            let stored = match (&self.sealer, kind) {
                (Some(sealer), FileKind::Secret) => StoredFile {
                    data: None,
                    sealed: Some(sealer.seal(&obj.content.0, self.context(&key))),
                },
                _ => StoredFile {
                    data: Some(B64.encode(&obj.content.0)),
                    sealed: None,
                },
            };
            ops.push(Op::Put(key, encode(&stored)));
        }
        ops
    }

    /// Key rotation: the values of `spec` stored sealed with another key than the sealing
    /// one are sealed again (an apply that changes nothing else writes nothing otherwise).
    pub(super) async fn reseal(&self, spec: &StackSpec) -> Result<(), StoreError> {
        let Some(sealer) = &self.sealer else {
            return Ok(());
        };
        let prefix = format!("{}secret/", self.files_prefix(&spec.name));
        let stored = self.kv.range(&prefix).await?.items;
        let stale = |key: &str| {
            stored.iter().any(|kv| {
                kv.key == key
                    && decode::<StoredFile>(kv)
                        .ok()
                        .and_then(|f| f.sealed)
                        .is_some_and(|s| s.key_id != sealer.key_id())
            })
        };
        let puts: Vec<Op> = self
            .file_puts(spec)
            .into_iter()
            .filter(|op| matches!(op, Op::Put(key, _) if stale(key)))
            .collect();
        for batch in super::layout::batches(puts) {
            self.kv.txn(vec![], batch).await?;
        }
        Ok(())
    }

    /// The value a service mounts, checked against its digest.
    pub async fn file_content(
        &self,
        stack: &str,
        kind: FileKind,
        digest_: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let key = self.file_key(stack, kind, digest_);
        let kv = self.kv.get(&key).await?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "the {} {digest_} of stack {stack} is not stored",
                kind.word()
            ))
        })?;
        let stored: StoredFile = decode(&kv)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.clone(),
            reason,
        };
        let content = match (stored.data, stored.sealed, &self.sealer) {
            (Some(data), _, _) => B64.decode(data).map_err(|e| corrupt(e.to_string()))?,
            (None, Some(sealed), Some(sealer)) => sealer
                .open(&sealed, self.context(&key))
                .map_err(|source| StoreError::Unsealed {
                    key: key.clone(),
                    source,
                })?,
            (None, Some(sealed), None) => {
                return Err(StoreError::Unsealed {
                    key: key.clone(),
                    source: crate::seal::SealError::UnknownKey {
                        sealed_with: sealed.key_id,
                        have: "no key".into(),
                    },
                })
            }
            (None, None, _) => return Err(corrupt("neither data nor a sealed value".into())),
        };
        if digest(&content) != digest_ {
            return Err(corrupt(format!("its content is not {digest_}")));
        }
        Ok(content)
    }

    /// The value keys the specs of `services` (and the specs they would roll back to) name.
    pub(super) fn file_keys_named(&self, stack: &str, specs: &[&ServiceSpec]) -> BTreeSet<String> {
        specs
            .iter()
            .flat_map(|s| mounted(s))
            .map(|(kind, d)| self.file_key(stack, kind, d))
            .collect()
    }

    /// After a commit at `rev`: removes the stack's values that no spec in `keep` names and
    /// that are older than `rev` (a later apply writes the values it needs again). Best effort.
    pub(super) async fn collect_files(&self, stack: &str, keep: &BTreeSet<String>, rev: i64) {
        let result = async {
            let listing = self.kv.range(&self.files_prefix(stack)).await?;
            let dead: Vec<Op> = listing
                .items
                .into_iter()
                .filter(|kv| kv.mod_revision < rev && !keep.contains(&kv.key))
                .map(|kv| Op::Delete(kv.key))
                .collect();
            for batch in super::layout::batches(dead) {
                self.kv.txn(vec![], batch).await?;
            }
            Ok::<(), StoreError>(())
        };
        if let Err(e) = result.await {
            tracing::warn!(%stack, error = %e, "unused secret and config values not collected yet");
        }
    }
}

/// Every spec of `services` that may run again: the current one and the one before it.
pub(super) fn live_specs(services: &[Service]) -> Vec<&ServiceSpec> {
    services
        .iter()
        .flat_map(|s| std::iter::once(&s.spec).chain(s.history.iter().map(|r| r.spec.as_ref())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemKv;
    use super::super::Kv;
    use super::*;
    use capstan_api::parse_stack;

    fn stack(pw: &str) -> StackSpec {
        let text = format!(
            "services: {{app: {{image: x, secrets: [pw], configs: [conf]}}, other: {{image: x}}}}\n\
             secrets: {{pw: {{content: {pw}}}}}\nconfigs: {{conf: {{content: plain-config}}}}"
        );
        parse_stack("shop", &text).unwrap()
    }

    async fn raw(kv: &MemKv) -> Vec<(String, String)> {
        let items = kv.range("/capstan/v1/files/").await.unwrap().items;
        (items.into_iter())
            .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
            .collect()
    }

    #[tokio::test]
    async fn secret_values_are_sealed_in_the_store_and_collected_when_no_spec_names_them() {
        let kv = Arc::new(MemKv::default());
        let sealer = Arc::new(Sealer::from_keys(&[[7; 32]]));
        let store = Store::new(kv.clone(), "/capstan")
            .with_sealer(sealer)
            .with_history_limit(1);
        let first = stack("hunter2");
        store.apply(&first, None).await.unwrap();
        let values = raw(&kv).await;
        assert_eq!(values.len(), 2, "{values:?}");
        assert!(values
            .iter()
            .all(|(_, v)| !v.contains("hunter2") && !v.contains(&B64.encode("hunter2"))));
        let pw = &first.secrets["pw"].digest;
        assert_eq!(
            store
                .file_content("shop", FileKind::Secret, pw)
                .await
                .unwrap(),
            b"hunter2"
        );
        // A change keeps the old value while a kept revision names it (a rollback returns to
        // it); with one revision kept, the change after drops it.
        store.apply(&stack("hunter3"), None).await.unwrap();
        assert_eq!(raw(&kv).await.len(), 3);
        store.apply(&stack("hunter4"), None).await.unwrap();
        assert_eq!(raw(&kv).await.len(), 3);
        assert!(store
            .file_content("shop", FileKind::Secret, pw)
            .await
            .is_err());
        // Another daemon's key cannot open it, and says so.
        let other =
            Store::new(kv.clone(), "/capstan").with_sealer(Arc::new(Sealer::from_keys(&[[8; 32]])));
        let d = &stack("hunter4").secrets["pw"].digest;
        let err = other
            .file_content("shop", FileKind::Secret, d)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("not in this daemon's encryption key file"),
            "{err}"
        );
        // Rotation: with the new key first, applying the same stack again seals it anew.
        let rotated = Store::new(kv.clone(), "/capstan")
            .with_sealer(Arc::new(Sealer::from_keys(&[[8; 32], [7; 32]])));
        rotated.apply(&stack("hunter4"), None).await.unwrap();
        let content = other.file_content("shop", FileKind::Secret, d).await;
        assert_eq!(content.unwrap(), b"hunter4");
    }
}
