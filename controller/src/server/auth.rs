//! Who may call the API. The Unix socket's caller is an admin (the socket's file mode and
//! group are the check, as for Docker's socket); a TCP caller presents a bearer token,
//! whose SHA-256 is looked up among the tokens in etcd. Roles: `read` (GETs), `deploy`
//! (apply, scale, delete), `admin` (tokens). What a caller's stacks may do to the host is
//! its policy profile's to say ([`super::caller::Caller::profile`]), not its role's. Every request then goes through
//! [`super::audit`]: counted, and logged when it changes something.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use capstan_api::object::ErrorBody;
use capstan_api::token::{CreateToken, CreatedToken, Role, TokenRecord};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::{Caller, ClientCert, Peer};
use super::state::ApiState;
use super::tokens::{hash, new_secret};
use crate::store::StoreError;

/// `POST /v1/stacks/{stack}/diff`: a read, though it carries a document.
fn is_diff(method: &Method, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    method == Method::POST && matches!(parts.as_slice(), ["", "v1", "stacks", _, "diff"])
}

/// The role a request needs.
pub fn required_role(method: &Method, path: &str) -> Role {
    if path == "/v1/tokens" || path.starts_with("/v1/tokens/") {
        Role::Admin
    } else if method == Method::GET || method == Method::HEAD || is_diff(method, path) {
        Role::Read
    } else {
        Role::Deploy
    }
}

pub fn error(status: StatusCode, error: String) -> Response {
    let mut resp = (
        status,
        Json(ErrorBody {
            error,
            details: vec![],
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        let v = header::HeaderValue::from_static("Bearer realm=\"capstan\"");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The caller of `req`, or the response refusing it (401, or 503 if etcd does not answer).
async fn identify(
    st: &ApiState,
    peer: Option<Peer>,
    bearer: Option<String>,
) -> Result<Caller, Response> {
    match peer {
        Some(Peer::Unix(cred)) => return Ok(Caller::Unix(cred)),
        Some(Peer::Tcp {
            cert: Some(cert), ..
        }) => return certificate_caller(cert).map_err(|why| error(StatusCode::FORBIDDEN, why)),
        _ => {}
    }
    let Some(secret) = bearer else {
        let why = "authentication required: send `Authorization: Bearer <token>` (capstan --token, CAPSTAN_TOKEN); create one with `capstan token create NAME` over the Unix socket";
        return Err(error(StatusCode::UNAUTHORIZED, why.into()));
    };
    match st.tokens.lookup(&st.store, &hash(&secret)).await {
        Ok(Some(holder)) => Ok(Caller::Token {
            name: holder.name,
            role: holder.role,
            profile: holder.profile,
        }),
        Ok(None) => Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid or revoked token".into(),
        )),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the token: {e}"),
        )),
    }
}

/// The caller a verified client certificate names, or why not (a 403) when its subject
/// lacks a name or a role: the certificate is trusted, but says nothing the API can act on.
fn certificate_caller(cert: ClientCert) -> Result<Caller, String> {
    match cert {
        ClientCert {
            name: Some(name),
            role: Some(role),
        } => Ok(Caller::Certificate { name, role }),
        ClientCert { name, .. } => Err(format!(
            "the client certificate (CN {}) needs a CN naming the caller and an O naming its role: admin, deploy or read",
            name.as_deref().unwrap_or("missing")
        )),
    }
}

/// The API's middleware: authenticate, authorise by role, then run and audit the request.
pub async fn guard(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let entry = super::audit::Entry::of(&req);
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.clone());
    let bearer = (req.headers().get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let caller = match identify(&st, peer, bearer).await {
        Ok(caller) => caller,
        Err(resp) => {
            entry.record(&st.metrics, None, resp.status());
            return resp;
        }
    };
    let needed = required_role(req.method(), req.uri().path());
    if caller.role() < needed {
        let why = format!(
            "{caller} has role {}; {} {} needs role {}",
            caller.role().name(),
            req.method(),
            req.uri().path(),
            needed.name()
        );
        let resp = error(StatusCode::FORBIDDEN, why);
        entry.record(&st.metrics, Some(&caller), resp.status());
        return resp;
    }
    // The handlers that check a policy take the profile of this caller.
    req.extensions_mut().insert(caller.clone());
    let (resp, summary) = super::audit::with_note(next.run(req)).await;
    entry
        .with_summary(summary)
        .record(&st.metrics, Some(&caller), resp.status());
    resp
}

