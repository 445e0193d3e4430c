//! A service's container options (`user`, `cap_add`, `ulimits`, `mem_limit`, ...), read into
//! [`ContainerOptions`] in the engine's units. Each bad value is a field error of its own.

use super::yaml::Value;
use super::{describe, join, kind, Parser};
use crate::spec::*;
use std::collections::BTreeMap;

/// The service keys read here.
pub(super) const OPTION_KEYS: &[&str] = &[
    "container_name",
    "expose",
    "hostname",
    "domainname",
    "user",
    "group_add",
    "working_dir",
    "stop_signal",
    "cap_add",
    "cap_drop",
    "read_only",
    "tmpfs",
    "shm_size",
    "ulimits",
    "sysctls",
    "security_opt",
    "init",
    "tty",
    "stdin_open",
    "privileged",
    "logging",
    "extra_hosts",
    "dns",
    "dns_search",
    "dns_opt",
    "mac_address",
    "devices",
    "pids_limit",
    "mem_limit",
    "memswap_limit",
    "mem_reservation",
    "cpus",
    "cpu_shares",
    "cpuset",
    "oom_score_adj",
    "oom_kill_disable",
    "platform",
    "runtime",
    "annotations",
    "network_mode",
    "volumes_from",
];

impl Parser {
    /// Reads option `key` of a service into `o`.
    pub(super) fn option(&mut self, field: &str, key: &str, v: &Value, o: &mut ContainerOptions) {
        match key {
            "container_name" => o.container_name = self.container_name(field, v),
            "expose" => o.expose = self.exposed(field, v),
            "hostname" => o.hostname = self.host_name(field, "hostname", v),
            "domainname" => o.domainname = self.host_name(field, "domainname", v),
            "user" => o.user = self.string(field, v),
            "working_dir" => o.working_dir = self.absolute(field, v),
            "stop_signal" => o.stop_signal = self.string(field, v),
            "mac_address" => o.mac_address = self.string(field, v),
            "cpuset" => o.cpuset = self.string(field, v),
            "platform" => o.platform = self.string(field, v),
            "runtime" => o.runtime = self.string(field, v),
            "group_add" => o.group_add = self.strings(field, v),
            "cap_add" => o.cap_add = self.strings(field, v),
            "cap_drop" => o.cap_drop = self.strings(field, v),
            "security_opt" => o.security_opt = self.strings(field, v),
            "dns" => o.dns = self.strings(field, v),
            "dns_search" => o.dns_search = self.strings(field, v),
            "dns_opt" => o.dns_opt = self.strings(field, v),
            "read_only" => o.read_only = Some(self.bool(field, v)),
            "init" => o.init = Some(self.bool(field, v)),
            "tty" => o.tty = Some(self.bool(field, v)),
            "stdin_open" => o.stdin_open = Some(self.bool(field, v)),
            "privileged" => o.privileged = Some(self.bool(field, v)),
            "oom_kill_disable" => o.oom_kill_disable = Some(self.bool(field, v)),
            "sysctls" => o.sysctls = self.key_values(field, v, "sysctl"),
            "annotations" => o.annotations = self.key_values(field, v, "annotation"),
            "tmpfs" => o.tmpfs = self.tmpfs(field, v),
            "ulimits" => o.ulimits = self.ulimits(field, v),
            "logging" => o.logging = self.logging(field, v),
            "extra_hosts" => o.extra_hosts = self.extra_hosts(field, v),
            "devices" => o.devices = self.devices(field, v),
            "shm_size" => o.shm_size = self.bytes(field, v),
            "mem_limit" => o.memory = self.bytes(field, v),
            "memswap_limit" => o.memory_swap = self.swap(field, v),
            "mem_reservation" => o.memory_reservation = self.bytes(field, v),
            "cpus" => o.nano_cpus = self.cpus(field, v),
            "pids_limit" => o.pids_limit = self.integer(field, v, -1, i64::MAX),
            "cpu_shares" => o.cpu_shares = self.integer(field, v, 0, i64::MAX),
            "oom_score_adj" => o.oom_score_adj = self.integer(field, v, -1000, 1000),
            "network_mode" => o.network_mode = self.network_mode(field, v),
            "volumes_from" => o.volumes_from = self.volumes_from(field, v),
            _ => self.kernel_option(field, key, v, o),
        }
    }

