//! Stage 3, **act**: carries out a plan. Traffic leaves the replicas about to be touched
//! first (they drain), then removals, starts, heals, replacements and creations go to the
//! engine (bounded by the daemon's engine slots), then the service is listed again and its
//! traffic follows what now runs.

use capstan_api::object::{HealAction, HealCause, HealEvent, Reason};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::observe::{dependents, Observation};
use super::plan::Plan;
use super::status::Problem;
use super::{shape, stack, Context, ReconcileError};
use crate::runtime::{Detail, Observed, RuntimeError, State};
use crate::store::now_rfc3339;

/// What acting did, for the report.
pub struct Outcome {
    /// The service's containers after acting (as observed, when nothing was done).
    pub containers: Vec<Observed>,
    /// What kept replicas from being made, or ports from being served.
    pub problems: Vec<Problem>,
    /// Heal actions taken, for the status's recent events and the heal metric.
    pub events: Vec<HealEvent>,
    /// The last health output of the replicas looked at closely, by ordinal.
    pub health_output: BTreeMap<u32, String>,
    /// Replicas found removed or altered behind capstan's back.
    pub changed_outside: u32,
}

impl Outcome {
    /// A replica that could not be removed, for the status: nothing else was done.
    pub fn removal_failed(obs: &Observation, e: &ReconcileError) -> Option<Outcome> {
        let ReconcileError::Remove { name, source } = e else {
            return None;
        };
        let ordinal = (obs.containers.iter())
            .find(|c| c.name == *name)
            .and_then(|c| c.ordinal);
        let reason = reason_of(source);
        Some(Outcome {
            containers: obs.containers.clone(),
            problems: vec![Problem {
                ordinal: ordinal.unwrap_or(0),
                reason,
                message: e.to_string(),
            }],
            events: vec![],
            health_output: BTreeMap::new(),
            changed_outside: 0,
        })
    }
}

pub async fn act(ctx: &Context, obs: &Observation, plan: &Plan) -> Result<Outcome, ReconcileError> {
    let service = &obs.service;
    let details = look_closer(ctx, obs, plan).await;
    let vanished = vanished(obs, plan);
    let leaving: BTreeSet<String> = plan
        .remove
        .iter()
        .map(|(c, _)| c)
        .chain(plan.recreate.iter())
        .chain(plan.promote.iter().filter_map(|(c, _)| c.as_ref()))
        .chain(plan.heal.iter().map(|(c, _, _)| c))
        .map(|c| c.id.clone())
        .collect();
    let mut problems = publish(ctx, obs, &obs.containers, &leaving).await?;
    let mut events = vec![];
    if !plan.is_empty() {
        problems.extend(execute(ctx, obs, plan, &details, &mut events).await?);
    }
    let now = now_rfc3339();
    let failed: BTreeSet<u32> = problems.iter().map(|p| p.ordinal).collect();
    for n in vanished.iter().filter(|n| !failed.contains(n)) {
        let replica = service.spec.replica_name(&service.stack, &service.name, *n);
        tracing::info!(stack = %service.stack, service = %service.name, %replica, reason = "removed", "replaced a removed replica");
        let message = "the container was removed; a new one was created".to_string();
        events.push(heal_event(
            &now,
            replica,
            HealAction::Replace,
            HealCause::Removed,
            message,
        ));
    }
    if !events.is_empty() {
        request_dependent_restarts(ctx, obs);
    }
    if obs.gate.is_open() {
        restart_for_dependencies(ctx, obs, &now, &mut events).await;
    }
    let containers = if plan.is_empty() && events.is_empty() {
        obs.containers.clone()
    } else {
        let after = ctx
            .containers
            .refresh(&service.stack, &service.name)
            .await
            .map_err(ReconcileError::List)?;
        problems.extend(publish(ctx, obs, &after, &BTreeSet::new()).await?);
        after
    };
    if problems.is_empty() {
        let made: BTreeSet<u32> = containers.iter().filter_map(|c| c.ordinal).collect();
        problems = ctx
            .scratch
            .still_unmade(&service.stack, &service.name, &made);
    }
    let strays = plan
        .remove
        .iter()
        .filter(|(_, r)| *r == super::plan::RemoveReason::Stray)
        .count();
    Ok(Outcome {
        containers,
        problems,
        events,
        health_output: details
            .into_iter()
            .filter_map(|(n, d)| Some((n, d.health_output?)))
            .collect(),
        changed_outside: (vanished.len() + strays) as u32,
    })
}

