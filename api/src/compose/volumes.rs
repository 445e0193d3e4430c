//! Top-level `volumes` and a service's mounts.

use super::yaml::Value;
use super::{join, kind, Parser};
use crate::names;
use crate::spec::*;
use std::collections::BTreeMap;

impl Parser {
    pub(super) fn volumes(&mut self, v: &Value) -> BTreeMap<String, VolumeSpec> {
        let mut out = BTreeMap::new();
        if v.is_null() {
            return out;
        }
        for (name, vv) in self.map("volumes", v, &[]) {
            let path = join("volumes", &name);
            // A per-replica key (`data-{{replica}}`) is checked as its first volume's name.
            let first = crate::stateful::replica_volume(&name, 1);
            self.check_name(&path, "volume key", &first, names::member_name);
            let mut vol = VolumeSpec::default();
            if !vv.is_null() {
                let keys = ["driver", "external", "name", "labels", "driver_opts"];
                for (key, val) in self.map(&path, vv, &keys) {
                    let field = join(&path, &key);
                    match key.as_str() {
                        "driver" => vol.driver = self.string(&field, val),
                        "external" => vol.external = self.bool(&field, val),
                        "name" => vol.name = self.engine_name(&field, "volume name", val),
                        "labels" => vol.labels = self.key_values(&field, val, "label"),
                        "driver_opts" => vol.driver_opts = self.key_values(&field, val, "option"),
                        _ => unreachable!(),
                    }
                }
            }
            out.insert(name, vol);
        }
        out
    }

    pub(super) fn mounts(&mut self, path: &str, v: &Value) -> Vec<MountSpec> {
        let Some(items) = v.as_sequence() else {
            self.err(path, format!("must be a list, got {}", kind(v)));
            return vec![];
        };
        let mut out = vec![];
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            if item.is_mapping() {
                // A failed entry keeps its place, so later indexes stay right in errors.
                let failed = MountSpec::plain(MountKind::Anonymous, None, "", false);
                out.push(self.long_mount(&field, item).unwrap_or(failed));
                continue;
            }
            let Some(text) = self.string(&field, item) else {
                out.push(MountSpec::plain(MountKind::Anonymous, None, "", false));
                continue;
            };
            match parse_mount(&text) {
                Ok(m) => out.push(m),
                Err(reason) => {
                    self.err(field, reason);
                    out.push(MountSpec::plain(MountKind::Anonymous, None, "", false));
                }
            }
        }
        out
    }
}

/// `SOURCE:TARGET[:OPTIONS]` or an anonymous `TARGET`; OPTIONS is a comma-separated mix of
/// `ro`/`rw`, `z`/`Z`, a propagation, `nocopy`, and the macOS-only consistency words.
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
    let (kind, source) = match source {
        None => (MountKind::Anonymous, None),
        Some(s) if s.starts_with('/') => (MountKind::Bind, Some(s.to_string())),
        Some(s) if s.starts_with('.') || s.starts_with('~') => {
            return Err(format!("relative host path {s:?}: `capstan apply -f` resolves it against the file's folder; over the API give an absolute path"))
        }
        Some(s) if crate::stateful::valid_volume_source(s) => (MountKind::Volume, Some(s.to_string())),
        Some(s) => return Err(format!("{s:?} is neither an absolute host path nor a volume name")),
    };
    let mut m = MountSpec::plain(kind, source, target, false);
    for opt in mode.into_iter().flat_map(|m| m.split(',')) {
        short_option(&mut m, opt)?;
    }
    Ok(m)
}

