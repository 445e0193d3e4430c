//! Sidecars: `network_mode: service:NAME | container:NAME` and `volumes_from`. Each names a
//! partner, resolved here once every service is read: replica n of the sidecar pairs with
//! replica n of its partner (or with the one replica a `container:` name gives), and a
//! sidecar paired replica by replica has as many replicas as its partner.

use super::{join, Parser};
use crate::names;
use crate::spec::*;
use std::collections::BTreeMap;

impl Parser {
    /// Resolves every partner, and sets each paired sidecar's replica count to its partner's.
    pub(super) fn pair_sidecars(&mut self, spec: &mut StackSpec) {
        let before = spec.clone();
        for (name, svc) in spec.services.iter_mut() {
            let path = join("services", name);
            let mode = svc.options.network_mode.as_mut();
            if let Some(NetworkMode::Partner(p)) = mode {
                self.resolve_partner(&before, name, &format!("{path}.network_mode"), p);
            }
            for (i, v) in svc.options.volumes_from.iter_mut().enumerate() {
                let field = format!("{path}.volumes_from[{i}]");
                self.resolve_partner(&before, name, &field, &mut v.partner);
            }
            self.follow_partner(&before, &path, svc);
        }
    }

    /// `p` names a service of the stack other than `sidecar`, and one that is not a sidecar
    /// itself; a `container:` name becomes that container's service (and replica).
    fn resolve_partner(&mut self, spec: &StackSpec, sidecar: &str, field: &str, p: &mut Partner) {
        if let Some(container) = &p.container {
            match owned_container(spec, container) {
                Some((service, replica)) => (p.service, p.replica) = (service, replica),
                None => {
                    self.err(field, format!("{container:?} is not a container of stack {}: capstan shares only the containers it makes (a service's container_name, or a replica's name such as {}-SERVICE-1)", spec.name, spec.name));
                    return;
                }
            }
        }
        let Some(partner) = spec.services.get(&p.service) else {
            self.err(
                field,
                format!("service {:?} is not in this stack", p.service),
            );
            return;
        };
        if p.service == sidecar {
            self.err(field, "a service cannot pair with itself");
        } else if let Some(theirs) = partner.partners().next() {
            self.err(
                field,
                format!(
                    "{} is a sidecar itself (of {}): name {} here instead",
                    p.service,
                    theirs.service,
                    theirs.describe()
                ),
            );
        }
    }

    /// A sidecar paired replica by replica runs one replica per replica of its first such
    /// partner: a count of its own must agree, the other partners must have as many, and
    /// since its count grows with the partner's, nothing of it may allow one replica only.
    fn follow_partner(&mut self, spec: &StackSpec, path: &str, svc: &mut ServiceSpec) {
        let Some(lead) = svc.lead_partner().map(|p| p.service.clone()) else {
            return;
        };
        let Some(count) = spec.services.get(&lead).map(|s| s.replicas) else {
            return;
        };
        let name = path.trim_start_matches("services.");
        if let Some(field) = self.counted.get(name).filter(|_| svc.replicas != count) {
            self.err(format!("{path}.{field}"), format!("a sidecar of {lead} runs one replica per replica of it ({count}); remove the count, or scale {lead}"));
        }
        for (i, v) in svc.options.volumes_from.iter().enumerate() {
            let theirs = spec
                .services
                .get(&v.partner.service)
                .map_or(count, |s| s.replicas);
            if v.partner.replica.is_none() && v.partner.service != lead && theirs != count {
                self.err(format!("{path}.volumes_from[{i}]"), format!("{} has {theirs} replicas and {lead} {count}; a sidecar pairs replica by replica with each", v.partner.service));
            }
        }
        svc.replicas = count;
        let mut scaled = svc.clone();
        scaled.replicas = count.max(2);
        let mut problems = scaled.single_replica_problems();
        problems.extend(crate::stateful::replica_problems(
            name,
            &scaled,
            &spec.volumes,
        ));
        problems.extend(scaled.port_problems(name, None));
        for (field, reason) in problems {
            self.err(join(path, &field), format!("a sidecar scales with {lead}, so it must allow more than one replica: {reason}"));
        }
    }
}

