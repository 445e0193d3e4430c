//! Who is calling: the peer of a connection (a Unix socket's credentials, a TCP address and
//! the client certificate it presented) and the authenticated caller of one request, with
//! its role. [`super::auth`] decides it; [`super::audit`] names it.

use axum::serve::IncomingStream;
use capstan_api::token::Role;
use std::net::SocketAddr;

/// Who a verified client certificate says its holder is, as Kubernetes reads a user and
/// groups from one: the subject's CN names the caller, and its O (organisation) entries
/// the role (the highest of `admin`, `deploy`, `read` among them). `None`s when the subject
/// does not say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    pub name: Option<String>,
    pub role: Option<Role>,
}

impl ClientCert {
    pub fn of(der: &[u8]) -> ClientCert {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return ClientCert {
                name: None,
                role: None,
            };
        };
        let subject = cert.subject();
        let name = (subject.iter_common_name())
            .find_map(|a| a.as_str().ok())
            .map(str::to_string);
        let role = (subject.iter_organization())
            .filter_map(|a| a.as_str().ok())
            .filter_map(Role::parse)
            .max();
        ClientCert { name, role }
    }
}

/// Who is on the other end of a connection (axum's connect info).
#[derive(Clone, Debug)]
pub enum Peer {
    /// A Unix-socket peer, by `SO_PEERCRED` (`None` if the kernel did not say).
    Unix(Option<(u32, u32)>),
    /// A TCP peer, with the client certificate it presented (TLS with `--tls-client-ca`).
    Tcp {
        addr: SocketAddr,
        cert: Option<ClientCert>,
    },
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Peer::Unix(cred.map(|c| (c.uid(), c.gid())))
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer::Tcp {
            addr: *stream.remote_addr(),
            cert: None,
        }
    }
}

/// The authenticated caller of one request, as the audit log names it.
#[derive(Clone, Debug)]
pub enum Caller {
    Unix(Option<(u32, u32)>),
    Token { name: String, role: Role },
    Certificate { name: String, role: Role },
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::Unix(_) => Role::Admin,
            Caller::Token { role, .. } | Caller::Certificate { role, .. } => *role,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Unix(Some((uid, gid))) => write!(f, "uid={uid} gid={gid}"),
            Caller::Unix(None) => write!(f, "unix:unknown"),
            Caller::Token { name, .. } => write!(f, "token={name}"),
            Caller::Certificate { name, .. } => write!(f, "cert={name}"),
        }
    }
}
