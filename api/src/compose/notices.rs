//! Where capstan deliberately gives a Compose file another meaning than `docker compose up`
//! does, said once per difference with the services it affects (printed by `capstan apply`).

use crate::spec::StackSpec;

/// One line per deliberate difference that applies to this stack.
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
    let proxied: Vec<String> = spec
        .services
        .iter()
        .flat_map(|(n, s)| {
            s.ports.iter().filter(|p| p.proxied()).map(move |p| {
                let port = p.host_ports.map_or(0, |(start, _)| start);
                format!("{n} {port}")
            })
        })
        .collect();
    if !proxied.is_empty() {
        out.push(format!(
            "ports: fixed host ports are served by capstan's proxy, which balances them over \
             the replicas, not published by the engine ({}); use the long syntax with \
             `mode: host` to have the engine publish one",
            proxied.join(", ")
        ));
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
            "services: {web: {image: x, ports: ['8080:80', '9090:90']}, db: {image: x, restart: 'no'}, job: {image: x}}",
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
}
