//! Prometheus metrics, named by Prometheus conventions (`capstan_` prefix, base units,
//! `_total` counters, `_seconds` histograms), with stack and service as labels where they
//! apply. This module only records what others computed, given as plain label values and
//! numbers (drift is the reconciler's, error kinds too): it depends on nothing of the loop.
//! [`measured`] holds the decorators that measure every etcd and Docker call.
//!
//! Every series whose label values are known is created at 0 before its first event, so a
//! dashboard panel or an alert shows 0, not "No data": the fixed enums (operations, results,
//! kinds of key) when the registry is made, the loop's error kinds when the loop starts
//! ([`Metrics::known_error_kinds`]), and a service's counters and histograms when it is
//! first observed ([`Metrics::observe_service`]); they go with the service
//! ([`Metrics::forget_service`]).

pub mod measured;
mod ops;

pub use measured::{MeasuredKv, MeasuredRuntime};
pub use ops::{DockerOp, EtcdOp};

use capstan_api::object::{HealCause, Service, ServiceStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
pub struct RolloutLabels {
    pub stack: String,
    pub service: String,
    /// `completed`, `rolled_back`, `paused`.
    pub result: String,
}

/// Every reason `capstan_heal_actions_total` counts, so a removed service's series can all
/// be dropped.
const HEAL_CAUSES: [HealCause; 7] = [
    HealCause::Exited,
    HealCause::Unhealthy,
    HealCause::Oom,
    HealCause::Removed,
    HealCause::DependencyRestarted,
    HealCause::PartnerRestarted,
    HealCause::PartnerReplaced,
];

/// Does not compile when a cause is added: add it to [`HEAL_CAUSES`] too.
#[allow(dead_code)]
fn every_heal_cause_is_listed(c: HealCause) {
    use HealCause::*;
    match c {
        Exited | Unhealthy | Oom | Removed | DependencyRestarted | PartnerRestarted
        | PartnerReplaced => {}
    }
}

/// The results of a rollout `capstan_rollouts_total` counts.
pub const ROLLOUT_RESULTS: [&str; 3] = ["completed", "rolled_back", "paused"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealLabels {
    pub stack: String,
    pub service: String,
    /// `unhealthy`, `exited`, `oom`, `removed`, `dependency-restarted`.
    pub reason: String,
}

/// The kinds of reconcile key: the `kind` label of `capstan_reconciles_total` and
/// `capstan_reconcile_duration_seconds`.
pub const KEY_KINDS: [&str; 2] = ["service", "stack"];

/// How a reconcile ended: the `result` label of `capstan_reconciles_total`.
pub const RECONCILE_RESULTS: [&str; 3] = ["success", "requeue", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `service` or `stack`.
    pub kind: String,
    /// `success`, `requeue` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// A reconcile key: `stack/<stack>` or `<stack>/<service>`.
    pub key: String,
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
pub struct ApiLabels {
    pub verb: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
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
    /// The retry delay of each key whose reconcile is failing; no series once it succeeds.
    reconcile_backoff: Family<KeyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    heals: Family<HealLabels, Counter>,
    endpoints: Family<ServiceLabels, Gauge>,
    endpoint_update: Histogram,
    etcd_duration: Family<OpLabels, Histogram>,
    etcd_errors: Family<OpLabels, Counter>,
    etcd_connected: Gauge,
    /// 1 when etcd took this daemon without a client certificate or user over TCP, so it
    /// takes any local user too ([`crate::store::etcd::EtcdAccess::unauthenticated`]).
    etcd_unauthenticated: Gauge,
    docker_connected: Gauge,
    /// 1 while this daemon holds the leader lease.
    leader: Gauge,
    leader_transitions: Counter,
    /// API handlers that panicked (each answered with a 500).
    api_panics: Counter,
    docker_duration: Family<OpLabels, Histogram>,
    docker_errors: Family<OpLabels, Counter>,
    /// API requests by verb and result ([`crate::audit`]).
    api_requests: Family<ApiLabels, Counter>,
    rollouts: Family<RolloutLabels, Counter>,
    rollout_duration: Family<ServiceLabels, Histogram>,
    /// The `kind` labels of drift given so far, so a removed service's can all be dropped.
    drift_kinds: Mutex<Vec<&'static str>>,
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
            reconcile_backoff: Family::default(),
            heals: Family::default(),
            endpoints: Family::default(),
            endpoint_update: latency_histogram(),
            etcd_duration: Family::new_with_constructor(latency_histogram),
            etcd_errors: Family::default(),
            etcd_connected: Gauge::default(),
            etcd_unauthenticated: Gauge::default(),
            docker_connected: Gauge::default(),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
            api_panics: Counter::default(),
            docker_duration: Family::new_with_constructor(latency_histogram),
            docker_errors: Family::default(),
            api_requests: Family::default(),
            rollouts: Family::default(),
            rollout_duration: Family::new_with_constructor(convergence_histogram),
            drift_kinds: Mutex::default(),
            registry: Registry::default(),
        };
        let mut r = Registry::default();
        m.register_services(&mut r);
        m.register_loop(&mut r);
        m.precreate();
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// The per-service families: replicas, drift, convergence, heals, endpoints.
    fn register_services(&self, r: &mut Registry) {
        r.register(
            "capstan_service_replicas_desired",
            "Replicas the spec asks for",
            self.desired.clone(),
        );
        r.register(
            "capstan_service_replicas_running",
            "Replicas running",
            self.running.clone(),
        );
        r.register(
            "capstan_service_replicas_ready",
            "Replicas ready (healthy, or running without a healthcheck)",
            self.ready.clone(),
        );
        r.register(
            "capstan_service_converged",
            "1 when the service is Ready at its current generation",
            self.converged.clone(),
        );
        r.register(
            "capstan_service_drift_replicas",
            "Replicas away from the spec, by kind of drift",
            self.drift.clone(),
        );
        r.register(
            "capstan_convergence_seconds",
            "From a generation change or detected drift to Ready again",
            self.convergence.clone(),
        );
        r.register(
            "capstan_rollouts",
            "Rollouts (replicas replaced for a changed spec) by result: completed, rolled_back, paused",
            self.rollouts.clone(),
        );
        r.register(
            "capstan_rollout_duration_seconds",
            "From the first outdated replica seen to every replica updated and ready",
            self.rollout_duration.clone(),
        );
        r.register(
            "capstan_heal_actions",
            "Replicas capstan restarted or replaced, by reason",
            self.heals.clone(),
        );
        r.register(
            "capstan_service_endpoints",
            "Ready endpoints of a service",
            self.endpoints.clone(),
        );
        r.register(
            "capstan_endpoint_update_seconds",
            "From the start of a reconcile to its endpoints written",
            self.endpoint_update.clone(),
        );
    }

    /// The control loop's own families.
    fn register_loop(&self, r: &mut Registry) {
        r.register(
            "capstan_api_requests",
            "API requests by verb and result (ok, unauthorized, forbidden, client_error, server_error)",
            self.api_requests.clone(),
        );
        r.register(
            "capstan_reconciles",
            "Reconciles by kind of key and result",
            self.reconciles.clone(),
        );
        r.register(
            "capstan_reconcile_errors",
            "Failed reconciles by kind of error",
            self.reconcile_errors.clone(),
        );
        r.register(
            "capstan_reconcile_duration_seconds",
            "Time one reconcile took",
            self.reconcile_duration.clone(),
        );
        r.register(
            "capstan_queue_depth",
            "Keys waiting for a worker",
            self.queue_depth.clone(),
        );
        r.register(
            "capstan_reconcile_backoff_seconds",
            "How long a failing key waits before its next reconcile (exponential per key)",
            self.reconcile_backoff.clone(),
        );
        self.register_peers(r);
    }

    /// etcd's and the engine's families, the leadership, the API's own, and the build.
    fn register_peers(&self, r: &mut Registry) {
        r.register(
            "capstan_etcd_request_duration_seconds",
            "etcd request latency by operation",
            self.etcd_duration.clone(),
        );
        r.register(
            "capstan_etcd_request_errors",
            "Failed etcd requests by operation",
            self.etcd_errors.clone(),
        );
        r.register(
            "capstan_etcd_connected",
            "1 while etcd answers (asked twice a second, 0.9 s timeout)",
            self.etcd_connected.clone(),
        );
        r.register(
            "capstan_etcd_unauthenticated",
            "1 when capstan reaches etcd over TCP with neither a client certificate nor a user: anyone local can write the desired state",
            self.etcd_unauthenticated.clone(),
        );
        r.register(
            "capstan_docker_connected",
            "1 while the Docker engine answers (asked every second, 0.9 s timeout)",
            self.docker_connected.clone(),
        );
        r.register(
            "capstan_leader",
            "1 while this daemon holds the leader lease and reconciles",
            self.leader.clone(),
        );
        r.register(
            "capstan_leader_transitions",
            "Times this daemon became or stopped being the leader",
            self.leader_transitions.clone(),
        );
        r.register(
            "capstan_api_panics",
            "API request handlers that panicked (each answered with a 500 and logged)",
            self.api_panics.clone(),
        );
        r.register(
            "capstan_docker_request_duration_seconds",
            "Docker Engine API latency by operation",
            self.docker_duration.clone(),
        );
        r.register(
            "capstan_docker_request_errors",
            "Failed Docker Engine API requests by operation",
            self.docker_errors.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        r.register("capstan_build_info", "capstan's version", build);
    }

    /// Series that must exist at 0 before their first event, so rates and alerts work.
    /// The request latencies are not: the daemon asks etcd and the engine as it starts.
    fn precreate(&self) {
        for op in EtcdOp::ALL {
            let _ = self.etcd_errors.get_or_create(&OpLabels {
                op: op.as_str().into(),
            });
        }
        for op in DockerOp::ALL {
            let _ = self.docker_errors.get_or_create(&OpLabels {
                op: op.as_str().into(),
            });
        }
        for kind in KEY_KINDS {
            let _ = self
                .reconcile_duration
                .get_or_create(&KindLabels { kind: kind.into() });
            for result in RECONCILE_RESULTS {
                let _ = self.reconciles.get_or_create(&ReconcileLabels {
                    kind: kind.into(),
                    result: result.into(),
                });
            }
        }
    }

    /// Creates `capstan_reconcile_errors_total` at 0 for each kind of error the loop can
    /// report (its own vocabulary, given when it starts).
    pub fn known_error_kinds(&self, kinds: &[&str]) {
        for kind in kinds {
            let _ = self.reconcile_errors.get_or_create(&KindLabels {
                kind: (*kind).into(),
            });
        }
    }

    /// A service's counters and histograms at 0 (every heal reason, every rollout result),
    /// so its panels and alerts have a series before its first heal or rollout.
    fn precreate_service(&self, stack: &str, service: &str) {
        let l = svc_labels(stack, service);
        let _ = self.convergence.get_or_create(&l);
        let _ = self.rollout_duration.get_or_create(&l);
        let _ = self.endpoints.get_or_create(&l);
        for cause in HEAL_CAUSES {
            let _ = self.heals.get_or_create(&HealLabels {
                stack: stack.into(),
                service: service.into(),
                reason: cause.as_str().into(),
            });
        }
        for result in ROLLOUT_RESULTS {
            let _ = self.rollouts.get_or_create(&RolloutLabels {
                stack: stack.into(),
                service: service.into(),
                result: result.into(),
            });
        }
    }
}

fn svc_labels(stack: &str, service: &str) -> ServiceLabels {
    ServiceLabels {
        stack: stack.into(),
        service: service.into(),
    }
}

impl Metrics {
    /// Records a service's state after a reconcile: `converged` (the status says so and no
    /// replica drifts), and `drift`, replicas away from the spec by kind of drift (the
    /// `kind` label), every kind each time. A service observed for the first time gets its
    /// counters and histograms at 0.
    pub fn observe_service(
        &self,
        service: &Service,
        status: &ServiceStatus,
        converged: bool,
        drift: &[(&'static str, u32)],
    ) {
        let l = svc_labels(&service.stack, &service.name);
        if self.desired.get(&l).is_none() {
            self.precreate_service(&service.stack, &service.name);
        }
        self.desired
            .get_or_create(&l)
            .set(service.spec.replicas as i64);
        self.running.get_or_create(&l).set(status.running as i64);
        self.ready.get_or_create(&l).set(status.ready as i64);
        self.converged.get_or_create(&l).set(converged as i64);
        self.remember_drift_kinds(drift);
        for (kind, n) in drift {
            self.drift
                .get_or_create(&DriftLabels {
                    stack: service.stack.clone(),
                    service: service.name.clone(),
                    kind: (*kind).into(),
                })
                .set(*n as i64);
        }
    }

    /// The service converged `took` after it stopped being converged.
    pub fn converged_after(&self, stack: &str, service: &str, took: Duration) {
        let l = svc_labels(stack, service);
        self.convergence
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    fn remember_drift_kinds(&self, drift: &[(&'static str, u32)]) {
        let mut kinds = self.drift_kinds.lock().unwrap();
        for (kind, _) in drift {
            if !kinds.contains(kind) {
                kinds.push(kind);
            }
        }
    }

    /// A rollout ended after `took`: `completed`, unless it was an automatic rollback
    /// (counted when it was decided, by [`Self::rolled_back`]).
    pub fn rollout_ended(&self, stack: &str, service: &str, took: Duration, completed: bool) {
        let l = svc_labels(stack, service);
        self.rollout_duration
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        if completed {
            self.count_rollout(stack, service, "completed");
        }
    }

    /// `failure_action: pause` stopped a rollout (counted once per rollout).
    pub fn rollout_paused(&self, stack: &str, service: &str) {
        self.count_rollout(stack, service, "paused");
    }

    /// An automatic rollback was stored.
    pub fn rolled_back(&self, stack: &str, service: &str) {
        self.count_rollout(stack, service, "rolled_back");
    }

    fn count_rollout(&self, stack: &str, service: &str, result: &str) {
        self.rollouts
            .get_or_create(&RolloutLabels {
                stack: stack.into(),
                service: service.into(),
                result: result.into(),
            })
            .inc();
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
        for kind in self.drift_kinds.lock().unwrap().iter() {
            self.drift.remove(&DriftLabels {
                stack: stack.into(),
                service: service.into(),
                kind: (*kind).into(),
            });
        }
        self.rollout_duration.remove(&l);
        self.convergence.remove(&l);
        for cause in HEAL_CAUSES {
            self.heals.remove(&HealLabels {
                stack: stack.into(),
                service: service.into(),
                reason: cause.as_str().into(),
            });
        }
        for result in ROLLOUT_RESULTS {
            self.rollouts.remove(&RolloutLabels {
                stack: stack.into(),
                service: service.into(),
                result: result.into(),
            });
        }
    }

    pub fn api_request(&self, verb: &str, result: &str) {
        self.api_requests
            .get_or_create(&ApiLabels {
                verb: verb.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn heal(&self, stack: &str, service: &str, reason: HealCause) {
        self.heals
            .get_or_create(&HealLabels {
                stack: stack.into(),
                service: service.into(),
                reason: reason.as_str().into(),
            })
            .inc();
    }

    /// A key failed and waits `delay` before its next try; `None`: it succeeded again.
    pub fn backing_off(&self, key: &str, delay: Option<Duration>) {
        let l = KeyLabels { key: key.into() };
        match delay {
            Some(d) => {
                self.reconcile_backoff
                    .get_or_create(&l)
                    .set(d.as_secs_f64());
            }
            None => {
                self.reconcile_backoff.remove(&l);
            }
        }
    }

    /// A reconcile of a key of `kind` ([`KEY_KINDS`]) ended with `result`
    /// ([`RECONCILE_RESULTS`]), failing with `error_kind` if it did.
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

    /// This daemon's leadership changed to `leading`.
    pub fn set_leader(&self, leading: bool) {
        if (self.leader.get() == 1) != leading {
            self.leader.set(leading as i64);
            self.leader_transitions.inc();
        }
    }

    pub fn api_panic(&self) {
        self.api_panics.inc();
    }

    pub fn set_etcd_connected(&self, connected: bool) {
        self.etcd_connected.set(connected as i64);
    }

    pub fn set_etcd_unauthenticated(&self, unauthenticated: bool) {
        self.etcd_unauthenticated.set(unauthenticated as i64);
    }

    /// While the engine cannot be asked, no replica is reported running or ready: the
    /// series return with the next reconcile once it answers.
    pub fn set_docker_connected(&self, connected: bool) {
        self.docker_connected.set(connected as i64);
        if !connected {
            self.running.clear();
            self.ready.clear();
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// An etcd request that began at `started` ended now, and `failed` or not.
    pub fn etcd(&self, op: EtcdOp, started: Instant, failed: bool) {
        let l = OpLabels {
            op: op.as_str().into(),
        };
        self.etcd_duration
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
        if failed {
            self.etcd_errors.get_or_create(&l).inc();
        }
    }

    /// A Docker Engine call that began at `started` ended now, and `failed` or not.
    pub fn docker(&self, op: DockerOp, started: Instant, failed: bool) {
        let l = OpLabels {
            op: op.as_str().into(),
        };
        self.docker_duration
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
        if failed {
            self.docker_errors.get_or_create(&l).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The service observed as the reconciler does: converged when its status says so and
    /// nothing drifts.
    fn seen(m: &Metrics, s: &Service, st: &ServiceStatus, drift: &[(&'static str, u32)]) {
        let converged =
            st.is_converged(s.generation, s.spec.replicas) && drift.iter().all(|(_, n)| *n == 0);
        m.observe_service(s, st, converged, drift);
    }

    /// Drift as the reconciler gives it: every kind, these two non-zero.
    fn drift(missing: u32, changed_outside: u32) -> [(&'static str, u32); 5] {
        [
            ("missing", missing),
            ("surplus", 0),
            ("unhealthy", 0),
            ("outdated", 0),
            ("changed_outside", changed_outside),
        ]
    }

    fn status(ready: u32, is_ready: bool) -> ServiceStatus {
        ServiceStatus {
            observed_generation: 1,
            running: ready,
            ready,
            updated: ready,
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
        m.known_error_kinds(&["list"]);
        seen(&m, &s, &status(3, true), &drift(0, 0));
        m.heal("shop", "web", HealCause::Unhealthy);
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
            "capstan_etcd_unauthenticated 0",
            "capstan_build_info{",
        ] {
            line(&text, family);
        }
        assert!(line(
            &text,
            "capstan_heal_actions_total{stack=\"shop\",service=\"web\",reason=\"unhealthy\"}"
        )
        .ends_with(" 1"));
    }

    /// The value of every line of `family` (its series, buckets included) for shop/web.
    fn values_of(text: &str, family: &str) -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{family}{{"))
                    && l.contains("stack=\"shop\",service=\"web\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_service_observed_once_has_every_counter_and_histogram_at_zero() {
        let m = Metrics::default();
        seen(&m, &svc(2), &status(0, false), &drift(2, 0));
        let text = m.encode();
        for (family, series) in [
            ("capstan_heal_actions_total", HEAL_CAUSES.len()),
            ("capstan_rollouts_total", ROLLOUT_RESULTS.len()),
            ("capstan_rollout_duration_seconds_count", 1),
            ("capstan_rollout_duration_seconds_bucket", 14),
            ("capstan_convergence_seconds_count", 1),
            ("capstan_convergence_seconds_bucket", 14),
            ("capstan_service_endpoints", 1),
        ] {
            let values = values_of(&text, family);
            assert_eq!(values.len(), series, "{family} in:\n{text}");
            assert!(values.iter().all(|v| v == "0"), "{family}: {values:?}");
        }
        for cause in HEAL_CAUSES {
            assert!(
                text.contains(&format!("reason=\"{}\"", cause.as_str())),
                "{text}"
            );
        }
    }

    #[test]
    fn observing_a_service_again_keeps_its_counts() {
        let m = Metrics::default();
        let s = svc(1);
        seen(&m, &s, &status(1, true), &drift(0, 0));
        m.heal("shop", "web", HealCause::Exited);
        m.endpoints("shop", "web", 1, None);
        seen(&m, &s, &status(1, true), &drift(0, 0));
        let text = m.encode();
        assert!(line(&text, "capstan_service_endpoints{").ends_with(" 1"));
        let exited = text
            .lines()
            .find(|l| l.starts_with("capstan_heal_actions_total{") && l.contains("\"exited\""))
            .unwrap();
        assert!(exited.ends_with(" 1"), "{exited}");
    }

    #[test]
    fn a_fresh_registry_has_the_series_of_every_fixed_label_at_zero() {
        let m = Metrics::default();
        m.known_error_kinds(&["list", "status"]);
        let text = m.encode();
        let zero = |prefix: String| {
            assert!(line(&text, &prefix).ends_with(" 0"), "{prefix} in:\n{text}");
        };
        for op in EtcdOp::ALL {
            zero(format!(
                "capstan_etcd_request_errors_total{{op=\"{}\"}}",
                op.as_str()
            ));
        }
        for op in DockerOp::ALL {
            zero(format!(
                "capstan_docker_request_errors_total{{op=\"{}\"}}",
                op.as_str()
            ));
        }
        for kind in KEY_KINDS {
            for result in RECONCILE_RESULTS {
                zero(format!(
                    "capstan_reconciles_total{{kind=\"{kind}\",result=\"{result}\"}}"
                ));
            }
            zero(format!(
                "capstan_reconcile_duration_seconds_count{{kind=\"{kind}\"}}"
            ));
        }
        for kind in ["list", "status"] {
            zero(format!("capstan_reconcile_errors_total{{kind=\"{kind}\"}}"));
        }
        zero("capstan_endpoint_update_seconds_count".into());
    }

    #[test]
    fn a_rollout_is_counted_by_how_it_ended_and_timed() {
        let m = Metrics::default();
        seen(&m, &svc(3), &status(3, true), &drift(0, 0));
        m.rollout_paused("shop", "web");
        m.rollout_ended("shop", "web", Duration::from_secs(4), true);
        m.rollout_ended("shop", "web", Duration::from_secs(4), false);
        let text = m.encode();
        let count = |result: &str| {
            let prefix = format!(
                "capstan_rollouts_total{{stack=\"shop\",service=\"web\",result=\"{result}\"}}"
            );
            line(&text, &prefix).rsplit(' ').next().unwrap().to_string()
        };
        assert_eq!(
            (count("paused"), count("completed"), count("rolled_back")),
            ("1".into(), "1".into(), "0".into())
        );
        assert!(line(&text, "capstan_rollout_duration_seconds_count{").ends_with(" 2"));
    }

    #[test]
    fn drift_and_convergence_follow_the_state() {
        let m = Metrics::default();
        let s = svc(3);
        seen(&m, &s, &status(3, true), &drift(0, 0));
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
        seen(&m, &s, &status(2, false), &drift(1, 1));
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

        seen(&m, &s, &status(3, true), &drift(0, 0));
        m.converged_after("shop", "web", Duration::from_secs(2));
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
        seen(&m, &s, &status(1, true), &drift(0, 0));
        m.heal("shop", "web", HealCause::Oom);
        let mut unready = status(0, false);
        unready.observed_generation = 0;
        seen(&m, &s, &unready, &drift(0, 0));
        seen(&m, &s, &status(1, true), &drift(0, 0));
        m.rollout_ended("shop", "web", Duration::from_secs(1), true);
        assert!(m.encode().contains("capstan_convergence_seconds_count{"));
        m.forget_service("shop", "web");
        let text = m.encode();
        assert!(!text.contains("service=\"web\""), "{text}");
    }
}
