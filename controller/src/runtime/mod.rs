//! The container engine, as the reconciler sees it: a few verbs over labelled containers,
//! networks and volumes. [`docker::DockerRuntime`] is the real one; tests use fakes.

mod create;
pub mod docker;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod fence;
pub mod hooks;
pub mod reflector;
pub mod registry;

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::time::Duration;

/// A container capstan owns, as last listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub stack: String,
    pub service: String,
    /// From the `capstan.replica` label; `None` if missing or malformed.
    pub ordinal: Option<u32>,
    pub spec_hash: String,
    pub state: State,
    pub health: Health,
    /// Unix seconds.
    pub created: i64,
    /// Network name → IPv4 address.
    pub addresses: BTreeMap<String, String>,
    /// (container port, protocol) → the host port the engine publishes it on.
    pub published: BTreeMap<(u16, String), u16>,
    /// A sidecar's [`names::PARTNERS`] label: the partner containers it was made with.
    pub partners: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited { code: i64 },
    Dead,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Restarting => "restarting",
            State::Removing => "removing",
            State::Exited { .. } => "exited",
            State::Dead => "dead",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No healthcheck.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn name(&self) -> &'static str {
        match self {
            Health::None => "",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl Observed {
    /// Running and healthy, or running without a healthcheck.
    pub fn is_ready(&self) -> bool {
        self.state == State::Running && matches!(self.health, Health::None | Health::Healthy)
    }
}

/// Everything needed to create one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    pub name: String,
    pub hostname: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Engine network name → aliases. The first is joined at create, the rest before start.
    pub networks: Vec<(String, Vec<String>)>,
    pub ports: Vec<PortBinding>,
    pub mounts: Vec<Mount>,
    pub healthcheck: Option<capstan_api::spec::Healthcheck>,
    pub stop_grace: Duration,
    /// Fixed addresses and link-local IPs, by engine network name (most services have none).
    pub addresses: BTreeMap<String, Addresses>,
    /// Everything else of the container config (`user`, `cap_add`, resources, ...).
    pub options: capstan_api::spec::ContainerOptions,
    /// A sidecar's partner replicas as containers: the one whose network namespace it joins
    /// (`network_mode: service:`), and those whose volumes it mounts (`ID` or `ID:ro`).
    pub join: Option<String>,
    pub volumes_from: Vec<String>,
}

/// A one-off container of `capstan run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOff {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// When it was made (Unix seconds): a young one-off that is not running may be between
    /// its create and start, or draining its output, in another daemon's `capstan run`.
    pub created: i64,
}

/// A replica's fixed addresses on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub link_local: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortBinding {
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: Option<String>,
    /// `None`: an ephemeral port.
    pub host_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    Volume {
        name: String,
        target: String,
        read_only: bool,
        options: MountOptions,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
        options: MountOptions,
    },
    Anonymous {
        target: String,
    },
    Tmpfs {
        target: String,
        size: Option<i64>,
        mode: Option<u32>,
    },
}

/// Options of a volume or bind mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `rslave`, `rshared`, ... (binds).
    pub propagation: Option<String>,
    /// `z` or `Z`.
    pub selinux: Option<String>,
    pub nocopy: bool,
    /// Docker API 1.45.
    pub subpath: Option<String>,
    /// Binds: `false` refuses a missing host path (default: create it, as `-v` does).
    pub create_host_path: bool,
}

/// A network or volume capstan creates for a stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    /// The engine-side name.
    pub name: String,
    pub driver: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    /// Declared `external`: must exist, never created or removed.
    pub external: bool,
    /// `driver_opts`.
    pub options: BTreeMap<String, String>,
    /// Networks only.
    pub enable_ipv6: Option<bool>,
    /// Networks only.
    pub ipam: Option<capstan_api::spec::Ipam>,
}

