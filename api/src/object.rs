//! What is stored in etcd, and what the HTTP API returns.
//!
//! Spec and status are separate keys, so a status write never races an apply:
//! - `<prefix>/v1/stacks/<stack>`            → [`Stack`]
//! - `<prefix>/v1/services/<stack>/<service>` → [`Service`]
//! - `<prefix>/v1/status/<stack>/<service>`   → [`ServiceStatus`]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::spec::{NetworkSpec, ServiceSpec, VolumeSpec};

/// A stack: its shared resources and the names of its services. The service list is what
/// lets the controller tell "removed from the stack" (remove its containers) from "unknown
/// to this etcd" (never touch).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stack {
    pub name: String,
    /// Grows when the stack's own part (networks, volumes, the set of services) changes.
    pub generation: i64,
    /// etcd's `mod_revision` of this record; not stored, filled on read. Every change to the
    /// stack or to one of its services commits through the record, so this changes with each.
    #[serde(default, skip_serializing)]
    pub resource_version: i64,
    pub created_at: String,
    pub services: Vec<String>,
    /// The committed version of each service: the token its spec key ends with
    /// (`services/<stack>/<service>/<token>`). A service's keys are invisible until the stack
    /// record names them here, so a stack of any size changes in one small commit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// The policy profile that admitted the last apply (`privileged`, `baseline`, ...):
    /// the controller checks host paths again under it as it makes containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Set by `delete`: the controller tears the stack down, then removes its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    pub requested_at: String,
    /// Remove the stack's named volumes too (`delete --volumes`).
    pub volumes: bool,
}

/// A service's desired state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub stack: String,
    pub name: String,
    /// Grows only when `spec` really changes.
    pub generation: i64,
    /// etcd's `mod_revision` of this version's key (each change writes a new key); filled on read.
    #[serde(default, skip_serializing)]
    pub resource_version: i64,
    /// The token of this version's key, which the stack record names once it is committed;
    /// filled on read from the key.
    #[serde(skip)]
    pub version: String,
    pub created_at: String,
    pub spec: ServiceSpec,
    /// Which revision `spec` is. A new one starts when anything but `replicas` or a
    /// rollout's pause changes (as a Deployment's revisions); a scale keeps it.
    #[serde(default)]
    pub revision: RevisionMeta,
    /// The revisions before this one, oldest first, at most the store's history limit
    /// (`serve --revision-history-limit`): what `rollout undo` and an automatic rollback
    /// return to, and what `rollout history` lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Revision>,
    /// Set when the controller rolled this service back; the next apply clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
}

impl Service {
    /// The revision before this one: what `rollout undo` and a rollback return to.
    pub fn previous(&self) -> Option<&Revision> {
        self.history.last()
    }
}

/// A revision's number, when it became the desired spec, and what it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionMeta {
    /// 1 for a service's first spec, one more for each new revision.
    pub number: i64,
    #[serde(default)]
    pub at: String,
    /// What changed from the revision before ([`crate::diff::summary`]), or how it came to
    /// be (`rollout undo`, `rollout restart`, a rollback).
    #[serde(default)]
    pub change: String,
}

/// One earlier spec of a service, with the generation it had when it was replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    #[serde(flatten)]
    pub meta: RevisionMeta,
    pub generation: i64,
    pub spec: Box<ServiceSpec>,
}

/// A line of `capstan rollout history` (`GET .../history`), oldest first; the last is the
/// current revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub revision: i64,
    pub generation: i64,
    pub at: String,
    pub image: String,
    pub change: String,
    pub current: bool,
}

impl RevisionView {
    /// Every revision of `svc`, the current one last.
    pub fn list(svc: &Service) -> Vec<RevisionView> {
        let line =
            |meta: &RevisionMeta, generation: i64, spec: &ServiceSpec, current| RevisionView {
                revision: meta.number,
                generation,
                at: meta.at.clone(),
                image: spec.image.clone(),
                change: meta.change.clone(),
                current,
            };
        svc.history
            .iter()
            .map(|r| line(&r.meta, r.generation, &r.spec, false))
            .chain([line(&svc.revision, svc.generation, &svc.spec, true)])
            .collect()
    }
}

/// An automatic rollback: the stored spec is the one of `toGeneration` again (under a new
/// generation), because the update of `fromGeneration` failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    pub from_generation: i64,
    pub to_generation: i64,
    pub at: String,
    /// Which replicas failed, and how.
    pub message: String,
}

