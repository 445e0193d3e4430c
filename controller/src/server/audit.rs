//! The audit log: every API request that changes something (any method but GET and HEAD)
//! is one line under the tracing target `capstan::audit` (time, caller, verb, stack,
//! summary, the policy profile an apply was checked under, the policy rules that refused it
//! if any, result), and every request is counted
//! in `capstan_api_requests_total{verb,result}` (`verb` one of [`Verb`]'s names).

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use std::cell::RefCell;
use std::future::Future;

use super::caller::Caller;
use crate::metrics::Metrics;

tokio::task_local! {
    static NOTE: RefCell<Noted>;
}

/// What a handler said about its request, for the audit line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Noted {
    /// What the request changed ([`note`]).
    summary: Option<String>,
    /// The policy rules that refused it ([`refused_by`]), comma-separated.
    refused_by: Option<String>,
    /// The policy profile the request was checked under ([`profile`]).
    profile: Option<String>,
}

impl Noted {
    /// The policy rules that refused the request, as the audit line names them.
    pub fn refused_by(&self) -> Option<&str> {
        self.refused_by.as_deref()
    }
}

/// Called by a handler: what its request changed, for the audit line.
pub fn note(summary: impl Into<String>) {
    let summary = summary.into();
    let _ = NOTE.try_with(|n| n.borrow_mut().summary = Some(summary));
}

/// Called by a handler that checks its request against a policy profile: the profile's
/// name, for the audit line.
pub fn profile(name: &str) {
    let _ = NOTE.try_with(|n| n.borrow_mut().profile = Some(name.to_string()));
}

/// Called when a request is refused by policy: the rules that refused it, in order and once
/// each (`policy rule privileged, policy rule bind_mounts`).
pub fn refused_by<'a>(rules: impl IntoIterator<Item = &'a str>) {
    let mut named: Vec<String> = vec![];
    for rule in rules {
        let rule = format!("policy rule {rule}");
        if !named.contains(&rule) {
            named.push(rule);
        }
    }
    if named.is_empty() {
        return;
    }
    let _ = NOTE.try_with(|n| n.borrow_mut().refused_by = Some(named.join(", ")));
}

/// The rule named by a refusal's reason (`policy rule NAME: why`, or `policy rule NAME
/// (profile P, caller C): why`), if it is a policy's.
pub fn policy_rule(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("policy rule ")?;
    rest.split([':', ' ']).next().filter(|r| !r.is_empty())
}

/// The summary of a one-off run: the service, and the command when the request gave one
/// (its environment is not logged: it may hold secrets).
pub fn run_summary(service: &str, command: Option<&[String]>) -> String {
    match command {
        Some(command) => format!("service {service} command {command:?}"),
        None => format!("service {service} command (the service's own)"),
    }
}

/// Runs `fut` (the rest of the request), collecting what the handler noted.
pub async fn with_note<T>(fut: impl Future<Output = T>) -> (T, Noted) {
    NOTE.scope(RefCell::new(Noted::default()), async move {
        let out = fut.await;
        (out, NOTE.with(|n| n.take()))
    })
    .await
}

