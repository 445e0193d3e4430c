//! Prometheus metrics, named by Prometheus conventions (`capstan_` prefix, base units,
//! `_total` counters, `_seconds` histograms), with stack and service as labels where they
//! apply. The engine and etcd are measured by decorators around [`Runtime`] and [`Kv`], so
//! no call site has to remember to.

use async_trait::async_trait;
use capstan_api::object::{Service, ServiceStatus};
use futures::stream::BoxStream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::runtime::{
    ContainerEvent, ContainerPlan, Detail, Health, Observed, ResourcePlan, Runtime, RuntimeError,
};
use crate::store::kv::{Compare, KeyValue, Kv, KvError, Listing, Op, WatchEvent};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub stack: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub stack: String,
    pub service: String,
    /// `missing`, `surplus`, `unhealthy`, `outdated`, `changed_outside`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealLabels {
    pub stack: String,
    pub service: String,
    /// `unhealthy`, `exited`, `oom`, `removed`, `dependency-restarted`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `service` or `stack`.
    pub kind: String,
    /// `success`, `requeue` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The kinds of drift, in the order the dashboard shows them.
pub const DRIFT_KINDS: [&str; 5] = [
    "missing",
    "surplus",
    "unhealthy",
    "outdated",
    "changed_outside",
];
/// The reconcile error kinds, pre-created at 0 so rates exist before the first error.
pub const ERROR_KINDS: [&str; 7] = [
    "list",
    "resource",
    "remove",
    "status",
    "finalize",
    "endpoints",
    "panic",
];

/// How far a service is from its spec, counted in replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    pub missing: u32,
    pub surplus: u32,
    pub unhealthy: u32,
    pub outdated: u32,
    /// Replicas found removed or altered behind capstan's back in the last reconcile.
    pub changed_outside: u32,
}

impl Drift {
    /// The drift of `service` as `observed`; `changed_outside` is what the caller found.
    pub fn of(service: &Service, observed: &[Observed], changed_outside: u32) -> Drift {
        let desired = service.spec.replicas;
        let hash = service.spec.container_hash();
        let current: Vec<&Observed> = observed
            .iter()
            .filter(|c| c.ordinal.is_some_and(|n| n >= 1 && n <= desired))
            .collect();
        let present: std::collections::BTreeSet<u32> =
            current.iter().filter_map(|c| c.ordinal).collect();
        Drift {
            missing: desired - present.len() as u32,
            surplus: (observed.len() - current.len()) as u32,
            unhealthy: current
                .iter()
                .filter(|c| c.health == Health::Unhealthy)
                .count() as u32,
            outdated: current.iter().filter(|c| c.spec_hash != hash).count() as u32,
            changed_outside,
        }
    }