    fn container_name(&mut self, path: &str, v: &Value) -> Option<String> {
        self.engine_name(path, "container name", v)
    }

    /// `hostname`, `domainname`: [`crate::names::host_name`], as the kernel takes them.
    fn host_name(&mut self, path: &str, what: &str, v: &Value) -> Option<String> {
        let name = self.string(path, v)?;
        self.check_name(path, what, &name, crate::names::host_name)
            .then_some(name)
    }

    fn absolute(&mut self, path: &str, v: &Value) -> Option<String> {
        let p = self.string(path, v)?;
        if !p.starts_with('/') {
            self.err(
                path,
                format!("{p:?} must be an absolute path in the container"),
            );
            return None;
        }
        Some(p)
    }

    /// A string or a list of strings (numbers read as text: `group_add: [1000]`).
    pub(super) fn strings(&mut self, path: &str, v: &Value) -> Vec<String> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(&format!("{path}[{i}]"), item))
                .collect(),
            Value::String(_) | Value::Number(_) => self.string(path, v).into_iter().collect(),
            Value::Null => vec![],
            other => {
                self.err(
                    path,
                    format!("must be a list of strings, got {}", kind(other)),
                );
                vec![]
            }
        }
    }

    /// `80`, `"8000-8002"`, `"53/udp"`.
    fn exposed(&mut self, path: &str, v: &Value) -> Vec<String> {
        let mut out = vec![];
        for (i, text) in self.strings(path, v).into_iter().enumerate() {
            let (ports, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
            let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
            let ok = matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a > 0 && a <= b)
                && matches!(proto, "tcp" | "udp" | "sctp");
            if ok {
                out.push(format!("{ports}/{proto}"));
            } else {
                self.err(format!("{path}[{i}]"), format!("{text:?} is not PORT[-END][/PROTOCOL] with ports 1-65535 and tcp, udp or sctp"));
            }
        }
        out
    }

    /// A whole number within `min..=max`.
    pub(super) fn integer(&mut self, path: &str, v: &Value, min: i64, max: i64) -> Option<i64> {
        let n = match v {
            Value::Number(_) | Value::String(_) => {
                v.scalar_text().and_then(|t| t.parse::<i64>().ok())
            }
            _ => None,
        };
        match n {
            Some(n) if n >= min && n <= max => Some(n),
            _ => {
                self.err(
                    path,
                    format!(
                        "must be a whole number from {min} to {max}, got {}",
                        describe(v)
                    ),
                );
                None
            }
        }
    }

    /// A byte size: a number of bytes, or `512k`, `64m`, `1.5g` (powers of 1024, as Compose).
    pub(super) fn bytes(&mut self, path: &str, v: &Value) -> Option<i64> {
        let text = self.string(path, v)?;
        match parse_bytes(&text) {
            Some(n) => Some(n),
            None => {
                self.err(path, format!("{text:?} is not a size: a number of bytes, or a number with b, k, m or g (up to 8 EiB)"));
                None
            }
        }
    }

    /// `memswap_limit`: a size, or -1 for unlimited swap.
    fn swap(&mut self, path: &str, v: &Value) -> Option<i64> {
        if v.scalar_text().as_deref() == Some("-1") {
            return Some(-1);
        }
        self.bytes(path, v)
    }

    /// `cpus: 0.5` → nano-CPUs.
    pub(super) fn cpus(&mut self, path: &str, v: &Value) -> Option<i64> {
        let text = self.string(path, v)?;
        match text.trim().parse::<f64>() {
            Ok(c) if c.is_finite() && c > 0.0 && c <= 1_000_000.0 => Some((c * 1e9).round() as i64),
            Ok(0.0) => None,
            _ => {
                self.err(
                    path,
                    format!("{text:?} is not a CPU count: a number above 0, such as 0.5 or 2"),
                );
                None
            }
        }
    }

    /// A list of `PATH[:OPTIONS]` (or one such string).
    fn tmpfs(&mut self, path: &str, v: &Value) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (i, entry) in self.strings(path, v).into_iter().enumerate() {
            let (target, opts) = entry.split_once(':').unwrap_or((&entry, ""));
            if target.starts_with('/') {
                out.insert(target.to_string(), opts.to_string());
            } else {
                self.err(
                    format!("{path}[{i}]"),
                    format!("{entry:?}: the tmpfs path {target:?} must be absolute"),
                );
            }
        }
        out
    }

    /// `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
    fn ulimits(&mut self, path: &str, v: &Value) -> BTreeMap<String, Ulimit> {
        let mut out = BTreeMap::new();
        for (name, val) in self.map(path, v, &[]) {
            let field = join(path, &name);
            let limit = if val.is_mapping() {
                let (mut soft, mut hard) = (None, None);
                for (key, lv) in self.map(&field, val, &["soft", "hard"]) {
                    let n = self.integer(&join(&field, &key), lv, -1, i64::MAX);
                    if key == "soft" {
                        soft = n
                    } else {
                        hard = n
                    }
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) if soft <= hard || hard == -1 => {
                        Some(Ulimit { soft, hard })
                    }
                    (Some(_), Some(_)) => {
                        self.err(&field, "the soft limit must not exceed the hard limit");
                        None
                    }
                    _ if self.errors.iter().any(|e| e.field.starts_with(&field)) => None,
                    _ => {
                        self.err(&field, "needs both `soft` and `hard`");
                        None
                    }
                }
            } else {
                self.integer(&field, val, -1, i64::MAX)
                    .map(|n| Ulimit { soft: n, hard: n })
            };
            if let Some(l) = limit {
                out.insert(name, l);
            }
        }
        out
    }

    fn logging(&mut self, path: &str, v: &Value) -> Option<Logging> {
        let mut l = Logging::default();
        for (key, val) in self.map(path, v, &["driver", "options"]) {
            let field = join(path, &key);
            match key.as_str() {
                "driver" => l.driver = self.string(&field, val),
                _ => l.options = self.key_values(&field, val, "option"),
            }
        }
        Some(l)
    }

    /// `["host:ip"]`, `["host=ip"]` or `{host: ip}`, given to the engine as `host:ip`.
    pub(super) fn extra_hosts(&mut self, path: &str, v: &Value) -> Vec<String> {
        let pairs: Vec<(String, String, String)> = match v {
            Value::Mapping(_) => self
                .key_values(path, v, "host")
                .into_iter()
                .map(|(h, ip)| (join(path, &h), h, ip))
                .collect(),
            _ => self
                .strings(path, v)
                .into_iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    let field = format!("{path}[{i}]");
                    match e.split_once('=').or_else(|| e.split_once(':')) {
                        Some((h, ip)) => Some((field, h.to_string(), ip.to_string())),
                        None => {
                            self.err(&field, format!("{e:?} is not HOST:IP or HOST=IP"));
                            None
                        }
                    }
                })
                .collect(),
        };
        let mut out = vec![];
        for (field, host, ip) in pairs {
            let bare = ip.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty()
                || (bare.parse::<std::net::IpAddr>().is_err() && bare != "host-gateway")
            {
                self.err(
                    field,
                    format!("{host}:{ip}: needs a host name and an IP address (or host-gateway)"),
                );
            } else {
                out.push(format!("{host}:{bare}"));
            }
        }
        out
    }

    /// `HOST[:CONTAINER[:PERMISSIONS]]`.
    fn devices(&mut self, path: &str, v: &Value) -> Vec<Device> {
        let mut out = vec![];
        for (i, entry) in self.strings(path, v).into_iter().enumerate() {
            let parts: Vec<&str> = entry.split(':').collect();
            let (host, container, perms) = match parts.as_slice() {
                [h] => (*h, *h, "rwm"),
                [h, c] if c.starts_with('/') => (*h, *c, "rwm"),
                [h, p] => (*h, *h, *p),
                [h, c, p] => (*h, *c, *p),
                _ => ("", "", ""),
            };
            let perms_ok = !perms.is_empty() && perms.chars().all(|c| "rwm".contains(c));
            if host.starts_with('/') && container.starts_with('/') && perms_ok {
                out.push(Device {
                    host: host.into(),
                    container: container.into(),
                    permissions: perms.into(),
                });
            } else {
                self.err(
                    format!("{path}[{i}]"),
                    format!("{entry:?} is not HOST_PATH[:CONTAINER_PATH][:rwm]"),
                );
            }
        }
        out
    }

    fn network_mode(&mut self, path: &str, v: &Value) -> Option<NetworkMode> {
        match self.string(path, v)?.as_str() {
            "host" => Some(NetworkMode::Host),
            "none" => Some(NetworkMode::None),
            "bridge" | "default" => {
                self.err(path, "\"bridge\" and \"default\" would leave the stack's networks: leave `network_mode` out to join the stack's default network");
                None
            }
            other => match partner(other) {
                Some(p) => Some(NetworkMode::Partner(p)),
                None => {
                    self.err(path, format!("{other:?} is not a network mode capstan supports: host, none, service:NAME or container:NAME"));
                    None
                }
            },
        }
    }

    /// `[SERVICE, "SERVICE:ro", "container:NAME:rw"]`; the partners are resolved once every
    /// service is read.
    fn volumes_from(&mut self, path: &str, v: &Value) -> Vec<VolumesFrom> {
        let mut out = vec![];
        for (i, entry) in self.strings(path, v).into_iter().enumerate() {
            let (target, mode) = match entry.rsplit_once(':') {
                Some((t, m)) if m == "ro" || m == "rw" => (t, m),
                _ => (entry.as_str(), "rw"),
            };
            let target = if target.contains(':') {
                partner(target)
            } else {
                partner(&format!("service:{target}"))
            };
            match target {
                Some(partner) => out.push(VolumesFrom {
                    partner,
                    read_only: mode == "ro",
                }),
                None => self.err(
                    format!("{path}[{i}]"),
                    format!("{entry:?} is not SERVICE[:ro|:rw] or container:NAME[:ro|:rw]"),
                ),
            }
        }
        out
    }
}

