//! Field-level differences between service specs: what `capstan diff` and the API's diff
//! show, and the change summary a new revision records. Pure.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use crate::spec::ServiceSpec;

/// One changed field: its path in the spec's JSON form, before and after (None: absent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// The field-level changes from `old` to `new`; lists are compared whole. What `capstan
/// rollout` controls (pause, restart) is not part of a file, so it is no change here.
pub fn changes(old: &ServiceSpec, new: &ServiceSpec) -> Vec<Change> {
    let (old, new) = (file_value(old), file_value(new));
    let mut out = vec![];
    walk("", Some(&old), Some(&new), &mut out);
    out
}

/// The spec as a file gives it: without the rollout controls.
fn file_value(spec: &ServiceSpec) -> Value {
    let mut v = serde_json::to_value(spec).expect("a spec always serialises");
    if let Value::Object(m) = &mut v {
        m.remove("rollout");
    }
    v
}

fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            path: path.to_string(),
            old: a.cloned(),
            new: b.cloned(),
        }),
    }
}

/// How one service of a stack would change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "changes", rename_all = "camelCase")]
pub enum ServiceDiff {
    /// A new service: each of its fields.
    Created(Vec<Change>),
    Changed(Vec<Change>),
    Removed,
}

/// The diff of a whole stack: service → its changes (unchanged services are left out); a
/// new service compares with nothing, a removed one gives nothing.
pub fn stack_changes(
    stored: &BTreeMap<String, ServiceSpec>,
    file: &BTreeMap<String, ServiceSpec>,
) -> BTreeMap<String, ServiceDiff> {
    let mut out = BTreeMap::new();
    for (name, spec) in file {
        match stored.get(name) {
            None => {
                let fields = match file_value(spec) {
                    Value::Object(m) => m
                        .into_iter()
                        .map(|(k, v)| Change {
                            path: k,
                            old: None,
                            new: Some(v),
                        })
                        .collect(),
                    _ => vec![],
                };
                out.insert(name.clone(), ServiceDiff::Created(fields));
            }
            Some(old) => {
                let c = changes(old, spec);
                if !c.is_empty() {
                    out.insert(name.clone(), ServiceDiff::Changed(c));
                }
            }
        }
    }
    for name in stored.keys().filter(|n| !file.contains_key(*n)) {
        out.insert(name.clone(), ServiceDiff::Removed);
    }
    out
}

/// What a new revision changed, in one line for `capstan rollout history`: a scalar
/// field as `path: old → new`, anything else by its path; long lists are cut.
pub fn summary(changes: &[Change]) -> String {
    const SHOWN: usize = 4;
    let short = |v: &Option<Value>| match v {
        None => "(none)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        Some(_) => "…".to_string(),
    };
    let scalar = |v: &Option<Value>| !matches!(v, Some(Value::Object(_) | Value::Array(_)));
    let mut parts: Vec<String> = changes
        .iter()
        .take(SHOWN)
        .map(|c| {
            if scalar(&c.old) && scalar(&c.new) {
                format!("{}: {} → {}", c.path, short(&c.old), short(&c.new))
            } else {
                format!("{} changed", c.path)
            }
        })
        .collect();
    if changes.len() > SHOWN {
        parts.push(format!("and {} more", changes.len() - SHOWN));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str, replicas: u32) -> ServiceSpec {
        ServiceSpec {
            image: image.into(),
            replicas,
            ..Default::default()
        }
    }

    #[test]
    fn a_stack_diff_names_each_changed_field_and_each_new_or_removed_service() {
        let stored = BTreeMap::from([
            ("web".to_string(), spec("web:1", 2)),
            ("old".to_string(), spec("old:1", 1)),
            ("db".to_string(), spec("db:1", 1)),
        ]);
        let mut web = spec("web:2", 2);
        web.environment.insert("MODE".into(), "fast".into());
        let file = BTreeMap::from([
            ("web".to_string(), web),
            ("db".to_string(), spec("db:1", 1)),
            ("api".to_string(), spec("api:1", 1)),
        ]);
        let d = stack_changes(&stored, &file);
        assert_eq!(d.keys().collect::<Vec<_>>(), ["api", "old", "web"]);
        let ServiceDiff::Changed(web) = &d["web"] else {
            panic!("{:?}", d["web"])
        };
        let paths: Vec<&str> = web.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["environment", "image"]);
        assert!(stack_changes(&stored, &stored).is_empty());
    }

    #[test]
    fn rollout_controls_are_no_change_of_the_file() {
        let mut paused = spec("web:1", 2);
        paused.rollout.paused = true;
        paused.rollout.restarted_at = Some("2026-01-01T00:00:00Z".into());
        assert!(changes(&spec("web:1", 2), &paused).is_empty());
    }

    #[test]
    fn a_summary_shows_scalars_with_both_values_and_cuts_long_lists() {
        let mut new = spec("web:2", 3);
        new.environment.insert("A".into(), "1".into());
        let text = summary(&changes(&spec("web:1", 2), &new));
        assert_eq!(
            text,
            "environment changed; image: web:1 → web:2; replicas: 2 → 3"
        );
        let many: Vec<Change> = (0..6)
            .map(|i| Change {
                path: format!("f{i}"),
                old: None,
                new: Some(Value::Bool(true)),
            })
            .collect();
        assert!(
            summary(&many).ends_with("; and 2 more"),
            "{}",
            summary(&many)
        );
    }
}
