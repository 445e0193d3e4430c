//! The Engine API create bodies of a [`ContainerConfig`] and a [`ResourceConfig`], split by
//! concern (process, resources, kernel, mounts, networking). Pure, so every option's mapping
//! is tested without an engine.
//!
//! The engine on the target hosts speaks API 1.41 (Docker 20.10). Options that need a newer
//! API are refused at create with [`RuntimeError::TooOld`], naming the option, never dropped.

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, HealthConfig,
    HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig, Ipam, IpamConfig,
    Mount as DockerMount, MountBindOptions, MountBindOptionsPropagationEnum, MountTmpfsOptions,
    MountType, MountVolumeOptions, NetworkCreateRequest, NetworkingConfig,
    PortBinding as DockerPortBinding, ResourcesBlkioWeightDevice, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum, ThrottleDevice, VolumeCreateRequest,
};
use capstan_api::spec::{ContainerOptions, DeviceRate, NetworkMode};
use std::collections::{BTreeMap, HashMap};

use super::{Addresses, ContainerConfig, Mount, MountOptions, ResourceConfig, RuntimeError};

/// The engine's API version, as negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub usize, pub usize);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Options the engine must be at least this new for: (what, needs, is it used).
fn requirements(plan: &ContainerConfig) -> Vec<(String, &'static str, ApiVersion)> {
    let mut out = vec![];
    if !plan.options.annotations.is_empty() {
        out.push(("`annotations`".to_string(), "1.43", ApiVersion(1, 43)));
    }
    if plan.options.mac_address.is_some() {
        // The container-level MacAddress is gone from the API this client speaks; the
        // per-endpoint one is honoured from 1.44.
        out.push(("`mac_address`".to_string(), "1.44", ApiVersion(1, 44)));
    }
    for m in &plan.mounts {
        if let Mount::Volume {
            target, options, ..
        } = m
        {
            if options.subpath.is_some() {
                out.push((
                    format!("`volume.subpath` (mount at {target})"),
                    "1.45",
                    ApiVersion(1, 45),
                ));
            }
        }
    }
    out
}

