//! A service's status, computed from what was observed after acting. Pure.

use capstan_api::object::{
    Condition, HealEvent, ReplicaState, Service, ServiceStatus, RECENT_EVENTS,
};
use std::collections::BTreeMap;

use crate::runtime::{Health, Observed, State};

use super::deps::Gate;
use super::plan::{Plan, RestartHistory};

/// Something that kept a replica from being created or started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub ordinal: u32,
    /// CamelCase: `NameConflict`, `ImageNotFound`, `ExternalMissing`, `EngineError`.
    pub reason: &'static str,
    pub message: String,
}

/// Restarts (within the back-off window) after which a replica that is not ready counts as
/// crash looping.
pub const CRASH_LOOP_RESTARTS: u32 = 2;

pub struct Inputs<'a> {
    pub service: &'a Service,
    /// Containers as listed after acting.
    pub observed: &'a [Observed],
    pub plan: &'a Plan,
    pub gate: &'a Gate,
    pub problems: &'a [Problem],
    pub history: &'a dyn RestartHistory,
    /// Last healthcheck output per ordinal, for unhealthy replicas.
    pub health_output: &'a BTreeMap<u32, String>,
    /// Heal actions of this reconcile, appended to the previous ones.
    pub new_events: Vec<HealEvent>,
    pub previous: Option<&'a ServiceStatus>,
    pub now: &'a str,
}