/// What the controller last observed of a service. Written last in a reconcile, and only
/// when it changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The generation this status was computed for.
    pub observed_generation: i64,
    /// Replicas that exist (any state).
    pub replicas: u32,
    pub running: u32,
    /// Running and healthy (or running, without a healthcheck).
    pub ready: u32,
    /// Replicas with the current spec hash.
    pub updated: u32,
    /// Restarts capstan made, summed over the current replicas.
    pub restarts: u32,
    /// One-shot replicas that exited 0 under the current spec (`restart: "no"` jobs).
    #[serde(default)]
    pub completed: u32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub replica_states: Vec<ReplicaState>,
    /// The latest heal actions, newest last (at most [`RECENT_EVENTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_events: Vec<HealEvent>,
}

/// How many heal actions a status remembers.
pub const RECENT_EVENTS: usize = 10;

/// One thing capstan did to heal a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealEvent {
    pub time: String,
    pub replica: String,
    pub action: HealAction,
    pub reason: HealCause,
    pub message: String,
}

/// How capstan healed a replica; the wire form is the lowercase word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HealAction {
    /// `docker start` of an exited container.
    Start,
    /// `docker restart` of a running, unhealthy one.
    Restart,
    /// A fresh container under the same name.
    Replace,
}

/// Why capstan healed a replica; also the `reason` label of `capstan_heal_actions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HealCause {
    Exited,
    Unhealthy,
    /// Exited because the kernel killed it for memory.
    Oom,
    /// Removed behind capstan's back.
    Removed,
    /// A `depends_on` dependency declared with `restart: true` was restarted.
    DependencyRestarted,
    /// A sidecar's partner replica started again: the sidecar joins its new network
    /// namespace.
    PartnerRestarted,
    /// A sidecar's partner replica was replaced: the sidecar is made anew beside it.
    PartnerReplaced,
}

impl HealAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealAction::Start => "start",
            HealAction::Restart => "restart",
            HealAction::Replace => "replace",
        }
    }
}

impl HealCause {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealCause::Exited => "exited",
            HealCause::Unhealthy => "unhealthy",
            HealCause::Oom => "oom",
            HealCause::Removed => "removed",
            HealCause::DependencyRestarted => "dependency-restarted",
            HealCause::PartnerRestarted => "partner-restarted",
            HealCause::PartnerReplaced => "partner-replaced",
        }
    }
}

/// The condition types a service status carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    Ready,
    Progressing,
    Degraded,
}

impl ConditionType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
        }
    }
}

