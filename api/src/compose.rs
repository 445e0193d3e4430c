//! Compose file → [`StackSpec`].
//!
//! The file is walked as a YAML tree so that every error carries its field path
//! (`services.web.deploy.replicas`). All errors are collected, not just the first, and any
//! key outside the supported subset is an error naming it: nothing is silently dropped.
//! Extension keys (`x-*`) are allowed anywhere, as the Compose spec says.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::collections::BTreeMap;

use crate::duration;
use crate::names;
use crate::spec::*;

/// One problem in a Compose file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Where: `services.web.ports[0]`.
    pub field: String,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// Every problem found in a file; nothing was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid stack: {}", .errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
pub struct InvalidStack {
    pub errors: Vec<FieldError>,
}

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = 1000;

/// Parses a Compose document (YAML, or JSON, which is YAML) for stack `stack`. The stack name
/// given by the caller wins over the file's `name:`, as `docker compose -p` does.
pub fn parse_stack(stack: &str, text: &str) -> Result<StackSpec, InvalidStack> {
    let mut p = Parser::default();
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            return Err(InvalidStack {
                errors: vec![FieldError {
                    field: "(file)".into(),
                    reason: format!("not valid YAML: {e}"),
                }],
            })
        }
    };
    let spec = p.stack(stack, &doc);
    if p.errors.is_empty() {
        Ok(spec)
    } else {
        Err(InvalidStack { errors: p.errors })
    }
}

/// The `name:` a file declares, if any (for the CLI's default stack name).
pub fn declared_name(text: &str) -> Option<String> {
    let doc: Value = serde_yaml::from_str(text).ok()?;
    doc.get("name")?.as_str().map(str::to_string)
}