pub fn compute(i: Inputs) -> ServiceStatus {
    let spec = &i.service.spec;
    let hash = spec.container_hash();
    let desired = spec.replicas;
    let policy = spec.restart_policy();
    let mut replica_states: Vec<ReplicaState> = i
        .observed
        .iter()
        .map(|c| {
            let ordinal = c.ordinal.unwrap_or(0);
            ReplicaState {
                ordinal,
                name: c.name.clone(),
                id: c.id.chars().take(12).collect(),
                state: c.state.name().to_string(),
                health: c.health.name().to_string(),
                updated: c.spec_hash == hash,
                restarts: i.history.total_restarts(ordinal),
            }
        })
        .collect();
    replica_states.sort_by_key(|r| (r.ordinal, r.name.clone()));
    let current = |c: &&Observed| c.ordinal.is_some_and(|n| n >= 1 && n <= desired);
    let running = i
        .observed
        .iter()
        .filter(|c| c.state == State::Running)
        .count() as u32;
    let ready = i
        .observed
        .iter()
        .filter(current)
        .filter(|c| c.is_ready())
        .count() as u32;
    let updated = i
        .observed
        .iter()
        .filter(current)
        .filter(|c| c.spec_hash == hash)
        .count() as u32;
    // A one-shot replica that exited 0 under the current spec is done, not down.
    let completed = i
        .observed
        .iter()
        .filter(current)
        .filter(|c| {
            c.state == State::Exited { code: 0 } && c.spec_hash == hash && !policy.restarts(0, 0)
        })
        .count() as u32;
    let restarts = replica_states
        .iter()
        .filter(|r| r.ordinal >= 1 && r.ordinal <= desired)
        .map(|r| r.restarts)
        .sum();
    let unhealthy: Vec<&Observed> = i
        .observed
        .iter()
        .filter(current)
        .filter(|c| c.health == Health::Unhealthy)
        .collect();
    let existing = i.observed.len() as u32;

    let failed_exit = i.plan.held.iter().find(|(_, code)| **code != 0);
    // A crash loop lasts from the second restart until the replica stays up: also in the
    // moments between a restart and the next failure, so the condition does not flap.
    let crash_loop = i
        .plan
        .backing_off
        .iter()
        .next()
        .map(|(n, left)| (*n, Some(*left)))
        .or_else(|| {
            i.observed
                .iter()
                .filter(current)
                .filter(|c| !c.is_ready())
                .filter_map(|c| c.ordinal)
                .find(|n| i.history.restarts(*n) >= CRASH_LOOP_RESTARTS)
                .map(|n| (n, None))
        });
    let (degraded_reason, degraded_message) = if let Some(p) = i.problems.first() {
        (p.reason, p.message.clone())
    } else if let Gate::Closed {
        reason: "DependencyFailed",
        message,
    } = i.gate
    {
        ("DependencyFailed", message.clone())
    } else if let Some((n, left)) = crash_loop {
        let mut msg = format!(
            "replica {} keeps failing after {} restarts",
            replica_name(i.service, n),
            i.history.restarts(n)
        );
        if let Some(left) = left {
            msg.push_str(&format!("; next restart in {}s", left.as_secs().max(1)));
        }
        if let Some(out) = i.health_output.get(&n) {
            msg.push_str(&format!("; last health check: {out}"));
        }
        ("CrashLoopBackOff", msg)
    } else if let Some((n, code)) = failed_exit {
        (
            "ReplicaExited",
            format!(
                "replica {} exited with code {code} and restart policy {:?} leaves it stopped",
                replica_name(i.service, *n),
                policy
            ),
        )
    } else if let Some(c) = unhealthy.first() {
        let mut msg = format!("replica {} is unhealthy", c.name);
        if let Some(out) = c.ordinal.and_then(|n| i.health_output.get(&n)) {
            msg.push_str(&format!("; last health check: {out}"));
        }
        ("Unhealthy", msg)
    } else {
        ("", String::new())
    };

    let all_ready = ready + completed == desired && updated == desired && existing == desired;
    let mut conditions = vec![];
    let ready_cond = if all_ready && completed == desired && desired > 0 {
        cond(
            "Ready",
            true,
            "Completed",
            format!("{completed}/{desired} replicas completed successfully"),
        )
    } else if all_ready {
        cond(
            "Ready",
            true,
            "AllReplicasReady",
            format!("{ready}/{desired} replicas ready"),
        )
    } else if !degraded_reason.is_empty() {
        cond(
            "Ready",
            false,
            degraded_reason,
            format!("{ready}/{desired} replicas ready: {degraded_message}"),
        )
    } else if let Gate::Closed { reason, message } = i.gate {
        cond("Ready", false, reason, message.clone())
    } else {
        cond(
            "Ready",
            false,
            "ReplicasNotReady",
            format!("{ready}/{desired} replicas ready"),
        )
    };
    conditions.push(ready_cond);
    let progressing = if all_ready {
        cond(
            "Progressing",
            false,
            "Converged",
            "every replica is ready and up to date".into(),
        )
    } else if let Gate::Closed { reason, message } = i.gate {
        cond("Progressing", true, reason, message.clone())
    } else if existing > desired {
        cond(
            "Progressing",
            true,
            "ScalingDown",
            format!("removing {} surplus replica(s)", existing - desired),
        )
    } else if updated < existing.min(desired) {
        cond(
            "Progressing",
            true,
            "RollingUpdate",
            format!("{updated}/{desired} replicas updated"),
        )
    } else if existing < desired {
        cond(
            "Progressing",
            true,
            "ScalingUp",
            format!("{existing}/{desired} replicas exist"),
        )
    } else {
        cond(
            "Progressing",
            true,
            "WaitingForReady",
            format!("{ready}/{desired} replicas ready"),
        )
    };
    conditions.push(progressing);
    conditions.push(if degraded_reason.is_empty() {
        cond("Degraded", false, "AsExpected", String::new())
    } else {
        cond("Degraded", true, degraded_reason, degraded_message)
    });

    // Keep the transition time of a condition whose status did not flip.
    let prev: BTreeMap<&str, &Condition> = i
        .previous
        .map(|p| p.conditions.iter().map(|c| (c.type_.as_str(), c)).collect())
        .unwrap_or_default();
    for c in &mut conditions {
        c.last_transition_time = match prev.get(c.type_.as_str()) {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => i.now.to_string(),
        };
    }

    let mut recent_events = i
        .previous
        .map(|p| p.recent_events.clone())
        .unwrap_or_default();
    recent_events.extend(i.new_events);
    let overflow = recent_events.len().saturating_sub(RECENT_EVENTS);
    recent_events.drain(..overflow);

    ServiceStatus {
        observed_generation: i.service.generation,
        replicas: existing,
        running,
        ready,
        updated,
        restarts,
        completed,
        conditions,
        replica_states,
        recent_events,
    }
}

fn replica_name(svc: &Service, n: u32) -> String {
    capstan_api::names::container(&svc.stack, &svc.name, n)
}

