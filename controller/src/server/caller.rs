//! Who is calling: the peer of a connection (a Unix socket's credentials, a TCP address and
//! the client certificate it presented) and the authenticated caller of one request, with
//! its role. [`super::auth`] decides it; [`super::audit`] names it.

use axum::serve::IncomingStream;
use capstan_api::policy::{InForce, Profile, ProfileError, Profiles, Who};
use capstan_api::token::Role;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// A Unix-socket peer's credentials when it connected: `SO_PEERCRED`'s uid and gid, and
/// its supplementary groups (`SO_PEERGROUPS`), as the kernel would check them on a socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnixCred {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// `SO_PEERGROUPS` (Linux 4.13; the generic value, which x86 and Arm share): the libc crate
/// does not export it.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
))]
const SO_PEERGROUPS: libc::c_int = 59;

impl UnixCred {
    /// The credentials of `stream`'s peer; `None` if the kernel does not say.
    pub fn of(stream: &tokio::net::UnixStream) -> Option<UnixCred> {
        let cred = stream.peer_cred().ok()?;
        Some(UnixCred {
            uid: cred.uid(),
            gid: cred.gid(),
            groups: peer_groups(stream.as_raw_fd()),
        })
    }

    /// Whether this peer can reach the engine anyway: root, or in the group owning the
    /// engine's socket (`engine_gid`) as its primary or a supplementary group.
    pub fn reaches_engine(&self, engine_gid: Option<u32>) -> bool {
        self.uid == 0 || engine_gid.is_some_and(|g| self.gid == g || self.groups.contains(&g))
    }
}

