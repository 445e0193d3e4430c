//! The HTTP API. Reads go to etcd (linearizable: an apply is visible to the next get);
//! every error is JSON with a message, and validation errors list each field and reason.
//!
//! Every module imports only the ones below it, and none this one, which builds the router:
//! - [`state`]: what the handlers share ([`state::ApiState`]) and the API's limits, over
//!   [`tokens`] (the token secrets and the cached token list);
//! - [`caller`]: who is calling (the connection's peer, the request's caller and role),
//!   named by [`audit`] (the audit log and the request counter);
//! - [`auth`]: the middleware that authenticates, authorises by role and audits, and the
//!   `/v1/tokens` routes; [`guard`]: host check, body limits, panics as 500s;
//! - the routes: [`probes`], [`stacks`] (stacks, services, rollouts, leader, Traefik),
//!   [`build`] (`build:` contexts), [`logs`] and [`run`] (one-off containers), the last two
//!   streamed as NDJSON by any daemon, leader or not.

pub mod audit;
pub mod auth;
pub mod build;
pub mod caller;
pub mod guard;
pub mod logs;
pub mod probes;
pub mod run;
pub mod stacks;
pub mod state;
pub mod tokens;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::Router;
use capstan_api::object::ErrorBody;
use std::sync::OnceLock;
use utoipa::openapi::{OpenApi as Document, RefOr, Response as Answer};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use guard::AllowedHosts;
use state::{ApiState, MAX_BODY};

/// The API, every route behind [`auth::guard`] (authentication, roles, audit).
/// `hosts`: the `Host` names accepted (DNS rebinding guard on TCP; any on the Unix socket).
pub fn router(state: ApiState, hosts: AllowedHosts) -> Router {
    let counters = state.metrics.clone();
    let guard = axum::middleware::from_fn_with_state(state.clone(), auth::guard);
    let (routes, _) = api().split_for_parts();
    guard::harden(routes.layer(guard).with_state(state), counters, hosts)
}

/// `/healthz`, `/readyz` and `/metrics` alone, without authentication (`--metrics-listen`).
pub fn probes(state: ApiState) -> Router {
    let counters = state.metrics.clone();
    let hosts = AllowedHosts::local();
    let (routes, _) = probes::routes().split_for_parts();
    guard::harden(routes.with_state(state), counters, hosts)
}

/// The API's OpenAPI 3.1 document: every route of [`router`], described by the handlers' own
/// annotations and types (the router and the document are built by one [`api`]).
pub fn openapi() -> Document {
    let mut doc = api().into_openapi();
    Guarded.modify(&mut doc);
    doc
}

/// [`openapi`] as `GET /openapi.json` serves it and `docs/openapi.json` holds it.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut json = openapi().to_pretty_json().expect("the document serialises");
        json.push('\n');
        json
    })
}

/// Every route with its documentation; request bodies are limited to [`MAX_BODY`], build
/// contexts to their own limit.
fn api() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(probes::routes())
        .routes(routes!(serve_openapi))
        .merge(auth::routes())
        .merge(stacks::routes())
        .merge(run::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(build::routes())
        .merge(logs::routes())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "capstan",
        description = "Capstan's HTTP API: stacks of Compose services kept converged on a Docker host. \
            Over the Unix socket the caller is an admin; over TCP it sends `Authorization: Bearer <token>` \
            (or a client certificate). Roles: `read` (GETs, diff), `deploy` (writes), `admin` (tokens). \
            What a stack may do to the host is the caller's policy profile's to say: `privileged` for root \
            and the engine socket's group on the socket, `baseline` for everyone else unless the daemon's \
            policy file or the token says otherwise. Every error is JSON: an `ErrorBody`."
    ),
    components(schemas(ErrorBody, capstan_api::build::BuildRequest)),
    tags(
        (name = "stacks"), (name = "services"), (name = "rollout"), (name = "builds"),
        (name = "tokens", description = "Role `admin`."),
        (name = "cluster"), (name = "probes"), (name = "meta"),
    )
)]
struct ApiDoc;

/// This document, as the daemon serves it.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The API's OpenAPI 3.1 document.", body = Object)))]
async fn serve_openapi() -> Response {
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    (json, openapi_json()).into_response()
}

/// What every route may answer before its handler runs ([`auth::guard`], [`guard`]), added
/// to each operation that does not say otherwise, with the bearer token it may take.
struct Guarded;

impl Modify for Guarded {
    fn modify(&self, doc: &mut Document) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        (components.security_schemes).insert("bearer".into(), SecurityScheme::Http(bearer));
        let refusals = [
            ("401", "No token, or one that is invalid or revoked (TCP callers)."),
            ("403", "The caller's role is below the one the route needs, or its client certificate names no role."),
            ("421", "The `Host` is not a name of this API (TCP listeners)."),
            ("500", "The handler failed unexpectedly (its request id is in the message)."),
        ];
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                for (code, why) in refusals {
                    let responses = &mut op.responses.responses;
                    responses
                        .entry(code.into())
                        .or_insert_with(|| error_answer(why));
                }
                let security = utoipa::openapi::security::SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                );
                op.security = Some(vec![Default::default(), security]);
            }
        }
    }
}