/// The service (and the one replica) of a container capstan makes for `spec`: a service's
/// `container_name`, or a replica's deterministic name.
fn owned_container(spec: &StackSpec, name: &str) -> Option<(String, Option<u32>)> {
    let by_name =
        (spec.services.iter()).find(|(_, s)| s.options.container_name.as_deref() == Some(name));
    if let Some((service, _)) = by_name {
        return Some((service.clone(), None));
    }
    let replicas: BTreeMap<String, (String, u32)> = (spec.services.iter())
        .filter(|(_, s)| s.options.container_name.is_none())
        .flat_map(|(service, s)| {
            (1..=s.replicas).map(move |n| {
                (
                    names::container(&spec.name, service, n),
                    (service.clone(), n),
                )
            })
        })
        .collect();
    replicas.get(name).map(|(s, n)| (s.clone(), Some(*n)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::spec::*;

    fn partner_of(text: &str, service: &str) -> (Option<NetworkMode>, Vec<VolumesFrom>, u32) {
        let spec = parse_stack("s", text).unwrap();
        let s = &spec.services[service];
        (
            s.options.network_mode.clone(),
            s.options.volumes_from.clone(),
            s.replicas,
        )
    }

    fn partner(service: &str, replica: Option<u32>, container: Option<&str>) -> Partner {
        Partner {
            service: service.into(),
            replica,
            container: container.map(str::to_string),
        }
    }

    #[test]
    fn a_service_sidecar_pairs_with_its_partner_and_follows_its_replica_count() {
        let (mode, _, replicas) = partner_of(
            "services: {web: {image: w, deploy: {replicas: 3}}, log: {image: l, network_mode: 'service:web'}}",
            "log",
        );
        assert_eq!(mode, Some(NetworkMode::Partner(partner("web", None, None))));
        assert_eq!(replicas, 3, "one sidecar replica per partner replica");
        let spec = parse_stack(
            "s",
            "services: {web: {image: w}, log: {image: l, network_mode: 'service:web'}}",
        )
        .unwrap();
        assert!(
            spec.services["log"].networks.is_empty(),
            "it joins no network of its own"
        );
    }

    #[test]
    fn a_container_name_resolves_to_the_service_that_has_it_or_to_one_replica() {
        let (mode, _, _) = partner_of(
            "services: {vpn: {image: v, container_name: tunnel}, app: {image: a, network_mode: 'container:tunnel'}}",
            "app",
        );
        assert_eq!(
            mode,
            Some(NetworkMode::Partner(partner("vpn", None, Some("tunnel"))))
        );
        let (mode, _, replicas) = partner_of(
            "services: {web: {image: w, scale: 3}, probe: {image: p, scale: 2, network_mode: 'container:s-web-2'}}",
            "probe",
        );
        assert_eq!(
            mode,
            Some(NetworkMode::Partner(partner(
                "web",
                Some(2),
                Some("s-web-2")
            )))
        );
        assert_eq!(
            replicas, 2,
            "pairing with one replica keeps the sidecar's own count"
        );
    }

    #[test]
    fn volumes_from_reads_services_containers_and_modes() {
        let (_, from, replicas) = partner_of(
            "services: {data: {image: d, scale: 2}, tool: {image: t, volumes_from: [data, 'data:ro', 'container:s-data-1:rw']}}",
            "tool",
        );
        let want = [
            (partner("data", None, None), false),
            (partner("data", None, None), true),
            (partner("data", Some(1), Some("s-data-1")), false),
        ];
        let got: Vec<(Partner, bool)> =
            from.into_iter().map(|v| (v.partner, v.read_only)).collect();
        assert_eq!(got, want);
        assert_eq!(replicas, 2);
    }

    #[test]
    fn a_sidecar_is_refused_by_field_where_it_cannot_pair() {
        let text = "services:
  web: {image: w, scale: 2}
  a: {image: x, network_mode: 'service:gone'}
  b: {image: x, network_mode: 'container:elsewhere'}
  c: {image: x, network_mode: 'service:c'}
  d: {image: x, network_mode: 'service:a'}
  e: {image: x, network_mode: 'service:web', deploy: {replicas: 3}}
  f: {image: x, network_mode: 'service:web', ports: ['80'], hostname: h, dns: [1.1.1.1], expose: ['81']}
  g: {image: x, volumes_from: ['bad:mode:x']}
  h: {image: x, network_mode: 'service:web', container_name: one}
  i: {image: x, volumes_from: [web], volumes: ['data:/data']}
  j: {image: x, volumes_from: [web], deploy: {mode: global}}
  k: {image: x, network_mode: 'service:web', depends_on: [web]}
  l: {image: x, depends_on: [m]}
  m: {image: x, network_mode: 'service:l'}
volumes: {data: {}}
";
        let errors = errors(text);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for want in [
            "services.a.network_mode",
            "services.b.network_mode",
            "services.c.network_mode",
            "services.d.network_mode",
            "services.e.deploy.replicas",
            "services.f.ports",
            "services.f.hostname",
            "services.f.dns",
            "services.f.expose",
            "services.g.volumes_from[0]",
            "services.h.container_name",
            "services.i.volumes[0]",
            "services.j.deploy.mode",
        ] {
            assert!(fields.contains(&want), "{want} missing from {fields:?}");
        }
        let reason = |f: &str| {
            let all: Vec<&str> = (errors.iter())
                .filter(|e| e.field == f)
                .map(|e| e.reason.as_str())
                .collect();
            all.join("; ")
        };
        assert!(
            reason("services.b.network_mode").contains("not a container of stack demo"),
            "{}",
            reason("services.b.network_mode")
        );
        assert!(reason("services.d.network_mode").contains("a sidecar itself (of gone)"));
        assert!(reason("services.e.deploy.replicas").contains("scale web"));
        assert!(reason("services.f.hostname").contains("service:web"));
        assert!(reason("services.i.volumes[0]").contains("a sidecar scales with web"));
        let cycles: Vec<&str> = (errors.iter())
            .filter(|e| e.reason.starts_with("dependency cycle"))
            .map(|e| e.reason.as_str())
            .collect();
        assert_eq!(
            cycles,
            ["dependency cycle: l -> m -> l"],
            "a sidecar waits for its partner: k is no cycle"
        );
    }

    #[test]
    fn a_count_that_agrees_with_the_partner_is_accepted() {
        let (_, _, replicas) = partner_of(
            "services: {web: {image: w, scale: 2}, log: {image: l, scale: 2, network_mode: 'service:web'}}",
            "log",
        );
        assert_eq!(replicas, 2);
    }
}
