//! `capstan serve`: wires the store, the runtime, the triggers, the workers and the HTTP
//! server together, and shuts them all down on one signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::controller::Controller;
use crate::metrics::{MeasuredKv, MeasuredRuntime, Metrics};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::{Runtime, RuntimeError};
use crate::server::{self, ApiState};
use crate::store::etcd::EtcdKv;
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct Config {
    pub etcd_endpoints: Vec<String>,
    pub listen: SocketAddr,
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
    /// What stacks may do to the host (`--policy`).
    pub policy: capstan_api::policy::Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot reach the Docker engine at /var/run/docker.sock: {0}")]
    Docker(#[source] RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Runs the daemon until `shutdown` turns true.
pub async fn serve(config: Config, mut shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    let runtime = DockerRuntime::connect()
        .await
        .map_err(DaemonError::Docker)?;
    tracing::info!(api = %runtime.api_version(), "connected to the Docker engine");
    let metrics = Arc::new(Metrics::default());
    let runtime: Arc<dyn Runtime> = Arc::new(MeasuredRuntime {
        inner: Arc::new(runtime),
        metrics: metrics.clone(),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(listen = %config.listen, "API listening");

    let kv = loop {
        match EtcdKv::connect(&config.etcd_endpoints).await {
            Ok(kv) => break kv,
            Err(e) => {
                tracing::warn!(error = %e, endpoints = ?config.etcd_endpoints, "etcd not reachable yet; retrying");
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
    );
    let controller = Controller::start(
        store.clone(),
        runtime,
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
        },
        shutdown.clone(),
    );
    let app = server::router(ApiState {
        store,
        desired: controller.ctx.desired.clone(),
        blocked: controller.ctx.scratch.blocked.clone(),
        leadership: controller.leadership.clone(),
        health: controller.health.clone(),
        stop: shutdown.clone(),
        metrics,
        policy: Arc::new(config.policy.clone()),
    });
    let mut http_shutdown = shutdown.clone();
    let http = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = http_shutdown.wait_for(|s| *s).await;
    });
    let result = http.await.map_err(DaemonError::Http);
    tracing::info!("shutting down: waiting for workers to finish their current reconcile");
    if !controller.stopped(Duration::from_secs(30)).await {
        tracing::warn!("some tasks did not stop within 30 s");
    }
    result
}
