//! `/healthz`, `/readyz` and `/metrics`: served on the API and alone (`--metrics-listen`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::ApiState;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The daemon serves.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Prometheus text exposition (OpenMetrics).
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "The daemon's metrics.", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
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

/// Ready: etcd and the engine answer, and the copy of desired state is synced.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "`not ready: ` and why.", body = String, content_type = "text/plain"),
    ))]
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
