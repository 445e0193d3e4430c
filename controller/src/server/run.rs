//! `POST /v1/stacks/{stack}/services/{service}/run`: a one-off container made from a
//! service's spec, as `docker compose run` makes one (migrations, admin tasks): on the
//! service's networks, with its environment, volumes, secrets and configs, but no published
//! ports and no network alias (the service's name never resolves to it). Its output is
//! streamed as NDJSON [`RunRecord`]s ending with its exit code.
//!
//! It is never a replica: it carries [`names::ONEOFF_STACK`] instead of [`names::STACK`], so
//! the reconciler, the endpoints and the event triggers never see it. It is removed in every
//! case: when it exits, when the client goes away (stopped first, within the service's stop
//! grace), when the daemon stops; and a daemon that starts removes exited one-offs that a
//! daemon killed mid-run left behind ([`sweep`]). Any daemon may run one, leader or not: it
//! changes nothing the controller owns.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use capstan_api::names;
use capstan_api::object::{ErrorBody, Service, Stack};
use capstan_api::run::{RunRecord, RunRequest};
use capstan_api::FieldError;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::ApiState;
use crate::reconcile::containers::shape;
use crate::reconcile::error::ReconcileError;
use crate::runtime::{ContainerConfig, LogStream, OneOff, Runtime, RuntimeError};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(run))
}

/// A refused run: the status and the documented JSON error.
struct Refusal(StatusCode, ErrorBody);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn error(status: StatusCode, error: String, details: Vec<FieldError>) -> Refusal {
    Refusal(status, ErrorBody { error, details })
}

/// A one-off container of the service (`capstan run`), as `docker compose run` makes it.
#[utoipa::path(post, path = "/v1/stacks/{stack}/services/{service}/run", tag = "services",
    params(("stack" = String, Path, description = "The stack's name."), ("service" = String, Path, description = "The service's name in the stack.")),
    request_body(content = RunRequest, description = "The command and extra environment, if any."),
    responses(
        (status = 200, description = "The container's life, one JSON `RunRecord` a line (NDJSON): started, its output, its exit.",
            body = RunRecord, content_type = "application/x-ndjson"),
        (status = 400, description = "The body is not a valid `RunRequest`: each field in `details`.", body = ErrorBody),
        (status = 403, description = "The caller's policy profile refuses the service (each field in `details`) or its binds as the host now resolves them.", body = ErrorBody),
        (status = 404, description = "No such stack or service.", body = ErrorBody),
        (status = 413, description = "The request is over 1 MiB.", body = ErrorBody),
        (status = 409, description = "The image or an external resource is missing, a name is taken, or a sidecar's partner cannot take it.", body = ErrorBody),
        (status = 500, description = "The run ended before its container started.", body = ErrorBody),
        (status = 502, description = "The engine failed.", body = ErrorBody),
    ))]
async fn run(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<super::caller::Caller>,
    Path((stack, service)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let req = match request(&body) {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    super::audit::note(super::audit::run_summary(&service, req.command.as_deref()));
    let (Some(stack), Some(service)) = (
        st.desired.stack(&stack),
        st.desired.service(&stack, &service),
    ) else {
        let why = format!("service {service} not found in stack {stack}");
        return error(StatusCode::NOT_FOUND, why, vec![]).into_response();
    };
    // A one-off runs the caller's command with the service's privileges: the caller's
    // profile must allow the service, whoever applied it.
    let (profile, in_force) = match super::stacks::profile_of(&st, &caller) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let refused = in_force.attribute(profile.policy.check_service(&service.name, &service.spec));
    if !refused.is_empty() {
        let why = format!(
            "refused by policy: {} problem(s); nothing was run",
            refused.len()
        );
        return error(StatusCode::FORBIDDEN, why, refused).into_response();
    }
    if let Some(refused) = shape::bind_refused(&stack, &service, profile.policy) {
        return error(StatusCode::FORBIDDEN, refused.to_string(), vec![]).into_response();
    }
    let mut plan = oneoff(&stack, &service, &req);
    plan.mounts.extend(st.files.binds(&service));
    if let Err(refusal) = pair(&st, &stack, &service, &mut plan).await {
        return refusal.into_response();
    }
    // The container's life is a task of its own: were this handler dropped (its client
    // gone) between the create and the stream, the task still removes the container.
    let (tx, rx) = mpsc::channel::<RunRecord>(256);
    let (started, ready) = tokio::sync::oneshot::channel();
    let (runtime, stop) = (st.runtime.clone(), st.stop.clone());
    tokio::spawn(async move {
        match start(&*runtime, &stack, &service, &plan).await {
            Err(refusal) => {
                let _ = started.send(Err(refusal));
            }
            Ok((id, output)) => {
                tracing::info!(stack = %stack.name, service = %service.name, container = %plan.name, "one-off container started");
                let _ = started.send(Ok(()));
                let one = OneOffRun {
                    runtime,
                    id,
                    name: plan.name,
                    grace: shape::grace(&service),
                };
                one.follow(output, tx, stop).await;
            }
        }
    });
    match ready.await {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return refusal.into_response(),
        Err(_) => {
            let why = "the run ended before its container started".to_string();
            return error(StatusCode::INTERNAL_SERVER_ERROR, why, vec![]).into_response();
        }
    }
    super::logs::ndjson(rx)
}

/// A sidecar's one-off joins its partners' first replica, as `docker compose run` joins
/// the partner's first container; a 409 while that replica cannot take it.
async fn pair(
    st: &ApiState,
    stack: &Stack,
    service: &Service,
    plan: &mut ContainerConfig,
) -> Result<(), Refusal> {
    if service.spec.partners().next().is_none() {
        return Ok(());
    }
    let pairing =
        crate::reconcile::containers::pairing::for_run(&*st.runtime, &st.desired, stack, service)
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), vec![]))?;
    if let Some(why) = pairing.waits(&stack.name, 1) {
        let why = format!(
            "{} is a sidecar, and its one-off waits for {why}",
            service.name
        );
        return Err(error(StatusCode::CONFLICT, why, vec![]));
    }
    pairing.attach(plan, 1);
    Ok(())
}

