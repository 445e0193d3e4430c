//! What a stack may do to the host: the rules one policy profile enforces at apply (and
//! dry-run), before anything is written, and the profiles each caller gets ([`profiles`]).
//!
//! Pure: [`Policy::check`] takes a parsed [`StackSpec`] and returns one [`FieldError`] per
//! violation, each naming the field and, in its reason, the policy rule that refused it
//! (`policy rule privileged: ...`); [`profiles::InForce::attribute`] adds the profile in
//! force, the caller and how an operator changes it.
//!
//! # The three profiles
//! Named after Kubernetes' Pod Security levels:
//! - `privileged` ([`Policy::privileged`]): Docker's own semantics, whatever
//!   `docker compose up` may do. Its caller can already do anything through the engine.
//! - `baseline` ([`Policy::baseline`], also [`Policy::default`]): no privileged, no host
//!   namespaces, no Docker socket and no `/`, binds under allowed prefixes, added
//!   capabilities from a short list, any host port. As a file:
//!
//! ```yaml
//! privileged: false          # privileged: true
//! host_network: false        # network_mode: host, or an external network named `host`
//! host_namespaces: false     # pid, ipc, uts, userns_mode, cgroup: host; pid/ipc joining another container
//! cap_add: [NET_ADMIN, SYS_PTRACE]  # capabilities beyond Docker's default set
//! devices: [/dev/null, /dev/zero, /dev/random, /dev/urandom, /dev/fuse]  # and device cgroup rules
//! unconfined: false          # security_opt seccomp=unconfined, apparmor=unconfined, label=disable
//! sysctls: [net.]            # allowed sysctl prefixes (net.* is per container)
//! bind_mounts: [/home, /srv, /opt, /mnt, /media, /tmp, /var/tmp, /work, /data]
//! volume_drivers: [local]    # drivers of the stack's named volumes
//! volume_types: [tmpfs, nfs, nfs4, cifs, smb3]  # what the local driver may mount, besides binds
//! network_drivers: [bridge, overlay]  # drivers of the stack's networks
//! ports: {min: 1, max: 65535}  # published host ports
//! run_as_non_root: false     # every service sets `user:` to a uid other than 0
//! max_replicas: 100          # per service
//! max_services: 2000         # per stack (the store is tested with 2,000)
//! ```
//! - `restricted` ([`Policy::restricted`]): baseline, plus no binds at all
//!   (`bind_mounts: []`) and a non-root user (`run_as_non_root: true`).
//!
//! `max_replicas` and `max_services` are capacity, not privilege: every profile keeps them.
//! In lists, `*` allows any entry (`cap_add` also takes Docker's `ALL`). Whatever
//! `bind_mounts` says, `/` and the Docker socket (`/var/run/docker.sock`,
//! `/run/docker.sock`) are refused unless listed themselves, and so is any bind that
//! contains them (mounting `/run` exposes the socket).
//!
//! A new rule that gives the host away (as `host_network` does) is `false` in
//! [`Policy::baseline`] and `true` in [`Policy::privileged`]; `restricted` inherits
//! baseline's.
//!
//! # Every way to a host path
//! [`host_paths`] lists, in one place, each host path a stack would have the engine mount:
//! a service's bind mounts (short and long syntax), and a named volume of the `local` driver
//! whose `driver_opts` bind a folder (`o: bind`, `device:`) or mount a device by its path
//! (`type: ext4`, `device: /dev/sdb1`). Each goes through `bind_mounts`; a local volume that
//! would mount any other kind of file system (`proc`, `overlay`, `devtmpfs`, ...) must be of
//! a type `volume_types` lists, and a volume of another driver needs `volume_drivers`.
//! [`Policy::check_on_host`] also checks each path as the host resolves it (symlinks).
//!
//! Host namespaces: `network_mode: host`, an external network named `host` and
//! `build.network: host` fall under `host_network`. `host_namespaces` covers the others:
//! `pid: host` sees and signals every process of the host, `ipc: host` reaches its shared
//! memory, `uts: host` may rename it, `userns_mode: host` undoes a remapped root and
//! `cgroup: host` shows the host's cgroup tree; `pid` or `ipc` joining another container
//! (`container:NAME`, `service:NAME`) reaches into that one, which may itself be privileged.
//! A `device_cgroup_rules` entry lets the container use any device node of that number
//! (`a *:* rwm`: every disk), so it falls under `devices`: allowed only when `devices`
//! lists the rule itself (`"c 10:229 rwm"`). A `post_start` or `pre_stop` hook with
//! `privileged: true` runs a privileged process in the container: the `privileged` rule.
//! Secrets' and configs'
//! `file:` is read by the client, never by the daemon (the API takes only `content:`), and a
//! `build:` context is uploaded by the client, never read from the daemon's disk.