/// An answer whose body is an [`ErrorBody`].
fn error_answer(why: &str) -> RefOr<Answer> {
    use utoipa::openapi::{ContentBuilder, ResponseBuilder};
    let body = ContentBuilder::new()
        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
        .build();
    ResponseBuilder::new()
        .description(why)
        .content("application/json", body)
        .build()
        .into()
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, StatusCode};
    use tower::ServiceExt;

    /// `method path` through the whole router, as the Unix socket's caller (an admin).
    async fn call(app: &Router, method: &Method, path: &str) -> (StatusCode, String) {
        let mut req = axum::extract::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(axum::body::Body::empty())
            .unwrap();
        let peer = caller::Peer::Unix(Some(caller::UnixCred::default()));
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
        (
            status,
            String::from_utf8_lossy(&body.unwrap_or_default()).into_owned(),
        )
    }

    /// The documented operations, as (method, path with each parameter filled in).
    fn documented() -> Vec<(Method, String)> {
        let doc = openapi();
        let mut ops = vec![];
        for (path, item) in doc.paths.paths {
            let path = (path.replace("{stack}", "shop"))
                .replace("{service}", "web")
                .replace("{verb}", "pause")
                .replace("{name}", "ci");
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ] {
                if op.is_some() {
                    ops.push((method, path.clone()));
                }
            }
        }
        ops
    }

    /// The router's own answer for a request no route takes ([`guard`]'s words).
    fn unrouted(status: StatusCode, body: &str) -> bool {
        (status == StatusCode::NOT_FOUND && body.contains("no route for"))
            || status == StatusCode::METHOD_NOT_ALLOWED
    }

    #[tokio::test]
    async fn every_documented_operation_reaches_a_handler_of_the_router() {
        let app = router(ApiState::in_memory().0, AllowedHosts::any());
        let ops = documented();
        assert!(ops.len() >= 24, "{ops:?}");
        for (method, path) in ops {
            let (status, body) = call(&app, &method, &path).await;
            assert!(!unrouted(status, &body), "{method} {path}: {status} {body}");
        }
    }

    #[tokio::test]
    async fn the_router_serves_no_method_the_document_leaves_out_on_a_documented_path() {
        let app = router(ApiState::in_memory().0, AllowedHosts::any());
        let ops = documented();
        let paths: std::collections::BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
        // HEAD is left out: axum answers it wherever GET is, as HTTP says.
        let methods = [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
        ];
        for path in paths {
            for method in &methods {
                if ops.contains(&(method.clone(), path.clone())) {
                    continue;
                }
                let (status, body) = call(&app, method, path).await;
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented: {body}"
                );
            }
        }
    }

    /// The router is [`api`]'s: routes come only through `routes!`, which takes each path
    /// and method from the handler's `#[utoipa::path]`, so a route cannot be added to it
    /// without its documentation. A plain axum route in these files would bypass that.
    #[test]
    fn the_api_files_add_routes_only_with_their_documentation() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let code = std::fs::read_to_string(&path).unwrap();
            let code = code.split("#[cfg(test)]").next().unwrap_or_default();
            let code = code.replace("OpenApiRouter::new()", "");
            for bypass in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                "axum::routing",
                "Router::new()",
                ".fallback(",
            ] {
                assert!(!code.contains(bypass), "{}: `{bypass}` adds a route the document does not describe; use `.routes(routes!(handler))` with `#[utoipa::path]` on the handler", path.display());
            }
        }
    }

    #[test]
    fn docs_openapi_json_is_the_document_the_daemon_serves() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let written = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            written == openapi_json(),
            "docs/openapi.json is not the API's document: run `make openapi` and commit it"
        );
    }

    #[tokio::test]
    async fn the_document_is_served_to_readers() {
        let needed = auth::required_role(&Method::GET, "/openapi.json");
        assert_eq!(needed, capstan_api::token::Role::Read);
        let app = router(ApiState::in_memory().0, AllowedHosts::any());
        let (status, body) = call(&app, &Method::GET, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/openapi.json"]["get"].is_object());
    }

    #[tokio::test]
    async fn a_diff_is_counted_as_a_verb_of_its_own() {
        use tower::ServiceExt;
        let (st, _) = ApiState::in_memory();
        let metrics = st.metrics.clone();
        let app = router(st, AllowedHosts::any());
        let mut req = axum::extract::Request::builder()
            .method("POST")
            .uri("/v1/stacks/shop/diff")
            .header("host", "localhost")
            .body(axum::body::Body::from("services: {web: {image: web:1}}"))
            .unwrap();
        let peer = caller::Peer::Unix(Some(caller::UnixCred::default()));
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), axum::http::StatusCode::OK);
        let exposition = metrics.encode();
        assert!(
            exposition.contains(r#"capstan_api_requests_total{verb="diff",result="ok"} 1"#),
            "{exposition}"
        );
    }
}
