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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stack {
    pub name: String,
    /// Grows when the stack's own part (networks, volumes, the set of services) changes.
    pub generation: i64,
    /// etcd's `mod_revision` of this key; not stored, filled on read.
    #[serde(default, skip_serializing)]
    pub resource_version: i64,
    pub created_at: String,
    pub services: Vec<String>,
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Set by `delete`: the controller tears the stack down, then removes its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    pub requested_at: String,
    /// Remove the stack's named volumes too (`delete --volumes`).
    pub volumes: bool,
}

/// A service's desired state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub stack: String,
    pub name: String,
    /// Grows only when `spec` really changes.
    pub generation: i64,
    #[serde(default, skip_serializing)]
    pub resource_version: i64,
    pub created_at: String,
    pub spec: ServiceSpec,
}

/// What the controller last observed of a service. Written last in a reconcile, and only
/// when it changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealEvent {
    pub time: String,
    pub replica: String,
    /// `start`, `restart`, `replace`.
    pub action: String,
    /// `exited`, `unhealthy`, `oom`, `removed`, `dependency-restarted`.
    pub reason: String,
    pub message: String,
}

/// One condition, Kubernetes-style.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub restarts: u32,
}

impl ServiceStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }
}

/// One row of `capstan get services`: spec and status side by side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    pub observed_generation: i64,
    pub resource_version: i64,
    pub created_at: String,
    pub conditions: Vec<Condition>,
    pub replica_states: Vec<ReplicaState>,
    pub recent_events: Vec<HealEvent>,
    pub spec: ServiceSpec,
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
            observed_generation: st.observed_generation,
            resource_version: svc.resource_version,
            created_at: svc.created_at.clone(),
            conditions: st.conditions,
            replica_states: st.replica_states,
            recent_events: st.recent_events,
            spec: svc.spec.clone(),
        }
    }

    /// Converged: the current generation observed and `Ready` (every replica updated, and
    /// ready or, for a one-shot job, completed; no surplus left).
    pub fn converged(&self) -> bool {
        self.observed_generation == self.generation
            && self.updated == self.replicas
            && self
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    }
}

/// One row of `capstan get stacks`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
}

/// The answer to an apply: what changed, per service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    pub stack: String,
    /// Stack `resourceVersion` after the apply (unchanged when nothing changed).
    pub resource_version: i64,
    /// Service → `created`, `configured`, `unchanged` or `removed`.
    pub services: BTreeMap<String, String>,
}

/// The ready replicas of a service, as traffic should see them (like an EndpointSlice).
/// Stored at `<prefix>/v1/endpoints/<stack>/<service>`, written only when it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub stack: String,
    pub service: String,
    pub endpoints: Vec<Endpoint>,
}

/// One ready replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub replica: String,
    pub ordinal: u32,
    /// Engine network name → IPv4 address.
    pub addresses: BTreeMap<String, String>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub container_port: u16,
    pub protocol: String,
    /// The host port the engine publishes for this replica (ranges, host mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
}

/// The body of every error the API returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<crate::FieldError>,
}

/// The body of `PUT /v1/stacks/{stack}/services/{service}/scale`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u32,
}
