//! Where capstan deliberately gives a Compose file another meaning than `docker compose up`
//! does, said once per difference with the services it affects (printed by `capstan apply`);
//! and, since that is where the two may part, which way each fixed host port is served.

use crate::spec::{PortSpec, Serving, StackSpec};
use std::collections::BTreeMap;

/// One line per deliberate difference that applies to this stack, then one per way its
/// fixed host ports are served.
pub fn notices(spec: &StackSpec) -> Vec<String> {
    let mut out = vec![];
    let no_restart: Vec<&str> = spec
        .services
        .iter()
        .filter(|(_, s)| s.restart.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    if !no_restart.is_empty() {
        out.push(format!(
            "restart: capstan restarts containers that stop ({}), where Compose's default is \
             \"no\"; set `restart: \"no\"` to keep Compose's behaviour",
            no_restart.join(", ")
        ));
    }
    out.extend(port_notices(spec));
    out
}

/// Which way each fixed host port is served, one line per way, naming the ports.
fn port_notices(spec: &StackSpec) -> Vec<String> {
    let mut by_way: BTreeMap<Serving, Vec<String>> = BTreeMap::new();
    for (name, svc) in &spec.services {
        for p in svc.ports.iter().filter(|p| p.host_ports.is_some()) {
            let way = p.serving(svc.replicas);
            by_way
                .entry(way)
                .or_default()
                .push(format!("{name} {}", label(p)));
        }
    }
    by_way
        .into_iter()
        .map(|(way, ports)| {
            let advice = match way {
                Serving::Engine => "; more replicas on one port need `x-capstan-proxy: true` on it (long syntax)",
                Serving::Proxy(None) => "; add `x-capstan-proxy-protocol: v1` or `v2` to the port to pass the client's address on",
                Serving::Proxy(Some(_)) => "",
            };
            format!("ports: {} ({}){advice}", way.describe(), ports.join(", "))
        })
        .collect()
}

/// A host port as the file wrote it: `8080`, `8080-8082`, `53/udp`.
fn label(p: &PortSpec) -> String {
    let (start, end) = p.host_ports.unwrap_or_default();
    let mut out = start.to_string();
    if end != start {
        out.push_str(&format!("-{end}"));
    }
    if p.protocol != "tcp" {
        out.push_str(&format!("/{}", p.protocol));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_stack;

    #[test]
    fn each_deliberate_difference_is_said_once_naming_the_services() {
        let spec = parse_stack(
            "s",
            "services: {web: {image: x, ports: ['8080:80', '9090:90'], scale: 2}, db: {image: x, restart: 'no'}, job: {image: x}}",
        )
        .unwrap();
        let n = notices(&spec);
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n[0].contains("(job, web)"), "{}", n[0]);
        assert!(n[1].contains("web 8080, web 9090"), "{}", n[1]);
        let quiet = parse_stack(
            "s",
            "services: {db: {image: x, restart: always, ports: ['5432']}}",
        )
        .unwrap();
        assert!(notices(&quiet).is_empty());
    }

    #[test]
    fn the_notices_say_which_way_each_fixed_host_port_is_served() {
        let spec = parse_stack(
            "s",
            "services:
  one: {image: x, restart: always, ports: ['8080:80', '8081-8082:81', '53:53/udp']}
  many: {image: x, restart: always, scale: 3, ports: ['9090:80']}
  lb:
    image: x
    restart: always
    ports:
      - {target: 443, published: 443, x-capstan-proxy-protocol: v2}
      - {target: 80, published: 80, x-capstan-proxy: true}
",
        )
        .unwrap();
        let n = notices(&spec);
        assert_eq!(n.len(), 3, "{n:?}");
        assert!(
            n[0].starts_with("ports: published by the engine, the client's address kept (one 8080, one 8081-8082, one 53/udp)"),
            "{}",
            n[0]
        );
        assert!(
            n[1].contains("served by capstan's proxy, balanced over the replicas, which see the proxy's address (lb 80, many 9090)"),
            "{}",
            n[1]
        );
        assert!(n[1].contains("x-capstan-proxy-protocol"), "{}", n[1]);
        assert!(n[2].contains("PROXY protocol v2 (lb 443)"), "{}", n[2]);
    }
}
