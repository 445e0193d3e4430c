//! A service's `build:` as stored: Compose's build options, plus what the client learnt when
//! it packed the context (its digest and the name the image also gets). The image itself is
//! built by the daemon from the context the client uploads (`POST /v1/builds`); the stored
//! spec keeps this summary so `get -o yaml` says the service is built, and so the reconciler
//! knows never to pull its image.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The repository prefix of every image capstan builds. `.local` is reserved for multicast
/// DNS (RFC 6762), so no registry answers to it; capstan never pulls a built image anyway.
pub const BUILT_IMAGE_PREFIX: &str = "capstan.local/";

/// How many hex digits of the content digest the built image's tag carries.
pub const TAG_DIGITS: usize = 16;

/// `build:` of a service, short or long form, with Compose's meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// The context folder (absolute once `capstan apply` resolved it).
    pub context: String,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// A Dockerfile given in the Compose file itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    /// Build arguments (`ARG`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The stage to build (`--target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Labels of the built image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The network `RUN` steps use (`host`, `none`, `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `/dev/shm` of the build containers, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    /// `HOST:IP` entries of the build containers' `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Build without the engine's layer cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// Pull newer versions of the base images while building.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull: bool,
    /// More names for the built image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `sha256:<hex>` of the context and these options (`x-capstan-digest`, set by the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The name Compose gives the image: the service's `image`, else `<stack>-<service>`
    /// (`x-capstan-image`, set by the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl BuildSpec {
    /// The options that decide the image's content, without where the context is or what
    /// the image is called: what the client digests together with the context's files.
    pub fn content_options(&self) -> serde_json::Value {
        serde_json::json!({
            "dockerfile": self.dockerfile,
            "dockerfileInline": self.dockerfile_inline,
            "args": self.args,
            "target": self.target,
            "labels": self.labels,
            "network": self.network,
            "shmSize": self.shm_size,
            "extraHosts": self.extra_hosts,
            "noCache": self.no_cache,
            "pull": self.pull,
        })
    }
}

/// Why `network` cannot be a build's network, if it cannot: `container:NAME` would run the
/// build's steps in the namespace of a container that may be anyone's. A network's name,
/// `default`, `none` and `host` (which the policy weighs) are for the engine to judge.
pub fn network_problem(network: &str) -> Option<String> {
    network.starts_with("container:").then(|| {
        format!("{network:?} would run the build's steps in another container's network namespace; name a network, `default`, `none` or `host`")
    })
}

/// The deterministic name of the image built from `digest` (`sha256:<hex>` or bare hex) for
/// `service` of `stack`: `capstan.local/<stack>/<service>:<first 16 hex digits>`.
pub fn built_tag(stack: &str, service: &str, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let short: String = hex.chars().take(TAG_DIGITS).collect();
    format!("{BUILT_IMAGE_PREFIX}{stack}/{service}:{short}")
}

/// The name Compose (v2) gives a built image when the service has no `image`.
pub fn default_image_name(stack: &str, service: &str) -> String {
    format!("{stack}-{service}")
}

/// Whether `image` is one capstan built (and so must never be pulled).
pub fn is_built_image(image: &str) -> bool {
    image.starts_with(BUILT_IMAGE_PREFIX)
}

/// Label of a built image: the stack it was built for (tests and operators clean up by it).
pub const LABEL_STACK: &str = "capstan.build.stack";
/// Label of a built image: the service it was built for.
pub const LABEL_SERVICE: &str = "capstan.build.service";

/// `POST /v1/builds?options=<this, as JSON>`: the body is the context as a tar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequest {
    pub stack: String,
    pub service: String,
    /// The deterministic tag ([`built_tag`]); the image is built under it.
    pub tag: String,
    /// More names the image gets once built (the service's `image`, `build.tags`).
    #[serde(default)]
    pub names: Vec<String>,
    /// The options; `dockerfile` is the Dockerfile's path inside the tar.
    pub spec: BuildSpec,
}

/// `GET /v1/images?tag=`: whether the engine has that image, and how large a context this
/// daemon accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    pub tag: String,
    pub exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `serve --max-build-context`, in bytes.
    pub max_build_context: u64,
}

/// One line of the build route's NDJSON answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum BuildEvent {
    /// Output of the builder (`Step 2/4 : RUN ...`, the step's own output).
    Stream(String),
    /// The build failed: the engine's message. Nothing was tagged.
    Error(String),
    /// The build succeeded: the image's id, and every name it now has.
    Built { id: String, names: Vec<String> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_carries_the_stack_the_service_and_sixteen_digits_of_the_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let tag = built_tag("shop", "web", &d);
        assert_eq!(tag, "capstan.local/shop/web:abababababababab");
        assert!(is_built_image(&tag));
        assert!(!is_built_image("busybox:latest"));
    }

    #[test]
    fn the_build_summary_does_not_change_the_container_hash_the_image_tag_does() {
        let mut a = crate::spec::ServiceSpec {
            image: "capstan.local/s/web:01".into(),
            ..Default::default()
        };
        let plain = a.container_hash();
        a.build = Some(BuildSpec {
            context: "/moved/here".into(),
            ..Default::default()
        });
        assert_eq!(a.container_hash(), plain);
        a.image = "capstan.local/s/web:02".into();
        assert_ne!(a.container_hash(), plain);
    }

    #[test]
    fn content_options_leave_out_the_context_path_and_the_names() {
        let a = BuildSpec {
            context: "/a".into(),
            tags: vec!["x".into()],
            ..Default::default()
        };
        let b = BuildSpec {
            context: "/b".into(),
            name: Some("n".into()),
            ..Default::default()
        };
        assert_eq!(a.content_options(), b.content_options());
        let c = BuildSpec {
            target: Some("prod".into()),
            ..Default::default()
        };
        assert_ne!(a.content_options(), c.content_options());
    }
}