fn cond(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::spec::ServiceSpec;
    use std::time::Duration;

    /// Every replica was restarted this many times.
    struct H(u32);
    impl RestartHistory for H {
        fn restarts(&self, _: u32) -> u32 {
            self.0
        }
        fn backoff_left(&self, _: u32) -> Option<Duration> {
            None
        }
    }

    fn svc(replicas: u32) -> Service {
        Service {
            stack: "s".into(),
            name: "web".into(),
            generation: 4,
            spec: ServiceSpec {
                image: "w".into(),
                replicas,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn obs(svc: &Service, n: u32, health: Health) -> Observed {
        Observed {
            id: format!("abcdef{n}"),
            name: format!("s-web-{n}"),
            stack: "s".into(),
            service: "web".into(),
            ordinal: Some(n),
            spec_hash: svc.spec.container_hash(),
            state: State::Running,
            health,
            created: 0,
            addresses: Default::default(),
            published: Default::default(),
        }
    }

    fn status(
        svc: &Service,
        observed: &[Observed],
        plan: &Plan,
        previous: Option<&ServiceStatus>,
        now: &str,
    ) -> ServiceStatus {
        status_with(svc, observed, plan, previous, now, 2)
    }

    fn status_with(
        svc: &Service,
        observed: &[Observed],
        plan: &Plan,
        previous: Option<&ServiceStatus>,
        now: &str,
        restarts: u32,
    ) -> ServiceStatus {
        compute(Inputs {
            service: svc,
            observed,
            plan,
            gate: &Gate::Open,
            problems: &[],
            history: &H(restarts),
            health_output: &BTreeMap::from([(
                2,
                "wget: server returned error: HTTP/1.1 404 Not Found".to_string(),
            )]),
            new_events: vec![],
            previous,
            now,
        })
    }

    #[test]
    fn a_one_shot_job_that_exited_zero_is_ready_as_completed() {
        let mut s = svc(1);
        s.spec.restart = Some(capstan_api::spec::RestartPolicy::No);
        let mut done = obs(&s, 1, Health::None);
        done.state = State::Exited { code: 0 };
        let st = status(&s, &[done], &Plan::default(), None, "t");
        assert_eq!(st.completed, 1);
        let ready = st.condition("Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Completed")
        );
    }

    #[test]
    fn all_replicas_ready_makes_the_service_ready_at_its_generation() {
        let s = svc(2);
        let st = status(
            &s,
            &[obs(&s, 1, Health::Healthy), obs(&s, 2, Health::None)],
            &Plan::default(),
            None,
            "t1",
        );
        assert_eq!(
            (
                st.observed_generation,
                st.ready,
                st.running,
                st.updated,
                st.restarts
            ),
            (4, 2, 2, 2, 4)
        );
        assert!(st.is_ready());
        assert_eq!(st.condition("Degraded").unwrap().status, "False");
    }

    #[test]
    fn an_unhealthy_replica_degrades_the_service_and_names_it() {
        let s = svc(2);
        let st = status_with(
            &s,
            &[obs(&s, 1, Health::Healthy), obs(&s, 2, Health::Unhealthy)],
            &Plan::default(),
            None,
            "t1",
            0,
        );
        assert!(!st.is_ready());
        let d = st.condition("Degraded").unwrap();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "Unhealthy")
        );
        assert!(d.message.contains("s-web-2"));
        assert!(
            d.message.contains("404 Not Found"),
            "the last health output is in the message: {}",
            d.message
        );
    }

    #[test]
    fn transition_times_only_move_when_a_condition_flips() {
        let s = svc(1);
        let ready = status(
            &s,
            &[obs(&s, 1, Health::None)],
            &Plan::default(),
            None,
            "t1",
        );
        let again = status(
            &s,
            &[obs(&s, 1, Health::None)],
            &Plan::default(),
            Some(&ready),
            "t2",
        );
        assert_eq!(
            again, ready,
            "an unchanged world gives a byte-identical status, so nothing is written"
        );
        let lost = status(&s, &[], &Plan::default(), Some(&ready), "t3");
        assert_eq!(lost.condition("Ready").unwrap().last_transition_time, "t3");
        assert_eq!(lost.condition("Progressing").unwrap().reason, "ScalingUp");
    }

    #[test]
    fn a_crash_loop_stays_degraded_between_a_restart_and_the_next_failure() {
        let s = svc(1);
        let mut starting = obs(&s, 1, Health::Starting);
        starting.state = State::Running;
        let st = status_with(
            &s,
            &[starting.clone()],
            &Plan::default(),
            None,
            "t",
            CRASH_LOOP_RESTARTS,
        );
        assert_eq!(st.condition("Degraded").unwrap().reason, "CrashLoopBackOff");
        let st = status_with(&s, &[starting], &Plan::default(), None, "t", 1);
        assert_eq!(
            st.condition("Degraded").unwrap().status,
            "False",
            "one restart is no loop yet"
        );
    }

    #[test]
    fn crash_loop_back_off_is_reported_as_degraded() {
        let s = svc(1);
        let mut plan = Plan::default();
        plan.backing_off.insert(1, Duration::from_secs(8));
        let st = status(&s, &[], &plan, None, "t");
        let d = st.condition("Degraded").unwrap();
        assert_eq!(d.reason, "CrashLoopBackOff");
        assert!(
            d.message.contains("s-web-1") && d.message.contains("8s"),
            "{}",
            d.message
        );
    }
}