const PROPAGATIONS: &[&str] = &[
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

/// One word of a short-syntax mode.
fn short_option(m: &mut MountSpec, opt: &str) -> Result<(), String> {
    let bind_only = |m: &MountSpec, what: &str| {
        if m.kind == MountKind::Bind {
            Ok(())
        } else {
            Err(format!("{what:?} applies to host paths (binds) only"))
        }
    };
    match opt {
        "ro" => m.read_only = true,
        "rw" => m.read_only = false,
        "z" | "Z" => m.selinux = Some(opt.to_string()),
        "nocopy" if m.kind == MountKind::Volume => m.nocopy = true,
        "nocopy" => return Err("\"nocopy\" applies to named volumes only".into()),
        // Consistency only means something on Docker Desktop for Mac; Linux ignores it.
        "cached" | "delegated" | "consistent" => {}
        p if PROPAGATIONS.contains(&p) => {
            bind_only(m, p)?;
            m.propagation = Some(p.to_string());
        }
        other => {
            return Err(format!(
                "mode {other:?} is not one of ro, rw, z, Z, nocopy, {}",
                PROPAGATIONS.join(", ")
            ))
        }
    }
    Ok(())
}

impl Parser {
    /// The long syntax: `{type, source, target, read_only, bind, volume, tmpfs, consistency}`.
    fn long_mount(&mut self, path: &str, v: &Value) -> Option<MountSpec> {
        let keys = [
            "type",
            "source",
            "target",
            "read_only",
            "bind",
            "volume",
            "tmpfs",
            "consistency",
        ];
        let entries = self.map(path, v, &keys);
        let before = self.errors.len();
        let kind = match entries.iter().find(|(k, _)| k == "type") {
            Some((_, t)) => match self.string(&join(path, "type"), t).as_deref() {
                Some("volume") => Some(MountKind::Volume),
                Some("bind") => Some(MountKind::Bind),
                Some("tmpfs") => Some(MountKind::Tmpfs),
                Some(other) => {
                    self.err(join(path, "type"), format!("{other:?} is not supported: volume, bind or tmpfs (npipe and cluster are not Linux mounts; image mounts need Docker API 1.47)"));
                    None
                }
                None => None,
            },
            None => {
                self.err(join(path, "type"), "is required: volume, bind or tmpfs");
                None
            }
        };
        let mut m = MountSpec::plain(
            kind.clone().unwrap_or(MountKind::Anonymous),
            None,
            "",
            false,
        );
        for (key, val) in &entries {
            let field = join(path, key);
            match key.as_str() {
                "type" => {}
                "source" => m.source = self.string(&field, val),
                "target" => m.target = self.string(&field, val).unwrap_or_default(),
                "read_only" => m.read_only = self.bool(&field, val),
                "consistency" => {
                    self.string(&field, val);
                }
                section => self.mount_section(&field, section, val, &mut m, kind.as_ref()),
            }
        }
        if kind.is_some() {
            self.settle_long_mount(path, &mut m);
        }
        (self.errors.len() == before).then_some(m)
    }

    /// `bind: {...}`, `volume: {...}` or `tmpfs: {...}`, which must match `type`.
    fn mount_section(
        &mut self,
        path: &str,
        section: &str,
        v: &Value,
        m: &mut MountSpec,
        kind: Option<&MountKind>,
    ) {
        let expected = match section {
            "bind" => MountKind::Bind,
            "volume" => MountKind::Volume,
            _ => MountKind::Tmpfs,
        };
        if kind.is_some_and(|k| *k != expected) {
            self.err(path, format!("`{section}` options need `type: {section}`"));
            return;
        }
        let keys: &[&str] = match section {
            "bind" => &["propagation", "create_host_path", "selinux"],
            "volume" => &["nocopy", "subpath"],
            _ => &["size", "mode"],
        };
        for (key, val) in self.map(path, v, keys) {
            let field = join(path, &key);
            match key.as_str() {
                "propagation" => match self.string(&field, val) {
                    Some(p) if PROPAGATIONS.contains(&p.as_str()) => m.propagation = Some(p),
                    Some(p) => self.err(
                        &field,
                        format!("{p:?} is not one of {}", PROPAGATIONS.join(", ")),
                    ),
                    None => {}
                },
                "create_host_path" => m.create_host_path = Some(self.bool(&field, val)),
                "selinux" => match self.string(&field, val) {
                    Some(s) if s == "z" || s == "Z" => m.selinux = Some(s),
                    Some(s) => self.err(&field, format!("{s:?} is not z (shared) or Z (private)")),
                    None => {}
                },
                "nocopy" => m.nocopy = self.bool(&field, val),
                "subpath" => m.subpath = self.string(&field, val),
                "size" => m.tmpfs_size = self.bytes(&field, val),
                _ => m.tmpfs_mode = self.file_mode(&field, val),
            }
        }
    }

    /// A file mode in octal digits (`1777`, `0755`).
    pub(super) fn file_mode(&mut self, path: &str, v: &Value) -> Option<u32> {
        let text = self.string(path, v)?;
        match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
            Ok(n) if n <= 0o7777 => Some(n),
            _ => {
                self.err(
                    path,
                    format!("{text:?} is not a file mode in octal (such as 1777 or 0755)"),
                );
                None
            }
        }
    }

    /// Source and target rules of the long syntax, per type.
    fn settle_long_mount(&mut self, path: &str, m: &mut MountSpec) {
        if !m.target.starts_with('/') {
            self.err(
                join(path, "target"),
                format!("{:?} must be an absolute path in the container", m.target),
            );
        }
        match (&m.kind, m.source.as_deref()) {
            (MountKind::Volume, None | Some("")) => {
                m.source = None;
                m.kind = MountKind::Anonymous;
                if m.subpath.is_some() {
                    self.err(
                        join(path, "volume.subpath"),
                        "needs a named volume in `source`",
                    );
                }
            }
            (MountKind::Volume, Some(s)) if !crate::stateful::valid_volume_source(s) => {
                self.err(join(path, "source"), format!("{s:?} is not a volume name"));
            }
            (MountKind::Bind, Some(s)) if s.starts_with('/') => {}
            (MountKind::Bind, Some(s)) if s.starts_with('.') || s.starts_with('~') => {
                self.err(join(path, "source"), format!("relative host path {s:?}: `capstan apply -f` resolves it against the file's folder; over the API give an absolute path"));
            }
            (MountKind::Bind, _) => {
                self.err(join(path, "source"), "a bind needs an absolute host path")
            }
            (MountKind::Tmpfs, Some(_)) => {
                self.err(join(path, "source"), "a tmpfs mount has no source")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::spec::*;

    #[test]
    fn volumes_must_be_declared_and_relative_paths_resolved_by_the_client() {
        assert_eq!(
            fields("services: {web: {image: x, volumes: [\"data:/d\"]}}"),
            vec!["services.web.volumes[0]"]
        );
        let errs = errors("services: {web: {image: x, volumes: [\"./html:/www\"]}}");
        assert!(errs[0].reason.contains("relative host path"));
    }

    fn mounts(yaml: &str) -> Vec<MountSpec> {
        let text = format!(
            "services:\n  web:\n    image: x\n    volumes: {yaml}\nvolumes: {{data: {{}}}}"
        );
        parse_stack("s", &text)
            .unwrap()
            .services
            .remove("web")
            .unwrap()
            .volumes
    }

    #[test]
    fn short_syntax_options_combine() {
        let m = mounts(
            r#"["/srv:/a:ro,z", "/srv:/b:rslave", "/srv:/c:Z,rshared,rw", "data:/d:nocopy,ro", "/srv:/e:cached"]"#,
        );
        assert!(m[0].read_only);
        assert_eq!(m[0].selinux.as_deref(), Some("z"));
        assert_eq!(m[1].propagation.as_deref(), Some("rslave"));
        assert_eq!(
            (
                m[2].selinux.as_deref(),
                m[2].propagation.as_deref(),
                m[2].read_only
            ),
            (Some("Z"), Some("rshared"), false)
        );
        assert!(m[3].nocopy && m[3].read_only);
        assert_eq!(
            m[4],
            MountSpec::plain(MountKind::Bind, Some("/srv".into()), "/e", false)
        );
        assert_eq!(
            fields(
                r#"services: {web: {image: x, volumes: ["/srv:/a:rx", "data:/b:rslave", "/srv:/c:nocopy"]}}
volumes: {data: {}}"#
            ),
            vec![
                "services.web.volumes[0]",
                "services.web.volumes[1]",
                "services.web.volumes[2]"
            ]
        );
    }

    #[test]
    fn the_long_syntax_parses_every_type() {
        let m = mounts(
            r#"
      - {type: bind, source: /srv, target: /a, read_only: true, bind: {propagation: rshared, create_host_path: false, selinux: z}}
      - {type: volume, source: data, target: /b, volume: {nocopy: true, subpath: sub}, consistency: cached}
      - {type: volume, target: /c}
      - {type: tmpfs, target: /d, tmpfs: {size: 64m, mode: 1777}}"#,
        );
        assert_eq!(m[0].propagation.as_deref(), Some("rshared"));
        assert_eq!(m[0].create_host_path, Some(false));
        assert_eq!(m[0].selinux.as_deref(), Some("z"));
        assert!(m[0].read_only);
        assert_eq!(
            (m[1].kind.clone(), m[1].nocopy, m[1].subpath.as_deref()),
            (MountKind::Volume, true, Some("sub"))
        );
        assert_eq!(m[2].kind, MountKind::Anonymous);
        assert_eq!(
            (m[3].kind.clone(), m[3].tmpfs_size, m[3].tmpfs_mode),
            (MountKind::Tmpfs, Some(64 << 20), Some(0o1777))
        );
    }

    #[test]
    fn every_bad_value_of_the_long_syntax_is_reported() {
        let f = fields(
            r#"
services:
  web:
    image: x
    volumes:
      - {type: bind, source: rel, target: a, bind: {propagation: sideways}}
      - {type: tmpfs, source: /x, target: /t, tmpfs: {size: huge, mode: 999}, volume: {nocopy: true}}
      - {source: /x, target: /y}
      - {type: npipe, target: /p}
      - {type: volume, source: nope, target: /n}
"#,
        );
        assert_eq!(
            f,
            vec![
                "services.web.volumes[0].bind.propagation",
                "services.web.volumes[0].target",
                "services.web.volumes[0].source",
                "services.web.volumes[1].tmpfs.size",
                "services.web.volumes[1].tmpfs.mode",
                "services.web.volumes[1].volume",
                "services.web.volumes[1].source",
                "services.web.volumes[2].type",
                "services.web.volumes[3].type",
                "services.web.volumes[4]",
            ]
        );
    }

    #[test]
    fn volume_keys_and_names_follow_the_one_naming_rule() {
        assert_eq!(
            fields(
                r#"
services: {web: {image: x}}
volumes:
  "../up": {}
  data: {name: "../../etc"}
  ext: {name: "a b", external: true}
  "data-{{replica}}": {}
  fine: {name: shop.data_1}
"#
            ),
            vec!["volumes.../up", "volumes.data.name", "volumes.ext.name"]
        );
    }
}
