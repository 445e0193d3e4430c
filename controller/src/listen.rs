//! The API's listeners: the Unix socket (the default; its mode and group are the access
//! check), TCP only when asked, with TLS required off loopback, and the TLS acceptor;
//! [`serve`] serves one of them within its [`Limits`].

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

mod quiet;
mod serve;
pub use serve::{
    raise_fd_limit, serve, Limits, Listener, Timeouts, METRICS_CONNECTIONS, SOCKET_CONNECTIONS,
    TCP_CONNECTIONS,
};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("refusing to listen on {0} without TLS: a non-loopback listener needs --tls-cert and --tls-key (tokens would cross the network in clear)")]
    NeedsTls(SocketAddr),
    #[error("--tls-cert and --tls-key go together")]
    HalfTls,
    #[error("socket group {0:?} is not in /etc/group (give a name or a numeric gid)")]
    NoSuchGroup(String),
    #[error("another capstan already serves {0}")]
    SocketInUse(PathBuf),
    #[error("cannot set up the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load TLS {what} from {path}: {reason}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// A TCP API listener is refused off loopback without TLS; checked before anything starts.
pub fn check_tcp(addr: SocketAddr, tls: bool) -> Result<(), ListenError> {
    if addr.ip().is_loopback() || tls {
        return Ok(());
    }
    Err(ListenError::NeedsTls(addr))
}

/// A group name (from /etc/group) or a numeric gid.
pub fn group_id(group: &str) -> Result<u32, ListenError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let table = std::fs::read_to_string("/etc/group").unwrap_or_default();
    table
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == group)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| ListenError::NoSuchGroup(group.into()))
}

/// Binds the API's Unix socket: its folder, if created here, is 0750 and the socket 0660,
/// both of group `gid`. A stale socket file is replaced; a live one is an error.
pub async fn unix(path: &Path, gid: u32) -> Result<UnixListener, ListenError> {
    let err = |source| ListenError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(err)?;
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(err)?;
        }
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::SocketInUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(err)?;
    Ok(listener)
}

pub async fn tcp(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Tcp { addr, source })
}

/// The rustls server configuration from PEM files (certificate chain, private key), and the
/// CA whose client certificates it verifies (`client_ca`; a client may also present none
/// and send a token instead).
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, ListenError> {
    let bad = |what, path: &Path, reason: String| ListenError::TlsFile {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| bad("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("certificate", cert, "no certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("certificate and key", cert, e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let bad_ca = |reason: String| bad("client CA", ca, reason);
            let mut roots = rustls::RootCertStore::empty();
            let found = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad_ca(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(found);
            if added == 0 {
                return Err(bad_ca("no CA certificate in it".into()));
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| bad_ca(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| bad("certificate and key", cert, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_go_without_tls() {
        assert!(check_tcp("127.0.0.1:7878".parse().unwrap(), false).is_ok());
        assert!(check_tcp("[::1]:7878".parse().unwrap(), false).is_ok());
        let open: SocketAddr = "0.0.0.0:7878".parse().unwrap();
        assert!(matches!(
            check_tcp(open, false),
            Err(ListenError::NeedsTls(_))
        ));
        assert!(check_tcp(open, true).is_ok());
    }

    #[test]
    fn a_group_is_a_name_or_a_number() {
        assert_eq!(group_id("root").unwrap(), 0);
        assert_eq!(group_id("4242").unwrap(), 4242);
        assert!(group_id("no-such-group-here").is_err());
    }

    #[tokio::test]
    async fn the_socket_and_its_new_folder_are_not_open_to_others() {
        let base = std::env::temp_dir().join(format!("capstan-listen-{}", std::process::id()));
        let path = base.join("run/capstan.sock");
        let _l = unix(&path, 0).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        assert_eq!(mode(&path), 0o660);
        assert!(matches!(
            unix(&path, 0).await,
            Err(ListenError::SocketInUse(_))
        ));
        std::fs::remove_dir_all(base).unwrap();
    }
}
