//! Top-level `networks` and a service's `networks`.

use super::yaml::Value;
use super::{join, kind, Parser};
use crate::spec::*;
use std::collections::BTreeMap;

impl Parser {
    pub(super) fn networks(&mut self, v: &Value) -> BTreeMap<String, NetworkSpec> {
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

    pub(super) fn service_networks(
        &mut self,
        path: &str,
        v: &Value,
    ) -> BTreeMap<String, ServiceNetwork> {
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
}
