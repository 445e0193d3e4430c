//! Which replicas receive traffic: running and ready ones, minus those about to leave.

use capstan_api::object::{Endpoint, EndpointPort, Endpoints, Service};
use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::runtime::Observed;

/// The endpoints of `service` among `observed`, leaving out the container IDs in `leaving`
/// (replicas about to be stopped: they are deregistered first).
pub fn compute(service: &Service, observed: &[Observed], leaving: &BTreeSet<String>) -> Endpoints {
    let mut endpoints: Vec<Endpoint> = observed
        .iter()
        .filter(|c| c.is_ready() && !leaving.contains(&c.id))
        .filter_map(|c| {
            let ordinal = c.ordinal.filter(|_| service.spec.is_current(c.ordinal))?;
            Some(Endpoint {
                replica: c.name.clone(),
                ordinal,
                addresses: c.addresses.clone(),
                ports: service
                    .spec
                    .ports
                    .iter()
                    .map(|p| EndpointPort {
                        container_port: p.container_port,
                        protocol: p.protocol.clone(),
                        host_port: if p.proxied(service.spec.replicas) {
                            None
                        } else {
                            c.published
                                .get(&(p.container_port, p.protocol.clone()))
                                .copied()
                                .or(p.host_port_for(ordinal))
                        },
                    })
                    .collect(),
            })
        })
        .collect();
    endpoints.sort_by_key(|e| e.ordinal);
    Endpoints {
        stack: service.stack.clone(),
        service: service.name.clone(),
        endpoints,
    }
}

/// Where the proxy sends connections for `container_port`: one address per endpoint.
pub fn backends(endpoints: &Endpoints, container_port: u16) -> Vec<SocketAddr> {
    endpoints
        .endpoints
        .iter()
        .filter_map(|e| e.addresses.values().next()?.parse().ok())
        .map(|ip| SocketAddr::new(ip, container_port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Health, State};
    use capstan_api::spec::{PortMode, PortSpec, ServiceSpec};

    fn svc() -> Service {
        let port = PortSpec {
            host_ip: None,
            host_ports: Some((8080, 8080)),
            container_port: 80,
            protocol: "tcp".into(),
            mode: PortMode::Ingress,
            proxy: None,
            proxy_protocol: None,
        };
        Service {
            stack: "s".into(),
            name: "web".into(),
            spec: ServiceSpec {
                image: "x".into(),
                replicas: 3,
                ports: vec![port],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn obs(n: u32, health: Health) -> Observed {
        Observed {
            id: format!("id{n}"),
            name: format!("s-web-{n}"),
            stack: "s".into(),
            service: "web".into(),
            ordinal: Some(n),
            spec_hash: String::new(),
            state: State::Running,
            health,
            created: 0,
            addresses: [("s_default".to_string(), format!("172.20.0.{}", n + 1))].into(),
            published: Default::default(),
            partners: None,
        }
    }

    #[test]
    fn only_ready_replicas_that_are_not_leaving_are_endpoints() {
        let observed = [
            obs(1, Health::Healthy),
            obs(2, Health::Unhealthy),
            obs(3, Health::Healthy),
            obs(4, Health::Healthy),
        ];
        let e = compute(&svc(), &observed, &BTreeSet::from(["id3".to_string()]));
        assert_eq!(
            e.endpoints
                .iter()
                .map(|e| e.replica.as_str())
                .collect::<Vec<_>>(),
            vec!["s-web-1"],
            "2 is unhealthy, 3 leaving, 4 surplus"
        );
        assert_eq!(
            e.endpoints[0].ports[0].host_port, None,
            "a proxied port has no per-replica host port"
        );
        assert_eq!(backends(&e, 80), vec!["172.20.0.2:80".parse().unwrap()]);
    }
}
