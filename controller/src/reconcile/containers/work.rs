//! The engine's part of a plan, carried out: removals first, then what making replicas
//! needs (networks and volumes, files, the image), then starts, heals, replacements,
//! creations and promotions, concurrently within the daemon's engine slots, then the
//! restarts that dependencies owe.

use capstan_api::object::{HealAction, HealCause, HealEvent, Reason};
use futures::future::BoxFuture;
use std::time::Duration;

use super::{pull, shape, view, ContainerBackend, Step};
use crate::reconcile::backend::{Done, Env, Observation};
use crate::reconcile::backoff::{self, Timing};
use crate::reconcile::error::ReconcileError;
use crate::reconcile::status::Problem;
use crate::runtime::{hooks, Detail, HookKind, Observed, RuntimeError, State};

/// Carries out `steps`. Failures to make a replica are problems, reported in the status;
/// failures to remove one are errors (the key is retried).
pub async fn execute(
    b: &ContainerBackend,
    ctx: &Env<'_>,
    obs: &Observation,
    steps: &[&Step],
) -> Result<Done, ReconcileError> {
    let service = &obs.service;
    let removals: Vec<Observed> = (steps.iter())
        .filter_map(|s| match s {
            Step::Remove(c, reason) => {
                tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, reason = ?reason, "removing replica");
                Some(c.clone())
            }
            _ => None,
        })
        .collect();
    remove_all(b, &removals, &service.spec.pre_stop, shape::grace(service)).await?;
    let mut done = Done {
        health_output: (view(obs).details.iter())
            .filter_map(|(n, d)| Some((*n, d.health_output.clone()?)))
            .collect(),
        ..Default::default()
    };
    let creating = match prepare(b, ctx, obs, steps).await? {
        Prepared::Blocked(problems) => {
            done.problems = problems;
            return Ok(done);
        }
        Prepared::Ready { creating, problems } => {
            done.problems = problems;
            creating
        }
    };
    let jobs = jobs(b, ctx, obs, steps, creating);
    for (p, e) in with_slots(&b.engine_slots, jobs).await {
        done.problems.extend(p);
        done.events.extend(e);
    }
    for step in steps {
        if let Step::RestartForDependencies(running, deps) = step {
            restart_for_dependencies(b, ctx, obs, running, deps, &mut done.events).await;
        }
    }
    done.problems.sort_by_key(|p| p.ordinal);
    done.events.sort_by(|a, b| a.replica.cmp(&b.replica));
    for p in &done.problems {
        tracing::warn!(stack = %service.stack, service = %service.name, ordinal = p.ordinal, reason = %p.reason, "{}", p.message);
    }
    Ok(done)
}

/// Whether replicas can be made after the preparing steps.
enum Prepared {
    /// Nothing more is done until a person acts: why, per replica that waits.
    Blocked(Vec<Problem>),
    /// `creating`: the image is there (or was pulled); `problems`: why not.
    Ready {
        creating: bool,
        problems: Vec<Problem>,
    },
}

/// The steps that prepare making replicas: networks and volumes, files, the image.
async fn prepare(
    b: &ContainerBackend,
    ctx: &Env<'_>,
    obs: &Observation,
    steps: &[&Step],
) -> Result<Prepared, ReconcileError> {
    let service = &obs.service;
    let mut problems = vec![];
    for step in steps {
        match step {
            Step::EnsureResources => {
                let made = super::ensure_resources(&*b.runtime, &obs.stack, &[service]).await;
                if let Err(e) = made {
                    // The replicas that run keep running; the status says why the others wait.
                    return match e.blocked_reason() {
                        Some(reason) => {
                            Ok(Prepared::Blocked(blocked(steps, reason, &e.to_string())))
                        }
                        None => Err(e),
                    };
                }
            }
            Step::WriteFiles => {
                if let Err(e) = b.files.write(ctx.store, service).await {
                    if !e.waits_on_a_person() {
                        return Err(e.into());
                    }
                    // Nothing is replaced or created without its files.
                    let why = e.to_string();
                    return Ok(Prepared::Blocked(blocked(
                        steps,
                        Reason::FilesUnavailable,
                        &why,
                    )));
                }
            }
            Step::AnnouncePull(status) => announce(ctx, obs, status).await,
            Step::Pull(image) => {
                tracing::info!(stack = %service.stack, service = %service.name, image, "pulling image");
                if let Err(p) = pull::pull(&*b.runtime, &b.pulls, image).await {
                    // No image, no replacement: an outdated replica keeps serving.
                    problems.push(p);
                }
            }
            _ => {}
        }
    }
    Ok(Prepared::Ready {
        creating: problems.is_empty(),
        problems,
    })
}

