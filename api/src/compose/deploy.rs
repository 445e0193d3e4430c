//! A service's `deploy` section: `replicas`, `mode`, `resources`, `labels`, `restart_policy`,
//! `update_config`, `rollback_config`. What only a cluster scheduler could honour
//! (`placement`, ...) is refused by name.

use super::yaml::Value;
use super::{join, Parser};
use crate::spec::*;

/// What `deploy` decided, for the service to reconcile with its other keys.
#[derive(Default)]
pub(super) struct Deploy {
    /// (field, count) of `deploy.replicas`.
    pub replicas: Option<(String, u32)>,
    /// `mode: global`: one replica on this one host.
    pub global: bool,
    pub restart: Option<RestartPolicy>,
    pub timing: Option<RestartTiming>,
    /// `deploy.resources`, in the same fields as `mem_limit`, `cpus`, ...
    pub resources: ContainerOptions,
    pub update: Option<UpdateConfig>,
    pub rollback: Option<UpdateConfig>,
}

impl Parser {
    pub(super) fn deploy(&mut self, path: &str, v: &Value, s: &mut ServiceSpec) -> Deploy {
        let mut d = Deploy::default();
        let keys = [
            "replicas",
            "mode",
            "resources",
            "labels",
            "restart_policy",
            "update_config",
            "rollback_config",
        ];
        for (key, val) in self.map(path, v, &keys) {
            let field = join(path, &key);
            match key.as_str() {
                "replicas" => d.replicas = self.replicas(&field, val).map(|n| (field, n)),
                "mode" => match self.string(&field, val).as_deref() {
                    Some("replicated") => {}
                    Some("global") => d.global = true,
                    Some(other) => self.err(&field, format!("{other:?} is not a mode: replicated, or global (one replica on this host)")),
                    None => {}
                },
                "labels" => s.deploy_labels = self.key_values(&field, val, "label"),
                "resources" => d.resources = self.resources(&field, val),
                "update_config" => d.update = Some(self.update_config(&field, val, true)),
                "rollback_config" => d.rollback = Some(self.update_config(&field, val, false)),
                _ => (d.restart, d.timing) = self.restart_policy(&field, val),
            }
        }
        d
    }

    fn resources(&mut self, path: &str, v: &Value) -> ContainerOptions {
        let mut o = ContainerOptions::default();
        for (key, val) in self.map(path, v, &["limits", "reservations"]) {
            let field = join(path, &key);
            let allowed: &[&str] = if key == "limits" {
                &["cpus", "memory", "pids"]
            } else {
                &["cpus", "memory", "devices", "generic_resources"]
            };
            for (rkey, rval) in self.map(&field, val, allowed) {
                let rfield = join(&field, &rkey);
                match (key.as_str(), rkey.as_str()) {
                    ("limits", "cpus") => o.nano_cpus = self.cpus(&rfield, rval),
                    ("limits", "memory") => o.memory = self.bytes(&rfield, rval),
                    ("limits", "pids") => o.pids_limit = self.integer(&rfield, rval, -1, i64::MAX),
                    (_, "memory") => o.memory_reservation = self.bytes(&rfield, rval),
                    (_, "cpus") => self.err(&rfield, "a CPU reservation needs a cluster scheduler; one Docker host has no equivalent (use `cpu_shares` for a relative weight)"),
                    (_, other) => self.err(&rfield, format!("reserving {other} (GPUs and other devices) is not supported yet; use `devices`")),
                }
            }
        }
        o
    }

    /// `deploy.restart_policy`, mapped onto capstan's restart handling: `condition` and
    /// `max_attempts` onto the restart policy, `delay` and `window` onto the back-off.
    fn restart_policy(
        &mut self,
        path: &str,
        v: &Value,
    ) -> (Option<RestartPolicy>, Option<RestartTiming>) {
        let keys = ["condition", "max_attempts", "delay", "window"];
        let (mut condition, mut max) = (None, None);
        let mut timing = RestartTiming::default();
        for (key, val) in self.map(path, v, &keys) {
            let field = join(path, &key);
            match key.as_str() {
                "condition" => condition = self.string(&field, val).or(Some(String::new())),
                "max_attempts" => {
                    max = self
                        .integer(&field, val, 0, u32::MAX as i64)
                        .map(|n| n as u32)
                }
                "delay" => timing.delay_ms = self.duration_ms(&field, val),
                _ => timing.window_ms = self.duration_ms(&field, val),
            }
        }
        let timing = (timing != RestartTiming::default()).then_some(timing);
        let policy = match condition.as_deref().unwrap_or("any") {
            "none" => Some(RestartPolicy::No),
            "on-failure" => Some(RestartPolicy::OnFailure { max_retries: max }),
            "any" if max.is_some() => {
                self.err(join(path, "max_attempts"), "capstan limits attempts only for failures: use `condition: on-failure` with max_attempts, or leave max_attempts out");
                None
            }
            "any" => Some(RestartPolicy::Always),
            other => {
                self.err(
                    join(path, "condition"),
                    format!("{other:?} is not a condition: none, on-failure or any"),
                );
                None
            }
        };
        (policy, timing)
    }