    fn by_kind(&self) -> [(&'static str, u32); 5] {
        [
            ("missing", self.missing),
            ("surplus", self.surplus),
            ("unhealthy", self.unhealthy),
            ("outdated", self.outdated),
            ("changed_outside", self.changed_outside),
        ]
    }
}

pub struct Metrics {
    registry: Registry,
    desired: Family<ServiceLabels, Gauge>,
    running: Family<ServiceLabels, Gauge>,
    ready: Family<ServiceLabels, Gauge>,
    converged: Family<ServiceLabels, Gauge>,
    drift: Family<DriftLabels, Gauge>,
    convergence: Family<ServiceLabels, Histogram>,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<KindLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    queue_depth: Gauge,
    heals: Family<HealLabels, Counter>,
    endpoints: Family<ServiceLabels, Gauge>,
    endpoint_update: Histogram,
    etcd_duration: Family<OpLabels, Histogram>,
    etcd_errors: Family<OpLabels, Counter>,
    etcd_connected: Gauge,
    docker_duration: Family<OpLabels, Histogram>,
    docker_errors: Family<OpLabels, Counter>,
    /// When each unconverged service stopped being converged (generation change or drift).
    unconverged_since: Mutex<HashMap<(String, String), Instant>>,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn convergence_histogram() -> Histogram {
    // 0.25 s .. ~17 min
    Histogram::new(exponential_buckets(0.25, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            desired: Family::default(),
            running: Family::default(),
            ready: Family::default(),
            converged: Family::default(),
            drift: Family::default(),
            convergence: Family::new_with_constructor(convergence_histogram),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(latency_histogram),
            queue_depth: Gauge::default(),
            heals: Family::default(),
            endpoints: Family::default(),
            endpoint_update: latency_histogram(),
            etcd_duration: Family::new_with_constructor(latency_histogram),
            etcd_errors: Family::default(),
            etcd_connected: Gauge::default(),
            docker_duration: Family::new_with_constructor(latency_histogram),
            docker_errors: Family::default(),
            unconverged_since: Mutex::default(),
            registry: Registry::default(),
        };
        r.register(
            "capstan_service_replicas_desired",
            "Replicas the spec asks for",
            m.desired.clone(),
        );
        r.register(
            "capstan_service_replicas_running",
            "Replicas running",
            m.running.clone(),
        );
        r.register(
            "capstan_service_replicas_ready",
            "Replicas ready (healthy, or running without a healthcheck)",
            m.ready.clone(),
        );
        r.register(
            "capstan_service_converged",
            "1 when the service is Ready at its current generation",
            m.converged.clone(),
        );
        r.register(
            "capstan_service_drift_replicas",
            "Replicas away from the spec, by kind of drift",
            m.drift.clone(),
        );
        r.register(
            "capstan_convergence_seconds",
            "From a generation change or detected drift to Ready again",
            m.convergence.clone(),
        );
        r.register(
            "capstan_reconciles",
            "Reconciles by kind of key and result",
            m.reconciles.clone(),
        );
        r.register(
            "capstan_reconcile_errors",
            "Failed reconciles by kind of error",
            m.reconcile_errors.clone(),
        );
        r.register(
            "capstan_reconcile_duration_seconds",
            "Time one reconcile took",
            m.reconcile_duration.clone(),
        );
        r.register(
            "capstan_queue_depth",
            "Keys waiting for a worker",
            m.queue_depth.clone(),
        );
        r.register(
            "capstan_heal_actions",
            "Replicas capstan restarted or replaced, by reason",
            m.heals.clone(),
        );
        r.register(
            "capstan_service_endpoints",
            "Ready endpoints of a service",
            m.endpoints.clone(),
        );
        r.register(
            "capstan_endpoint_update_seconds",
            "From the start of a reconcile to its endpoints written",
            m.endpoint_update.clone(),
        );
        r.register(
            "capstan_etcd_request_duration_seconds",
            "etcd request latency by operation",
            m.etcd_duration.clone(),
        );
        r.register(
            "capstan_etcd_request_errors",
            "Failed etcd requests by operation",
            m.etcd_errors.clone(),
        );
        r.register(
            "capstan_etcd_connected",
            "1 while capstan is synced with etcd",
            m.etcd_connected.clone(),
        );
        r.register(
            "capstan_docker_request_duration_seconds",
            "Docker Engine API latency by operation",
            m.docker_duration.clone(),
        );
        r.register(
            "capstan_docker_request_errors",
            "Failed Docker Engine API requests by operation",
            m.docker_errors.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        r.register("capstan_build_info", "capstan's version", build);
        for op in ["range", "get", "txn", "watch"] {
            let _ = m.etcd_errors.get_or_create(&OpLabels { op: op.into() });
        }
        for op in ["list", "create", "start", "restart", "inspect", "remove"] {
            let _ = m.docker_errors.get_or_create(&OpLabels { op: op.into() });
        }
        for kind in ERROR_KINDS {
            let _ = m
                .reconcile_errors
                .get_or_create(&KindLabels { kind: kind.into() });
        }
        for kind in ["service", "stack"] {
            for result in ["success", "requeue", "error"] {
                let _ = m.reconciles.get_or_create(&ReconcileLabels {
                    kind: kind.into(),
                    result: result.into(),
                });
            }
        }
        Metrics { registry: r, ..m }
    }
}

fn svc_labels(stack: &str, service: &str) -> ServiceLabels {
    ServiceLabels {
        stack: stack.into(),
        service: service.into(),
    }
}

impl Metrics {
    /// Records a service's state after a reconcile, and its convergence time when it just
    /// became converged.
    pub fn observe_service(&self, service: &Service, status: &ServiceStatus, drift: Drift) {
        let l = svc_labels(&service.stack, &service.name);
        self.desired
            .get_or_create(&l)
            .set(service.spec.replicas as i64);
        self.running.get_or_create(&l).set(status.running as i64);
        self.ready.get_or_create(&l).set(status.ready as i64);
        let converged = status.is_ready()
            && status.observed_generation == service.generation
            && drift == Drift::default();
        self.converged.get_or_create(&l).set(converged as i64);
        for (kind, n) in drift.by_kind() {
            self.drift
                .get_or_create(&DriftLabels {
                    stack: service.stack.clone(),
                    service: service.name.clone(),
                    kind: kind.into(),
                })
                .set(n as i64);
        }
        let key = (service.stack.clone(), service.name.clone());
        let mut since = self.unconverged_since.lock().unwrap();
        if converged {
            if let Some(t0) = since.remove(&key) {
                self.convergence
                    .get_or_create(&l)
                    .observe(t0.elapsed().as_secs_f64());
            }
        } else {
            since.entry(key).or_insert_with(Instant::now);
        }
    }

    /// A new generation was seen: convergence time counts from now if it was converged.
    pub fn generation_changed(&self, stack: &str, service: &str) {
        self.unconverged_since
            .lock()
            .unwrap()
            .entry((stack.into(), service.into()))
            .or_insert_with(Instant::now);
    }

    /// Drops every series of a removed service.
    pub fn forget_service(&self, stack: &str, service: &str) {
        let l = svc_labels(stack, service);
        for f in [
            &self.desired,
            &self.running,
            &self.ready,
            &self.converged,
            &self.endpoints,
        ] {
            f.remove(&l);
        }
        for kind in DRIFT_KINDS {
            self.drift.remove(&DriftLabels {
                stack: stack.into(),
                service: service.into(),
                kind: kind.into(),
            });
        }
        self.unconverged_since
            .lock()
            .unwrap()
            .remove(&(stack.into(), service.into()));
    }

    pub fn heal(&self, stack: &str, service: &str, reason: &str) {
        self.heals
            .get_or_create(&HealLabels {
                stack: stack.into(),
                service: service.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn reconciled(&self, kind: &str, result: &str, took: Duration, error_kind: Option<&str>) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
        if let Some(k) = error_kind {
            self.reconcile_errors
                .get_or_create(&KindLabels { kind: k.into() })
                .inc();
        }
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    /// Records a service's endpoint count, and, when they were just written, how long after
    /// the start of the reconcile.
    pub fn endpoints(
        &self,
        stack: &str,
        service: &str,
        count: usize,
        written_after: Option<Duration>,
    ) {
        self.endpoints
            .get_or_create(&svc_labels(stack, service))
            .set(count as i64);
        if let Some(d) = written_after {
            self.endpoint_update.observe(d.as_secs_f64());
        }
    }

    pub fn set_etcd_connected(&self, connected: bool) {
        self.etcd_connected.set(connected as i64);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn etcd<T>(&self, op: &str, started: Instant, r: &Result<T, KvError>) {
        let l = OpLabels { op: op.into() };
        self.etcd_duration
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            self.etcd_errors.get_or_create(&l).inc();
        }
    }

    fn docker<T>(&self, op: &str, started: Instant, r: &Result<T, RuntimeError>) {
        let l = OpLabels { op: op.into() };
        self.docker_duration
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            self.docker_errors.get_or_create(&l).inc();
        }
    }
}

/// [`Kv`] that measures every request.
pub struct MeasuredKv {
    pub inner: Arc<dyn Kv>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl Kv for MeasuredKv {
    async fn range(&self, prefix: &str) -> Result<Listing, KvError> {
        let t = Instant::now();
        let r = self.inner.range(prefix).await;
        self.metrics.etcd("range", t, &r);
        r
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.etcd("get", t, &r);
        r
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool, KvError> {
        let t = Instant::now();
        let r = self.inner.txn(compares, ops).await;
        self.metrics.etcd("txn", t, &r);
        r
    }
    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Vec<WatchEvent>, KvError>>, KvError> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, from_revision).await;
        self.metrics.etcd("watch", t, &r);
        r
    }
}

/// [`Runtime`] that measures every Docker call.
pub struct MeasuredRuntime {
    pub inner: Arc<dyn Runtime>,
    pub metrics: Arc<Metrics>,
}

macro_rules! measured {
    ($self:ident, $op:literal, $call:expr) => {{
        let t = Instant::now();
        let r = $call.await;
        $self.metrics.docker($op, t, &r);
        r
    }};
}

#[async_trait]
impl Runtime for MeasuredRuntime {
    async fn list(
        &self,
        stack: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        measured!(self, "list", self.inner.list(stack, service))
    }
    async fn create(&self, plan: &ContainerPlan) -> Result<String, RuntimeError> {
        measured!(self, "create", self.inner.create(plan))
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        measured!(self, "start", self.inner.start(id))
    }
    async fn restart(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        measured!(self, "restart", self.inner.restart(id, grace))
    }
    async fn inspect(&self, id: &str) -> Result<Detail, RuntimeError> {
        measured!(self, "inspect", self.inner.inspect(id))
    }
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        measured!(self, "remove", self.inner.remove(id, grace))
    }
    async fn ensure_network(&self, plan: &ResourcePlan) -> Result<(), RuntimeError> {
        measured!(self, "ensure_network", self.inner.ensure_network(plan))
    }
    async fn ensure_volume(&self, plan: &ResourcePlan) -> Result<(), RuntimeError> {
        measured!(self, "ensure_volume", self.inner.ensure_volume(plan))
    }
    async fn stack_networks(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        measured!(self, "list_networks", self.inner.stack_networks(stack))
    }
    async fn stack_volumes(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        measured!(self, "list_volumes", self.inner.stack_volumes(stack))
    }
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        measured!(self, "remove_network", self.inner.remove_network(name))
    }
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        measured!(self, "remove_volume", self.inner.remove_volume(name))
    }
    fn events(
        &self,
        since_nano: Option<i64>,
    ) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        self.inner.events(since_nano)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::State;
    use capstan_api::object::Condition;
    use capstan_api::spec::ServiceSpec;

    fn svc(replicas: u32) -> Service {
        Service {
            stack: "shop".into(),
            name: "web".into(),
            generation: 1,
            spec: ServiceSpec {
                image: "w".into(),
                replicas,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn replica(svc: &Service, n: u32) -> Observed {
        Observed {
            id: format!("id{n}"),
            name: format!("shop-web-{n}"),
            stack: "shop".into(),
            service: "web".into(),
            ordinal: Some(n),
            spec_hash: svc.spec.container_hash(),
            state: State::Running,
            health: Health::Healthy,
            created: 0,
            addresses: Default::default(),
            published: Default::default(),
        }
    }

    fn status(ready: u32, is_ready: bool) -> ServiceStatus {
        ServiceStatus {
            observed_generation: 1,
            running: ready,
            ready,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if is_ready { "True" } else { "False" }.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    }

    #[test]
    fn every_family_is_exposed_with_its_labels() {
        let m = Metrics::default();
        let s = svc(3);
        let all: Vec<Observed> = (1..=3).map(|n| replica(&s, n)).collect();
        m.observe_service(&s, &status(3, true), Drift::of(&s, &all, 0));
        m.heal("shop", "web", "unhealthy");
        m.reconciled("service", "success", Duration::from_millis(3), None);
        m.endpoints("shop", "web", 3, Some(Duration::from_millis(2)));
        let text = m.encode();
        for family in [
            "capstan_service_replicas_desired{",
            "capstan_service_replicas_running{",
            "capstan_service_replicas_ready{",
            "capstan_service_converged{",
            "capstan_service_drift_replicas{",
            "capstan_reconciles_total{",
            "capstan_reconcile_errors_total{",
            "capstan_reconcile_duration_seconds_bucket{",
            "capstan_queue_depth ",
            "capstan_heal_actions_total{",
            "capstan_service_endpoints{",
            "capstan_endpoint_update_seconds_bucket{",
            "capstan_etcd_connected ",
            "capstan_build_info{",
        ] {
            line(&text, family);
        }
        assert!(line(&text, "capstan_heal_actions_total{").contains("reason=\"unhealthy\""));
    }

    #[test]
    fn drift_and_convergence_follow_the_state() {
        let m = Metrics::default();
        let s = svc(3);
        let all: Vec<Observed> = (1..=3).map(|n| replica(&s, n)).collect();
        m.observe_service(&s, &status(3, true), Drift::of(&s, &all, 0));
        let text = m.encode();
        assert_eq!(
            line(&text, "capstan_service_converged{").rsplit(' ').next(),
            Some("1")
        );
        assert!(
            text.lines()
                .filter(|l| l.starts_with("capstan_service_drift_replicas{"))
                .all(|l| l.ends_with(" 0")),
            "{text}"
        );

        // One replica killed: missing 1 until healed.
        let two = &all[..2];
        let drift = Drift::of(&s, two, 1);
        assert_eq!((drift.missing, drift.changed_outside), (1, 1));
        m.observe_service(&s, &status(2, false), drift);
        let text = m.encode();
        assert_eq!(
            line(&text, "capstan_service_converged{").rsplit(' ').next(),
            Some("0")
        );
        let missing = text
            .lines()
            .find(|l| {
                l.starts_with("capstan_service_drift_replicas{") && l.contains("kind=\"missing\"")
            })
            .unwrap();
        assert!(missing.ends_with(" 1"), "{missing}");

        m.observe_service(&s, &status(3, true), Drift::of(&s, &all, 0));
        let text = m.encode();
        assert!(
            text.lines()
                .any(|l| l.starts_with("capstan_convergence_seconds_count{") && l.ends_with(" 1")),
            "one convergence observed:\n{text}"
        );
        assert_eq!(
            line(&text, "capstan_service_converged{").rsplit(' ').next(),
            Some("1")
        );
    }

    #[test]
    fn a_removed_service_leaves_no_series_behind() {
        let m = Metrics::default();
        let s = svc(1);
        m.observe_service(&s, &status(1, true), Drift::of(&s, &[replica(&s, 1)], 0));
        m.forget_service("shop", "web");
        assert!(!m.encode().contains("service=\"web\""));
    }
}