/// Only the heals of `plan` (restarts of existing replicas), for an isolated leader: no
/// traffic change, no status; the heal events are logged and counted.
pub async fn heal(ctx: &Context, obs: &Observation, plan: &Plan) -> Result<(), ReconcileError> {
    let details = look_closer(ctx, obs, plan).await;
    let mut events = vec![];
    let problems = execute(ctx, obs, plan, &details, &mut events).await?;
    for e in &events {
        ctx.metrics
            .heal(&obs.service.stack, &obs.service.name, e.reason);
    }
    if let Some(p) = problems.first() {
        tracing::warn!(stack = %obs.service.stack, service = %obs.service.name, reason = %p.reason, "a heal failed while etcd is unreachable: {}", p.message);
    }
    Ok(())
}

/// What only an inspect tells (OOM kill, last health output), for the replicas about to be
/// healed or found unhealthy: never for healthy ones.
async fn look_closer(ctx: &Context, obs: &Observation, plan: &Plan) -> BTreeMap<u32, Detail> {
    let mut details = BTreeMap::new();
    let looked_at = plan.heal.iter().map(|(c, _, _)| c).chain(
        obs.containers
            .iter()
            .filter(|c| c.health == crate::runtime::Health::Unhealthy),
    );
    for c in looked_at {
        if let (Some(n), Ok(d)) = (c.ordinal, ctx.runtime.inspect(&c.id).await) {
            details.insert(n, d);
        }
    }
    details
}

/// Replicas the last status listed that are to be created again: removed behind
/// capstan's back.
fn vanished(obs: &Observation, plan: &Plan) -> BTreeSet<u32> {
    obs.previous
        .iter()
        .flat_map(|p| p.replica_states.iter().map(|r| r.ordinal))
        .filter(|n| plan.create.contains(n))
        .collect()
}

/// [`crate::traffic::Traffic::publish`], with ports that could not be served as problems.
async fn publish(
    ctx: &Context,
    obs: &Observation,
    containers: &[Observed],
    leaving: &BTreeSet<String>,
) -> Result<Vec<Problem>, ReconcileError> {
    let unserved = ctx
        .traffic
        .publish(&obs.service, containers, leaving, obs.started)
        .await?;
    Ok(unserved
        .into_iter()
        .map(|u| Problem {
            ordinal: 0,
            reason: Reason::PortInUse,
            message: format!("cannot listen on {} for the proxy: {}", u.bind, u.error),
        })
        .collect())
}

/// `depends_on: {name: {restart: true}}`: capstan just restarted or replaced a replica of
/// this service, so those dependents restart once it meets its condition again.
fn request_dependent_restarts(ctx: &Context, obs: &Observation) {
    let name = &obs.service.name;
    for dependent in dependents(ctx, &obs.stack, name) {
        if dependent
            .spec
            .depends_on
            .get(name)
            .is_some_and(|d| d.restart)
        {
            ctx.scratch
                .request_restart(&obs.stack.name, &dependent.name, name);
            ctx.scheduler.enqueue(crate::key::ObjectKey::Service(
                obs.stack.name.clone(),
                dependent.name.clone(),
            ));
        }
    }
}

