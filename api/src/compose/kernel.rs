//! The service keys the engine takes as they are, read into [`ContainerOptions`] with
//! Compose's meaning: namespaces (`ipc`, `pid`, `uts`, `userns_mode`, `cgroup`), cgroup
//! settings (`cgroup_parent`, the CPU scheduler's, `blkio_config`, `device_cgroup_rules`,
//! `mem_swappiness`), `storage_opt` and `external_links`. Each bad value is a field error
//! naming the field and what it takes: the engine's own refusal would come only at create,
//! after the stack was stored.

use super::yaml::Value;
use super::{describe, join, Parser};
use crate::spec::*;

/// The service keys read here.
pub(super) const KERNEL_KEYS: &[&str] = &[
    "ipc",
    "pid",
    "uts",
    "userns_mode",
    "cgroup",
    "cgroup_parent",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "blkio_config",
    "device_cgroup_rules",
    "mem_swappiness",
    "storage_opt",
    "external_links",
];

/// The most microseconds a CFS period may have (the kernel's bound, 1 s).
const MAX_CFS_PERIOD_US: i64 = 1_000_000;

impl Parser {
    /// Reads kernel option `key` of a service into `o`.
    pub(super) fn kernel_option(
        &mut self,
        field: &str,
        key: &str,
        v: &Value,
        o: &mut ContainerOptions,
    ) {
        match key {
            "ipc" => o.ipc = self.mode(field, v, &["host", "private", "shareable", "none"], true),
            "pid" => o.pid = self.mode(field, v, &["host"], true),
            "uts" => o.uts = self.mode(field, v, &["host"], false),
            "userns_mode" => o.userns_mode = self.mode(field, v, &["host"], false),
            "cgroup" => o.cgroup = self.mode(field, v, &["host", "private"], false),
            "cgroup_parent" => o.cgroup_parent = self.non_empty(field, v),
            "cpu_count" => o.cpu_count = self.integer(field, v, 0, i64::MAX),
            "cpu_percent" => o.cpu_percent = self.integer(field, v, 0, 100),
            "mem_swappiness" => o.mem_swappiness = self.integer(field, v, 0, 100),
            "cpu_period" => o.cpu_period = self.micros(field, v, 1000, MAX_CFS_PERIOD_US),
            "cpu_quota" => o.cpu_quota = self.quota(field, v),
            "cpu_rt_period" => o.cpu_rt_period = self.micros(field, v, 1, i64::MAX),
            "cpu_rt_runtime" => o.cpu_rt_runtime = self.micros(field, v, -1, i64::MAX),
            "blkio_config" => o.blkio = self.blkio(field, v),
            "device_cgroup_rules" => o.device_cgroup_rules = self.cgroup_rules(field, v),
            "storage_opt" => o.storage_opt = self.key_values(field, v, "storage option"),
            "external_links" => o.external_links = self.external_links(field, v),
            _ => unreachable!("{key} is in KERNEL_KEYS"),
        }
    }

    /// One of `modes`, or (`joins`) `container:NAME` / `service:NAME`.
    fn mode(&mut self, path: &str, v: &Value, modes: &[&str], joins: bool) -> Option<String> {
        let text = self.string(path, v)?;
        let joined = text
            .split_once(':')
            .filter(|(kind, name)| matches!(*kind, "container" | "service") && !name.is_empty());
        if modes.contains(&text.as_str()) || (joins && joined.is_some()) {
            return Some(text);
        }
        let mut valid: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
        if joins {
            valid.extend(["container:NAME".into(), "service:NAME".into()]);
        }
        self.err(path, format!("{text:?} is not one of {}", valid.join(", ")));
        None
    }

