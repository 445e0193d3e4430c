//! Builds for `build:` services: `GET /v1/images?tag=` says whether the engine has a built
//! image (so an unchanged context is never uploaded), `POST /v1/builds?options=` takes the
//! context as a tar, no larger than `serve --max-build-context` (413 otherwise), builds it
//! with the engine's classic builder and streams the builder's output back as NDJSON
//! ([`BuildEvent`] lines). Only images named `capstan.local/...` are built here; once built
//! the image also gets the names the client asked for. Nothing is written to etcd: the
//! client applies the stack once the build succeeded.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use bollard::Docker;
use capstan_api::build::{
    is_built_image, BuildEvent, BuildRequest, ImageView, LABEL_SERVICE, LABEL_STACK,
};
use capstan_api::object::ErrorBody;
use futures::StreamExt as _;
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::ApiState;

fn no_engine() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this daemon has no engine to build on".into(),
    )
}

/// The routes, with their own body limit (the API's 1 MiB does not apply to contexts).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(image))
        .routes(routes!(build))
        .layer(DefaultBodyLimit::disable())
}

fn error(status: StatusCode, error: String) -> Response {
    let body = ErrorBody {
        error,
        details: vec![],
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImageQuery {
    /// A built image's name: `capstan.local/<stack>/<service>:<digest>`.
    tag: String,
}

/// `GET /v1/images?tag=`: only capstan's built names (a reader learns nothing else of the
/// engine's images).
#[utoipa::path(get, path = "/v1/images", tag = "builds",
    params(ImageQuery),
    responses(
        (status = 200, description = "Whether the engine has the built image.", body = ImageView),
        (status = 400, description = "The tag is not an image capstan builds, or is missing.", body = ErrorBody),
        (status = 502, description = "The engine failed.", body = ErrorBody),
        (status = 503, description = "This daemon has no engine to build on.", body = ErrorBody),
    ))]
async fn image(State(st): State<ApiState>, Query(q): Query<ImageQuery>) -> Response {
    if !is_built_image(&q.tag) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "tag {:?} is not an image capstan builds (capstan.local/...)",
                q.tag
            ),
        );
    }
    let Some(docker) = st.builds.engine() else {
        return no_engine();
    };
    let (exists, id) = match docker.inspect_image(&q.tag).await {
        Ok(img) => (true, img.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => (false, None),
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("the engine: {e}")),
    };
    Json(ImageView {
        tag: q.tag,
        exists,
        id,
        max_build_context: st.builds.max_context,
    })
    .into_response()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BuildQuery {
    /// The build, as the JSON of a `BuildRequest`.
    options: String,
}

/// `POST /v1/builds?options=`: the context in the body.
#[utoipa::path(post, path = "/v1/builds", tag = "builds",
    params(BuildQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "The build context, a tar, at most `serve --max-build-context` bytes."),
    responses(
        (status = 200, description = "The builder's output, one JSON `BuildEvent` a line (NDJSON), as it comes; the last says whether the build succeeded.",
            body = BuildEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "`options` is missing, not a `BuildRequest`, names a tag capstan does not build, or is refused by policy.", body = ErrorBody),
        (status = 409, description = "An extra name is another image's.", body = ErrorBody),
        (status = 413, description = "The context is over this daemon's limit.", body = ErrorBody),
        (status = 502, description = "The engine failed.", body = ErrorBody),
        (status = 503, description = "This daemon has no engine to build on.", body = ErrorBody),
    ))]
async fn build(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<super::caller::Caller>,
    Query(q): Query<BuildQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req: BuildRequest = match serde_json::from_str(&q.options) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("options: {e}")),
    };
    if let Err(reason) = check(&req) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let (profile, in_force) = match super::stacks::profile_of(&st, &caller) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let refused = in_force.attribute(profile.policy.check_build("spec", &req.spec));
    if !refused.is_empty() {
        let body = ErrorBody {
            error: format!(
                "refused by policy: {} problem(s); nothing was built",
                refused.len()
            ),
            details: refused,
        };
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let Some(docker) = st.builds.engine().cloned() else {
        return no_engine();
    };
    if let Err(refused) = names_free(&docker, &req).await {
        return refused;
    }
    let max = st.builds.max_context;
    let too_large = |size: String| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the build context ({size}) is over this daemon's limit of {max} bytes \
                 (serve --max-build-context); nothing was built"
            ),
        )
    };
    let declared = (headers.get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max) {
        return too_large(format!("{n} bytes"));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let tar = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(format!("more than {max} bytes, or an upload that broke")),
    };
    tracing::info!(tag = %req.tag, bytes = tar.len(), "building an image");
    // The audit entry is written when the stream starts; the build's end is logged.
    super::audit::note(format!("{}/{} build {}", req.stack, req.service, req.tag));
    let (tx, rx) = tokio::sync::mpsc::channel::<BuildEvent>(64);
    tokio::spawn(run(docker, req, tar, tx));
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// Only capstan's own names are built here, and every extra name must be an image name.
fn check(req: &BuildRequest) -> Result<(), String> {
    let own = format!(
        "{}{}/{}:",
        capstan_api::build::BUILT_IMAGE_PREFIX,
        req.stack,
        req.service
    );
    if !is_built_image(&req.tag) || !req.tag.starts_with(&own) {
        return Err(format!("tag {:?} is not {own}<digest>", req.tag));
    }
    if let Some(why) = (req.spec.network.as_deref()).and_then(capstan_api::build::network_problem) {
        return Err(format!("spec.network: {why}"));
    }
    if req.spec.extra_hosts.len() > 1 {
        return Err("spec.extraHosts: one entry at most (the engine client sends one)".into());
    }
    match req
        .names
        .iter()
        .find(|n| n.is_empty() || n.contains(char::is_whitespace))
    {
        Some(n) => Err(format!("names: {n:?} is not an image name")),
        None => Ok(()),
    }
}

