//! A service's status, computed from what was observed after acting. Pure.

use capstan_api::object::{
    Condition, ConditionType, HealEvent, Reason, ReplicaState, Service, ServiceStatus,
    RECENT_EVENTS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::runtime::{Health, Observed, State};

use super::deps::Gate;

/// Something that kept a replica from being created or started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub ordinal: u32,
    /// `NameConflict`, `ImageNotFound`, `ExternalMissing`, `EngineError`, `PortInUse`.
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    /// The service's image could not be made present (pulled, or allowed to be pulled).
    pub fn is_image(&self) -> bool {
        matches!(
            self.reason,
            Reason::ImagePullBackOff | Reason::ErrImageNeverPull
        )
    }
}

/// Where a service's replicas stand, besides what runs: for the status and the next look.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Replicas waiting out their crash-loop back-off: ordinal → time left.
    pub backing_off: BTreeMap<u32, Duration>,
    /// Unhealthy replicas not yet healthy since they started, within their start-up grace:
    /// ordinal → time left before they are healed.
    pub settling: BTreeMap<u32, Duration>,
    /// Exited replicas the restart policy leaves alone: ordinal → exit code.
    pub held: BTreeMap<u32, i64>,
    /// Dependencies are not met: nothing is created or started.
    pub gated: bool,
    /// A rolling update stopped by `failure_action: pause` (or by a person): why.
    pub paused: Option<String>,
    /// A rolling update that failed under `failure_action: rollback`: which replicas failed.
    pub rollback: Option<String>,
    /// The rollout looks again after this long (a replica's `monitor` or `delay` runs out).
    pub rollout_wait: Option<Duration>,
    /// A sidecar's replicas that wait for their partner's: ordinal → what they wait for.
    pub unpaired: BTreeMap<u32, String>,
    /// Why a start-first update replaces this service's replicas in place, while one does.
    pub in_place: Option<String>,
    /// Replicas the last status listed that are made again: removed behind capstan's back.
    pub vanished: BTreeSet<u32>,
    /// Replicas removed or made behind capstan's back (drift).
    pub changed_outside: u32,
    /// What keeps replicas from being made, known before acting (the image cannot be had).
    pub problems: Vec<Problem>,
}

/// What the planner needs to know of a replica's restart history.
pub trait RestartHistory {
    /// Restarts capstan made of this replica in its current crash-loop window.
    fn restarts(&self, ordinal: u32) -> u32;
    /// Time left before the replica may be restarted again.
    fn backoff_left(&self, ordinal: u32) -> Option<Duration>;
    /// Restarts since the daemon started, for status (RESTARTS).
    fn total_restarts(&self, ordinal: u32) -> u32 {
        self.restarts(ordinal)
    }
    /// Where the replica's back-off stands, for the status (None outside a crash loop).
    fn crash_loop(&self, _ordinal: u32) -> Option<capstan_api::object::CrashLoop> {
        None
    }
    /// For an unhealthy replica: how much of its start-up grace is left, if it has not been
    /// healthy since it started. `None`: it may be healed now.
    fn settling_left(&self, _replica: &Observed, _grace: Duration) -> Option<Duration> {
        None
    }
    /// How long ago the replica was made (a rollout's `monitor` and `delay` count from it).
    fn age(&self, _replica: &Observed) -> Duration {
        Duration::ZERO
    }
}

/// Restarts (within the back-off window) after which a replica that is not ready counts as
/// crash looping.
pub const CRASH_LOOP_RESTARTS: u32 = 2;

pub struct Inputs<'a> {
    pub service: &'a Service,
    /// Containers as listed after acting.
    pub observed: &'a [Observed],
    pub progress: &'a Progress,
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

/// Replica counts, as the status reports them.
struct Counts {
    desired: u32,
    /// Containers that exist, in any state.
    existing: u32,
    running: u32,
    /// Current replicas that are ready.
    ready: u32,
    /// Current replicas with the current spec.
    updated: u32,
    /// One-shot current replicas that exited 0 under the current spec.
    completed: u32,
    /// Start-first successors running next to the replicas they replace: counted apart,
    /// none of the above.
    successors: u32,
}