/// Every reason a condition can carry. Inside capstan reasons are this enum; on the wire
/// (status in etcd, the API, the CLI) they are the CamelCase word of [`Reason::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // Ready
    AllReplicasReady,
    Completed,
    ReplicasNotReady,
    // Progressing
    Converged,
    ScalingUp,
    ScalingDown,
    RollingUpdate,
    /// A rolling update stopped by `update_config.failure_action: pause`.
    Paused,
    /// An automatic rollback replaces the replicas of a failed update.
    RollbackInProgress,
    WaitingForReady,
    WaitingForDependencies,
    /// A sidecar's replica waits for its partner's replica to run.
    WaitingForPartner,
    /// The service's image is being pulled before its replicas are created.
    PullingImage,
    // Degraded
    AsExpected,
    DependencyFailed,
    CrashLoopBackOff,
    ReplicaExited,
    Unhealthy,
    NameConflict,
    ImageNotFound,
    ExternalMissing,
    /// A network or volume of the name exists, made by capstan for another stack.
    NotOwned,
    /// A bind's host path now leads where the policy refuses (a symlink made after apply).
    BindRefused,
    EngineError,
    PortInUse,
    /// The engine could not attach a replica to its network.
    NetworkError,
    /// The Docker engine does not answer: the replicas cannot be observed or healed.
    EngineUnreachable,
    /// An update failed and was rolled back automatically.
    RolledBack,
    /// The image could not be pulled; retried with back-off.
    ImagePullBackOff,
    /// The image is missing and `pull_policy` (`never`, `build`) forbids pulling it.
    ErrImageNeverPull,
    /// The secrets or configs a replica mounts cannot be read (a value sealed with a key
    /// this daemon lacks) or written on the host.
    FilesUnavailable,
    /// The engine refused to create a network or volume the service needs (a driver that
    /// fails, a name it rejects); the message names the resource and gives the engine's words.
    ResourceRefused,
    /// A `post_start` hook failed in a new replica, which was removed again; retried with
    /// back-off.
    HookFailed,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::AllReplicasReady => "AllReplicasReady",
            Reason::Completed => "Completed",
            Reason::ReplicasNotReady => "ReplicasNotReady",
            Reason::Converged => "Converged",
            Reason::ScalingUp => "ScalingUp",
            Reason::ScalingDown => "ScalingDown",
            Reason::RollingUpdate => "RollingUpdate",
            Reason::Paused => "Paused",
            Reason::RollbackInProgress => "RollbackInProgress",
            Reason::WaitingForReady => "WaitingForReady",
            Reason::WaitingForDependencies => "WaitingForDependencies",
            Reason::WaitingForPartner => "WaitingForPartner",
            Reason::AsExpected => "AsExpected",
            Reason::DependencyFailed => "DependencyFailed",
            Reason::CrashLoopBackOff => "CrashLoopBackOff",
            Reason::ReplicaExited => "ReplicaExited",
            Reason::Unhealthy => "Unhealthy",
            Reason::NameConflict => "NameConflict",
            Reason::ImageNotFound => "ImageNotFound",
            Reason::ExternalMissing => "ExternalMissing",
            Reason::NotOwned => "NotOwned",
            Reason::BindRefused => "BindRefused",
            Reason::EngineError => "EngineError",
            Reason::PortInUse => "PortInUse",
            Reason::NetworkError => "NetworkError",
            Reason::EngineUnreachable => "EngineUnreachable",
            Reason::RolledBack => "RolledBack",
            Reason::PullingImage => "PullingImage",
            Reason::ImagePullBackOff => "ImagePullBackOff",
            Reason::ErrImageNeverPull => "ErrImageNeverPull",
            Reason::FilesUnavailable => "FilesUnavailable",
            Reason::ResourceRefused => "ResourceRefused",
            Reason::HookFailed => "HookFailed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One condition, Kubernetes-style.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// CamelCase, machine-readable.
    pub reason: String,
    /// For a person: what is wrong and what to do.
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaState {
    pub ordinal: u32,
    pub name: String,
    /// Short container ID.
    pub id: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty without a healthcheck.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
    pub updated: bool,
    /// Restarts capstan made of this replica (kept across daemon restarts).
    #[serde(default)]
    pub restarts: u32,
    /// While the replica is in a crash loop: where its back-off stands, so a restarted or
    /// newly elected daemon goes on from there instead of restarting it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoop>,
}

/// The back-off position of a replica in a crash loop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrashLoop {
    /// Restarts in the current window (the next wait doubles with each).
    pub restarts: u32,
    /// When the last of them was made (RFC 3339, milliseconds).
    pub last_restart_at: String,
}