/// Carries out a pending dependent restart: every running replica is restarted.
async fn restart_for_dependencies(
    ctx: &Context,
    obs: &Observation,
    now: &str,
    events: &mut Vec<HealEvent>,
) {
    let service = &obs.service;
    let Some(deps) = ctx.scratch.take_restart(&service.stack, &service.name) else {
        return;
    };
    let deps = deps.join(", ");
    for c in obs.containers.iter().filter(|c| c.state == State::Running) {
        tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, dependencies = %deps, reason = "dependency-restarted", "restarting replica");
        match ctx.runtime.restart(&c.id, shape::grace(service)).await {
            Ok(()) => events.push(heal_event(
                now,
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

/// Carries out a plan: removals first (highest ordinal first), then starts, heals,
/// replacements and creations, concurrently within the engine slots. Failures to create
/// are problems reported in status; failures to remove are errors (retried). Heals are
/// recorded in `events`.
async fn execute(
    ctx: &Context,
    obs: &Observation,
    plan: &Plan,
    details: &BTreeMap<u32, Detail>,
    events: &mut Vec<HealEvent>,
) -> Result<Vec<Problem>, ReconcileError> {
    let service = &obs.service;
    for (c, reason) in &plan.remove {
        tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, reason = ?reason, "removing replica");
    }
    let removals: Vec<Observed> = plan.remove.iter().map(|(c, _)| c.clone()).collect();
    remove_all(ctx, &removals, shape::grace(service)).await?;

    let needs_create = !plan.create.is_empty()
        || !plan.recreate.is_empty()
        || !plan.surge.is_empty()
        || plan.heal.iter().any(|(_, _, a)| *a == HealAction::Replace);
    if needs_create {
        if let Err(e) = stack::ensure_resources(&*ctx.runtime, &obs.stack, &[service]).await {
            // The replicas that run keep running; the status says why the others wait.
            return match e.blocked_reason() {
                Some(reason) => Ok(blocked(plan, reason, &e.to_string())),
                None => Err(e),
            };
        }
    }
    if needs_create || !plan.start.is_empty() || !plan.heal.is_empty() {
        if let Err(e) = ctx.files.write(&ctx.store, service).await {
            if !e.waits_on_a_person() {
                return Err(e.into());
            }
            // Nothing is replaced or created without its files; the replicas that run keep
            // running, and the status says why the others wait.
            return Ok(blocked(plan, Reason::FilesUnavailable, &e.to_string()));
        }
    }
    // No image, no replacement: an outdated replica keeps serving until one can be made.
    let image = match needs_create {
        true => super::pull::ensure_image(ctx, obs).await.err(),
        false => None,
    };
    let creating = image.is_none();

    let now = now_rfc3339();
    let jobs = jobs(ctx, obs, plan, details, &now, creating);
    let mut problems: Vec<Problem> = image.into_iter().collect();
    for (p, e) in with_slots(&ctx.engine_slots, jobs).await {
        problems.extend(p);
        events.extend(e);
    }
    problems.sort_by_key(|p| p.ordinal);
    events.sort_by(|a, b| a.replica.cmp(&b.replica));
    for p in &problems {
        tracing::warn!(stack = %service.stack, service = %service.name, ordinal = p.ordinal, reason = %p.reason, "{}", p.message);
    }
    Ok(problems)
}

/// The engine work of `plan`, one job per replica; what needs a new container only when
/// one can be made (`creating`: the image is there).
fn jobs<'a>(
    ctx: &'a Context,
    obs: &'a Observation,
    plan: &'a Plan,
    details: &'a BTreeMap<u32, Detail>,
    now: &'a str,
    creating: bool,
) -> Vec<BoxFuture<'a, JobResult>> {
    let mut jobs: Vec<BoxFuture<'a, JobResult>> = vec![];
    for c in &plan.start {
        jobs.push(Box::pin(start_job(ctx, c)));
    }
    for (c, reason, action) in &plan.heal {
        if *action == HealAction::Replace && !creating {
            continue;
        }
        jobs.push(Box::pin(heal_job(
            ctx, obs, c, *reason, *action, details, now,
        )));
    }
    for c in plan.recreate.iter().filter(|_| creating) {
        jobs.push(Box::pin(recreate_job(ctx, obs, c)));
    }
    let made = (plan.create.iter().map(|n| (*n, Made::Replica)))
        .chain(plan.surge.iter().map(|n| (*n, Made::Successor)));
    for (n, made) in made.filter(|_| creating) {
        jobs.push(Box::pin(async move {
            let result = create_and_start(ctx, obs, n, made).await;
            (result.err().map(|e| failed_to_make(ctx, obs, n, e)), None)
        }));
    }
    for (old, successor) in &plan.promote {
        jobs.push(Box::pin(promote_job(ctx, obs, old.as_ref(), successor)));
    }
    jobs
}

/// One problem per replica to create or replace, when none can be made until a person acts
/// (the service's files cannot be written, a network or volume is missing or not its own).
fn blocked(plan: &Plan, reason: Reason, message: &str) -> Vec<Problem> {
    let recreate = plan.recreate.iter().filter_map(|c| c.ordinal);
    let made = plan.create.iter().chain(&plan.surge).copied();
    let mut ordinals: Vec<u32> = made.chain(recreate).collect();
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

async fn start_job(ctx: &Context, c: &Observed) -> JobResult {
    let started = ctx.runtime.start(&c.id).await;
    (
        started.err().map(|e| problem(c.ordinal.unwrap_or(0), e)),
        None,
    )
}

async fn heal_job(
    ctx: &Context,
    obs: &Observation,
    c: &Observed,
    reason: HealCause,
    action: HealAction,
    details: &BTreeMap<u32, Detail>,
    now: &str,
) -> JobResult {
    let service = &obs.service;
    let n = c.ordinal.unwrap_or(0);
    let detail = details.get(&n).cloned().unwrap_or_default();
    let reason = if detail.oom_killed {
        HealCause::Oom
    } else {
        reason
    };
    let message = match (reason, c.state, &detail.health_output) {
        (HealCause::PartnerRestarted, ..) => {
            "its partner started again: it joins the partner's new network namespace".into()
        }
        (HealCause::PartnerReplaced, ..) => {
            "its partner was replaced: it is made anew beside the new one".into()
        }
        (_, State::Exited { code }, _) => format!("exited with code {code}"),
        (_, _, Some(out)) => format!("health check failed: {out}"),
        _ => "health check failed".to_string(),
    };
    // Following a partner is not a failure of the sidecar's own: no crash-loop back-off.
    if !matches!(
        reason,
        HealCause::PartnerRestarted | HealCause::PartnerReplaced
    ) {
        ctx.restarts.record(
            &service.stack,
            &service.name,
            n,
            &super::backoff::Timing::of(&service.spec),
        );
    }
    tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, reason = reason.as_str(), action = action.as_str(), "{message}");
    let result = match action {
        HealAction::Start => ctx.runtime.start(&c.id).await,
        HealAction::Restart => ctx.runtime.restart(&c.id, shape::grace(service)).await,
        HealAction::Replace => replace(ctx, obs, c).await,
    };
    match result {
        Ok(()) => (
            None,
            Some(heal_event(now, c.name.clone(), action, reason, message)),
        ),
        Err(e) => (Some(problem(n, e)), None),
    }
}

async fn recreate_job(ctx: &Context, obs: &Observation, c: &Observed) -> JobResult {
    let service = &obs.service;
    tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, "replacing outdated replica");
    let replaced = replace(ctx, obs, c).await;
    let n = c.ordinal.unwrap_or(0);
    (replaced.err().map(|e| failed_to_make(ctx, obs, n, e)), None)
}

