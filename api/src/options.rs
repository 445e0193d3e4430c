//! The container options of a Compose service that pass through to the engine's container
//! config (`cap_add`, `user`, `ulimits`, resources, ...), in the engine's own units.
//!
//! Every field is skipped when unset, so a spec that sets none of them serialises (and
//! hashes) exactly as before these options existed: existing stacks do not roll.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One service's container options. Sizes are bytes, CPUs are nano-CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerOptions {
    /// The container's name instead of `<stack>-<service>-1` (one replica only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `80`, `8000-8002/udp`: exposed, never published.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Path → mount options (`size=64m,mode=1777`, or empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// `host:ip` (the engine's form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill_disable: Option<bool>,
    /// `linux/amd64`: passed to create; an image of another platform is refused by the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Needs Docker API 1.43; refused at create by older engines, with the reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// `volumes_from`: every volume of a partner's replica, mounted here too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<VolumesFrom>,
    /// `ipc`: `host`, `private`, `shareable`, `none`, `container:NAME` or `service:NAME`
    /// (that service's first replica), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// `pid`: `host`, `container:NAME` or `service:NAME`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// `uts: host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    /// `userns_mode: host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    /// `cgroup`: `host` or `private` (the cgroup namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<i64>,
    /// Microseconds, as the engine takes them (Compose durations are converted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_rt_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_rt_runtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio: Option<Blkio>,
    /// `c 1:3 mr`, `a *:* rwm`: device cgroup rules, as the engine takes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_swappiness: Option<i64>,
    /// Storage driver options (`size: 1G`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_opt: BTreeMap<String, String>,
    /// `external_links`: `CONTAINER:ALIAS` (the alias defaults to the container's name), a
    /// container capstan does not make, reachable under the alias on each network joined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_links: Vec<String>,
}

/// `blkio_config`: block IO weights and limits, in the engine's units (bytes and operations
/// per second).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Blkio {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weight_device: Vec<DeviceRate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_read_bps: Vec<DeviceRate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_write_bps: Vec<DeviceRate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_read_iops: Vec<DeviceRate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_write_iops: Vec<DeviceRate>,
}

/// A host device and its weight or rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRate {
    pub path: String,
    pub rate: i64,
}

/// One `post_start` or `pre_stop` hook: a command capstan runs in the container through the
/// engine's exec API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Hook {
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Added to (or overriding) the service's environment for this command.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
}

impl ContainerOptions {
    pub fn is_empty(&self) -> bool {
        *self == ContainerOptions::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Logging {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// `HOST[:CONTAINER[:PERMISSIONS]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub host: String,
    pub container: String,
    pub permissions: String,
}

/// `network_mode`: the container shares the host's network stack, has none, or shares the
/// network namespace of a partner's replica (a sidecar: `service:NAME`, `container:NAME`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Host,
    None,
    /// `service:NAME`, or `container:NAME` naming a container capstan makes for the stack.
    Partner(Partner),
}

impl NetworkMode {
    /// As written in a Compose file.
    pub fn describe(&self) -> String {
        match self {
            NetworkMode::Host => "host".into(),
            NetworkMode::None => "none".into(),
            NetworkMode::Partner(p) => p.describe(),
        }
    }

    pub fn partner(&self) -> Option<&Partner> {
        match self {
            NetworkMode::Partner(p) => Some(p),
            _ => None,
        }
    }
}

/// The replica a sidecar's replica pairs with: it shares that replica's network namespace
/// (`network_mode`) or mounts its volumes (`volumes_from`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Partner {
    /// The partner service, of the same stack.
    pub service: String,
    /// `container:STACK-web-2`: every replica pairs with this one replica. Unset: replica n
    /// pairs with the partner's replica n, and the sidecar has as many replicas as it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    /// `container:NAME` as written, when the file named a container rather than a service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Partner {
    pub fn describe(&self) -> String {
        match &self.container {
            Some(name) => format!("container:{name}"),
            None => format!("service:{}", self.service),
        }
    }

    /// The partner's ordinal that replica `ordinal` of the sidecar pairs with.
    pub fn ordinal_for(&self, ordinal: u32) -> u32 {
        self.replica.unwrap_or(ordinal)
    }
}

/// One `volumes_from` entry: `SERVICE[:ro|:rw]` or `container:NAME[:ro|:rw]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumesFrom {
    pub partner: Partner,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}