/// The container create body, or why this engine cannot run the plan as declared.
pub fn body(plan: &ContainerConfig, api: ApiVersion) -> Result<ContainerCreateBody, RuntimeError> {
    if let Some((what, needs, _)) = requirements(plan).into_iter().find(|(_, _, v)| api < *v) {
        return Err(RuntimeError::TooOld {
            what,
            needs,
            has: api.to_string(),
        });
    }
    let o = &plan.options;
    let (exposed, bindings) = ports(plan);
    let (binds, mounts, anonymous) = volumes(plan);
    let mut host = host_config(plan);
    host.binds = (!binds.is_empty()).then_some(binds);
    host.mounts = (!mounts.is_empty()).then_some(mounts);
    host.port_bindings = (!bindings.is_empty()).then_some(bindings);
    Ok(ContainerCreateBody {
        image: Some(plan.image.clone()),
        hostname: (!plan.hostname.is_empty()).then(|| plan.hostname.clone()),
        domainname: o.domainname.clone(),
        user: o.user.clone(),
        working_dir: o.working_dir.clone(),
        stop_signal: o.stop_signal.clone(),
        tty: o.tty,
        open_stdin: o.stdin_open,
        cmd: plan.command.clone(),
        entrypoint: plan.entrypoint.clone(),
        env: Some(plan.env.clone()),
        labels: Some(plan.labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        healthcheck: healthcheck(plan, api),
        stop_timeout: Some(plan.stop_grace.as_secs().max(1) as i64),
        host_config: Some(host),
        networking_config: endpoints(plan).map(|e| NetworkingConfig {
            endpoints_config: Some(e),
        }),
        ..Default::default()
    })
}

/// Health `start_interval` needs API 1.44; older engines get it dropped (documented).
fn healthcheck(plan: &ContainerConfig, api: ApiVersion) -> Option<HealthConfig> {
    plan.healthcheck.as_ref().map(|h| HealthConfig {
        test: (!h.test.is_empty()).then(|| h.test.clone()),
        interval: h.interval_ns,
        timeout: h.timeout_ns,
        retries: h.retries,
        start_period: h.start_period_ns,
        start_interval: h.start_interval_ns.filter(|_| api >= ApiVersion(1, 44)),
    })
}

fn list(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn map(v: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!v.is_empty()).then(|| v.clone().into_iter().collect())
}

/// The host config: process and kernel options, resources, networking mode. Mounts and
/// port bindings are added by [`body`].
fn host_config(plan: &ContainerConfig) -> HostConfig {
    let o = &plan.options;
    let mut host = resources(o);
    host.network_mode = match &o.network_mode {
        // The partner's replica is resolved by the reconciler; without one (never made so),
        // no network rather than the engine's default bridge.
        Some(NetworkMode::Partner(_)) => {
            Some((plan.join.as_ref()).map_or_else(|| "none".into(), |id| format!("container:{id}")))
        }
        Some(mode) => Some(mode.describe()),
        None => plan.networks.first().map(|(n, _)| n.clone()),
    };
    host.volumes_from = list(&plan.volumes_from);
    // Capstan owns restarts (policy, back-off, startup order); the engine must not race it.
    host.restart_policy = Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    });
    host.cap_add = list(&o.cap_add);
    host.cap_drop = list(&o.cap_drop);
    host.group_add = list(&o.group_add);
    host.security_opt = list(&o.security_opt);
    host.dns = list(&o.dns);
    host.dns_search = list(&o.dns_search);
    host.dns_options = list(&o.dns_opt);
    host.extra_hosts = list(&o.extra_hosts);
    host.readonly_rootfs = o.read_only;
    host.privileged = o.privileged;
    host.init = o.init;
    host.tmpfs = map(&o.tmpfs);
    host.sysctls = map(&o.sysctls);
    host.annotations = map(&o.annotations);
    host.shm_size = o.shm_size;
    host.oom_score_adj = o.oom_score_adj;
    host.runtime = o.runtime.clone();
    host.log_config = o.logging.as_ref().map(|l| HostConfigLogConfig {
        typ: l.driver.clone(),
        config: map(&l.options),
    });
    kernel(o, &mut host);
    host
}

/// Namespaces, cgroup settings and storage options, as the engine takes them. `ipc` and
/// `pid` naming a service were resolved to its first replica's container by the shaper.
fn kernel(o: &ContainerOptions, host: &mut HostConfig) {
    host.ipc_mode = o.ipc.clone();
    host.pid_mode = o.pid.clone();
    host.uts_mode = o.uts.clone();
    host.userns_mode = o.userns_mode.clone();
    host.cgroupns_mode = o.cgroup.as_deref().map(|c| match c {
        "host" => HostConfigCgroupnsModeEnum::HOST,
        _ => HostConfigCgroupnsModeEnum::PRIVATE,
    });
    host.cgroup_parent = o.cgroup_parent.clone();
    host.cpu_count = o.cpu_count;
    host.cpu_percent = o.cpu_percent;
    host.cpu_period = o.cpu_period;
    host.cpu_quota = o.cpu_quota;
    host.cpu_realtime_period = o.cpu_rt_period;
    host.cpu_realtime_runtime = o.cpu_rt_runtime;
    host.memory_swappiness = o.mem_swappiness;
    host.device_cgroup_rules = list(&o.device_cgroup_rules);
    host.storage_opt = map(&o.storage_opt);
    if let Some(b) = &o.blkio {
        let throttles = |rates: &[DeviceRate]| {
            (!rates.is_empty()).then(|| {
                (rates.iter())
                    .map(|r| ThrottleDevice {
                        path: Some(r.path.clone()),
                        rate: Some(r.rate),
                    })
                    .collect()
            })
        };
        host.blkio_weight = b.weight;
        host.blkio_weight_device = (!b.weight_device.is_empty()).then(|| {
            (b.weight_device.iter())
                .map(|r| ResourcesBlkioWeightDevice {
                    path: Some(r.path.clone()),
                    weight: Some(r.rate as usize),
                })
                .collect()
        });
        host.blkio_device_read_bps = throttles(&b.device_read_bps);
        host.blkio_device_write_bps = throttles(&b.device_write_bps);
        host.blkio_device_read_iops = throttles(&b.device_read_iops);
        host.blkio_device_write_iops = throttles(&b.device_write_iops);
    }
}