/// A replica could not be made: reported (also while it waits), and its next try waits out
/// the replica's back-off.
fn failed_to_make(ctx: &Context, obs: &Observation, ordinal: u32, e: RuntimeError) -> Problem {
    let service = &obs.service;
    ctx.restarts.record(
        &service.stack,
        &service.name,
        ordinal,
        &super::backoff::Timing::of(&service.spec),
    );
    let problem = problem(ordinal, e);
    ctx.scratch
        .unmade(&service.stack, &service.name, problem.clone());
    problem
}

/// A start-first successor takes over: the outdated replica (already drained) is stopped
/// and removed, and the successor takes its name.
async fn promote_job(
    ctx: &Context,
    obs: &Observation,
    old: Option<&Observed>,
    successor: &Observed,
) -> JobResult {
    let service = &obs.service;
    let n = successor.ordinal.unwrap_or(0);
    let name = (service.spec).replica_name(&service.stack, &service.name, n);
    tracing::info!(stack = %service.stack, service = %service.name, replica = %name, successor = %successor.name, "the successor of an outdated replica takes over");
    let promoted = async {
        if let Some(old) = old {
            ctx.runtime.remove(&old.id, shape::grace(service)).await?;
        }
        ctx.runtime.rename(&successor.id, &name).await
    };
    (promoted.await.err().map(|e| problem(n, e)), None)
}

