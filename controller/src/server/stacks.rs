//! The routes of stacks, services and rollouts, the leader and Traefik's provider. Reads go
//! to etcd (linearizable: an apply is visible to the next get); every error is JSON with a
//! message, and validation errors list each field and reason.
//!
//! While etcd does not answer (the health probe says so, or a read gets no answer within
//! [`READ_TIMEOUT`]), the reads of stacks, services and history answer from the daemon's
//! copy of desired state (the reflector the watcher keeps), marked: the header
//! `Capstan-Stale: true` and `"stale": true, "cacheAgeSeconds": N` in each view. A daemon
//! that never had a copy answers 503 `etcd does not answer: ...` instead. `/v1/leader`
//! answers the last leader record read, marked the same way. `diff` answers 503: a diff
//! against a copy that may be behind would mislead the apply that follows it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use capstan_api::object::{
    ApplyResult, DeleteAccepted, Endpoints, ErrorBody, LeaderView, RevisionView, ScaleRequest,
    ServiceView, StackView, Stale,
};
use futures::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::state::{ApiState, READ_TIMEOUT, STALE_HEADER};
use crate::store::{KvError, RolloutVerb, Snapshot, Store, StoreError};
use axum::Extension;
use capstan_api::policy::{InForce, Profile};

/// The stacks, their services and rollouts, the leader, Traefik's provider.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_stacks))
        .routes(routes!(apply, get_stack, delete_stack))
        .routes(routes!(get_service))
        .routes(routes!(scale))
        .routes(routes!(diff))
        .routes(routes!(undo))
        .routes(routes!(rollout))
        .routes(routes!(history))
        .routes(routes!(endpoints))
        .routes(routes!(list_services))
        .routes(routes!(leader))
        .routes(routes!(traefik_config))
}

pub struct ApiError(StatusCode, ErrorBody);

impl ApiError {
    fn not_found(what: String) -> Self {
        ApiError(
            StatusCode::NOT_FOUND,
            ErrorBody {
                error: what,
                details: vec![],
            },
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reasons = self.1.details.iter().map(|d| d.reason.as_str());
        super::audit::refused_by(reasons.filter_map(super::audit::policy_rule));
        (self.0, Json(self.1)).into_response()
    }
}

/// A read's answer, with its marker when it came from the daemon's copy.
pub struct Read<T> {
    value: T,
    /// Set when etcd did not answer: the header and the views' fields say so.
    stale: Option<Stale>,
}

impl<T> Read<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        Read {
            value: f(self.value),
            stale: self.stale,
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Read<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.value).into_response();
        if self.stale.is_some() {
            let value = axum::http::HeaderValue::from_static("true");
            response.headers_mut().insert(STALE_HEADER, value);
        }
        response
    }
}

/// A view that carries the [`Stale`] marker (or holds views that do).
trait Marked {
    fn mark(&mut self, stale: Stale);
}

impl Marked for StackView {
    fn mark(&mut self, stale: Stale) {
        self.mark_stale(stale);
    }
}

impl Marked for ServiceView {
    fn mark(&mut self, stale: Stale) {
        self.stale = stale;
    }
}

/// Its marker is the header alone.
impl Marked for capstan_api::object::Service {
    fn mark(&mut self, _: Stale) {}
}

impl<T: Marked> Marked for Vec<T> {
    fn mark(&mut self, stale: Stale) {
        self.iter_mut().for_each(|v| v.mark(stale));
    }
}

impl<T: Marked> Marked for Option<T> {
    fn mark(&mut self, stale: Stale) {
        if let Some(v) = self {
            v.mark(stale);
        }
    }
}

/// Why etcd gave no answer, as the 503 says it.
fn etcd_silent(why: &str) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorBody {
            error: format!("etcd does not answer: {why}; this daemon has no copy of desired state to answer from yet"),
            details: vec![],
        },
    )
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) | StoreError::Stale { .. } => StatusCode::CONFLICT,
            // etcd refused the request itself: retrying will not help.
            StoreError::Kv(KvError::Rejected(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            StoreError::Kv(_) | StoreError::ReadRaced(_) | StoreError::StatusRaced(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StoreError::Corrupt { .. }
            | StoreError::Dangling { .. }
            | StoreError::Unsealed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let details = match &e {
            StoreError::Invalid(inv) => inv.errors.clone(),
            _ => vec![],
        };
        let error = match &e {
            StoreError::Invalid(inv) => format!(
                "invalid stack: {} problem(s); nothing was applied",
                inv.errors.len()
            ),
            other => other.to_string(),
        };
        ApiError(status, ErrorBody { error, details })
    }
}

/// `errors` found by the check called `what`: none, or a 400 naming each field; nothing
/// is written either way.
fn refused(what: &str, errors: Vec<capstan_api::FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::BAD_REQUEST,
        ErrorBody {
            error: format!("{what}: {} problem(s); nothing was applied", errors.len()),
            details: errors,
        },
    ))
}

/// A stack the caller's policy profile refuses is a 400 naming each field, the rule, the
/// profile and the caller. Host paths are checked as written and as this host resolves them
/// (symlinks followed), since the engine follows them; paths that do not exist yet are
/// checked as written.
fn policy_allows(
    profile: &Profile,
    in_force: &InForce,
    spec: &capstan_api::spec::StackSpec,
) -> Result<(), ApiError> {
    let errors = (profile.policy).check_on_host(spec, capstan_api::policy::resolve_on_host);
    refused("refused by policy", in_force.attribute(errors))
}

