//! `reconcile(key, ctx) -> Result<Action>`: level-triggered and idempotent. It never learns
//! why it was called; it reads the desired state from the cache and the actual state from
//! the engine, closes the gap, and writes status last.
//!
//! - [`plan`]: what to do, decided purely from spec and observed containers.
//! - [`shape`]: the containers, networks and volumes a spec turns into.
//! - [`status`]: the status, computed purely from what was observed.
//! - [`backoff`]: per-replica crash-loop back-off.
//! - [`deps`]: whether `depends_on` conditions hold, asked on every reconcile.

pub mod backoff;
pub mod deps;
pub mod plan;
pub mod shape;
pub mod status;

use capstan_api::object::{HealEvent, Service, Stack};
use futures::future::{BoxFuture, FutureExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::cache::{Cache, ObjectKey};
use crate::metrics::{Drift, Metrics};
use crate::runtime::{Detail, Health, Observed, ResourcePlan, Runtime, RuntimeError, State};
use crate::scheduler::Scheduler;
use crate::store::{now_rfc3339, Store, StoreError};
use crate::traffic::proxy::Proxies;
use crate::traffic::{endpoints, traefik};
use backoff::RestartBook;
use deps::Gate;
use plan::{HealAction, Plan};
use status::Problem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

/// What the reconciler needs, shared by every worker.
pub struct Context {
    pub store: Store,
    pub runtime: Arc<dyn Runtime>,
    pub cache: Arc<Cache>,
    pub scheduler: Arc<Scheduler<ObjectKey>>,
    pub restarts: RestartBook,
    /// Dependents to restart because capstan restarted a dependency they declared
    /// `restart: true` on: (stack, service) → those dependencies.
    pub dependent_restarts: Mutex<HashMap<(String, String), BTreeSet<String>>>,
    /// The built-in proxy's listeners.
    pub proxies: Proxies,
    /// `serve --traefik-etcd-root`: also write Traefik's etcd KV layout under this root.
    pub traefik_root: Option<String>,
    pub metrics: Arc<Metrics>,
    /// Replica operations (create+start, stop+remove, restart) in flight across all
    /// reconciles. One service's replicas go to the engine at once up to this bound, so a
    /// big scale-up is as fast as the engine allows, and many services together cannot
    /// swamp it (`serve --engine-parallelism`).
    pub engine_slots: tokio::sync::Semaphore,
}

/// When to look at a key again, besides events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more to wait for; events and the periodic resync will call again.
    AwaitChange,
    Requeue(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing containers: {0}")]
    List(#[source] RuntimeError),
    #[error("preparing {kind} {name}: {source}")]
    Resource {
        kind: &'static str,
        name: String,
        source: RuntimeError,
    },
    #[error("removing container {name}: {source}")]
    Remove { name: String, source: RuntimeError },
    #[error("removing {kind} {name}: {source}")]
    RemoveResource {
        kind: &'static str,
        name: String,
        source: RuntimeError,
    },
    #[error("writing status: {0}")]
    Status(#[source] StoreError),
    #[error("finalizing the deletion of stack {stack}: {source}")]
    Finalize { stack: String, source: StoreError },
    #[error("writing endpoints: {0}")]
    Endpoints(#[source] StoreError),
    /// A bug: reconcile panicked. Retried slowly.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

impl ReconcileError {
    /// The `kind` label of `capstan_reconcile_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::List(_) => "list",
            ReconcileError::Resource { .. } => "resource",
            ReconcileError::Remove { .. } | ReconcileError::RemoveResource { .. } => "remove",
            ReconcileError::Status(_) => "status",
            ReconcileError::Finalize { .. } => "finalize",
            ReconcileError::Endpoints(_) => "endpoints",
            ReconcileError::Panicked(_) => "panic",
        }
    }
}

/// Creates the networks and named volumes `services` use (idempotent); returns the networks.
async fn ensure_resources(
    ctx: &Context,
    stack: &Stack,
    services: &[&Service],
) -> Result<Vec<ResourcePlan>, ReconcileError> {
    let networks = shape::networks(stack, services);
    for net in &networks {
        ctx.runtime
            .ensure_network(net)
            .await
            .map_err(resource("network", net.name.clone()))?;
    }
    for vol in shape::volumes(stack, services) {
        ctx.runtime
            .ensure_volume(&vol)
            .await
            .map_err(resource("volume", vol.name.clone()))?;
    }
    Ok(networks)
}

/// `map_err` for a failed network or volume operation.
fn resource(kind: &'static str, name: String) -> impl FnOnce(RuntimeError) -> ReconcileError {
    move |source| ReconcileError::Resource { kind, name, source }
}

/// How long to wait before retrying a key whose reconcile failed.
pub fn error_policy(err: &ReconcileError) -> Duration {
    match err {
        ReconcileError::Panicked(_) => Duration::from_secs(30),
        ReconcileError::Resource {
            source: RuntimeError::ExternalMissing { .. },
            ..
        } => Duration::from_secs(15),
        _ => Duration::from_secs(2),
    }
}

/// How long an unconverged service waits before it is looked at again without an event.
const UNCONVERGED_RECHECK: Duration = Duration::from_secs(10);

pub async fn reconcile(key: &ObjectKey, ctx: &Context) -> Result<Action, ReconcileError> {
    if !ctx.cache.is_synced() {
        // Frozen: never act on desired state we could not read.
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    match key {
        ObjectKey::Service(stack, service) => reconcile_service(stack, service, ctx).await,
        ObjectKey::Stack(stack) => reconcile_stack(stack, ctx).await,
    }
}

async fn reconcile_service(
    stack_name: &str,
    name: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let stack = ctx.cache.stack(stack_name);
    let service = ctx.cache.service(stack_name, name);
    let observed = list(ctx, stack_name, name).await?;

    let Some(stack) = stack else {
        if !observed.is_empty() {
            // Not ours to judge: etcd has no record of this stack (another installation, or a
            // lost etcd). Desired state is never inferred from an absence.
            tracing::debug!(
                stack = stack_name,
                service = name,
                containers = observed.len(),
                "containers of an unknown stack left alone"
            );
        }
        return Ok(Action::AwaitChange);
    };
    let removed = stack.deletion.is_some() || !stack.services.iter().any(|s| s == name);
    let service = match (removed, service) {
        (false, Some(svc)) => svc,
        (false, None) => return Ok(Action::Requeue(Duration::from_secs(1))),
        (true, svc) => {
            unpublish(ctx, stack_name, name).await?;
            ctx.metrics.forget_service(stack_name, name);
            let grace = svc.as_deref().map_or(shape::DEFAULT_GRACE, shape::grace);
            remove_all(ctx, &observed, grace).await?;
            if ctx.cache.status(stack_name, name).is_some() && stack.deletion.is_none() {
                ctx.store
                    .delete_status(stack_name, name)
                    .await
                    .map_err(ReconcileError::Status)?;
                ctx.cache.set_status(stack_name, name, None);
            }
            ctx.restarts.forget_service(stack_name, name);
            if stack.deletion.is_some() {
                ctx.scheduler
                    .enqueue(ObjectKey::Stack(stack_name.to_string()));
            }
            return Ok(Action::AwaitChange);
        }
    };

    let gate = dependency_gate(ctx, &stack, &service).await?;
    let plan = plan::plan(
        stack_name,
        name,
        &service.spec,
        &observed,
        &ctx.restarts.for_service(stack_name, name),
        gate.is_open(),
    );
    let previous = ctx.cache.status(stack_name, name);
    if previous
        .as_ref()
        .is_some_and(|p| p.observed_generation != service.generation)
    {
        ctx.metrics.generation_changed(stack_name, name);
    }
    let now = now_rfc3339();

    // What only an inspect tells (OOM kill, last health output), for the replicas about to be
    // healed or held back: never for healthy ones.
    let mut details = BTreeMap::new();
    let looked_at = plan
        .heal
        .iter()
        .map(|(c, _, _)| c)
        .chain(observed.iter().filter(|c| c.health == Health::Unhealthy));
    for c in looked_at {
        if let (Some(n), Ok(d)) = (c.ordinal, ctx.runtime.inspect(&c.id).await) {
            details.insert(n, d);
        }
    }
    // Replicas the last status listed that are gone now were removed behind capstan's back.
    let vanished: BTreeSet<u32> = previous
        .iter()
        .flat_map(|p| p.replica_states.iter().map(|r| r.ordinal))
        .filter(|n| plan.create.contains(n))
        .collect();

    // Traffic leaves first: replicas about to be stopped, restarted or replaced are taken out
    // of the endpoints and the proxy, their open connections drain, and only then are they
    // touched.
    let leaving: BTreeSet<String> = plan
        .remove
        .iter()
        .map(|(c, _)| c)
        .chain(plan.recreate.iter())
        .chain(plan.heal.iter().map(|(c, _, _)| c))
        .map(|c| c.id.clone())
        .collect();
    let mut problems = publish(ctx, &service, &observed, &leaving, started).await?;
    if !leaving.is_empty() {
        let draining: Vec<SocketAddr> = observed
            .iter()
            .filter(|c| leaving.contains(&c.id))
            .flat_map(|c| {
                let ip = c.addresses.values().next().and_then(|ip| ip.parse().ok());
                service
                    .spec
                    .ports
                    .iter()
                    .filter(|p| p.proxied())
                    .filter_map(move |p| Some(SocketAddr::new(ip?, p.container_port)))
            })
            .collect();
        if !draining.is_empty() {
            ctx.proxies.drain(&draining, shape::grace(&service)).await;
        }
    }

    let mut events = vec![];
    if !plan.is_empty() {
        problems.extend(execute(ctx, &stack, &service, &plan, &details, &mut events).await?);
    }
    let failed: BTreeSet<u32> = problems.iter().map(|p| p.ordinal).collect();
    for n in vanished.iter().filter(|n| !failed.contains(n)) {
        let replica = capstan_api::names::container(stack_name, name, *n);
        tracing::info!(stack = stack_name, service = name, replica = %replica, reason = "removed", "replaced a removed replica");
        events.push(heal_event(
            &now,
            replica,
            "replace",
            "removed",
            "the container was removed; a new one was created".into(),
        ));
    }
    if !events.is_empty() {
        request_dependent_restarts(ctx, &stack, name);
    }
    if gate.is_open() {
        restart_for_dependencies(ctx, &service, &observed, &now, &mut events).await;
    }

    let acted = !plan.is_empty() || !events.is_empty();
    let observed = if acted {
        list(ctx, stack_name, name).await?
    } else {
        observed
    };
    if acted {
        problems.extend(publish(ctx, &service, &observed, &BTreeSet::new(), started).await?);
    }
    let health_output: BTreeMap<u32, String> = details
        .iter()
        .filter_map(|(n, d)| Some((*n, d.health_output.clone()?)))
        .collect();
    for e in &events {
        ctx.metrics.heal(stack_name, name, &e.reason);
    }
    let strays = plan
        .remove
        .iter()
        .filter(|(_, r)| *r == plan::RemoveReason::Stray)
        .count();
    let drift = Drift::of(&service, &observed, (vanished.len() + strays) as u32);
    let history = ctx.restarts.for_service(stack_name, name);
    let status = status::compute(status::Inputs {
        service: &service,
        observed: &observed,
        plan: &plan,
        gate: &gate,
        problems: &problems,
        history: &history,
        health_output: &health_output,
        new_events: events,
        previous: previous.as_deref(),
        now: &now,
    });
    ctx.metrics.observe_service(&service, &status, drift);
    if previous.as_deref() != Some(&status) {
        // Guarded by the spec's resourceVersion: a status for a superseded spec is dropped.
        if ctx
            .store
            .write_status(&service, &status)
            .await
            .map_err(ReconcileError::Status)?
        {
            ctx.cache.set_status(stack_name, name, Some(status.clone()));
        }
        // Dependents decide on this service's state: let them look again.
        for dependent in dependents(ctx, &stack, name) {
            ctx.scheduler
                .enqueue(ObjectKey::Service(stack_name.to_string(), dependent));
        }
    }

    Ok(match plan.backing_off.values().min() {
        Some(left) => Action::Requeue(*left),
        None if status.is_ready() => Action::AwaitChange,
        None => Action::Requeue(UNCONVERGED_RECHECK),
    })
}

/// Points the service's proxied host ports at its endpoints, and writes the endpoints (and
/// Traefik's KV layout) when they changed. A host port that cannot be bound is a problem
/// reported in status.
async fn publish(
    ctx: &Context,
    service: &Service,
    observed: &[Observed],
    leaving: &BTreeSet<String>,
    reconcile_started: Instant,
) -> Result<Vec<Problem>, ReconcileError> {
    let eps = endpoints::compute(service, observed, leaving);
    let mut problems = vec![];
    let mut keep = vec![];
    for p in service.spec.ports.iter().filter(|p| p.proxied()) {
        let (host_port, _) = p.host_ports.unwrap_or_default();
        let ip: IpAddr = p
            .host_ip
            .as_deref()
            .unwrap_or("0.0.0.0")
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        keep.push(host_port);
        let bind = SocketAddr::new(ip, host_port);
        if let Err(e) = ctx
            .proxies
            .serve(
                &service.stack,
                &service.name,
                bind,
                endpoints::backends(&eps, p.container_port),
            )
            .await
        {
            problems.push(Problem {
                ordinal: 0,
                reason: "PortInUse",
                message: format!("cannot listen on {bind} for the proxy: {e}"),
            });
        }
    }
    ctx.proxies.retain(&service.stack, &service.name, &keep);
    let mut written_after = None;
    if ctx
        .cache
        .endpoints(&service.stack, &service.name)
        .as_deref()
        != Some(&eps)
    {
        ctx.store
            .write_endpoints(&eps)
            .await
            .map_err(ReconcileError::Endpoints)?;
        if let Some(root) = &ctx.traefik_root {
            let (prefix, pairs) = traefik::kv_pairs(root, service, Some(&eps));
            ctx.store
                .replace_subtree(&prefix, pairs)
                .await
                .map_err(ReconcileError::Endpoints)?;
        }
        tracing::debug!(stack = %service.stack, service = %service.name, endpoints = eps.endpoints.len(), "endpoints updated");
        written_after = Some(reconcile_started.elapsed());
        ctx.cache.set_endpoints(eps.clone());
    }
    ctx.metrics.endpoints(
        &service.stack,
        &service.name,
        eps.endpoints.len(),
        written_after,
    );
    Ok(problems)
}

/// Takes a removed service out of traffic: proxy, endpoints, Traefik.
async fn unpublish(ctx: &Context, stack: &str, name: &str) -> Result<(), ReconcileError> {
    ctx.proxies.retain(stack, name, &[]);
    if ctx.cache.endpoints(stack, name).is_some() {
        ctx.store
            .delete_endpoints(stack, name)
            .await
            .map_err(ReconcileError::Endpoints)?;
        if let Some(root) = &ctx.traefik_root {
            let prefix = format!(
                "{}/http/services/{stack}-{name}/",
                root.trim_end_matches('/')
            );
            ctx.store
                .replace_subtree(&prefix, vec![])
                .await
                .map_err(ReconcileError::Endpoints)?;
        }
        ctx.cache.forget_endpoints(stack, name);
    }
    Ok(())
}

async fn list(ctx: &Context, stack: &str, service: &str) -> Result<Vec<Observed>, ReconcileError> {
    ctx.runtime
        .list(Some(stack), Some(service))
        .await
        .map_err(ReconcileError::List)
}

/// Whether the service's dependencies meet their conditions, judged from their containers
/// as the engine reports them now (not from their possibly stale status).
async fn dependency_gate(
    ctx: &Context,
    stack: &Stack,
    service: &Service,
) -> Result<Gate, ReconcileError> {
    if service.spec.depends_on.is_empty() {
        return Ok(Gate::Open);
    }
    let mut states = vec![];
    for dep in service.spec.depends_on.keys() {
        let record = ctx
            .cache
            .service(&stack.name, dep)
            .filter(|_| stack.services.contains(dep));
        let observed = list(ctx, &stack.name, dep).await?;
        states.push((dep.clone(), record, observed));
    }
    let views: Vec<deps::DependencyState> = states
        .iter()
        .map(|(name, record, observed)| deps::DependencyState {
            name,
            service: record.as_deref(),
            observed,
        })
        .collect();
    Ok(deps::gate(&service.spec, &views))
}

/// The services of `stack` that depend on `name`.
fn dependents(ctx: &Context, stack: &Stack, name: &str) -> Vec<String> {
    stack
        .services
        .iter()
        .filter(|s| {
            ctx.cache
                .service(&stack.name, s)
                .is_some_and(|svc| svc.spec.depends_on.contains_key(name))
        })
        .cloned()
        .collect()
}

/// `depends_on: {name: {restart: true}}`: capstan just restarted or replaced a replica of
/// `name`, so those dependents restart once the dependency meets its condition again.
fn request_dependent_restarts(ctx: &Context, stack: &Stack, name: &str) {
    for dependent in dependents(ctx, stack, name) {
        let wants = ctx
            .cache
            .service(&stack.name, &dependent)
            .is_some_and(|svc| svc.spec.depends_on.get(name).is_some_and(|d| d.restart));
        if wants {
            ctx.dependent_restarts
                .lock()
                .unwrap()
                .entry((stack.name.clone(), dependent.clone()))
                .or_default()
                .insert(name.to_string());
            ctx.scheduler
                .enqueue(ObjectKey::Service(stack.name.clone(), dependent));
        }
    }
}

/// Carries out a pending dependent restart: every running replica is restarted.
async fn restart_for_dependencies(
    ctx: &Context,
    service: &Service,
    observed: &[Observed],
    now: &str,
    events: &mut Vec<HealEvent>,
) {
    let key = (service.stack.clone(), service.name.clone());
    let Some(deps) = ctx.dependent_restarts.lock().unwrap().remove(&key) else {
        return;
    };
    let deps: Vec<String> = deps.into_iter().collect();
    for c in observed.iter().filter(|c| c.state == State::Running) {
        tracing::info!(stack = %service.stack, service = %service.name, replica = %c.name, dependencies = %deps.join(","), reason = "dependency-restarted", "restarting replica");
        match ctx.runtime.restart(&c.id, shape::grace(service)).await {
            Ok(()) => events.push(heal_event(
                now,
                c.name.clone(),
                "restart",
                "dependency-restarted",
                format!("capstan restarted its dependency {}", deps.join(", ")),
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
    action: &str,
    reason: &str,
    message: String,
) -> HealEvent {
    HealEvent {
        time: now.to_string(),
        replica,
        action: action.into(),
        reason: reason.into(),
        message,
    }
}

/// Carries out a plan: removals first (highest ordinal first), then starts, heals,
/// replacements and creations, a few at a time. Failures to create are problems reported
/// in status; failures to remove are errors (retried). Heals are recorded in `events`.
async fn execute(
    ctx: &Context,
    stack: &Stack,
    service: &Service,
    plan: &Plan,
    details: &BTreeMap<u32, Detail>,
    events: &mut Vec<HealEvent>,
) -> Result<Vec<Problem>, ReconcileError> {
    let grace = shape::grace(service);
    let removals: Vec<Observed> = plan.remove.iter().map(|(c, _)| c.clone()).collect();
    for (c, reason) in &plan.remove {
        tracing::info!(stack = %stack.name, service = %service.name, replica = %c.name, reason = ?reason, "removing replica");
    }
    remove_all(ctx, &removals, grace).await?;

    let needs_create = !plan.create.is_empty()
        || !plan.recreate.is_empty()
        || plan.heal.iter().any(|(_, _, a)| *a == HealAction::Replace);
    if needs_create {
        ensure_resources(ctx, stack, &[service]).await?;
    }

    let now = now_rfc3339();
    type Outcome = (Option<Problem>, Option<HealEvent>);
    let mut jobs: Vec<BoxFuture<'_, Outcome>> = vec![];
    for c in &plan.start {
        jobs.push(Box::pin(async move {
            (
                ctx.runtime
                    .start(&c.id)
                    .await
                    .err()
                    .map(|e| problem(c.ordinal.unwrap_or(0), e)),
                None,
            )
        }));
    }
    for (c, reason, action) in &plan.heal {
        let now = now.clone();
        jobs.push(Box::pin(async move {
            let n = c.ordinal.unwrap_or(0);
            let detail = details.get(&n).cloned().unwrap_or_default();
            let reason = if detail.oom_killed { "oom" } else { reason.as_str() };
            let message = match (c.state, &detail.health_output) {
                (State::Exited { code }, _) => format!("exited with code {code}"),
                (_, Some(out)) => format!("health check failed: {out}"),
                _ => "health check failed".to_string(),
            };
            ctx.restarts.record(&stack.name, &service.name, n);
            tracing::info!(stack = %stack.name, service = %service.name, replica = %c.name, reason, action = action.as_str(), "{message}");
            let result = match action {
                HealAction::Start => ctx.runtime.start(&c.id).await,
                HealAction::Restart => ctx.runtime.restart(&c.id, grace).await,
                HealAction::Replace => match ctx.runtime.remove(&c.id, grace).await {
                    Ok(()) => create_and_start(ctx, stack, service, n).await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => (None, Some(heal_event(&now, c.name.clone(), action.as_str(), reason, message))),
                Err(e) => (Some(problem(n, e)), None),
            }
        }));
    }
    for c in &plan.recreate {
        jobs.push(Box::pin(async move {
            let n = c.ordinal.unwrap_or(0);
            tracing::info!(stack = %stack.name, service = %service.name, replica = %c.name, "replacing outdated replica");
            let r = match ctx.runtime.remove(&c.id, grace).await {
                Ok(()) => create_and_start(ctx, stack, service, n).await,
                Err(e) => Err(e),
            };
            (r.err().map(|e| problem(n, e)), None)
        }));
    }
    for n in &plan.create {
        jobs.push(Box::pin(async move {
            (
                create_and_start(ctx, stack, service, *n)
                    .await
                    .err()
                    .map(|e| problem(*n, e)),
                None,
            )
        }));
    }
    let results: Vec<Outcome> = with_slots(&ctx.engine_slots, jobs).await;
    let mut problems = vec![];
    for (p, e) in results {
        problems.extend(p);
        events.extend(e);
    }
    problems.sort_by_key(|p| p.ordinal);
    events.sort_by(|a, b| a.replica.cmp(&b.replica));
    for p in &problems {
        tracing::warn!(stack = %stack.name, service = %service.name, ordinal = p.ordinal, reason = p.reason, "{}", p.message);
    }
    Ok(problems)
}

/// Runs replica operations concurrently, each holding one of the daemon's engine slots;
/// results in the order of `jobs`.
async fn with_slots<T>(slots: &tokio::sync::Semaphore, jobs: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    futures::future::join_all(jobs.into_iter().map(|job| async {
        // The semaphore is never closed, so acquiring only waits.
        let _slot = slots.acquire().await;
        job.await
    }))
    .await
}

async fn create_and_start(
    ctx: &Context,
    stack: &Stack,
    service: &Service,
    ordinal: u32,
) -> Result<(), RuntimeError> {
    let plan = shape::container(stack, service, ordinal);
    let id = ctx.runtime.create(&plan).await?;
    if let Err(e) = ctx.runtime.start(&id).await {
        // A replica that cannot start is removed rather than left half-made.
        let _ = ctx.runtime.remove(&id, Duration::ZERO).await;
        return Err(e);
    }
    Ok(())
}

fn problem(ordinal: u32, e: RuntimeError) -> Problem {
    let reason = match &e {
        RuntimeError::NameConflict { .. } => "NameConflict",
        RuntimeError::ImageNotFound(_) => "ImageNotFound",
        RuntimeError::ExternalMissing { .. } => "ExternalMissing",
        RuntimeError::Engine { .. } => "EngineError",
    };
    Problem {
        ordinal,
        reason,
        message: e.to_string(),
    }
}

async fn remove_all(
    ctx: &Context,
    containers: &[Observed],
    grace: Duration,
) -> Result<(), ReconcileError> {
    let mut jobs: Vec<BoxFuture<'_, Result<(), ReconcileError>>> = vec![];
    for c in containers {
        jobs.push(Box::pin(async move {
            ctx.runtime
                .remove(&c.id, grace)
                .await
                .map_err(|source| ReconcileError::Remove {
                    name: c.name.clone(),
                    source,
                })
        }));
    }
    with_slots(&ctx.engine_slots, jobs)
        .await
        .into_iter()
        .collect()
}

async fn reconcile_stack(name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(stack) = ctx.cache.stack(name) else {
        return Ok(Action::AwaitChange);
    };
    let Some(deletion) = &stack.deletion else {
        return ensure_stack_resources(&stack, ctx).await;
    };
    let result = tear_down(&stack, deletion, ctx).await;
    ctx.cache
        .set_deletion_blocked(name, result.as_ref().err().map(|e| e.to_string()));
    result
}

/// Removes a deleted stack's containers, then its networks (and volumes, if asked), then its
/// keys.
async fn tear_down(
    stack: &Stack,
    deletion: &capstan_api::object::Deletion,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = stack.name.as_str();
    let left = ctx
        .runtime
        .list(Some(name), None)
        .await
        .map_err(ReconcileError::List)?;
    if !left.is_empty() {
        let services: BTreeSet<String> = left.into_iter().map(|c| c.service).collect();
        for svc in services {
            ctx.scheduler
                .enqueue(ObjectKey::Service(name.to_string(), svc));
        }
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    for net in ctx
        .runtime
        .stack_networks(name)
        .await
        .map_err(resource("network", name.into()))?
    {
        ctx.runtime.remove_network(&net).await.map_err(|source| {
            ReconcileError::RemoveResource {
                kind: "network",
                name: net.clone(),
                source,
            }
        })?;
    }
    if deletion.volumes {
        for vol in ctx
            .runtime
            .stack_volumes(name)
            .await
            .map_err(resource("volume", name.into()))?
        {
            ctx.runtime.remove_volume(&vol).await.map_err(|source| {
                ReconcileError::RemoveResource {
                    kind: "volume",
                    name: vol.clone(),
                    source,
                }
            })?;
        }
    }
    ctx.store
        .finalize_deletion(stack)
        .await
        .map_err(|source| ReconcileError::Finalize {
            stack: name.into(),
            source,
        })?;
    tracing::info!(stack = name, volumes = deletion.volumes, "stack deleted");
    Ok(Action::AwaitChange)
}

/// Creates the networks and volumes the stack's services use, and removes capstan-made
/// networks the stack no longer uses.
async fn ensure_stack_resources(stack: &Stack, ctx: &Context) -> Result<Action, ReconcileError> {
    let services: Vec<Arc<Service>> = stack
        .services
        .iter()
        .filter_map(|s| ctx.cache.service(&stack.name, s))
        .collect();
    let refs: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    let wanted = ensure_resources(ctx, stack, &refs).await?;
    let mut action = Action::AwaitChange;
    for net in ctx
        .runtime
        .stack_networks(&stack.name)
        .await
        .map_err(resource("network", stack.name.clone()))?
    {
        if !wanted.iter().any(|w| w.name == net) {
            if let Err(e) = ctx.runtime.remove_network(&net).await {
                // Still attached to a replica being removed: try again shortly.
                tracing::debug!(network = %net, error = %e, "unused network not removed yet");
                action = Action::Requeue(Duration::from_secs(2));
            }
        }
    }
    Ok(action)
}

/// A worker: takes keys from the scheduler until shutdown, one at a time.
pub async fn worker(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let key = tokio::select! {
            k = ctx.scheduler.next() => k,
            _ = shutdown.changed() => return,
        };
        let started = Instant::now();
        // A bug in one reconcile must not take its worker down with the key still marked as
        // running: that service would never be reconciled again.
        let result = match std::panic::AssertUnwindSafe(reconcile(&key, &ctx))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(key = %key, panic = %msg, "reconcile panicked; this is a bug");
                Err(ReconcileError::Panicked(msg))
            }
        };
        tracing::debug!(key = %key, result = ?result.as_ref().map_err(|e| e.to_string()), took_ms = started.elapsed().as_millis() as u64, "reconciled");
        let kind = match key {
            ObjectKey::Service(..) => "service",
            ObjectKey::Stack(_) => "stack",
        };
        match result {
            Ok(Action::AwaitChange) => {
                ctx.metrics
                    .reconciled(kind, "success", started.elapsed(), None)
            }
            Ok(Action::Requeue(after)) => {
                ctx.metrics
                    .reconciled(kind, "requeue", started.elapsed(), None);
                ctx.scheduler.enqueue_after(key.clone(), after)
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "reconcile failed; will retry");
                ctx.metrics
                    .reconciled(kind, "error", started.elapsed(), Some(e.kind()));
                ctx.scheduler.enqueue_after(key.clone(), error_policy(&e));
            }
        }
        ctx.scheduler.done(&key);
        ctx.metrics.set_queue_depth(ctx.scheduler.depth());
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