impl Condition {
    pub fn new(type_: ConditionType, status: bool, reason: Reason, message: String) -> Self {
        Condition {
            type_: type_.as_str().into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.as_str().into(),
            message,
            last_transition_time: String::new(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The conditions of a status, as the API serves them.
fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Converged, the one rule for it (the CLI's `--wait`, `capstan_service_converged`, the
/// STACKS table): the status describes the current generation, every desired replica runs
/// the current spec, and the service is `Ready`.
fn converged(
    observed_generation: i64,
    generation: i64,
    updated: u32,
    desired: u32,
    conditions: &[Condition],
) -> bool {
    observed_generation == generation
        && updated == desired
        && find(conditions, ConditionType::Ready).is_some_and(Condition::is_true)
}

/// The condition that sums a service up (the STATUS column, `apply --wait`): what is wrong,
/// if anything is (`Degraded`), else how far it is from ready (`Ready`).
fn summary(conditions: &[Condition]) -> Option<&Condition> {
    find(conditions, ConditionType::Degraded)
        .filter(|c| c.is_true())
        .or_else(|| find(conditions, ConditionType::Ready))
}

impl ServiceStatus {
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        find(&self.conditions, type_)
    }

    pub fn is_ready(&self) -> bool {
        self.condition(ConditionType::Ready)
            .is_some_and(Condition::is_true)
    }

    /// See [`converged`].
    pub fn is_converged(&self, generation: i64, desired: u32) -> bool {
        converged(
            self.observed_generation,
            generation,
            self.updated,
            desired,
            &self.conditions,
        )
    }
}

/// One row of `capstan get services`: spec and status side by side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub stack: String,
    pub name: String,
    pub image: String,
    /// Desired replicas.
    pub replicas: u32,
    pub running: u32,
    pub ready: u32,
    pub updated: u32,
    pub restarts: u32,
    pub completed: u32,
    pub generation: i64,
    /// The revision of the desired spec (`rollout history` lists them).
    #[serde(default)]
    pub revision: i64,
    pub observed_generation: i64,
    pub resource_version: i64,
    pub created_at: String,
    pub conditions: Vec<Condition>,
    pub replica_states: Vec<ReplicaState>,
    pub recent_events: Vec<HealEvent>,
    pub spec: ServiceSpec,
    /// The stored spec is an automatic rollback's (see [`Service::rolled_back`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// Served from the answering daemon's copy while etcd does not answer: a reader sees
    /// that it may be behind, and by how much ([`Stale`]).
    #[serde(default, flatten)]
    pub stale: Stale,
}

/// The marker of an answer served from the daemon's copy of desired state (or its last known
/// leader) because etcd did not answer: absent from the JSON on a fresh answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stale {
    /// True on an answer from the copy: a change made since etcd last answered is not in it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// With `stale`: seconds since etcd last answered this daemon, which is about how old
    /// the copy is; absent when etcd has not answered it since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_age_seconds: Option<u64>,
}

impl Stale {
    /// The marker of an answer from a copy whose source last answered `age_seconds` ago.
    pub fn by(age_seconds: Option<u64>) -> Stale {
        Stale {
            stale: true,
            cache_age_seconds: age_seconds,
        }
    }
}

impl ServiceView {
    pub fn new(svc: &Service, status: Option<&ServiceStatus>) -> Self {
        let st = status.cloned().unwrap_or_default();
        ServiceView {
            stack: svc.stack.clone(),
            name: svc.name.clone(),
            image: svc.spec.image.clone(),
            replicas: svc.spec.replicas,
            running: st.running,
            ready: st.ready,
            updated: st.updated,
            restarts: st.restarts,
            completed: st.completed,
            generation: svc.generation,
            revision: svc.revision.number,
            observed_generation: st.observed_generation,
            resource_version: svc.resource_version,
            created_at: svc.created_at.clone(),
            conditions: st.conditions,
            replica_states: st.replica_states,
            recent_events: st.recent_events,
            spec: svc.spec.clone(),
            rolled_back: svc.rolled_back.clone(),
            stale: Stale::default(),
        }
    }

    /// Converged: the current generation observed and `Ready` (every replica updated, and
    /// ready or, for a one-shot job, completed; no surplus left).
    pub fn converged(&self) -> bool {
        converged(
            self.observed_generation,
            self.generation,
            self.updated,
            self.replicas,
            &self.conditions,
        )
    }

    /// The condition that sums the service up: `Degraded` while degraded, else `Ready`.
    pub fn summary_condition(&self) -> Option<&Condition> {
        summary(&self.conditions)
    }

    /// The STATUS column: the reason of [`Self::summary_condition`], `Pending` before the
    /// controller first observed the service.
    pub fn summary(&self) -> String {
        self.summary_condition()
            .map_or_else(|| "Pending".into(), |c| c.reason.clone())
    }
}

/// One row of `capstan get stacks`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackView {
    pub name: String,
    pub generation: i64,
    pub resource_version: i64,
    pub created_at: String,
    /// `Active` or `Deleting`.
    pub phase: String,
    /// While `Deleting`: why the teardown cannot finish yet (the controller's last error, such
    /// as a network another container is still attached to). Not stored: the daemon that
    /// serves the API fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_blocked_by: Option<String>,
    pub services: Vec<ServiceView>,
    pub networks: BTreeMap<String, NetworkSpec>,
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Served from the answering daemon's copy while etcd does not answer ([`Stale`]).
    #[serde(default, flatten)]
    pub stale: Stale,
}

impl StackView {
    /// Marks the stack and each of its services as served from a copy.
    pub fn mark_stale(&mut self, stale: Stale) {
        self.stale = stale;
        for s in &mut self.services {
            s.stale = stale;
        }
    }
}

/// The answer to an apply: what changed, per service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    pub stack: String,
    /// Stack `resourceVersion` after the apply (unchanged when nothing changed).
    pub resource_version: i64,
    pub services: BTreeMap<String, ApplyOutcome>,
    /// A dry run: validated and compared with the store, nothing written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// What an apply did to one service; the wire form is the lowercase word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
    Removed,
}