use serde::{Deserialize, Serialize};

pub mod profiles;
mod volumes;

use crate::compose::FieldError;
use crate::spec::{NetworkMode, StackSpec};
pub use profiles::{InForce, Profile, ProfileError, Profiles, Who};
pub use volumes::{host_paths, volume_host_path, HostPath};

/// Capabilities the engine grants every container (Docker's default set): adding them is a
/// no-op, so the policy never refuses them.
pub const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Host paths no bind may reach unless the policy lists them themselves.
pub const SENSITIVE_PATHS: &[&str] = &["/", "/var/run/docker.sock", "/run/docker.sock"];

/// `security_opt` entries that turn confinement off.
/// (`systempaths=unconfined` unmasks `/proc/kcore`, `/proc/sysrq-trigger` and the like.)
const UNCONFINED: &[&str] = &[
    "seccomp=unconfined",
    "apparmor=unconfined",
    "label=disable",
    "systempaths=unconfined",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// `privileged: true`.
    pub privileged: bool,
    /// `network_mode: host`, or an external network whose engine name is `host`.
    pub host_network: bool,
    /// `pid`, `ipc`, `uts`, `userns_mode` or `cgroup` set to `host`, and `pid` or `ipc`
    /// joining another container's namespace.
    pub host_namespaces: bool,
    /// Capabilities beyond Docker's default set that `cap_add` may name (`ALL` for any).
    pub cap_add: Vec<String>,
    /// Host device paths `devices` may map, and the `device_cgroup_rules` allowed as written.
    pub devices: Vec<String>,
    /// `security_opt` that disables seccomp, AppArmor or SELinux labelling.
    pub unconfined: bool,
    /// Sysctl name prefixes (`net.`) a service may set.
    pub sysctls: Vec<String>,
    /// Host path prefixes a bind mount may come from: a service's binds, and the folder or
    /// device a `local` volume's `driver_opts` mount.
    pub bind_mounts: Vec<String>,
    /// Volume drivers a stack's named volumes may use: another driver (a plugin) takes
    /// options only it understands, some of which name host paths.
    pub volume_drivers: Vec<String>,
    /// File system types the `local` driver may mount from `driver_opts` besides host paths
    /// (`proc`, `sysfs` or `overlay` there would hand the container the host's).
    pub volume_types: Vec<String>,
    /// Drivers of the stack's own networks (`macvlan` and `ipvlan` put replicas on the
    /// host's physical network, past its firewall).
    pub network_drivers: Vec<String>,
    /// Published host ports.
    pub ports: PortRange,
    /// Every service runs as a user other than root: `user:` names a numeric uid that is
    /// not 0 (a name is resolved inside the image, so it proves nothing, as Kubernetes'
    /// `runAsNonRoot` says of a non-numeric user).
    pub run_as_non_root: bool,
    /// The most replicas one service may have.
    pub max_replicas: u32,
    /// The most services one stack may have.
    pub max_services: usize,
}

/// An inclusive range of host ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

/// The baseline profile: what a caller who cannot reach the engine itself may do.
impl Default for Policy {
    fn default() -> Self {
        Policy::baseline()
    }
}

/// `names` as owned strings.
fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Whether `list` allows `name`: it names it, or holds `*`.
fn listed(list: &[String], name: &str) -> bool {
    list.iter().any(|a| a == "*" || a == name)
}

impl Policy {
    /// No privileged, no host namespaces, no Docker socket and no `/`, binds under a few
    /// data prefixes, a short list of added capabilities, any host port.
    pub fn baseline() -> Self {
        Policy {
            privileged: false,
            host_network: false,
            host_namespaces: false,
            cap_add: strings(&["NET_ADMIN", "SYS_PTRACE"]),
            devices: strings(&[
                "/dev/null",
                "/dev/zero",
                "/dev/random",
                "/dev/urandom",
                "/dev/fuse",
            ]),
            unconfined: false,
            sysctls: strings(&["net."]),
            bind_mounts: strings(&[
                "/home", "/srv", "/opt", "/mnt", "/media", "/tmp", "/var/tmp", "/work", "/data",
            ]),
            volume_drivers: strings(&["local"]),
            volume_types: strings(&["tmpfs", "nfs", "nfs4", "cifs", "smb3"]),
            network_drivers: strings(&["bridge", "overlay"]),
            ports: PortRange { min: 1, max: 65535 },
            run_as_non_root: false,
            max_replicas: 100,
            max_services: 2000,
        }
    }

