//! The plan of one service key, step by step, given an observation: what a reconcile of
//! the container backend will do, and nothing it will not.

use capstan_api::object::{Deletion, ReplicaState, Service, ServiceStatus, Stack};
use capstan_api::spec::ServiceSpec;
use std::sync::Arc;
use std::time::Duration;

use super::pull::ImageState;
use super::stack::Held;
use super::{ContainerBackend, ContainerView};
use crate::files::HostFiles;
use crate::reconcile::backend::Observation;
use crate::reconcile::backend::{Mode, StackView};
use crate::reconcile::context::Action;
use crate::reconcile::deps::Gate;
use crate::reconcile::memory::ServiceMemory;
use crate::reconcile::plan::{self, Plan};
use crate::runtime::fake::FakeRuntime;
use crate::runtime::reflector::Containers;
use crate::runtime::{Health, Observed, State};

fn backend() -> ContainerBackend {
    let runtime = Arc::new(FakeRuntime::default());
    ContainerBackend {
        containers: Arc::new(Containers::new(runtime.clone())),
        runtime,
        engine_slots: tokio::sync::Semaphore::new(4),
        pulls: Default::default(),
        files: HostFiles::new(None),
        policy: None,
    }
}

/// The services of a Compose file, as stored.
fn services(file: &str) -> Vec<Arc<Service>> {
    let parsed = capstan_api::parse_stack("s", file).unwrap();
    (parsed.services.into_iter())
        .map(|(name, spec)| {
            Arc::new(Service {
                stack: "s".into(),
                name,
                generation: 1,
                spec,
                ..Default::default()
            })
        })
        .collect()
}

fn replica(spec: &ServiceSpec, service: &str, n: u32, state: State, health: Health) -> Observed {
    Observed {
        id: format!("{service}{n}"),
        name: spec.replica_name("s", service, n),
        stack: "s".into(),
        service: service.into(),
        ordinal: Some(n),
        spec_hash: spec.container_hash(),
        state,
        health,
        created: 0,
        addresses: Default::default(),
        published: Default::default(),
        partners: None,
    }
}

fn running(spec: &ServiceSpec, n: u32) -> Observed {
    replica(spec, "web", n, State::Running, Health::None)
}

/// A status that lists the replicas `ordinals`.
fn status_listing(ordinals: &[u32]) -> Arc<ServiceStatus> {
    let replica_states = (ordinals.iter())
        .map(|n| ReplicaState {
            ordinal: *n,
            ..Default::default()
        })
        .collect();
    Arc::new(ServiceStatus {
        replica_states,
        ..Default::default()
    })
}

/// What a reconcile of `web` would see: the file's services, these replicas, the image
/// present, nothing remembered.
struct Given {
    all: Vec<Arc<Service>>,
    replicas: Vec<Observed>,
    view: ContainerView,
    memory: ServiceMemory,
    previous: Option<Arc<ServiceStatus>>,
    gate: Gate,
}

impl Given {
    fn file(file: &str) -> Given {
        Given {
            all: services(file),
            replicas: vec![],
            view: ContainerView {
                image: Some(present(true)),
                ..Default::default()
            },
            memory: ServiceMemory::default(),
            previous: Some(Arc::new(ServiceStatus::default())),
            gate: Gate::Open,
        }
    }

    fn web(&self) -> &Service {
        self.all.iter().find(|s| s.name == "web").unwrap()
    }

    fn observation(self) -> Observation {
        let web = self.all.iter().find(|s| s.name == "web").unwrap().clone();
        let dependents = (self.all.iter())
            .filter(|s| s.spec.depends_on.contains_key("web"))
            .cloned()
            .collect();
        let stack = Stack {
            name: "s".into(),
            services: self.all.iter().map(|s| s.name.clone()).collect(),
            ..Default::default()
        };
        Observation {
            stack: Arc::new(stack),
            service: web,
            replicas: self.replicas,
            previous: self.previous.clone(),
            stored: self.previous,
            gate: self.gate,
            dependents,
            memory: self.memory,
            view: Box::new(self.view),
            clock: Default::default(),
            now: tokio::time::Instant::now(),
            now_rfc3339: "2026-12-07T00:00:00Z".into(),
            started: std::time::Instant::now(),
        }
    }