/// Writes the service's status with `PullingImage` before a pull, so that a long pull is
/// visible while it runs. A failed write only costs that visibility.
async fn announce(ctx: &Env<'_>, obs: &Observation, status: &capstan_api::object::ServiceStatus) {
    let service = &obs.service;
    if let Err(e) = ctx.write_status(service, status).await {
        tracing::debug!(stack = %service.stack, service = %service.name, error = %e, "the PullingImage status was not written");
    }
}

/// Carries out a pending dependent restart: every running replica is restarted.
async fn restart_for_dependencies(
    b: &ContainerBackend,
    ctx: &Env<'_>,
    obs: &Observation,
    running: &[Observed],
    deps: &[String],
    events: &mut Vec<HealEvent>,
) {
    let service = &obs.service;
    ctx.memory.update(&service.stack, &service.name, |m| {
        m.owed_restarts.retain(|d| !deps.contains(d))
    });
    let deps = deps.join(", ");
    for c in running {
        tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, dependencies = %deps, reason = "dependency-restarted", "restarting replica");
        match b.runtime.restart(&c.id, shape::grace(service)).await {
            Ok(()) => events.push(heal_event(
                &obs.now_rfc3339,
                c.name.clone(),
                HealAction::Restart,
                HealCause::DependencyRestarted,
                format!("capstan restarted its dependency {deps}"),
            )),
            Err(e) => {
                tracing::warn!(replica = %c.name, error = %e, "restart for a restarted dependency failed")
            }
        }
    }
}

fn heal_event(
    now: &str,
    replica: String,
    action: HealAction,
    reason: HealCause,
    message: String,
) -> HealEvent {
    HealEvent {
        time: now.to_string(),
        replica,
        action,
        reason,
        message,
    }
}

type JobResult = (Option<Problem>, Option<HealEvent>);

/// The engine work of the replica steps, one job per replica; what needs a new container
/// only when one can be made (`creating`: the image is there).
fn jobs<'a>(
    b: &'a ContainerBackend,
    ctx: &'a Env<'a>,
    obs: &'a Observation,
    steps: &[&'a Step],
    creating: bool,
) -> Vec<BoxFuture<'a, JobResult>> {
    let j = Job { b, ctx, obs };
    let mut jobs: Vec<BoxFuture<'a, JobResult>> = vec![];
    for step in steps.iter().copied() {
        match step {
            Step::Start(c) => jobs.push(Box::pin(j.start(c))),
            Step::Heal(_, _, HealAction::Replace) if !creating => {}
            Step::Heal(c, reason, action) => jobs.push(Box::pin(j.heal(c, *reason, *action))),
            Step::Recreate(c) if creating => jobs.push(Box::pin(j.recreate(c))),
            Step::Create(n) if creating => jobs.push(Box::pin(j.make(*n, Made::Replica))),
            Step::Surge(n) if creating => jobs.push(Box::pin(j.make(*n, Made::Successor))),
            Step::Promote(old, successor) => {
                jobs.push(Box::pin(j.promote(old.as_ref(), successor)))
            }
            _ => {}
        }
    }
    jobs
}

/// One problem per replica to create or replace, when none can be made until a person acts
/// (the service's files cannot be written, a network or volume is missing or not its own).
fn blocked(steps: &[&Step], reason: Reason, message: &str) -> Vec<Problem> {
    let mut ordinals: Vec<u32> = (steps.iter())
        .filter_map(|s| match s {
            Step::Create(n) | Step::Surge(n) => Some(*n),
            Step::Recreate(c) => c.ordinal,
            _ => None,
        })
        .collect();
    ordinals.sort_unstable();
    let problems: Vec<Problem> = ordinals
        .into_iter()
        .map(|ordinal| Problem {
            ordinal,
            reason,
            message: message.to_string(),
        })
        .collect();
    for p in &problems {
        tracing::warn!(ordinal = p.ordinal, reason = %p.reason, "{}", p.message);
    }
    problems
}

/// What every replica job needs.
#[derive(Clone, Copy)]
struct Job<'a> {
    b: &'a ContainerBackend,
    ctx: &'a Env<'a>,
    obs: &'a Observation,
}