    /// Docker's own semantics: whatever `docker compose up` may do (the capacity limits
    /// aside).
    pub fn privileged() -> Self {
        Policy {
            privileged: true,
            host_network: true,
            host_namespaces: true,
            cap_add: strings(&["ALL"]),
            devices: strings(&["*"]),
            unconfined: true,
            sysctls: strings(&["*"]),
            bind_mounts: strings(SENSITIVE_PATHS),
            volume_drivers: strings(&["*"]),
            volume_types: strings(&["*"]),
            network_drivers: strings(&["*"]),
            ..Policy::baseline()
        }
    }

    /// Baseline, plus no host path at all and a non-root user.
    pub fn restricted() -> Self {
        Policy {
            bind_mounts: vec![],
            run_as_non_root: true,
            ..Policy::baseline()
        }
    }
}

/// Whether `user:` (`uid`, `uid:gid`, `name`, ...) surely runs as a user other than root:
/// a numeric uid other than 0.
fn runs_as_non_root(user: Option<&str>) -> bool {
    let uid = user
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default();
    uid.trim().parse::<u32>().is_ok_and(|uid| uid != 0)
}

/// Whether `path` is `dir` or beneath it (lexically; `/` contains everything).
fn under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty()
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `path` as this host resolves it (symlinks followed); `None` when it does not exist (the
/// engine then makes it as a folder, where it is written).
pub fn resolve_on_host(path: &str) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    Some(real.to_string_lossy().into_owned())
}

/// `path` without `.`, `..`, repeated or trailing slashes; `None` when it is not absolute.
pub fn normalize_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = vec![];
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

impl Policy {
    /// Reads one profile's rules (YAML); rules it leaves out keep baseline's.
    pub fn from_yaml(text: &str) -> Result<Policy, String> {
        if text.trim().is_empty() {
            return Ok(Policy::default());
        }
        let rules = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        Policy::tuned(&Policy::baseline(), rules)
    }

    /// Every violation of this policy in `spec`, its host paths taken as written; empty
    /// when the stack may be applied.
    pub fn check(&self, spec: &StackSpec) -> Vec<FieldError> {
        self.check_on_host(spec, |_| None)
    }

    /// [`Policy::check`], and each host path also as `resolve` says the host sees it (the
    /// daemon passes `canonicalize`: the engine follows symlinks, so `/tmp/x -> /` must not
    /// pass as `/tmp/x`). `resolve` answers `None` for a path that does not exist yet.
    pub fn check_on_host(
        &self,
        spec: &StackSpec,
        resolve: impl Fn(&str) -> Option<String>,
    ) -> Vec<FieldError> {
        let mut out = Violations(vec![]);
        if spec.services.len() > self.max_services {
            out.refuse(
                "services",
                "max_services",
                format!(
                    "the stack has {} services, more than the {} allowed",
                    spec.services.len(),
                    self.max_services
                ),
            );
        }
        for (name, svc) in &spec.services {
            let path = format!("services.{name}");
            self.service_rules(&path, svc, &mut out);
        }
        for HostPath { field, path } in host_paths(spec) {
            if let Err(why) = self.host_path_allowed(&path, &resolve) {
                out.refuse(field, "bind_mounts", why);
            }
        }
        self.check_volumes(spec, &mut out);
        self.check_networks(spec, &mut out);
        out.0.sort_by(|a, b| a.field.cmp(&b.field));
        out.0
    }

    /// `bind_allowed` for `path` as written, then as the host resolves it.
    fn host_path_allowed(
        &self,
        path: &str,
        resolve: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        self.bind_allowed(path)?;
        match resolve(path) {
            Some(real) if normalize_path(path).as_deref() != Some(real.as_str()) => self
                .bind_allowed(&real)
                .map_err(|why| format!("{why} (the host path leads there through a symlink)")),
            _ => Ok(()),
        }
    }

    /// The `build:` options of a service (or of a build request, which the build route
    /// checks itself): `network: host` is host networking.
    pub fn check_build(&self, path: &str, build: &crate::build::BuildSpec) -> Vec<FieldError> {
        let mut out = Violations(vec![]);
        if build.network.as_deref() == Some("host") && !self.host_network {
            out.refuse(
                format!("{path}.network"),
                "host_network",
                "a build on the host's network reaches every service of the host on \
                 127.0.0.1"
                    .into(),
            );
        }
        out.0
    }

    /// Whether a service may have `replicas` replicas (for scale).
    pub fn check_replicas(&self, field: &str, replicas: u32) -> Option<FieldError> {
        let mut out = Violations(vec![]);
        self.replicas(field, replicas, &mut out);
        out.0.pop()
    }

    fn replicas(&self, field: &str, replicas: u32, out: &mut Violations) {
        if replicas > self.max_replicas {
            out.refuse(
                field,
                "max_replicas",
                format!(
                    "{replicas} replicas, more than the {} allowed",
                    self.max_replicas
                ),
            );
        }
    }