/// The profile in force for `caller`, noted for the audit line; a 403 when the caller's
/// token names a profile the policy file no longer defines.
pub(super) fn profile_of<'p>(
    st: &'p ApiState,
    caller: &Caller,
) -> Result<(Profile<'p>, InForce), ApiError> {
    let (profile, in_force) = (caller.profile(&st.policies, st.engine_gid)).map_err(|e| {
        let body = ErrorBody {
            error: e.to_string(),
            details: vec![],
        };
        ApiError(StatusCode::FORBIDDEN, body)
    })?;
    super::audit::profile(profile.name);
    Ok((profile, in_force))
}

/// A stack that would own another stack's container, network or volume name is a 400
/// naming the field and the other stack (`capstan_api::isolation`).
async fn isolated(store: &Store, spec: &capstan_api::spec::StackSpec) -> Result<(), ApiError> {
    let others = store.snapshot().await?.stacks;
    refused(
        "names taken by other stacks",
        capstan_api::isolation::collisions(spec, &others),
    )
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The lease holder as etcd has it, and this daemon's own role. While etcd does not
/// answer: the last record read, marked stale. The role claims the lead only when the
/// record names this daemon (a lease that lapsed unnoticed makes it `unsure`).
#[utoipa::path(get, path = "/v1/leader", tag = "cluster",
    responses((status = 200, description = "The lease holder and this daemon's role.", body = LeaderView, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer.")))))]
async fn leader(State(st): State<ApiState>) -> Read<LeaderView> {
    let this = st.leadership.identity.to_string();
    let read = if st.health.etcd() {
        tokio::time::timeout(READ_TIMEOUT, st.store.leader()).await
    } else {
        Ok(Err(StoreError::Kv(KvError::Unavailable(
            "health probe".into(),
        ))))
    };
    let (leader, stale) = match read {
        Ok(Ok(found)) => {
            let leader = found.map(|(record, _)| record);
            st.health.leader_read(leader.clone());
            (leader, None)
        }
        _ => {
            let stale = Stale::by(st.health.etcd_silent_for());
            (st.health.last_leader().flatten(), Some(stale))
        }
    };
    let holds = leader.as_ref().is_some_and(|r| r.holder == this);
    let role = match st.leadership.role() {
        crate::leader::Role::Leader { .. } if !holds => crate::leader::Role::Unsure,
        other => other,
    };
    let view = LeaderView {
        leader,
        this,
        role: role.name().to_string(),
        stale: stale.unwrap_or_default(),
    };
    Read { value: view, stale }
}

impl ApiState {
    /// `from_etcd` when etcd answers it within [`READ_TIMEOUT`]; otherwise `from_copy` over
    /// the daemon's copy of desired state, marked stale, or a 503 before the first copy.
    async fn read<T: Marked>(
        &self,
        from_etcd: impl Future<Output = Result<T, StoreError>>,
        from_copy: impl FnOnce(Snapshot) -> T,
    ) -> Result<Read<T>, ApiError> {
        let why = if self.health.etcd() {
            match tokio::time::timeout(READ_TIMEOUT, from_etcd).await {
                Ok(Ok(value)) => return Ok(Read { value, stale: None }),
                Ok(Err(StoreError::Kv(e @ KvError::Unavailable(_)))) => e.to_string(),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => format!("no answer within {} ms", READ_TIMEOUT.as_millis()),
            }
        } else {
            "it did not answer the last health probe".to_string()
        };
        let Some(snapshot) = self.desired.copy() else {
            return Err(etcd_silent(&why));
        };
        let stale = Stale::by(self.health.etcd_silent_for());
        let mut value = from_copy(snapshot);
        value.mark(stale);
        Ok(Read {
            value,
            stale: Some(stale),
        })
    }

    /// `from_etcd`, or a 503 if etcd does not answer within [`READ_TIMEOUT`]: for reads a
    /// copy that may be behind would mislead.
    async fn fresh<T>(
        &self,
        from_etcd: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ApiError> {
        let unanswered = |why: &str| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody {
                    error: format!("etcd does not answer: {why}; retry once it is back"),
                    details: vec![],
                },
            )
        };
        if !self.health.etcd() {
            return Err(unanswered("it did not answer the last health probe"));
        }
        match tokio::time::timeout(READ_TIMEOUT, from_etcd).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(unanswered(&format!(
                "no answer within {} ms",
                READ_TIMEOUT.as_millis()
            ))),
        }
    }

    /// A write while etcd does not answer fails now, saying so, instead of waiting out
    /// the client's timeout.
    fn writable(&self) -> Result<(), ApiError> {
        if self.health.etcd() {
            return Ok(());
        }
        Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody {
                error: "etcd does not answer: nothing was written; retry once it is back (capstan keeps the running replicas going meanwhile)".into(),
                details: vec![],
            },
        ))
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ApplyQuery {
    /// The stack's resourceVersion the caller read: 409 if it changed since.
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
    /// Validate and report what would change; write nothing.
    #[serde(rename = "dryRun", default)]
    dry_run: bool,
}

#[utoipa::path(put, path = "/v1/stacks/{stack}", tag = "stacks",
    params(("stack" = String, Path, description = "The stack's name."), ApplyQuery),
    request_body(content = String, content_type = "application/yaml", description = "The stack as a Compose file (YAML or JSON), at most 1 MiB."),
    responses(
        (status = 200, description = "Applied (or, with `dryRun`, what would change); per service, what changed.", body = ApplyResult),
        (status = 400, description = "The document is invalid, refused by the caller's policy profile, or names another stack's containers, networks or volumes: each field in `details`; nothing was written.", body = ErrorBody),
        (status = 403, description = "The caller's token names a policy profile the daemon no longer defines: nothing was written.", body = ErrorBody),
        (status = 409, description = "`resourceVersion` is not the stack's, or a concurrent apply won: nothing was written.", body = ErrorBody),
        (status = 413, description = "The document is over 1 MiB.", body = ErrorBody),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody),
        (status = 503, description = "etcd does not answer: nothing was written.", body = ErrorBody),
    ))]
