//! The control loop, wired: the watcher feeding the reflector, the triggers (engine events,
//! periodic resync), and the reconcile workers, around one shared [`Context`]. `capstan
//! serve`, the scale benchmark and the in-process tests all start the loop through here.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::health::Health;
use crate::leader::{Election, Elector, Leadership};
use crate::metrics::Metrics;
use crate::reconcile::backend::Backend;
use crate::reconcile::containers::ContainerBackend;
use crate::reconcile::{self, Context};
use crate::runtime::fence::FencedRuntime;
use crate::runtime::reflector::Containers;
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::traffic::Traffic;
use crate::triggers::{self, Triggers};
use crate::watch::watcher::Watcher;
use crate::watch::Writer;

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often everything is reconciled without a trigger (the safety net).
    pub resync: Duration,
    /// Keys reconciled at once.
    pub workers: usize,
    /// Replica operations in flight on the engine across all reconciles.
    pub engine_parallelism: usize,
    /// Also write Traefik's etcd KV layout under this root (`--traefik-etcd-root`).
    pub traefik_root: Option<String>,
    /// Who this daemon is in the leader election, and the lease's TTL.
    pub election: Election,
    /// Where secrets and configs are written for the replicas (`serve --state-dir`).
    pub state_dir: Option<std::path::PathBuf>,
    /// The policy profiles (`--policy`): a container is made only if its host paths, as
    /// the host resolves them then, pass the bind rule of the profile that admitted its stack.
    pub policy: Option<Arc<capstan_api::policy::Profiles>>,
    /// Another backend than the engine's containers, made over them (tests plug one in).
    pub backend: Option<BackendFactory>,
}

/// Makes the backend the loop drives, given the engine's (fenced) container backend.
#[derive(Clone)]
pub struct BackendFactory(pub Arc<dyn Fn(Arc<ContainerBackend>) -> Arc<dyn Backend> + Send + Sync>);

impl std::fmt::Debug for BackendFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendFactory")
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resync: Duration::from_secs(30),
            workers: 8,
            engine_parallelism: 64,
            traefik_root: None,
            election: Election::default(),
            state_dir: None,
            policy: None,
            backend: None,
        }
    }
}

/// A running control loop.
pub struct Controller {
    pub ctx: Arc<Context>,
    /// The engine's backend the context drives (its containers' reflector, host files).
    pub engine: Arc<ContainerBackend>,
    /// What the triggers feed, to resync by hand (benchmarks, tests).
    pub triggers: Triggers,
    /// This daemon's role in the election.
    pub leadership: Leadership,
    /// Whether etcd and the engine answer now.
    pub health: Arc<Health>,
    tasks: JoinSet<()>,
}

