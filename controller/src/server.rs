//! The HTTP API. Reads go to etcd (linearizable: an apply is visible to the next get);
//! every error is JSON with a message, and validation errors list each field and reason.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use capstan_api::object::{
    Endpoints, ErrorBody, LeaderView, RevisionView, ScaleRequest, ServiceView,
};
use futures::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::reconcile::scratch::BlockedDeletions;
use crate::store::{KvError, RolloutVerb, Store, StoreError};
use crate::watch::Desired;

/// The largest Compose file the API accepts.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// For `/readyz` (synced with etcd), and the endpoints and Traefik views.
    pub desired: Desired,
    /// Why a deleting stack's teardown cannot finish yet.
    pub blocked: Arc<BlockedDeletions>,
    /// For `/v1/leader`: this daemon's identity and role.
    pub leadership: crate::leader::Leadership,
    /// For `/readyz`, and to refuse writes at once while etcd does not answer.
    pub health: Arc<crate::health::Health>,
    /// Ends long-lived streams on shutdown.
    pub stop: tokio::sync::watch::Receiver<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The API tokens, cached ([`crate::auth`]).
    pub tokens: Arc<crate::auth::Tokens>,
    /// What stacks may do to the host, checked at apply, dry-run and scale.
    pub policy: Arc<capstan_api::policy::Policy>,
    /// The engine `build:` contexts are built on, and their size limit ([`crate::build`]).
    pub builds: crate::build::Builds,
    /// The engine, unfenced: any daemon reads logs ([`crate::logs`]) and runs one-off
    /// containers ([`crate::run`]).
    pub runtime: Arc<dyn crate::runtime::Runtime>,
    /// Where the services' secrets and configs are on the host, for one-off containers.
    pub files: crate::files::HostFiles,
}

/// The API, every route behind [`crate::auth::guard`] (authentication, roles, audit).
/// `hosts`: the `Host` names accepted (DNS rebinding guard on TCP; any on the Unix socket).
pub fn router(state: ApiState, hosts: crate::guard::AllowedHosts) -> Router {
    let counters = state.metrics.clone();
    let guard = axum::middleware::from_fn_with_state(state.clone(), crate::auth::guard);
    crate::guard::harden(routes().layer(guard).with_state(state), counters, hosts)
}

/// `/healthz`, `/readyz` and `/metrics` alone, without authentication (`--metrics-listen`).
pub fn probes(state: ApiState) -> Router {
    let counters = state.metrics.clone();
    let hosts = crate::guard::AllowedHosts::local();
    crate::guard::harden(probe_routes().with_state(state), counters, hosts)
}

fn probe_routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn routes() -> Router<ApiState> {
    probe_routes()
        .merge(crate::auth::routes())
        .route("/v1/stacks", get(list_stacks))
        .route(
            "/v1/stacks/{stack}",
            put(apply).get(get_stack).delete(delete_stack),
        )
        .route("/v1/stacks/{stack}/services/{service}", get(get_service))
        .route("/v1/stacks/{stack}/services/{service}/scale", put(scale))
        .route("/v1/stacks/{stack}/diff", axum::routing::post(diff))
        .route(
            "/v1/stacks/{stack}/services/{service}/undo",
            axum::routing::post(undo),
        )
        .route(
            "/v1/stacks/{stack}/services/{service}/rollout/{verb}",
            axum::routing::post(rollout),
        )
        .route(
            "/v1/stacks/{stack}/services/{service}/history",
            get(history),
        )
        .route(
            "/v1/stacks/{stack}/services/{service}/endpoints",
            get(endpoints),
        )
        .route("/v1/services", get(list_services))
        .route("/v1/leader", get(leader))
        .route("/v1/traefik", get(traefik_config))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(crate::build::routes())
        .merge(crate::logs::routes())
        .merge(crate::run::routes())
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
        (self.0, Json(self.1)).into_response()
    }
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