async fn apply(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(stack): Path<String>,
    Query(q): Query<ApplyQuery>,
    body: String,
) -> ApiResult<capstan_api::object::ApplyResult> {
    let mut spec = capstan_api::parse_stack(&stack, &body).map_err(StoreError::from)?;
    let (profile, in_force) = profile_of(&st, &caller)?;
    policy_allows(&profile, &in_force, &spec)?;
    spec.profile = Some(profile.name.to_string());
    st.writable()?;
    isolated(&st.store, &spec).await?;
    if q.dry_run {
        return Ok(Json(st.store.dry_run(&spec, q.resource_version).await?));
    }
    let result = st.store.apply(&spec, q.resource_version).await?;
    let changed: Vec<String> = result
        .services
        .iter()
        .filter(|(_, o)| **o != capstan_api::object::ApplyOutcome::Unchanged)
        .map(|(s, o)| format!("{s}={o}"))
        .collect();
    if changed.is_empty() {
        tracing::info!(stack = %stack, "apply: unchanged");
        super::audit::note("unchanged");
    } else {
        super::audit::note(changed.join(","));
        tracing::info!(stack = %stack, changes = %changed.join(","), "apply");
    }
    Ok(Json(result))
}

#[utoipa::path(get, path = "/v1/stacks", tag = "stacks",
    responses(
        (status = 200, description = "Every stack, its services and their status.", body = Vec<StackView>, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer, and this daemon has no copy of desired state to answer from (or the request writes).", body = ErrorBody),
    ))]
async fn list_stacks(State(st): State<ApiState>) -> Result<Read<Vec<StackView>>, ApiError> {
    let mut read = st
        .read(st.store.stack_views(), crate::store::views_of)
        .await?;
    for v in &mut read.value {
        v.deletion_blocked_by = st.blocked.get(&v.name);
    }
    Ok(read)
}

/// One stack's view, from etcd or (marked) from the daemon's copy.
async fn stack_view(st: &ApiState, stack: &str) -> Result<Read<StackView>, ApiError> {
    let from_copy = |snap| {
        let mut views = crate::store::views_of(snap).into_iter();
        views.find(|v| v.name == stack)
    };
    let read = st.read(st.store.stack_view(stack), from_copy).await?;
    let Some(view) = read.value else {
        return Err(ApiError::not_found(format!("stack {stack} not found")));
    };
    Ok(Read {
        value: view,
        stale: read.stale,
    })
}

#[utoipa::path(get, path = "/v1/stacks/{stack}", tag = "stacks",
    params(("stack" = String, Path, description = "The stack's name.")),
    responses(
        (status = 200, description = "The stack, its services and their status.", body = StackView, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 404, description = "No such stack.", body = ErrorBody), (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer, and this daemon has no copy of desired state to answer from (or the request writes).", body = ErrorBody),
    ))]
async fn get_stack(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
) -> Result<Read<StackView>, ApiError> {
    let mut read = stack_view(&st, &stack).await?;
    read.value.deletion_blocked_by = st.blocked.get(&stack);
    Ok(read)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Remove the stack's named volumes too.
    #[serde(default)]
    volumes: bool,
    /// The stack's resourceVersion the caller read: 409 if it changed since.
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ScaleQuery {
    /// The service's resourceVersion the caller read: 409 if it changed since.
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
}

#[utoipa::path(delete, path = "/v1/stacks/{stack}", tag = "stacks",
    params(("stack" = String, Path, description = "The stack's name."), DeleteQuery),
    responses(
        (status = 202, description = "The teardown is requested; the controller carries it out.", body = DeleteAccepted),
        (status = 404, description = "No such stack.", body = ErrorBody),
        (status = 409, description = "`resourceVersion` is not the stack's: nothing was written.", body = ErrorBody),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer: nothing was written.", body = ErrorBody),
    ))]
