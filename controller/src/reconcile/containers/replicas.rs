//! What to do to one service's containers, decided from its spec, the containers observed
//! and their restart history. Pure: the same inputs always give the same changes, and
//! nothing here touches the engine.

pub use capstan_api::object::{HealAction, HealCause};
use capstan_api::spec::{FailureAction, ServiceSpec, UpdateOrder};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::reconcile::status::Progress;
use crate::reconcile::status::RestartHistory;
use crate::runtime::{Health, Observed, State};

/// Why a replica is stopped and removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its ordinal is above the replica count.
    Surplus,
    /// Not a proper replica: no or duplicate ordinal.
    Stray,
    /// A start-first successor no longer wanted: the spec changed again, or was rolled back.
    Superseded,
}

/// An unhealthy replica restarted this many times in its back-off window is replaced instead.
pub const REPLACE_UNHEALTHY_AFTER: u32 = 2;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Highest ordinal first.
    pub remove: Vec<(Observed, RemoveReason)>,
    /// Ordinals to create and start.
    pub create: Vec<u32>,
    /// Created but never started (e.g. an interrupted reconcile): start.
    pub start: Vec<Observed>,
    /// Exited (and the restart policy says go) or unhealthy.
    pub heal: Vec<(Observed, HealCause, HealAction)>,
    /// Outdated (spec hash differs) or dead: remove, then create anew.
    pub recreate: Vec<Observed>,
    /// Start-first: ordinals whose successor to make next to the outdated replica.
    pub surge: Vec<u32>,
    /// Successors that take over: the replica they replace (drained and removed first,
    /// `None` when it is gone already), and the successor, renamed to the replica's name.
    pub promote: Vec<(Option<Observed>, Observed)>,
    /// Where the replicas stand: back-off, grace, held exits, the gate, the rollout.
    pub progress: Progress,
}

impl Changes {
    /// Whether nothing is to be done to any container.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.create.is_empty()
            && self.start.is_empty()
            && self.heal.is_empty()
            && self.recreate.is_empty()
            && self.surge.is_empty()
            && self.promote.is_empty()
    }

    /// Whether a container is to be made: created, made anew, or made as a successor.
    pub fn makes(&self) -> bool {
        !self.create.is_empty()
            || !self.recreate.is_empty()
            || !self.surge.is_empty()
            || self.heal.iter().any(|(_, _, a)| *a == HealAction::Replace)
    }

    /// The containers about to be stopped, replaced or restarted: out of traffic first.
    pub fn leaving(&self) -> std::collections::BTreeSet<String> {
        (self.remove.iter().map(|(c, _)| c))
            .chain(self.recreate.iter())
            .chain(self.promote.iter().filter_map(|(c, _)| c.as_ref()))
            .chain(self.heal.iter().map(|(c, _, _)| c))
            .map(|c| c.id.clone())
            .collect()
    }

    /// Containers removed because they are no proper replica: made behind capstan's back.
    pub fn strays(&self) -> u32 {
        let strays = self
            .remove
            .iter()
            .filter(|(_, r)| *r == RemoveReason::Stray);
        strays.count() as u32
    }
}

/// Whether a replica may have to be made: false only when exactly the desired replicas
/// run, under their names, with the current spec, and none is unhealthy. The image is
/// looked at only then.
pub fn may_make(stack: &str, service: &str, spec: &ServiceSpec, observed: &[Observed]) -> bool {
    let hash = spec.container_hash();
    let fine = |c: &Observed| {
        c.ordinal
            .is_some_and(|n| c.name == spec.replica_name(stack, service, n))
            && c.spec_hash == hash
            && c.state == State::Running
            && c.health != Health::Unhealthy
    };
    observed.len() != spec.replicas as usize || !observed.iter().all(fine)
}

/// The service's containers by ordinal.
#[derive(Default)]
struct Sorted<'a> {
    /// The container with the replica's name, one per ordinal.
    replicas: BTreeMap<u32, &'a Observed>,
    /// Start-first successors (`<replica>-next`) of current ordinals, of the current spec.
    successors: BTreeMap<u32, &'a Observed>,
}