    fn plan(self, mode: Mode) -> Plan {
        plan::plan(&self.observation(), &backend(), mode)
    }

    fn steps(self) -> Vec<String> {
        self.plan(Mode::Converge).describe()
    }
}

fn present(present: bool) -> ImageState {
    ImageState {
        present: Ok(present),
        since_pull: None,
        backing_off: None,
    }
}

const WEB2: &str = "services: {web: {image: web:1, deploy: {replicas: 2}}}";

#[test]
fn a_converged_service_publishes_and_reports_and_does_nothing_else() {
    let mut g = Given::file(WEB2);
    let spec = g.web().spec.clone();
    g.replicas = vec![running(&spec, 1), running(&spec, 2)];
    g.view.image = None;
    assert_eq!(g.steps(), ["publish", "write status"]);
}

#[test]
fn a_new_service_gets_its_networks_files_and_replicas_then_traffic_and_status() {
    assert_eq!(
        Given::file(WEB2).steps(),
        [
            "publish",
            "ensure networks and volumes",
            "write files",
            "create 1",
            "create 2",
            "republish",
            "write status"
        ]
    );
}

#[test]
fn a_missing_image_is_announced_and_pulled_before_any_replica_is_made() {
    let mut g = Given::file(WEB2);
    g.view.image = Some(present(false));
    assert_eq!(
        g.steps(),
        [
            "publish",
            "ensure networks and volumes",
            "write files",
            "announce pull",
            "pull web:1",
            "create 1",
            "create 2",
            "republish",
            "write status"
        ]
    );
}

#[test]
fn an_image_that_may_not_be_pulled_makes_nothing_and_says_why() {
    let mut g =
        Given::file("services: {web: {image: web:1, pull_policy: never, deploy: {replicas: 2}}}");
    g.view.image = Some(present(false));
    let plan = g.plan(Mode::Converge);
    assert_eq!(plan.describe(), ["publish", "write status"]);
    assert_eq!(
        plan.progress.problems[0].reason.as_str(),
        "ErrImageNeverPull"
    );
}

#[test]
fn a_pull_in_back_off_makes_nothing_until_it_is_over() {
    let mut g = Given::file(WEB2);
    g.view.image = Some(ImageState {
        backing_off: Some("manifest unknown".into()),
        ..present(false)
    });
    let plan = g.plan(Mode::Converge);
    assert_eq!(plan.describe(), ["publish", "write status"]);
    assert_eq!(plan.progress.problems[0].message, "manifest unknown");
}

#[test]
fn scaling_down_drains_the_surplus_first_and_removes_the_highest_ordinal_first() {
    let mut g = Given::file(WEB2);
    let spec = ServiceSpec {
        replicas: 4,
        ..g.web().spec.clone()
    };
    let web = g.web().spec.clone();
    g.replicas = (1..=4).map(|n| running(&spec, n)).collect();
    for c in &mut g.replicas {
        c.spec_hash = web.container_hash();
    }
    g.view.image = None;
    assert_eq!(
        g.steps(),
        [
            "publish without 2",
            "remove s-web-4 (Surplus)",
            "remove s-web-3 (Surplus)",
            "republish",
            "write status"
        ]
    );
}

#[test]
fn an_exited_replica_is_started_again_and_dependents_that_asked_restart_too() {
    let mut g = Given::file(
        "services:\n  web: {image: web:1}\n  api:\n    image: api:1\n    depends_on: {web: {condition: service_started, restart: true}}\n",
    );
    let spec = g.web().spec.clone();
    g.replicas = vec![replica(
        &spec,
        "web",
        1,
        State::Exited { code: 1 },
        Health::None,
    )];
    assert_eq!(
        g.steps(),
        [
            "publish without 1",
            "write files",
            "start s-web-1 (exited)",
            "request restarts of api",
            "republish",
            "write status"
        ]
    );
}