async fn delete_stack(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<(StatusCode, Json<DeleteAccepted>), ApiError> {
    st.writable()?;
    let rv = (st.store)
        .request_deletion(&stack, q.volumes, q.resource_version)
        .await?;
    tracing::info!(stack = %stack, volumes = q.volumes, "delete requested");
    super::audit::note(format!("delete (volumes: {})", q.volumes));
    let accepted = DeleteAccepted {
        stack,
        phase: "Deleting".into(),
        volumes: q.volumes,
        resource_version: rv,
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[utoipa::path(get, path = "/v1/stacks/{stack}/services/{service}", tag = "services",
    params(("stack" = String, Path, description = "The stack's name."), ("service" = String, Path, description = "The service's name in the stack.")),
    responses(
        (status = 200, description = "The service: spec and status side by side.", body = ServiceView, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 404, description = "No such stack or service.", body = ErrorBody), (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer, and this daemon has no copy of desired state to answer from (or the request writes).", body = ErrorBody),
    ))]
async fn get_service(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
) -> Result<Read<ServiceView>, ApiError> {
    let read = stack_view(&st, &stack).await?;
    let found = read.map(|v| v.services.into_iter().find(|s| s.name == service));
    let Some(view) = found.value else {
        return Err(ApiError::not_found(format!(
            "service {service} not found in stack {stack}"
        )));
    };
    Ok(Read {
        value: view,
        stale: found.stale,
    })
}

#[utoipa::path(put, path = "/v1/stacks/{stack}/services/{service}/scale", tag = "services",
    params(("stack" = String, Path, description = "The stack's name."), ("service" = String, Path, description = "The service's name in the stack."), ScaleQuery),
    request_body(content = ScaleRequest, description = "The desired number of replicas."),
    responses(
        (status = 200, description = "Scaled: the service as it is now.", body = ServiceView, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 400, description = "More replicas than a service may have, refused by policy or by the stateful guard, a sidecar (scale its partner), or a body that is not JSON: nothing was written.", body = ErrorBody),
        (status = 404, description = "No such stack or service.", body = ErrorBody),
        (status = 409, description = "`resourceVersion` is not the service's, or a concurrent change won: nothing was written.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "The JSON is not a `ScaleRequest`.", body = ErrorBody),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer: nothing was written.", body = ErrorBody),
    ))]
async fn scale(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, service)): Path<(String, String)>,
    Query(q): Query<ScaleQuery>,
    Json(req): Json<ScaleRequest>,
) -> Result<Read<ServiceView>, ApiError> {
    if req.replicas > capstan_api::compose::MAX_REPLICAS {
        return Err(StoreError::Invalid(capstan_api::InvalidStack {
            errors: vec![capstan_api::FieldError {
                field: "replicas".into(),
                reason: format!(
                    "{} is more than the {} replicas a service may have",
                    req.replicas,
                    capstan_api::compose::MAX_REPLICAS
                ),
            }],
        })
        .into());
    }
    let (profile, in_force) = profile_of(&st, &caller)?;
    let too_many = profile.policy.check_replicas("replicas", req.replicas);
    refused(
        "refused by policy",
        in_force.attribute(too_many.into_iter().collect()),
    )?;
    st.writable()?;
    (st.store)
        .scale(&stack, &service, req.replicas, q.resource_version)
        .await?;
    tracing::info!(stack = %stack, service = %service, replicas = req.replicas, "scale");
    super::audit::note(format!("service {service} replicas={}", req.replicas));
    // Reads are linearizable: the view shows this scale (or a later change, with its version).
    get_service(State(st), Path((stack, service))).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
struct UndoQuery {
    /// The revision to go back to; without it, the one before the current.
    to_revision: Option<i64>,
}

/// `capstan rollout undo [--to-revision N]`: back to revision N's spec (the previous one's
/// without N).
#[utoipa::path(post, path = "/v1/stacks/{stack}/services/{service}/undo", tag = "rollout",
    params(("stack" = String, Path, description = "The stack's name."), ("service" = String, Path, description = "The service's name in the stack."), UndoQuery),
    responses(
        (status = 200, description = "Back to the earlier revision's spec: the service as it is now.", body = ServiceView, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 400, description = "The earlier revision's spec is refused now: each field in `details`.", body = ErrorBody),
        (status = 404, description = "No such stack or service, or revision `toRevision` is not kept (the message names those that are).", body = ErrorBody),
        (status = 409, description = "No previous revision to go back to, or a concurrent change won: nothing was written.", body = ErrorBody),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer: nothing was written.", body = ErrorBody),
    ))]
async fn undo(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
    Query(q): Query<UndoQuery>,
) -> Result<Read<ServiceView>, ApiError> {
    st.writable()?;
    let svc = st.store.undo(&stack, &service, q.to_revision).await?;
    tracing::info!(stack = %stack, service = %service, revision = svc.revision.number, "rollout undo");
    super::audit::note(format!(
        "service {service} undo to revision {} ({})",
        svc.revision.number, svc.revision.change
    ));
    get_service(State(st), Path((stack, service))).await
}

/// `capstan rollout pause|resume|restart`.
#[utoipa::path(post, path = "/v1/stacks/{stack}/services/{service}/rollout/{verb}", tag = "rollout",
    params(("stack" = String, Path, description = "The stack's name."), ("service" = String, Path, description = "The service's name in the stack."), ("verb" = String, Path, description = "`pause`, `resume` or `restart`.")),
    responses(
        (status = 200, description = "Done: the service as it is now.", body = ServiceView, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 404, description = "No such stack, service or verb.", body = ErrorBody),
        (status = 409, description = "A concurrent change won: nothing was written.", body = ErrorBody),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer: nothing was written.", body = ErrorBody),
    ))]