impl Counts {
    fn of(i: &Inputs) -> Counts {
        let spec = &i.service.spec;
        let hash = spec.container_hash();
        let policy = spec.restart_policy();
        let (stack, service) = (&i.service.stack, &i.service.name);
        let (successors, replicas): (Vec<&Observed>, Vec<&Observed>) =
            i.observed.iter().partition(|c| {
                (c.ordinal).is_some_and(|n| c.name == spec.successor_name(stack, service, n))
            });
        let current: Vec<&Observed> = (replicas.iter().copied())
            .filter(|c| spec.is_current(c.ordinal))
            .collect();
        let count = |f: &dyn Fn(&Observed) -> bool| current.iter().filter(|c| f(c)).count() as u32;
        Counts {
            desired: spec.replicas,
            existing: replicas.len() as u32,
            running: (replicas.iter())
                .filter(|c| c.state == State::Running)
                .count() as u32,
            ready: count(&|c| c.is_ready()),
            updated: count(&|c| c.spec_hash == hash),
            // A one-shot replica that exited 0 under the current spec is done, not down.
            completed: count(&|c| {
                c.state == State::Exited { code: 0 }
                    && c.spec_hash == hash
                    && !policy.restarts(0, 0)
            }),
            successors: successors.len() as u32,
        }
    }

    /// Every desired replica exists, runs the current spec, and is ready or completed.
    fn all_ready(&self) -> bool {
        self.ready + self.completed == self.desired
            && self.updated == self.desired
            && self.existing == self.desired
            && self.successors == 0
    }
}

pub fn compute(i: Inputs) -> ServiceStatus {
    let counts = Counts::of(&i);
    let degraded = degraded(&i);
    let gate = &paired_gate(i.gate, i.progress);
    let mut conditions = vec![
        ready_condition(&counts, degraded.as_ref(), gate),
        progressing_condition(&counts, gate, i.progress, i.service.rolled_back.is_some()),
        match &degraded {
            None => Condition::new(
                ConditionType::Degraded,
                false,
                Reason::AsExpected,
                String::new(),
            ),
            Some((reason, message)) => {
                Condition::new(ConditionType::Degraded, true, *reason, message.clone())
            }
        },
    ];
    keep_transition_times(&mut conditions, i.previous, i.now);
    let replica_states = replica_states(&i);
    let restarts = replica_states
        .iter()
        .filter(|r| i.service.spec.is_current(Some(r.ordinal)))
        .map(|r| r.restarts)
        .sum();
    let mut recent_events = i
        .previous
        .map(|p| p.recent_events.clone())
        .unwrap_or_default();
    recent_events.extend(i.new_events);
    let overflow = recent_events.len().saturating_sub(RECENT_EVENTS);
    recent_events.drain(..overflow);
    ServiceStatus {
        observed_generation: i.service.generation,
        replicas: counts.existing,
        running: counts.running,
        ready: counts.ready,
        updated: counts.updated,
        restarts,
        completed: counts.completed,
        conditions,
        replica_states,
        recent_events,
    }
}

/// A sidecar whose replicas wait for their partners' reads as a closed gate.
fn paired_gate(gate: &Gate, progress: &Progress) -> Gate {
    match progress.unpaired.iter().next() {
        Some((n, why)) if gate.is_open() => Gate::Closed {
            reason: Reason::WaitingForPartner,
            message: format!(
                "replica {n} waits for {why}{}",
                match progress.unpaired.len() {
                    1 => String::new(),
                    more => format!(" (and {} more replicas wait for theirs)", more - 1),
                }
            ),
        },
        _ => gate.clone(),
    }
}

fn replica_states(i: &Inputs) -> Vec<ReplicaState> {
    let hash = i.service.spec.container_hash();
    let mut states: Vec<ReplicaState> = i
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
                crash_loop: i.history.crash_loop(ordinal),
            }
        })
        .collect();
    states.sort_by_key(|r| (r.ordinal, r.name.clone()));
    states
}

