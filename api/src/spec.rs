//! The desired state: what a user declares with `apply`, normalised from Compose.
//!
//! Maps are `BTreeMap` so that two equal specs serialise to the same bytes: equality decides
//! whether `generation` grows, and the bytes feed the spec hash on every container.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use crate::files::{FileKind, FileMount, FileObject};
use crate::names;
pub use crate::options::*;

/// One Compose project.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackSpec {
    pub name: String,
    pub services: BTreeMap<String, ServiceSpec>,
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Top-level `secrets`: digests (content only in memory, see [`FileObject`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObject>,
    /// Top-level `configs`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObject>,
    /// The policy profile that admitted this apply: set by the server from its caller,
    /// never read from the document. The stack record keeps it, so that the controller
    /// checks host paths again under the same profile.
    #[serde(skip)]
    pub profile: Option<String>,
}

/// One Compose service, replicated `replicas` times.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Stack network name → how this service joins it. Never empty after parsing: a service
    /// that names no network joins `default`.
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<MountSpec>,
    /// `None` means capstan's default, [`RestartPolicy::Always`] (like Swarm), since a
    /// controller that does not restart is no controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Services of the same stack that must meet a condition before this one's replicas
    /// are created or started, on every reconcile.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Dependency>,
    /// `deploy.restart_policy`'s `delay` and `window`: capstan's crash-loop back-off for
    /// this service. Enforced by capstan, so not part of the container hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_timing: Option<RestartTiming>,
    /// The options passed through to the engine's container config.
    #[serde(default, skip_serializing_if = "ContainerOptions::is_empty")]
    pub options: ContainerOptions,
    /// `deploy.update_config`. Enforced by capstan, so not part of the container hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    /// `deploy.rollback_config`: how an automatic rollback rolls. Not part of the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// `deploy.labels`: labels of the service, not of its containers (as Compose).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deploy_labels: BTreeMap<String, String>,
    /// Set by `capstan rollout pause|resume|restart`, never by a Compose file: an apply
    /// keeps the stored one.
    #[serde(default, skip_serializing_if = "RolloutControl::is_unset")]
    pub rollout: RolloutControl,
    /// `build:`: the image was built by capstan from this context ([`crate::build`]); such
    /// an image is never pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::build::BuildSpec>,
    /// `pull_policy`; `None` is Compose's default, `missing`. Decides when the image is
    /// pulled, not what a container is: not part of the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<crate::pull::PullPolicy>,
    /// `secrets`: files mounted read-only under `/run/secrets/` (by digest, never content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileMount>,
    /// `configs`: files mounted read-only at their target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileMount>,
    /// `post_start`: run in each replica, in order, after capstan started it. Part of the
    /// container hash, as in Compose: a changed hook recreates the replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_start: Vec<Hook>,
    /// `pre_stop`: run in each running replica, in order, before capstan stops it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_stop: Vec<Hook>,
}

/// What `capstan rollout` changes besides the file's spec, as a Deployment's `paused` and
/// its restart annotation do in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutControl {
    /// No outdated replica that still serves is replaced (scaling and healing go on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// When `rollout restart` asked for every replica anew: part of the container hash, so
    /// each replica is replaced as `update_config` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
}

impl RolloutControl {
    pub fn is_unset(&self) -> bool {
        *self == RolloutControl::default()
    }
}

/// One `depends_on` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub condition: DependencyCondition,
    /// `false`: a dependency missing from the stack is ignored.
    pub required: bool,
    /// Restart this service when capstan restarts or replaces the dependency.
    pub restart: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// Every replica of the dependency is running (or, for a one-shot, has completed).
    ServiceStarted,
    /// Every replica of the dependency is ready: healthy, or running without a healthcheck.
    ServiceHealthy,
    /// Every replica of the dependency exited 0 with the current spec.
    ServiceCompletedSuccessfully,
}