async fn rollout(
    State(st): State<ApiState>,
    Path((stack, service, verb)): Path<(String, String, String)>,
) -> Result<Read<ServiceView>, ApiError> {
    let verb = match verb.as_str() {
        "pause" => RolloutVerb::Pause,
        "resume" => RolloutVerb::Resume,
        "restart" => RolloutVerb::Restart,
        other => {
            return Err(ApiError::not_found(format!(
                "no rollout verb {other:?}: pause, resume or restart"
            )))
        }
    };
    st.writable()?;
    let svc = st.store.rollout(&stack, &service, verb).await?;
    tracing::info!(stack = %stack, service = %service, ?verb, generation = svc.generation, "rollout");
    super::audit::note(format!("service {service} rollout {verb:?}").to_lowercase());
    get_service(State(st), Path((stack, service))).await
}

/// `capstan rollout history`: every revision the service keeps, the current one last.
#[utoipa::path(get, path = "/v1/stacks/{stack}/services/{service}/history", tag = "rollout",
    params(("stack" = String, Path, description = "The stack's name."), ("service" = String, Path, description = "The service's name in the stack.")),
    responses(
        (status = 200, description = "Every revision the service keeps, oldest first; the last is the current one.", body = Vec<RevisionView>, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 404, description = "No such stack or service.", body = ErrorBody), (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer, and this daemon has no copy of desired state to answer from (or the request writes).", body = ErrorBody),
    ))]
async fn history(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
) -> Result<Read<Vec<RevisionView>>, ApiError> {
    let from_copy = |snap: Snapshot| {
        let mut services = snap.services.into_iter();
        services.find(|s| s.stack == stack && s.name == service)
    };
    let read = st
        .read(st.store.service(&stack, &service), from_copy)
        .await?;
    let Some(svc) = read.value else {
        return Err(ApiError::not_found(format!(
            "service {service} not found in stack {stack}"
        )));
    };
    Ok(Read {
        value: RevisionView::list(&svc),
        stale: read.stale,
    })
}

/// `capstan diff`: what applying the document (as `PUT /v1/stacks/{stack}` takes it) would
/// change, per service, field by field; nothing is written.
#[utoipa::path(post, path = "/v1/stacks/{stack}/diff", tag = "stacks",
    params(("stack" = String, Path, description = "The stack's name.")),
    request_body(content = String, content_type = "application/yaml", description = "The stack as a Compose file (YAML or JSON), as `PUT /v1/stacks/{stack}` takes it."),
    responses(
        (status = 200, description = "Per service, what applying the document would change, field by field.", body = BTreeMap<String, capstan_api::diff::ServiceDiff>),
        (status = 400, description = "The document is invalid: each field in `details`.", body = ErrorBody),
        (status = 413, description = "The document is over 1 MiB.", body = ErrorBody),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer (a diff against the daemon's copy could mislead).", body = ErrorBody),
    ))]
async fn diff(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
    body: String,
) -> ApiResult<BTreeMap<String, capstan_api::diff::ServiceDiff>> {
    let spec = capstan_api::parse_stack(&stack, &body).map_err(StoreError::from)?;
    let stored: BTreeMap<String, capstan_api::spec::ServiceSpec> = st
        .fresh(st.store.stack_view(&stack))
        .await?
        .map(|v| v.services.into_iter().map(|s| (s.name, s.spec)).collect())
        .unwrap_or_default();
    Ok(Json(capstan_api::diff::stack_changes(
        &stored,
        &spec.services,
    )))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ServicesQuery {
    /// Only this stack's services.
    stack: Option<String>,
}

#[utoipa::path(get, path = "/v1/services", tag = "services",
    params(ServicesQuery),
    responses(
        (status = 200, description = "Every service (of one stack with `?stack=`): spec and status.", body = Vec<ServiceView>, headers(("capstan-stale" = String, description = "`true` when served from the daemon's copy of desired state because etcd did not answer."))),
        (status = 500, description = "What etcd holds cannot be read (corrupt, dangling or unsealable records), or etcd refused the request.", body = ErrorBody), (status = 503, description = "etcd does not answer, and this daemon has no copy of desired state to answer from (or the request writes).", body = ErrorBody),
    ))]
