//! Traefik's dynamic configuration from capstan's endpoints: the HTTP provider's JSON, and
//! the etcd KV layout (`<root>/http/services/<svc>/loadbalancer/servers/<i>/url`).
//!
//! A service is named `<stack>-<service>` in Traefik. Routers come from the service's
//! `traefik.http.routers.<name>.<option>` labels; a router that names no service gets this
//! one. The backend port is `traefik.http.services.<name>.loadbalancer.server.port`, else the
//! first container port the service publishes, else 80. `traefik.enable=false` leaves the
//! service out.

use capstan_api::object::{Endpoints, Service};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub fn service_name(svc: &Service) -> String {
    format!("{}-{}", svc.stack, svc.name)
}

fn enabled(svc: &Service) -> bool {
    svc.spec
        .labels
        .get("traefik.enable")
        .is_none_or(|v| v != "false")
}

fn port(svc: &Service) -> u16 {
    svc.spec
        .labels
        .iter()
        .find(|(k, _)| {
            k.starts_with("traefik.http.services.") && k.ends_with(".loadbalancer.server.port")
        })
        .and_then(|(_, v)| v.parse().ok())
        .or_else(|| svc.spec.ports.first().map(|p| p.container_port))
        .unwrap_or(80)
}

/// The URLs of the ready replicas.
pub fn server_urls(svc: &Service, endpoints: Option<&Endpoints>) -> Vec<String> {
    let port = port(svc);
    endpoints
        .map(|e| {
            e.endpoints
                .iter()
                .filter_map(|ep| ep.addresses.values().next())
                .map(|ip| format!("http://{ip}:{port}"))
                .collect()
        })
        .unwrap_or_default()
}

/// Router name → option → value, from the labels.
fn routers(svc: &Service) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in &svc.spec.labels {
        if let Some(rest) = k.strip_prefix("traefik.http.routers.") {
            if let Some((name, option)) = rest.split_once('.') {
                out.entry(name.to_string())
                    .or_default()
                    .insert(option.to_string(), v.clone());
            }
        }
    }
    for opts in out.values_mut() {
        opts.entry("service".into())
            .or_insert_with(|| service_name(svc));
    }
    out
}

/// The HTTP provider's dynamic configuration for every service.
pub fn dynamic_config(services: &[(&Service, Option<&Endpoints>)]) -> Value {
    let mut routers_json = Map::new();
    let mut services_json = Map::new();
    for (svc, endpoints) in services.iter().filter(|(s, _)| enabled(s)) {
        let servers: Vec<Value> = server_urls(svc, *endpoints)
            .into_iter()
            .map(|url| json!({ "url": url }))
            .collect();
        services_json.insert(
            service_name(svc),
            json!({ "loadBalancer": { "servers": servers } }),
        );
        for (name, opts) in routers(svc) {
            let mut r = Map::new();
            for (option, value) in opts {
                // Options that Traefik takes as lists.
                let v = if matches!(option.as_str(), "entrypoints" | "middlewares") {
                    json!(value.split(',').map(str::trim).collect::<Vec<_>>())
                } else {
                    json!(value)
                };
                r.insert(
                    if option == "entrypoints" {
                        "entryPoints".into()
                    } else {
                        option
                    },
                    v,
                );
            }
            routers_json.insert(name, Value::Object(r));
        }
    }
    json!({ "http": { "routers": routers_json, "services": services_json } })
}

/// Where one service's keys live under `root`: `<root>/http/services/<stack>-<service>/`.
pub fn service_prefix(root: &str, stack: &str, service: &str) -> String {
    format!(
        "{}/http/services/{stack}-{service}/",
        root.trim_end_matches('/')
    )
}

/// The KV pairs of one service under `root`, to replace `<root>/http/services/<svc>/` (and its
/// routers) in one transaction.
pub fn kv_pairs(
    root: &str,
    svc: &Service,
    endpoints: Option<&Endpoints>,
) -> (String, Vec<(String, String)>) {
    let prefix = service_prefix(root, &svc.stack, &svc.name);
    let mut pairs: Vec<(String, String)> = server_urls(svc, endpoints)
        .into_iter()
        .enumerate()
        .map(|(i, url)| (format!("{prefix}loadbalancer/servers/{i}/url"), url))
        .collect();
    if !enabled(svc) {
        pairs.clear();
    }
    (prefix, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::object::Endpoint;
    use capstan_api::spec::ServiceSpec;

    fn svc(name: &str, labels: &[(&str, &str)]) -> Service {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Service {
            stack: "shop".into(),
            name: name.into(),
            spec: ServiceSpec {
                image: "x".into(),
                replicas: 2,
                labels,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn eps(ips: &[&str]) -> Endpoints {
        Endpoints {
            stack: "shop".into(),
            service: "web".into(),
            endpoints: ips
                .iter()
                .enumerate()
                .map(|(i, ip)| Endpoint {
                    replica: format!("r{i}"),
                    ordinal: i as u32 + 1,
                    addresses: [("shop_default".to_string(), ip.to_string())].into(),
                    ports: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn routers_come_from_labels_and_services_from_ready_endpoints() {
        let web = svc(
            "web",
            &[
                ("traefik.http.routers.web.rule", "Host(`web.localhost`)"),
                ("traefik.http.routers.web.entrypoints", "web"),
            ],
        );
        let api = svc(
            "api",
            &[("traefik.http.services.x.loadbalancer.server.port", "8080")],
        );
        let (we, ae) = (eps(&["172.20.0.2", "172.20.0.3"]), eps(&["172.20.0.4"]));
        let cfg = dynamic_config(&[(&web, Some(&we)), (&api, Some(&ae))]);
        assert_eq!(
            cfg["http"]["routers"]["web"],
            json!({"rule": "Host(`web.localhost`)", "entryPoints": ["web"], "service": "shop-web"})
        );
        assert_eq!(
            cfg["http"]["services"]["shop-web"]["loadBalancer"]["servers"],
            json!([{"url": "http://172.20.0.2:80"}, {"url": "http://172.20.0.3:80"}])
        );
        assert_eq!(
            cfg["http"]["services"]["shop-api"]["loadBalancer"]["servers"],
            json!([{"url": "http://172.20.0.4:8080"}])
        );
    }

    #[test]
    fn the_kv_layout_lists_one_url_per_server() {
        let web = svc("web", &[]);
        let (prefix, pairs) = kv_pairs("traefik", &web, Some(&eps(&["10.0.0.1", "10.0.0.2"])));
        assert_eq!(prefix, "traefik/http/services/shop-web/");
        assert_eq!(
            pairs[1],
            (
                "traefik/http/services/shop-web/loadbalancer/servers/1/url".to_string(),
                "http://10.0.0.2:80".to_string()
            )
        );
        let off = svc("web", &[("traefik.enable", "false")]);
        assert!(kv_pairs("traefik", &off, Some(&eps(&["10.0.0.1"])))
            .1
            .is_empty());
    }
}
