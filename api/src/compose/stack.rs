//! The top level of a document, and the checks that need the whole stack: references,
//! dependency cycles and host-port clashes.

use super::yaml::Value;
use super::{join, Parser};
use crate::names;
use crate::spec::*;
use std::collections::BTreeMap;

impl Parser {
    pub(super) fn stack(&mut self, stack: &str, doc: &Value) -> StackSpec {
        if !names::valid_stack_name(stack) {
            self.err("name", format!("{stack:?} is not a valid stack name: lowercase letters, digits, '-' and '_', starting with a letter or digit"));
        }
        let mut spec = StackSpec {
            name: stack.to_string(),
            ..Default::default()
        };
        let mut services = None;
        for (key, v) in self.map(
            "",
            doc,
            &[
                "version", "name", "services", "networks", "volumes", "secrets", "configs",
            ],
        ) {
            match key.as_str() {
                "version" | "name" => {
                    self.string(&key, v);
                }
                "services" => services = Some(v),
                "networks" => spec.networks = self.networks(v),
                "volumes" => spec.volumes = self.volumes(v),
                "secrets" => spec.secrets = self.file_objects(FileKind::Secret, v),
                "configs" => spec.configs = self.file_objects(FileKind::Config, v),
                _ => unreachable!(),
            }
        }
        match services {
            None | Some(Value::Null) => self.err("services", "a stack needs at least one service"),
            Some(v) => {
                for (name, sv) in self.map("services", v, &[]) {
                    let path = join("services", &name);
                    self.check_name(&path, "service name", &name, names::member_name);
                    if let Some(svc) = self.service(&path, sv) {
                        spec.services.insert(name, svc);
                    }
                }
                if spec.services.is_empty() && self.errors.is_empty() {
                    self.err("services", "a stack needs at least one service");
                }
            }
        }
        self.apply_links(&mut spec);
        self.pair_sidecars(&mut spec);
        self.join_namespaces(&mut spec);
        self.settle_files(&mut spec);
        self.cross_check(&spec);
        self.check_stateful(&spec);
        spec
    }

    /// `links`, as Compose has them on user networks: the linked service must exist, starts
    /// first, and answers to the alias on the networks both services join (Docker's network
    /// aliases are per network, so every member of those networks resolves the alias too).
    fn apply_links(&mut self, spec: &mut StackSpec) {
        for link in std::mem::take(&mut self.links) {
            let Some(linker) = spec.services.get(&link.service) else {
                continue;
            };
            let nets: Vec<String> = linker.networks.keys().cloned().collect();
            if link.target == link.service {
                self.err(&link.field, "a service cannot link to itself");
                continue;
            }
            let Some(target) = spec.services.get_mut(&link.target) else {
                self.err(
                    &link.field,
                    format!("service {:?} is not in this stack", link.target),
                );
                continue;
            };
            let shared: Vec<String> = nets
                .into_iter()
                .filter(|n| target.networks.contains_key(n))
                .collect();
            if shared.is_empty() {
                self.err(
                    &link.field,
                    format!(
                        "{} and {} share no network, so the link cannot resolve",
                        link.service, link.target
                    ),
                );
                continue;
            }
            if let Some(alias) = &link.alias {
                for net in &shared {
                    if let Some(sn) = target.networks.get_mut(net) {
                        if !sn.aliases.contains(alias) {
                            sn.aliases.push(alias.clone());
                        }
                    }
                }
            }
            if let Some(linker) = spec.services.get_mut(&link.service) {
                linker
                    .depends_on
                    .entry(link.target.clone())
                    .or_insert(Dependency {
                        condition: DependencyCondition::ServiceStarted,
                        required: true,
                        restart: false,
                    });
            }
        }
    }

    /// The stateful guard (`crate::stateful`): declarations of per-replica volumes, and
    /// services with several replicas writing one named volume.
    fn check_stateful(&mut self, spec: &StackSpec) {
        for (field, reason) in crate::stateful::declaration_problems(spec) {
            self.err(field, reason);
        }
        for (name, svc) in &spec.services {
            for (field, reason) in crate::stateful::replica_problems(name, svc, &spec.volumes) {
                self.err(format!("services.{name}.{field}"), reason);
            }
        }
    }