/// One container per ordinal: the one with the deterministic name, and at most one
/// successor of the current spec; any other is a stray to remove, a successor of an
/// earlier spec is superseded, and every replica above the count is surplus (highest
/// ordinal first).
fn sort_out<'a>(
    stack: &str,
    service: &str,
    spec: &ServiceSpec,
    observed: &'a [Observed],
    plan: &mut Changes,
) -> Sorted<'a> {
    let hash = spec.container_hash();
    let mut sorted = Sorted::default();
    for c in observed {
        match c.ordinal {
            Some(n)
                if c.name == spec.replica_name(stack, service, n)
                    && !sorted.replicas.contains_key(&n) =>
            {
                sorted.replicas.insert(n, c);
            }
            Some(n) if c.name == spec.successor_name(stack, service, n) => {
                if spec.is_current(Some(n))
                    && c.spec_hash == hash
                    && !sorted.successors.contains_key(&n)
                {
                    sorted.successors.insert(n, c);
                } else {
                    plan.remove.push((c.clone(), RemoveReason::Superseded));
                }
            }
            _ => plan.remove.push((c.clone(), RemoveReason::Stray)),
        }
    }
    let surplus = sorted.replicas.range(spec.replicas + 1..).rev();
    plan.remove
        .extend(surplus.map(|(_, c)| ((*c).clone(), RemoveReason::Surplus)));
    sorted
}

/// A current, up-to-date replica: started if never started, restarted per the restart
/// policy and its crash-loop back-off if it exited, restarted (then replaced) if unhealthy.
fn heal_or_hold(
    plan: &mut Changes,
    c: &Observed,
    spec: &ServiceSpec,
    history: &dyn RestartHistory,
) {
    let Some(n) = c.ordinal else { return };
    let policy = spec.restart_policy();
    match (c.state, c.health) {
        (State::Created, _) => plan.start.push(c.clone()),
        (State::Exited { code }, _) => {
            if !policy.restarts(code, history.restarts(n)) {
                plan.progress.held.insert(n, code);
            } else if let Some(left) = history.backoff_left(n) {
                plan.progress.backing_off.insert(n, left);
            } else {
                plan.heal
                    .push((c.clone(), HealCause::Exited, HealAction::Start));
            }
        }
        (State::Running, Health::Unhealthy) => match history.backoff_left(n) {
            Some(left) => {
                plan.progress.backing_off.insert(n, left);
            }
            None if history.settling_left(c, spec.startup_grace()).is_some() => {
                let left = history.settling_left(c, spec.startup_grace());
                plan.progress.settling.insert(n, left.unwrap_or_default());
            }
            None if history.restarts(n) >= REPLACE_UNHEALTHY_AFTER => {
                plan.heal
                    .push((c.clone(), HealCause::Unhealthy, HealAction::Replace))
            }
            None => plan
                .heal
                .push((c.clone(), HealCause::Unhealthy, HealAction::Restart)),
        },
        _ => {}
    }
}

/// Why an updated replica counts as failed for the rollout, if it does: it exited, turned
/// unhealthy, or is not ready `monitor` after it was made.
fn failure(c: &Observed, age: Duration, monitor: Duration) -> Option<String> {
    match (c.state, c.health) {
        (State::Exited { code }, _) => Some(format!("{} exited with code {code}", c.name)),
        (State::Dead, _) => Some(format!("{} is dead", c.name)),
        (State::Running, Health::Unhealthy) => Some(format!("{} is unhealthy", c.name)),
        _ if !c.is_ready() && age >= monitor => Some(format!(
            "{} is not ready {}s after it started",
            c.name,
            monitor.as_secs()
        )),
        _ => None,
    }
}

/// Why a rollout stands still after `capstan rollout pause`.
pub const PAUSED_BY_REQUEST: &str =
    "paused by `capstan rollout pause`; `capstan rollout resume` continues it";