/// What a request does, as the audit log and the metric's `verb` label name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Apply,
    ApplyDryRun,
    Diff,
    Scale,
    RolloutUndo,
    /// `rollout pause|resume|restart`.
    Rollout,
    Run,
    Build,
    Delete,
    TokenCreate,
    TokenRevoke,
    Get,
    Other,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Apply => "apply",
            Verb::ApplyDryRun => "apply-dry-run",
            Verb::Diff => "diff",
            Verb::Scale => "scale",
            Verb::RolloutUndo => "rollout-undo",
            Verb::Rollout => "rollout",
            Verb::Run => "run",
            Verb::Build => "build",
            Verb::Delete => "delete",
            Verb::TokenCreate => "token-create",
            Verb::TokenRevoke => "token-revoke",
            Verb::Get => "get",
            Verb::Other => "other",
        }
    }

    /// The verb of `method` on the path `parts` (split at `/`), and the stack it names.
    fn of<'a>(method: &Method, parts: &[&'a str], query: &str) -> (Verb, Option<&'a str>) {
        match (method, parts) {
            (&Method::PUT, ["v1", "stacks", s]) if query.contains("dryRun=true") => {
                (Verb::ApplyDryRun, Some(*s))
            }
            (&Method::PUT, ["v1", "stacks", s]) => (Verb::Apply, Some(*s)),
            (&Method::POST, ["v1", "stacks", s, "diff"]) => (Verb::Diff, Some(*s)),
            (&Method::PUT, ["v1", "stacks", s, "services", _, "scale"]) => (Verb::Scale, Some(*s)),
            (&Method::POST, ["v1", "stacks", s, "services", _, "undo"]) => {
                (Verb::RolloutUndo, Some(*s))
            }
            (&Method::POST, ["v1", "stacks", s, "services", _, "rollout", _]) => {
                (Verb::Rollout, Some(*s))
            }
            (&Method::POST, ["v1", "stacks", s, "services", _, "run"]) => (Verb::Run, Some(*s)),
            (&Method::POST, ["v1", "builds"]) => (Verb::Build, None),
            (&Method::DELETE, ["v1", "stacks", s]) => (Verb::Delete, Some(*s)),
            (&Method::POST, ["v1", "tokens"]) => (Verb::TokenCreate, None),
            (&Method::DELETE, ["v1", "tokens", _]) => (Verb::TokenRevoke, None),
            (&Method::GET | &Method::HEAD, ["v1", "stacks", s, ..]) => (Verb::Get, Some(*s)),
            (&Method::GET | &Method::HEAD, _) => (Verb::Get, None),
            _ => (Verb::Other, None),
        }
    }
}

/// One request, as the audit log and the metric describe it.
pub struct Entry {
    method: Method,
    verb: Verb,
    stack: Option<String>,
    summary: Option<String>,
    /// The policy rules that refused the request, if policy did.
    refused_by: Option<String>,
    /// The policy profile the request was checked under, if it was.
    profile: Option<String>,
}

impl Entry {
    pub fn of(req: &Request) -> Entry {
        let method = req.method().clone();
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (verb, stack) = Verb::of(&method, &parts, query);
        let summary = match (verb, parts.as_slice()) {
            (Verb::TokenRevoke, [.., name]) => Some(format!("revoke token {name}")),
            (Verb::Scale | Verb::RolloutUndo | Verb::Run, [_, _, _, _, service, _]) => {
                Some(format!("service {service}"))
            }
            (Verb::Rollout, [_, _, _, _, service, _, verb]) => {
                Some(format!("service {service} rollout {verb}"))
            }
            _ => None,
        };
        Entry {
            method,
            verb,
            stack: stack.map(str::to_string),
            summary,
            refused_by: None,
            profile: None,
        }
    }

    /// With what the handler noted: its summary (instead of the one the path gives) and the
    /// rules that refused the request.
    pub fn with_summary(mut self, noted: Noted) -> Entry {
        if noted.summary.is_some() {
            self.summary = noted.summary;
        }
        self.refused_by = noted.refused_by;
        self.profile = noted.profile;
        self
    }

