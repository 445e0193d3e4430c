//! What every handler of the API shares: [`ApiState`], the engine builds go to, and the
//! API's limits. Of the API it imports only the token cache ([`super::tokens`]): every
//! route file stands above it.

use bollard::Docker;
use std::sync::Arc;
use std::time::Duration;

use crate::reconcile::memory::BlockedDeletions;
use crate::store::Store;
use crate::watch::Desired;

/// The largest Compose file the API accepts.
pub const MAX_BODY: usize = 1024 * 1024;

/// How long a read waits for etcd before it answers from the daemon's copy (or 503): the
/// answer comes within a second whatever etcd does.
pub const READ_TIMEOUT: Duration = Duration::from_millis(800);

/// The header on an answer served from the daemon's copy.
pub const STALE_HEADER: &str = "capstan-stale";

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// For `/readyz` (synced with etcd), and the endpoints and Traefik views.
    pub desired: Desired,
    /// Why a deleting stack's teardown cannot finish yet.
    pub blocked: Arc<BlockedDeletions>,
    /// For `/v1/leader`: this daemon's identity and role.
    pub leadership: crate::leader::Leadership,
    /// For `/readyz`, and to refuse writes at once while etcd does not answer.
    pub health: Arc<crate::health::Health>,
    /// Ends long-lived streams on shutdown.
    pub stop: tokio::sync::watch::Receiver<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The API tokens, cached ([`super::tokens`]).
    pub tokens: Arc<super::tokens::Tokens>,
    /// What stacks may do to the host, per caller: the policy profiles, checked at apply,
    /// dry-run, scale, build and run.
    pub policies: Arc<capstan_api::policy::Profiles>,
    /// The group owning the engine's socket, read at start: its members on capstan's socket
    /// can reach the engine anyway, so they get the `socket:` profile, as root does.
    pub engine_gid: Option<u32>,
    /// The engine `build:` contexts are built on, and their size limit ([`super::build`]).
    pub builds: Builds,
    /// The engine, unfenced: any daemon reads logs ([`super::logs`]) and runs one-off
    /// containers ([`super::run`]).
    pub runtime: Arc<dyn crate::runtime::Runtime>,
    /// Where the services' secrets and configs are on the host, for one-off containers.
    pub files: crate::files::HostFiles,
}

/// The default `--max-build-context`: 256 MiB.
pub const DEFAULT_MAX_CONTEXT: u64 = 256 << 20;

/// How long one build (one engine request) may take.
const BUILD_TIMEOUT_SECS: u64 = 3600;

/// The engine the builds go to, and how large a context is accepted.
#[derive(Clone)]
pub struct Builds {
    docker: Option<Docker>,
    pub max_context: u64,
}

impl Default for Builds {
    /// No engine: every build and image query is a 503 (the in-process tests).
    fn default() -> Self {
        Builds {
            docker: None,
            max_context: DEFAULT_MAX_CONTEXT,
        }
    }
}

impl Builds {
    /// Builds on the local engine (`/var/run/docker.sock`, or a `unix://` `DOCKER_HOST`),
    /// with an hour per request instead of bollard's 2 minutes: a build is one request.
    pub fn local(max_context: u64) -> Result<Builds, bollard::errors::Error> {
        let host = std::env::var("DOCKER_HOST").ok();
        let socket = (host.as_deref())
            .filter(|h| h.starts_with("unix://"))
            .unwrap_or("unix:///var/run/docker.sock");
        let docker =
            Docker::connect_with_unix(socket, BUILD_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)?;
        Ok(Builds {
            docker: Some(docker),
            max_context,
        })
    }

    pub(super) fn engine(&self) -> Option<&Docker> {
        self.docker.as_ref()
    }
}

#[cfg(test)]
impl ApiState {
    /// The API over an in-memory kv and engine, with no engine to build on (the tests).
    pub(crate) fn in_memory() -> (ApiState, Arc<crate::store::memory::MemKv>) {
        let kv = Arc::new(crate::store::memory::MemKv::default());
        let st = ApiState {
            store: Store::new(kv.clone(), "/capstan"),
            desired: crate::watch::Writer::default().reader(),
            blocked: Arc::default(),
            leadership: crate::leader::Leadership::always(),
            health: Arc::new(crate::health::Health::answering()),
            stop: tokio::sync::watch::channel(false).1,
            metrics: Arc::default(),
            tokens: Arc::default(),
            policies: Arc::default(),
            engine_gid: None,
            builds: Builds::default(),
            runtime: Arc::new(crate::runtime::fake::FakeRuntime::default()),
            files: Default::default(),
        };
        (st, kv)
    }
}
