//! One service: its keys, replica counts, `depends_on` and `restart`.

use super::deploy::Deploy;
use super::kernel::KERNEL_KEYS;
use super::options::OPTION_KEYS;
use super::yaml::Value;
use super::{describe, join, kind, FieldError, Link, Parser, MAX_REPLICAS};
use crate::names;
use crate::spec::*;
use std::collections::BTreeMap;

impl Parser {
    pub(super) const SERVICE_KEYS: &'static [&'static str] = &[
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
        "links",
        "build",
        "pull_policy",
        "secrets",
        "configs",
        "post_start",
        "pre_stop",
    ];

    pub(super) fn service(&mut self, path: &str, v: &Value) -> Option<ServiceSpec> {
        let mut s = ServiceSpec {
            replicas: 1,
            ..Default::default()
        };
        let mut image = None;
        let mut replicas_from: Option<(String, u32)> = None;
        let mut deploy = Deploy::default();
        let mut networks_given = false;
        let keys: Vec<&str> = Self::SERVICE_KEYS
            .iter()
            .chain(OPTION_KEYS)
            .chain(KERNEL_KEYS)
            .copied()
            .collect();
        for (key, val) in self.map(path, v, &keys) {
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
                    deploy = self.deploy(&field, val, &mut s);
                    if let Some((dfield, n)) = deploy.replicas.take() {
                        replicas_from = self.one_replica_count(replicas_from, dfield, n);
                    }
                }
                "scale" => {
                    if let Some(n) = self.replicas(&field, val) {
                        replicas_from = self.one_replica_count(replicas_from, field, n);
                    }
                }
                "ports" => s.ports = self.ports(&field, val),
                "networks" => {
                    networks_given = true;
                    s.networks = self.service_networks(&field, val)
                }
                "volumes" => s.volumes = self.mounts(&field, val),
                "restart" => s.restart = self.restart(&field, val),
                "stop_grace_period" => s.stop_grace_period_ms = self.stop_grace(&field, val),
                "healthcheck" => s.healthcheck = self.healthcheck(&field, val),
                "depends_on" => s.depends_on = self.depends_on(&field, val),
                "links" => self.service_links(path, &field, val),
                "build" => s.build = self.build(&field, val),
                "pull_policy" => s.pull_policy = self.pull_policy(&field, val),
                "secrets" => s.secrets = self.file_mounts(FileKind::Secret, &field, val),
                "configs" => s.configs = self.file_mounts(FileKind::Config, &field, val),
                "post_start" => s.post_start = self.hooks(&field, val),
                "pre_stop" => s.pre_stop = self.hooks(&field, val),
                other => self.option(&field, other, val, &mut s.options),
            }
        }
        self.take_count(path, &mut s, &replicas_from, deploy.global);
        self.settle_deploy(path, &mut s, deploy, replicas_from.is_some());
        if let Some(i) = self.image(path, image, v) {
            s.image = i;
        }
        self.check_single_replica_options(path, &s);
        self.check_kernel(path, &s.options);
        self.check_network_mode(path, &s, networks_given);
        if s.networks.is_empty() && s.options.network_mode.is_none() {
            s.networks.insert(
                names::DEFAULT_NETWORK.to_string(),
                ServiceNetwork::default(),
            );
        }
        Some(s)
    }

    /// The service's `image`, if it is a valid reference; else an error naming why (the
    /// service `v` has none, or an empty or malformed one).
    fn image(&mut self, path: &str, image: Option<String>, v: &Value) -> Option<String> {
        let field = join(path, "image");
        match image {
            Some(i) if !i.trim().is_empty() => match crate::reference::parse(&i) {
                Ok(_) => return Some(i),
                Err(e) => self.err(
                    field,
                    format!("{i:?} is not an image reference ([registry[:port]/]path[:tag][@digest]): {e}"),
                ),
            },
            Some(_) => self.err(field, "must not be empty"),
            None => self.err(field, missing_image(v)),
        }
        None
    }

    /// The replica count given (`scale` or `deploy.replicas`), and which field gave the
    /// service at `path` a count of its own (those, or `deploy.mode: global`): a sidecar's
    /// must agree with its partner's.
    fn take_count(
        &mut self,
        path: &str,
        s: &mut ServiceSpec,
        from: &Option<(String, u32)>,
        global: bool,
    ) {
        if let Some((_, n)) = from {
            s.replicas = *n;
        }
        let name = path.trim_start_matches("services.").to_string();
        let field = match (from, global) {
            (Some((f, _)), _) => f.trim_start_matches(path).trim_start_matches('.'),
            (None, true) => "deploy.mode",
            (None, false) => return,
        };
        self.counted.insert(name, field.to_string());
    }

    /// `deploy.mode`, `deploy.resources` and `deploy.restart_policy` against the service's
    /// own keys: `restart` wins over `restart_policy`, as in Compose.
    fn settle_deploy(&mut self, path: &str, s: &mut ServiceSpec, d: Deploy, counted: bool) {
        if d.global {
            if counted && s.replicas != 1 {
                self.err(
                    format!("{path}.deploy.mode"),
                    format!(
                        "global means one replica on this host, but the service asks for {}",
                        s.replicas
                    ),
                );
            }
            s.replicas = 1;
        }
        self.merge_resources(path, &mut s.options, d.resources);
        if s.restart.is_none() {
            s.restart = d.restart;
        }
        s.restart_timing = d.timing;
        s.update_config = d.update;
        s.rollback_config = d.rollback;
    }

    /// Options that name one container (a fixed name or address) allow one replica only.
    fn check_single_replica_options(&mut self, path: &str, s: &ServiceSpec) {
        for (field, reason) in s.single_replica_problems() {
            self.err(join(path, &field), reason);
        }
    }

    /// `network_mode` leaves the stack's networks: no `networks`, no `ports`; a sidecar's
    /// name, DNS and exposed ports are its partner's.
    fn check_network_mode(&mut self, path: &str, s: &ServiceSpec, networks_given: bool) {
        let Some(mode) = &s.options.network_mode else {
            return;
        };
        let mode = mode.describe();
        if networks_given {
            self.err(
                format!("{path}.network_mode"),
                format!("network_mode {mode} and `networks` exclude each other"),
            );
        }
        if !s.ports.is_empty() {
            let why = match s
                .options
                .network_mode
                .as_ref()
                .and_then(NetworkMode::partner)
            {
                Some(p) => format!("the namespace is {}'s: publish the ports there", p.service),
                None => "there is nothing to publish on; remove `ports`".into(),
            };
            self.err(
                format!("{path}.ports"),
                format!("with network_mode {mode} {why}"),
            );
        }
        if s.options.hostname.is_some() && mode == "host" {
            self.err(
                format!("{path}.hostname"),
                "a container on the host's network has the host's name; the engine refuses `hostname` with network_mode host",
            );
        }
        let Some(partner) = s
            .options
            .network_mode
            .as_ref()
            .and_then(NetworkMode::partner)
        else {
            return;
        };
        let o = &s.options;
        let given = [
            ("hostname", o.hostname.is_some()),
            ("domainname", o.domainname.is_some()),
            ("mac_address", o.mac_address.is_some()),
            ("dns", !o.dns.is_empty()),
            ("dns_search", !o.dns_search.is_empty()),
            ("dns_opt", !o.dns_opt.is_empty()),
            ("extra_hosts", !o.extra_hosts.is_empty()),
            ("expose", !o.expose.is_empty()),
        ];
        for (key, _) in given.into_iter().filter(|(_, set)| *set) {
            self.err(
                format!("{path}.{key}"),
                format!("with network_mode {mode} the network namespace, and its `{key}`, are {}'s; set it there", partner.describe()),
            );
        }
    }

    /// `links: [db, "db:database"]`: remembered, applied once every service is read.
    fn service_links(&mut self, service_path: &str, path: &str, v: &Value) {
        let service = service_path.trim_start_matches("services.").to_string();
        for (i, entry) in self.strings(path, v).into_iter().enumerate() {
            let (target, alias) = match entry.split_once(':') {
                Some((t, a)) => (t.to_string(), Some(a.to_string())),
                None => (entry.clone(), None),
            };
            let field = format!("{path}[{i}]");
            if target.is_empty() || alias.as_deref() == Some("") {
                self.err(field, format!("{entry:?} is not SERVICE or SERVICE:ALIAS"));
            } else {
                self.links.push(Link {
                    service: service.clone(),
                    field,
                    target,
                    alias,
                });
            }
        }
    }

    /// Short form (a list of names: `service_started`) or long form (a map with `condition`,
    /// `required`, `restart`).
    pub(super) fn depends_on(&mut self, path: &str, v: &Value) -> BTreeMap<String, Dependency> {
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

    pub(super) fn one_replica_count(
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

    pub(super) fn replicas(&mut self, path: &str, v: &Value) -> Option<u32> {
        match v.as_whole_number() {
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

    /// The engine takes the stop timeout in whole seconds as a signed 32-bit number.
    fn stop_grace(&mut self, path: &str, v: &Value) -> Option<u64> {
        let ms = (self.duration_ns(path, v)? / 1_000_000).unsigned_abs();
        if ms / 1000 > i32::MAX as u64 {
            self.err(
                path,
                format!(
                    "must be at most {}s, the longest stop timeout the Docker engine takes",
                    i32::MAX
                ),
            );
            return None;
        }
        Some(ms)
    }

    pub(super) fn restart(&mut self, path: &str, v: &Value) -> Option<RestartPolicy> {
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
}

/// Why a service has no image: often a merge or `extends` that did not bring it.
fn missing_image(service: &Value) -> &'static str {
    if service.get("extends").is_some() {
        "is required; this service's `extends` was not resolved (`capstan apply -f` resolves \
         it; a document sent to the API must be resolved already)"
    } else if service.get("<<").is_some() {
        "is required; this service's merge key `<<` was not expanded, so nothing it names \
         (such as `image`) reached the service"
    } else if service.get("build").is_some() {
        "is required with `build`: `capstan apply` builds the context and names the image it \
         built here (a document sent to the API must name it already)"
    } else {
        "is required: the image the service runs"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

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
    fn counts_left_as_strings_by_interpolation_are_numbers_as_compose_casts_them() {
        let spec = parse_stack(
            "s",
            "services: {web: {image: x, deploy: {replicas: \"3\"}, healthcheck: {test: [CMD, t], retries: \"4\"}}}",
        )
        .unwrap();
        assert_eq!(spec.services["web"].replicas, 3);
        assert_eq!(
            spec.services["web"].healthcheck.as_ref().unwrap().retries,
            Some(4)
        );
        assert_eq!(
            fields("services: {web: {image: x, deploy: {replicas: \"3.5\"}}}"),
            vec!["services.web.deploy.replicas"]
        );
    }

    #[test]
    fn capstan_labels_are_reserved() {
        assert_eq!(
            fields("services: {web: {image: x, labels: {capstan.stack: other}}}"),
            vec!["services.web.labels.capstan.stack"]
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
    fn a_stop_grace_period_beyond_the_engines_stop_timeout_is_an_error() {
        let errs = errors("services: {a: {image: x, stop_grace_period: 1000000h}}");
        assert_eq!(errs[0].field, "services.a.stop_grace_period");
        assert!(errs[0].reason.contains("2147483647s"), "{}", errs[0].reason);
    }

    #[test]
    fn a_missing_image_names_the_extends_or_merge_key_that_should_have_brought_it() {
        let errs = errors("services: {web: {extends: base}, base: {image: x}}");
        let image = errs
            .iter()
            .find(|e| e.field == "services.web.image")
            .unwrap();
        assert!(
            image.reason.contains("`extends` was not resolved"),
            "{}",
            image.reason
        );
        let errs = errors(r#"{"services": {"web": {"<<": "not-an-alias"}}}"#);
        let image = errs
            .iter()
            .find(|e| e.field == "services.web.image")
            .unwrap();
        assert!(image.reason.contains("`<<`"), "{}", image.reason);
    }

    #[test]
    fn an_image_the_engine_could_not_parse_is_a_field_error_with_the_grammar() {
        for bad in ["Web:1", "web:.x", "web@sha256:12", "a//b", "bad host/web"] {
            let errs = errors(&format!("services: {{web: {{image: \"{bad}\"}}}}"));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].field, "services.web.image", "{bad}");
            assert!(
                errs[0].reason.contains("is not an image reference"),
                "{}",
                errs[0].reason
            );
        }
        let errs = errors("services: {web: {image: \"nginx\\n\"}}");
        assert_eq!(errs[0].field, "services.web.image");
        assert!(errs[0].reason.contains("U+000A"), "{}", errs[0].reason);
    }
}