/// Memory, CPU, pids, ulimits and devices.
fn resources(o: &ContainerOptions) -> HostConfig {
    HostConfig {
        memory: o.memory,
        memory_swap: o.memory_swap,
        memory_reservation: o.memory_reservation,
        nano_cpus: o.nano_cpus,
        cpu_shares: o.cpu_shares,
        cpuset_cpus: o.cpuset.clone(),
        pids_limit: o.pids_limit,
        oom_kill_disable: o.oom_kill_disable,
        ulimits: (!o.ulimits.is_empty()).then(|| {
            o.ulimits
                .iter()
                .map(|(name, l)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(l.soft),
                    hard: Some(l.hard),
                })
                .collect()
        }),
        devices: (!o.devices.is_empty()).then(|| {
            o.devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.host.clone()),
                    path_in_container: Some(d.container.clone()),
                    cgroup_permissions: Some(d.permissions.clone()),
                })
                .collect()
        }),
        ..Default::default()
    }
}

/// The first network's endpoint (aliases, fixed addresses); the rest are joined before
/// start with [`endpoint`]. None with `network_mode`.
fn endpoints(plan: &ContainerConfig) -> Option<HashMap<String, EndpointSettings>> {
    if plan.options.network_mode.is_some() {
        return None;
    }
    plan.networks.first().map(|(net, aliases)| {
        HashMap::from([(
            net.clone(),
            endpoint(plan, aliases, plan.addresses.get(net)),
        )])
    })
}

/// One network endpoint of a replica; `external_links` are per endpoint on user networks,
/// as Compose passes them.
pub fn endpoint(
    plan: &ContainerConfig,
    aliases: &[String],
    addresses: Option<&Addresses>,
) -> EndpointSettings {
    EndpointSettings {
        aliases: Some(aliases.to_vec()),
        links: list(&plan.options.external_links),
        ipam_config: addresses.map(|a| EndpointIpamConfig {
            ipv4_address: a.ipv4.clone(),
            ipv6_address: a.ipv6.clone(),
            link_local_ips: list(&a.link_local),
        }),
        ..Default::default()
    }
}

type Bindings = HashMap<String, Option<Vec<DockerPortBinding>>>;

/// The exposed ports (`80/tcp`, and `expose`) and the host bindings of published ones.
fn ports(plan: &ContainerConfig) -> (Vec<String>, Bindings) {
    let mut exposed = vec![];
    let mut bindings: Bindings = HashMap::new();
    for p in &plan.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        exposed.push(key.clone());
        let binding = DockerPortBinding {
            host_ip: p.host_ip.clone(),
            host_port: Some(p.host_port.map(|p| p.to_string()).unwrap_or_default()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(vec![]))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    for e in plan.options.expose.iter().flat_map(|e| expand_range(e)) {
        if !exposed.contains(&e) {
            exposed.push(e);
        }
    }
    (exposed, bindings)
}

/// `8000-8002/tcp` → `8000/tcp`, `8001/tcp`, `8002/tcp`: the engine takes one port per key
/// (the docker CLI and Compose expand ranges the same way); a single port is itself.
fn expand_range(spec: &str) -> Vec<String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    match ports
        .split_once('-')
        .map(|(a, b)| (a.parse::<u16>(), b.parse::<u16>()))
    {
        Some((Ok(a), Ok(b))) if a <= b => (a..=b).map(|p| format!("{p}/{proto}")).collect(),
        _ => vec![format!("{ports}/{proto}")],
    }
}