    /// The policy profile the request was checked under, if it was.
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// Counts the request; logs it if it asked for a change.
    pub fn record(&self, metrics: &Metrics, caller: Option<&Caller>, status: StatusCode) {
        let result = result(status);
        metrics.api_request(self.verb.as_str(), result);
        if self.method == Method::GET || self.method == Method::HEAD {
            return;
        }
        let caller = caller.map_or_else(|| "unauthenticated".to_string(), |c| c.to_string());
        tracing::info!(
            target: "capstan::audit",
            caller = caller.as_str(),
            verb = self.verb.as_str(),
            stack = self.stack.as_deref().unwrap_or(""),
            summary = self.summary.as_deref().unwrap_or(""),
            profile = self.profile.as_deref().unwrap_or(""),
            refused_by = self.refused_by.as_deref().unwrap_or(""),
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
        assert_eq!((e.verb, e.stack.as_deref()), (Verb::Apply, Some("shop")));
        let e = entry(Method::PUT, "/v1/stacks/shop?dryRun=true");
        assert_eq!(e.verb, Verb::ApplyDryRun);
        let e = entry(Method::POST, "/v1/stacks/shop/services/web/undo");
        assert_eq!(
            (e.verb, e.summary.as_deref()),
            (Verb::RolloutUndo, Some("service web"))
        );
        let e = entry(Method::PUT, "/v1/stacks/shop/services/web/scale");
        assert_eq!(
            (e.verb, e.summary.as_deref()),
            (Verb::Scale, Some("service web"))
        );
        assert_eq!(entry(Method::DELETE, "/v1/stacks/shop").verb, Verb::Delete);
        assert_eq!(
            entry(Method::DELETE, "/v1/tokens/ci").verb,
            Verb::TokenRevoke
        );
        assert_eq!(entry(Method::GET, "/metrics").verb, Verb::Get);
    }

    #[test]
    fn diff_build_run_and_rollout_are_verbs_of_their_own() {
        let e = entry(Method::POST, "/v1/stacks/shop/diff");
        assert_eq!(
            (e.verb.as_str(), e.stack.as_deref()),
            ("diff", Some("shop"))
        );
        assert_eq!(entry(Method::POST, "/v1/builds").verb.as_str(), "build");
        let e = entry(Method::POST, "/v1/stacks/shop/services/web/run");
        assert_eq!(
            (e.verb.as_str(), e.summary.as_deref()),
            ("run", Some("service web"))
        );
        let e = entry(Method::POST, "/v1/stacks/shop/services/web/rollout/pause");
        assert_eq!(
            (e.verb.as_str(), e.summary.as_deref()),
            ("rollout", Some("service web rollout pause"))
        );
        assert_eq!(entry(Method::PATCH, "/v1/stacks/shop").verb, Verb::Other);
    }

    #[tokio::test]
    async fn a_handlers_note_reaches_the_entry() {
        let ((), n) = with_note(async { note("web=created") }).await;
        let e = entry(Method::PUT, "/v1/stacks/shop").with_summary(n);
        assert_eq!(e.summary.as_deref(), Some("web=created"));
        assert_eq!(e.refused_by, None);
        let ((), n) = with_note(async { profile("privileged") }).await;
        let e = entry(Method::PUT, "/v1/stacks/shop").with_summary(n);
        assert_eq!(e.profile.as_deref(), Some("privileged"));
        note("outside a request: ignored");
    }

    #[tokio::test]
    async fn a_policy_refusal_names_each_rule_once_in_order() {
        let reasons = [
            "policy rule privileged (profile baseline, caller token \"ci\"): privileged containers are refused",
            "policy rule bind_mounts: / is the host's root",
            "policy rule privileged: again",
            "not a policy's reason",
        ];
        let ((), n) = with_note(async {
            refused_by(reasons.iter().filter_map(|r| policy_rule(r)));
        })
        .await;
        let e = entry(Method::PUT, "/v1/stacks/shop").with_summary(n);
        assert_eq!(
            e.refused_by.as_deref(),
            Some("policy rule privileged, policy rule bind_mounts")
        );
    }

    #[test]
    fn a_run_is_summarised_with_its_command_and_never_its_environment() {
        let command = vec!["sh".to_string(), "-c".into(), "echo hi".into()];
        assert_eq!(
            run_summary("web", Some(&command)),
            r#"service web command ["sh", "-c", "echo hi"]"#
        );
        assert_eq!(
            run_summary("web", None),
            "service web command (the service's own)"
        );
    }
}