async fn list_services(
    State(st): State<ApiState>,
    Query(q): Query<ServicesQuery>,
) -> Result<Read<Vec<ServiceView>>, ApiError> {
    let from_etcd = async {
        match &q.stack {
            Some(stack) => Ok(st.store.stack_view(stack).await?.into_iter().collect()),
            None => st.store.stack_views().await,
        }
    };
    let read = st.read(from_etcd, crate::store::views_of).await?;
    Ok(read.map(|views| {
        let wanted = views
            .into_iter()
            .filter(|v| q.stack.as_ref().is_none_or(|s| *s == v.name));
        wanted.flat_map(|v| v.services).collect()
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EndpointsQuery {
    /// Stream the endpoints as server-sent events, at each change.
    #[serde(default)]
    watch: bool,
}

/// The ready endpoints of a service. With `?watch=true`, a server-sent-events stream: the
/// current endpoints first, then one `endpoints` event each time they change.
#[utoipa::path(get, path = "/v1/stacks/{stack}/services/{service}/endpoints", tag = "services",
    params(("stack" = String, Path, description = "The stack's name."), ("service" = String, Path, description = "The service's name in the stack."), EndpointsQuery),
    responses(
        (status = 200, description = "The service's ready replicas. With `?watch=true`, a server-sent-events stream instead: the current endpoints, then one `endpoints` event (its data an `Endpoints`) at each change.",
            content((Endpoints = "application/json"), (Endpoints = "text/event-stream"))),
        (status = 404, description = "No such stack or service.", body = ErrorBody),
    ))]
async fn endpoints(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
    Query(q): Query<EndpointsQuery>,
) -> Result<Response, ApiError> {
    let current = || st.desired.endpoints_or_empty(&stack, &service);
    if st.desired.service(&stack, &service).is_none() {
        return Err(ApiError::not_found(format!(
            "service {service} not found in stack {stack}"
        )));
    }
    if !q.watch {
        return Ok(Json(current()).into_response());
    }
    let event = |e: &Endpoints| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .event("endpoints")
                .json_data(e)
                .expect("endpoints serialise"),
        )
    };
    let head = futures::stream::once(futures::future::ready(event(&current())));
    let state = (
        st.desired.watch_endpoints(),
        st.stop.clone(),
        st.desired.clone(),
        stack.clone(),
        service.clone(),
    );
    let tail = futures::stream::unfold(
        state,
        move |(mut changes, mut stop, cache, stack, service)| async move {
            loop {
                tokio::select! {
                    changed = changes.recv() => match changed {
                        Ok((s, v)) if s == stack && v == service => {}
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return None,
                    },
                    _ = stop.wait_for(|s| *s) => return None,
                }
                let e = cache.endpoints_or_empty(&stack, &service);
                return Some((event(&e), (changes, stop, cache, stack, service)));
            }
        },
    );
    Ok(Sse::new(head.chain(tail))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Traefik's HTTP provider: point `providers.http.endpoint` here.
#[utoipa::path(get, path = "/v1/traefik", tag = "cluster",
    responses((status = 200, description = "Traefik's dynamic configuration (its HTTP provider's format) for every service with published endpoints.", body = Object)))]