impl<'a> Job<'a> {
    async fn start(self, c: &'a Observed) -> JobResult {
        let started = self.b.runtime.start(&c.id).await;
        let started = match started {
            Ok(()) => self.post_start(&c.id).await,
            e => e,
        };
        let n = c.ordinal.unwrap_or(0);
        (started.err().map(|e| problem(n, e)), None)
    }

    async fn heal(self, c: &'a Observed, reason: HealCause, action: HealAction) -> JobResult {
        let service = &self.obs.service;
        let n = c.ordinal.unwrap_or(0);
        let detail = (view(self.obs).details.get(&n).cloned()).unwrap_or_default();
        let reason = if detail.oom_killed {
            HealCause::Oom
        } else {
            reason
        };
        let message = heal_message(reason, c, &detail);
        // Following a partner is not a failure of the sidecar's own: no crash-loop back-off.
        if !matches!(
            reason,
            HealCause::PartnerRestarted | HealCause::PartnerReplaced
        ) {
            self.restarted(n);
        }
        tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, reason = reason.as_str(), action = action.as_str(), "{message}");
        let result = match action {
            HealAction::Start => self.b.runtime.start(&c.id).await,
            HealAction::Restart => (self.b.runtime).restart(&c.id, shape::grace(service)).await,
            HealAction::Replace => self.replace(c).await,
        };
        // The replica started again, so its post_start hooks run again, as Compose's do.
        let result = match (result, action) {
            (Ok(()), HealAction::Start | HealAction::Restart) => self.post_start(&c.id).await,
            (result, _) => result,
        };
        match result {
            Ok(()) => (
                None,
                Some(heal_event(
                    &self.obs.now_rfc3339,
                    c.name.clone(),
                    action,
                    reason,
                    message,
                )),
            ),
            Err(e) => (Some(problem(n, e)), None),
        }
    }

    async fn recreate(self, c: &'a Observed) -> JobResult {
        let service = &self.obs.service;
        tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, "replacing outdated replica");
        let replaced = self.replace(c).await;
        let n = c.ordinal.unwrap_or(0);
        (replaced.err().map(|e| self.failed_to_make(n, e)), None)
    }

    async fn make(self, n: u32, made: Made) -> JobResult {
        let result = self.create_and_start(n, made).await;
        (result.err().map(|e| self.failed_to_make(n, e)), None)
    }

    /// Capstan restarted replica `n`, or failed to make it: its crash-loop position moves.
    fn restarted(self, n: u32) {
        let service = &self.obs.service;
        let timing = Timing::of(&service.spec);
        let now = tokio::time::Instant::now();
        (self.ctx.memory).update(&service.stack, &service.name, |m| {
            backoff::record(m, n, &timing, now)
        });
    }

    /// A replica could not be made: reported (also while it waits), and its next try waits
    /// out the replica's back-off.
    fn failed_to_make(self, ordinal: u32, e: RuntimeError) -> Problem {
        self.restarted(ordinal);
        let problem = problem(ordinal, e);
        let service = &self.obs.service;
        (self.ctx.memory).update(&service.stack, &service.name, |m| {
            m.unmade.insert(ordinal, problem.clone())
        });
        problem
    }

    /// A start-first successor takes over: the outdated replica (already drained) is
    /// stopped and removed, and the successor takes its name.
    async fn promote(self, old: Option<&'a Observed>, successor: &'a Observed) -> JobResult {
        let service = &self.obs.service;
        let n = successor.ordinal.unwrap_or(0);
        let name = (service.spec).replica_name(&service.stack, &service.name, n);
        tracing::info!(stack = %service.stack, service = %service.name, replica = %name, successor = %successor.name, "the successor of an outdated replica takes over");
        let promoted = async {
            if let Some(old) = old {
                let pre_stop = &service.spec.pre_stop;
                hooks::stop_and_remove(&*self.b.runtime, old, pre_stop, shape::grace(service))
                    .await?;
            }
            self.b.runtime.rename(&successor.id, &name).await
        };
        (promoted.await.err().map(|e| problem(n, e)), None)
    }

    async fn post_start(self, id: &str) -> Result<(), RuntimeError> {
        let hooks = &self.obs.service.spec.post_start;
        hooks::run(&*self.b.runtime, id, HookKind::PostStart, hooks).await
    }

    /// Removes `c` and creates its ordinal anew.
    async fn replace(self, c: &Observed) -> Result<(), RuntimeError> {
        let (grace, pre_stop) = (
            shape::grace(&self.obs.service),
            &self.obs.service.spec.pre_stop,
        );
        hooks::stop_and_remove(&*self.b.runtime, c, pre_stop, grace).await?;
        self.create_and_start(c.ordinal.unwrap_or(0), Made::Replica)
            .await
    }

    async fn create_and_start(self, ordinal: u32, made: Made) -> Result<(), RuntimeError> {
        let (b, obs) = (self.b, self.obs);
        let admitted = (b.policy.as_deref()).map(|p| p.for_stack(obs.stack.profile.as_deref()));
        if let Some(refused) =
            admitted.and_then(|p| shape::bind_refused(&obs.stack, &obs.service, p.policy))
        {
            return Err(refused);
        }
        let mut plan = shape::container(&obs.stack, &obs.service, ordinal);
        if made == Made::Successor {
            let service = &obs.service;
            plan.name = (service.spec).successor_name(&service.stack, &service.name, ordinal);
        }
        plan.mounts.extend(b.files.binds(&obs.service));
        if let Some(pairing) = &view(obs).pairing {
            pairing.attach(&mut plan, ordinal);
        }
        let id = b.runtime.create(&plan).await?;
        let started = match b.runtime.start(&id).await {
            Ok(()) => self.post_start(&id).await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // A replica that cannot start, or whose post_start hook failed, is removed
            // rather than left half-made.
            let _ = b.runtime.remove(&id, Duration::ZERO).await;
            return Err(e);
        }
        Ok(())
    }
}

