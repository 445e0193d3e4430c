//! Secrets and configs on the host: the daemon writes each file a service mounts under its
//! state folder (`serve --state-dir`), `files/<stack>/<service>/<secrets|configs>/<name>@<t>`
//! (`<t>` tells apart two mounts of one object at different targets), folders 0700, files
//! with the mount's mode (0400 by default) and owner, and the replicas bind-mount them
//! read-only. A file is rewritten (a new file renamed over the old) only when its content,
//! mode or owner differ; a running replica keeps the file it was started with. The files go
//! with their service or stack.

use capstan_api::files::{digest, FileKind, FileMount};
use capstan_api::object::Service;
use sha2::{Digest, Sha256};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::runtime::{Mount, MountOptions};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("service {0} mounts secrets or configs, but this daemon has no state folder to write them in (`serve --state-dir`)")]
    NoStateDir(String),
    #[error("reading the {kind} {name:?} of {service}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        service: String,
        source: StoreError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FilesError {
    /// A value this daemon's key cannot open stays so until a person acts.
    pub fn waits_on_a_person(&self) -> bool {
        matches!(
            self,
            FilesError::NoStateDir(_)
                | FilesError::Read {
                    source: StoreError::Unsealed { .. },
                    ..
                }
        )
    }
}

/// Where the files live: `<state-dir>/files`, or nowhere (a loop without a state folder, as
/// in the in-process tests, refuses services that mount files).
#[derive(Clone, Debug, Default)]
pub struct HostFiles {
    root: Option<PathBuf>,
}

fn mounts(service: &Service) -> impl Iterator<Item = (FileKind, &FileMount)> {
    let s = service.spec.secrets.iter().map(|m| (FileKind::Secret, m));
    s.chain(service.spec.configs.iter().map(|m| (FileKind::Config, m)))
}

/// The owner a file gets: the mount's `uid`/`gid`, else the service's numeric `user`
/// (`1000` or `1000:1000`), so that a 0400 file is readable by the process that needs it;
/// else root.
fn owner(service: &Service, m: &FileMount) -> (Option<u32>, Option<u32>) {
    let user = service.spec.options.user.as_deref().unwrap_or_default();
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    (
        m.uid.or_else(|| u.parse().ok()),
        m.gid.or_else(|| g.parse().ok()),
    )
}

impl HostFiles {
    pub fn new(state_dir: Option<&Path>) -> Self {
        HostFiles {
            root: state_dir.map(|d| d.join("files")),
        }
    }

    fn stack_dir(&self, stack: &str) -> Option<PathBuf> {
        Some(self.root.as_ref()?.join(stack))
    }

    fn path(&self, service: &Service, kind: FileKind, m: &FileMount) -> Option<PathBuf> {
        let t = Sha256::digest(m.target.as_bytes());
        let t: String = t[..4].iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.stack_dir(&service.stack)?.join(&service.name);
        Some(dir.join(kind.key()).join(format!("{}@{t}", m.source)))
    }

    /// The read-only binds of the files `service` mounts (after [`HostFiles::write`]).
    pub fn binds(&self, service: &Service) -> Vec<Mount> {
        mounts(service)
            .filter_map(|(kind, m)| {
                Some(Mount::Bind {
                    source: self.path(service, kind, m)?.display().to_string(),
                    target: m.target.clone(),
                    read_only: true,
                    options: MountOptions {
                        propagation: None,
                        selinux: None,
                        nocopy: false,
                        subpath: None,
                        create_host_path: true,
                    },
                })
            })
            .collect()
    }