async fn traefik_config(State(st): State<ApiState>) -> Json<serde_json::Value> {
    let all = st.desired.services_with_endpoints();
    let refs: Vec<(&capstan_api::object::Service, Option<&Endpoints>)> = all
        .iter()
        .map(|(s, e)| (s.as_ref(), e.as_deref()))
        .collect();
    Json(crate::traffic::traefik::dynamic_config(&refs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemKv;
    use capstan_api::object::ApplyOutcome;
    use std::sync::Arc;
    use std::time::Duration;

    fn state() -> (ApiState, Arc<MemKv>) {
        ApiState::in_memory()
    }

    /// The API over a kv whose copy the test feeds: a synced copy of what the kv holds.
    async fn state_with_copy() -> (ApiState, Arc<MemKv>, crate::watch::Writer) {
        let (mut st, kv) = state();
        let mut writer = crate::watch::Writer::default();
        st.desired = writer.reader();
        let body = "services: {web: {image: web:1}, db: {image: db:1}}".to_string();
        assert!(apply(
            State(st.clone()),
            deployer(),
            Path("shop".into()),
            query(false),
            body
        )
        .await
        .is_ok());
        let snap = st.store.snapshot().await.unwrap();
        writer.apply(crate::watch::Event::Relisted(snap));
        (st, kv, writer)
    }

    /// The handler's answer, which must come within `limit` (virtual time).
    async fn within<R: IntoResponse>(fut: impl std::future::Future<Output = R>) -> Response {
        tokio::time::timeout(Duration::from_secs(3), fut)
            .await
            .expect("the read answered instead of hanging")
            .into_response()
    }

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn with_etcd_frozen_the_reads_answer_from_the_copy_marked_stale() {
        let (st, kv, _writer) = state_with_copy().await;
        kv.set_frozen(true);
        let listed = within(list_stacks(State(st.clone()))).await;
        assert_eq!(listed.status(), StatusCode::OK);
        assert_eq!(listed.headers()[STALE_HEADER], "true");
        let json = body_of(listed).await;
        assert_eq!(json[0]["name"], "shop");
        assert_eq!(json[0]["stale"], true);
        assert_eq!(json[0]["services"][0]["stale"], true);
        assert!(json[0]["cacheAgeSeconds"].is_u64(), "{json}");
        let path = Path(("shop".to_string(), "web".to_string()));
        let one = within(get_service(State(st.clone()), path)).await;
        assert_eq!(one.headers()[STALE_HEADER], "true");
        assert_eq!(body_of(one).await["image"], "web:1");
        let path = Path(("shop".to_string(), "nope".to_string()));
        let missing = within(get_service(State(st.clone()), path)).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let path = Path(("shop".to_string(), "db".to_string()));
        let history = within(history(State(st.clone()), path)).await;
        assert_eq!(history.status(), StatusCode::OK);
        let q = Query(ServicesQuery {
            stack: Some("shop".into()),
        });
        let services = body_of(within(list_services(State(st.clone()), q)).await).await;
        assert_eq!(services.as_array().map(Vec::len), Some(2));
        kv.set_frozen(false);
        let fresh = within(list_stacks(State(st))).await;
        assert!(fresh.headers().get(STALE_HEADER).is_none());
        assert!(body_of(fresh).await[0].get("stale").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_diff_while_etcd_is_frozen_is_a_503_naming_etcd() {
        let (st, kv, _writer) = state_with_copy().await;
        kv.set_frozen(true);
        let body = "services: {web: {image: web:2}}".to_string();
        let answer = within(diff(State(st), Path("shop".into()), body)).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let json = body_of(answer).await;
        assert!(json["error"]
            .as_str()
            .unwrap()
            .starts_with("etcd does not answer: "));
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_without_a_copy_answers_a_503_naming_etcd_while_etcd_is_down() {
        let (st, kv) = state();
        kv.set_down(true);
        st.health.set_etcd(false);
        for answer in [
            within(list_stacks(State(st.clone()))).await,
            within(get_stack(State(st.clone()), Path("shop".into()))).await,
        ] {
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            let json = body_of(answer).await;
            let error = json["error"].as_str().unwrap();
            assert!(error.starts_with("etcd does not answer: "), "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_view_claims_the_lead_only_with_a_record_naming_this_daemon() {
        let (st, kv) = state();
        kv.set_frozen(true);
        let json = body_of(within(leader(State(st.clone()))).await).await;
        assert_eq!(json["leader"], serde_json::Value::Null);
        assert_eq!(json["role"], "unsure", "{json}");
        assert_eq!(json["stale"], true);
        st.health
            .leader_read(Some(capstan_api::object::LeaderRecord {
                holder: st.leadership.identity.to_string(),
                since: "2026-12-07T16:00:00Z".into(),
                lease_ttl_seconds: 10,
            }));
        st.health.set_etcd(false);
        let answer = within(leader(State(st.clone()))).await;
        assert_eq!(answer.headers()[STALE_HEADER], "true");
        let json = body_of(answer).await;
        assert_eq!(json["role"], "leader", "{json}");
        assert_eq!(json["leader"]["holder"], "always");
        assert_eq!(json["stale"], true);
        kv.set_frozen(false);
        st.health.set_etcd(true);
        let json = body_of(within(leader(State(st))).await).await;
        assert_eq!(
            json["leader"],
            serde_json::Value::Null,
            "etcd's answer: nobody"
        );
        assert_eq!(json["role"], "unsure", "no record names it: {json}");
        assert!(json.get("stale").is_none());
    }

    #[tokio::test]
    async fn a_policy_refusal_tells_the_audit_log_each_rule() {
        let (st, _) = state();
        let body = "services: {web: {image: x, privileged: true, volumes: ['/:/host']}}";
        let (resp, noted) = crate::server::audit::with_note(async {
            apply(
                State(st),
                deployer(),
                Path("shop".into()),
                query(false),
                body.into(),
            )
            .await
            .into_response()
        })
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let rules = noted.refused_by().unwrap_or_default();
        assert!(
            rules.starts_with("policy rule privileged, policy rule "),
            "{rules}"
        );
    }

    /// A token of role `deploy`: the `baseline` profile.
    fn deployer() -> Extension<Caller> {
        Extension(Caller::Token {
            name: "ci".into(),
            role: capstan_api::token::Role::Deploy,
            profile: None,
        })
    }

    fn query(dry_run: bool) -> Query<ApplyQuery> {
        Query(ApplyQuery {
            resource_version: None,
            dry_run,
        })
    }

    #[tokio::test]
    async fn root_on_the_socket_applies_traefiks_shape_and_the_stack_keeps_its_profile() {
        let (st, _) = state();
        let body = "services: {traefik: {image: x, ports: ['80:80'], volumes: ['/var/run/docker.sock:/var/run/docker.sock']}}";
        let root = Extension(Caller::Unix(Some(Default::default())));
        let (applied, noted) = crate::server::audit::with_note(apply(
            State(st.clone()),
            root,
            Path("lb".into()),
            query(false),
            body.into(),
        ))
        .await;
        assert!(applied.is_ok(), "refused: {:?}", applied.err().map(|e| e.1));
        let stacks = st.store.snapshot().await.unwrap().stacks;
        assert_eq!(stacks[0].profile.as_deref(), Some("privileged"));
        let e = crate::server::audit::Entry::of(
            &axum::extract::Request::put("/v1/stacks/lb")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .with_summary(noted);
        assert_eq!(e.profile(), Some("privileged"));
        let Err(ApiError(_, err)) = apply(
            State(st),
            deployer(),
            Path("lb".into()),
            query(true),
            body.into(),
        )
        .await
        else {
            panic!("a deploy token mounted the Docker socket");
        };
        assert!(
            err.details[0]
                .reason
                .starts_with("policy rule bind_mounts (profile baseline, caller token \"ci\"): "),
            "{}",
            err.details[0].reason
        );
    }

    #[tokio::test]
    async fn a_dry_run_put_answers_per_service_and_writes_nothing() {
        let (st, kv) = state();
        let body = "services: {web: {image: web:1}, db: {image: db:1}}".to_string();
        let Json(res) = apply(
            State(st),
            deployer(),
            Path("shop".into()),
            query(true),
            body,
        )
        .await
        .ok()
        .unwrap();
        assert!(res.dry_run);
        assert_eq!(res.services["web"], ApplyOutcome::Created);
        assert_eq!(kv.writes(), 0);
    }

    #[tokio::test]
    async fn a_stack_the_policy_refuses_is_a_400_naming_the_rule_and_nothing_is_written() {
        let (st, kv) = state();
        let body = "services: {web: {image: x, privileged: true, volumes: ['/:/host']}}";
        for dry_run in [true, false] {
            let Err(ApiError(status, err)) = apply(
                State(st.clone()),
                deployer(),
                Path("shop".into()),
                query(dry_run),
                body.into(),
            )
            .await
            else {
                panic!("the policy let a privileged stack through");
            };
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(err.error.starts_with("refused by policy"), "{}", err.error);
            let fields: Vec<(&str, bool)> = err
                .details
                .iter()
                .map(|d| (d.field.as_str(), d.reason.starts_with("policy rule ")))
                .collect();
            assert_eq!(
                fields,
                vec![
                    ("services.web.privileged", true),
                    ("services.web.volumes[0]", true)
                ]
            );
        }
        assert_eq!(kv.writes(), 0);
    }

    #[tokio::test]
    async fn a_bind_through_a_symlink_to_the_root_is_refused_as_the_root_and_nothing_is_written() {
        let (st, kv) = state();
        let link = std::env::temp_dir().join(format!("capstan-root-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/", &link).unwrap();
        let body = format!(
            "services: {{web: {{image: x, volumes: ['{}:/host']}}}}",
            link.display()
        );
        let result = apply(
            State(st.clone()),
            deployer(),
            Path("shop".into()),
            query(false),
            body,
        )
        .await;
        let _ = std::fs::remove_file(&link);
        let Err(ApiError(status, err)) = result else {
            panic!("a symlink to / passed the policy as a path under /tmp");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let d = &err.details[0];
        assert_eq!(d.field, "services.web.volumes[0]");
        assert!(
            d.reason.contains("reaches /") && d.reason.contains("symlink"),
            "{}",
            d.reason
        );
        assert_eq!(kv.writes(), 0);
    }

    #[tokio::test]
    async fn a_stack_spelling_another_stacks_container_name_is_refused_and_nothing_is_written() {
        let (st, kv) = state();
        let first = "services: {web: {image: x}}".to_string();
        let applied = apply(
            State(st.clone()),
            deployer(),
            Path("s6col-a".into()),
            query(false),
            first,
        )
        .await;
        assert!(applied.is_ok());
        let writes = kv.writes();
        let body = "services: {a-web: {image: x}}".to_string();
        let Err(ApiError(status, err)) = apply(
            State(st),
            deployer(),
            Path("s6col".into()),
            query(false),
            body,
        )
        .await
        else {
            panic!("a colliding stack was accepted");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err.details[0].field, "services.a-web");
        assert_eq!(kv.writes(), writes);
    }

    #[tokio::test]
    async fn an_invalid_dry_run_is_a_400_with_every_error() {
        let (st, kv) = state();
        let body = "services: {web: {imgae: x}, db: {image: db, ports: ['99999']}}".to_string();
        let Err(ApiError(status, body)) = apply(
            State(st),
            deployer(),
            Path("shop".into()),
            query(true),
            body,
        )
        .await
        else {
            panic!("an invalid stack was accepted");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let fields: Vec<&str> = body.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "services.web.imgae",
                "services.web.image",
                "services.db.ports[0]"
            ]
        );
        assert_eq!(kv.writes(), 0);
    }

    #[tokio::test]
    async fn a_stale_resource_version_is_a_409_for_apply_scale_and_delete_and_nothing_is_written() {
        let (st, kv) = state();
        let body = || "services: {web: {image: web:1}}".to_string();
        let Json(first) = apply(
            State(st.clone()),
            deployer(),
            Path("shop".into()),
            query(false),
            body(),
        )
        .await
        .ok()
        .unwrap();
        let svc = st.store.service("shop", "web").await.unwrap().unwrap();
        st.store.scale("shop", "web", 2, None).await.unwrap();
        let writes = kv.writes();
        let stale = Query(ApplyQuery {
            resource_version: Some(first.resource_version),
            dry_run: false,
        });
        let applied = apply(
            State(st.clone()),
            deployer(),
            Path("shop".into()),
            stale,
            body(),
        )
        .await;
        assert!(matches!(applied, Err(ApiError(StatusCode::CONFLICT, _))));
        let q = Query(ScaleQuery {
            resource_version: Some(svc.resource_version),
        });
        let path = Path(("shop".to_string(), "web".to_string()));
        let scaled = scale(
            State(st.clone()),
            deployer(),
            path,
            q,
            Json(ScaleRequest { replicas: 3 }),
        )
        .await;
        assert!(matches!(scaled, Err(ApiError(StatusCode::CONFLICT, _))));
        let q = Query(DeleteQuery {
            volumes: false,
            resource_version: Some(first.resource_version),
        });
        let deleted = delete_stack(State(st), Path("shop".into()), q).await;
        assert!(matches!(deleted, Err(ApiError(StatusCode::CONFLICT, _))));
        assert_eq!(kv.writes(), writes);
    }
}