/// Binds (`source:target[:opts]`, what `-v` takes), mounts (what `Binds` cannot say: tmpfs,
/// a bind that must not create its host path, a volume subpath), and anonymous volumes.
fn volumes(plan: &ContainerConfig) -> (Vec<String>, Vec<DockerMount>, Vec<String>) {
    let (mut binds, mut mounts, mut anonymous) = (vec![], vec![], vec![]);
    for m in &plan.mounts {
        match m {
            Mount::Bind { options, .. } if !options.create_host_path => mounts.push(api_mount(m)),
            Mount::Volume { options, .. } if options.subpath.is_some() => mounts.push(api_mount(m)),
            Mount::Volume {
                name: source,
                target,
                read_only,
                options,
            }
            | Mount::Bind {
                source,
                target,
                read_only,
                options,
            } => binds.push(bind_string(source, target, *read_only, options)),
            Mount::Tmpfs { .. } => mounts.push(api_mount(m)),
            Mount::Anonymous { target } => anonymous.push(target.clone()),
        }
    }
    (binds, mounts, anonymous)
}

/// `source:target[:ro,z,rslave,nocopy]`.
fn bind_string(source: &str, target: &str, read_only: bool, o: &MountOptions) -> String {
    let mut opts: Vec<&str> = vec![];
    if read_only {
        opts.push("ro");
    }
    opts.extend(o.selinux.as_deref());
    opts.extend(o.propagation.as_deref());
    if o.nocopy {
        opts.push("nocopy");
    }
    if opts.is_empty() {
        format!("{source}:{target}")
    } else {
        format!("{source}:{target}:{}", opts.join(","))
    }
}

fn propagation(p: &str) -> MountBindOptionsPropagationEnum {
    use MountBindOptionsPropagationEnum as P;
    match p {
        "private" => P::PRIVATE,
        "rshared" => P::RSHARED,
        "shared" => P::SHARED,
        "rslave" => P::RSLAVE,
        "slave" => P::SLAVE,
        _ => P::RPRIVATE,
    }
}

