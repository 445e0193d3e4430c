//! The engine objects a spec turns into: containers, networks, volumes. Pure.

use capstan_api::names;
use capstan_api::object::{Service, Stack};
use capstan_api::spec::{
    ContainerOptions, MountKind, MountSpec, NetworkMode, NetworkSpec, ServiceNetwork, VolumeSpec,
};
use capstan_api::stateful;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::runtime::{
    Addresses, ContainerConfig, Mount, MountOptions, PortBinding, ResourceConfig, RuntimeError,
};

pub fn grace(svc: &Service) -> Duration {
    svc.spec.stop_grace()
}

fn network_spec<'a>(stack: &'a Stack, key: &str) -> std::borrow::Cow<'a, NetworkSpec> {
    stack.networks.get(key).map_or_else(
        || std::borrow::Cow::Owned(NetworkSpec::default()),
        std::borrow::Cow::Borrowed,
    )
}

/// The bind rule again, as the engine is about to follow each host path of a replica of
/// `svc` (its binds, and the device of each `local` volume it mounts that binds one): a path
/// that was checked at apply may have become a symlink since (`/srv/data -> /`). `None`
/// when each resolves where `policy` allows; paths that do not exist are left to the engine,
/// which makes them as folders.
pub fn bind_refused(
    stack: &Stack,
    svc: &Service,
    policy: &capstan_api::policy::Policy,
) -> Option<RuntimeError> {
    let mounts = svc.spec.volumes.iter();
    let sources = mounts.filter_map(|m| match m.kind {
        MountKind::Bind => m.source.as_deref(),
        MountKind::Volume => (m.source.as_deref())
            .and_then(|key| stack.volumes.get(key))
            .and_then(capstan_api::policy::volume_host_path),
        _ => None,
    });
    sources.into_iter().find_map(|source| {
        let real = capstan_api::policy::resolve_on_host(source)?;
        let reason = policy.bind_allowed(&real).err()?;
        Some(RuntimeError::BindRefused {
            path: source.to_string(),
            reason: format!("it now resolves to {real}, and {reason}"),
        })
    })
}

/// Replica `ordinal` of `svc`.
pub fn container(stack: &Stack, svc: &Service, ordinal: u32) -> ContainerConfig {
    let spec = &svc.spec;
    let name = spec.replica_name(&stack.name, &svc.name, ordinal);
    let mut labels = spec.labels.clone();
    labels.insert(names::STACK.into(), stack.name.clone());
    labels.insert(names::SERVICE.into(), svc.name.clone());
    labels.insert(names::REPLICA.into(), ordinal.to_string());
    labels.insert(names::SPEC_HASH.into(), spec.container_hash());
    // A proxied port is the proxy's to publish: the replicas only listen on their own address.
    let ports = spec
        .ports
        .iter()
        .filter(|p| !p.proxied(spec.replicas))
        .map(|p| PortBinding {
            container_port: p.container_port,
            protocol: p.protocol.clone(),
            host_ip: p.host_ip.clone(),
            host_port: p.host_port_for(ordinal),
        })
        .collect();
    // On the host's network (or in its UTS namespace) the container has the host's name, and
    // a sidecar its partner's; the engine refuses another.
    let hostname = match (&spec.options.hostname, &spec.options.network_mode) {
        (_, Some(NetworkMode::Host | NetworkMode::Partner(_))) => String::new(),
        _ if spec.options.uts.as_deref() == Some("host") => String::new(),
        (Some(h), _) => h.clone(),
        (None, _) => names::default_hostname(&name),
    };
    let (networks, addresses) = endpoints(stack, svc);
    ContainerConfig {
        hostname,
        name,
        image: spec.image.clone(),
        command: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: spec
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        labels,
        networks,
        ports,
        mounts: spec
            .volumes
            .iter()
            .map(|m| mount(stack, m, ordinal))
            .collect(),
        healthcheck: spec.healthcheck.clone(),
        stop_grace: grace(svc),
        addresses,
        options: joined_namespaces(stack, spec.options.clone()),
        join: None,
        volumes_from: vec![],
    }
}

/// `ipc`/`pid: service:NAME` joins NAME's first replica, as Compose joins the service's
/// first container (the parser refused a NAME with a `container_name`).
fn joined_namespaces(stack: &Stack, mut o: ContainerOptions) -> ContainerOptions {
    for mode in [&mut o.ipc, &mut o.pid] {
        if let Some(service) = mode.as_deref().and_then(|m| m.strip_prefix("service:")) {
            *mode = Some(format!(
                "container:{}",
                names::container(&stack.name, service, 1)
            ));
        }
    }
    o
}

/// Engine network name → aliases, in joining order.
type Joined = Vec<(String, Vec<String>)>;