/// What a heal says it does, and why.
fn heal_message(reason: HealCause, c: &Observed, detail: &Detail) -> String {
    match (reason, c.state, &detail.health_output) {
        (HealCause::PartnerRestarted, ..) => {
            "its partner started again: it joins the partner's new network namespace".into()
        }
        (HealCause::PartnerReplaced, ..) => {
            "its partner was replaced: it is made anew beside the new one".into()
        }
        (_, State::Exited { code }, _) => format!("exited with code {code}"),
        (_, _, Some(out)) => format!("health check failed: {out}"),
        _ => "health check failed".to_string(),
    }
}

/// What [`Job::create_and_start`] makes of an ordinal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Made {
    /// The replica, under its own name.
    Replica,
    /// A start-first successor, next to the replica (`<replica>-next`).
    Successor,
}

/// Runs replica operations concurrently, each holding one of the daemon's engine slots;
/// results in the order of `jobs`.
pub(super) async fn with_slots<T>(
    slots: &tokio::sync::Semaphore,
    jobs: Vec<BoxFuture<'_, T>>,
) -> Vec<T> {
    futures::future::join_all(jobs.into_iter().map(|job| async {
        // The semaphore is never closed, so acquiring only waits.
        let _slot = slots.acquire().await;
        job.await
    }))
    .await
}

fn problem(ordinal: u32, e: RuntimeError) -> Problem {
    Problem {
        ordinal,
        reason: crate::reconcile::error::reason_of(&e),
        message: e.to_string(),
    }
}

/// Stops and removes `containers` concurrently within the engine slots.
pub(super) async fn remove_all(
    b: &ContainerBackend,
    containers: &[Observed],
    pre_stop: &[capstan_api::spec::Hook],
    grace: Duration,
) -> Result<(), ReconcileError> {
    let jobs: Vec<BoxFuture<'_, Result<(), ReconcileError>>> = containers
        .iter()
        .map(|c| -> BoxFuture<'_, _> {
            Box::pin(async move {
                let removed = hooks::stop_and_remove(&*b.runtime, c, pre_stop, grace).await;
                removed.map_err(|source| ReconcileError::Remove {
                    name: c.name.clone(),
                    source,
                })
            })
        })
        .collect();
    with_slots(&b.engine_slots, jobs)
        .await
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn replica_operations_never_exceed_the_engine_slots_and_all_of_them_run() {
        let slots = tokio::sync::Semaphore::new(3);
        let (in_flight, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let jobs: Vec<BoxFuture<'_, usize>> = (0..20)
            .map(|i| {
                let (in_flight, peak) = (&in_flight, &peak);
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    i
                }
                .boxed()
            })
            .collect();
        let done = with_slots(&slots, jobs).await;
        assert_eq!(done, (0..20).collect::<Vec<_>>());
        assert_eq!(
            peak.load(Ordering::SeqCst),
            3,
            "bounded, and the bound is used"
        );
    }
}