/// A stack the policy refuses is a 400 naming each field and the rule. Host paths are
/// checked as written and as this host resolves them (symlinks followed), since the engine
/// follows them; paths that do not exist yet are checked as written.
fn policy_allows(
    policy: &capstan_api::policy::Policy,
    spec: &capstan_api::spec::StackSpec,
) -> Result<(), ApiError> {
    let errors = policy.check_on_host(spec, capstan_api::policy::resolve_on_host);
    refused("refused by policy", errors)
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

/// Prometheus text exposition (OpenMetrics).
async fn metrics(State(st): State<ApiState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

/// The lease holder as etcd has it, and this daemon's own role.
async fn leader(State(st): State<ApiState>) -> ApiResult<LeaderView> {
    // While etcd does not answer, the daemon still says what it is.
    let leader = match st.store.leader().await {
        Ok(found) => found.map(|(record, _)| record),
        Err(e) => {
            tracing::debug!(error = %e, "reading the leader key");
            None
        }
    };
    Ok(Json(LeaderView {
        leader,
        this: st.leadership.identity.to_string(),
        role: st.leadership.role().name().to_string(),
    }))
}

async fn readyz(State(st): State<ApiState>) -> Response {
    match st.health.not_ready(st.desired.is_synced()) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

impl ApiState {
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

#[derive(Deserialize)]
struct ApplyQuery {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
    /// Validate and report what would change; write nothing.
    #[serde(rename = "dryRun", default)]
    dry_run: bool,
}

async fn apply(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
    Query(q): Query<ApplyQuery>,
    body: String,
) -> ApiResult<capstan_api::object::ApplyResult> {
    let spec = capstan_api::parse_stack(&stack, &body).map_err(StoreError::from)?;
    policy_allows(&st.policy, &spec)?;
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
        crate::audit::note("unchanged");
    } else {
        crate::audit::note(changed.join(","));
        tracing::info!(stack = %stack, changes = %changed.join(","), "apply");
    }
    Ok(Json(result))
}

async fn list_stacks(State(st): State<ApiState>) -> ApiResult<Vec<capstan_api::object::StackView>> {
    let mut views = st.store.stack_views().await?;
    for v in &mut views {
        v.deletion_blocked_by = st.blocked.get(&v.name);
    }
    Ok(Json(views))
}

async fn get_stack(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
) -> ApiResult<capstan_api::object::StackView> {
    let mut view = st
        .store
        .stack_view(&stack)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stack {stack} not found")))?;
    view.deletion_blocked_by = st.blocked.get(&stack);
    Ok(Json(view))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    volumes: bool,
    /// The stack's resourceVersion the caller read: 409 if it changed since.
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
}

#[derive(Deserialize)]
struct ScaleQuery {
    /// The service's resourceVersion the caller read: 409 if it changed since.
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
}

async fn delete_stack(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    st.writable()?;
    let rv = (st.store)
        .request_deletion(&stack, q.volumes, q.resource_version)
        .await?;
    tracing::info!(stack = %stack, volumes = q.volumes, "delete requested");
    crate::audit::note(format!("delete (volumes: {})", q.volumes));
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "stack": stack,
            "phase": "Deleting",
            "volumes": q.volumes,
            "resourceVersion": rv,
        })),
    ))
}

async fn get_service(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
) -> ApiResult<ServiceView> {
    let view = st
        .store
        .stack_view(&stack)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stack {stack} not found")))?;
    view.services
        .into_iter()
        .find(|s| s.name == service)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("service {service} not found in stack {stack}")))
}

async fn scale(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
    Query(q): Query<ScaleQuery>,
    Json(req): Json<ScaleRequest>,
) -> ApiResult<ServiceView> {
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
    if let Some(refused) = st.policy.check_replicas("replicas", req.replicas) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            ErrorBody {
                error: "refused by policy: 1 problem(s); nothing was applied".into(),
                details: vec![refused],
            },
        ));
    }
    st.writable()?;
    (st.store)
        .scale(&stack, &service, req.replicas, q.resource_version)
        .await?;
    tracing::info!(stack = %stack, service = %service, replicas = req.replicas, "scale");
    crate::audit::note(format!("service {service} replicas={}", req.replicas));
    // Reads are linearizable: the view shows this scale (or a later change, with its version).
    get_service(State(st), Path((stack, service))).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UndoQuery {
    to_revision: Option<i64>,
}

/// `capstan rollout undo [--to-revision N]`: back to revision N's spec (the previous one's
/// without N).
async fn undo(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
    Query(q): Query<UndoQuery>,
) -> ApiResult<ServiceView> {
    st.writable()?;
    let svc = st.store.undo(&stack, &service, q.to_revision).await?;
    tracing::info!(stack = %stack, service = %service, revision = svc.revision.number, "rollout undo");
    crate::audit::note(format!(
        "service {service} undo to revision {} ({})",
        svc.revision.number, svc.revision.change
    ));
    get_service(State(st), Path((stack, service))).await
}