impl ApplyOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
            ApplyOutcome::Removed => "removed",
        }
    }
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ready replicas of a service, as traffic should see them (like an EndpointSlice).
/// Stored at `<prefix>/v1/endpoints/<stack>/<service>`, written only when it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub stack: String,
    pub service: String,
    pub endpoints: Vec<Endpoint>,
}

/// One ready replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub replica: String,
    pub ordinal: u32,
    /// Engine network name → IPv4 address.
    pub addresses: BTreeMap<String, String>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub container_port: u16,
    pub protocol: String,
    /// The host port the engine publishes for this replica (ranges, host mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
}

/// The body of every error the API returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<crate::FieldError>,
}

/// The answer to `DELETE /v1/stacks/{stack}` (202): the teardown is requested; the
/// controller removes the stack's containers, then its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteAccepted {
    pub stack: String,
    /// Always `Deleting`.
    pub phase: String,
    /// The stack's named volumes are removed too (`?volumes=true`).
    pub volumes: bool,
    /// The stack record's `resourceVersion` after the request.
    pub resource_version: i64,
}

/// The body of `PUT /v1/stacks/{stack}/services/{service}/scale`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScaleRequest {
    pub replicas: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(conditions: Vec<Condition>) -> ServiceView {
        ServiceView {
            replicas: 2,
            updated: 2,
            generation: 3,
            observed_generation: 3,
            conditions,
            ..Default::default()
        }
    }

    fn ready() -> Condition {
        Condition::new(
            ConditionType::Ready,
            true,
            Reason::AllReplicasReady,
            "2/2".into(),
        )
    }

    #[test]
    fn the_status_column_names_a_degradation_even_when_every_replica_is_ready() {
        let port = Condition::new(
            ConditionType::Degraded,
            true,
            Reason::PortInUse,
            "cannot listen on 0.0.0.0:80".into(),
        );
        assert_eq!(view(vec![ready(), port]).summary(), "PortInUse");
        let fine = Condition::new(
            ConditionType::Degraded,
            false,
            Reason::AsExpected,
            String::new(),
        );
        assert_eq!(view(vec![ready(), fine]).summary(), "AllReplicasReady");
        assert_eq!(view(vec![]).summary(), "Pending");
    }

    #[test]
    fn converged_means_ready_at_the_current_generation_with_every_replica_updated() {
        assert!(view(vec![ready()]).converged());
        let old = ServiceView {
            observed_generation: 2,
            ..view(vec![ready()])
        };
        assert!(!old.converged(), "an older generation was observed");
        let rolling = ServiceView {
            updated: 1,
            ..view(vec![ready()])
        };
        assert!(!rolling.converged());
        let status = ServiceStatus {
            observed_generation: 3,
            updated: 2,
            conditions: vec![ready()],
            ..Default::default()
        };
        assert!(status.is_converged(3, 2) && !status.is_converged(4, 2));
    }

    #[test]
    fn heal_actions_and_apply_outcomes_keep_their_wire_words() {
        let e = HealEvent {
            time: "t".into(),
            replica: "s-web-1".into(),
            action: HealAction::Restart,
            reason: HealCause::DependencyRestarted,
            message: String::new(),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["action"], "restart");
        assert_eq!(json["reason"], "dependency-restarted");
        let outcome = serde_json::to_value(ApplyOutcome::Configured).unwrap();
        assert_eq!(outcome, "configured");
    }
}

/// Who holds the leader lease: the value of the leader key in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// The holder's `serve --id` (by default `<hostname>:<listen address>`).
    pub holder: String,
    /// When it took the lease (RFC 3339).
    pub since: String,
    pub lease_ttl_seconds: u64,
}

/// `GET /v1/leader`: the lease holder, and what the daemon that answered is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    /// None while nobody holds the lease (between a leader's end and the next election).
    pub leader: Option<LeaderRecord>,
    /// The identity of the daemon that answered.
    pub this: String,
    /// Its role: `leader`, `follower`, `unsure` (its lease may have lapsed; it acts on
    /// nothing until etcd answers) or `isolated` (it led when etcd became unreachable and
    /// only restarts existing replicas until etcd is back). Never `leader` while `leader`
    /// does not name this daemon: when etcd does not answer and this daemon does not know
    /// itself to be the holder, a leader says `unsure`.
    pub role: String,
    /// While etcd does not answer: `leader` is the last record this daemon read, marked.
    #[serde(default, flatten)]
    pub stale: Stale,
}