/// The body, or a 400 naming the field.
fn request(body: &[u8]) -> Result<RunRequest, Refusal> {
    let req: RunRequest = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid run request: {e}"),
            vec![],
        )
    })?;
    let problems: Vec<FieldError> = (req.problems().into_iter())
        .map(|(field, reason)| FieldError { field, reason })
        .collect();
    if !problems.is_empty() {
        let why = format!("invalid run request: {} problem(s)", problems.len());
        return Err(error(StatusCode::BAD_REQUEST, why, problems));
    }
    Ok(req)
}

/// The container `docker compose run` would make of `service`: replica 1's shape (so a
/// per-replica volume is replica 1's), under a name of its own, without ports, aliases or
/// fixed addresses, and with the request's command and extra environment.
fn oneoff(stack: &Stack, service: &Service, req: &RunRequest) -> ContainerConfig {
    let mut plan = shape::container(stack, service, 1);
    let mut suffix = [0u8; 6];
    // Should the kernel give no randomness, a second run at once meets a name conflict.
    let _ = getrandom::fill(&mut suffix);
    let suffix = super::tokens::hex(&suffix);
    let name = format!("{}-{}-run-{suffix}", stack.name, service.name);
    if plan.hostname == plan.name {
        plan.hostname = name.clone();
    }
    plan.name = name;
    for label in [
        names::STACK,
        names::SERVICE,
        names::REPLICA,
        names::SPEC_HASH,
    ] {
        plan.labels.remove(label);
    }
    plan.labels
        .insert(names::ONEOFF_STACK.into(), stack.name.clone());
    plan.labels
        .insert(names::ONEOFF_SERVICE.into(), service.name.clone());
    plan.ports.clear();
    plan.addresses.clear();
    for (_, aliases) in plan.networks.iter_mut() {
        aliases.clear();
    }
    if let Some(command) = &req.command {
        plan.command = Some(command.clone());
    }
    plan.env.extend(req.env.iter().cloned());
    plan
}