#[test]
fn a_replica_removed_behind_capstans_back_is_made_again_and_its_dependents_restart() {
    let mut g = Given::file(
        "services:\n  web: {image: web:1}\n  api:\n    image: api:1\n    depends_on: {web: {condition: service_started, restart: true}}\n",
    );
    g.previous = Some(status_listing(&[1]));
    let plan = g.plan(Mode::Converge);
    assert_eq!(
        plan.describe(),
        [
            "publish",
            "ensure networks and volumes",
            "write files",
            "create 1",
            "request restarts of api",
            "republish",
            "write status"
        ]
    );
    assert_eq!(plan.progress.changed_outside, 1, "drift");
}

#[test]
fn a_restart_owed_to_a_restarted_dependency_restarts_every_running_replica() {
    let mut g = Given::file(WEB2);
    let spec = g.web().spec.clone();
    g.replicas = vec![running(&spec, 1), running(&spec, 2)];
    g.memory.owed_restarts.insert("db".into());
    assert_eq!(
        g.steps(),
        [
            "publish",
            "restart for dependencies s-web-1 s-web-2",
            "republish",
            "write status"
        ]
    );
}

#[test]
fn a_closed_gate_makes_nothing_and_owes_its_restart_until_it_opens() {
    let mut g = Given::file(WEB2);
    g.gate = Gate::Closed {
        reason: capstan_api::object::Reason::WaitingForDependencies,
        message: "db is not healthy".into(),
    };
    g.memory.owed_restarts.insert("db".into());
    let plan = g.plan(Mode::Converge);
    assert_eq!(plan.describe(), ["publish", "write status"]);
    assert!(plan.progress.gated);
}

#[test]
fn a_replica_seen_healthy_for_the_first_time_is_remembered() {
    let mut g = Given::file(WEB2);
    let spec = g.web().spec.clone();
    g.replicas = vec![
        replica(&spec, "web", 1, State::Running, Health::Healthy),
        running(&spec, 2),
    ];
    g.view.image = None;
    assert_eq!(g.steps(), ["remember", "publish", "write status"]);
    let mut g = Given::file(WEB2);
    g.replicas = vec![
        replica(&spec, "web", 1, State::Running, Health::Healthy),
        running(&spec, 2),
    ];
    g.memory.healthy.insert(1, "web1".into());
    assert_eq!(g.steps(), ["publish", "write status"], "known already");
}

/// `web` at two replicas of `web:0`, the file asking for `web:1`.
fn outdated(file: &str) -> Given {
    let mut g = Given::file(file);
    let old = ServiceSpec {
        image: "web:0".into(),
        ..g.web().spec.clone()
    };
    g.replicas = vec![running(&old, 1), running(&old, 2)];
    g
}

#[test]
fn a_rollout_makes_a_successor_beside_the_first_outdated_replica() {
    assert_eq!(
        outdated(WEB2).steps(),
        [
            "publish",
            "ensure networks and volumes",
            "write files",
            "surge 1",
            "republish",
            "write status"
        ]
    );
}

#[test]
fn a_stop_first_rollout_drains_and_replaces_one_outdated_replica_at_a_time() {
    let file = "services: {web: {image: web:1, deploy: {replicas: 2, update_config: {order: stop-first}}}}";
    assert_eq!(
        outdated(file).steps(),
        [
            "publish without 1",
            "ensure networks and volumes",
            "write files",
            "recreate s-web-1",
            "republish",
            "write status"
        ]
    );
}

