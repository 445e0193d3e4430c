//! A service's `ports`, short and long syntax.

use super::yaml::Value;
use super::{join, kind, Parser};
use crate::spec::*;

impl Parser {
    pub(super) fn ports(&mut self, path: &str, v: &Value) -> Vec<PortSpec> {
        let Some(items) = v.as_sequence() else {
            self.err(path, format!("must be a list, got {}", kind(v)));
            return vec![];
        };
        let mut out = vec![];
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            if item.is_mapping() {
                if let Some(p) = self.long_port(&field, item) {
                    out.push(p);
                }
                continue;
            }
            let Some(text) = self.string(&field, item) else {
                continue;
            };
            match parse_port(&text) {
                Ok(p) => out.push(p),
                Err(reason) => self.err(field, reason),
            }
        }
        out
    }

    /// `{target, published, host_ip, protocol, mode}`.
    pub(super) fn long_port(&mut self, path: &str, v: &Value) -> Option<PortSpec> {
        let mut target = None;
        let mut published = None;
        let mut host_ip = None;
        let mut protocol = "tcp".to_string();
        let mut mode = PortMode::Ingress;
        for (key, val) in self.map(
            path,
            v,
            &["target", "published", "host_ip", "protocol", "mode"],
        ) {
            let field = join(path, &key);
            match key.as_str() {
                "target" => target = self.string(&field, val),
                "published" => published = self.string(&field, val),
                "host_ip" => host_ip = self.string(&field, val),
                "protocol" => protocol = self.string(&field, val).unwrap_or_default(),
                "mode" => match self.string(&field, val).as_deref() {
                    Some("ingress") => mode = PortMode::Ingress,
                    Some("host") => mode = PortMode::Host,
                    Some(other) => self.err(
                        &field,
                        format!("{other:?} is not a port mode: use ingress or host"),
                    ),
                    None => {}
                },
                _ => unreachable!(),
            }
        }
        let Some(target) = target else {
            self.err(join(path, "target"), "is required");
            return None;
        };
        let mut short = match (&host_ip, &published) {
            (Some(ip), Some(p)) => format!("{ip}:{p}:{target}"),
            (None, Some(p)) => format!("{p}:{target}"),
            _ => target,
        };
        short.push('/');
        short.push_str(&protocol);
        match parse_port(&short) {
            Ok(p) => {
                let p = PortSpec { mode, ..p };
                let (proxy, proxy_protocol) = self.proxy_extensions(path, v, &p);
                Some(PortSpec {
                    proxy,
                    proxy_protocol,
                    ..p
                })
            }
            Err(reason) => {
                self.err(path, reason);
                None
            }
        }
    }

    /// `x-capstan-proxy` and `x-capstan-proxy-protocol` of a long-syntax port (Compose
    /// ignores `x-` keys, so the file keeps its meaning there): whether capstan's proxy
    /// serves the port, and whether it passes the client's address on. A PROXY protocol
    /// needs the proxy, so it implies it.
    fn proxy_extensions(
        &mut self,
        path: &str,
        v: &Value,
        port: &PortSpec,
    ) -> (Option<bool>, Option<ProxyProtocol>) {
        let (proxy_key, protocol_key) = ("x-capstan-proxy", "x-capstan-proxy-protocol");
        let proxy = v.get(proxy_key).map(|val| {
            let field = join(path, proxy_key);
            self.bool(&field, val)
        });
        let protocol_field = join(path, protocol_key);
        let protocol = match v.get(protocol_key) {
            None => None,
            Some(val) => match self.string(&protocol_field, val).as_deref() {
                Some("v1") => Some(ProxyProtocol::V1),
                Some("v2") => Some(ProxyProtocol::V2),
                Some(other) => {
                    self.err(&protocol_field, format!("{other:?} is not a PROXY protocol version: use v1 (text) or v2 (binary)"));
                    None
                }
                None => None,
            },
        };
        if protocol.is_some() && proxy == Some(false) {
            self.err(&protocol_field, "the PROXY protocol is spoken by capstan's proxy, and `x-capstan-proxy: false` leaves this port to the engine; remove one of them");
        }
        if protocol.is_some() || proxy == Some(true) {
            let field = if protocol.is_some() {
                protocol_field
            } else {
                join(path, proxy_key)
            };
            if let Some(reason) = unproxiable(port) {
                self.err(
                    field,
                    format!("capstan's proxy cannot serve this port: {reason}"),
                );
            }
        }
        (proxy, protocol)
    }
}