/// What is wrong, if anything, most pressing first: a replica that could not be made, a
/// failed one-shot dependency, a crash loop, a replica left exited, an unhealthy one.
fn degraded(i: &Inputs) -> Option<(Reason, String)> {
    let spec = &i.service.spec;
    if let Some(p) = i.problems.first() {
        return Some((p.reason, p.message.clone()));
    }
    if let Some(r) = &i.service.rolled_back {
        return Some((Reason::RolledBack, r.message.clone()));
    }
    if let Gate::Closed {
        reason: Reason::DependencyFailed,
        message,
    } = i.gate
    {
        return Some((Reason::DependencyFailed, message.clone()));
    }
    if let Some((n, left)) = crash_loop(i) {
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
        return Some((Reason::CrashLoopBackOff, msg));
    }
    if let Some((n, code)) = i.progress.held.iter().find(|(_, code)| **code != 0) {
        let message = format!(
            "replica {} exited with code {code} and restart policy {:?} leaves it stopped",
            replica_name(i.service, *n),
            spec.restart_policy()
        );
        return Some((Reason::ReplicaExited, message));
    }
    let unhealthy = i
        .observed
        .iter()
        .filter(|c| spec.is_current(c.ordinal))
        .find(|c| c.health == Health::Unhealthy)?;
    let mut msg = format!("replica {} is unhealthy", unhealthy.name);
    if let Some(out) = unhealthy.ordinal.and_then(|n| i.health_output.get(&n)) {
        msg.push_str(&format!("; last health check: {out}"));
    }
    Some((Reason::Unhealthy, msg))
}

/// The replica in a crash loop, with the back-off left if it is waiting. A crash loop lasts
/// from the second restart until the replica stays up: also in the moments between a
/// restart and the next failure, so the condition does not flap.
fn crash_loop(i: &Inputs) -> Option<(u32, Option<std::time::Duration>)> {
    if let Some((n, left)) = i.progress.backing_off.iter().next() {
        return Some((*n, Some(*left)));
    }
    i.observed
        .iter()
        .filter(|c| i.service.spec.is_current(c.ordinal) && !c.is_ready())
        .filter_map(|c| c.ordinal)
        .find(|n| i.history.restarts(*n) >= CRASH_LOOP_RESTARTS)
        .map(|n| (n, None))
}

fn ready_condition(c: &Counts, degraded: Option<&(Reason, String)>, gate: &Gate) -> Condition {
    let (desired, ready, completed) = (c.desired, c.ready, c.completed);
    let (status, reason, message) = if c.all_ready() && completed == desired && desired > 0 {
        (
            true,
            Reason::Completed,
            format!("{completed}/{desired} replicas completed successfully"),
        )
    } else if c.all_ready() {
        (
            true,
            Reason::AllReplicasReady,
            format!("{ready}/{desired} replicas ready"),
        )
    } else if let Some((reason, message)) = degraded {
        (
            false,
            *reason,
            format!("{ready}/{desired} replicas ready: {message}"),
        )
    } else if let Gate::Closed { reason, message } = gate {
        (false, *reason, message.clone())
    } else {
        (
            false,
            Reason::ReplicasNotReady,
            format!("{ready}/{desired} replicas ready"),
        )
    };
    Condition::new(ConditionType::Ready, status, reason, message)
}

