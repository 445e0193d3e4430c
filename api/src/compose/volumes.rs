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

    pub(super) fn mounts(&mut self, path: &str, v: &Value) -> Vec<MountSpec> {
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
#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn volumes_must_be_declared_and_relative_paths_resolved_by_the_client() {
        assert_eq!(
            fields("services: {web: {image: x, volumes: [\"data:/d\"]}}"),
            vec!["services.web.volumes[0]"]
        );
        let errs = errors("services: {web: {image: x, volumes: [\"./html:/www\"]}}");
        assert!(errs[0].reason.contains("relative host path"));
    }
}
