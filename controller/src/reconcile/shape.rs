//! The engine objects a spec turns into: containers, networks, volumes. Pure.

use capstan_api::names;
use capstan_api::object::{Service, Stack};
use capstan_api::spec::{MountKind, NetworkSpec, VolumeSpec};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::runtime::{ContainerPlan, Mount, PortBinding, ResourcePlan};

pub fn grace(svc: &Service) -> Duration {
    svc.spec.stop_grace()
}

fn network_spec<'a>(stack: &'a Stack, key: &str) -> std::borrow::Cow<'a, NetworkSpec> {
    stack.networks.get(key).map_or_else(
        || std::borrow::Cow::Owned(NetworkSpec::default()),
        std::borrow::Cow::Borrowed,
    )
}

/// Replica `ordinal` of `svc`.
pub fn container(stack: &Stack, svc: &Service, ordinal: u32) -> ContainerPlan {
    let spec = &svc.spec;
    let name = names::container(&stack.name, &svc.name, ordinal);
    let mut labels = spec.labels.clone();
    labels.insert(names::STACK.into(), stack.name.clone());
    labels.insert(names::SERVICE.into(), svc.name.clone());
    labels.insert(names::REPLICA.into(), ordinal.to_string());
    labels.insert(names::SPEC_HASH.into(), spec.container_hash());
    let networks = spec
        .networks
        .iter()
        .map(|(key, sn)| {
            let mut aliases = vec![svc.name.clone()];
            aliases.extend(sn.aliases.iter().cloned());
            (
                network_spec(stack, key).engine_name(&stack.name, key),
                aliases,
            )
        })
        .collect();
    // A proxied port is the proxy's to publish: the replicas only listen on their own address.
    let ports = spec
        .ports
        .iter()
        .filter(|p| !p.proxied())
        .map(|p| PortBinding {
            container_port: p.container_port,
            protocol: p.protocol.clone(),
            host_ip: p.host_ip.clone(),
            host_port: p.host_port_for(ordinal),
        })
        .collect();
    let mounts = spec
        .volumes
        .iter()
        .map(|m| {
            let source = m.source.clone().unwrap_or_default();
            match m.kind {
                MountKind::Volume => {
                    let vs = stack.volumes.get(&source).cloned().unwrap_or_default();
                    Mount::Volume {
                        name: vs.engine_name(&stack.name, &source),
                        target: m.target.clone(),
                        read_only: m.read_only,
                    }
                }
                MountKind::Bind => Mount::Bind {
                    source,
                    target: m.target.clone(),
                    read_only: m.read_only,
                },
                MountKind::Anonymous => Mount::Anonymous {
                    target: m.target.clone(),
                },
            }
        })
        .collect();
    ContainerPlan {
        hostname: name.clone(),
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
        mounts,
        healthcheck: spec.healthcheck.clone(),
        stop_grace: grace(svc),
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
pub fn networks(stack: &Stack, services: &[&Service]) -> Vec<ResourcePlan> {
    let mut keys: Vec<String> = services
        .iter()
        .flat_map(|s| s.spec.networks.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|key| {
            let n = network_spec(stack, key);
            ResourcePlan {
                name: n.engine_name(&stack.name, key),
                driver: n.driver.clone(),
                internal: n.internal,
                attachable: n.attachable,
                labels: resource_labels(&stack.name, key, &n.labels),
                external: n.external,
            }
        })
        .collect()
}

/// The named volumes `services` mount.
pub fn volumes(stack: &Stack, services: &[&Service]) -> Vec<ResourcePlan> {
    let mut keys: Vec<String> = services
        .iter()
        .flat_map(|s| {
            s.spec
                .volumes
                .iter()
                .filter(|m| m.kind == MountKind::Volume)
                .filter_map(|m| m.source.clone())
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|key| {
            let v: VolumeSpec = stack.volumes.get(key).cloned().unwrap_or_default();
            ResourcePlan {
                name: v.engine_name(&stack.name, key),
                driver: v.driver.clone(),
                internal: false,
                attachable: false,
                labels: resource_labels(&stack.name, key, &v.labels),
                external: v.external,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn the_default_network_is_stack_scoped() {
        let (stack, services) = objects("services: {web: {image: w}}");
        assert_eq!(networks(&stack, &[&services[0]])[0].name, "shop_default");
    }
}