    fn non_empty(&mut self, path: &str, v: &Value) -> Option<String> {
        let text = self.string(path, v)?;
        if text.trim().is_empty() {
            self.err(path, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// Microseconds within `min..=max`: a whole number (microseconds, as the engine takes
    /// them) or a Compose duration (`400ms`, `1s`).
    fn micros(&mut self, path: &str, v: &Value, min: i64, max: i64) -> Option<i64> {
        let text = self.string(path, v)?;
        let n = match text.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => crate::duration::parse(&text)
                .ok()
                .and_then(|d| i64::try_from(d.as_micros()).ok()),
        };
        match n {
            Some(n) if n >= min && n <= max => Some(n),
            _ => {
                self.err(
                    path,
                    format!(
                        "must be microseconds from {min} to {max} (a whole number, or a \
                         duration such as 400ms), got {}",
                        describe(v)
                    ),
                );
                None
            }
        }
    }

    /// `cpu_quota`: -1 (no limit), 0 (unset), or at least 1 ms, as the kernel takes it.
    fn quota(&mut self, path: &str, v: &Value) -> Option<i64> {
        let n = self.micros(path, v, -1, i64::MAX)?;
        if (1..1000).contains(&n) {
            self.err(
                path,
                format!("{n} microseconds is below the kernel's least CFS quota of 1000 (1 ms)"),
            );
            return None;
        }
        Some(n)
    }

    /// `blkio_config`: `weight`, `weight_device`, and the four throttles.
    fn blkio(&mut self, path: &str, v: &Value) -> Option<Blkio> {
        const KEYS: &[&str] = &[
            "weight",
            "weight_device",
            "device_read_bps",
            "device_write_bps",
            "device_read_iops",
            "device_write_iops",
        ];
        let mut b = Blkio::default();
        for (key, val) in self.map(path, v, KEYS) {
            let field = join(path, &key);
            match key.as_str() {
                "weight" => b.weight = self.weight(&field, val),
                "weight_device" => b.weight_device = self.device_rates(&field, val, Rate::Weight),
                "device_read_bps" => {
                    b.device_read_bps = self.device_rates(&field, val, Rate::Bytes)
                }
                "device_write_bps" => {
                    b.device_write_bps = self.device_rates(&field, val, Rate::Bytes)
                }
                "device_read_iops" => {
                    b.device_read_iops = self.device_rates(&field, val, Rate::Operations)
                }
                _ => b.device_write_iops = self.device_rates(&field, val, Rate::Operations),
            }
        }
        Some(b)
    }

    /// A block IO weight: 10 to 1000, as the kernel takes it.
    fn weight(&mut self, path: &str, v: &Value) -> Option<u16> {
        self.integer(path, v, 10, 1000).map(|n| n as u16)
    }

    /// `[{path: /dev/sda, weight: 400}]` or `[{path: /dev/sda, rate: 20mb}]`.
    fn device_rates(&mut self, path: &str, v: &Value, rate: Rate) -> Vec<DeviceRate> {
        let Some(items) = v.as_sequence() else {
            self.err(path, format!("must be a list of {{path, {}}}", rate.key()));
            return vec![];
        };
        let mut out = vec![];
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            let (mut device, mut value) = (None, None);
            for (key, val) in self.map(&field, item, &["path", rate.key()]) {
                let kfield = join(&field, &key);
                if key == "path" {
                    device = self.absolute_device(&kfield, val);
                } else {
                    value = match rate {
                        Rate::Weight => self.weight(&kfield, val).map(i64::from),
                        Rate::Bytes => self.bytes(&kfield, val),
                        Rate::Operations => self.integer(&kfield, val, 0, i64::MAX),
                    };
                }
            }
            match (device, value) {
                (Some(path), Some(rate)) => out.push(DeviceRate { path, rate }),
                _ if self.errors.iter().any(|e| e.field.starts_with(&field)) => {}
                _ => self.err(&field, format!("needs both `path` and `{}`", rate.key())),
            }
        }
        out
    }

    fn absolute_device(&mut self, path: &str, v: &Value) -> Option<String> {
        let p = self.string(path, v)?;
        if p.starts_with('/') {
            return Some(p);
        }
        self.err(
            path,
            format!("{p:?} must be the absolute path of a host device"),
        );
        None
    }

    /// `c 1:3 mr`: a type (`a`, `b`, `c`), `MAJOR:MINOR` (numbers or `*`) and the access
    /// (`r`, `w`, `m`), as the engine takes a rule.
    fn cgroup_rules(&mut self, path: &str, v: &Value) -> Vec<String> {
        let mut out = vec![];
        for (i, rule) in self.strings(path, v).into_iter().enumerate() {
            if is_cgroup_rule(&rule) {
                out.push(rule);
            } else {
                self.err(
                    format!("{path}[{i}]"),
                    format!("{rule:?} is not a device cgroup rule: TYPE MAJOR:MINOR ACCESS, such as \"c 1:3 mr\" (TYPE a, b or c; MAJOR and MINOR numbers or *; ACCESS of r, w, m)"),
                );
            }
        }
        out
    }

    /// `CONTAINER[:ALIAS]` → the engine's `CONTAINER:ALIAS`.
    fn external_links(&mut self, path: &str, v: &Value) -> Vec<String> {
        let mut out = vec![];
        for (i, entry) in self.strings(path, v).into_iter().enumerate() {
            let (container, alias) = entry.split_once(':').unwrap_or((&entry, &entry));
            let ok = crate::names::engine_name(container).is_ok()
                && !alias.is_empty()
                && !alias.contains(':');
            if ok {
                out.push(format!("{container}:{alias}"));
            } else {
                self.err(
                    format!("{path}[{i}]"),
                    format!("{entry:?} is not CONTAINER or CONTAINER:ALIAS"),
                );
            }
        }
        out
    }

    /// What the engine would refuse at create: a `hostname` in the host's UTS namespace
    /// (the host's name is the container's), a CFS period or quota next to nano-CPUs (its
    /// `cpus`), and a real-time runtime beyond its period.
    pub(super) fn check_kernel(&mut self, path: &str, o: &ContainerOptions) {
        if o.uts.as_deref() == Some("host") && o.hostname.is_some() {
            self.err(
                join(path, "hostname"),
                "with `uts: host` the container has the host's name: remove `hostname`",
            );
        }
        if o.nano_cpus.is_some() {
            for (key, set) in [
                ("cpu_period", o.cpu_period.is_some()),
                ("cpu_quota", o.cpu_quota.is_some()),
            ] {
                if set {
                    self.err(join(path, key), format!("`{key}` and `cpus` (or `deploy.resources.limits.cpus`) both limit the CPU time; the engine takes one of them: give either"));
                }
            }
        }
        if let (Some(runtime), Some(period)) = (o.cpu_rt_runtime, o.cpu_rt_period) {
            if runtime > period {
                self.err(
                    join(path, "cpu_rt_runtime"),
                    format!("{runtime} microseconds is more than the real-time period of {period}"),
                );
            }
        }
    }

    /// `ipc`/`pid: service:NAME`: NAME is another service of the stack, which starts first
    /// (an implicit `depends_on`, as for `links`); its first replica is the one joined.
    pub(super) fn join_namespaces(&mut self, spec: &mut StackSpec) {
        let before = spec.clone();
        for (name, svc) in spec.services.iter_mut() {
            let modes = [
                ("ipc", svc.options.ipc.clone()),
                ("pid", svc.options.pid.clone()),
            ];
            for (key, mode) in modes {
                let Some(target) = mode.as_deref().and_then(|m| m.strip_prefix("service:")) else {
                    continue;
                };
                let field = format!("services.{name}.{key}");
                match before.services.get(target) {
                    None => self.err(field, format!("service {target:?} is not in this stack")),
                    Some(_) if target == name => {
                        self.err(field, "a service cannot join its own namespace")
                    }
                    Some(t) if t.options.container_name.is_some() => self.err(
                        field,
                        format!(
                            "{target} has a `container_name`: write `container:{}` instead",
                            t.options.container_name.as_deref().unwrap_or_default()
                        ),
                    ),
                    Some(_) => {
                        svc.depends_on
                            .entry(target.to_string())
                            .or_insert(Dependency {
                                condition: DependencyCondition::ServiceStarted,
                                required: true,
                                restart: false,
                            });
                    }
                }
            }
        }
    }
}

/// What a `blkio_config` device entry carries.
#[derive(Clone, Copy)]
enum Rate {
    Weight,
    Bytes,
    Operations,
}

impl Rate {
    fn key(self) -> &'static str {
        match self {
            Rate::Weight => "weight",
            Rate::Bytes | Rate::Operations => "rate",
        }
    }
}