    /// The rules of one service alone, its binds as written (a one-off container of it, run
    /// by a caller who may not have applied it).
    pub fn check_service(&self, name: &str, svc: &crate::spec::ServiceSpec) -> Vec<FieldError> {
        let mut out = Violations(vec![]);
        let path = format!("services.{name}");
        self.service_rules(&path, svc, &mut out);
        for (i, m) in svc.volumes.iter().enumerate() {
            if m.kind == crate::spec::MountKind::Bind {
                let source = m.source.as_deref().unwrap_or_default();
                if let Err(why) = self.bind_allowed(source) {
                    out.refuse(format!("{path}.volumes[{i}]"), "bind_mounts", why);
                }
            }
        }
        out.0
    }

    fn service_rules(&self, path: &str, svc: &crate::spec::ServiceSpec, out: &mut Violations) {
        let o = &svc.options;
        self.replicas(&format!("{path}.deploy.replicas"), svc.replicas, out);
        if o.privileged == Some(true) && !self.privileged {
            out.refuse(
                format!("{path}.privileged"),
                "privileged",
                "a privileged container is root on the host".into(),
            );
        }
        if o.network_mode == Some(NetworkMode::Host) && !self.host_network {
            out.refuse(
                format!("{path}.network_mode"),
                "host_network",
                "host networking shares the host's network stack".into(),
            );
        }
        self.check_namespaces(path, o, out);
        self.check_hooks(path, svc, out);
        if self.run_as_non_root && !runs_as_non_root(o.user.as_deref()) {
            let written = o
                .user
                .as_deref()
                .map_or("unset".to_string(), |u| format!("{u:?}"));
            out.refuse(
                format!("{path}.user"),
                "run_as_non_root",
                format!("user is {written}; set `user:` to a numeric uid other than 0 (\"1000\" or \"1000:1000\"): a name is resolved inside the image, and may be root"),
            );
        }
        self.check_caps(path, &o.cap_add, out);
        for (i, rule) in o.device_cgroup_rules.iter().enumerate() {
            if !listed(&self.devices, rule) {
                out.refuse(
                    format!("{path}.device_cgroup_rules[{i}]"),
                    "devices",
                    format!("device cgroup rule {rule:?} lets the container use the host's devices of that number; allowed only when `devices:` lists the rule itself"),
                );
            }
        }
        for (i, d) in o.devices.iter().enumerate() {
            let host = normalize_path(&d.host).unwrap_or_default();
            if !listed(&self.devices, &host) {
                out.refuse(
                    format!("{path}.devices[{i}]"),
                    "devices",
                    format!("device {} is not among the allowed devices", d.host),
                );
            }
        }
        for (i, opt) in o.security_opt.iter().enumerate() {
            let normal = opt.replace(':', "=").replace(' ', "");
            if !self.unconfined && UNCONFINED.contains(&normal.as_str()) {
                out.refuse(
                    format!("{path}.security_opt[{i}]"),
                    "unconfined",
                    format!("{opt:?} turns the container's confinement off"),
                );
            }
        }
        for key in o.sysctls.keys() {
            if !(self.sysctls.iter()).any(|p| p == "*" || key.starts_with(p.as_str())) {
                out.refuse(
                    format!("{path}.sysctls.{key}"),
                    "sysctls",
                    format!("sysctl {key} is not under an allowed prefix"),
                );
            }
        }
        if let Some(build) = &svc.build {
            out.0
                .extend(self.check_build(&format!("{path}.build"), build));
        }
        self.check_ports(path, svc, out);
    }

    /// `host_namespaces`: the namespaces a container may share with the host or another
    /// container.
    fn check_namespaces(
        &self,
        path: &str,
        o: &crate::spec::ContainerOptions,
        out: &mut Violations,
    ) {
        if self.host_namespaces {
            return;
        }
        let modes = [
            ("pid", &o.pid),
            ("ipc", &o.ipc),
            ("uts", &o.uts),
            ("userns_mode", &o.userns_mode),
            ("cgroup", &o.cgroup),
        ];
        for (key, mode) in modes {
            let Some(mode) = mode.as_deref() else {
                continue;
            };
            let why = match mode.split_once(':') {
                _ if mode == "host" => format!("`{key}: host` shares the host's {key} namespace"),
                Some(("container" | "service", name)) => format!(
                    "`{key}: {mode}` joins the {key} namespace of {name}, and with it whatever that container may reach"
                ),
                _ => continue,
            };
            out.refuse(format!("{path}.{key}"), "host_namespaces", why);
        }
    }