/// Removes `c` and creates its ordinal anew.
async fn replace(ctx: &Context, obs: &Observation, c: &Observed) -> Result<(), RuntimeError> {
    ctx.runtime
        .remove(&c.id, shape::grace(&obs.service))
        .await?;
    create_and_start(ctx, obs, c.ordinal.unwrap_or(0), Made::Replica).await
}

/// What [`create_and_start`] makes of an ordinal.
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

async fn create_and_start(
    ctx: &Context,
    obs: &Observation,
    ordinal: u32,
    made: Made,
) -> Result<(), RuntimeError> {
    let policy = ctx.policy.as_deref();
    if let Some(refused) = policy.and_then(|p| shape::bind_refused(&obs.stack, &obs.service, p)) {
        return Err(refused);
    }
    let mut plan = shape::container(&obs.stack, &obs.service, ordinal);
    if made == Made::Successor {
        let service = &obs.service;
        plan.name = (service.spec).successor_name(&service.stack, &service.name, ordinal);
    }
    plan.mounts.extend(ctx.files.binds(&obs.service));
    if let Some(pairing) = &obs.pairing {
        pairing.attach(&mut plan, ordinal);
    }
    let id = ctx.runtime.create(&plan).await?;
    if let Err(e) = ctx.runtime.start(&id).await {
        // A replica that cannot start is removed rather than left half-made.
        let _ = ctx.runtime.remove(&id, Duration::ZERO).await;
        return Err(e);
    }
    Ok(())
}

fn problem(ordinal: u32, e: RuntimeError) -> Problem {
    Problem {
        ordinal,
        reason: reason_of(&e),
        message: e.to_string(),
    }
}

/// The status reason an engine failure is reported under.
fn reason_of(e: &RuntimeError) -> Reason {
    match e {
        RuntimeError::NameConflict { .. } => Reason::NameConflict,
        RuntimeError::ImageNotFound(_) => Reason::ImageNotFound,
        RuntimeError::Pull { .. } => Reason::ImagePullBackOff,
        RuntimeError::ExternalMissing { .. } => Reason::ExternalMissing,
        RuntimeError::NotOwned { .. } => Reason::NotOwned,
        RuntimeError::BindRefused { .. } => Reason::BindRefused,
        e if e.is_port_in_use() => Reason::PortInUse,
        e if e.is_network_error() => Reason::NetworkError,
        RuntimeError::Engine { .. } | RuntimeError::TooOld { .. } | RuntimeError::Fenced { .. } => {
            Reason::EngineError
        }
    }
}

/// Stops and removes `containers` concurrently within the engine slots.
pub(super) async fn remove_all(
    ctx: &Context,
    containers: &[Observed],
    grace: Duration,
) -> Result<(), ReconcileError> {
    let jobs: Vec<BoxFuture<'_, Result<(), ReconcileError>>> = containers
        .iter()
        .map(|c| -> BoxFuture<'_, _> {
            Box::pin(async move {
                let removed = ctx.runtime.remove(&c.id, grace).await;
                removed.map_err(|source| ReconcileError::Remove {
                    name: c.name.clone(),
                    source,
                })
            })
        })
        .collect();
    with_slots(&ctx.engine_slots, jobs)
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
