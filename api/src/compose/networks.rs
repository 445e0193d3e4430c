//! Top-level `networks` and a service's `networks`.

use super::yaml::Value;
use super::{join, kind, Parser};
use crate::names;
use crate::spec::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

impl Parser {
    pub(super) fn networks(&mut self, v: &Value) -> BTreeMap<String, NetworkSpec> {
        let mut out = BTreeMap::new();
        if v.is_null() {
            return out;
        }
        for (name, nv) in self.map("networks", v, &[]) {
            let path = join("networks", &name);
            self.check_name(&path, "network key", &name, names::member_name);
            let mut n = NetworkSpec::default();
            if !nv.is_null() {
                for (key, val) in self.map(
                    &path,
                    nv,
                    &[
                        "driver",
                        "external",
                        "name",
                        "internal",
                        "attachable",
                        "labels",
                        "driver_opts",
                        "enable_ipv6",
                        "ipam",
                    ],
                ) {
                    let field = join(&path, &key);
                    match key.as_str() {
                        "driver" => n.driver = self.string(&field, val),
                        "external" => n.external = self.bool(&field, val),
                        "name" => n.name = self.engine_name(&field, "network name", val),
                        "internal" => n.internal = self.bool(&field, val),
                        "attachable" => n.attachable = self.bool(&field, val),
                        "labels" => n.labels = self.key_values(&field, val, "label"),
                        "driver_opts" => n.driver_opts = self.key_values(&field, val, "option"),
                        "enable_ipv6" => n.enable_ipv6 = Some(self.bool(&field, val)),
                        "ipam" => n.ipam = Some(self.ipam(&field, val)),
                        _ => unreachable!(),
                    }
                }
            }
            out.insert(name, n);
        }
        out
    }

    fn service_network(&mut self, path: &str, v: &Value, sn: &mut ServiceNetwork) {
        let keys = [
            "aliases",
            "ipv4_address",
            "ipv6_address",
            "link_local_ips",
            "priority",
        ];
        for (key, val) in self.map(path, v, &keys) {
            let field = join(path, &key);
            match key.as_str() {
                "aliases" => sn.aliases = self.words(&field, val).unwrap_or_default(),
                "ipv4_address" => sn.ipv4_address = self.address(&field, val, true),
                "ipv6_address" => sn.ipv6_address = self.address(&field, val, false),
                "link_local_ips" => {
                    for (i, ip) in self.strings(&field, val).into_iter().enumerate() {
                        if ip.parse::<IpAddr>().is_ok() {
                            sn.link_local_ips.push(ip);
                        } else {
                            self.err(
                                format!("{field}[{i}]"),
                                format!("{ip:?} is not an IP address"),
                            );
                        }
                    }
                }
                _ => sn.priority = self.integer(&field, val, i64::MIN, i64::MAX),
            }
        }
    }

    fn address(&mut self, path: &str, v: &Value, v4: bool) -> Option<String> {
        let text = self.string(path, v)?;
        let ok = if v4 {
            text.parse::<Ipv4Addr>().is_ok()
        } else {
            text.parse::<Ipv6Addr>().is_ok()
        };
        if !ok {
            self.err(
                path,
                format!("{text:?} is not an IPv{} address", if v4 { 4 } else { 6 }),
            );
            return None;
        }
        Some(text)
    }

    fn ipam(&mut self, path: &str, v: &Value) -> Ipam {
        let mut ipam = Ipam::default();
        for (key, val) in self.map(path, v, &["driver", "config", "options"]) {
            let field = join(path, &key);
            match key.as_str() {
                "driver" => ipam.driver = self.string(&field, val),
                "options" => ipam.options = self.key_values(&field, val, "option"),
                _ => {
                    let Some(items) = val.as_sequence() else {
                        self.err(&field, format!("must be a list, got {}", kind(val)));
                        continue;
                    };
                    for (i, item) in items.iter().enumerate() {
                        ipam.config
                            .push(self.ipam_pool(&format!("{field}[{i}]"), item));
                    }
                }
            }
        }
        ipam
    }