#[test]
fn while_etcd_is_away_only_restarts_are_planned_no_creation_no_traffic_no_status() {
    let mut g = Given::file("services: {web: {image: web:1, deploy: {replicas: 3}}}");
    let spec = g.web().spec.clone();
    g.replicas = vec![
        replica(&spec, "web", 1, State::Exited { code: 2 }, Health::None),
        running(&spec, 2),
    ];
    assert_eq!(
        g.plan(Mode::HealOnly).describe(),
        ["start s-web-1 (exited)"]
    );
}

#[test]
fn a_removed_service_leaves_traffic_then_its_replicas_go_then_its_status_and_memory() {
    let g = Given::file(WEB2);
    let spec = g.web().spec.clone();
    let stack = Stack {
        name: "s".into(),
        ..Default::default()
    };
    let replicas = [running(&spec, 1), running(&spec, 2)];
    let plan = plan::take_down(&backend(), &stack, "web", Some(g.web()), &replicas, true);
    assert_eq!(
        plan.describe(),
        [
            "unpublish",
            "take down 2 replicas",
            "delete status",
            "forget"
        ]
    );
    let deleting = Stack {
        deletion: Some(Default::default()),
        ..stack
    };
    let plan = plan::take_down(&backend(), &deleting, "web", None, &[], true);
    assert_eq!(
        plan.describe(),
        [
            "unpublish",
            "take down 0 replicas",
            "forget",
            "enqueue stack/s"
        ]
    );
}

/// A stack record of a Compose file, and its services as stored.
fn stack_of(file: &str) -> (Stack, Vec<Arc<Service>>) {
    let parsed = capstan_api::parse_stack("s", file).unwrap();
    let stack = Stack {
        name: "s".into(),
        services: parsed.services.keys().cloned().collect(),
        networks: parsed.networks,
        volumes: parsed.volumes,
        ..Default::default()
    };
    (stack, services(file))
}

/// What the engine holds for the stack, as the stack's observation reads it.
fn held(left: &[&str], networks: &[&str], volumes: &[&str]) -> StackView {
    let owned = |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
    StackView {
        left: owned(left).into_iter().collect(),
        view: Box::new(Held {
            networks: owned(networks),
            volumes: owned(volumes),
        }),
    }
}

const BACKED: &str = "services: {web: {image: web:1, networks: [back], volumes: [data:/d]}}
networks: {back: {}}
volumes: {data: {}}";

#[test]
fn a_live_stack_makes_what_its_services_share_and_removes_the_networks_none_uses() {
    let (stack, services) = stack_of(BACKED);
    let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    let view = held(&[], &["s_back", "s_old"], &[]);
    let plan = plan::plan_stack(&backend(), &stack, &services, &view);
    assert_eq!(
        plan.describe(),
        [
            "ensure network s_back",
            "ensure volume s_data",
            "remove unused network s_old"
        ]
    );
    assert_eq!(plan.next, Action::AwaitChange);
}

#[test]
fn a_deleted_stack_queues_its_services_while_they_run_replicas_and_looks_again() {
    let (mut stack, _) = stack_of(BACKED);
    stack.deletion = Some(Default::default());
    let view = held(&["web"], &["s_back"], &[]);
    let plan = plan::plan_stack(&backend(), &stack, &[], &view);
    assert_eq!(plan.describe(), ["enqueue s/web"]);
    assert_eq!(plan.next, Action::Requeue(Duration::from_secs(1)));
}

#[test]
fn a_deleted_stack_without_replicas_removes_what_they_shared_then_its_records() {
    let (mut stack, _) = stack_of(BACKED);
    stack.deletion = Some(Deletion {
        volumes: true,
        ..Default::default()
    });
    let view = held(&[], &["s_back"], &["s_data"]);
    let plan = plan::plan_stack(&backend(), &stack, &[], &view);
    assert_eq!(
        plan.describe(),
        [
            "remove network s_back",
            "remove volume s_data",
            "remove files of s",
            "finalize deletion"
        ]
    );
}