/// The networks a replica joins, highest `priority` first (the first is joined at create),
/// with its aliases, and its fixed addresses by engine network name.
fn endpoints(stack: &Stack, svc: &Service) -> (Joined, BTreeMap<String, Addresses>) {
    let mut joined: Vec<(&String, &ServiceNetwork)> = svc.spec.networks.iter().collect();
    joined.sort_by_key(|(key, sn)| (std::cmp::Reverse(sn.priority.unwrap_or(0)), *key));
    let mut addresses = BTreeMap::new();
    let networks = joined
        .into_iter()
        .map(|(key, sn)| {
            let engine_name = network_spec(stack, key).engine_name(&stack.name, key);
            if sn.ipv4_address.is_some()
                || sn.ipv6_address.is_some()
                || !sn.link_local_ips.is_empty()
            {
                addresses.insert(
                    engine_name.clone(),
                    Addresses {
                        ipv4: sn.ipv4_address.clone(),
                        ipv6: sn.ipv6_address.clone(),
                        link_local: sn.link_local_ips.clone(),
                    },
                );
            }
            let mut aliases = vec![svc.name.clone()];
            aliases.extend(sn.aliases.iter().cloned());
            (engine_name, aliases)
        })
        .collect();
    (networks, addresses)
}

/// Replica `ordinal`'s mount of `m` (a per-replica volume is the ordinal's own).
fn mount(stack: &Stack, m: &MountSpec, ordinal: u32) -> Mount {
    let source = m.source.clone().unwrap_or_default();
    let options = MountOptions {
        propagation: m.propagation.clone(),
        selinux: m.selinux.clone(),
        nocopy: m.nocopy,
        subpath: m.subpath.clone(),
        create_host_path: m.create_host_path.unwrap_or(true),
    };
    match m.kind {
        MountKind::Volume => {
            let vs = stack.volumes.get(&source).cloned().unwrap_or_default();
            Mount::Volume {
                name: vs.engine_name(&stack.name, &stateful::replica_volume(&source, ordinal)),
                target: m.target.clone(),
                read_only: m.read_only,
                options,
            }
        }
        MountKind::Bind => Mount::Bind {
            source,
            target: m.target.clone(),
            read_only: m.read_only,
            options,
        },
        MountKind::Anonymous => Mount::Anonymous {
            target: m.target.clone(),
        },
        MountKind::Tmpfs => Mount::Tmpfs {
            target: m.target.clone(),
            size: m.tmpfs_size,
            mode: m.tmpfs_mode,
        },
    }
}

fn resource_labels(
    stack: &str,
    key: &str,
    user: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = user.clone();
    labels.insert(names::STACK.into(), stack.into());
    labels.insert(names::RESOURCE.into(), key.into());
    labels
}

/// The networks `services` join (all of the stack's, if `None`).
pub fn networks(stack: &Stack, services: &[&Service]) -> Vec<ResourceConfig> {
    let mut keys: Vec<String> = services
        .iter()
        .flat_map(|s| s.spec.networks.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|key| {
            let n = network_spec(stack, key);
            ResourceConfig {
                name: n.engine_name(&stack.name, key),
                driver: n.driver.clone(),
                internal: n.internal,
                attachable: n.attachable,
                labels: resource_labels(&stack.name, key, &n.labels),
                external: n.external,
                options: n.driver_opts.clone(),
                enable_ipv6: n.enable_ipv6,
                ipam: n.ipam.clone(),
            }
        })
        .collect()
}