/// A mount in the `Mounts` form. SELinux labels have no `Mounts` field: a bind that needs
/// both `z` and `create_host_path: false` gets the label from neither (documented).
fn api_mount(m: &Mount) -> DockerMount {
    match m {
        Mount::Bind {
            source,
            target,
            read_only,
            options,
        } => DockerMount {
            typ: Some(MountType::BIND),
            source: Some(source.clone()),
            target: Some(target.clone()),
            read_only: Some(*read_only),
            bind_options: Some(MountBindOptions {
                propagation: options.propagation.as_deref().map(propagation),
                ..Default::default()
            }),
            ..Default::default()
        },
        Mount::Volume {
            name,
            target,
            read_only,
            options,
        } => DockerMount {
            typ: Some(MountType::VOLUME),
            source: Some(name.clone()),
            target: Some(target.clone()),
            read_only: Some(*read_only),
            volume_options: Some(MountVolumeOptions {
                no_copy: Some(options.nocopy),
                subpath: options.subpath.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Mount::Tmpfs { target, size, mode } => DockerMount {
            typ: Some(MountType::TMPFS),
            target: Some(target.clone()),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: *size,
                mode: mode.map(i64::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        Mount::Anonymous { target } => DockerMount {
            typ: Some(MountType::VOLUME),
            target: Some(target.clone()),
            ..Default::default()
        },
    }
}

/// The network create request.
pub fn network_request(plan: &ResourceConfig) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: plan.name.clone(),
        driver: plan.driver.clone(),
        internal: Some(plan.internal),
        attachable: Some(plan.attachable),
        labels: Some(plan.labels.clone().into_iter().collect()),
        options: map(&plan.options),
        enable_ipv6: plan.enable_ipv6,
        ipam: plan.ipam.as_ref().map(|i| Ipam {
            driver: i.driver.clone(),
            options: map(&i.options),
            config: Some(
                i.config
                    .iter()
                    .map(|c| IpamConfig {
                        subnet: c.subnet.clone(),
                        ip_range: c.ip_range.clone(),
                        gateway: c.gateway.clone(),
                        auxiliary_addresses: map(&c.aux_addresses),
                    })
                    .collect(),
            ),
        }),
        ..Default::default()
    }
}

/// The volume create request.
pub fn volume_request(plan: &ResourceConfig) -> VolumeCreateRequest {
    VolumeCreateRequest {
        name: Some(plan.name.clone()),
        driver: plan.driver.clone(),
        driver_opts: map(&plan.options),
        labels: Some(plan.labels.clone().into_iter().collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::containers::shape;
    use capstan_api::object::{Service, Stack};
    use capstan_api::parse_stack;

    const OLD: ApiVersion = ApiVersion(1, 41);

    /// Replica 1 of service `web` of `text`, and the stack's networks and volumes.
    fn shaped(text: &str) -> (ContainerConfig, Vec<ResourceConfig>, Vec<ResourceConfig>) {
        let spec = parse_stack("shop", text).unwrap();
        let stack = Stack {
            name: "shop".into(),
            networks: spec.networks.clone(),
            volumes: spec.volumes.clone(),
            services: spec.services.keys().cloned().collect(),
            ..Default::default()
        };
        let svc = Service {
            stack: "shop".into(),
            name: "web".into(),
            spec: spec.services["web"].clone(),
            ..Default::default()
        };
        let plan = shape::container(&stack, &svc, 1);
        (
            plan,
            shape::networks(&stack, &[&svc]),
            shape::volumes(&stack, &[&svc]),
        )
    }

    fn create(text: &str) -> ContainerCreateBody {
        body(&shaped(text).0, OLD).unwrap()
    }

    #[test]
    fn process_options_reach_the_container_config() {
        let b = create(
            r#"services: {web: {image: w, container_name: front, hostname: h, domainname: example.org,
               user: "1000:1000", working_dir: /srv, stop_signal: SIGINT, tty: true, stdin_open: true,
               expose: ["9000", "53/udp", "7000-7002/udp"], ports: ["8080-8081:80"]}}"#,
        );
        assert_eq!(b.hostname.as_deref(), Some("h"));
        assert_eq!(b.domainname.as_deref(), Some("example.org"));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.working_dir.as_deref(), Some("/srv"));
        assert_eq!(b.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!((b.tty, b.open_stdin), (Some(true), Some(true)));
        assert_eq!(
            b.exposed_ports.unwrap(),
            vec!["80/tcp", "9000/tcp", "53/udp", "7000/udp", "7001/udp", "7002/udp"],
            "a range is one key per port, as the engine wants them"
        );
        let (plan, _, _) = shaped("services: {web: {image: w, container_name: front}}");
        assert_eq!(plan.name, "front");
        assert_eq!(plan.hostname, "front");
    }

    #[test]
    fn kernel_and_resource_options_reach_the_host_config() {
        let b = create(
            r#"services: {web: {image: w, cap_add: [NET_ADMIN], cap_drop: [MKNOD], read_only: true, init: true,
               privileged: true, tmpfs: ["/run:size=1m"], shm_size: 64m, ulimits: {nofile: {soft: 1024, hard: 2048}},
               sysctls: {net.core.somaxconn: "1024"}, security_opt: ["no-new-privileges:true"], group_add: ["44"],
               mem_limit: 256m, memswap_limit: 512m, mem_reservation: 128m, cpus: 0.5, cpu_shares: 512,
               cpuset: "0", pids_limit: 64, oom_score_adj: 100, oom_kill_disable: true, runtime: runc,
               devices: ["/dev/null:/dev/mynull:r"], extra_hosts: ["db.local:10.0.0.2"], dns: [1.1.1.1],
               dns_search: [example.org], dns_opt: ["ndots:2"], logging: {driver: json-file, options: {max-size: 1m}}}}"#,
        );
        let h = b.host_config.unwrap();
        assert_eq!(h.cap_add.unwrap(), vec!["NET_ADMIN"]);
        assert_eq!(h.cap_drop.unwrap(), vec!["MKNOD"]);
        assert_eq!(
            (h.readonly_rootfs, h.init, h.privileged),
            (Some(true), Some(true), Some(true))
        );
        assert_eq!(h.tmpfs.unwrap()["/run"], "size=1m");
        assert_eq!(h.shm_size, Some(64 << 20));
        let u = &h.ulimits.unwrap()[0];
        assert_eq!(
            (u.name.as_deref(), u.soft, u.hard),
            (Some("nofile"), Some(1024), Some(2048))
        );
        assert_eq!(h.sysctls.unwrap()["net.core.somaxconn"], "1024");
        assert_eq!(h.security_opt.unwrap(), vec!["no-new-privileges:true"]);
        assert_eq!(h.group_add.unwrap(), vec!["44"]);
        assert_eq!(
            (h.memory, h.memory_swap, h.memory_reservation),
            (Some(256 << 20), Some(512 << 20), Some(128 << 20))
        );
        assert_eq!(
            (h.nano_cpus, h.cpu_shares, h.pids_limit),
            (Some(500_000_000), Some(512), Some(64))
        );
        assert_eq!(h.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(
            (h.oom_score_adj, h.oom_kill_disable),
            (Some(100), Some(true))
        );
        assert_eq!(h.runtime.as_deref(), Some("runc"));
        let d = &h.devices.unwrap()[0];
        assert_eq!(
            (
                d.path_on_host.as_deref(),
                d.path_in_container.as_deref(),
                d.cgroup_permissions.as_deref()
            ),
            (Some("/dev/null"), Some("/dev/mynull"), Some("r"))
        );
        assert_eq!(h.extra_hosts.unwrap(), vec!["db.local:10.0.0.2"]);
        assert_eq!(h.dns.unwrap(), vec!["1.1.1.1"]);
        assert_eq!(h.dns_search.unwrap(), vec!["example.org"]);
        assert_eq!(h.dns_options.unwrap(), vec!["ndots:2"]);
        let log = h.log_config.unwrap();
        assert_eq!(
            (log.typ.as_deref(), log.config.unwrap()["max-size"].as_str()),
            (Some("json-file"), "1m")
        );
        assert_eq!(
            h.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO),
            "capstan still owns restarts"
        );
    }

    #[test]
    fn a_service_without_options_gets_the_same_body_as_before() {
        let b = create("services: {web: {image: w}}");
        let h = b.host_config.clone().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("shop_default"));
        assert_eq!(
            (h.cap_add, h.memory, h.binds, h.mounts, h.tmpfs),
            (None, None, None, None, None)
        );
        assert_eq!((b.user, b.hostname.as_deref()), (None, Some("shop-web-1")));
    }

    #[test]
    fn mounts_use_binds_when_they_can_and_the_mounts_api_when_they_must() {
        let b = create(
            r#"
services:
  web:
    image: w
    volumes:
      - "/srv:/a:ro,z,rslave"
      - "data:/b:nocopy"
      - {type: bind, source: /srv, target: /c, bind: {propagation: rshared, create_host_path: false}}
      - {type: tmpfs, target: /d, tmpfs: {size: 1m, mode: 1770}}
      - {type: volume, target: /e}
volumes: {data: {}}
"#,
        );
        let h = b.host_config.unwrap();
        assert_eq!(
            h.binds.unwrap(),
            vec!["/srv:/a:ro,z,rslave", "shop_data:/b:nocopy"]
        );
        let mounts = h.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(
            mounts[0].bind_options.as_ref().unwrap().propagation,
            Some(MountBindOptionsPropagationEnum::RSHARED)
        );
        assert_eq!(mounts[1].typ, Some(MountType::TMPFS));
        let t = mounts[1].tmpfs_options.as_ref().unwrap();
        assert_eq!((t.size_bytes, t.mode), (Some(1 << 20), Some(0o1770)));
        assert_eq!(b.volumes.unwrap(), vec!["/e"]);
    }

    #[test]
    fn options_newer_than_the_engine_are_refused_naming_the_option() {
        let (plan, _, _) = shaped(
            "services: {web: {image: w, volumes: [{type: volume, source: data, target: /d, volume: {subpath: a}}]}}\nvolumes: {data: {}}",
        );
        let err = body(&plan, OLD).unwrap_err().to_string();
        assert!(
            err.contains("volume.subpath") && err.contains("1.45") && err.contains("1.41"),
            "{err}"
        );
        let m = &body(&plan, ApiVersion(1, 45))
            .unwrap()
            .host_config
            .unwrap()
            .mounts
            .unwrap()[0];
        assert_eq!(
            m.volume_options.as_ref().unwrap().subpath.as_deref(),
            Some("a")
        );
        let (plan, _, _) = shaped("services: {web: {image: w, annotations: {a: b}}}");
        assert!(body(&plan, OLD)
            .unwrap_err()
            .to_string()
            .contains("`annotations` needs Docker API 1.43"));
        let (plan, _, _) =
            shaped("services: {web: {image: w, mac_address: \"02:42:ac:11:00:02\"}}");
        assert!(body(&plan, OLD).is_err());
    }

    #[test]
    fn namespace_cgroup_and_storage_options_reach_the_host_config() {
        let b = create(
            r#"services: {web: {image: w, ipc: shareable, pid: host, uts: host, userns_mode: host, cgroup: host,
               cgroup_parent: capstan.slice, cpu_count: 2, cpu_percent: 50, cpu_period: 100ms, cpu_quota: 50000,
               cpu_rt_period: 1000000, cpu_rt_runtime: 950000, mem_swappiness: 10, storage_opt: {size: 1G},
               device_cgroup_rules: ["c 1:3 mr"], blkio_config: {weight: 300, weight_device: [{path: /dev/sda, weight: 400}],
               device_read_bps: [{path: /dev/sda, rate: 1mb}], device_write_bps: [{path: /dev/sda, rate: 2mb}],
               device_read_iops: [{path: /dev/sda, rate: 100}], device_write_iops: [{path: /dev/sda, rate: 200}]}}}"#,
        );
        let h = b.host_config.unwrap();
        assert_eq!(
            (
                h.ipc_mode.as_deref(),
                h.pid_mode.as_deref(),
                h.uts_mode.as_deref(),
                h.userns_mode.as_deref()
            ),
            (Some("shareable"), Some("host"), Some("host"), Some("host"))
        );
        assert_eq!(h.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::HOST));
        assert_eq!(h.cgroup_parent.as_deref(), Some("capstan.slice"));
        assert_eq!((h.cpu_count, h.cpu_percent), (Some(2), Some(50)));
        assert_eq!((h.cpu_period, h.cpu_quota), (Some(100_000), Some(50_000)));
        assert_eq!(
            (h.cpu_realtime_period, h.cpu_realtime_runtime),
            (Some(1_000_000), Some(950_000))
        );
        assert_eq!(h.memory_swappiness, Some(10));
        assert_eq!(h.storage_opt.unwrap()["size"], "1G");
        assert_eq!(h.device_cgroup_rules.unwrap(), vec!["c 1:3 mr"]);
        assert_eq!(h.blkio_weight, Some(300));
        assert_eq!(h.blkio_weight_device.unwrap()[0].weight, Some(400));
        let rate = |t: Option<Vec<ThrottleDevice>>| {
            let t = &t.unwrap()[0];
            (t.path.clone().unwrap(), t.rate.unwrap())
        };
        assert_eq!(rate(h.blkio_device_read_bps), ("/dev/sda".into(), 1 << 20));
        assert_eq!(rate(h.blkio_device_write_bps), ("/dev/sda".into(), 2 << 20));
        assert_eq!(rate(h.blkio_device_read_iops), ("/dev/sda".into(), 100));
        assert_eq!(rate(h.blkio_device_write_iops), ("/dev/sda".into(), 200));
    }

    #[test]
    fn a_namespace_of_a_service_is_its_first_replicas_and_external_links_go_to_every_endpoint() {
        let b = create(
            "services: {web: {image: w, ipc: 'service:db', pid: 'container:other', external_links: ['cache-1:cache']}, db: {image: d}}",
        );
        let h = b.host_config.unwrap();
        assert_eq!(h.ipc_mode.as_deref(), Some("container:shop-db-1"));
        assert_eq!(h.pid_mode.as_deref(), Some("container:other"));
        let ep = &b.networking_config.unwrap().endpoints_config.unwrap()["shop_default"];
        assert_eq!(
            ep.links.as_deref(),
            Some(&["cache-1:cache".to_string()][..])
        );
        let plain = create("services: {web: {image: w}}");
        let h = plain.host_config.unwrap();
        assert_eq!(
            (h.ipc_mode, h.cgroupns_mode, h.blkio_weight),
            (None, None, None)
        );
    }

    #[test]
    fn network_mode_host_has_no_networks_and_no_hostname() {
        let (plan, nets, _) = shaped("services: {web: {image: w, network_mode: host}}");
        let b = body(&plan, OLD).unwrap();
        assert_eq!(b.host_config.unwrap().network_mode.as_deref(), Some("host"));
        assert_eq!((b.hostname, b.networking_config), (None, None));
        assert!(nets.is_empty());
    }

    #[test]
    fn a_sidecar_joins_its_partners_container_and_mounts_its_volumes_with_no_name_of_its_own() {
        let (mut plan, nets, _) = shaped(
            "services: {app: {image: a}, web: {image: w, network_mode: 'service:app', volumes_from: ['app:ro']}}",
        );
        assert!(nets.is_empty() && plan.hostname.is_empty());
        let unpaired = body(&plan, OLD).unwrap().host_config.unwrap();
        assert_eq!(
            unpaired.network_mode.as_deref(),
            Some("none"),
            "never the default bridge"
        );
        plan.join = Some("abc123".into());
        plan.volumes_from = vec!["abc123:ro".into()];
        let b = body(&plan, OLD).unwrap();
        let host = b.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:abc123"));
        assert_eq!(host.volumes_from, Some(vec!["abc123:ro".to_string()]));
        assert_eq!((b.hostname, b.networking_config), (None, None));
    }

    #[test]
    fn networks_carry_ipam_options_and_replicas_their_fixed_addresses() {
        let (plan, nets, vols) = shaped(
            r#"
services:
  web:
    image: w
    volumes: ["data:/d"]
    networks:
      front: {priority: 1}
      back: {ipv4_address: 10.5.0.10, priority: 5, link_local_ips: [169.254.1.1]}
networks:
  front: {}
  back:
    driver_opts: {com.docker.network.bridge.name: br-back}
    enable_ipv6: false
    ipam: {driver: default, config: [{subnet: 10.5.0.0/16, gateway: 10.5.0.1, ip_range: 10.5.0.0/24}]}
volumes: {data: {driver_opts: {type: tmpfs, device: tmpfs}}}
"#,
        );
        assert_eq!(
            plan.networks[0].0, "shop_back",
            "the highest priority is joined at create"
        );
        let b = body(&plan, OLD).unwrap();
        let ep = &b.networking_config.unwrap().endpoints_config.unwrap()["shop_back"];
        let ipam = ep.ipam_config.as_ref().unwrap();
        assert_eq!(ipam.ipv4_address.as_deref(), Some("10.5.0.10"));
        assert_eq!(
            ipam.link_local_ips.as_deref(),
            Some(&["169.254.1.1".to_string()][..])
        );
        let back = network_request(nets.iter().find(|n| n.name == "shop_back").unwrap());
        assert_eq!(
            back.options.unwrap()["com.docker.network.bridge.name"],
            "br-back"
        );
        assert_eq!(back.enable_ipv6, Some(false));
        let ipam = back.ipam.unwrap();
        let pool = &ipam.config.unwrap()[0];
        assert_eq!(
            (
                pool.subnet.as_deref(),
                pool.gateway.as_deref(),
                pool.ip_range.as_deref()
            ),
            (Some("10.5.0.0/16"), Some("10.5.0.1"), Some("10.5.0.0/24"))
        );
        assert_eq!(ipam.driver.as_deref(), Some("default"));
        let front = network_request(nets.iter().find(|n| n.name == "shop_front").unwrap());
        assert_eq!(
            (front.ipam, front.options, front.enable_ipv6),
            (None, None, None)
        );
        let v = volume_request(&vols[0]);
        assert_eq!(v.driver_opts.unwrap()["type"], "tmpfs");
    }
}
