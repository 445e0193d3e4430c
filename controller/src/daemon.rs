//! `capstan serve`: wires the store, the runtime, the triggers, the workers and the HTTP
//! server together, and shuts them all down on one signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::controller::Controller;
use crate::listen::{self, Limits, ListenError, Listener, Timeouts};
use crate::metrics::{MeasuredKv, MeasuredRuntime, Metrics};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::{Runtime, RuntimeError};
use crate::server::guard::AllowedHosts;
use crate::server::{self, state::ApiState};
use crate::store::etcd::{EtcdAccess, EtcdKv};
use crate::store::{KvError, Store};

#[derive(Clone, Debug)]
pub struct Config {
    /// etcd's endpoints and the credentials to reach it (`--etcd`, `--etcd-cacert`, ...).
    pub etcd: EtcdAccess,
    /// The API's Unix socket (`--socket`); its caller is an admin, whose policy profile
    /// depends on whether it can reach the engine anyway (`policy`).
    pub socket: PathBuf,
    /// The socket's group (`--socket-group`): a name or a gid.
    pub socket_group: String,
    /// A TCP API listener (`--listen`), bearer tokens required.
    pub listen: Option<SocketAddr>,
    /// Certificate chain and key, PEM (`--tls-cert`, `--tls-key`): the TCP listener speaks TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--tls-client-ca`: PEM CA certificates; a client certificate they sign identifies
    /// its caller on the TLS listener (CN: the name, O: the role), as a token would.
    pub tls_client_ca: Option<PathBuf>,
    /// `/metrics`, `/healthz`, `/readyz` without authentication (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// When every listener closes a quiet connection (hidden `--header-read-timeout` and
    /// `--idle-timeout`, so tests need not wait the defaults out).
    pub timeouts: Timeouts,
    /// Key prefix, so installations can share an etcd.
    pub prefix: String,
    /// How often everything is reconciled without a trigger (the safety net).
    pub resync: Duration,
    /// Keys reconciled at once.
    pub workers: usize,
    /// Replica operations in flight on the engine across all reconciles.
    pub engine_parallelism: usize,
    /// Also write Traefik's etcd KV layout under this root (`--traefik-etcd-root`).
    pub traefik_root: Option<String>,
    /// This daemon's identity in the leader election (`--id`).
    pub identity: String,
    /// The leader lease's TTL (`--lease-ttl`).
    pub lease_ttl: Duration,
    /// What stacks may do to the host, per caller (`--policy`): the profiles.
    pub policy: capstan_api::policy::Profiles,
    /// Earlier revisions each service keeps (`--revision-history-limit`).
    pub revision_history_limit: usize,
    /// The largest build context accepted (`--max-build-context`), in bytes.
    pub max_build_context: u64,
    /// Credentials for pulls: the operator's Docker config and `--registry-auth`.
    pub registry_auth: crate::runtime::registry::RegistryAuth,
    /// Where the daemon writes secrets and configs for the replicas (`--state-dir`).
    pub state_dir: PathBuf,
    /// The keys that seal secret values in etcd (`--encryption-key-file`).
    pub encryption_key_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// etcd answered but refused us (wrong user or password, no permission): retrying
    /// cannot help.
    #[error("etcd refused capstan's credentials: {0}")]
    EtcdRefused(String),
    #[error("cannot reach the Docker engine at /var/run/docker.sock: {0}")]
    Docker(#[source] RuntimeError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot reach the Docker engine for builds: {0}")]
    Builds(#[source] bollard::errors::Error),
    #[error(transparent)]
    Key(#[from] crate::seal::KeyFileError),
    #[error("state folder {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The Docker engine, metered; the one-offs a killed daemon left behind are swept meanwhile.
async fn engine(config: &Config, metrics: &Arc<Metrics>) -> Result<Arc<dyn Runtime>, DaemonError> {
    let runtime = DockerRuntime::connect()
        .await
        .map_err(DaemonError::Docker)?
        .with_registry_auth(config.registry_auth.clone());
    // Hosts only: a credential is never logged.
    tracing::info!(api = %runtime.api_version(), registries_with_credentials = ?config.registry_auth.hosts(), "connected to the Docker engine");
    let runtime: Arc<dyn Runtime> = Arc::new(MeasuredRuntime {
        inner: Arc::new(runtime),
        metrics: metrics.clone(),
    });
    tokio::spawn({
        let runtime = runtime.clone();
        async move { crate::server::run::sweep(&*runtime).await }
    });
    Ok(runtime)
}

/// Runs the daemon until `shutdown` turns true.
pub async fn serve(config: Config, mut shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    match listen::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let acceptor = config.checked_tls()?;
    let sealer = config.sealer()?;
    let gid = listen::group_id(&config.socket_group)?;
    let metrics = Arc::new(Metrics::default());
    warn_if_unauthenticated(&config.etcd, &metrics);
    let runtime = engine(&config, &metrics).await?;

    let listeners = Listeners::bind(&config, gid, acceptor).await?;

    let kv = loop {
        match EtcdKv::connect(&config.etcd).await {
            Ok(kv) => break kv,
            Err(KvError::Rejected(why)) => return Err(DaemonError::EtcdRefused(why)),
            Err(e) => {
                tracing::warn!(error = %e, endpoints = ?config.etcd.endpoints, "etcd not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    };
    let store = Store::new(
        Arc::new(MeasuredKv {
            inner: Arc::new(kv),
            metrics: metrics.clone(),
        }),
        &config.prefix,
    )
    .with_history_limit(config.revision_history_limit)
    .with_sealer(sealer);
    let controller = Controller::start(
        store.clone(),
        runtime.clone(),
        metrics.clone(),
        crate::controller::Options {
            resync: config.resync,
            workers: config.workers,
            engine_parallelism: config.engine_parallelism,
            traefik_root: config.traefik_root.clone(),
            election: crate::leader::Election {
                identity: config.identity.clone(),
                ttl: config.lease_ttl,
            },
            state_dir: Some(config.state_dir.clone()),
            policy: Some(Arc::new(config.policy.clone())),
            backend: None,
        },
        shutdown.clone(),
    );
    let state = ApiState {
        store,
        desired: controller.ctx.desired.clone(),
        blocked: controller.ctx.memory.blocked.clone(),
        leadership: controller.leadership.clone(),
        health: controller.health.clone(),
        stop: shutdown.clone(),
        metrics,
        tokens: Arc::default(),
        policies: Arc::new(config.policy.clone()),
        engine_gid: engine_socket_gid(),
        builds: crate::server::state::Builds::local(config.max_build_context)
            .map_err(DaemonError::Builds)?,
        files: controller.engine.files.clone(),
        runtime,
    };
    listeners.serve(state, &shutdown).await;
    tracing::info!("shutting down: waiting for workers to finish their current reconcile");
    if !controller.stopped(Duration::from_secs(30)).await {
        tracing::warn!("some tasks did not stop within 30 s");
    }
    Ok(())
}

/// The group owning the engine's socket (`/var/run/docker.sock`, or a `unix://`
/// `DOCKER_HOST`): its members can run anything through the engine already. `None` (only
/// root reaches the engine) when there is no such socket.
fn engine_socket_gid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let host = std::env::var("DOCKER_HOST").ok();
    let socket = (host.as_deref())
        .and_then(|h| h.strip_prefix("unix://"))
        .unwrap_or("/var/run/docker.sock");
    let gid = std::fs::metadata(socket).ok().map(|m| m.gid());
    tracing::info!(socket, gid = ?gid, "socket callers in this group, or root, get the `socket:` policy profile");
    gid
}

/// Says once, at start, when etcd would take anyone capstan's way (over TCP, with neither
/// a client certificate nor a user): then any local user, and any container on the host
/// network, can write the desired state. `capstan_etcd_unauthenticated` says it for as long
/// as the daemon runs.
fn warn_if_unauthenticated(etcd: &EtcdAccess, metrics: &Metrics) {
    let unauthenticated = etcd.unauthenticated();
    metrics.set_etcd_unauthenticated(unauthenticated);
    if unauthenticated {
        tracing::warn!(
            endpoints = ?etcd.endpoints,
            "etcd is reached over TCP without a client certificate or user, so any local user or \
             container on the host network can read and write capstan's desired state (root \
             containers, admin tokens, the policy): start etcd with --client-cert-auth and \
             --trusted-ca-file, and give capstan serve --etcd https://... --etcd-cacert CA \
             --etcd-cert CERT --etcd-key KEY (or --etcd-user with --etcd-password-file); \
             `make up` does this"
        );
    }
}

/// Creates `dir` (and its parents) 0700 and makes it 0700 if it was not: secret files
/// live under it.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

impl Config {
    /// The encryption keys (the file created if absent, refused if others may read it) and
    /// the state folder for secrets and configs, made private.
    fn sealer(&self) -> Result<Arc<crate::seal::Sealer>, DaemonError> {
        let sealer = crate::seal::Sealer::load_or_create(&self.encryption_key_file)?;
        tracing::info!(key_id = %sealer.key_id(), file = %self.encryption_key_file.display(),
            "secret values are sealed at rest");
        private_dir(&self.state_dir.join("files")).map_err(|source| DaemonError::StateDir {
            path: self.state_dir.clone(),
            source,
        })?;
        Ok(Arc::new(sealer))
    }

    /// Refuses a TCP listener off loopback without TLS, and loads the TLS files, before
    /// anything starts.
    fn checked_tls(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, ListenError> {
        if let Some(addr) = self.listen {
            listen::check_tcp(addr, self.tls.is_some())?;
        }
        match &self.tls {
            Some((cert, key)) => Ok(Some(listen::tls_acceptor(
                cert,
                key,
                self.tls_client_ca.as_deref(),
            )?)),
            None => Ok(None),
        }
    }
}

/// Every listener, bound before the daemon starts working.
struct Listeners {
    socket: Listener,
    /// `--listen`, plain or TLS.
    tcp: Option<Listener>,
    metrics: Option<Listener>,
    /// The quiet-connection timeouts all three share.
    timeouts: Timeouts,
}

impl Listeners {
    async fn bind(
        config: &Config,
        gid: u32,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Listeners, ListenError> {
        let socket = Listener::Unix(listen::unix(&config.socket, gid).await?);
        tracing::info!(socket = %config.socket.display(), group = %config.socket_group, "API listening on the Unix socket");
        let tcp = match (config.listen, acceptor) {
            (None, _) => None,
            (Some(addr), None) => Some(Listener::Tcp(listen::tcp(addr).await?)),
            (Some(addr), Some(acceptor)) => Some(Listener::Tls(listen::tcp(addr).await?, acceptor)),
        };
        if let Some(addr) = config.listen {
            let tls = matches!(tcp, Some(Listener::Tls(..)));
            tracing::info!(listen = %addr, tls, "API listening on TCP (bearer tokens required)");
        }
        let metrics = match config.metrics_listen {
            Some(addr) => Some(Listener::Tcp(listen::tcp(addr).await?)),
            None => None,
        };
        if let Some(addr) = config.metrics_listen {
            tracing::info!(listen = %addr, "metrics and probes listening (no authentication)");
        }
        Ok(Listeners {
            socket,
            tcp,
            metrics,
            timeouts: config.timeouts,
        })
    }

    /// Serves every listener until `shutdown` turns true. Each has a connection budget of
    /// its own, so a flood on one leaves the others answering; together they stay well
    /// below the file limit, leaving the engine's and etcd's descriptors to the control
    /// loop (see `listen::serve`).
    async fn serve(self, state: ApiState, shutdown: &watch::Receiver<bool>) {
        let limits = |connections| Limits {
            timeouts: self.timeouts,
            connections,
        };
        let api = |hosts| server::router(state.clone(), hosts);
        let mut all = vec![tokio::spawn(listen::serve(
            self.socket,
            api(AllowedHosts::any()),
            limits(listen::SOCKET_CONNECTIONS),
            "socket",
            shutdown.clone(),
        ))];
        if let Some(l) = self.tcp {
            all.push(tokio::spawn(listen::serve(
                l,
                api(AllowedHosts::local()),
                limits(listen::TCP_CONNECTIONS),
                "tcp",
                shutdown.clone(),
            )));
        }
        if let Some(l) = self.metrics {
            all.push(tokio::spawn(listen::serve(
                l,
                server::probes(state.clone()),
                limits(listen::METRICS_CONNECTIONS),
                "metrics",
                shutdown.clone(),
            )));
        }
        for task in all {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a listener's task failed");
            }
        }
    }
}