impl DependencyCondition {
    pub fn as_str(&self) -> &'static str {
        match self {
            DependencyCondition::ServiceStarted => "service_started",
            DependencyCondition::ServiceHealthy => "service_healthy",
            DependencyCondition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNetwork {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// A fixed address: one replica only, and the network needs an IPAM subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    /// Higher joins first (the network the container is created on); ties by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

/// `[host_ip:][host_port[-end]:]container_port[/protocol]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Inclusive host port range; `None` lets the engine pick an ephemeral port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<(u16, u16)>,
    pub container_port: u16,
    pub protocol: String,
    /// `ingress` (the default): a single TCP host port is served by capstan's proxy when
    /// several replicas share it or the port opts in, else by the engine. `host`: the engine
    /// publishes it directly.
    #[serde(default, skip_serializing_if = "PortMode::is_ingress")]
    pub mode: PortMode,
    /// `x-capstan-proxy`: true has capstan's proxy serve the port at any replica count, false
    /// never; unset leaves it to the count, so that one replica keeps Compose's meaning (the
    /// engine publishes it and the client's address reaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<bool>,
    /// `x-capstan-proxy-protocol`: the proxy opens each connection to a replica with a PROXY
    /// protocol header carrying the client's address, which the proxy would otherwise hide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// The PROXY protocol version a proxied port speaks to its replicas (HAProxy's
/// specification; Traefik, nginx and HAProxy accept both).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// The text header, `PROXY TCP4 <client> <local> <client port> <local port>\r\n`.
    V1,
    /// The binary header.
    V2,
}

/// Who serves a published port at a given replica count (ordered as notices list them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Serving {
    /// The engine publishes it through NAT, as Compose does: the replica sees the client's
    /// address.
    Engine,
    /// Capstan's proxy balances it over the ready replicas; they see the proxy's address,
    /// or the client's in a PROXY protocol header when the port declares one.
    Proxy(Option<ProxyProtocol>),
}

impl Serving {
    /// How a notice or a refusal names this way of serving.
    pub fn describe(&self) -> &'static str {
        match self {
            Serving::Engine => "published by the engine, the client's address kept",
            Serving::Proxy(None) => {
                "served by capstan's proxy, balanced over the replicas, which see the proxy's address"
            }
            Serving::Proxy(Some(ProxyProtocol::V1)) => {
                "served by capstan's proxy, balanced, the client's address passed on with the PROXY protocol v1"
            }
            Serving::Proxy(Some(ProxyProtocol::V2)) => {
                "served by capstan's proxy, balanced, the client's address passed on with the PROXY protocol v2"
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    #[default]
    Ingress,
    Host,
}

impl PortMode {
    pub fn is_ingress(&self) -> bool {
        *self == PortMode::Ingress
    }
}

impl PortSpec {
    /// Who serves this port while the service runs `replicas` replicas. Only one TCP host
    /// port in ingress mode can be proxied; it is when the port opts in (`x-capstan-proxy:
    /// true`, or a PROXY protocol), or, undeclared, when several replicas share it: one
    /// replica is published by the engine, as `docker compose up` would.
    pub fn serving(&self, replicas: u32) -> Serving {
        let proxiable = self.mode == PortMode::Ingress
            && self.protocol == "tcp"
            && self.host_port_count() == Some(1);
        let wanted = self.proxy_protocol.is_some() || self.proxy.unwrap_or(replicas > 1);
        match proxiable && wanted {
            true => Serving::Proxy(self.proxy_protocol),
            false => Serving::Engine,
        }
    }

    /// Served by capstan's proxy at `replicas` replicas (see [`PortSpec::serving`]).
    pub fn proxied(&self, replicas: u32) -> bool {
        matches!(self.serving(replicas), Serving::Proxy(_))
    }

    /// The host port replica `ordinal` publishes on: a single port for everyone, or its own
    /// port out of a range.
    pub fn host_port_for(&self, ordinal: u32) -> Option<u16> {
        let (start, end) = self.host_ports?;
        if start == end {
            Some(start)
        } else {
            Some(start + (ordinal as u16).saturating_sub(1)).filter(|p| *p <= end)
        }
    }

    /// How many host ports this mapping offers (`None`: unlimited ephemeral ports).
    pub fn host_port_count(&self) -> Option<u32> {
        self.host_ports.map(|(s, e)| (e - s) as u32 + 1)
    }

    /// The port rule, in one place for apply and scale: every replica needs a host port of
    /// its own unless the proxy serves the port, and a change of the replica count from
    /// `previous` (None: a new service) must not move the port between the engine and the
    /// proxy, since it would not answer while it moves. `None` when `replicas` replicas of
    /// `service` can publish this mapping; otherwise why not, for the field error.
    pub fn replicas_problem(
        &self,
        service: &str,
        replicas: u32,
        previous: Option<u32>,
    ) -> Option<String> {
        let port = self.host_ports.map_or(0, |(start, _)| start);
        match self.host_port_count() {
            Some(1) if replicas > 1 && !self.proxied(replicas) => {
                return Some(format!(
                    "host port {port} can be published by one replica only, and {service} has {replicas} replicas; let capstan's proxy balance it (TCP in ingress mode, without `x-capstan-proxy: false`), use a range with one port per replica (\"{port}-{}:{}\"), or let the engine pick (\"{}\")",
                    port as u32 + replicas - 1,
                    self.container_port,
                    self.container_port
                ));
            }
            Some(n) if n > 1 && n < replicas => {
                return Some(format!(
                    "the range has {n} host ports but service {service} has {replicas} replicas: each replica needs its own port"
                ));
            }
            _ => {}
        }
        let from = previous.filter(|&n| n > 0 && replicas > 0)?;
        let (before, after) = (self.serving(from), self.serving(replicas));
        let who = |s: Serving| match s {
            Serving::Engine => "the engine (which keeps the client's address, as Compose)",
            Serving::Proxy(_) => "capstan's proxy (which balances the replicas)",
        };
        (before != after).then(|| {
            format!(
                "going from {from} to {replicas} replicas would move host port {port} of {service} from {} to {}, and the port would not answer while it moves; declare `x-capstan-proxy: true` on this port (long syntax) to have the proxy serve it at any replica count (add `x-capstan-proxy-protocol: v1` or `v2` to pass the client's address on), then scale",
                who(before),
                who(after)
            )
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum MountKind {
    /// A named volume the stack declares.
    Volume,
    /// A host path.
    Bind,
    /// A volume of the container's own, removed with it.
    Anonymous,
    /// A tmpfs mount (long syntax `type: tmpfs`).
    Tmpfs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MountSpec {
    pub kind: MountKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// `rprivate`, `private`, `rshared`, `shared`, `rslave`, `slave` (binds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// `z` (shared) or `Z` (private) SELinux relabelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
    /// Named volumes: do not copy the image's files into a new volume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocopy: bool,
    /// Named volumes: mount this path inside the volume (Docker API 1.45).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
    /// Binds: `false` refuses a missing host path instead of creating it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_host_path: Option<bool>,
    /// Tmpfs: size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<i64>,
    /// Tmpfs: file mode (`0o1777`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_mode: Option<u32>,
}

impl MountSpec {
    /// A mount with only kind, source, target and mode.
    pub fn plain(kind: MountKind, source: Option<String>, target: &str, read_only: bool) -> Self {
        MountSpec {
            kind,
            source,
            target: target.to_string(),
            read_only,
            propagation: None,
            selinux: None,
            nocopy: false,
            subpath: None,
            create_host_path: None,
            tmpfs_size: None,
            tmpfs_mode: None,
        }
    }
}

/// Compose's `restart`, enforced by capstan (containers get no engine restart policy, so
/// that restarts, back-off and startup order have one owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_retries: Option<u32>,
    },
}

impl RestartPolicy {
    /// Whether a replica that exited with `exit_code` after `restarts` restarts is started again.
    pub fn restarts(&self, exit_code: i64, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && max_retries.is_none_or(|max| restarts < max)
            }
        }
    }
}

/// How capstan spaces the restarts of a crash-looping replica, from `deploy.restart_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartTiming {
    /// `delay`: the wait before the first restart (then doubling, as capstan's back-off does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `window`: restarts are counted (for `max_attempts`) and backed off until a replica
    /// has gone this long without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
}

/// `deploy.update_config`: how a changed spec replaces the replicas, with Swarm's fields.
/// Enforced by capstan, so not part of the container hash. Every field left out takes
/// capstan's default (see the accessors), which keeps the service serving while it rolls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateConfig {
    /// Replicas replaced at once; 0: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Wait after a replaced replica is ready before its slot takes the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<FailureAction>,
    /// How long after it started an updated replica has to become ready before it counts
    /// as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_ms: Option<u64>,
    /// The share of replicas that may fail before `failure_action` is taken, in thousandths
    /// (Compose's `max_failure_ratio: 0.2` is 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_permille: Option<u32>,
}

/// Swarm's `order`. Start-first runs each replaced replica's successor next to it (named
/// `<replica>-next`) until the successor is ready, then drains and removes the replica and
/// renames the successor; stop-first removes the replica, then makes its successor. A
/// service whose replicas cannot run twice at once ([`ServiceSpec::surge_blocker`]: a host
/// port, a fixed address, a volume written read-write) is replaced stop-first, and its
/// `Progressing` condition says why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// capstan's default.
    #[default]
    StartFirst,
    /// Swarm's default.
    StopFirst,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop replacing replicas; the updated ones are still healed.
    #[default]
    Pause,
    /// Carry on: failed replicas do not hold the rollout up.
    Continue,
    /// Return to the previous revision's spec (`update_config` only).
    Rollback,
}

/// Monitor when the file gives none: Swarm's 5 s, or the service's start-up grace if longer
/// (a replica still inside its healthcheck's `start_period` has not failed).
pub const DEFAULT_MONITOR: std::time::Duration = std::time::Duration::from_secs(5);

impl UpdateConfig {
    /// Replicas replaced at once out of `replicas`. Default: a quarter of them, rounded up
    /// (Kubernetes' `maxUnavailable` default), so 1 for up to 4 replicas and 3 for 10.
    pub fn batch(&self, replicas: u32) -> u32 {
        match self.parallelism {
            Some(0) => replicas.max(1),
            Some(n) => n,
            None => replicas.div_ceil(4).max(1),
        }
    }