fn progressing_condition(
    c: &Counts,
    gate: &Gate,
    progress: &Progress,
    rolling_back: bool,
) -> Condition {
    let (desired, existing, updated) = (c.desired, c.existing, c.updated);
    let paused = progress.paused.as_deref();
    let how = match (c.successors, &progress.in_place) {
        (0, None) => String::new(),
        (0, Some(why)) => format!("; replaced in place (stop-first): {why}"),
        (n, _) => format!("; {n} successor(s) starting next to the replicas they replace"),
    };
    let (status, reason, message) = if c.all_ready() {
        (
            false,
            Reason::Converged,
            "every replica is ready and up to date".to_string(),
        )
    } else if let Gate::Closed { reason, message } = gate {
        (true, *reason, message.clone())
    } else if let Some(failed) = paused {
        (
            true,
            Reason::Paused,
            format!(
                "rollout paused at {updated}/{desired} replicas updated ({} ready): {failed}",
                c.ready
            ),
        )
    } else if existing > desired {
        (
            true,
            Reason::ScalingDown,
            format!("removing {} surplus replica(s)", existing - desired),
        )
    } else if updated < existing.min(desired) && rolling_back {
        (
            true,
            Reason::RollbackInProgress,
            format!(
                "{updated}/{desired} replicas rolled back, {} ready{how}",
                c.ready
            ),
        )
    } else if updated < existing.min(desired) {
        (
            true,
            Reason::RollingUpdate,
            format!(
                "{updated}/{desired} replicas updated, {} ready{how}",
                c.ready
            ),
        )
    } else if existing < desired {
        (
            true,
            Reason::ScalingUp,
            format!("{existing}/{desired} replicas exist"),
        )
    } else {
        (
            true,
            Reason::WaitingForReady,
            format!("{}/{desired} replicas ready", c.ready),
        )
    };
    Condition::new(ConditionType::Progressing, status, reason, message)
}

/// Keeps the transition time of a condition whose status did not flip.
/// The status while the engine does not answer: the last one, no replica counted ready,
/// and `Ready`/`Degraded` saying why. Nothing else is known until the engine answers.
pub fn engine_unreachable(previous: Option<&ServiceStatus>, now: &str) -> ServiceStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.ready = 0;
    let why = "the Docker engine does not answer: the replicas cannot be observed or healed until it does";
    let mut conditions = vec![
        Condition::new(
            ConditionType::Ready,
            false,
            Reason::EngineUnreachable,
            why.into(),
        ),
        Condition::new(
            ConditionType::Degraded,
            true,
            Reason::EngineUnreachable,
            why.into(),
        ),
    ];
    conditions.extend(
        status
            .conditions
            .iter()
            .filter(|c| c.type_ == ConditionType::Progressing.as_str())
            .cloned(),
    );
    keep_transition_times(&mut conditions, previous, now);
    status.conditions = conditions;
    status
}

/// The status while the image is pulled: the previous one, with `Progressing` (and `Ready`,
/// unless replicas are ready) saying `PullingImage`, the image and its `pull_policy`.
pub fn pulling(
    previous: Option<&ServiceStatus>,
    image: &str,
    policy: &str,
    desired: u32,
    now: &str,
) -> ServiceStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let message = format!("pulling image {image} (pull_policy {policy})");
    let kept = |type_: ConditionType| status.condition(type_).cloned();
    let ready = match previous.is_some_and(ServiceStatus::is_ready) {
        true => kept(ConditionType::Ready),
        false => Some(Condition::new(
            ConditionType::Ready,
            false,
            Reason::PullingImage,
            format!("{}/{desired} replicas ready: {message}", status.ready),
        )),
    };
    let progressing = Condition::new(
        ConditionType::Progressing,
        true,
        Reason::PullingImage,
        message,
    );
    let others = (status.conditions.iter())
        .filter(|c| {
            c.type_ != ConditionType::Ready.as_str()
                && c.type_ != ConditionType::Progressing.as_str()
        })
        .cloned();
    let mut conditions: Vec<Condition> = ready
        .into_iter()
        .chain([progressing])
        .chain(others)
        .collect();
    keep_transition_times(&mut conditions, previous, now);
    status.conditions = conditions;
    status
}

fn keep_transition_times(
    conditions: &mut [Condition],
    previous: Option<&ServiceStatus>,
    now: &str,
) {
    let prev: BTreeMap<&str, &Condition> = previous
        .map(|p| p.conditions.iter().map(|c| (c.type_.as_str(), c)).collect())
        .unwrap_or_default();
    for c in conditions {
        c.last_transition_time = match prev.get(c.type_.as_str()) {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => now.to_string(),
        };
    }
}