/// The supplementary groups of the peer of the Unix socket `fd` (empty if the kernel does
/// not say).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
))]
fn peer_groups(fd: std::os::fd::RawFd) -> Vec<u32> {
    let mut groups = vec![0 as libc::gid_t; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` holds `len` bytes; the kernel writes at most that many, and sets
        // `len` to what it wrote (or to what it needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n <= groups.len()
        {
            break;
        }
        groups.resize(n, 0);
    }
    vec![]
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
)))]
fn peer_groups(_: std::os::fd::RawFd) -> Vec<u32> {
    vec![]
}

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
    /// A Unix-socket peer, by its credentials (`None` if the kernel did not say).
    Unix(Option<UnixCred>),
    /// A TCP peer, with the client certificate it presented (TLS with `--tls-client-ca`).
    Tcp {
        addr: SocketAddr,
        cert: Option<ClientCert>,
    },
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Peer::Unix(UnixCred::of(stream.io()))
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
    Unix(Option<UnixCred>),
    /// A token, with the profile it was created with (`token create --policy`), if any.
    Token {
        name: String,
        role: Role,
        profile: Option<String>,
    },
    Certificate {
        name: String,
        role: Role,
    },
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::Unix(_) => Role::Admin,
            Caller::Token { role, .. } | Caller::Certificate { role, .. } => *role,
        }
    }

    /// The caller as the policy profiles tell callers apart; `engine_gid` is the group
    /// owning the engine's socket, read at start.
    pub fn who(&self, engine_gid: Option<u32>) -> Who<'_> {
        match self {
            Caller::Unix(Some(cred)) if cred.reaches_engine(engine_gid) => Who::EngineSocket,
            Caller::Unix(_) => Who::OtherSocket,
            Caller::Token { role, profile, .. } => Who::Token {
                role: *role,
                profile: profile.as_deref(),
            },
            Caller::Certificate { role, .. } => Who::Certificate { role: *role },
        }
    }

    /// The profile in force for this caller, and how its refusals name it.
    pub fn profile<'p>(
        &self,
        profiles: &'p Profiles,
        engine_gid: Option<u32>,
    ) -> Result<(Profile<'p>, InForce), ProfileError> {
        let who = self.who(engine_gid);
        let profile = profiles.profile_for(&who)?;
        let in_force = InForce::new(&profile, &who, self.describe());
        Ok((profile, in_force))
    }

    /// The caller as a refusal names it: `socket uid 1000 gid 1000`, `token "ci"`,
    /// `certificate "ci"`.
    pub fn describe(&self) -> String {
        match self {
            Caller::Unix(Some(c)) => format!("socket uid {} gid {}", c.uid, c.gid),
            Caller::Unix(None) => "socket (credentials unknown)".into(),
            Caller::Token { name, .. } => format!("token {name:?}"),
            Caller::Certificate { name, .. } => format!("certificate {name:?}"),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Unix(Some(c)) => write!(f, "uid={} gid={}", c.uid, c.gid),
            Caller::Unix(None) => write!(f, "unix:unknown"),
            Caller::Token { name, .. } => write!(f, "token={name}"),
            Caller::Certificate { name, .. } => write!(f, "cert={name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_GID: u32 = 998;

    fn socket(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::Unix(Some(UnixCred {
            uid,
            gid,
            groups: groups.to_vec(),
        }))
    }

    fn profile(caller: &Caller) -> String {
        let profiles = Profiles::default();
        let who = caller.who(Some(DOCKER_GID));
        profiles.profile_for(&who).unwrap().name.to_string()
    }

    #[test]
    fn each_caller_gets_its_default_profile() {
        let token = |profile: Option<&str>| Caller::Token {
            name: "ci".into(),
            role: Role::Deploy,
            profile: profile.map(str::to_string),
        };
        let cert = Caller::Certificate {
            name: "ci".into(),
            role: Role::Admin,
        };
        let matrix = [
            ("socket root", socket(0, 0, &[]), "privileged"),
            (
                "socket, primary group docker",
                socket(1000, DOCKER_GID, &[]),
                "privileged",
            ),
            (
                "socket, in the docker group",
                socket(1000, 1000, &[4, DOCKER_GID]),
                "privileged",
            ),
            (
                "another socket user",
                socket(1000, 1000, &[4, 27]),
                "baseline",
            ),
            (
                "socket, credentials unknown",
                Caller::Unix(None),
                "baseline",
            ),
            ("token with role deploy", token(None), "baseline"),
            (
                "token created with --policy restricted",
                token(Some("restricted")),
                "restricted",
            ),
            ("client certificate", cert, "baseline"),
        ];
        for (what, caller, want) in matrix {
            assert_eq!(profile(&caller), want, "{what}");
        }
    }

    #[test]
    fn without_an_engine_socket_only_root_reaches_the_engine() {
        assert!(socket(0, 0, &[]).who(None) == Who::EngineSocket);
        assert!(socket(1000, DOCKER_GID, &[DOCKER_GID]).who(None) == Who::OtherSocket);
    }

    #[test]
    fn a_refusal_names_the_profile_and_the_caller() {
        let profiles = Profiles::default();
        let caller = socket(1000, 1000, &[]);
        let (profile, in_force) = caller.profile(&profiles, Some(DOCKER_GID)).unwrap();
        let spec =
            capstan_api::parse_stack("s", "services: {web: {image: x, privileged: true}}").unwrap();
        let errors = in_force.attribute(profile.policy.check(&spec));
        assert!(
            errors[0].reason.starts_with(
                "policy rule privileged (profile baseline, caller socket uid 1000 gid 1000): "
            ),
            "{}",
            errors[0].reason
        );
        assert!(
            errors[0].reason.contains("`socket_others:`"),
            "{}",
            errors[0].reason
        );
    }

    #[tokio::test]
    async fn a_socket_peer_is_known_by_its_uid_and_groups() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let cred = UnixCred::of(&a).unwrap();
        // SAFETY: getuid/getgid only read this process's credentials.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((cred.uid, cred.gid), (uid, gid));
        let mut own = vec![0 as libc::gid_t; 256];
        // SAFETY: `own` holds 256 entries, the size given.
        let n = unsafe { libc::getgroups(256, own.as_mut_ptr()) };
        own.truncate(n.max(0) as usize);
        let mut got = cred.groups.clone();
        got.sort();
        own.sort();
        assert_eq!(got, own, "SO_PEERGROUPS says this process's groups");
    }
}