impl ResourceConfig {
    /// Whether a network or volume found under this name may be used: one capstan made
    /// belongs to the stack its label names, and another stack's is refused; one made
    /// otherwise (by hand, by Compose) is used as Compose uses it, and a declared `external`
    /// one whoever made it. The ownership rule of networks and volumes, in one place.
    pub fn check_owner(
        &self,
        kind: &'static str,
        found: Option<&String>,
    ) -> Result<(), RuntimeError> {
        let ours = self.labels.get(capstan_api::names::STACK);
        match found {
            Some(owner) if !self.external && Some(owner) != ours => Err(RuntimeError::NotOwned {
                kind,
                name: self.name.clone(),
                owner: owner.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// What only an inspect tells: looked up for replicas about to be healed, never polled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    /// The kernel killed it for memory.
    pub oom_killed: bool,
    /// The last healthcheck's output, trimmed.
    pub health_output: Option<String>,
    /// When it last started, in Unix nanoseconds: a sidecar started before its partner
    /// joined a network namespace that is gone.
    pub started_at: Option<i64>,
}

/// What to read of a container's output ([`Runtime::logs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open for new output.
    pub follow: bool,
    /// Unix seconds: only output written since.
    pub since: Option<i64>,
    /// Only the last N lines (of what `since` leaves).
    pub tail: Option<u64>,
    /// The engine's RFC 3339 timestamp before each line.
    pub timestamps: bool,
}

/// A piece of a container's output, as the engine framed it (not always one line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub stderr: bool,
    pub bytes: Vec<u8>,
}

/// A container's output, piece by piece ([`Runtime::attach`]).
pub type LogStream = BoxStream<'static, Result<LogChunk, RuntimeError>>;

/// A container event that may mean drift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    pub stack: String,
    pub service: String,
    /// `die`, `destroy`, `health_status: unhealthy`, `oom`, `start`, ...
    pub action: String,
    /// Unix nanoseconds, to resume the stream after a reconnect.
    pub time_nano: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The name is held by a container capstan does not own.
    #[error("container name {name} is taken by a container capstan does not own ({id})")]
    NameConflict { name: String, id: String },
    #[error("image {0} is not present on this host")]
    ImageNotFound(String),
    #[error("external {kind} {name} does not exist; create it first")]
    ExternalMissing { kind: &'static str, name: String },
    /// A bind's host path now leads (through a symlink made after the apply) where the
    /// policy refuses: the container is not made.
    #[error("bind mount of {path}: {reason}")]
    BindRefused { path: String, reason: String },
    /// A network or volume of the name exists, made by capstan for another stack.
    #[error("{kind} {name} belongs to stack {owner}, not to this stack; remove it, or declare it `external: true` in the stack that means to share it")]
    NotOwned {
        kind: &'static str,
        name: String,
        owner: String,
    },
    /// The service asks for something this engine's API version does not have.
    #[error("{what} needs Docker API {needs} or newer; this engine speaks {has}")]
    TooOld {
        what: String,
        needs: &'static str,
        has: String,
    },
    /// This daemon may not make this call now (not the leader, or only healing while etcd
    /// is unreachable).
    #[error("docker {op} not made: this daemon does not hold the leader lease")]
    Fenced { op: &'static str },
    /// A pull of `image` failed; `message` is the registry's (or the engine's) words.
    /// Credentials never appear in it.
    #[error("pulling image {image}: {message}")]
    Pull { image: String, message: String },
    /// A `post_start` or `pre_stop` hook ran and failed: a non-zero exit, or no exit within
    /// [`HOOK_TIMEOUT`].
    #[error("{hook}[{index}] `{command}` {outcome}")]
    Hook {
        hook: HookKind,
        index: usize,
        command: String,
        outcome: HookOutcome,
    },
    /// Any other engine failure; retryable.
    #[error("docker {op} failed: {message}")]
    Engine { op: &'static str, message: String },
}

impl RuntimeError {
    /// The engine could not bind a published host port: another process (or container)
    /// holds it. The engine says so only in words.
    pub fn is_port_in_use(&self) -> bool {
        matches!(self, RuntimeError::Engine { message, .. }
            if message.contains("address already in use") || message.contains("port is already allocated"))
    }

    /// The engine could not attach the container to a network (gone, full, or refusing it).
    pub fn is_network_error(&self) -> bool {
        matches!(self, RuntimeError::Engine { message, .. }
            if (message.contains("network") && (message.contains("not found") || message.contains("could not attach") || message.contains("no available IPv4 addresses") || message.contains("Address already in use")))
                || message.contains("failed to create endpoint"))
    }
}

/// Which of a service's hooks ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    PostStart,
    PreStop,
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookKind::PostStart => "post_start",
            HookKind::PreStop => "pre_stop",
        })
    }
}