/// How many outdated replicas that still serve may be replaced now (none while paused): the
/// parallelism less the updated replicas and successors still in flight (missing, not ready
/// yet within `monitor`, or ready less than `delay` after they were made). Failed ones free
/// their slot unless they are more than `max_failure_ratio`; then `failure_action: pause`
/// stops the rollout and `rollback` asks for the previous revision.
fn rollout_budget(
    spec: &ServiceSpec,
    hash: &str,
    sorted: &Sorted,
    history: &dyn RestartHistory,
    plan: &mut Changes,
) -> u32 {
    let cfg = spec.update_config.unwrap_or_default();
    let (monitor, delay) = (cfg.monitor(spec.startup_grace()), cfg.delay());
    let outdated =
        (sorted.replicas.iter()).any(|(n, c)| spec.is_current(Some(*n)) && c.spec_hash != hash);
    if !outdated {
        return 0;
    }
    if spec.rollout.paused {
        plan.progress.paused = Some(PAUSED_BY_REQUEST.to_string());
        return 0;
    }
    let mut busy = (1..=spec.replicas)
        .filter(|n| !sorted.replicas.contains_key(n) && !sorted.successors.contains_key(n))
        .count() as u32;
    let mut failed = vec![];
    let mut wait: Option<Duration> = None;
    let updated = (sorted.replicas.iter())
        .filter(|(n, c)| spec.is_current(Some(**n)) && c.spec_hash == hash)
        .chain(&sorted.successors);
    for (n, c) in updated {
        let age = history.age(c);
        if let Some(why) = failure(c, age, monitor) {
            failed.push(why);
            continue;
        }
        let left = if c.is_ready() { delay } else { monitor }.saturating_sub(age);
        // A ready successor holds its slot until it has taken its replica's place, as
        // Swarm's start-first holds it until the old task is down: never more extra
        // containers than the parallelism.
        let successor = sorted.successors.get(n).is_some_and(|s| s.id == c.id);
        if c.is_ready() && left.is_zero() && successor {
            busy += 1;
        } else if !c.is_ready() || !left.is_zero() {
            busy += 1;
            wait = Some(
                wait.map_or(left, |w| w.min(left))
                    .max(Duration::from_millis(100)),
            );
        }
    }
    plan.progress.rollout_wait = wait;
    if cfg.too_many_failures(failed.len() as u32, spec.replicas) {
        match cfg.failure_action() {
            FailureAction::Pause => plan.progress.paused = Some(failed.join("; ")),
            FailureAction::Rollback => plan.progress.rollback = Some(failed.join("; ")),
            FailureAction::Continue => return cfg.batch(spec.replicas).saturating_sub(busy),
        }
        return 0;
    }
    cfg.batch(spec.replicas).saturating_sub(busy)
}

/// An outdated (or dead) replica `c`, maybe with a start-first successor: the successor
/// takes over once it is ready (at once when `c` does not serve, or when it failed and
/// `failure_action: continue` lets failures pass); without one, a replica that does not
/// serve is replaced in place at once, and one that serves within the rollout's budget, by
/// a successor next to it when the update is start-first and nothing blocks a surge
/// (`in_place` unset).
fn roll(
    plan: &mut Changes,
    spec: &ServiceSpec,
    (c, successor): (&Observed, Option<&Observed>),
    budget: &mut u32,
    history: &dyn RestartHistory,
) {
    let serving = c.is_ready() && c.state != State::Dead;
    let cfg = spec.update_config.unwrap_or_default();
    if let Some(s) = successor {
        let failed = failure(s, history.age(s), cfg.monitor(spec.startup_grace())).is_some();
        let lets_pass = failed && cfg.failure_action() == FailureAction::Continue;
        if !serving || s.is_ready() || lets_pass {
            plan.promote.push((Some(c.clone()), s.clone()));
        } else if s.state == State::Created {
            plan.start.push(s.clone());
        }
    } else if !serving {
        plan.recreate.push(c.clone());
    } else if *budget > 0 {
        *budget -= 1;
        match (cfg.order(), &plan.progress.in_place) {
            (UpdateOrder::StartFirst, None) => plan.surge.push(c.ordinal.unwrap_or(0)),
            _ => plan.recreate.push(c.clone()),
        }
    }
}