impl Controller {
    /// Starts every task of the loop; they stop when `shutdown` turns true. The watcher
    /// runs always (a follower keeps its cache warm); the engine's events, the resync and
    /// the workers only while this daemon leads, and every etcd write and engine call the
    /// loop makes is fenced by the lease.
    pub fn start(
        store: Store,
        runtime: Arc<dyn Runtime>,
        metrics: Arc<Metrics>,
        options: Options,
        shutdown: watch::Receiver<bool>,
    ) -> Controller {
        metrics.known_error_kinds(&reconcile::error::ErrorKind::ALL.map(|k| k.as_str()));
        let (elector, leadership) =
            Elector::new(store.clone(), options.election.clone(), metrics.clone());
        let watched = store.clone();
        let health = Arc::new(Health::default());
        let probe = health.clone().run(
            store.clone(),
            runtime.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let writer = Writer::default();
        let (ctx, engine) = fenced_context(
            store,
            runtime,
            metrics,
            &options,
            (&leadership, &health),
            &writer,
        );
        let scheduler = ctx.scheduler.clone();
        let runtime = engine.runtime.clone();
        let triggers = Triggers {
            desired: ctx.desired.clone(),
            containers: engine.containers.clone(),
            scheduler: scheduler.clone(),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(elector.run(shutdown.clone()));
        tasks.spawn(probe);
        // The event stream first: an event before its first poll would be missed.
        let (t, rt) = (triggers.clone(), runtime.clone());
        tasks.spawn(while_acting(
            leadership.clone(),
            shutdown.clone(),
            move |stop| triggers::docker_events(rt.clone(), t.clone(), stop),
        ));
        tasks.spawn(Watcher::new(watched, writer, scheduler).run(shutdown.clone()));
        let (t, period) = (triggers.clone(), options.resync);
        tasks.spawn(while_acting(
            leadership.clone(),
            shutdown.clone(),
            move |stop| triggers::periodic_resync(t.clone(), period, stop),
        ));
        tasks.spawn(close_proxies_when_not_acting(
            ctx.clone(),
            leadership.clone(),
            shutdown.clone(),
        ));
        for _ in 0..options.workers.max(1) {
            tasks.spawn(reconcile::worker(ctx.clone(), shutdown.clone()));
        }
        Controller {
            ctx,
            engine,
            triggers,
            leadership,
            health,
            tasks,
        }
    }

    /// After `shutdown` turned true: closes the proxy's listeners and waits for the workers
    /// to finish their current reconcile, at most `timeout`. False if some did not.
    pub async fn stopped(mut self, timeout: Duration) -> bool {
        self.ctx.traffic.close();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        tokio::time::timeout(timeout, drain).await.is_ok()
    }
}

/// The reconcilers' shared context, whose etcd writes and engine calls are fenced by
/// `leadership`.
fn fenced_context(
    store: Store,
    runtime: Arc<dyn Runtime>,
    metrics: Arc<Metrics>,
    options: &Options,
    (leadership, health): (&Leadership, &Arc<Health>),
    writer: &Writer,
) -> (Arc<Context>, Arc<ContainerBackend>) {
    let store = store.fenced(Arc::new(leadership.clone()));
    let runtime: Arc<dyn Runtime> = Arc::new(FencedRuntime {
        inner: runtime,
        gate: Arc::new(leadership.clone()),
    });
    let desired = writer.reader();
    let engine = Arc::new(ContainerBackend {
        containers: Arc::new(Containers::new(runtime.clone())),
        runtime,
        engine_slots: tokio::sync::Semaphore::new(options.engine_parallelism.max(1)),
        pulls: Default::default(),
        files: crate::files::HostFiles::new(options.state_dir.as_deref()),
        policy: options.policy.clone(),
    });
    let ctx = Arc::new(Context {
        store: store.clone(),
        desired: desired.clone(),
        backend: match &options.backend {
            Some(make) => (make.0)(engine.clone()),
            None => engine.clone(),
        },
        scheduler: Arc::new(Scheduler::default()),
        failures: Default::default(),
        memory: Default::default(),
        clock: Default::default(),
        traffic: Traffic::new(
            store,
            desired,
            options.traefik_root.clone(),
            metrics.clone(),
        ),
        metrics,
        leadership: leadership.clone(),
        health: health.clone(),
    });
    (ctx, engine)
}

/// Runs `task` whenever this daemon may act, and stops it (drops it) as soon as it may not,
/// or on shutdown: a follower neither follows the engine's events nor lists its containers.
async fn while_acting<F, Fut>(
    mut leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
    task: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = leadership.acting() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let mut lost = leadership.clone();
        tokio::select! {
            _ = task(shutdown.clone()) => {}
            _ = lost.stopped_acting() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// A daemon that stops leading closes its proxy's listeners, so the new leader on the same
/// host can bind the ports. An isolated leader (etcd away) keeps serving.
async fn close_proxies_when_not_acting(
    ctx: Arc<Context>,
    mut leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = leadership.acting() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = leadership.stopped_acting() => {
                tracing::info!("no longer leading: closing the proxy's listeners");
                ctx.traffic.close();
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