#[derive(Default)]
struct Parser {
    errors: Vec<FieldError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

impl Parser {
    fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// The entries of a map with string keys; keys outside `allowed` (and not `x-*`) are errors.
    fn map<'a>(&mut self, path: &str, v: &'a Value, allowed: &[&str]) -> Vec<(String, &'a Value)> {
        let Some(m) = v.as_mapping() else {
            self.err(path, format!("must be a map, got {}", kind(v)));
            return vec![];
        };
        let mut out = vec![];
        for (k, val) in m {
            let Some(key) = k.as_str() else {
                self.err(path, format!("keys must be strings, got {}", kind(k)));
                continue;
            };
            if key.starts_with("x-") {
                continue;
            }
            if !allowed.is_empty() && !allowed.contains(&key) {
                self.err(
                    join(path, key),
                    format!(
                        "unsupported key {key:?}; capstan supports: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            out.push((key.to_string(), val));
        }
        out
    }

    fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.err(path, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    fn bool(&mut self, path: &str, v: &Value) -> bool {
        match v {
            Value::Bool(b) => *b,
            Value::String(s) if s == "true" || s == "false" => s == "true",
            other => {
                self.err(path, format!("must be true or false, got {}", kind(other)));
                false
            }
        }
    }

    fn duration_ns(&mut self, path: &str, v: &Value) -> Option<i64> {
        let text = self.string(path, v)?;
        match duration::parse(&text) {
            Ok(d) => Some(d.as_nanos() as i64),
            Err(reason) => {
                self.err(path, reason);
                None
            }
        }
    }

    /// A string (split like a shell would) or a list of strings.
    fn words(&mut self, path: &str, v: &Value) -> Option<Vec<String>> {
        match v {
            Value::String(s) => match split_shell_words(s) {
                Ok(words) => Some(words),
                Err(reason) => {
                    self.err(path, reason);
                    None
                }
            },
            Value::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.string(&format!("{path}[{i}]"), item))
                    .collect(),
            ),
            Value::Null => None,
            other => {
                self.err(
                    path,
                    format!("must be a string or a list of strings, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// `KEY=VALUE` list or `KEY: VALUE` map.
    fn key_values(&mut self, path: &str, v: &Value, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("{path}[{i}]");
                    let Some(entry) = self.string(&field, item) else {
                        continue;
                    };
                    match entry.split_once('=') {
                        Some((k, val)) if !k.is_empty() => {
                            out.insert(k.to_string(), val.to_string());
                        }
                        _ => self.err(field, format!("{what} {entry:?} has no value: write {entry}=VALUE (capstan does not read the client's environment)")),
                    }
                }
            }
            Value::Mapping(_) => {
                for (k, val) in self.map(path, v, &[]) {
                    let field = join(path, &k);
                    if val.is_null() {
                        self.err(field, format!("{what} {k:?} has no value (capstan does not read the client's environment)"));
                    } else if let Some(s) = self.string(&field, val) {
                        out.insert(k, s);
                    }
                }
            }
            Value::Null => {}
            other => self.err(
                path,
                format!("must be a list of KEY=VALUE or a map, got {}", kind(other)),
            ),
        }
        out
    }

    fn stack(&mut self, stack: &str, doc: &Value) -> StackSpec {
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
            &["version", "name", "services", "networks", "volumes"],
        ) {
            match key.as_str() {
                "version" | "name" => {
                    self.string(&key, v);
                }
                "services" => services = Some(v),
                "networks" => spec.networks = self.networks(v),
                "volumes" => spec.volumes = self.volumes(v),
                _ => unreachable!(),
            }
        }
        match services {
            None | Some(Value::Null) => self.err("services", "a stack needs at least one service"),
            Some(v) => {
                for (name, sv) in self.map("services", v, &[]) {
                    let path = join("services", &name);
                    if !names::valid_member_name(&name) {
                        self.err(&path, "service names are letters, digits, '-', '_' and '.', starting with a letter or digit");
                    }
                    if let Some(svc) = self.service(&path, sv) {
                        spec.services.insert(name, svc);
                    }
                }
                if spec.services.is_empty() && self.errors.is_empty() {
                    self.err("services", "a stack needs at least one service");
                }
            }
        }
        self.cross_check(&spec);
        spec
    }

    fn networks(&mut self, v: &Value) -> BTreeMap<String, NetworkSpec> {
        let mut out = BTreeMap::new();
        if v.is_null() {
            return out;
        }
        for (name, nv) in self.map("networks", v, &[]) {
            let path = join("networks", &name);
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
                    ],
                ) {
                    let field = join(&path, &key);
                    match key.as_str() {
                        "driver" => n.driver = self.string(&field, val),
                        "external" => n.external = self.bool(&field, val),
                        "name" => n.name = self.string(&field, val),
                        "internal" => n.internal = self.bool(&field, val),
                        "attachable" => n.attachable = self.bool(&field, val),
                        "labels" => n.labels = self.key_values(&field, val, "label"),
                        _ => unreachable!(),
                    }
                }
            }
            out.insert(name, n);
        }
        out
    }

    fn volumes(&mut self, v: &Value) -> BTreeMap<String, VolumeSpec> {
        let mut out = BTreeMap::new();
        if v.is_null() {
            return out;
        }
        for (name, vv) in self.map("volumes", v, &[]) {
            let path = join("volumes", &name);
            let mut vol = VolumeSpec::default();
            if !vv.is_null() {
                for (key, val) in self.map(&path, vv, &["driver", "external", "name", "labels"]) {
                    let field = join(&path, &key);
                    match key.as_str() {
                        "driver" => vol.driver = self.string(&field, val),
                        "external" => vol.external = self.bool(&field, val),
                        "name" => vol.name = self.string(&field, val),
                        "labels" => vol.labels = self.key_values(&field, val, "label"),
                        _ => unreachable!(),
                    }
                }
            }
            out.insert(name, vol);
        }
        out
    }

