//! The audit log: every API request that changes something (any method but GET and HEAD)
//! is one line under the tracing target `capstan::audit` (time, caller, verb, stack,
//! summary, result), and every request is counted in `capstan_api_requests_total{verb,result}`.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use std::cell::RefCell;
use std::future::Future;

use crate::auth::Caller;
use crate::metrics::Metrics;

tokio::task_local! {
    static NOTE: RefCell<Option<String>>;
}

/// Called by a handler: what its request changed, for the audit line.
pub fn note(summary: impl Into<String>) {
    let summary = summary.into();
    let _ = NOTE.try_with(|n| *n.borrow_mut() = Some(summary));
}

/// Runs `fut` (the rest of the request), collecting the handler's [`note`].
pub async fn with_note<T>(fut: impl Future<Output = T>) -> (T, Option<String>) {
    NOTE.scope(RefCell::new(None), async move {
        let out = fut.await;
        (out, NOTE.with(|n| n.borrow_mut().take()))
    })
    .await
}

/// One request, as the audit log and the metric describe it.
pub struct Entry {
    method: Method,
    verb: &'static str,
    stack: Option<String>,
    summary: Option<String>,
}

impl Entry {
    pub fn of(req: &Request) -> Entry {
        let method = req.method().clone();
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (verb, stack) = match (&method, parts.as_slice()) {
            (&Method::PUT, ["v1", "stacks", s]) if query.contains("dryRun=true") => {
                ("apply-dry-run", Some(*s))
            }
            (&Method::PUT, ["v1", "stacks", s]) => ("apply", Some(*s)),
            (&Method::PUT, ["v1", "stacks", s, "services", _, "scale"]) => ("scale", Some(*s)),
            (&Method::POST, ["v1", "stacks", s, "services", _, "undo"]) => {
                ("rollout-undo", Some(*s))
            }
            (&Method::POST, ["v1", "stacks", s, "services", _, "run"]) => ("run", Some(*s)),
            (&Method::DELETE, ["v1", "stacks", s]) => ("delete", Some(*s)),
            (&Method::POST, ["v1", "tokens"]) => ("token-create", None),
            (&Method::DELETE, ["v1", "tokens", _]) => ("token-revoke", None),
            (&Method::GET | &Method::HEAD, ["v1", "stacks", s, ..]) => ("get", Some(*s)),
            (&Method::GET | &Method::HEAD, _) => ("get", None),
            _ => ("other", None),
        };
        let summary = match (verb, parts.as_slice()) {
            ("token-revoke", [.., name]) => Some(format!("revoke token {name}")),
            ("scale" | "rollout-undo" | "run", [_, _, _, _, service, _]) => {
                Some(format!("service {service}"))
            }
            _ => None,
        };
        Entry {
            method,
            verb,
            stack: stack.map(str::to_string),
            summary,
        }
    }

    pub fn with_summary(mut self, summary: Option<String>) -> Entry {
        if summary.is_some() {
            self.summary = summary;
        }
        self
    }

    /// Counts the request; logs it if it asked for a change.
    pub fn record(&self, metrics: &Metrics, caller: Option<&Caller>, status: StatusCode) {
        let result = result(status);
        metrics.api_request(self.verb, result);
        if self.method == Method::GET || self.method == Method::HEAD {
            return;
        }
        let caller = caller.map_or_else(|| "unauthenticated".to_string(), |c| c.to_string());
        tracing::info!(
            target: "capstan::audit",
            caller = caller.as_str(),
            verb = self.verb,
            stack = self.stack.as_deref().unwrap_or(""),
            summary = self.summary.as_deref().unwrap_or(""),
            result = result,
            status = status.as_u16(),
            "audit"
        );
    }
}

/// The metric's `result` label: a few values, whatever the status.
fn result(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        401 => "unauthorized",
        403 => "forbidden",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: Method, uri: &str) -> Entry {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        Entry::of(&req)
    }

    #[test]
    fn a_request_is_named_by_its_verb_and_stack() {
        let e = entry(Method::PUT, "/v1/stacks/shop");
        assert_eq!((e.verb, e.stack.as_deref()), ("apply", Some("shop")));
        let e = entry(Method::PUT, "/v1/stacks/shop?dryRun=true");
        assert_eq!(e.verb, "apply-dry-run");
        let e = entry(Method::POST, "/v1/stacks/shop/services/web/undo");
        assert_eq!(
            (e.verb, e.summary.as_deref()),
            ("rollout-undo", Some("service web"))
        );
        let e = entry(Method::PUT, "/v1/stacks/shop/services/web/scale");
        assert_eq!(
            (e.verb, e.summary.as_deref()),
            ("scale", Some("service web"))
        );
        assert_eq!(entry(Method::DELETE, "/v1/stacks/shop").verb, "delete");
        assert_eq!(entry(Method::DELETE, "/v1/tokens/ci").verb, "token-revoke");
        assert_eq!(entry(Method::GET, "/metrics").verb, "get");
    }

    #[tokio::test]
    async fn a_handlers_note_reaches_the_entry() {
        let ((), n) = with_note(async { note("web=created") }).await;
        assert_eq!(n.as_deref(), Some("web=created"));
        note("outside a request: ignored");
    }
}