/// Whether `rule` is a device cgroup rule the engine takes: `TYPE MAJOR:MINOR ACCESS`.
pub fn is_cgroup_rule(rule: &str) -> bool {
    let number = |s: &str| s == "*" || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    let parts: Vec<&str> = rule.split(' ').collect();
    let [kind, numbers, access] = parts.as_slice() else {
        return false;
    };
    let numbers_ok = numbers
        .split_once(':')
        .is_some_and(|(major, minor)| number(major) && number(minor));
    matches!(*kind, "a" | "b" | "c")
        && numbers_ok
        && (1..=3).contains(&access.len())
        && access.chars().all(|c| "rwm".contains(c))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn service(yaml: &str) -> ServiceSpec {
        web(yaml)
    }

    fn options(yaml: &str) -> ContainerOptions {
        web(yaml).options
    }

    #[test]
    fn namespaces_take_the_modes_compose_documents() {
        let o = options(
            "ipc: shareable, pid: host, uts: host, userns_mode: host, cgroup: private, cgroup_parent: /capstan",
        );
        assert_eq!(o.ipc.as_deref(), Some("shareable"));
        assert_eq!(o.pid.as_deref(), Some("host"));
        assert_eq!(o.uts.as_deref(), Some("host"));
        assert_eq!(o.userns_mode.as_deref(), Some("host"));
        assert_eq!(o.cgroup.as_deref(), Some("private"));
        assert_eq!(o.cgroup_parent.as_deref(), Some("/capstan"));
        assert_eq!(
            options("ipc: 'container:other'").ipc.as_deref(),
            Some("container:other")
        );
    }

    #[test]
    fn joining_a_services_namespace_makes_it_a_dependency() {
        let s = service("ipc: 'service:db', pid: 'service:db'");
        assert_eq!(s.options.ipc.as_deref(), Some("service:db"));
        assert_eq!(
            s.depends_on["db"].condition,
            DependencyCondition::ServiceStarted
        );
    }

    #[test]
    fn a_namespace_of_a_missing_or_named_service_is_refused_with_the_way_out() {
        assert_eq!(
            fields("services: {web: {image: x, pid: 'service:nope', ipc: 'service:web'}}"),
            vec!["services.web.ipc", "services.web.pid"]
        );
        let errs = errors("services: {web: {image: x, ipc: 'service:db'}, db: {image: x, container_name: the-db}}");
        assert!(
            errs[0].reason.contains("container:the-db"),
            "{}",
            errs[0].reason
        );
    }

    #[test]
    fn cpu_scheduler_options_are_microseconds_from_numbers_or_durations() {
        let o = options(
            "cpu_count: 2, cpu_percent: 50, cpu_period: 100000, cpu_quota: 50ms, cpu_rt_period: 1s, cpu_rt_runtime: '400ms', mem_swappiness: 10",
        );
        assert_eq!((o.cpu_count, o.cpu_percent), (Some(2), Some(50)));
        assert_eq!((o.cpu_period, o.cpu_quota), (Some(100_000), Some(50_000)));
        assert_eq!(
            (o.cpu_rt_period, o.cpu_rt_runtime),
            (Some(1_000_000), Some(400_000))
        );
        assert_eq!(o.mem_swappiness, Some(10));
    }

    #[test]
    fn blkio_config_reads_weights_and_rates_in_engine_units() {
        let b = options(
            "blkio_config: {weight: 300, weight_device: [{path: /dev/sda, weight: 400}], device_read_bps: [{path: /dev/sda, rate: 12mb}], device_write_bps: [{path: /dev/sda, rate: 1024}], device_read_iops: [{path: /dev/sda, rate: 120}], device_write_iops: [{path: /dev/sdb, rate: 30}]}",
        )
        .blkio
        .unwrap();
        assert_eq!(b.weight, Some(300));
        let rate = |path: &str, rate: i64| {
            vec![DeviceRate {
                path: path.into(),
                rate,
            }]
        };
        assert_eq!(b.weight_device, rate("/dev/sda", 400));
        assert_eq!(b.device_read_bps, rate("/dev/sda", 12 << 20));
        assert_eq!(b.device_write_bps, rate("/dev/sda", 1024));
        assert_eq!(b.device_read_iops, rate("/dev/sda", 120));
        assert_eq!(b.device_write_iops, rate("/dev/sdb", 30));
    }

    #[test]
    fn device_rules_storage_options_and_external_links_pass_as_the_engine_takes_them() {
        let o = options(
            "device_cgroup_rules: ['c 1:3 mr', 'a *:* rwm'], storage_opt: {size: 1G}, external_links: [redis, 'db-1:database']",
        );
        assert_eq!(o.device_cgroup_rules, vec!["c 1:3 mr", "a *:* rwm"]);
        assert_eq!(o.storage_opt["size"], "1G");
        assert_eq!(o.external_links, vec!["redis:redis", "db-1:database"]);
    }

    #[test]
    fn each_bad_kernel_value_is_its_own_field_error() {
        let f = fields(
            r#"services: {web: {image: x, ipc: hots, pid: private, uts: container, userns_mode: remap, cgroup: shared,
               cgroup_parent: "", cpu_percent: 101, cpu_period: 10, cpu_quota: 999, cpu_rt_runtime: soon,
               mem_swappiness: -1, blkio_config: {weight: 5, device_read_bps: [{path: sda, rate: fast}], device_write_iops: [{path: /dev/sda}]},
               device_cgroup_rules: ["c 1:3", "x *:* r"], external_links: ["a:b:c"], storage_opt: [size]}}"#,
        );
        assert_eq!(
            f,
            vec![
                "services.web.ipc",
                "services.web.pid",
                "services.web.uts",
                "services.web.userns_mode",
                "services.web.cgroup",
                "services.web.cgroup_parent",
                "services.web.cpu_percent",
                "services.web.cpu_period",
                "services.web.cpu_quota",
                "services.web.cpu_rt_runtime",
                "services.web.mem_swappiness",
                "services.web.blkio_config.weight",
                "services.web.blkio_config.device_read_bps[0].path",
                "services.web.blkio_config.device_read_bps[0].rate",
                "services.web.blkio_config.device_write_iops[0]",
                "services.web.device_cgroup_rules[0]",
                "services.web.device_cgroup_rules[1]",
                "services.web.external_links[0]",
                "services.web.storage_opt[0]",
            ]
        );
    }

    #[test]
    fn a_hostname_in_the_hosts_uts_namespace_is_refused_as_the_engine_would() {
        assert_eq!(
            fields("services: {web: {image: x, uts: host, hostname: web}}"),
            vec!["services.web.hostname"]
        );
    }

    #[test]
    fn a_cfs_limit_next_to_cpus_or_a_runtime_beyond_its_period_is_refused() {
        assert_eq!(
            fields("services: {web: {image: x, cpus: 0.5, cpu_quota: 50000, cpu_period: 100000}}"),
            vec!["services.web.cpu_period", "services.web.cpu_quota"]
        );
        assert_eq!(
            fields("services: {web: {image: x, cpu_rt_period: 1000, cpu_rt_runtime: 2000}}"),
            vec!["services.web.cpu_rt_runtime"]
        );
    }

    #[test]
    fn each_kernel_option_changes_the_container_hash_only_when_set() {
        let plain = service("").container_hash();
        for yaml in [
            "ipc: host",
            "pid: host",
            "uts: host",
            "userns_mode: host",
            "cgroup: host",
            "cgroup_parent: p",
            "cpu_count: 1",
            "cpu_percent: 1",
            "cpu_period: 1000",
            "cpu_quota: 1000",
            "cpu_rt_period: 1000",
            "cpu_rt_runtime: 10",
            "blkio_config: {weight: 10}",
            "device_cgroup_rules: ['c 1:3 r']",
            "mem_swappiness: 0",
            "storage_opt: {size: 1G}",
            "external_links: [xy]",
        ] {
            assert_ne!(service(yaml).container_hash(), plain, "{yaml}");
        }
        assert_eq!(service("x-note: 1").container_hash(), plain);
    }
}