    /// `deploy.update_config` (`rollback_config` without `failure_action: rollback`),
    /// Swarm's fields; what is left out keeps capstan's default.
    fn update_config(&mut self, path: &str, v: &Value, update: bool) -> UpdateConfig {
        let keys = [
            "parallelism",
            "delay",
            "order",
            "failure_action",
            "monitor",
            "max_failure_ratio",
        ];
        let mut u = UpdateConfig::default();
        for (key, val) in self.map(path, v, &keys) {
            let field = join(path, &key);
            match key.as_str() {
                "parallelism" => {
                    u.parallelism = self
                        .integer(&field, val, 0, u32::MAX as i64)
                        .map(|n| n as u32)
                }
                "delay" => u.delay_ms = self.duration_ms(&field, val),
                "monitor" => u.monitor_ms = self.duration_ms(&field, val),
                "order" => u.order = self.update_order(&field, val),
                "failure_action" => u.failure_action = self.failure_action(&field, val, update),
                _ => u.max_failure_permille = self.ratio_permille(&field, val),
            }
        }
        u
    }

    fn update_order(&mut self, path: &str, v: &Value) -> Option<UpdateOrder> {
        match self.string(path, v)?.as_str() {
            "start-first" => Some(UpdateOrder::StartFirst),
            "stop-first" => Some(UpdateOrder::StopFirst),
            other => {
                self.err(
                    path,
                    format!("{other:?} is not an order: start-first or stop-first"),
                );
                None
            }
        }
    }

    fn failure_action(&mut self, path: &str, v: &Value, update: bool) -> Option<FailureAction> {
        match self.string(path, v)?.as_str() {
            "pause" => Some(FailureAction::Pause),
            "continue" => Some(FailureAction::Continue),
            "rollback" if update => Some(FailureAction::Rollback),
            "rollback" => {
                self.err(
                    path,
                    "a rollback cannot itself roll back: pause or continue",
                );
                None
            }
            other => {
                self.err(
                    path,
                    format!("{other:?} is not a failure action: pause, continue or rollback"),
                );
                None
            }
        }
    }