    const SERVICE_KEYS: &'static [&'static str] = &[
        "image",
        "command",
        "entrypoint",
        "environment",
        "labels",
        "deploy",
        "scale",
        "ports",
        "networks",
        "volumes",
        "restart",
        "stop_grace_period",
        "healthcheck",
        "depends_on",
    ];

    fn service(&mut self, path: &str, v: &Value) -> Option<ServiceSpec> {
        let mut s = ServiceSpec {
            replicas: 1,
            ..Default::default()
        };
        let mut image = None;
        let mut replicas_from: Option<(String, u32)> = None;
        for (key, val) in self.map(path, v, Self::SERVICE_KEYS) {
            let field = join(path, &key);
            match key.as_str() {
                "image" => image = self.string(&field, val),
                "command" => s.command = self.words(&field, val),
                "entrypoint" => s.entrypoint = self.words(&field, val),
                "environment" => s.environment = self.key_values(&field, val, "variable"),
                "labels" => {
                    s.labels = self.key_values(&field, val, "label");
                    for k in s.labels.keys().filter(|k| k.starts_with("capstan.")) {
                        self.errors.push(FieldError { field: join(&field, k), reason: "labels starting with \"capstan.\" are reserved for capstan's ownership labels".into() });
                    }
                }
                "deploy" => {
                    for (dkey, dval) in self.map(&field, val, &["replicas"]) {
                        let dfield = join(&field, &dkey);
                        if let Some(n) = self.replicas(&dfield, dval) {
                            replicas_from = self.one_replica_count(replicas_from, dfield, n);
                        }
                    }
                }
                "scale" => {
                    if let Some(n) = self.replicas(&field, val) {
                        replicas_from = self.one_replica_count(replicas_from, field, n);
                    }
                }
                "ports" => s.ports = self.ports(&field, val),
                "networks" => s.networks = self.service_networks(&field, val),
                "volumes" => s.volumes = self.mounts(&field, val),
                "restart" => s.restart = self.restart(&field, val),
                "stop_grace_period" => {
                    s.stop_grace_period_ms = self
                        .duration_ns(&field, val)
                        .map(|ns| (ns / 1_000_000) as u64)
                }
                "healthcheck" => s.healthcheck = self.healthcheck(&field, val),
                "depends_on" => s.depends_on = self.depends_on(&field, val),
                _ => unreachable!(),
            }
        }
        if let Some((_, n)) = replicas_from {
            s.replicas = n;
        }
        match image {
            Some(i) if !i.trim().is_empty() => s.image = i,
            Some(_) => self.err(join(path, "image"), "must not be empty"),
            None => self.err(
                join(path, "image"),
                "is required (capstan does not build images; `build` is not supported)",
            ),
        }
        if s.networks.is_empty() {
            s.networks.insert(
                names::DEFAULT_NETWORK.to_string(),
                ServiceNetwork::default(),
            );
        }
        Some(s)
    }

    /// Short form (a list of names: `service_started`) or long form (a map with `condition`,
    /// `required`, `restart`).
    fn depends_on(&mut self, path: &str, v: &Value) -> BTreeMap<String, Dependency> {
        let started = Dependency {
            condition: DependencyCondition::ServiceStarted,
            required: true,
            restart: false,
        };
        let mut out = BTreeMap::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(name) = self.string(&format!("{path}[{i}]"), item) {
                        out.insert(name, started.clone());
                    }
                }
            }
            Value::Mapping(_) => {
                for (name, dv) in self.map(path, v, &[]) {
                    let field = join(path, &name);
                    let mut dep = started.clone();
                    if !dv.is_null() {
                        for (key, val) in
                            self.map(&field, dv, &["condition", "required", "restart"])
                        {
                            let kfield = join(&field, &key);
                            match key.as_str() {
                                "condition" => match self.string(&kfield, val).as_deref() {
                                    Some("service_started") => dep.condition = DependencyCondition::ServiceStarted,
                                    Some("service_healthy") => dep.condition = DependencyCondition::ServiceHealthy,
                                    Some("service_completed_successfully") => dep.condition = DependencyCondition::ServiceCompletedSuccessfully,
                                    Some(other) => self.err(&kfield, format!("{other:?} is not a condition: use service_started, service_healthy or service_completed_successfully")),
                                    None => {}
                                },
                                "required" => dep.required = self.bool(&kfield, val),
                                "restart" => dep.restart = self.bool(&kfield, val),
                                _ => unreachable!(),
                            }
                        }
                    }
                    out.insert(name, dep);
                }
            }
            other => self.err(
                path,
                format!("must be a list or a map, got {}", kind(other)),
            ),
        }
        out
    }

    fn one_replica_count(
        &mut self,
        seen: Option<(String, u32)>,
        field: String,
        n: u32,
    ) -> Option<(String, u32)> {
        match seen {
            Some((first, m)) if m != n => {
                self.err(
                    &field,
                    format!("conflicts with {first} ({m}); give the replica count once"),
                );
                Some((first, m))
            }
            Some(seen) => Some(seen),
            None => Some((field, n)),
        }
    }

    fn replicas(&mut self, path: &str, v: &Value) -> Option<u32> {
        match v.as_u64() {
            Some(n) if n <= MAX_REPLICAS as u64 => Some(n as u32),
            Some(n) => {
                self.err(
                    path,
                    format!("{n} is more than the {MAX_REPLICAS} replicas a service may have"),
                );
                None
            }
            None => {
                self.err(
                    path,
                    format!(
                        "must be a whole number from 0 to {MAX_REPLICAS}, got {}",
                        describe(v)
                    ),
                );
                None
            }
        }
    }

    fn ports(&mut self, path: &str, v: &Value) -> Vec<PortSpec> {
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
    fn long_port(&mut self, path: &str, v: &Value) -> Option<PortSpec> {
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
            Ok(p) => Some(PortSpec { mode, ..p }),
            Err(reason) => {
                self.err(path, reason);
                None
            }
        }
    }

    fn service_networks(&mut self, path: &str, v: &Value) -> BTreeMap<String, ServiceNetwork> {
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
                        for (key, val) in self.map(&field, nv, &["aliases"]) {
                            sn.aliases = self.words(&join(&field, &key), val).unwrap_or_default();
                        }
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

    fn mounts(&mut self, path: &str, v: &Value) -> Vec<MountSpec> {
        let Some(items) = v.as_sequence() else {
            self.err(path, format!("must be a list, got {}", kind(v)));
            return vec![];
        };
        let mut out = vec![];
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            if item.is_mapping() {
                self.err(
                    field,
                    "the long volume syntax is not supported yet; write \"SOURCE:TARGET[:ro]\"",
                );
                continue;
            }
            let Some(text) = self.string(&field, item) else {
                continue;
            };
            match parse_mount(&text) {
                Ok(m) => out.push(m),
                Err(reason) => self.err(field, reason),
            }
        }
        out
    }

    fn restart(&mut self, path: &str, v: &Value) -> Option<RestartPolicy> {
        // YAML 1.1 reads a bare `no` as false.
        let text = match v {
            Value::Bool(false) => "no".to_string(),
            other => self.string(path, other)?,
        };
        let policy = match text.as_str() {
            "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max_retries: None },
            other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) => RestartPolicy::OnFailure {
                    max_retries: Some(n),
                },
                _ => {
                    self.err(path, format!("{other:?} is not a restart policy: use \"no\", always, unless-stopped or on-failure[:N]"));
                    return None;
                }
            },
        };
        Some(policy)
    }

    fn healthcheck(&mut self, path: &str, v: &Value) -> Option<Healthcheck> {
        let mut h = Healthcheck::default();
        let mut disabled = false;
        for (key, val) in self.map(
            path,
            v,
            &[
                "test",
                "interval",
                "timeout",
                "retries",
                "start_period",
                "start_interval",
                "disable",
            ],
        ) {
            let field = join(path, &key);
            match key.as_str() {
                "test" => {
                    h.test = match val {
                        Value::String(s) => vec!["CMD-SHELL".into(), s.clone()],
                        _ => self.words(&field, val).unwrap_or_default(),
                    };
                    match h.test.first().map(String::as_str) {
                        Some("CMD") | Some("CMD-SHELL") if h.test.len() > 1 => {}
                        Some("NONE") => {}
                        _ => self.err(&field, "must be a string, or a list starting with \"CMD\", \"CMD-SHELL\" or \"NONE\""),
                    }
                }
                "interval" => h.interval_ns = self.duration_ns(&field, val),
                "timeout" => h.timeout_ns = self.duration_ns(&field, val),
                "start_period" => h.start_period_ns = self.duration_ns(&field, val),
                "start_interval" => h.start_interval_ns = self.duration_ns(&field, val),
                "retries" => match val.as_u64() {
                    Some(n) => h.retries = Some(n as i64),
                    None => self.err(
                        &field,
                        format!("must be a whole number, got {}", describe(val)),
                    ),
                },
                "disable" => disabled = self.bool(&field, val),
                _ => unreachable!(),
            }
        }
        if disabled {
            return Some(Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            });
        }
        for (name, ns) in [
            ("interval", h.interval_ns),
            ("timeout", h.timeout_ns),
            ("start_interval", h.start_interval_ns),
        ] {
            if ns.is_some_and(|ns| ns < 1_000_000) {
                self.err(join(path, name), "must be at least 1ms");
            }
        }
        Some(h)
    }

    /// Checks that need the whole stack: references, dependency cycles and host-port clashes.
    fn cross_check(&mut self, spec: &StackSpec) {
        let mut host_ports: BTreeMap<(String, u16), String> = BTreeMap::new();
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
            for net in svc.networks.keys() {
                if net != names::DEFAULT_NETWORK && !spec.networks.contains_key(net) {
                    self.err(
                        format!("{path}.networks.{net}"),
                        format!("network {net:?} is not declared under the top-level `networks`"),
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
            for (i, p) in svc.ports.iter().enumerate() {
                let field = format!("{path}.ports[{i}]");
                if let Some(reason) = p.replicas_problem(name, svc.replicas) {
                    self.err(&field, reason);
                }
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

/// A dependency cycle, as the list of services around it (first repeated at the end).
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
        for dep in spec
            .services
            .get(name)
            .map(|s| s.depends_on.keys())
            .into_iter()
            .flatten()
        {
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

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
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
    })
}

/// `SOURCE:TARGET[:ro|rw]` or an anonymous `TARGET`.
fn parse_mount(text: &str) -> Result<MountSpec, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => return Err(format!("{text:?} is not SOURCE:TARGET[:MODE]")),
    };
    if !target.starts_with('/') {
        return Err(format!(
            "target {target:?} must be an absolute path in the container"
        ));
    }
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => return Err(format!("mode {other:?} is not ro or rw")),
    };
    let (kind, source) = match source {
        None => (MountKind::Anonymous, None),
        Some(s) if s.starts_with('/') => (MountKind::Bind, Some(s.to_string())),
        Some(s) if s.starts_with('.') || s.starts_with('~') => {
            return Err(format!("relative host path {s:?}: `capstan apply -f` resolves it against the file's folder; over the API give an absolute path"))
        }
        Some(s) if names::valid_member_name(s) => (MountKind::Volume, Some(s.to_string())),
        Some(s) => return Err(format!("{s:?} is neither an absolute host path nor a volume name")),
    };
    Ok(MountSpec {
        kind,
        source,
        target: target.to_string(),
        read_only,
    })
}