    fn ipam_pool(&mut self, path: &str, v: &Value) -> IpamPool {
        let mut pool = IpamPool::default();
        let keys = ["subnet", "gateway", "ip_range", "aux_addresses"];
        for (key, val) in self.map(path, v, &keys) {
            let field = join(path, &key);
            match key.as_str() {
                "subnet" => pool.subnet = self.cidr(&field, val),
                "ip_range" => pool.ip_range = self.cidr(&field, val),
                "gateway" => {
                    pool.gateway = self.string(&field, val).filter(|g| {
                        let ok = g.parse::<IpAddr>().is_ok();
                        if !ok {
                            self.err(&field, format!("{g:?} is not an IP address"));
                        }
                        ok
                    })
                }
                _ => pool.aux_addresses = self.key_values(&field, val, "address"),
            }
        }
        pool
    }

    /// `10.5.0.0/16`, `fd00::/64`.
    fn cidr(&mut self, path: &str, v: &Value) -> Option<String> {
        let text = self.string(path, v)?;
        let ok = match text.split_once('/') {
            Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            },
            None => false,
        };
        if !ok {
            self.err(
                path,
                format!("{text:?} is not a subnet in CIDR form (10.5.0.0/16)"),
            );
            return None;
        }
        Some(text)
    }

    pub(super) fn service_networks(
        &mut self,
        path: &str,
        v: &Value,
    ) -> BTreeMap<String, ServiceNetwork> {
        let mut out = BTreeMap::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(name) = self.string(&format!("{path}[{i}]"), item) {
                        out.insert(name, ServiceNetwork::default());
                    }
                }
            }
            Value::Mapping(_) => {
                for (name, nv) in self.map(path, v, &[]) {
                    let field = join(path, &name);
                    let mut sn = ServiceNetwork::default();
                    if !nv.is_null() {
                        self.service_network(&field, nv, &mut sn);
                    }
                    out.insert(name, sn);
                }
            }
            other => self.err(
                path,
                format!("must be a list or a map, got {}", kind(other)),
            ),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::spec::*;

    #[test]
    fn ipam_driver_options_and_fixed_addresses_parse() {
        let spec = parse_stack(
            "s",
            r#"
services:
  db:
    image: x
    networks:
      back: {ipv4_address: 10.5.0.10, ipv6_address: "fd00::10", link_local_ips: [169.254.8.8], priority: 10, aliases: [pg]}
networks:
  back:
    driver: bridge
    driver_opts: {com.docker.network.bridge.name: br-back}
    enable_ipv6: true
    ipam:
      driver: default
      config:
        - {subnet: 10.5.0.0/16, gateway: 10.5.0.1, ip_range: 10.5.1.0/24, aux_addresses: {router: 10.5.0.2}}
        - {subnet: "fd00::/64"}
      options: {foo: bar}
"#,
        )
        .unwrap();
        let back = &spec.networks["back"];
        assert_eq!(
            back.driver_opts["com.docker.network.bridge.name"],
            "br-back"
        );
        assert_eq!(back.enable_ipv6, Some(true));
        let ipam = back.ipam.as_ref().unwrap();
        assert_eq!(ipam.driver.as_deref(), Some("default"));
        assert_eq!(ipam.config[0].subnet.as_deref(), Some("10.5.0.0/16"));
        assert_eq!(ipam.config[0].gateway.as_deref(), Some("10.5.0.1"));
        assert_eq!(ipam.config[0].ip_range.as_deref(), Some("10.5.1.0/24"));
        assert_eq!(ipam.config[0].aux_addresses["router"], "10.5.0.2");
        assert_eq!(ipam.options["foo"], "bar");
        let sn = &spec.services["db"].networks["back"];
        assert_eq!(sn.ipv4_address.as_deref(), Some("10.5.0.10"));
        assert_eq!(sn.ipv6_address.as_deref(), Some("fd00::10"));
        assert_eq!(sn.link_local_ips, vec!["169.254.8.8"]);
        assert_eq!(sn.priority, Some(10));
        assert_eq!(sn.aliases, vec!["pg"]);
    }

    #[test]
    fn bad_addresses_and_addresses_without_a_subnet_are_field_errors() {
        let f = fields(
            r#"
services:
  a: {image: x, networks: {n: {ipv4_address: 10.0.0.300, ipv6_address: "10.0.0.1"}}}
  b: {image: x, networks: {plain: {ipv4_address: 10.0.0.5}}}
  c: {image: x, scale: 2, networks: {n: {ipv4_address: 10.0.0.6}}}
networks:
  n: {ipam: {config: [{subnet: 10.0.0.0/33, gateway: nope}, {subnet: 10.0.0.0/24}]}}
  plain: {}
"#,
        );
        assert_eq!(
            f,
            vec![
                "networks.n.ipam.config[0].subnet",
                "networks.n.ipam.config[0].gateway",
                "services.a.networks.n.ipv4_address",
                "services.a.networks.n.ipv6_address",
                "services.c.networks.n",
                "services.b.networks.plain",
            ]
        );
    }

    #[test]
    fn links_become_aliases_of_the_linked_service_and_a_dependency() {
        let spec = parse_stack(
            "s",
            "services: {app: {image: x, links: [\"db:database\", cache]}, db: {image: x}, cache: {image: x}}",
        )
        .unwrap();
        assert_eq!(
            spec.services["db"].networks["default"].aliases,
            vec!["database"]
        );
        assert!(spec.services["app"].depends_on.contains_key("db"));
        assert!(spec.services["app"].depends_on.contains_key("cache"));
        assert_eq!(
            fields("services: {app: {image: x, links: [nope, \"db:\"]}, db: {image: x}}"),
            vec!["services.app.links[1]", "services.app.links[0]"]
        );
    }

    #[test]
    fn network_mode_host_or_none_leaves_the_stack_networks() {
        let spec = parse_stack("s", "services: {a: {image: x, network_mode: host}}").unwrap();
        assert!(spec.services["a"].networks.is_empty());
        assert_eq!(
            spec.services["a"].options.network_mode,
            Some(NetworkMode::Host)
        );
        assert_eq!(
            fields("services: {a: {image: x, network_mode: none, networks: [default], ports: [\"80\"]}}"),
            vec!["services.a.network_mode", "services.a.ports"]
        );
    }

    #[test]
    fn container_name_allows_one_replica_and_must_be_unique() {
        assert_eq!(
            fields("services: {a: {image: x, container_name: cc, scale: 2}}"),
            vec!["services.a.container_name"]
        );
        assert_eq!(
            fields(
                "services: {a: {image: x, container_name: cc}, b: {image: x, container_name: cc}}"
            ),
            vec!["services.b.container_name"]
        );
    }

    #[test]
    fn network_keys_and_names_follow_the_one_naming_rule() {
        let long = "n".repeat(100);
        let errs = errors(&format!(
            r#"
services: {{web: {{image: x}}}}
networks:
  "../../x": {{}}
  "wéb": {{}}
  {long}: {{}}
  a: {{name: "a/b"}}
  b: {{name: "../../etc", external: true}}
  c: {{name: z}}
  ok: {{name: my-net.1}}
"#
        ));
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field.as_str(), e.reason.as_str()))
            .collect();
        let fields: Vec<&str> = got.iter().map(|(f, _)| *f).collect();
        let long_field = format!("networks.{long}");
        assert_eq!(
            fields,
            vec![
                "networks.../../x",
                "networks.wéb",
                long_field.as_str(),
                "networks.a.name",
                "networks.b.name",
                "networks.c.name",
            ]
        );
        assert!(
            got[0].1.contains("must start with a letter or digit"),
            "{}",
            got[0].1
        );
        assert!(got[1].1.contains("'é'"), "{}", got[1].1);
        assert!(
            got[2].1.contains("more than the 63 allowed"),
            "{}",
            got[2].1
        );
        assert!(got[3].1.contains("network name \"a/b\""), "{}", got[3].1);
        assert!(got[5].1.contains("at least two"), "{}", got[5].1);
    }

    #[test]
    fn a_hostname_or_domainname_the_kernel_would_refuse_is_a_field_error() {
        let long = "h".repeat(300);
        assert_eq!(
            fields(&format!(
                "services: {{a: {{image: x, hostname: {long}, domainname: -bad.org}}, b: {{image: x, hostname: 'web 1'}}, c: {{image: x, hostname: db-1, domainname: example.org}}}}"
            )),
            vec!["services.a.hostname", "services.a.domainname", "services.b.hostname"]
        );
    }
}