/// `gate_open`: the service's dependencies meet their conditions. While they do not, no
/// replica is created or (re)started; running ones are left running. `surge_blocker`: why
/// the service's replicas cannot run twice at once ([`ServiceSpec::surge_blocker`]), so a
/// start-first update replaces them in place.
pub fn changes(
    stack: &str,
    service: &str,
    spec: &ServiceSpec,
    observed: &[Observed],
    history: &dyn RestartHistory,
    (gate_open, surge_blocker): (bool, Option<String>),
) -> Changes {
    let mut plan = Changes::default();
    plan.progress.gated = !gate_open;
    let hash = spec.container_hash();
    let policy = spec.restart_policy();

    let sorted = sort_out(stack, service, spec, observed, &mut plan);

    // Rolling update: an outdated replica that still serves is replaced only while the
    // rollout has a free slot (update_config's parallelism).
    let mut budget = rollout_budget(spec, &hash, &sorted, history, &mut plan);
    let start_first = spec.update_config.unwrap_or_default().order() == UpdateOrder::StartFirst;
    plan.progress.in_place = surge_blocker.filter(|_| start_first);

    for n in 1..=spec.replicas {
        let successor = sorted.successors.get(&n).copied();
        let Some(c) = sorted.replicas.get(&n) else {
            // A replica whose last create or start failed waits out the same back-off as a
            // crash loop: a taken port or a broken network must not become a hot loop.
            match (successor, history.backoff_left(n)) {
                // Its replica went while it started (removed, or a promotion cut short).
                (Some(s), _) => plan.promote.push((None, s.clone())),
                _ if !gate_open => {}
                (None, Some(left)) => {
                    plan.progress.backing_off.insert(n, left);
                }
                (None, None) => plan.create.push(n),
            }
            continue;
        };
        let unhealthy = c.state == State::Running && c.health == Health::Unhealthy;
        if !gate_open && !unhealthy {
            if let State::Exited { code } = c.state {
                if !policy.restarts(code, history.restarts(n)) {
                    plan.progress.held.insert(n, code);
                }
            }
            continue;
        }
        if c.spec_hash != hash || c.state == State::Dead {
            roll(&mut plan, spec, (c, successor), &mut budget, history);
            continue;
        }
        if let Some(s) = successor {
            plan.remove.push((s.clone(), RemoveReason::Superseded));
        }
        heal_or_hold(&mut plan, c, spec, history);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::spec::RestartPolicy;

    struct NoHistory;
    impl RestartHistory for NoHistory {
        fn restarts(&self, _: u32) -> u32 {
            0
        }
        fn backoff_left(&self, _: u32) -> Option<Duration> {
            None
        }
    }

    struct BackingOff;
    impl RestartHistory for BackingOff {
        fn restarts(&self, _: u32) -> u32 {
            3
        }
        fn backoff_left(&self, _: u32) -> Option<Duration> {
            Some(Duration::from_secs(4))
        }
    }

    fn spec(replicas: u32) -> ServiceSpec {
        ServiceSpec {
            image: "web:1".into(),
            replicas,
            ..Default::default()
        }
    }

    fn replica(n: u32, spec: &ServiceSpec, state: State, health: Health) -> Observed {
        Observed {
            id: format!("id{n}"),
            name: capstan_api::names::container("s", "web", n),
            stack: "s".into(),
            service: "web".into(),
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

    /// `replicas` replicas of `web:1`, and the spec that updates them to `web:2`.
    fn update(replicas: u32) -> (ServiceSpec, ServiceSpec) {
        let new = ServiceSpec {
            image: "web:2".into(),
            ..spec(replicas)
        };
        (spec(replicas), new)
    }

    fn running(n: u32, spec: &ServiceSpec) -> Observed {
        replica(n, spec, State::Running, Health::None)
    }

    #[test]
    fn missing_replicas_are_created_and_a_converged_service_needs_nothing() {
        let s = spec(3);
        let p = changes("s", "web", &s, &[running(2, &s)], &NoHistory, (true, None));
        assert_eq!(p.create, vec![1, 3]);
        let p = changes(
            "s",
            "web",
            &s,
            &[running(1, &s), running(2, &s), running(3, &s)],
            &NoHistory,
            (true, None),
        );
        assert!(p.is_empty());
    }

    #[test]
    fn a_replica_named_by_container_name_is_the_replica_and_the_old_name_a_stray() {
        let mut s = spec(1);
        s.options.container_name = Some("front".into());
        let named = Observed {
            name: "front".into(),
            ..running(1, &s)
        };
        assert!(changes("s", "web", &s, &[named], &NoHistory, (true, None)).is_empty());
        let old = running(1, &s);
        let p = changes("s", "web", &s, &[old], &NoHistory, (true, None));
        assert_eq!(p.remove[0].1, RemoveReason::Stray);
        assert_eq!(p.create, vec![1]);
    }

    #[test]
    fn scale_down_removes_the_highest_ordinals_first() {
        let s = spec(1);
        let all: Vec<Observed> = (1..=4).map(|n| running(n, &s)).collect();
        let p = changes("s", "web", &s, &all, &NoHistory, (true, None));
        let removed: Vec<u32> = p.remove.iter().map(|(c, _)| c.ordinal.unwrap()).collect();
        assert_eq!(removed, vec![4, 3, 2]);
        assert!(p.remove.iter().all(|(_, r)| *r == RemoveReason::Surplus));
    }

    #[test]
    fn scaling_to_zero_removes_every_replica() {
        let s = spec(0);
        let all: Vec<Observed> = (1..=3).map(|n| running(n, &spec(3))).collect();
        let p = changes("s", "web", &s, &all, &NoHistory, (true, None));
        let removed: Vec<u32> = p.remove.iter().map(|(c, _)| c.ordinal.unwrap()).collect();
        assert_eq!(removed, vec![3, 2, 1]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_container_with_a_wrong_name_or_duplicate_ordinal_is_a_stray() {
        let s = spec(1);
        let mut dup = running(1, &s);
        dup.name = "s-web-1-copy".into();
        let p = changes(
            "s",
            "web",
            &s,
            &[running(1, &s), dup.clone()],
            &NoHistory,
            (true, None),
        );
        assert_eq!(p.remove, vec![(dup, RemoveReason::Stray)]);
    }

    #[test]
    fn outdated_replicas_that_cannot_run_twice_roll_in_place_one_at_a_time_while_they_still_serve()
    {
        let (old, new) = update(3);
        let all: Vec<Observed> = (1..=3).map(|n| running(n, &old)).collect();
        let port = || {
            (
                true,
                Some("host port 8080 is bound by one container at a time".into()),
            )
        };
        let p = changes("s", "web", &new, &all, &NoHistory, port());
        assert!(p.surge.is_empty());
        assert!(p.progress.in_place.as_deref().unwrap().contains("8080"));
        assert_eq!(
            p.recreate
                .iter()
                .map(|c| c.ordinal.unwrap())
                .collect::<Vec<_>>(),
            vec![1]
        );
        // While the new replica 1 is not ready yet, nothing else is replaced.
        let mut settling = vec![replica(1, &new, State::Running, Health::Starting)];
        settling.extend((2..=3).map(|n| running(n, &old)));
        assert!(changes("s", "web", &new, &settling, &NoHistory, port())
            .recreate
            .is_empty());
    }

    fn successor(n: u32, spec: &ServiceSpec, state: State, health: Health) -> Observed {
        Observed {
            id: format!("next{n}"),
            name: spec.successor_name("s", "web", n),
            ..replica(n, spec, state, health)
        }
    }

    fn promoted(p: &Changes) -> Vec<(Option<u32>, String)> {
        (p.promote.iter())
            .map(|(old, s)| (old.as_ref().and_then(|c| c.ordinal), s.name.clone()))
            .collect()
    }

    #[test]
    fn a_start_first_update_runs_a_successor_next_to_the_replica_until_it_is_ready() {
        let (old, new) = update(3);
        let mut all: Vec<Observed> = (1..=3).map(|n| running(n, &old)).collect();
        let p = changes("s", "web", &new, &all, &NoHistory, (true, None));
        assert_eq!((p.surge.clone(), p.recreate.len()), (vec![1], 0));

        all.push(successor(1, &new, State::Running, Health::Starting));
        let starting = changes("s", "web", &new, &all, &NoHistory, (true, None));
        assert!(
            starting.is_empty(),
            "the replica serves until its successor is ready"
        );

        all[3] = successor(1, &new, State::Running, Health::Healthy);
        let ready = changes("s", "web", &new, &all, &NoHistory, (true, None));
        assert_eq!(promoted(&ready), vec![(Some(1), "s-web-1-next".into())]);
        assert!(
            ready.surge.is_empty(),
            "its slot is busy until it took the name"
        );
        assert!(ready.remove.is_empty() && ready.recreate.is_empty());
    }

    #[test]
    fn a_failed_successor_leaves_its_replica_serving_and_pauses_the_rollout() {
        let (old, new) = update(2);
        let all = vec![
            running(1, &old),
            running(2, &old),
            successor(1, &new, State::Exited { code: 1 }, Health::None),
        ];
        let p = changes("s", "web", &new, &all, &NoHistory, (true, None));
        assert!(p.is_empty(), "{p:?}");
        assert!(p
            .progress
            .paused
            .unwrap()
            .contains("s-web-1-next exited with code 1"));
    }

    #[test]
    fn a_successor_of_another_spec_is_superseded_and_a_lone_one_takes_its_replicas_name() {
        let (old, new) = update(2);
        // Rolled back to `old`: the successor made for `new` is no longer wanted.
        let all = vec![
            running(1, &old),
            running(2, &old),
            successor(1, &new, State::Running, Health::None),
        ];
        let p = changes("s", "web", &old, &all, &NoHistory, (true, None));
        let superseded: Vec<_> = p
            .remove
            .iter()
            .map(|(c, r)| (c.name.as_str(), *r))
            .collect();
        assert_eq!(superseded, vec![("s-web-1-next", RemoveReason::Superseded)]);

        // Its replica is gone (a promotion cut short after the removal): it is renamed.
        let all = vec![
            running(2, &new),
            successor(1, &new, State::Running, Health::None),
        ];
        let p = changes("s", "web", &new, &all, &NoHistory, (true, None));
        assert_eq!(promoted(&p), vec![(None, "s-web-1-next".into())]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_stop_first_update_replaces_in_place() {
        let old = spec(2);
        let new = ServiceSpec {
            image: "web:2".into(),
            update_config: Some(capstan_api::spec::UpdateConfig {
                order: Some(UpdateOrder::StopFirst),
                ..Default::default()
            }),
            ..spec(2)
        };
        let all: Vec<Observed> = (1..=2).map(|n| running(n, &old)).collect();
        let p = changes("s", "web", &new, &all, &NoHistory, (true, None));
        assert_eq!(
            (p.recreate.len(), p.surge.len(), p.progress.in_place),
            (1, 0, None)
        );
    }

    #[test]
    fn outdated_replicas_that_do_not_serve_are_replaced_at_once() {
        let (old, new) = update(2);
        let all: Vec<Observed> = (1..=2)
            .map(|n| replica(n, &old, State::Exited { code: 1 }, Health::None))
            .collect();
        assert_eq!(
            changes("s", "web", &new, &all, &NoHistory, (true, None))
                .recreate
                .len(),
            2
        );
    }

    #[test]
    fn exited_replicas_follow_the_restart_policy() {
        let s = spec(1);
        let exited = replica(1, &s, State::Exited { code: 0 }, Health::None);
        assert_eq!(
            changes(
                "s",
                "web",
                &s,
                std::slice::from_ref(&exited),
                &NoHistory,
                (true, None)
            )
            .heal
            .len(),
            1,
            "default policy restarts"
        );
        let no = ServiceSpec {
            restart: Some(RestartPolicy::No),
            ..spec(1)
        };
        let exited_no = replica(1, &no, State::Exited { code: 3 }, Health::None);
        let p = changes("s", "web", &no, &[exited_no], &NoHistory, (true, None));
        assert!(p.heal.is_empty());
        assert_eq!(p.progress.held.get(&1), Some(&3));
        let on_failure = ServiceSpec {
            restart: Some(RestartPolicy::OnFailure { max_retries: None }),
            ..spec(1)
        };
        let clean_exit = replica(1, &on_failure, State::Exited { code: 0 }, Health::None);
        assert!(changes(
            "s",
            "web",
            &on_failure,
            &[clean_exit],
            &NoHistory,
            (true, None)
        )
        .heal
        .is_empty());
    }

    #[test]
    fn a_crash_looping_replica_waits_out_its_back_off() {
        let s = spec(1);
        let exited = replica(1, &s, State::Exited { code: 1 }, Health::None);
        let p = changes("s", "web", &s, &[exited], &BackingOff, (true, None));
        assert!(p.heal.is_empty());
        assert_eq!(
            p.progress.backing_off.get(&1),
            Some(&Duration::from_secs(4))
        );
    }

    struct RestartedTwice;
    impl RestartHistory for RestartedTwice {
        fn restarts(&self, _: u32) -> u32 {
            REPLACE_UNHEALTHY_AFTER
        }
        fn backoff_left(&self, _: u32) -> Option<Duration> {
            None
        }
    }

    #[test]
    fn an_unhealthy_replica_that_restarts_did_not_help_is_replaced() {
        let s = spec(1);
        let p = changes(
            "s",
            "web",
            &s,
            &[replica(1, &s, State::Running, Health::Unhealthy)],
            &RestartedTwice,
            (true, None),
        );
        assert_eq!(p.heal[0].2, HealAction::Replace);
    }

    #[test]
    fn while_dependencies_wait_nothing_is_created_or_started_but_running_replicas_stay() {
        let s = spec(3);
        let observed = [
            running(1, &s),
            replica(2, &s, State::Exited { code: 1 }, Health::None),
        ];
        let p = changes("s", "web", &s, &observed, &NoHistory, (false, None));
        assert!(
            p.create.is_empty() && p.heal.is_empty() && p.start.is_empty() && p.remove.is_empty()
        );
        assert!(p.progress.gated);
        let unhealthy = [replica(1, &s, State::Running, Health::Unhealthy)];
        assert_eq!(
            changes("s", "web", &s, &unhealthy, &NoHistory, (false, None))
                .heal
                .len(),
            1,
            "an unhealthy replica is still healed"
        );
    }

    #[test]
    fn an_unhealthy_replica_is_healed_and_a_created_one_started() {
        let s = spec(2);
        let p = changes(
            "s",
            "web",
            &s,
            &[
                replica(1, &s, State::Running, Health::Unhealthy),
                replica(2, &s, State::Created, Health::None),
            ],
            &NoHistory,
            (true, None),
        );
        assert_eq!(
            (p.heal[0].1, p.heal[0].2),
            (HealCause::Unhealthy, HealAction::Restart)
        );
        assert_eq!(p.start[0].ordinal, Some(2));
    }

    struct Aged(Duration);
    impl RestartHistory for Aged {
        fn restarts(&self, _: u32) -> u32 {
            0
        }
        fn backoff_left(&self, _: u32) -> Option<Duration> {
            None
        }
        fn age(&self, _: &Observed) -> Duration {
            self.0
        }
    }

    #[test]
    fn an_updated_replica_holds_its_slot_for_the_delay_after_it_started() {
        let old = spec(3);
        let new = ServiceSpec {
            image: "web:2".into(),
            update_config: Some(capstan_api::spec::UpdateConfig {
                parallelism: Some(1),
                delay_ms: Some(10_000),
                ..Default::default()
            }),
            ..spec(3)
        };
        let mut all = vec![running(1, &new)];
        all.extend((2..=3).map(|n| running(n, &old)));
        let young = changes(
            "s",
            "web",
            &new,
            &all,
            &Aged(Duration::from_secs(4)),
            (true, None),
        );
        assert!(young.surge.is_empty());
        assert_eq!(young.progress.rollout_wait, Some(Duration::from_secs(6)));
        let done = changes(
            "s",
            "web",
            &new,
            &all,
            &Aged(Duration::from_secs(10)),
            (true, None),
        );
        assert_eq!(done.surge, vec![2]);
    }
}