    /// Checks that need the whole stack: references, dependency cycles and host-port clashes.
    pub(super) fn cross_check(&mut self, spec: &StackSpec) {
        let mut host_ports: BTreeMap<(String, u16), String> = BTreeMap::new();
        let mut container_names: BTreeMap<String, String> = BTreeMap::new();
        if let Some(cycle) = dependency_cycle(spec) {
            self.err(
                format!("services.{}.depends_on", cycle[0]),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
        }
        for (name, svc) in &spec.services {
            let path = join("services", name);
            for (dep, d) in &svc.depends_on {
                if dep == name {
                    self.err(
                        format!("{path}.depends_on.{dep}"),
                        "a service cannot depend on itself",
                    );
                } else if d.required && !spec.services.contains_key(dep) {
                    self.err(format!("{path}.depends_on.{dep}"), format!("service {dep:?} is not in this stack (mark it `required: false` if that is fine)"));
                }
            }
            for (net, sn) in &svc.networks {
                if net != names::DEFAULT_NETWORK && !spec.networks.contains_key(net) {
                    self.err(
                        format!("{path}.networks.{net}"),
                        format!("network {net:?} is not declared under the top-level `networks`"),
                    );
                } else if let Some(reason) = address_problem(spec, net, sn) {
                    self.err(format!("{path}.networks.{net}"), reason);
                }
            }
            if let Some(cname) = &svc.options.container_name {
                if let Some(other) = container_names.insert(cname.clone(), name.clone()) {
                    self.err(
                        format!("{path}.container_name"),
                        format!("{cname:?} is also the container name of service {other}"),
                    );
                }
            }
            for (i, m) in svc.volumes.iter().enumerate() {
                if let (MountKind::Volume, Some(source)) = (&m.kind, &m.source) {
                    if !spec.volumes.contains_key(source) {
                        self.err(
                            format!("{path}.volumes[{i}]"),
                            format!(
                                "volume {source:?} is not declared under the top-level `volumes`"
                            ),
                        );
                    }
                }
            }
            for (field, reason) in svc.port_problems(name, None) {
                self.err(join(&path, &field), reason);
            }
            for (i, p) in svc.ports.iter().enumerate() {
                let field = format!("{path}.ports[{i}]");
                if let Some((start, end)) = p.host_ports {
                    for port in start..=end {
                        if let Some(other) =
                            host_ports.insert((p.protocol.clone(), port), field.clone())
                        {
                            self.err(
                                &field,
                                format!(
                                    "host port {port}/{} is also published by {other}",
                                    p.protocol
                                ),
                            );
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// A fixed `ipv4_address`/`ipv6_address` needs a network with a configured subnet (the
/// engine refuses it otherwise); an external network is trusted to have one.
fn address_problem(spec: &StackSpec, net: &str, sn: &ServiceNetwork) -> Option<String> {
    if sn.ipv4_address.is_none() && sn.ipv6_address.is_none() {
        return None;
    }
    let n = spec.networks.get(net)?;
    let has_subnet = n
        .ipam
        .as_ref()
        .is_some_and(|i| i.config.iter().any(|c| c.subnet.is_some()));
    (!n.external && !has_subnet).then(|| {
        format!("a fixed address needs a subnet: give network {net:?} `ipam: {{config: [{{subnet: ...}}]}}`")
    })
}

/// A dependency cycle (`depends_on`, or a sidecar's partner), as the list of services around
/// it (first repeated at the end).
fn dependency_cycle(spec: &StackSpec) -> Option<Vec<String>> {
    fn visit<'a>(
        spec: &'a StackSpec,
        name: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| *p == name) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if !done.insert(name) {
            return None;
        }
        path.push(name);
        // A sidecar waits for its partner as a dependent waits for its dependency.
        let edges = (spec.services.get(name))
            .map(|s| s.depends_on.keys().chain(s.partners().map(|p| &p.service)));
        for dep in edges.into_iter().flatten() {
            if dep != name && spec.services.contains_key(dep) {
                if let Some(c) = visit(spec, dep, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    spec.services
        .keys()
        .find_map(|name| visit(spec, name, &mut vec![], &mut done))
}
#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn dependencies_must_exist_and_must_not_form_a_cycle() {
        assert_eq!(
            fields("services: {app: {image: x, depends_on: [db]}}"),
            vec!["services.app.depends_on.db"]
        );
        assert_eq!(
            fields("services: {app: {image: x, depends_on: [app]}}"),
            vec!["services.app.depends_on.app"]
        );
        let errs = errors("services: {a: {image: x, depends_on: [b]}, b: {image: x, depends_on: [c]}, c: {image: x, depends_on: [a]}}");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].reason.contains("a -> b -> c -> a"),
            "{}",
            errs[0].reason
        );
        assert_eq!(fields("services: {a: {image: x, depends_on: {b: {condition: service_ready}}}, b: {image: x}}"), vec!["services.a.depends_on.b.condition"]);
    }
}
