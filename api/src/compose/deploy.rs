//! A service's `deploy` section: `replicas`, `mode`, `resources`, `labels`, `restart_policy`.
//! What only a cluster scheduler could honour (`placement`, `update_config`, ...) is refused
//! by name.

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
}

impl Parser {
    pub(super) fn deploy(&mut self, path: &str, v: &Value, s: &mut ServiceSpec) -> Deploy {
        let mut d = Deploy::default();
        let keys = ["replicas", "mode", "resources", "labels", "restart_policy"];
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
}