    pub fn delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.delay_ms.unwrap_or(0))
    }

    pub fn order(&self) -> UpdateOrder {
        self.order.unwrap_or_default()
    }

    pub fn failure_action(&self) -> FailureAction {
        self.failure_action.unwrap_or_default()
    }

    /// How long a started replica may take to be ready; `grace` is the service's start-up
    /// grace, the default's floor.
    pub fn monitor(&self, grace: std::time::Duration) -> std::time::Duration {
        self.monitor_ms
            .map_or(DEFAULT_MONITOR.max(grace), std::time::Duration::from_millis)
    }

    /// Whether `failed` of `replicas` is more than the tolerated share (default 0: any).
    pub fn too_many_failures(&self, failed: u32, replicas: u32) -> bool {
        let permille = self.max_failure_permille.unwrap_or(0) as u64;
        failed > 0 && failed as u64 * 1000 > permille * replicas.max(1) as u64
    }
}

/// The engine's health config, in its own units (nanoseconds) so it passes through as is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`; empty keeps the image's test
    /// (Compose lets a file change only the timing, and the engine merges field by field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval_ns: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Made elsewhere: capstan joins it but never creates or removes it.
    #[serde(default)]
    pub external: bool,
    /// The engine-side name, when it is not `<stack>_<key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ipv6: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
}

