//! The API's outer layers against hostile or confused callers, added around every route by
//! [`harden`]:
//! - a handler panic becomes a 500 with a request id (logged, counted in
//!   `capstan_api_panics_total`), and the daemon keeps serving;
//! - every error is the documented JSON `{"error": ..., "details": [...]}`, including the
//!   ones axum writes itself (404 and 405 routing errors, 413 for a body over 1 MiB, 400/415
//!   from extractors);
//! - a `Host` header that is not one of the listener's own names is refused (421), so a web
//!   page on the host cannot reach the API through DNS rebinding. Accepted: `localhost`, any
//!   IP literal (`127.0.0.1`, `[::1]`, the listen address), and this machine's hostname.

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use capstan_api::object::ErrorBody;
use futures::FutureExt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Names a request's `Host` may carry besides IP literals; `None`: any name.
#[derive(Clone, Debug)]
pub struct AllowedHosts(Option<Arc<Vec<String>>>);

impl AllowedHosts {
    /// `localhost` and this machine's hostname.
    pub fn local() -> Self {
        let mut names = vec!["localhost".to_string()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(h.trim().to_ascii_lowercase());
        }
        AllowedHosts(Some(Arc::new(names)))
    }

    /// Any name: a Unix socket cannot be reached from a browser, so there is no DNS
    /// rebinding to guard against (and clients name it as they like).
    pub fn any() -> Self {
        AllowedHosts(None)
    }

    /// Whether a `Host` header value names this listener.
    pub fn allows(&self, host: &str) -> bool {
        let Some(names) = &self.0 else {
            return true;
        };
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(v6) => {
                return v6
                    .split(']')
                    .next()
                    .is_some_and(|ip| ip.parse::<IpAddr>().is_ok())
            }
            None => host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n),
        };
        name.parse::<IpAddr>().is_ok() || names.iter().any(|a| a == name)
    }
}

/// Wraps `router` in the layers above. `metrics` counts panics.
pub fn harden(
    router: Router,
    metrics: Arc<crate::metrics::Metrics>,
    hosts: AllowedHosts,
) -> Router {
    router
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(metrics, catch_panic))
        .layer(middleware::from_fn_with_state(hosts, check_host))
}

fn error(status: StatusCode, error: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error,
            details: vec![],
        }),
    )
        .into_response()
}

async fn check_host(State(hosts): State<AllowedHosts>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).map(HeaderValue::to_str);
    match host {
        Some(Ok(h)) if !hosts.allows(h) => {
            tracing::warn!(host = %h, path = %req.uri().path(), "refused a request for a foreign Host");
            error(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {h:?} is not a name of this capstan API (use localhost or an IP address)"
                ),
            )
        }
        Some(Err(_)) => error(
            StatusCode::BAD_REQUEST,
            "the Host header is not text".into(),
        ),
        _ => next.run(req).await,
    }
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

async fn catch_panic(
    State(metrics): State<Arc<crate::metrics::Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(panic) => {
            let id = format!(
                "{:x}-{}",
                std::process::id(),
                REQUEST_IDS.fetch_add(1, Ordering::Relaxed)
            );
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            metrics.api_panic();
            tracing::error!(request_id = %id, %method, %path, panic = %what, "a request handler panicked");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error (request id {id}); the daemon keeps serving, and its log has the details"),
            )
        }
    }
}

/// The most bytes of a non-JSON error body read to become the JSON `error`.
const MAX_PLAIN_ERROR: usize = 16 * 1024;

async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || path == "/readyz" {
        return resp;
    }
    let text = match to_bytes(resp.into_body(), MAX_PLAIN_ERROR).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let reason = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => format!(
            "no route for {method} {path}: stack names are [a-z0-9][a-z0-9_-]*, service names [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 63 characters, no `/`"
        ),
        (StatusCode::METHOD_NOT_ALLOWED, true) => {
            format!("{method} is not allowed on {path}")
        }
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!(
            "the request body is larger than the {} bytes capstan accepts",
            super::state::MAX_BODY
        ),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    error(status, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, put};

    fn app() -> Router {
        let r = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/boom", get(|| async { panic!("boom") as &'static str }))
            .route("/put", put(|body: String| async move { body }))
            .layer(axum::extract::DefaultBodyLimit::max(16));
        harden(
            r,
            Arc::default(),
            AllowedHosts(Some(Arc::new(vec!["localhost".into()]))),
        )
    }

    async fn call(req: Request) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let resp = app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn get_req(path: &str, host: &str) -> Request {
        Request::get(path)
            .header("host", host)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_handler_panic_is_a_json_500_with_a_request_id_and_the_next_request_is_served() {
        let (status, body) = call(get_req("/boom", "localhost:7878")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body["error"].as_str().unwrap().contains("request id"),
            "{body}"
        );
        let (status, _) = call(get_req("/ok", "localhost:7878")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn routing_errors_and_oversized_bodies_are_documented_json() {
        let (status, body) = call(get_req("/v1/stacks/a/b/c", "127.0.0.1:7878")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body["error"].as_str().unwrap().contains("no route"),
            "{body}"
        );
        let (status, body) = call(
            Request::delete("/ok")
                .header("host", "localhost")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            body["error"].as_str().unwrap().contains("not allowed"),
            "{body}"
        );
        let big = Request::put("/put")
            .header("host", "localhost")
            .body(Body::from("x".repeat(100)))
            .unwrap();
        let (status, body) = call(big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body["error"].as_str().unwrap().contains("larger"), "{body}");
    }

    #[tokio::test]
    async fn a_foreign_host_header_is_refused_and_local_names_pass() {
        let (status, body) = call(get_req("/ok", "evil.example:7878")).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("evil.example"));
        for host in [
            "localhost",
            "127.0.0.1:7878",
            "[::1]:7878",
            "10.0.0.5:7878",
            "LOCALHOST:1",
        ] {
            assert_eq!(call(get_req("/ok", host)).await.0, StatusCode::OK, "{host}");
        }
    }

    #[test]
    fn the_unix_socket_takes_any_host_name_and_tcp_only_its_own() {
        assert!(AllowedHosts::any().allows("capstan"));
        assert!(AllowedHosts::any().allows("rebind.attacker.example:80"));
        assert!(!AllowedHosts::local().allows("rebind.attacker.example:80"));
        assert!(AllowedHosts::local().allows("localhost:7878"));
        assert!(AllowedHosts::local().allows("[::1]:7878"));
    }
}
