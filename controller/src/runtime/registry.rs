//! Registry credentials for pulls: the operator's Docker config (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`) and the file given at `serve --registry-auth` (same format,
//! winning for a registry both name), matched by the registry host of the image.
//!
//! Only `auths` entries are read: `{"auths": {"HOST": {"auth": base64("user:pass")}}}` or
//! `{"username", "password"}` (and `identitytoken`). Credential helpers (`credsStore`,
//! `credHelpers`) are not run. A secret never appears in a log line, an error or `Debug`:
//! errors name the file and the field, never a value.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The registry Docker Hub images come from, however it is spelled.
pub const DOCKER_HUB: &str = "docker.io";

/// One registry's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("reading registry credentials {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `field` is a path inside the file (`auths."127.0.0.1:5000".auth`); never a value.
    #[error("registry credentials {path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: &'static str,
    },
}

/// Registry host → credentials.
#[derive(Clone, Debug, Default)]
pub struct RegistryAuth {
    by_host: BTreeMap<String, Credential>,
}

impl RegistryAuth {
    /// The operator's Docker config (if it exists), then `extra` (which must exist) over it.
    pub fn load(extra: Option<&Path>) -> Result<RegistryAuth, AuthFileError> {
        let mut auth = RegistryAuth::default();
        if let Some(path) = docker_config_path() {
            match std::fs::read(&path) {
                Ok(bytes) => auth.merge(parse(&path, &bytes)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(AuthFileError::Read { path, source }),
            }
        }
        if let Some(path) = extra {
            let bytes = std::fs::read(path).map_err(|source| AuthFileError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            auth.merge(parse(path, &bytes)?);
        }
        Ok(auth)
    }

    fn merge(&mut self, other: RegistryAuth) {
        self.by_host.extend(other.by_host);
    }

    /// The registries credentials are known for (hosts only), for the daemon's start log.
    pub fn hosts(&self) -> Vec<String> {
        self.by_host.keys().cloned().collect()
    }

    /// The credentials for the registry `image` comes from, if any.
    pub fn for_image(&self, image: &str) -> Option<&Credential> {
        self.by_host.get(&registry_of(image))
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The registry host of an image reference, as Docker decides it: the first path component
/// when it looks like a host (has a `.` or a `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            normalize_host(first)
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// A key of `auths` as a host: scheme and path dropped, Docker Hub's aliases folded.
pub fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// A Docker config file's `auths`. Read as untyped JSON so that no parser error can quote
/// a secret back.
fn parse(path: &Path, bytes: &[u8]) -> Result<RegistryAuth, AuthFileError> {
    let invalid = |field: String, reason| AuthFileError::Invalid {
        path: path.to_path_buf(),
        field,
        reason,
    };
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| invalid("(file)".into(), "is not valid JSON"))?;
    let mut out = RegistryAuth::default();
    let Some(auths) = doc.get("auths") else {
        return Ok(out);
    };
    let auths = auths
        .as_object()
        .ok_or_else(|| invalid("auths".into(), "must be a map of registry to credentials"))?;
    for (key, entry) in auths {
        let field = |name: &str| format!("auths.{key:?}.{name}");
        let text = |name: &str| -> Result<Option<String>, AuthFileError> {
            match entry.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(field(name), "must be a string")),
            }
        };
        let mut cred = Credential {
            username: text("username")?,
            password: text("password")?,
            identity_token: text("identitytoken")?,
        };
        if let Some(encoded) = text("auth")? {
            let (user, pass) = decode_auth(&encoded)
                .ok_or_else(|| invalid(field("auth"), "must be base64 of USERNAME:PASSWORD"))?;
            cred.username = Some(user);
            cred.password = Some(pass);
        }
        if cred.username.is_none() && cred.identity_token.is_none() {
            continue; // An entry a credential helper fills in: nothing to use here.
        }
        out.by_host.insert(normalize_host(key), cred);
    }
    Ok(out)
}

fn decode_auth(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(json: &str) -> Result<RegistryAuth, AuthFileError> {
        parse(Path::new("/etc/capstan/auth.json"), json.as_bytes())
    }

    #[test]
    fn the_registry_of_an_image_is_found_as_docker_finds_it() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("capstan-demo/web:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/web:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/web"), "localhost");
        assert_eq!(registry_of("ghcr.io/org/app@sha256:abc"), "ghcr.io");
        assert_eq!(registry_of("index.docker.io/library/nginx"), "docker.io");
    }

    #[test]
    fn base64_auth_and_username_password_entries_are_read_and_docker_hub_aliases_fold() {
        let a = auth(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "127.0.0.1:5000": {"username": "ci", "password": "p4ss"},
                "helper.example": {}
            }, "credsStore": "desktop"}"#,
        )
        .unwrap();
        let hub = a.for_image("nginx:1").unwrap();
        assert_eq!(
            (hub.username.as_deref(), hub.password.as_deref()),
            (Some("hub"), Some("secret"))
        );
        let local = a.for_image("127.0.0.1:5000/web:1").unwrap();
        assert_eq!(local.password.as_deref(), Some("p4ss"));
        assert!(a.for_image("helper.example/x").is_none());
        assert_eq!(a.hosts(), ["127.0.0.1:5000", "docker.io"]);
    }

    #[test]
    fn no_error_or_debug_output_shows_a_secret() {
        let a =
            auth(r#"{"auths": {"r.example": {"username": "u", "password": "hunter2"}}}"#).unwrap();
        assert!(!format!("{a:?}").contains("hunter2"), "{a:?}");
        for bad in [
            r#"{"auths": {"r.example": {"auth": "hunter2 is not base64"}}}"#,
            r#"{"auths": {"r.example": {"password": 12345678}}}"#,
            r#"{"auths": {"r.example": {"password": "hunter2"#,
        ] {
            let err = auth(bad).unwrap_err().to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "{err}"
            );
            assert!(err.contains("/etc/capstan/auth.json"), "{err}");
        }
    }
}