/// How a failed hook ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    Exited(i64),
    TimedOut(Duration),
}

impl std::fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookOutcome::Exited(code) => write!(f, "exited with code {code}"),
            HookOutcome::TimedOut(d) => write!(f, "did not finish within {}s", d.as_secs()),
        }
    }
}

/// How long one hook may run before it counts as failed: a hook that hangs must not hold a
/// replica's start, or its removal, forever.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Containers carrying capstan's labels, filtered by stack and service when given.
    async fn list(
        &self,
        stack: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError>;
    /// Creates (does not start) a container; returns its ID.
    async fn create(&self, plan: &ContainerConfig) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    async fn restart(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    async fn inspect(&self, id: &str) -> Result<Detail, RuntimeError>;
    /// Stops gracefully within `grace`, then removes (with anonymous volumes). Gone is fine.
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Gives a container another name (a start-first successor takes its replica's name);
    /// a name held by another container is a [`RuntimeError::NameConflict`].
    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError>;
    /// Waits until container `id` is not running; its exit code.
    async fn wait(&self, id: &str) -> Result<i64, RuntimeError>;
    /// Runs `hook` in running container `id` through the engine's exec API (the container's
    /// environment plus the hook's), waits for it, and returns its exit code.
    async fn exec(&self, id: &str, hook: &capstan_api::spec::Hook) -> Result<i64, RuntimeError>;
    /// The one-off containers of `capstan run` ([`capstan_api::names::ONEOFF_STACK`]).
    async fn oneoffs(&self) -> Result<Vec<OneOff>, RuntimeError>;
    async fn ensure_network(&self, plan: &ResourceConfig) -> Result<(), RuntimeError>;
    async fn ensure_volume(&self, plan: &ResourceConfig) -> Result<(), RuntimeError>;
    /// Engine names of the networks labelled with `stack`.
    async fn stack_networks(&self, stack: &str) -> Result<Vec<String>, RuntimeError>;
    async fn stack_volumes(&self, stack: &str) -> Result<Vec<String>, RuntimeError>;
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError>;
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
    /// Whether the engine has `image` (`GET /images/{name}/json`).
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError>;
    /// Pulls `image` from its registry, with the daemon's credentials for that registry if
    /// it has some; returns when the pull is complete.
    async fn pull(&self, image: &str) -> Result<(), RuntimeError>;
    /// Whether the engine answers now (`GET /_ping`).
    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// The output (stdout and stderr) of container `id`, ending with it unless `follow`.
    fn logs(
        &self,
        id: &str,
        opts: &LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, RuntimeError>>;
    /// Attaches to container `id`'s stdout and stderr: everything it writes from now on, as
    /// the engine frames it, ending once its output is closed (it exited). Attached before
    /// the start, the stream misses nothing, whichever logging driver the container has.
    async fn attach(&self, id: &str) -> Result<LogStream, RuntimeError>;
    /// Container events of capstan-owned containers from `since_nano` (or now).
    fn events(
        &self,
        since_nano: Option<i64>,
    ) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>>;
}

#[cfg(test)]
mod tests {
    use super::RuntimeError;

    fn engine(message: &str) -> RuntimeError {
        RuntimeError::Engine {
            op: "start",
            message: message.into(),
        }
    }

    #[test]
    fn the_engines_words_for_a_taken_port_and_a_network_failure_are_recognised() {
        let taken = engine("driver failed programming external connectivity on endpoint x: Error starting userland proxy: listen tcp4 0.0.0.0:8080: bind: address already in use");
        assert!(taken.is_port_in_use() && !taken.is_network_error());
        assert!(engine("Bind for 0.0.0.0:80 failed: port is already allocated").is_port_in_use());
        let gone = engine("network 3f2a not found");
        assert!(gone.is_network_error() && !gone.is_port_in_use());
        assert!(engine(
            "failed to create endpoint web on network s_default: Address already in use"
        )
        .is_network_error());
        assert!(!engine("OCI runtime create failed").is_network_error());
    }
}