/// Splits a command string like a POSIX shell would (quotes and backslashes), as Compose does.
pub fn split_shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c)
                            }
                            None => return Err(format!("unterminated double quote in {text:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated double quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<FieldError> {
        parse_stack("demo", text).unwrap_err().errors
    }

    fn fields(text: &str) -> Vec<String> {
        errors(text).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_seed_stack_parses_with_networks_volumes_and_replicas() {
        let spec = parse_stack(
            "shop",
            r#"
version: "3.9"
services:
  web:
    image: capstan-demo/web:1
    ports: ["80"]
    deploy: {replicas: 3}
    networks: [frontend]
  app:
    image: capstan-demo/web:1
    environment:
      DB_HOST: db
      PORT: 8080
    networks:
      frontend:
      backend: {aliases: [api]}
  db:
    image: capstan-demo/web:1
    environment: ["MYSQL_DATABASE=appdb"]
    volumes: ["db_data:/var/lib/mysql", "/srv/conf:/etc/conf:ro", "/scratch"]
    networks: [backend]
    restart: "no"
    stop_grace_period: 1m30s
networks: {frontend: {}, backend: {}}
volumes: {db_data: {}}
"#,
        )
        .unwrap();
        assert_eq!(spec.services["web"].replicas, 3);
        assert_eq!(spec.services["app"].environment["PORT"], "8080");
        assert_eq!(
            spec.services["app"].networks["backend"].aliases,
            vec!["api"]
        );
        let db = &spec.services["db"];
        assert_eq!(db.volumes[0].kind, MountKind::Volume);
        assert_eq!(
            db.volumes[1],
            MountSpec {
                kind: MountKind::Bind,
                source: Some("/srv/conf".into()),
                target: "/etc/conf".into(),
                read_only: true
            }
        );
        assert_eq!(db.volumes[2].kind, MountKind::Anonymous);
        assert_eq!(db.restart, Some(RestartPolicy::No));
        assert_eq!(db.stop_grace_period_ms, Some(90_000));
    }

    #[test]
    fn a_service_without_networks_joins_the_default_network() {
        let spec = parse_stack("s", "services: {web: {image: x}}").unwrap();
        assert!(spec.services["web"].networks.contains_key("default"));
        assert_eq!(spec.services["web"].replicas, 1);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let errs = errors("services: {web: {image: x, build: .}}");
        assert_eq!(errs[0].field, "services.web.build");
        assert!(errs[0].reason.contains("unsupported key \"build\""));
        assert_eq!(
            fields("services: {web: {image: x}}\nsecrets: {}"),
            vec!["secrets"]
        );
        assert_eq!(
            fields("services: {web: {image: x, deploy: {resources: {}}}}"),
            vec!["services.web.deploy.resources"]
        );
    }

    #[test]
    fn extension_keys_are_allowed_anywhere() {
        parse_stack(
            "s",
            "x-common: {a: 1}\nservices: {web: {image: x, x-note: hi}}",
        )
        .unwrap();
    }

    #[test]
    fn a_bad_replica_count_names_the_field_and_the_value() {
        let errs = errors("services: {web: {image: x, deploy: {replicas: three}}}");
        assert_eq!(errs[0].field, "services.web.deploy.replicas");
        assert!(errs[0].reason.contains("\"three\""), "{}", errs[0].reason);
        assert_eq!(
            fields("services: {web: {image: x, deploy: {replicas: -1}}}"),
            vec!["services.web.deploy.replicas"]
        );
        assert_eq!(
            fields("services: {web: {image: x, scale: 2, deploy: {replicas: 3}}}"),
            vec!["services.web.deploy.replicas"]
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let f = fields("services: {web: {ports: [\"99999\"]}, db: {image: x, networks: [nope]}}");
        assert_eq!(
            f,
            vec![
                "services.web.ports[0]",
                "services.web.image",
                "services.db.networks.nope"
            ]
        );
    }

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
        assert!(spec.services["web"].ports[0].proxied());
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
    fn environment_without_a_value_is_refused() {
        let f = fields("services: {web: {image: x, environment: [FOO]}}");
        assert_eq!(f, vec!["services.web.environment[0]"]);
        let f = fields("services: {web: {image: x, environment: {FOO: null}}}");
        assert_eq!(f, vec!["services.web.environment.FOO"]);
    }

    #[test]
    fn capstan_labels_are_reserved() {
        assert_eq!(
            fields("services: {web: {image: x, labels: {capstan.stack: other}}}"),
            vec!["services.web.labels.capstan.stack"]
        );
    }

    #[test]
    fn volumes_must_be_declared_and_relative_paths_resolved_by_the_client() {
        assert_eq!(
            fields("services: {web: {image: x, volumes: [\"data:/d\"]}}"),
            vec!["services.web.volumes[0]"]
        );
        let errs = errors("services: {web: {image: x, volumes: [\"./html:/www\"]}}");
        assert!(errs[0].reason.contains("relative host path"));
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            split_shell_words(r#"sh -c 'echo "hi there"' x\ y"#).unwrap(),
            vec!["sh", "-c", "echo \"hi there\"", "x y"]
        );
        assert!(split_shell_words("echo 'oops").is_err());
        let spec = parse_stack(
            "s",
            "services: {web: {image: x, command: [\"httpd\", \"-f\"]}}",
        )
        .unwrap();
        assert_eq!(
            spec.services["web"].command,
            Some(vec!["httpd".into(), "-f".into()])
        );
    }

    #[test]
    fn restart_policies_parse_including_yaml_no() {
        let spec = parse_stack(
            "s",
            "services: {a: {image: x, restart: no}, b: {image: x, restart: on-failure:3}}",
        )
        .unwrap();
        assert_eq!(spec.services["a"].restart, Some(RestartPolicy::No));
        assert_eq!(
            spec.services["b"].restart,
            Some(RestartPolicy::OnFailure {
                max_retries: Some(3)
            })
        );
        assert_eq!(
            fields("services: {a: {image: x, restart: sometimes}}"),
            vec!["services.a.restart"]
        );
    }

    #[test]
    fn healthchecks_take_every_compose_form() {
        let spec = parse_stack("s", r#"
services:
  a: {image: x, healthcheck: {test: "wget -q -O- http://localhost/", interval: 2s, timeout: 1s, retries: 3, start_period: 5s}}
  b: {image: x, healthcheck: {test: ["CMD", "true"]}}
  c: {image: x, healthcheck: {disable: true}}
  d: {image: x, healthcheck: {interval: 30s}}
"#).unwrap();
        let a = spec.services["a"].healthcheck.clone().unwrap();
        assert_eq!(a.test, vec!["CMD-SHELL", "wget -q -O- http://localhost/"]);
        assert_eq!(a.interval_ns, Some(2_000_000_000));
        assert_eq!(a.retries, Some(3));
        assert_eq!(
            spec.services["b"].healthcheck.as_ref().unwrap().test,
            vec!["CMD", "true"]
        );
        assert_eq!(
            spec.services["c"].healthcheck.as_ref().unwrap().test,
            vec!["NONE"]
        );
        let d = spec.services["d"].healthcheck.clone().unwrap();
        assert!(d.test.is_empty(), "no test keeps the image's");
        assert_eq!(d.interval_ns, Some(30_000_000_000));
        assert_eq!(
            fields("services: {a: {image: x, healthcheck: {test: [\"true\"]}}}"),
            vec!["services.a.healthcheck.test"]
        );
    }

    #[test]
    fn depends_on_takes_the_short_and_the_long_form() {
        let spec = parse_stack(
            "s",
            r#"
services:
  db: {image: x}
  migrate: {image: x, restart: "no"}
  app:
    image: x
    depends_on:
      db: {condition: service_healthy, restart: true}
      migrate: {condition: service_completed_successfully}
      cache: {condition: service_started, required: false}
  worker: {image: x, depends_on: [db]}
"#,
        )
        .unwrap();
        let app = &spec.services["app"].depends_on;
        assert_eq!(
            app["db"],
            Dependency {
                condition: DependencyCondition::ServiceHealthy,
                required: true,
                restart: true
            }
        );
        assert_eq!(
            app["migrate"].condition,
            DependencyCondition::ServiceCompletedSuccessfully
        );
        assert!(!app["cache"].required);
        assert_eq!(
            spec.services["worker"].depends_on["db"].condition,
            DependencyCondition::ServiceStarted
        );
    }

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

    #[test]
    fn json_bodies_parse_like_yaml() {
        let spec = parse_stack(
            "s",
            r#"{"services": {"web": {"image": "x", "deploy": {"replicas": 2}}}}"#,
        )
        .unwrap();
        assert_eq!(spec.services["web"].replicas, 2);
    }

    #[test]
    fn broken_yaml_and_empty_files_are_errors() {
        assert_eq!(fields("services: [unclosed"), vec!["(file)"]);
        assert_eq!(fields("name: x"), vec!["services"]);
        assert_eq!(fields("services: {}"), vec!["services"]);
        assert_eq!(
            parse_stack("Bad Name", "services: {a: {image: x}}")
                .unwrap_err()
                .errors[0]
                .field,
            "name"
        );
    }
}

#[cfg(test)]
mod examples {
    /// Every example in `examples/` parses: they are documentation that must not rot.
    #[test]
    fn every_example_stack_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = super::declared_name(&text).expect("examples name their stack");
                if let Err(e) = super::parse_stack(&name, &text) {
                    panic!("{}: {e}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 4, "found {seen} examples");
    }
}