/// Why capstan's proxy cannot serve `port`, if it cannot.
fn unproxiable(port: &PortSpec) -> Option<&'static str> {
    if port.mode == PortMode::Host {
        Some("`mode: host` has the engine publish it")
    } else if port.protocol != "tcp" {
        Some("it relays TCP only")
    } else if port.host_port_count() != Some(1) {
        Some("it listens on one fixed host port (`published`), not a range or a port the engine picks")
    } else {
        None
    }
}

fn parse_port_number(text: &str, what: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{what} {text:?} is not a port from 1 to 65535")),
    }
}

/// `[host_ip:][host_port[-end]:]container_port[/protocol]`
fn parse_port(text: &str) -> Result<PortSpec, String> {
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((rest, proto)) if proto == "tcp" || proto == "udp" => (rest, proto.to_string()),
        Some((_, proto)) => return Err(format!("protocol {proto:?} is not tcp or udp")),
        None => (text, "tcp".to_string()),
    };
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c] => (*c, None, None),
        [c, h] => (*c, Some(*h), None),
        [c, h, ip] => (*c, Some(*h), Some(ip.trim_matches(['[', ']']).to_string())),
        _ => unreachable!(),
    };
    if let Some(ip) = ip.as_deref().filter(|ip| !ip.is_empty()) {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "host IP {ip:?} is not an IP address (the port would not bind what the file says)"
            ));
        }
    }
    if container.contains('-') {
        return Err(format!("container port ranges ({container:?}) are not supported; map one container port per entry"));
    }
    let container_port = parse_port_number(container, "container port")?;
    let host_ports = match host {
        None | Some("") => None,
        Some(h) => match h.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    parse_port_number(a, "host port")?,
                    parse_port_number(b, "host port")?,
                );
                if b < a {
                    return Err(format!("host port range {h:?} ends before it starts"));
                }
                Some((a, b))
            }
            None => {
                let p = parse_port_number(h, "host port")?;
                Some((p, p))
            }
        },
    };
    Ok(PortSpec {
        host_ip: ip.filter(|ip| !ip.is_empty()),
        host_ports,
        container_port,
        protocol,
        mode: PortMode::Ingress,
        proxy: None,
        proxy_protocol: None,
    })
}
#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn ports_parse_in_their_short_forms() {
        let p = parse_port("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (
                p.host_ip.as_deref(),
                p.host_ports,
                p.container_port,
                p.protocol.as_str()
            ),
            (Some("127.0.0.1"), Some((8080, 8080)), 80, "udp")
        );
        assert_eq!(parse_port("80").unwrap().host_ports, None);
        assert_eq!(
            parse_port("8080-8082:80").unwrap().host_ports,
            Some((8080, 8082))
        );
        assert!(parse_port("80-81")
            .unwrap_err()
            .contains("container port ranges"));
        assert!(parse_port("8082-8080:80")
            .unwrap_err()
            .contains("ends before"));
    }

    #[test]
    fn a_fixed_host_port_on_several_replicas_is_proxied_unless_published_in_host_mode() {
        let spec = parse_stack(
            "s",
            "services: {web: {image: x, ports: [\"8080:80\"], deploy: {replicas: 3}}}",
        )
        .unwrap();
        assert!(spec.services["web"].ports[0].proxied(3));
        let errs = errors("services: {web: {image: x, ports: [{target: 80, published: 8080, mode: host}], deploy: {replicas: 3}}}");
        assert_eq!(errs[0].field, "services.web.ports[0]");
        assert!(
            errs[0].reason.contains("8080-8082:80"),
            "{}",
            errs[0].reason
        );
        let errs =
            errors("services: {web: {image: x, ports: [\"8080-8081:80\"], deploy: {replicas: 3}}}");
        assert!(
            errs[0].reason.contains("2 host ports"),
            "{}",
            errs[0].reason
        );
        let errs =
            errors("services: {web: {image: x, ports: [\"8080:80/udp\"], deploy: {replicas: 2}}}");
        assert_eq!(
            errs[0].field, "services.web.ports[0]",
            "UDP is never proxied"
        );
    }

    #[test]
    fn a_host_ip_that_is_not_an_ip_is_a_field_error() {
        for bad in [
            "${BIND_IP:-127.0.0.1}:8080:80",
            "localhost:8080:80",
            "300.1.1.1:8080:80",
        ] {
            let errs = errors(&format!(
                "services: {{web: {{image: x, ports: [{bad:?}]}}}}"
            ));
            assert_eq!(errs[0].field, "services.web.ports[0]", "{bad}");
            assert!(errs[0].reason.contains("not an IP address"), "{bad}");
        }
        let errs = errors(
            "services: {web: {image: x, ports: [{target: 80, published: 8080, host_ip: my-host}]}}",
        );
        assert_eq!(errs[0].field, "services.web.ports[0]");
        let spec = parse_stack(
            "s",
            "services: {web: {image: x, ports: ['[::1]:8080:80', '127.0.0.1:8081:80']}}",
        )
        .unwrap();
        assert_eq!(
            spec.services["web"].ports[0].host_ip.as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn the_long_port_syntax_is_read() {
        let spec = parse_stack("s", "services: {web: {image: x, ports: [{target: 80, published: \"8080\", host_ip: 127.0.0.1, protocol: tcp, mode: host}]}}").unwrap();
        let p = &spec.services["web"].ports[0];
        assert_eq!(
            (p.host_ip.as_deref(), p.host_ports, p.container_port, p.mode),
            (Some("127.0.0.1"), Some((8080, 8080)), 80, PortMode::Host)
        );
        assert_eq!(
            fields("services: {web: {image: x, ports: [{published: 8080}]}}"),
            vec!["services.web.ports[0].target"]
        );
    }

    #[test]
    fn two_services_cannot_publish_the_same_host_port() {
        let f = fields("services: {a: {image: x, ports: [\"8080:80\"]}, b: {image: x, ports: [\"8079-8081:80\"], scale: 3}}");
        assert_eq!(f, vec!["services.b.ports[0]"]);
    }

    #[test]
    fn a_long_syntax_port_opts_into_the_proxy_and_its_protocol_with_extension_fields() {
        let spec = parse_stack(
            "s",
            "services: {web: {image: x, ports: [{target: 80, published: 8080, x-capstan-proxy: true}, {target: 443, published: 8443, x-capstan-proxy-protocol: v2}, {target: 81, published: 8081, x-capstan-proxy-protocol: v1, x-capstan-proxy: 'true'}]}}",
        )
        .unwrap();
        let ports = &spec.services["web"].ports;
        assert_eq!(ports[0].serving(1), Serving::Proxy(None));
        assert_eq!(ports[1].serving(1), Serving::Proxy(Some(ProxyProtocol::V2)));
        assert_eq!(ports[2].serving(1), Serving::Proxy(Some(ProxyProtocol::V1)));
        let other = parse_stack(
            "s",
            "services: {web: {image: x, ports: [{target: 80, published: 8080, x-other: 1}]}}",
        )
        .unwrap();
        assert_eq!(
            other.services["web"].ports[0].proxy, None,
            "other x- keys mean nothing"
        );
    }

    #[test]
    fn a_bad_proxy_extension_is_a_field_error_naming_it() {
        let cases = [
            ("{target: 80, published: 8080, x-capstan-proxy-protocol: v3}", "x-capstan-proxy-protocol", "v1 (text) or v2"),
            ("{target: 80, published: 8080, x-capstan-proxy: maybe}", "x-capstan-proxy", "true or false"),
            ("{target: 80, published: 8080, x-capstan-proxy: false, x-capstan-proxy-protocol: v1}", "x-capstan-proxy-protocol", "remove one"),
            ("{target: 80, published: 8080, mode: host, x-capstan-proxy: true}", "x-capstan-proxy", "mode: host"),
            ("{target: 53, published: 53, protocol: udp, x-capstan-proxy-protocol: v1}", "x-capstan-proxy-protocol", "TCP only"),
            ("{target: 80, published: 8080-8081, x-capstan-proxy: true}", "x-capstan-proxy", "one fixed host port"),
            ("{target: 80, x-capstan-proxy: true}", "x-capstan-proxy", "one fixed host port"),
        ];
        for (port, key, why) in cases {
            let errs = errors(&format!("services: {{web: {{image: x, ports: [{port}]}}}}"));
            assert_eq!(errs.len(), 1, "{port}: {errs:?}");
            assert_eq!(
                errs[0].field,
                format!("services.web.ports[0].{key}"),
                "{port}"
            );
            assert!(errs[0].reason.contains(why), "{port}: {}", errs[0].reason);
        }
    }
}