fn replica_name(svc: &Service, n: u32) -> String {
    svc.spec.replica_name(&svc.stack, &svc.name, n)
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
            partners: None,
        }
    }

    fn status(
        svc: &Service,
        observed: &[Observed],
        progress: &Progress,
        previous: Option<&ServiceStatus>,
        now: &str,
    ) -> ServiceStatus {
        status_with(svc, observed, progress, previous, now, 2)
    }

    fn status_with(
        svc: &Service,
        observed: &[Observed],
        progress: &Progress,
        previous: Option<&ServiceStatus>,
        now: &str,
        restarts: u32,
    ) -> ServiceStatus {
        compute(Inputs {
            service: svc,
            observed,
            progress,
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
        let st = status(&s, &[done], &Progress::default(), None, "t");
        assert_eq!(st.completed, 1);
        let ready = st.condition(ConditionType::Ready).unwrap();
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
            &Progress::default(),
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
        assert_eq!(
            st.condition(ConditionType::Degraded).unwrap().status,
            "False"
        );
    }

    #[test]
    fn an_unhealthy_replica_degrades_the_service_and_names_it() {
        let s = svc(2);
        let st = status_with(
            &s,
            &[obs(&s, 1, Health::Healthy), obs(&s, 2, Health::Unhealthy)],
            &Progress::default(),
            None,
            "t1",
            0,
        );
        assert!(!st.is_ready());
        let d = st.condition(ConditionType::Degraded).unwrap();
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
            &Progress::default(),
            None,
            "t1",
        );
        let again = status(
            &s,
            &[obs(&s, 1, Health::None)],
            &Progress::default(),
            Some(&ready),
            "t2",
        );
        assert_eq!(
            again, ready,
            "an unchanged world gives a byte-identical status, so nothing is written"
        );
        let lost = status(&s, &[], &Progress::default(), Some(&ready), "t3");
        assert_eq!(
            lost.condition(ConditionType::Ready)
                .unwrap()
                .last_transition_time,
            "t3"
        );
        assert_eq!(
            lost.condition(ConditionType::Progressing).unwrap().reason,
            "ScalingUp"
        );
    }

    #[test]
    fn a_crash_loop_stays_degraded_between_a_restart_and_the_next_failure() {
        let s = svc(1);
        let mut starting = obs(&s, 1, Health::Starting);
        starting.state = State::Running;
        let st = status_with(
            &s,
            &[starting.clone()],
            &Progress::default(),
            None,
            "t",
            CRASH_LOOP_RESTARTS,
        );
        assert_eq!(
            st.condition(ConditionType::Degraded).unwrap().reason,
            "CrashLoopBackOff"
        );
        let st = status_with(&s, &[starting], &Progress::default(), None, "t", 1);
        assert_eq!(
            st.condition(ConditionType::Degraded).unwrap().status,
            "False",
            "one restart is no loop yet"
        );
    }

    #[test]
    fn crash_loop_back_off_is_reported_as_degraded() {
        let s = svc(1);
        let mut progress = Progress::default();
        progress.backing_off.insert(1, Duration::from_secs(8));
        let st = status(&s, &[], &progress, None, "t");
        let d = st.condition(ConditionType::Degraded).unwrap();
        assert_eq!(d.reason, "CrashLoopBackOff");
        assert!(
            d.message.contains("s-web-1") && d.message.contains("8s"),
            "{}",
            d.message
        );
    }

    #[test]
    fn the_pulling_status_names_the_image_and_keeps_the_rest() {
        let s = pulling(None, "r:5000/web:1", "missing", 2, "t0");
        let progressing = s.condition(ConditionType::Progressing).unwrap();
        assert_eq!(progressing.reason, "PullingImage");
        assert!(progressing.message.contains("r:5000/web:1"));
        assert_eq!(
            s.condition(ConditionType::Ready).unwrap().reason,
            "PullingImage"
        );

        let mut ready = ServiceStatus::default();
        ready.conditions.push(Condition::new(
            ConditionType::Ready,
            true,
            Reason::AllReplicasReady,
            "2/2".into(),
        ));
        let s = pulling(Some(&ready), "web:2", "always", 2, "t1");
        assert!(s.is_ready(), "a rollout's old replicas still serve");
        assert_eq!(
            s.condition(ConditionType::Progressing)
                .unwrap()
                .last_transition_time,
            "t1"
        );
    }
}