/// `capstan rollout pause|resume|restart`.
async fn rollout(
    State(st): State<ApiState>,
    Path((stack, service, verb)): Path<(String, String, String)>,
) -> ApiResult<ServiceView> {
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
    crate::audit::note(format!("service {service} rollout {verb:?}").to_lowercase());
    get_service(State(st), Path((stack, service))).await
}

/// `capstan rollout history`: every revision the service keeps, the current one last.
async fn history(
    State(st): State<ApiState>,
    Path((stack, service)): Path<(String, String)>,
) -> ApiResult<Vec<RevisionView>> {
    let svc = st.store.service(&stack, &service).await?.ok_or_else(|| {
        ApiError::not_found(format!("service {service} not found in stack {stack}"))
    })?;
    Ok(Json(RevisionView::list(&svc)))
}

/// `capstan diff`: what applying the document (as `PUT /v1/stacks/{stack}` takes it) would
/// change, per service, field by field; nothing is written.
async fn diff(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
    body: String,
) -> ApiResult<BTreeMap<String, capstan_api::diff::ServiceDiff>> {
    let spec = capstan_api::parse_stack(&stack, &body).map_err(StoreError::from)?;
    let stored: BTreeMap<String, capstan_api::spec::ServiceSpec> = st
        .store
        .stack_view(&stack)
        .await?
        .map(|v| v.services.into_iter().map(|s| (s.name, s.spec)).collect())
        .unwrap_or_default();
    Ok(Json(capstan_api::diff::stack_changes(
        &stored,
        &spec.services,
    )))
}

#[derive(Deserialize)]
struct ServicesQuery {
    stack: Option<String>,
}

async fn list_services(
    State(st): State<ApiState>,
    Query(q): Query<ServicesQuery>,
) -> ApiResult<Vec<ServiceView>> {
    let views = match &q.stack {
        Some(stack) => st
            .store
            .stack_view(stack)
            .await?
            .map(|v| v.services)
            .unwrap_or_default(),
        None => st
            .store
            .stack_views()
            .await?
            .into_iter()
            .flat_map(|v| v.services)
            .collect(),
    };
    Ok(Json(views))
}

#[derive(Deserialize)]
struct EndpointsQuery {
    #[serde(default)]
    watch: bool,
}

/// The ready endpoints of a service. With `?watch=true`, a server-sent-events stream: the
/// current endpoints first, then one `endpoints` event each time they change.
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

    fn state() -> (ApiState, Arc<MemKv>) {
        let kv = Arc::new(MemKv::default());
        let st = ApiState {
            store: Store::new(kv.clone(), "/capstan"),
            desired: crate::watch::Writer::default().reader(),
            blocked: Arc::default(),
            leadership: crate::leader::Leadership::always(),
            health: Arc::new(crate::health::Health::answering()),
            stop: tokio::sync::watch::channel(false).1,
            metrics: Arc::default(),
            tokens: Arc::default(),
            policy: Arc::default(),
            builds: Default::default(),
            runtime: Arc::new(crate::runtime::fake::FakeRuntime::default()),
            files: Default::default(),
        };
        (st, kv)
    }

    fn query(dry_run: bool) -> Query<ApplyQuery> {
        Query(ApplyQuery {
            resource_version: None,
            dry_run,
        })
    }

    #[tokio::test]
    async fn a_dry_run_put_answers_per_service_and_writes_nothing() {
        let (st, kv) = state();
        let body = "services: {web: {image: web:1}, db: {image: db:1}}".to_string();
        let Json(res) = apply(State(st), Path("shop".into()), query(true), body)
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
        let result = apply(State(st.clone()), Path("shop".into()), query(false), body).await;
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
            Path("s6col-a".into()),
            query(false),
            first,
        )
        .await;
        assert!(applied.is_ok());
        let writes = kv.writes();
        let body = "services: {a-web: {image: x}}".to_string();
        let Err(ApiError(status, err)) =
            apply(State(st), Path("s6col".into()), query(false), body).await
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
        let Err(ApiError(status, body)) =
            apply(State(st), Path("shop".into()), query(true), body).await
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
        let Json(first) = apply(State(st.clone()), Path("shop".into()), query(false), body())
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
        let applied = apply(State(st.clone()), Path("shop".into()), stale, body()).await;
        assert!(matches!(applied, Err(ApiError(StatusCode::CONFLICT, _))));
        let q = Query(ScaleQuery {
            resource_version: Some(svc.resource_version),
        });
        let path = Path(("shop".to_string(), "web".to_string()));
        let scaled = scale(
            State(st.clone()),
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