/// A network's address management.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Ipam {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct IpamPool {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    #[serde(default)]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
}

impl NetworkSpec {
    /// The network's name on the engine.
    pub fn engine_name(&self, stack: &str, key: &str) -> String {
        match (&self.name, self.external) {
            (Some(name), _) => name.clone(),
            (None, true) => key.to_string(),
            (None, false) => names::scoped(stack, key),
        }
    }
}

impl VolumeSpec {
    /// The volume's name on the engine.
    pub fn engine_name(&self, stack: &str, key: &str) -> String {
        match (&self.name, self.external) {
            (Some(name), _) => name.clone(),
            (None, true) => key.to_string(),
            (None, false) => names::scoped(stack, key),
        }
    }
}

/// How long a replica gets to stop when the service names no `stop_grace_period` (Compose's).
pub const DEFAULT_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a replica that has not yet been healthy may be unhealthy before capstan heals
/// it, when its healthcheck names no longer `start_period`.
pub const DEFAULT_STARTUP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl ServiceSpec {
    /// How long a fresh replica may fail its healthcheck before it is healed: the
    /// healthcheck's `start_period`, at least [`DEFAULT_STARTUP_GRACE`]. A cold start of
    /// many replicas on a busy engine times health checks out; healing them then only adds
    /// load (the restarts cascade).
    pub fn startup_grace(&self) -> std::time::Duration {
        let start_period = self
            .healthcheck
            .as_ref()
            .and_then(|h| h.start_period_ns)
            .map_or(std::time::Duration::ZERO, |ns| {
                std::time::Duration::from_nanos(ns.max(0) as u64)
            });
        start_period.max(DEFAULT_STARTUP_GRACE)
    }

    /// `stop_grace_period`, or Compose's default.
    pub fn stop_grace(&self) -> std::time::Duration {
        self.stop_grace_period_ms
            .map_or(DEFAULT_STOP_GRACE, std::time::Duration::from_millis)
    }

    /// Replica currency, the one rule for it: replica `ordinal` belongs to the spec (its
    /// ordinal is within `1..=replicas`); any other is surplus.
    pub fn is_current(&self, ordinal: Option<u32>) -> bool {
        ordinal.is_some_and(|n| n >= 1 && n <= self.replicas)
    }

    /// The engine name of replica `ordinal`: the service's `container_name` for its one
    /// replica, else `<stack>-<service>-<n>`. Stray detection and status use this too.
    pub fn replica_name(&self, stack: &str, service: &str, ordinal: u32) -> String {
        match &self.options.container_name {
            Some(name) if ordinal == 1 => name.clone(),
            _ => names::container(stack, service, ordinal),
        }
    }

    /// The engine name of replica `ordinal`'s successor in a start-first update: it runs next
    /// to the replica until it is ready, then the replica is removed and the successor takes
    /// its name.
    pub fn successor_name(&self, stack: &str, service: &str, ordinal: u32) -> String {
        format!("{}-next", self.replica_name(stack, service, ordinal))
    }

    /// Why a start-first update cannot run a replica's successor next to it, so that the
    /// replica is replaced in place (stopped, then made anew) instead; `None` when it can.
    /// Two containers of one ordinal must not contend for what only one can hold (a name, an
    /// address, a host port) nor write the same files (a read-write named volume that is not
    /// declared shared, a per-replica volume, a read-write host path). `volumes`: the stack's.
    pub fn surge_blocker(&self, volumes: &BTreeMap<String, VolumeSpec>) -> Option<String> {
        if let Some(p) = self.partners().next() {
            return Some(format!(
                "each replica is paired with a replica of {} ({})",
                p.service,
                p.describe()
            ));
        }
        if let Some(name) = &self.options.container_name {
            return Some(format!("`container_name: {name}` names one container"));
        }
        if let Some((net, _)) = (self.networks.iter())
            .find(|(_, n)| n.ipv4_address.is_some() || n.ipv6_address.is_some())
        {
            return Some(format!("`networks.{net}` gives it a fixed address"));
        }
        if self.options.network_mode == Some(NetworkMode::Host) {
            return Some("on the host's network both would listen on the same ports".into());
        }
        let bound = self.ports.iter().filter(|p| !p.proxied(self.replicas));
        if let Some((port, _)) = bound.filter_map(|p| p.host_ports).next() {
            return Some(format!(
                "host port {port} is bound by one container at a time"
            ));
        }
        self.volumes.iter().filter(|m| !m.read_only).find_map(|m| {
            let source = m.source.as_deref().unwrap_or_default();
            let shared = volumes.get(source).is_some_and(VolumeSpec::shared);
            match m.kind {
                MountKind::Volume if !shared => Some(format!(
                    "named volume {source:?} is mounted read-write and is not declared shared"
                )),
                MountKind::Bind => Some(format!("host path {source:?} is mounted read-write")),
                _ => None,
            }
        })
    }

    /// The replicas this service's replicas pair with, if it is a sidecar: the network's
    /// partner first (`network_mode: service:`), then those of `volumes_from`.
    pub fn partners(&self) -> impl Iterator<Item = &Partner> {
        let network = (self.options.network_mode.as_ref()).and_then(NetworkMode::partner);
        network
            .into_iter()
            .chain(self.options.volumes_from.iter().map(|v| &v.partner))
    }

    /// Whether this service is a sidecar of `service` (it decides on that one's replicas).
    pub fn pairs_with(&self, service: &str) -> bool {
        self.partners().any(|p| p.service == service)
    }

    /// The partner a sidecar follows in its replica count: its first partner paired
    /// replica by replica. `None` for a service that keeps a count of its own.
    pub fn lead_partner(&self) -> Option<&Partner> {
        self.partners().find(|p| p.replica.is_none())
    }

    /// How many replicas the service runs: a sidecar as many as its lead partner
    /// (`replicas_of` looks a service of the stack up), any other service its own count.
    pub fn desired_replicas(&self, replicas_of: impl Fn(&str) -> Option<u32>) -> u32 {
        (self.lead_partner())
            .and_then(|p| replicas_of(&p.service))
            .unwrap_or(self.replicas)
    }

    /// Options that name one container (`container_name`, a fixed address) allow one
    /// replica: each problem with the replica count as (field under the service, reason).
    /// One rule for apply and scale.
    pub fn single_replica_problems(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        if self.replicas <= 1 {
            return out;
        }
        if self.options.container_name.is_some() {
            out.push((
                "container_name".to_string(),
                format!("a container name is unique, and the service has {} replicas; remove `container_name` to scale (as Compose)", self.replicas),
            ));
        }
        for (net, sn) in &self.networks {
            if sn.ipv4_address.is_some() || sn.ipv6_address.is_some() {
                out.push((
                    format!("networks.{net}"),
                    format!(
                        "a fixed address belongs to one container, and the service has {} replicas",
                        self.replicas
                    ),
                ));
            }
        }
        out
    }

    /// Each port's problem with this replica count, coming from `previous` replicas (None: a
    /// new service), as (field under the service, reason): [`PortSpec::replicas_problem`]
    /// for every port, the one rule apply and scale keep.
    pub fn port_problems(&self, service: &str, previous: Option<u32>) -> Vec<(String, String)> {
        (self.ports.iter().enumerate())
            .filter_map(|(i, p)| {
                let reason = p.replicas_problem(service, self.replicas, previous)?;
                Some((format!("ports[{i}]"), reason))
            })
            .collect()
    }

    /// The effective restart policy.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart.unwrap_or(RestartPolicy::Always)
    }

    /// Whether `other` is the same revision of the service: equal but for `replicas` and a
    /// rollout's pause, which never start a new revision (as a Deployment's scale and pause).
    pub fn same_revision(&self, other: &ServiceSpec) -> bool {
        let plain = |s: &ServiceSpec| ServiceSpec {
            replicas: 0,
            rollout: RolloutControl {
                paused: false,
                ..s.rollout.clone()
            },
            ..s.clone()
        };
        plain(self) == plain(other)
    }

    /// A short hash of everything that shapes a container: all but `replicas` and what capstan
    /// itself enforces (`restart`, `depends_on`, a rollout's pause; a restart request is in
    /// it). A replica whose label differs is outdated
    /// and gets recreated.
    pub fn container_hash(&self) -> String {
        let mut shape = self.clone();
        // Where the count decides who serves a port, the decision shapes the container (a
        // host binding or none), so it is part of the hash; marked only where the engine
        // publishes, so that proxied replicas made before the choice existed are kept.
        for p in shape.ports.iter_mut().filter(|p| p.proxy.is_none()) {
            if p.serving(self.replicas) == Serving::Engine && p.serving(2) != Serving::Engine {
                p.proxy = Some(false);
            }
        }
        shape.replicas = 0;
        shape.restart = None;
        shape.depends_on.clear();
        shape.deploy_labels.clear();
        shape.restart_timing = None;
        shape.update_config = None;
        shape.rollback_config = None;
        shape.rollout.paused = false;
        // A built image's tag already carries its content and options; where the context
        // lives or what else the image is called does not shape the container.
        shape.build = None;
        shape.pull_policy = None;
        let bytes = serde_json::to_vec(&shape).expect("a spec always serialises");
        let digest = Sha256::digest(&bytes);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_runs_a_successor_next_to_each_replica_unless_two_would_contend() {
        let volume = |source: &str, kind: MountKind, read_only: bool| {
            MountSpec::plain(kind, Some(source.into()), "/data", read_only)
        };
        let shared = VolumeSpec {
            labels: [("capstan.shared".to_string(), "true".to_string())].into(),
            ..Default::default()
        };
        let volumes: BTreeMap<String, VolumeSpec> = [("cache".to_string(), shared)].into();
        let with = |f: &dyn Fn(&mut ServiceSpec)| {
            let mut s = ServiceSpec {
                image: "web:1".into(),
                replicas: 1,
                ..Default::default()
            };
            f(&mut s);
            s.surge_blocker(&volumes)
        };
        assert_eq!(with(&|_| {}), None);
        assert_eq!(
            with(&|s| s.volumes = vec![volume("cache", MountKind::Volume, false)]),
            None,
            "a volume declared shared"
        );
        assert_eq!(
            with(&|s| s.volumes = vec![volume("db", MountKind::Volume, true)]),
            None,
            "read-only"
        );
        let blocked = [
            with(&|s| s.volumes = vec![volume("db", MountKind::Volume, false)]),
            with(&|s| s.volumes = vec![volume("/srv", MountKind::Bind, false)]),
            with(&|s| s.options.container_name = Some("front".into())),
            with(&|s| s.options.network_mode = Some(NetworkMode::Host)),
        ];
        assert!(blocked.iter().all(Option::is_some), "{blocked:?}");
        assert_eq!(
            with(&|s| s.volumes = vec![volume("data-{{replica}}", MountKind::Volume, false)]),
            Some("named volume \"data-{{replica}}\" is mounted read-write and is not declared shared".into())
        );
    }

    #[test]
    fn the_container_hash_ignores_replicas_but_not_the_image() {
        let a = ServiceSpec {
            image: "web:1".into(),
            replicas: 1,
            ..Default::default()
        };
        let b = ServiceSpec {
            replicas: 5,
            ..a.clone()
        };
        let c = ServiceSpec {
            image: "web:2".into(),
            ..a.clone()
        };
        assert_eq!(a.container_hash(), b.container_hash());
        assert_ne!(a.container_hash(), c.container_hash());
        assert_eq!(a.container_hash().len(), 12);
    }

    #[test]
    fn unset_options_leave_the_stored_bytes_and_the_hash_as_before() {
        let a = ServiceSpec {
            image: "web:1".into(),
            replicas: 1,
            ..Default::default()
        };
        // The hash of this spec before container options existed.
        assert_eq!(a.container_hash(), "4c150608f49a");
        let json = serde_json::to_string(&a).unwrap();
        assert!(
            !json.contains("options") && !json.contains("deployLabels"),
            "{json}"
        );
        let mut b = a.clone();
        b.options.cap_add = vec!["NET_ADMIN".into()];
        assert_ne!(a.container_hash(), b.container_hash());
        let mut c = a.clone();
        c.deploy_labels.insert("team".into(), "web".into());
        assert_eq!(a.container_hash(), c.container_hash());
        c.pull_policy = Some(crate::pull::PullPolicy::Always);
        assert_eq!(a.container_hash(), c.container_hash());
    }

    #[test]
    fn restart_policy_and_dependencies_do_not_outdate_containers() {
        let a = ServiceSpec {
            image: "web:1".into(),
            replicas: 1,
            ..Default::default()
        };
        let mut b = ServiceSpec {
            restart: Some(RestartPolicy::No),
            ..a.clone()
        };
        b.depends_on.insert(
            "db".into(),
            Dependency {
                condition: DependencyCondition::ServiceHealthy,
                required: true,
                restart: false,
            },
        );
        assert_eq!(a.container_hash(), b.container_hash());
    }

    #[test]
    fn a_port_range_gives_each_replica_its_own_port() {
        let p = PortSpec {
            host_ip: None,
            host_ports: Some((8080, 8082)),
            container_port: 80,
            protocol: "tcp".into(),
            mode: PortMode::Ingress,
            proxy: None,
            proxy_protocol: None,
        };
        assert_eq!(p.host_port_for(1), Some(8080));
        assert_eq!(p.host_port_for(3), Some(8082));
        assert_eq!(p.host_port_for(4), None);
        assert_eq!(p.host_port_count(), Some(3));
    }

    #[test]
    fn on_failure_restarts_only_failures_up_to_its_limit() {
        let p = RestartPolicy::OnFailure {
            max_retries: Some(2),
        };
        assert!(p.restarts(1, 1));
        assert!(!p.restarts(1, 2));
        assert!(!p.restarts(0, 0));
        assert!(!RestartPolicy::No.restarts(1, 0));
        assert!(RestartPolicy::Always.restarts(0, 100));
    }

    #[test]
    fn a_replica_is_current_only_within_one_to_the_replica_count() {
        let spec = ServiceSpec {
            replicas: 2,
            ..Default::default()
        };
        let current: Vec<bool> = [None, Some(0), Some(1), Some(2), Some(3)]
            .into_iter()
            .map(|n| spec.is_current(n))
            .collect();
        assert_eq!(current, [false, false, true, true, false]);
        let none = ServiceSpec::default();
        assert!(
            !none.is_current(Some(1)),
            "zero replicas: nothing is current"
        );
    }

    fn port(host_ports: Option<(u16, u16)>, mode: PortMode) -> PortSpec {
        PortSpec {
            host_ip: None,
            host_ports,
            container_port: 80,
            protocol: "tcp".into(),
            mode,
            proxy: None,
            proxy_protocol: None,
        }
    }

    #[test]
    fn one_port_rule_for_apply_and_scale() {
        let proxied = port(Some((8080, 8080)), PortMode::Ingress);
        let host = port(Some((8080, 8080)), PortMode::Host);
        let range = port(Some((8080, 8081)), PortMode::Ingress);
        let ephemeral = port(None, PortMode::Ingress);
        assert_eq!(
            proxied.replicas_problem("web", 5, None),
            None,
            "the proxy serves it"
        );
        assert_eq!(ephemeral.replicas_problem("web", 5, Some(1)), None);
        assert_eq!(host.replicas_problem("web", 1, None), None);
        assert!(host
            .replicas_problem("web", 2, None)
            .unwrap()
            .contains("8080-8081:80"));
        assert_eq!(range.replicas_problem("web", 2, Some(1)), None);
        assert!(range
            .replicas_problem("web", 3, None)
            .unwrap()
            .contains("2 host ports"));
    }

    #[test]
    fn one_replica_on_a_fixed_port_is_published_by_the_engine_and_several_by_the_proxy() {
        let p = port(Some((8080, 8080)), PortMode::Ingress);
        assert_eq!(p.serving(1), Serving::Engine, "as docker compose up");
        assert_eq!(p.serving(3), Serving::Proxy(None));
        let udp = PortSpec {
            protocol: "udp".into(),
            ..p.clone()
        };
        assert_eq!(udp.serving(3), Serving::Engine, "UDP is never proxied");
    }

    #[test]
    fn a_port_that_opts_into_the_proxy_is_proxied_at_any_count() {
        let opted = PortSpec {
            proxy: Some(true),
            ..port(Some((8080, 8080)), PortMode::Ingress)
        };
        assert_eq!(opted.serving(1), Serving::Proxy(None));
        let v2 = PortSpec {
            proxy_protocol: Some(ProxyProtocol::V2),
            ..port(Some((8080, 8080)), PortMode::Ingress)
        };
        assert_eq!(
            v2.serving(1),
            Serving::Proxy(Some(ProxyProtocol::V2)),
            "a PROXY header needs the proxy"
        );
        let never = PortSpec {
            proxy: Some(false),
            ..port(Some((8080, 8080)), PortMode::Ingress)
        };
        assert_eq!(never.serving(3), Serving::Engine);
        assert!(never.replicas_problem("web", 3, None).is_some());
    }

    #[test]
    fn scaling_between_one_replica_and_several_is_refused_unless_the_port_opts_into_the_proxy() {
        let p = port(Some((8080, 8080)), PortMode::Ingress);
        for (from, to) in [(1, 3), (3, 1)] {
            let reason = p.replicas_problem("s/web", to, Some(from)).unwrap();
            assert!(reason.contains("host port 8080"), "{reason}");
            assert!(reason.contains("x-capstan-proxy: true"), "{reason}");
        }
        assert_eq!(p.replicas_problem("s/web", 3, Some(2)), None);
        assert_eq!(p.replicas_problem("s/web", 3, None), None, "a new service");
        assert_eq!(p.replicas_problem("s/web", 0, Some(3)), None, "to nothing");
        assert_eq!(
            p.replicas_problem("s/web", 1, Some(0)),
            None,
            "from nothing"
        );
        let opted = PortSpec {
            proxy: Some(true),
            ..p
        };
        assert_eq!(opted.replicas_problem("s/web", 3, Some(1)), None);
        assert_eq!(opted.replicas_problem("s/web", 1, Some(3)), None);
    }

    #[test]
    fn an_engine_published_port_shapes_the_container_hash_and_a_proxied_one_does_not() {
        let svc = |replicas, proxy| ServiceSpec {
            image: "web:1".into(),
            replicas,
            ports: vec![PortSpec {
                proxy,
                ..port(Some((8080, 8080)), PortMode::Ingress)
            }],
            ..Default::default()
        };
        assert_ne!(svc(1, None).container_hash(), svc(3, None).container_hash());
        assert_eq!(svc(3, None).container_hash(), svc(2, None).container_hash());
        assert_eq!(
            svc(1, None).container_hash(),
            svc(1, Some(false)).container_hash(),
            "the same shape, declared or not"
        );
    }
}