/// `service:NAME` or `container:NAME`, not yet resolved (a container's service is found once
/// every service is read).
fn partner(text: &str) -> Option<Partner> {
    let (kind, name) = text.split_once(':')?;
    if name.is_empty() || name.contains(':') {
        return None;
    }
    match kind {
        "service" => Some(Partner {
            service: name.into(),
            ..Default::default()
        }),
        "container" => Some(Partner {
            container: Some(name.into()),
            ..Default::default()
        }),
        _ => None,
    }
}

/// `1024`, `512k`, `64m`, `1.5g`, `2gb` → bytes (powers of 1024). `None` when malformed,
/// negative or beyond `i64`.
pub(super) fn parse_bytes(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, ' '),
    };
    let mult: f64 = match unit {
        ' ' => 1.0,
        'k' => 1024.0,
        'm' => 1024.0 * 1024.0,
        'g' => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = num.trim().parse().ok()?;
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn options(yaml: &str) -> ContainerOptions {
        web(yaml).options
    }

    #[test]
    fn sizes_are_powers_of_1024_and_never_wrap() {
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("2GB"), Some(2 << 30));
        assert_eq!(parse_bytes("512kb"), Some(512 << 10));
        assert_eq!(parse_bytes("1e30g"), None);
        assert_eq!(parse_bytes("-5m"), None);
        assert_eq!(parse_bytes("5x"), None);
    }

    #[test]
    fn identity_and_process_options_parse() {
        let o = options(
            r#"container_name: web-main, hostname: h, domainname: example.org, user: "1000:1000",
               group_add: [audio, 44], working_dir: /srv, stop_signal: SIGINT, init: true, tty: true,
               stdin_open: true, read_only: true, privileged: false, platform: linux/amd64, runtime: runc"#,
        );
        assert_eq!(o.container_name.as_deref(), Some("web-main"));
        assert_eq!(o.hostname.as_deref(), Some("h"));
        assert_eq!(o.domainname.as_deref(), Some("example.org"));
        assert_eq!(o.user.as_deref(), Some("1000:1000"));
        assert_eq!(o.group_add, vec!["audio", "44"]);
        assert_eq!(o.working_dir.as_deref(), Some("/srv"));
        assert_eq!(o.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(
            (o.init, o.tty, o.stdin_open, o.read_only),
            (Some(true), Some(true), Some(true), Some(true))
        );
        assert_eq!(o.privileged, Some(false));
        assert_eq!(o.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(o.runtime.as_deref(), Some("runc"));
    }

    #[test]
    fn kernel_and_resource_options_parse_into_engine_units() {
        let o = options(
            r#"cap_add: [NET_ADMIN], cap_drop: [ALL], tmpfs: ["/run:size=1m", /tmp], shm_size: 64m,
               ulimits: {nproc: 65535, nofile: {soft: 1024, hard: 2048}}, sysctls: {net.core.somaxconn: 1024},
               security_opt: ["no-new-privileges:true"], mem_limit: 256m, memswap_limit: -1, mem_reservation: 128m,
               cpus: 0.5, cpu_shares: 512, cpuset: "0", pids_limit: 100, oom_score_adj: -500, oom_kill_disable: true"#,
        );
        assert_eq!(o.cap_add, vec!["NET_ADMIN"]);
        assert_eq!(o.cap_drop, vec!["ALL"]);
        assert_eq!(o.tmpfs["/run"], "size=1m");
        assert_eq!(o.tmpfs["/tmp"], "");
        assert_eq!(o.shm_size, Some(64 << 20));
        assert_eq!(
            o.ulimits["nproc"],
            Ulimit {
                soft: 65535,
                hard: 65535
            }
        );
        assert_eq!(
            o.ulimits["nofile"],
            Ulimit {
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(o.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(o.security_opt, vec!["no-new-privileges:true"]);
        assert_eq!(
            (o.memory, o.memory_swap, o.memory_reservation),
            (Some(256 << 20), Some(-1), Some(128 << 20))
        );
        assert_eq!(o.nano_cpus, Some(500_000_000));
        assert_eq!(
            (o.cpu_shares, o.pids_limit, o.oom_score_adj),
            (Some(512), Some(100), Some(-500))
        );
        assert_eq!(o.cpuset.as_deref(), Some("0"));
        assert_eq!(o.oom_kill_disable, Some(true));
    }

    #[test]
    fn network_logging_and_device_options_parse() {
        let o = options(
            r#"expose: [80, "53/udp", "8000-8002"], extra_hosts: ["db.local:10.0.0.2", "gw=host-gateway"],
               dns: 1.1.1.1, dns_search: [example.org], dns_opt: [ndots:2], mac_address: "02:42:ac:11:00:02",
               devices: ["/dev/fuse", "/dev/null:/dev/mynull:r"], annotations: {com.example: x},
               logging: {driver: json-file, options: {max-size: 10m}}"#,
        );
        assert_eq!(o.expose, vec!["80/tcp", "53/udp", "8000-8002/tcp"]);
        assert_eq!(o.extra_hosts, vec!["db.local:10.0.0.2", "gw:host-gateway"]);
        assert_eq!(o.dns, vec!["1.1.1.1"]);
        assert_eq!(o.dns_search, vec!["example.org"]);
        assert_eq!(o.dns_opt, vec!["ndots:2"]);
        assert_eq!(o.mac_address.as_deref(), Some("02:42:ac:11:00:02"));
        assert_eq!(
            o.devices[1],
            Device {
                host: "/dev/null".into(),
                container: "/dev/mynull".into(),
                permissions: "r".into()
            }
        );
        assert_eq!(o.devices[0].permissions, "rwm");
        assert_eq!(o.annotations["com.example"], "x");
        let l = o.logging.unwrap();
        assert_eq!(l.driver.as_deref(), Some("json-file"));
        assert_eq!(l.options["max-size"], "10m");
    }

    #[test]
    fn each_bad_value_is_its_own_field_error() {
        let f = fields(
            r#"services: {web: {image: x, shm_size: lots, cpus: -1, ulimits: {nofile: {soft: 10, hard: 5}, nproc: {soft: 1}},
               expose: ["99999", "80/xtp"], extra_hosts: [nohost], devices: [dev], oom_score_adj: 5000,
               working_dir: srv, container_name: "-bad", tmpfs: [run], network_mode: bridge, init: maybe}}"#,
        );
        assert_eq!(
            f,
            vec![
                "services.web.shm_size",
                "services.web.cpus",
                "services.web.ulimits.nofile",
                "services.web.ulimits.nproc",
                "services.web.expose[0]",
                "services.web.expose[1]",
                "services.web.extra_hosts[0]",
                "services.web.devices[0]",
                "services.web.oom_score_adj",
                "services.web.working_dir",
                "services.web.container_name",
                "services.web.tmpfs[0]",
                "services.web.network_mode",
                "services.web.init",
            ]
        );
    }
}