    /// A share from 0 to 1, in thousandths.
    fn ratio_permille(&mut self, path: &str, v: &Value) -> Option<u32> {
        let text = self.string(path, v)?;
        match text.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Some((r * 1000.0).round() as u32),
            _ => {
                self.err(
                    path,
                    format!("{text:?} is not a ratio: a number from 0 to 1, such as 0.2"),
                );
                None
            }
        }
    }

    /// A duration of at most a day, in milliseconds.
    fn duration_ms(&mut self, path: &str, v: &Value) -> Option<u64> {
        let ms = (self.duration_ns(path, v)? / 1_000_000).unsigned_abs();
        if ms > 86_400_000 {
            self.err(path, "must be at most 24h");
            return None;
        }
        Some(ms)
    }

    /// Folds `deploy.resources` into the options; the same limit given twice must agree.
    pub(super) fn merge_resources(
        &mut self,
        path: &str,
        o: &mut ContainerOptions,
        r: ContainerOptions,
    ) {
        let pairs = [
            ("mem_limit", "limits.memory", &mut o.memory, r.memory),
            ("cpus", "limits.cpus", &mut o.nano_cpus, r.nano_cpus),
            ("pids_limit", "limits.pids", &mut o.pids_limit, r.pids_limit),
            (
                "mem_reservation",
                "reservations.memory",
                &mut o.memory_reservation,
                r.memory_reservation,
            ),
        ];
        for (key, deploy_key, mine, theirs) in pairs {
            match (*mine, theirs) {
                (Some(a), Some(b)) if a != b => self.errors.push(super::FieldError {
                    field: format!("{path}.deploy.resources.{deploy_key}"),
                    reason: format!(
                        "conflicts with `{key}` of the same service; give the limit once"
                    ),
                }),
                (None, Some(b)) => *mine = Some(b),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::spec::*;

    #[test]
    fn resources_labels_mode_and_restart_policy_map_onto_the_spec() {
        let spec = parse_stack(
            "s",
            r#"
services:
  web:
    image: x
    deploy:
      mode: global
      labels: {team: web}
      resources:
        limits: {cpus: "1.5", memory: 512m, pids: 200}
        reservations: {memory: 64m}
      restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s, window: 2m}
  job:
    image: x
    restart: "no"
    deploy: {restart_policy: {condition: any}}
"#,
        )
        .unwrap();
        let web = &spec.services["web"];
        assert_eq!(web.replicas, 1);
        assert_eq!(web.deploy_labels["team"], "web");
        assert_eq!(web.options.nano_cpus, Some(1_500_000_000));
        assert_eq!(web.options.memory, Some(512 << 20));
        assert_eq!(web.options.pids_limit, Some(200));
        assert_eq!(web.options.memory_reservation, Some(64 << 20));
        assert_eq!(
            web.restart,
            Some(RestartPolicy::OnFailure {
                max_retries: Some(3)
            })
        );
        assert_eq!(
            spec.services["job"].restart,
            Some(RestartPolicy::No),
            "`restart` wins, as in Compose"
        );
    }

    #[test]
    fn what_one_host_cannot_honour_is_refused_by_name() {
        let f = fields(
            r#"services: {web: {image: x, mem_limit: 1g, deploy: {mode: global, replicas: 3,
               resources: {limits: {memory: 2g}, reservations: {cpus: "1"}},
               restart_policy: {condition: any, delay: 48h, max_attempts: 2}, placement: {}}}}"#,
        );
        assert_eq!(
            f,
            vec![
                "services.web.deploy.placement",
                "services.web.deploy.resources.reservations.cpus",
                "services.web.deploy.restart_policy.delay",
                "services.web.deploy.restart_policy.max_attempts",
                "services.web.deploy.mode",
                "services.web.deploy.resources.limits.memory",
            ]
        );
    }

    #[test]
    fn update_config_takes_swarms_fields_and_leaves_the_rest_to_capstans_defaults() {
        let spec = parse_stack(
            "s",
            r#"
services:
  web:
    image: x
    deploy:
      update_config: {parallelism: 2, delay: 1500ms, order: stop-first, failure_action: continue, monitor: 20s, max_failure_ratio: 0.25}
  api:
    image: x
    deploy: {update_config: {parallelism: 0, failure_action: rollback}, rollback_config: {parallelism: 2}}
"#,
        )
        .unwrap();
        let u = spec.services["web"].update_config.unwrap();
        assert_eq!(
            u,
            UpdateConfig {
                parallelism: Some(2),
                delay_ms: Some(1500),
                order: Some(UpdateOrder::StopFirst),
                failure_action: Some(FailureAction::Continue),
                monitor_ms: Some(20_000),
                max_failure_permille: Some(250),
            }
        );
        assert_eq!(u.batch(10), 2);
        assert!(!u.too_many_failures(1, 4) && u.too_many_failures(2, 4));
        let all = spec.services["api"].update_config.unwrap();
        assert_eq!(
            (all.batch(10), all.order(), all.failure_action()),
            (10, UpdateOrder::StartFirst, FailureAction::Rollback)
        );
        assert_eq!(
            spec.services["api"].rollback_config.unwrap().parallelism,
            Some(2)
        );
        let none = UpdateConfig::default();
        assert_eq!(
            (none.batch(1), none.batch(4), none.batch(10)),
            (1, 1, 3),
            "a quarter, rounded up"
        );
        assert!(
            none.too_many_failures(1, 10),
            "by default any failure counts"
        );
        assert_eq!(
            none.monitor(std::time::Duration::from_secs(30)),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            spec.services["web"].container_hash(),
            ServiceSpec {
                update_config: None,
                ..spec.services["web"].clone()
            }
            .container_hash(),
            "a rollout setting does not outdate the replicas"
        );
    }

    #[test]
    fn a_wrong_update_config_field_is_named_by_its_path() {
        let f = fields(
            r#"services: {web: {image: x, deploy: {update_config: {parallelism: -1, delay: soon,
               order: sideways, failure_action: undo, max_failure_ratio: 1.5, monitor: 2d, surge: 1},
               rollback_config: {failure_action: rollback}}}}"#,
        );
        assert_eq!(
            f,
            vec![
                "services.web.deploy.update_config.surge",
                "services.web.deploy.update_config.parallelism",
                "services.web.deploy.update_config.delay",
                "services.web.deploy.update_config.order",
                "services.web.deploy.update_config.failure_action",
                "services.web.deploy.update_config.max_failure_ratio",
                "services.web.deploy.update_config.monitor",
                "services.web.deploy.rollback_config.failure_action",
            ]
        );
    }
}