    /// A privileged hook is a privileged process in the container: the `privileged` rule.
    fn check_hooks(&self, path: &str, svc: &crate::spec::ServiceSpec, out: &mut Violations) {
        if self.privileged {
            return;
        }
        for (key, hooks) in [("post_start", &svc.post_start), ("pre_stop", &svc.pre_stop)] {
            for (i, _) in hooks.iter().enumerate().filter(|(_, h)| h.privileged) {
                out.refuse(
                    format!("{path}.{key}[{i}].privileged"),
                    "privileged",
                    "a privileged hook runs as root on the host".into(),
                );
            }
        }
    }

    fn check_caps(&self, path: &str, caps: &[String], out: &mut Violations) {
        let allowed = |cap: &str| {
            DOCKER_DEFAULT_CAPS.contains(&cap)
                || self
                    .cap_add
                    .iter()
                    .any(|a| a == "ALL" || a.trim_start_matches("CAP_") == cap)
        };
        for (i, cap) in caps.iter().enumerate() {
            let bare = cap.to_ascii_uppercase();
            let bare = bare.trim_start_matches("CAP_");
            if !allowed(bare) {
                out.refuse(
                    format!("{path}.cap_add[{i}]"),
                    "cap_add",
                    format!("capability {cap} is beyond Docker's default set and not allowed"),
                );
            }
        }
    }

    /// Whether a bind from host path `source` is allowed.
    pub fn bind_allowed(&self, source: &str) -> Result<(), String> {
        let Some(path) = normalize_path(source) else {
            return Err(format!("host path {source:?} is not absolute"));
        };
        if self.bind_mounts.is_empty() {
            return Err(format!(
                "{path} is a host path, and this profile allows none (`bind_mounts: []`)"
            ));
        }
        let listed = |p: &str| {
            self.bind_mounts
                .iter()
                .any(|a| normalize_path(a).as_deref() == Some(p))
        };
        for sensitive in SENSITIVE_PATHS {
            let reaches = under(sensitive, &path) || (*sensitive != "/" && under(&path, sensitive));
            if reaches && !listed(sensitive) {
                return Err(format!(
                    "{path} reaches {sensitive}, which is refused unless the policy lists it"
                ));
            }
        }
        if self
            .bind_mounts
            .iter()
            .filter_map(|a| normalize_path(a))
            .any(|a| under(&path, &a))
        {
            Ok(())
        } else {
            Err(format!(
                "{path} is not under an allowed host path prefix ({}); an operator allows it \
                 with `bind_mounts:` in the file given to `capstan serve --policy`",
                self.bind_mounts.join(", ")
            ))
        }
    }

    fn check_ports(&self, path: &str, svc: &crate::spec::ServiceSpec, out: &mut Violations) {
        let PortRange { min, max } = self.ports;
        for (i, p) in svc.ports.iter().enumerate() {
            let Some((start, end)) = p.host_ports else {
                continue;
            };
            if start < min || end > max {
                out.refuse(
                    format!("{path}.ports[{i}]"),
                    "ports",
                    format!("host port {start} to {end} is outside the allowed {min} to {max}"),
                );
            }
        }
    }

    /// Named volumes: their driver, and what a `local` one would mount besides host paths
    /// (those are checked with the binds).
    fn check_volumes(&self, spec: &StackSpec, out: &mut Violations) {
        let allowed = listed;
        for (key, vol) in spec.volumes.iter().filter(|(_, v)| !v.external) {
            if !volumes::is_local(vol) {
                let driver = vol.driver.as_deref().unwrap_or_default();
                if !allowed(&self.volume_drivers, driver) {
                    out.refuse(
                        format!("volumes.{key}.driver"),
                        "volume_drivers",
                        format!("volume driver {driver:?} is not among the allowed drivers ({}): its options may mount anything on the host", self.volume_drivers.join(", ")),
                    );
                }
                continue;
            }
            if let volumes::LocalMount::FileSystem(fs) = volumes::local_mount(&vol.driver_opts) {
                if !allowed(&self.volume_types, &fs.to_ascii_lowercase()) {
                    out.refuse(
                        format!("volumes.{key}.driver_opts.type"),
                        "volume_types",
                        format!("the local driver would mount a {fs:?} file system on the host; allowed types are {} (or a host path under bind_mounts)", self.volume_types.join(", ")),
                    );
                }
            }
        }
    }

    fn check_networks(&self, spec: &StackSpec, out: &mut Violations) {
        for (key, net) in spec.networks.iter().filter(|(_, n)| !n.external) {
            let driver = net.driver.as_deref().unwrap_or("bridge");
            if !listed(&self.network_drivers, driver) {
                out.refuse(
                    format!("networks.{key}.driver"),
                    "network_drivers",
                    format!(
                        "network driver {driver:?} is not among the allowed drivers ({})",
                        self.network_drivers.join(", ")
                    ),
                );
            }
        }
        for (key, net) in &spec.networks {
            if net.external && net.engine_name(&spec.name, key) == "host" && !self.host_network {
                out.refuse(
                    format!("networks.{key}"),
                    "host_network",
                    "the external network `host` is host networking".into(),
                );
            }
        }
    }
}