/// Each extra name the image is to get must be free for this stack: no image has it, or
/// capstan built that image for the same stack. Tagging over any other image (an operator's
/// pulled `traefik:2`, another stack's build) would change what its users run next. A 409
/// otherwise; nothing is built.
async fn names_free(docker: &Docker, req: &BuildRequest) -> Result<(), Response> {
    for name in &req.names {
        let labels = match docker.inspect_image(name).await {
            Ok(image) => image.config.and_then(|c| c.labels).unwrap_or_default(),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => continue,
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_GATEWAY,
                    format!("the engine, inspecting {name}: {e}"),
                ))
            }
        };
        if labels.get(LABEL_STACK) != Some(&req.stack) {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "image name {name} is taken by an image capstan did not build for stack {}; \
                     tagging it would change what its users run. Give the service another \
                     `image:`, or remove that image; nothing was built",
                    req.stack
                ),
            ));
        }
    }
    Ok(())
}

/// Builds, streams each event to `tx`, and tags the image with the other names.
async fn run(
    docker: Docker,
    req: BuildRequest,
    tar: axum::body::Bytes,
    tx: tokio::sync::mpsc::Sender<BuildEvent>,
) {
    let mut id = None;
    {
        let mut stream = docker.build_image(options(&req), None, Some(bollard::body_full(tar)));
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(info) => {
                    if let Some(aux) = info.aux.as_ref().and_then(|a| a.id.clone()) {
                        id = Some(aux);
                    }
                    match (info.error_detail, info.stream) {
                        (Some(detail), _) => BuildEvent::Error(detail.message.unwrap_or_default()),
                        (None, Some(text)) => BuildEvent::Stream(text),
                        (None, None) => continue,
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    BuildEvent::Error(error)
                }
                Err(e) => BuildEvent::Error(e.to_string()),
            };
            let failed = matches!(event, BuildEvent::Error(_));
            let _ = tx.send(event).await;
            if failed {
                tracing::info!(tag = %req.tag, "the build failed");
                return;
            }
        }
    }
    let mut names = vec![req.tag.clone()];
    for name in &req.names {
        let (repo, tag) = split_name(name);
        let opts = TagImageOptions {
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
        };
        if let Err(e) = docker.tag_image(&req.tag, Some(opts)).await {
            let _ = tx
                .send(BuildEvent::Error(format!("tagging {name}: {e}")))
                .await;
            return;
        }
        names.push(name.clone());
    }
    tracing::info!(tag = %req.tag, "built");
    let id = id.unwrap_or_default();
    let _ = tx.send(BuildEvent::Built { id, names }).await;
}

/// `repo[:tag]` → (repo, tag), the tag `latest` when absent (a `:` in a registry's port is
/// not a tag).
fn split_name(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    }
}

/// The engine's build options from the request (the classic builder: `version` 1).
fn options(req: &BuildRequest) -> BuildImageOptions {
    let s = &req.spec;
    let mut labels: HashMap<String, String> = s.labels.clone().into_iter().collect();
    labels.insert(LABEL_STACK.into(), req.stack.clone());
    labels.insert(LABEL_SERVICE.into(), req.service.clone());
    BuildImageOptions {
        dockerfile: s.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
        t: Some(req.tag.clone()),
        extrahosts: (!s.extra_hosts.is_empty()).then(|| s.extra_hosts.join(",")),
        nocache: s.no_cache,
        pull: s.pull.then(|| "1".to_string()),
        rm: true,
        forcerm: true,
        buildargs: Some(s.args.clone().into_iter().collect()),
        shmsize: s.shm_size.and_then(|n| i32::try_from(n).ok()),
        labels: Some(labels),
        networkmode: s.network.clone(),
        target: s.target.clone().unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::build::BuildSpec;

    fn request(tag: &str) -> BuildRequest {
        BuildRequest {
            stack: "shop".into(),
            service: "web".into(),
            tag: tag.into(),
            names: vec!["shop-web".into()],
            spec: BuildSpec::default(),
        }
    }

    #[test]
    fn only_the_stacks_own_capstan_names_are_built() {
        assert!(check(&request("capstan.local/shop/web:0123456789abcdef")).is_ok());
        assert!(check(&request("capstan.local/other/web:01")).is_err());
        assert!(check(&request("busybox:latest")).is_err());
    }

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(split_name("shop-web"), ("shop-web", "latest"));
        assert_eq!(split_name("reg:5000/a/b:1.2"), ("reg:5000/a/b", "1.2"));
        assert_eq!(split_name("reg:5000/a/b"), ("reg:5000/a/b", "latest"));
    }

    #[test]
    fn build_options_map_to_the_classic_builders_and_label_the_image() {
        let mut req = request("capstan.local/shop/web:01");
        req.spec.target = Some("prod".into());
        req.spec.pull = true;
        req.spec.args.insert("V".into(), "1".into());
        let o = options(&req);
        assert_eq!(o.target, "prod");
        assert_eq!(o.pull.as_deref(), Some("1"));
        assert_eq!(o.buildargs.unwrap()["V"], "1");
        assert_eq!(o.labels.unwrap()[LABEL_STACK], "shop");
        assert_eq!(
            o.version,
            bollard::query_parameters::BuilderVersion::BuilderV1
        );
    }
}