    /// Writes every file `service` mounts that is missing or differs on the host.
    pub async fn write(&self, store: &Store, service: &Service) -> Result<(), FilesError> {
        for (kind, m) in mounts(service) {
            let path = self.path(service, kind, m).ok_or_else(|| {
                FilesError::NoStateDir(format!("{}/{}", service.stack, service.name))
            })?;
            let (uid, gid) = owner(service, m);
            let m = &FileMount {
                uid,
                gid,
                ..m.clone()
            };
            if up_to_date(&path, m) {
                continue;
            }
            let content = store
                .file_content(&service.stack, kind, &m.digest)
                .await
                .map_err(|source| FilesError::Read {
                    kind: kind.word(),
                    name: m.source.clone(),
                    service: format!("{}/{}", service.stack, service.name),
                    source,
                })?;
            write_file(&path, &content, m).map_err(|source| FilesError::Write {
                path: path.clone(),
                source,
            })?;
            tracing::info!(stack = %service.stack, service = %service.name, kind = kind.word(),
                name = %m.source, digest = %m.digest, "file written for the replicas");
        }
        Ok(())
    }

    /// Removes the files of a service its stack no longer names.
    pub fn remove_service(&self, stack: &str, service: &str) {
        if let Some(dir) = self.stack_dir(stack) {
            remove(&dir.join(service));
        }
    }

    /// Removes the files of a deleted stack.
    pub fn remove_stack(&self, stack: &str) {
        if let Some(dir) = self.stack_dir(stack) {
            remove(&dir);
        }
    }
}

fn remove(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %dir.display(), error = %e, "files not removed"),
    }
}

/// Whether `path` holds `m`'s content with its mode and owner.
fn up_to_date(path: &Path, m: &FileMount) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let owner_ok = m.uid.is_none_or(|u| u == meta.uid()) && m.gid.is_none_or(|g| g == meta.gid());
    owner_ok
        && meta.permissions().mode() & 0o7777 == m.mode()
        && std::fs::read(path).is_ok_and(|c| digest(&c) == m.digest)
}

/// Writes `content` to a new file beside `path` (0700 folders, `m`'s mode and owner), then
/// renames it over `path`.
fn write_file(path: &Path, content: &[u8], m: &FileMount) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file path has a folder");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.new",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    if m.uid.is_some() || m.gid.is_some() {
        std::os::unix::fs::chown(&tmp, m.uid, m.gid)?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(m.mode()))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemKv;
    use std::sync::Arc;

    #[tokio::test]
    async fn files_are_written_with_their_mode_rewritten_on_change_and_removed_with_the_stack() {
        let dir = std::env::temp_dir().join(format!("capstan-files-{}", std::process::id()));
        let files = HostFiles::new(Some(&dir));
        let store = Store::new(Arc::new(MemKv::default()), "/capstan");
        let text = |pw: &str| {
            format!("services: {{app: {{image: x, user: \"4321\", secrets: [{{source: pw, mode: 0440}}], configs: [{{source: c, uid: \"0\"}}]}}}}\nsecrets: {{pw: {{content: {pw}}}}}\nconfigs: {{c: {{content: conf}}}}")
        };
        for pw in ["one", "two"] {
            let spec = capstan_api::parse_stack("shop", &text(pw)).unwrap();
            store.apply(&spec, None).await.unwrap();
            let svc = store.service("shop", "app").await.unwrap().unwrap();
            files.write(&store, &svc).await.unwrap();
            let binds = files.binds(&svc);
            let Mount::Bind {
                source,
                target,
                read_only,
                ..
            } = &binds[0]
            else {
                panic!()
            };
            assert_eq!((target.as_str(), *read_only), ("/run/secrets/pw", true));
            assert_eq!(std::fs::read_to_string(source).unwrap(), pw);
            let meta = std::fs::metadata(source).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o440);
            assert_eq!(meta.uid(), 4321, "owned by the service's numeric user");
            let folder = std::fs::metadata(Path::new(source).parent().unwrap()).unwrap();
            assert_eq!(folder.permissions().mode() & 0o777, 0o700);
            let Mount::Bind { source, target, .. } = &binds[1] else {
                panic!()
            };
            assert_eq!(target, "/c");
            let meta = std::fs::metadata(source).unwrap();
            assert_eq!((meta.permissions().mode() & 0o777, meta.uid()), (0o400, 0));
        }
        files.remove_stack("shop");
        assert!(!dir.join("files/shop").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
