//! A second backend plugs into the loop without changing its service-level parts. This one
//! manages whole services, as an orchestrator's `service update` does (Swarm's, next): its
//! unit of work is the service, not the replica. When the replicas differ from the spec in
//! any way, one step replaces them all at once. It runs over the fake engine's containers
//! only to have something to run; the loop's desired state, dependency gates, status and
//! conditions, endpoints and metrics are the ones the container backend uses.

mod fixture;

use async_trait::async_trait;
use capstan_api::object::{Service, Stack};
use capstan_controller::controller::BackendFactory;
use capstan_controller::reconcile::backend::{
    Backend, Done, Env, Mode, Observation, Proposal, Shared, StackView, View, Work,
};
use capstan_controller::reconcile::containers::{shape, ContainerBackend};
use capstan_controller::reconcile::memory::ServiceMemory;
use capstan_controller::reconcile::ReconcileError;
use capstan_controller::runtime::fake::Call;
use fixture::*;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// A whole service's work: its replicas replaced by `replicas` of the current spec.
#[derive(Debug)]
enum ServiceWork {
    Update {
        replicas: u32,
        removed: Vec<String>,
    },
    Remove {
        stack: String,
        service: String,
        ids: Vec<String>,
    },
}

impl Work for ServiceWork {
    fn describe(&self) -> String {
        match self {
            ServiceWork::Update { replicas, .. } => format!("update service to {replicas}"),
            ServiceWork::Remove { service, .. } => format!("remove service {service}"),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Runs each service as one unit; lists its replicas through the engine's reflector.
struct Services(Arc<ContainerBackend>);

#[async_trait]
impl Backend for Services {
    async fn replicas(
        &self,
        stack: &str,
        service: &str,
        fresh: bool,
    ) -> Result<Vec<Observed>, ReconcileError> {
        self.0.replicas(stack, service, fresh).await
    }

    async fn observe(
        &self,
        _: &Env<'_>,
        _: &Stack,
        _: &Service,
        _: &[Observed],
    ) -> Result<View, ReconcileError> {
        Ok(Box::new(()))
    }

    fn propose(&self, obs: &Observation, _: &ServiceMemory, mode: Mode) -> Proposal {
        let spec = &obs.service.spec;
        let hash = spec.container_hash();
        let fine = |c: &Observed| c.spec_hash == hash && c.state == State::Running;
        let converged =
            obs.replicas.len() == spec.replicas as usize && obs.replicas.iter().all(fine);
        if converged || mode == Mode::HealOnly || !obs.gate.is_open() {
            return Proposal::default();
        }
        let removed: Vec<String> = obs.replicas.iter().map(|c| c.id.clone()).collect();
        Proposal {
            leaving: removed.iter().cloned().collect(),
            work: vec![Box::new(ServiceWork::Update {
                replicas: spec.replicas,
                removed,
            })],
            ..Default::default()
        }
    }

    async fn execute(
        &self,
        _: &Env<'_>,
        obs: &Observation,
        work: &[&dyn Work],
    ) -> Result<Done, ReconcileError> {
        let runtime = &self.0.runtime;
        for w in work {
            let Some(ServiceWork::Update { replicas, removed }) = w.as_any().downcast_ref() else {
                continue;
            };
            for id in removed {
                let gone = runtime.remove(id, Duration::ZERO).await;
                gone.map_err(|source| ReconcileError::Remove {
                    name: id.clone(),
                    source,
                })?;
            }
            for n in 1..=*replicas {
                let container = shape::container(&obs.stack, &obs.service, n);
                let id = runtime.create(&container).await;
                let id = id.map_err(ReconcileError::List)?;
                runtime.start(&id).await.map_err(ReconcileError::List)?;
            }
        }
        Ok(Done::default())
    }

    fn take_down(
        &self,
        stack: &str,
        service: &str,
        replicas: &[Observed],
        _: Duration,
    ) -> Box<dyn Work> {
        Box::new(ServiceWork::Remove {
            stack: stack.into(),
            service: service.into(),
            ids: replicas.iter().map(|c| c.id.clone()).collect(),
        })
    }

    async fn take_down_now(&self, _: &Env<'_>, work: &dyn Work) -> Result<(), ReconcileError> {
        if let Some(ServiceWork::Remove {
            stack,
            service,
            ids,
        }) = work.as_any().downcast_ref()
        {
            for id in ids {
                let gone = self.0.runtime.remove(id, Duration::ZERO).await;
                gone.map_err(ReconcileError::List)?;
            }
            self.0.replicas(stack, service, true).await?;
        }
        Ok(())
    }

    async fn observe_stack(&self, stack: &Stack) -> Result<StackView, ReconcileError> {
        self.0.observe_stack(stack).await
    }

    fn propose_stack(
        &self,
        stack: &Stack,
        shared: Shared<'_>,
        view: &StackView,
    ) -> Vec<Box<dyn Work>> {
        self.0.propose_stack(stack, shared, view)
    }

    async fn execute_stack(&self, work: &[&dyn Work]) -> Result<bool, ReconcileError> {
        self.0.execute_stack(work).await
    }
}

async fn start() -> Fixture {
    let make: BackendFactory = BackendFactory(Arc::new(|engine| Arc::new(Services(engine))));
    Fixture::start_with(Options {
        backend: Some(make),
        ..Options::default()
    })
    .await
}

const WEB: &str = "services:\n  db:\n    image: db:1\n  web:\n    image: web:1\n    ports: [\"8080:80\"]\n    depends_on: [db]\n    deploy: {replicas: 3}\n";

#[tokio::test(start_paused = true)]
async fn a_services_backend_converges_a_stack_with_the_loops_own_status_and_gates() {
    let f = start().await;
    f.apply(WEB).await;
    f.until_converged(STACK, "db", 1).await;
    f.until_converged(STACK, "web", 3).await;
    let (reason, message) = f.condition(STACK, "web", "Ready").await;
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("AllReplicasReady", "3/3 replicas ready")
    );
    let created: Vec<String> = f.targets(|c| matches!(c, Call::Create { .. }));
    assert_eq!(
        created.len(),
        4,
        "one per replica, made by the service's one update"
    );
}

#[tokio::test(start_paused = true)]
async fn a_services_backend_replaces_a_whole_service_on_a_change_and_forgets_it_on_delete() {
    let f = start().await;
    f.apply(WEB).await;
    f.until_converged(STACK, "web", 3).await;
    f.apply(&WEB.replace("web:1", "web:2")).await;
    f.until_converged(STACK, "web", 3).await;
    let (reason, _) = f.condition(STACK, "web", "Progressing").await;
    assert_eq!(reason, "Converged", "the rollout is over");

    f.delete(STACK, false).await;
    f.until("the stack's keys to be gone", || {
        f.daemon.desired.stack(STACK).is_none()
    })
    .await;
    f.settle().await;
    assert!(f.fake.containers().is_empty());
    let left = f.daemon.context().memory.remembered();
    assert_eq!(left, 0, "no service memory is left behind");
}
