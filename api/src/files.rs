//! Secrets and configs: files whose content the client sends with the stack, the daemon
//! keeps in etcd, writes on the host and bind-mounts read-only into the replicas.
//!
//! Content never appears in a spec: a spec names a file's sha256 digest, so the spec hash
//! (and so the rollout) follows the content without anyone printing it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Whether a file is a secret or a config: where it is mounted by default, and whether its
/// content is encrypted at rest.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    /// The top-level key (`secrets`, `configs`).
    pub fn key(&self) -> &'static str {
        match self {
            FileKind::Secret => "secrets",
            FileKind::Config => "configs",
        }
    }

    pub fn word(&self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }

    /// The path in the container when the service names no `target`: `/run/secrets/<name>`
    /// for a secret, `/<name>` for a config (as Compose).
    pub fn default_target(&self, name: &str) -> String {
        match self {
            FileKind::Secret => format!("/run/secrets/{name}"),
            FileKind::Config => format!("/{name}"),
        }
    }

    /// A relative `target`: secrets live under `/run/secrets/`, configs under `/`.
    pub fn target(&self, target: &str) -> String {
        if target.starts_with('/') {
            target.to_string()
        } else {
            self.default_target(target)
        }
    }
}

/// The mode a file gets when the service names none: readable by its owner only.
pub const DEFAULT_FILE_MODE: u32 = 0o400;

/// The content of a secret or config. Its `Debug` never shows the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileContent(pub Vec<u8>);

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes, {}>", self.0.len(), digest(&self.0))
    }
}

/// A top-level secret or config of a stack: its digest, and (only in memory, between
/// parsing and storing) its content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileObject {
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Never serialised: the store keeps it apart (encrypted for secrets).
    #[serde(skip)]
    pub content: FileContent,
}

impl FileObject {
    pub fn new(content: Vec<u8>) -> Self {
        FileObject {
            digest: digest(&content),
            content: FileContent(content),
        }
    }
}

/// `sha256:<hex>` of `bytes`: what specs, status and logs show instead of a file's content.
pub fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A secret or config a service mounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileMount {
    /// The top-level name.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Unix permission bits; [`DEFAULT_FILE_MODE`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// The content's digest, filled from the top level: a content change changes the spec.
    #[serde(default)]
    pub digest: String,
}

impl FileMount {
    pub fn mode(&self) -> u32 {
        self.mode.unwrap_or(DEFAULT_FILE_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_never_in_debug_output_or_serialised() {
        let f = FileObject::new(b"hunter2".to_vec());
        assert!(!format!("{f:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&f).unwrap().contains("hunter2"));
        assert!(f.digest.starts_with("sha256:") && f.digest.len() == 71);
    }

    #[test]
    fn relative_targets_land_where_compose_puts_them() {
        assert_eq!(FileKind::Secret.target("pw"), "/run/secrets/pw");
        assert_eq!(FileKind::Config.target("app.conf"), "/app.conf");
        assert_eq!(FileKind::Config.target("/etc/x"), "/etc/x");
    }
}