/// A failure a person must act on is a conflict; the engine's own, a bad gateway.
fn status_of(e: &RuntimeError) -> StatusCode {
    match e {
        RuntimeError::ImageNotFound(_)
        | RuntimeError::ExternalMissing { .. }
        | RuntimeError::NotOwned { .. }
        | RuntimeError::NameConflict { .. } => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Makes the service's networks and volumes if missing, then creates the one-off, attaches
/// to its output and starts it (attached first, no byte it writes is missed); on any
/// failure nothing is left behind and the answer says why.
async fn start(
    runtime: &dyn Runtime,
    stack: &Stack,
    service: &Service,
    plan: &ContainerConfig,
) -> Result<(String, LogStream), Refusal> {
    let failed = |what: &str, e: &RuntimeError| error(status_of(e), format!("{what}: {e}"), vec![]);
    if let Err(e) = crate::reconcile::containers::ensure_resources(runtime, stack, &[service]).await
    {
        let status = match &e {
            ReconcileError::Resource { source, .. } => status_of(source),
            _ => StatusCode::BAD_GATEWAY,
        };
        return Err(error(status, e.to_string(), vec![]));
    }
    match runtime.has_image(&plan.image).await {
        Ok(true) => {}
        Ok(false) => {
            let why = format!(
                "image {} is not on this host; apply the stack first (capstan builds or pulls it for the replicas)",
                plan.image
            );
            return Err(error(StatusCode::CONFLICT, why, vec![]));
        }
        Err(e) => return Err(failed("looking for the image", &e)),
    }
    let id = (runtime.create(plan).await).map_err(|e| failed("creating the container", &e))?;
    let output = match runtime.attach(&id).await {
        Ok(output) => output,
        Err(e) => {
            let _ = runtime.remove(&id, std::time::Duration::ZERO).await;
            return Err(failed("attaching to the container", &e));
        }
    };
    if let Err(e) = runtime.start(&id).await {
        let _ = runtime.remove(&id, std::time::Duration::ZERO).await;
        return Err(failed("starting the container", &e));
    }
    Ok((id, output))
}

/// A started one-off, until it is removed.
struct OneOffRun {
    runtime: Arc<dyn Runtime>,
    id: String,
    name: String,
    grace: std::time::Duration,
}

impl OneOffRun {
    /// Sends the container's `output` to `tx` until it exits, then removes it and sends its
    /// exit code. A client that goes away, or a daemon that stops, ends it earlier: the
    /// container is stopped and removed all the same.
    async fn follow(
        self,
        output: LogStream,
        tx: mpsc::Sender<RunRecord>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let started = RunRecord::Started {
            container: self.name.clone(),
        };
        let outcome = if tx.send(started).await.is_err() {
            None
        } else {
            tokio::select! {
                ended = self.output_then_exit(output, &tx) => ended,
                _ = alive(&tx) => None,
                _ = super::logs::stopping(&mut stop) => None,
            }
        };
        if let Err(e) = self.runtime.remove(&self.id, self.grace).await {
            tracing::warn!(container = %self.name, error = %e, "removing a one-off container failed");
        }
        let last = match outcome {
            Some(Ok(code)) => RunRecord::Exit { code },
            Some(Err(e)) => RunRecord::Error {
                message: e.to_string(),
            },
            None => {
                tracing::info!(container = %self.name, "one-off container stopped: its client went away or the daemon stops");
                return;
            }
        };
        tracing::info!(container = %self.name, record = ?last, "one-off container done");
        let _ = tx.send(last).await;
    }

    /// Every byte of `output`, in order, until the engine closes it (the container exited),
    /// then the exit code: the code is asked for only once the output is drained, so no
    /// last piece can arrive after it. `None` once the client is gone.
    async fn output_then_exit(
        &self,
        mut output: LogStream,
        tx: &mpsc::Sender<RunRecord>,
    ) -> Option<Result<i64, RuntimeError>> {
        while let Some(chunk) = output.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return Some(Err(e)),
            };
            for piece in chunk.bytes.chunks(capstan_api::run::MAX_OUTPUT_PIECE) {
                let record = RunRecord::Output {
                    stderr: chunk.stderr,
                    bytes: piece.to_vec(),
                };
                tx.send(record).await.ok()?;
            }
        }
        Some(self.runtime.wait(&self.id).await)
    }
}

/// Sends [`RunRecord::Alive`] every [`capstan_api::run::ALIVE_EVERY`]; returns once the
/// client is gone (the server drops the stream's receiver when its connection closes).
async fn alive(tx: &mpsc::Sender<RunRecord>) {
    loop {
        tokio::time::sleep(capstan_api::run::ALIVE_EVERY).await;
        if tx.send(RunRecord::Alive).await.is_err() {
            return;
        }
    }
}

/// How old a one-off that does not run must be before a starting daemon's sweep takes it
/// for left behind: a younger one may be between its create and start, or draining its
/// output, in a `capstan run` of another daemon on the same engine (or of this one, which
/// serves runs while the sweep lists).
const SWEEP_GRACE_SECS: i64 = 60;

/// Whether the sweep takes `o` for left behind at `now` (Unix seconds).
fn left_behind(o: &OneOff, now: i64) -> bool {
    !o.running && now - o.created > SWEEP_GRACE_SECS
}

/// Removes the one-offs a daemon killed mid-run left behind: made over a minute ago and not
/// running. Running ones may belong to another daemon's `capstan run`, and are left alone.
pub async fn sweep(runtime: &dyn Runtime) {
    let Ok(found) = runtime.oneoffs().await else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for o in found.into_iter().filter(|o| left_behind(o, now)) {
        match runtime.remove(&o.id, std::time::Duration::ZERO).await {
            Ok(()) => {
                tracing::info!(container = %o.name, "removed an exited one-off container left behind")
            }
            Err(e) => {
                tracing::warn!(container = %o.name, error = %e, "removing a left-behind one-off container failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oneoff(running: bool, created: i64) -> OneOff {
        OneOff {
            id: "id".into(),
            name: "s-web-run-1".into(),
            running,
            created,
        }
    }

    #[test]
    fn the_sweep_takes_only_old_one_offs_that_do_not_run_for_left_behind() {
        let now = 10_000;
        assert!(left_behind(&oneoff(false, now - 600), now));
        assert!(
            !left_behind(&oneoff(false, now - 1), now),
            "a young one-off may be between create and start in another daemon's run"
        );
        assert!(!left_behind(&oneoff(true, now - 600), now));
    }
}