/// `/v1/tokens`: create, list, revoke (admin only, by [`required_role`]).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// A new token: its secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens",
    request_body(content = CreateToken),
    responses(
        (status = 201, description = "Created: the secret is shown this once.", body = CreatedToken),
        (status = 400, description = "The name is not a short lowercase word, the policy profile is not one the daemon defines, or the body is not JSON.", body = ErrorBody),
        (status = 409, description = "A token of that name exists.", body = ErrorBody),
        (status = 413, description = "The request is over 1 MiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "The JSON is not a `CreateToken`.", body = ErrorBody),
        (status = 500, description = "No randomness for the secret.", body = ErrorBody),
        (status = 503, description = "etcd does not answer.", body = ErrorBody),
    ))]
async fn create_token(State(st): State<ApiState>, Json(req): Json<CreateToken>) -> Response {
    if !valid_name(&req.name) {
        let why = format!("token name {:?}: lowercase letters, digits, '-', '_', '.'; at most 63, starting with a letter or digit", req.name);
        return error(StatusCode::BAD_REQUEST, why);
    }
    let secret = match new_secret() {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no randomness: {e}"),
            )
        }
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some(p) = req
        .policy
        .as_deref()
        .filter(|p| st.policies.get(p).is_none())
    {
        let why = format!(
            "policy {p:?}: the daemon's profiles are {}",
            st.policies.names()
        );
        return error(StatusCode::BAD_REQUEST, why);
    }
    let record = TokenRecord {
        name: req.name.clone(),
        role: req.role,
        policy: req.policy.clone(),
        sha256: hash(&secret),
        created,
    };
    if let Err(e) = st.store.create_token(&record).await {
        return store_error(e);
    }
    st.tokens.invalidate();
    let profile = (req.policy.as_deref()).map_or(String::new(), |p| format!(" policy {p}"));
    super::audit::note(format!(
        "create token {} role {}{profile}",
        req.name,
        req.role.name()
    ));
    let body = CreatedToken {
        name: req.name,
        role: req.role,
        policy: req.policy,
        token: secret,
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Every token: name, role and creation time, never the secret or its hash.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses(
        (status = 200, description = "The tokens.", body = Vec<TokenRecord>),
        (status = 503, description = "etcd does not answer.", body = ErrorBody),
    ))]
async fn list_tokens(State(st): State<ApiState>) -> Response {
    match st.store.tokens().await {
        Ok(mut tokens) => {
            tokens.iter_mut().for_each(|t| t.sha256.clear());
            Json(tokens).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// Revokes a token: within 2 s every daemon sharing the etcd refuses it.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "The token's name.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, description = "No such token.", body = ErrorBody),
        (status = 503, description = "etcd does not answer.", body = ErrorBody),
    ))]
async fn revoke_token(
    State(st): State<ApiState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match st.store.revoke_token(&name).await {
        Ok(()) => {
            st.tokens.invalidate();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_read_writes_need_deploy_and_tokens_need_admin() {
        assert_eq!(required_role(&Method::GET, "/v1/stacks"), Role::Read);
        assert_eq!(required_role(&Method::GET, "/metrics"), Role::Read);
        assert_eq!(required_role(&Method::PUT, "/v1/stacks/a"), Role::Deploy);
        assert_eq!(
            required_role(&Method::POST, "/v1/stacks/a/diff"),
            Role::Read
        );
        assert_eq!(required_role(&Method::PUT, "/v1/stacks/diff"), Role::Deploy);
        assert_eq!(
            required_role(&Method::POST, "/v1/stacks/a/services/b/rollout/restart"),
            Role::Deploy
        );
        assert_eq!(required_role(&Method::DELETE, "/v1/stacks/a"), Role::Deploy);
        assert_eq!(required_role(&Method::GET, "/v1/tokens"), Role::Admin);
        assert_eq!(required_role(&Method::DELETE, "/v1/tokens/x"), Role::Admin);
        assert!(Role::Admin > Role::Deploy && Role::Deploy > Role::Read);
    }

    #[test]
    fn token_names_are_short_lowercase_words() {
        assert!(valid_name("ci-deploy.1"));
        for bad in ["", "-x", "Upper", "a/b", "a b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_client_certificate_names_a_caller_only_with_a_cn_and_a_role() {
        let cert = |name: Option<&str>, role| ClientCert {
            name: name.map(str::to_string),
            role,
        };
        let caller = certificate_caller(cert(Some("ci"), Some(Role::Deploy))).unwrap();
        assert_eq!(
            (caller.to_string(), caller.role()),
            ("cert=ci".into(), Role::Deploy)
        );
        assert!(certificate_caller(cert(Some("ci"), None)).is_err());
        assert!(certificate_caller(cert(None, Some(Role::Admin))).is_err());
        let garbage = ClientCert::of(b"not a certificate");
        assert_eq!(
            garbage,
            cert(None, None),
            "unparsable says nothing, and never panics"
        );
    }
}
