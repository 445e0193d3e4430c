//! `depends_on`: whether a service's dependencies meet their conditions now. Pure; asked on
//! every reconcile, so startup order holds after a daemon restart or a host reboot too.

use capstan_api::object::{Reason, Service};
use capstan_api::spec::{DependencyCondition, RestartPolicy, ServiceSpec};

use crate::runtime::{Observed, State};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Every dependency meets its condition: replicas may be created and started.
    Open,
    /// Not yet: `reason` is [`Reason::WaitingForDependencies`], or
    /// [`Reason::DependencyFailed`] when a one-shot dependency failed for good.
    Closed { reason: Reason, message: String },
}

impl Gate {
    pub fn is_open(&self) -> bool {
        matches!(self, Gate::Open)
    }
}

/// What is known of one dependency: its record (if the stack has it) and its containers.
pub struct DependencyState<'a> {
    pub name: &'a str,
    pub service: Option<&'a Service>,
    pub observed: &'a [Observed],
}

pub fn gate(spec: &ServiceSpec, deps: &[DependencyState]) -> Gate {
    let mut waiting = vec![];
    for dep in deps {
        let Some(d) = spec.depends_on.get(dep.name) else {
            continue;
        };
        let Some(svc) = dep.service else {
            if d.required {
                waiting.push(format!("service {} is not in the stack", dep.name));
            }
            continue;
        };
        let desired = svc.spec.replicas;
        let hash = svc.spec.container_hash();
        let current: Vec<&Observed> = dep
            .observed
            .iter()
            .filter(|c| svc.spec.is_current(c.ordinal))
            .collect();
        let succeeded = current
            .iter()
            .filter(|c| c.state == State::Exited { code: 0 } && c.spec_hash == hash)
            .count() as u32;
        let running = current.iter().filter(|c| c.state == State::Running).count() as u32;
        let ready = current.iter().filter(|c| c.is_ready()).count() as u32;
        match d.condition {
            DependencyCondition::ServiceStarted if running + succeeded < desired => {
                waiting.push(format!(
                    "{} to start ({running}/{desired} running)",
                    dep.name
                ));
            }
            DependencyCondition::ServiceHealthy if ready < desired => {
                waiting.push(format!(
                    "{} to be healthy ({ready}/{desired} ready)",
                    dep.name
                ));
            }
            DependencyCondition::ServiceCompletedSuccessfully if succeeded < desired => {
                let failed = current.iter().find_map(|c| match c.state {
                    State::Exited { code }
                        if code != 0 && svc.spec.restart_policy() == RestartPolicy::No =>
                    {
                        Some((c.name.clone(), code))
                    }
                    _ => None,
                });
                if let Some((replica, code)) = failed {
                    return Gate::Closed {
                        reason: Reason::DependencyFailed,
                        message: format!("{} did not complete successfully: {replica} exited with code {code}; fix it and apply again", dep.name),
                    };
                }
                waiting.push(format!(
                    "{} to complete successfully ({succeeded}/{desired} completed)",
                    dep.name
                ));
            }
            _ => {}
        }
    }
    if waiting.is_empty() {
        Gate::Open
    } else {
        Gate::Closed {
            reason: Reason::WaitingForDependencies,
            message: format!("waiting for {}", waiting.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Health;
    use capstan_api::spec::Dependency;

    fn svc(name: &str, replicas: u32, restart: Option<RestartPolicy>) -> Service {
        Service {
            stack: "s".into(),
            name: name.into(),
            spec: ServiceSpec {
                image: "x".into(),
                replicas,
                restart,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn obs(svc: &Service, n: u32, state: State, health: Health) -> Observed {
        Observed {
            id: format!("{}{n}", svc.name),
            name: format!("s-{}-{n}", svc.name),
            stack: "s".into(),
            service: svc.name.clone(),
            ordinal: Some(n),
            spec_hash: svc.spec.container_hash(),
            state,
            health,
            created: 0,
            addresses: Default::default(),
            published: Default::default(),
            partners: None,
        }
    }

    fn app(dep: &str, condition: DependencyCondition) -> ServiceSpec {
        let mut spec = ServiceSpec {
            image: "x".into(),
            replicas: 1,
            ..Default::default()
        };
        spec.depends_on.insert(
            dep.into(),
            Dependency {
                condition,
                required: true,
                restart: false,
            },
        );
        spec
    }

    #[test]
    fn service_healthy_waits_for_every_replica_to_be_ready() {
        let db = svc("db", 2, None);
        let spec = app("db", DependencyCondition::ServiceHealthy);
        let one = [
            obs(&db, 1, State::Running, Health::Healthy),
            obs(&db, 2, State::Running, Health::Starting),
        ];
        let g = gate(
            &spec,
            &[DependencyState {
                name: "db",
                service: Some(&db),
                observed: &one,
            }],
        );
        assert_eq!(
            g,
            Gate::Closed {
                reason: Reason::WaitingForDependencies,
                message: "waiting for db to be healthy (1/2 ready)".into()
            }
        );
        let both = [
            obs(&db, 1, State::Running, Health::Healthy),
            obs(&db, 2, State::Running, Health::Healthy),
        ];
        assert!(gate(
            &spec,
            &[DependencyState {
                name: "db",
                service: Some(&db),
                observed: &both
            }]
        )
        .is_open());
    }

    #[test]
    fn service_started_accepts_running_or_completed_replicas() {
        let db = svc("db", 1, None);
        let spec = app("db", DependencyCondition::ServiceStarted);
        assert!(!gate(
            &spec,
            &[DependencyState {
                name: "db",
                service: Some(&db),
                observed: &[]
            }]
        )
        .is_open());
        let up = [obs(&db, 1, State::Running, Health::Starting)];
        assert!(gate(
            &spec,
            &[DependencyState {
                name: "db",
                service: Some(&db),
                observed: &up
            }]
        )
        .is_open());
    }

    #[test]
    fn a_completed_migration_opens_the_gate_and_a_failed_one_holds_it_with_a_reason() {
        let migrate = svc("migrate", 1, Some(RestartPolicy::No));
        let spec = app("migrate", DependencyCondition::ServiceCompletedSuccessfully);
        let running = [obs(&migrate, 1, State::Running, Health::None)];
        assert!(!gate(
            &spec,
            &[DependencyState {
                name: "migrate",
                service: Some(&migrate),
                observed: &running
            }]
        )
        .is_open());
        let done = [obs(&migrate, 1, State::Exited { code: 0 }, Health::None)];
        assert!(gate(
            &spec,
            &[DependencyState {
                name: "migrate",
                service: Some(&migrate),
                observed: &done
            }]
        )
        .is_open());
        let failed = [obs(&migrate, 1, State::Exited { code: 3 }, Health::None)];
        match gate(
            &spec,
            &[DependencyState {
                name: "migrate",
                service: Some(&migrate),
                observed: &failed,
            }],
        ) {
            Gate::Closed { reason, message } => {
                assert_eq!(reason, Reason::DependencyFailed);
                assert!(
                    message.contains("s-migrate-1 exited with code 3"),
                    "{message}"
                );
            }
            Gate::Open => panic!("a failed migration must hold its dependents"),
        }
    }

    #[test]
    fn a_completion_under_an_old_spec_does_not_count() {
        let old = svc("migrate", 1, Some(RestartPolicy::No));
        let mut new = old.clone();
        new.spec.image = "y".into();
        let spec = app("migrate", DependencyCondition::ServiceCompletedSuccessfully);
        let done_old = [obs(&old, 1, State::Exited { code: 0 }, Health::None)];
        assert!(!gate(
            &spec,
            &[DependencyState {
                name: "migrate",
                service: Some(&new),
                observed: &done_old
            }]
        )
        .is_open());
    }

    #[test]
    fn an_optional_dependency_that_is_absent_is_ignored() {
        let mut spec = app("cache", DependencyCondition::ServiceStarted);
        spec.depends_on.get_mut("cache").unwrap().required = false;
        assert!(gate(
            &spec,
            &[DependencyState {
                name: "cache",
                service: None,
                observed: &[]
            }]
        )
        .is_open());
    }
}