/// The named volumes `services` mount: a per-replica volume once per current ordinal.
pub fn volumes(stack: &Stack, services: &[&Service]) -> Vec<ResourceConfig> {
    let mut keys: Vec<(String, String)> = services
        .iter()
        .flat_map(|s| {
            s.spec
                .volumes
                .iter()
                .filter(|m| m.kind == MountKind::Volume)
                .filter_map(|m| m.source.clone())
                .flat_map(|source| {
                    let ordinals = match stateful::is_per_replica(&source) {
                        true => 1..=s.spec.replicas,
                        false => 1..=1,
                    };
                    let replica = move |n| (source.clone(), stateful::replica_volume(&source, n));
                    ordinals.map(replica)
                })
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|(declared, key)| {
            let v: VolumeSpec = stack.volumes.get(declared).cloned().unwrap_or_default();
            ResourceConfig {
                name: v.engine_name(&stack.name, key),
                driver: v.driver.clone(),
                internal: false,
                attachable: false,
                labels: resource_labels(&stack.name, key, &v.labels),
                external: v.external,
                options: v.driver_opts.clone(),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_or_volume_device_that_became_a_symlink_to_root_is_refused_and_a_plain_folder_is_not()
    {
        let dir = std::env::temp_dir().join(format!("capstan-binds-{}", std::process::id()));
        let (plain, link) = (dir.join("plain"), dir.join("link"));
        std::fs::create_dir_all(&plain).unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/", &link).unwrap();
        let policy =
            capstan_api::policy::Policy::from_yaml(&format!("bind_mounts: [{}]", dir.display()))
                .unwrap();
        let with_bind = |source: &std::path::Path| {
            let mut svc = Service::default();
            svc.spec.volumes = vec![capstan_api::spec::MountSpec::plain(
                capstan_api::spec::MountKind::Bind,
                Some(source.display().to_string()),
                "/data",
                false,
            )];
            bind_refused(&Stack::default(), &svc, &policy)
        };
        let with_volume = |device: &std::path::Path| {
            let (stack, services) = objects(&format!(
                "services: {{web: {{image: x, volumes: ['v:/data']}}}}\n\
                 volumes: {{v: {{driver_opts: {{type: none, o: bind, device: {}}}}}}}",
                device.display()
            ));
            bind_refused(&stack, &services[0], &policy)
        };
        assert!(with_bind(&plain).is_none());
        assert!(with_volume(&plain).is_none());
        assert!(
            with_bind(&dir.join("missing")).is_none(),
            "left to the engine"
        );
        let refused = with_bind(&link).expect("refused").to_string();
        assert!(refused.contains("now resolves to /, and"), "{refused}");
        let refused = with_volume(&link)
            .expect("a volume's device too")
            .to_string();
        assert!(refused.contains("now resolves to /, and"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    use capstan_api::parse_stack;

    fn objects(text: &str) -> (Stack, Vec<Service>) {
        let spec = parse_stack("shop", text).unwrap();
        let stack = Stack {
            name: "shop".into(),
            networks: spec.networks.clone(),
            volumes: spec.volumes.clone(),
            services: spec.services.keys().cloned().collect(),
            ..Default::default()
        };
        let services = spec
            .services
            .into_iter()
            .map(|(name, spec)| Service {
                stack: "shop".into(),
                name,
                spec,
                ..Default::default()
            })
            .collect();
        (stack, services)
    }

    #[test]
    fn a_replica_is_named_labelled_and_aliased_by_its_service() {
        let (stack, services) = objects("services: {web: {image: w, networks: {front: {aliases: [www]}}, ports: [\"8080-8082:80\"], scale: 3}}\nnetworks: {front: {}}");
        let c = container(&stack, &services[0], 2);
        assert_eq!(c.name, "shop-web-2");
        assert_eq!(c.labels["capstan.replica"], "2");
        assert_eq!(
            c.labels["capstan.spec-hash"],
            services[0].spec.container_hash()
        );
        assert_eq!(
            c.networks,
            vec![(
                "shop_front".to_string(),
                vec!["web".to_string(), "www".to_string()]
            )]
        );
        assert_eq!(c.ports[0].host_port, Some(8081));
    }

    #[test]
    fn named_volumes_and_networks_get_stack_scoped_names_unless_external() {
        let (stack, services) = objects(
            "services: {db: {image: d, volumes: [\"data:/d\", \"ext:/e\"], networks: [back, shared]}}\nvolumes: {data: {}, ext: {external: true}}\nnetworks: {back: {}, shared: {external: true}}",
        );
        let refs: Vec<&Service> = services.iter().collect();
        let vols = volumes(&stack, &refs);
        assert_eq!(
            vols.iter()
                .map(|v| (v.name.as_str(), v.external))
                .collect::<Vec<_>>(),
            vec![("shop_data", false), ("ext", true)]
        );
        let nets = networks(&stack, &refs);
        assert_eq!(
            nets.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            vec!["shop_back", "shared"]
        );
        assert_eq!(nets[0].labels["capstan.stack"], "shop");
    }

    #[test]
    fn each_replica_mounts_its_own_per_replica_volume_and_each_is_created() {
        let (stack, services) = objects(
            "services: {db: {image: d, scale: 3, volumes: [\"data-{{replica}}:/d\", \"logs:/l:ro\"]}}\nvolumes: {\"data-{{replica}}\": {labels: {tier: db}}, logs: {}}",
        );
        let names: Vec<String> = volumes(&stack, &[&services[0]])
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(
            names,
            vec!["shop_data-1", "shop_data-2", "shop_data-3", "shop_logs"]
        );
        let c = container(&stack, &services[0], 2);
        let Mount::Volume { name, .. } = &c.mounts[0] else {
            panic!("{:?}", c.mounts[0]);
        };
        assert_eq!(name, "shop_data-2");
    }

    #[test]
    fn the_default_network_is_stack_scoped() {
        let (stack, services) = objects("services: {web: {image: w}}");
        assert_eq!(networks(&stack, &[&services[0]])[0].name, "shop_default");
    }
}