struct Violations(Vec<FieldError>);

impl Violations {
    fn refuse(&mut self, field: impl Into<String>, rule: &str, why: String) {
        self.0.push(FieldError {
            field: field.into(),
            reason: format!("policy rule {rule}: {why}"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_stack;

    fn refusals(policy: &Policy, services: &str) -> Vec<(String, String)> {
        let spec = parse_stack("s", services).unwrap();
        policy
            .check(&spec)
            .into_iter()
            .map(|e| {
                let rule = e.reason["policy rule ".len()..]
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string();
                (e.field, rule)
            })
            .collect()
    }

    fn refused_by_default(services: &str) -> Vec<(String, String)> {
        refusals(&Policy::default(), services)
    }

    fn one(field: &str, rule: &str) -> Vec<(String, String)> {
        vec![(field.to_string(), rule.to_string())]
    }

    #[test]
    fn a_typical_web_stack_passes_the_default_policy() {
        let ok = refused_by_default(
            "services: {web: {image: x, ports: ['8080:80', '80'], volumes: ['data:/d', '/srv/html:/h:ro'],
               cap_add: [CHOWN, NET_ADMIN], sysctls: {net.core.somaxconn: 1024},
               security_opt: ['no-new-privileges:true'], devices: ['/dev/null:/dev/x:r']}}\nvolumes: {data: {}}",
        );
        assert_eq!(ok, vec![]);
    }

    #[test]
    fn privileged_is_refused_unless_allowed() {
        let yaml = "services: {web: {image: x, privileged: true}}";
        assert_eq!(
            refused_by_default(yaml),
            one("services.web.privileged", "privileged")
        );
        let open = Policy::from_yaml("privileged: true").unwrap();
        assert_eq!(refusals(&open, yaml), vec![]);
    }

    #[test]
    fn host_networking_is_refused_by_network_mode_and_by_the_external_host_network() {
        assert_eq!(
            refused_by_default("services: {web: {image: x, network_mode: host}}"),
            one("services.web.network_mode", "host_network")
        );
        let external = "services: {web: {image: x, networks: [h]}}\nnetworks: {h: {external: true, name: host}}";
        assert_eq!(
            refused_by_default(external),
            one("networks.h", "host_network")
        );
        let open = Policy::from_yaml("host_network: true").unwrap();
        assert_eq!(refusals(&open, external), vec![]);
    }

    #[test]
    fn host_namespaces_and_joined_ones_are_refused_unless_allowed() {
        let yaml = "services: {web: {image: x, pid: host, ipc: 'service:db', uts: host, userns_mode: host, cgroup: host}, db: {image: x, ipc: shareable, cgroup: private}}";
        assert_eq!(
            refused_by_default(yaml),
            vec![
                ("services.web.cgroup".into(), "host_namespaces".into()),
                ("services.web.ipc".into(), "host_namespaces".into()),
                ("services.web.pid".into(), "host_namespaces".into()),
                ("services.web.userns_mode".into(), "host_namespaces".into()),
                ("services.web.uts".into(), "host_namespaces".into()),
            ]
        );
        assert_eq!(
            refused_by_default("services: {web: {image: x, pid: 'container:other'}}"),
            one("services.web.pid", "host_namespaces")
        );
        let open = Policy::from_yaml("host_namespaces: true").unwrap();
        assert_eq!(refusals(&open, yaml), vec![]);
    }

    #[test]
    fn device_cgroup_rules_pass_only_when_the_devices_rule_lists_them() {
        let yaml =
            "services: {web: {image: x, device_cgroup_rules: ['c 10:229 rwm', 'a *:* rwm']}}";
        assert_eq!(
            refused_by_default(yaml),
            vec![
                (
                    "services.web.device_cgroup_rules[0]".into(),
                    "devices".into()
                ),
                (
                    "services.web.device_cgroup_rules[1]".into(),
                    "devices".into()
                ),
            ]
        );
        let fuse = Policy::from_yaml("devices: [/dev/fuse, 'c 10:229 rwm']").unwrap();
        assert_eq!(
            refusals(&fuse, yaml),
            one("services.web.device_cgroup_rules[1]", "devices")
        );
    }

    #[test]
    fn a_privileged_hook_falls_under_the_privileged_rule() {
        let yaml = "services: {web: {image: x, post_start: [{command: a}, {command: b, privileged: true}], pre_stop: [{command: c, privileged: true}]}}";
        assert_eq!(
            refused_by_default(yaml),
            vec![
                (
                    "services.web.post_start[1].privileged".into(),
                    "privileged".into()
                ),
                (
                    "services.web.pre_stop[0].privileged".into(),
                    "privileged".into()
                ),
            ]
        );
        let open = Policy::from_yaml("privileged: true").unwrap();
        assert_eq!(refusals(&open, yaml), vec![]);
    }

    #[test]
    fn capabilities_beyond_the_default_set_need_the_policy() {
        assert_eq!(
            refused_by_default("services: {web: {image: x, cap_add: [CAP_CHOWN, SYS_ADMIN]}}"),
            one("services.web.cap_add[1]", "cap_add")
        );
        let all = Policy::from_yaml("cap_add: [ALL]").unwrap();
        assert_eq!(
            refusals(&all, "services: {web: {image: x, cap_add: [SYS_ADMIN]}}"),
            vec![]
        );
    }

    #[test]
    fn devices_outside_the_list_are_refused() {
        assert_eq!(
            refused_by_default("services: {web: {image: x, devices: ['/dev/sda:/dev/sda']}}"),
            one("services.web.devices[0]", "devices")
        );
    }

    #[test]
    fn security_options_that_unconfine_are_refused() {
        let yaml = "services: {web: {image: x, security_opt: ['seccomp:unconfined', 'apparmor=unconfined', 'label:disable', 'no-new-privileges', 'systempaths=unconfined']}}";
        assert_eq!(
            refused_by_default(yaml),
            vec![
                ("services.web.security_opt[0]".into(), "unconfined".into()),
                ("services.web.security_opt[1]".into(), "unconfined".into()),
                ("services.web.security_opt[2]".into(), "unconfined".into()),
                ("services.web.security_opt[4]".into(), "unconfined".into()),
            ]
        );
    }

    #[test]
    fn sysctls_outside_the_allowed_prefixes_are_refused() {
        assert_eq!(
            refused_by_default("services: {web: {image: x, sysctls: {kernel.shmmax: 1}}}"),
            one("services.web.sysctls.kernel.shmmax", "sysctls")
        );
    }

    #[test]
    fn binds_of_root_the_docker_socket_or_unlisted_paths_are_refused() {
        for bind in [
            "/:/host",
            "/var/run/docker.sock:/s",
            "/run/docker.sock:/s",
            "/run:/r",
            "/etc:/e",
            "/srv/../etc:/e",
        ] {
            let yaml = format!("services: {{web: {{image: x, volumes: ['{bind}']}}}}");
            assert_eq!(
                refused_by_default(&yaml),
                one("services.web.volumes[0]", "bind_mounts"),
                "{bind}"
            );
        }
        let root_only = Policy::from_yaml("bind_mounts: [/]").unwrap();
        let yaml = "services: {web: {image: x, volumes: ['/:/host']}}";
        assert_eq!(
            refusals(&root_only, yaml),
            one("services.web.volumes[0]", "bind_mounts"),
            "/ still reaches the socket"
        );
        let open =
            Policy::from_yaml("bind_mounts: [/, /var/run/docker.sock, /run/docker.sock]").unwrap();
        assert_eq!(refusals(&open, yaml), vec![]);
    }

    #[test]
    fn named_volumes_that_bind_host_paths_go_through_the_bind_rule() {
        let yaml = "services: {web: {image: x, volumes: ['root:/host:ro', 'run:/r', 'srv:/s']}}
volumes:
  root: {driver_opts: {type: none, o: bind, device: /}}
  run: {driver: local, driver_opts: {type: none, o: bind, device: /run}}
  srv: {driver_opts: {type: none, o: bind, device: /srv/data}}";
        assert_eq!(
            refused_by_default(yaml),
            vec![
                (
                    "volumes.root.driver_opts.device".into(),
                    "bind_mounts".into()
                ),
                (
                    "volumes.run.driver_opts.device".into(),
                    "bind_mounts".into()
                ),
            ]
        );
    }

    #[test]
    fn a_volume_mounting_a_host_disk_or_a_kernel_file_system_is_refused() {
        let yaml = "services: {web: {image: x}}
volumes:
  disk: {driver_opts: {type: ext4, device: /dev/sda1}}
  proc: {driver_opts: {type: proc, device: proc}}
  over: {driver_opts: {type: overlay, device: overlay, o: 'lowerdir=/,upperdir=/tmp/u,workdir=/tmp/w'}}";
        assert_eq!(
            refused_by_default(yaml),
            vec![
                (
                    "volumes.disk.driver_opts.device".into(),
                    "bind_mounts".into()
                ),
                (
                    "volumes.over.driver_opts.type".into(),
                    "volume_types".into()
                ),
                (
                    "volumes.proc.driver_opts.type".into(),
                    "volume_types".into()
                ),
            ]
        );
    }

    #[test]
    fn tmpfs_and_network_share_volumes_pass_the_default_policy() {
        let yaml = "services: {web: {image: x}}
volumes:
  cache: {driver_opts: {type: tmpfs, device: tmpfs, o: size=64m}}
  nfs: {driver_opts: {type: nfs, o: 'addr=10.0.0.5,rw', device: ':/export/web'}}
  smb: {driver_opts: {type: cifs, o: 'addr=nas', device: //nas/share}}
  plain: {}";
        assert_eq!(refused_by_default(yaml), vec![]);
    }

    #[test]
    fn volume_plugins_and_network_drivers_beyond_the_lists_need_the_policy() {
        let yaml = "services: {web: {image: x}}
volumes: {data: {driver: local-persist, driver_opts: {mountpoint: /}}}
networks: {lan: {driver: macvlan, driver_opts: {parent: eth0}}, back: {}}";
        assert_eq!(
            refused_by_default(yaml),
            vec![
                ("networks.lan.driver".into(), "network_drivers".into()),
                ("volumes.data.driver".into(), "volume_drivers".into()),
            ]
        );
        let open = Policy::from_yaml(
            "volume_drivers: [local, local-persist]\nnetwork_drivers: [bridge, macvlan]",
        )
        .unwrap();
        assert_eq!(refusals(&open, yaml), vec![]);
    }

    #[test]
    fn a_build_on_the_hosts_network_is_host_networking() {
        let yaml = "services: {web: {image: capstan.local/s/web:01, build: {context: /src, network: host}}}";
        assert_eq!(
            refused_by_default(yaml),
            one("services.web.build.network", "host_network")
        );
        let open = Policy::from_yaml("host_network: true").unwrap();
        assert_eq!(refusals(&open, yaml), vec![]);
        let bridged = "services: {web: {image: capstan.local/s/web:01, build: {context: /src, network: default}}}";
        assert_eq!(refused_by_default(bridged), vec![]);
    }

    #[test]
    fn each_host_path_is_also_checked_where_the_host_resolves_it() {
        let yaml = "services: {web: {image: x, volumes: ['/srv/link:/h', '/srv/new:/n', 'v:/v']}}
volumes: {v: {driver_opts: {type: none, o: bind, device: /tmp/also-link}}}";
        let spec = parse_stack("s", yaml).unwrap();
        let host = |p: &str| match p {
            "/srv/link" => Some("/".to_string()),
            "/tmp/also-link" => Some("/run".to_string()),
            _ => None,
        };
        let errors = Policy::default().check_on_host(&spec, host);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["services.web.volumes[0]", "volumes.v.driver_opts.device"]
        );
        assert!(errors
            .iter()
            .all(|e| e.reason.contains("through a symlink")));
    }

    #[test]
    fn baseline_takes_any_host_port_and_a_range_refuses_ports_outside_it() {
        let yaml = "services: {web: {image: x, ports: ['80:80', '443:443', '1023-1025:80']}}";
        assert_eq!(refused_by_default(yaml), vec![]);
        let high = Policy::from_yaml("ports: {min: 1024, max: 65535}").unwrap();
        assert_eq!(
            refusals(&high, yaml),
            vec![
                ("services.web.ports[0]".into(), "ports".into()),
                ("services.web.ports[1]".into(), "ports".into()),
                ("services.web.ports[2]".into(), "ports".into()),
            ]
        );
    }

    #[test]
    fn replicas_and_services_are_limited_per_stack() {
        let small = Policy::from_yaml("max_replicas: 2\nmax_services: 1").unwrap();
        assert_eq!(
            refusals(&small, "services: {a: {image: x, scale: 3}, b: {image: x}}"),
            vec![
                ("services".into(), "max_services".into()),
                ("services.a.deploy.replicas".into(), "max_replicas".into()),
            ]
        );
        assert!(small.check_replicas("replicas", 3).is_some());
        assert!(small.check_replicas("replicas", 2).is_none());
    }

    #[test]
    fn every_example_passes_the_default_policy() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = crate::compose::declared_name(&text).unwrap();
                let spec = parse_stack(&name, &text).unwrap();
                assert_eq!(Policy::default().check(&spec), vec![], "{}", path.display());
            }
        }
    }

    #[test]
    fn a_policy_file_with_an_unknown_rule_or_an_empty_range_is_an_error() {
        assert!(Policy::from_yaml("privilegd: true").is_err());
        assert!(Policy::from_yaml("ports: {min: 2000, max: 1000}").is_err());
        assert_eq!(Policy::from_yaml("").unwrap(), Policy::default());
    }
}
