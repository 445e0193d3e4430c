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
use axum::Router;

use guard::AllowedHosts;
use state::{ApiState, MAX_BODY};

/// The API, every route behind [`auth::guard`] (authentication, roles, audit).
/// `hosts`: the `Host` names accepted (DNS rebinding guard on TCP; any on the Unix socket).
pub fn router(state: ApiState, hosts: AllowedHosts) -> Router {
    let counters = state.metrics.clone();
    let guard = axum::middleware::from_fn_with_state(state.clone(), auth::guard);
    guard::harden(routes().layer(guard).with_state(state), counters, hosts)
}

/// `/healthz`, `/readyz` and `/metrics` alone, without authentication (`--metrics-listen`).
pub fn probes(state: ApiState) -> Router {
    let counters = state.metrics.clone();
    let hosts = AllowedHosts::local();
    guard::harden(probes::routes().with_state(state), counters, hosts)
}

/// Every route; documents are limited to [`MAX_BODY`], build contexts to their own limit.
fn routes() -> Router<ApiState> {
    probes::routes()
        .merge(auth::routes())
        .merge(stacks::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(build::routes())
        .merge(logs::routes())
        .merge(run::routes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let peer = caller::Peer::Unix(Some((0, 0)));
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
