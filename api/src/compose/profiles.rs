//! `profiles`, decided as Compose decides: a service without profiles is always in the
//! stack; a service with profiles only when one of them is active (`*` activates all). A
//! reference from an enabled service to one left out (`depends_on` that is required,
//! `links`, `volumes_from`, `network_mode: service:x`) does not enable it: it is an error,
//! as in Compose.

use super::resolve::Resolver;
use super::yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

impl Resolver<'_, '_> {
    /// Leaves out the services no active profile enables; returns every profile named.
    pub(super) fn profiles(&mut self, doc: &mut Value) -> Vec<String> {
        let active = &self.project.profiles;
        let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) else {
            return vec![];
        };
        let mut left_out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut declared = BTreeSet::new();
        services.0.retain_mut(|(name, svc)| {
            let Some(profiles) = svc.as_mapping_mut().and_then(|m| m.remove("profiles")) else {
                return true;
            };
            let names: Vec<String> = match &profiles {
                Value::Sequence(items) => items.iter().filter_map(Value::scalar_text).collect(),
                other => other.scalar_text().into_iter().collect(),
            };
            declared.extend(names.iter().cloned());
            let on = names
                .iter()
                .any(|p| active.iter().any(|a| a == p || a == "*"));
            if !on {
                left_out.insert(name.scalar_text().unwrap_or_default(), names);
            }
            on
        });
        let mut refs = vec![];
        for (name, svc) in services.iter() {
            let name = name.scalar_text().unwrap_or_default();
            for (field, target) in references(svc) {
                if let Some(profiles) = left_out.get(&target) {
                    refs.push((format!("services.{name}.{field}"), target, profiles.clone()));
                }
            }
        }
        for (field, target, profiles) in refs {
            self.err(
                field,
                format!(
                    "service {target:?} is not enabled by the active profiles (it has {}): \
                     activate one with --profile, or give both services a common profile",
                    profiles.join(", ")
                ),
            );
        }
        declared.into_iter().collect()
    }
}

/// The services a service refers to, with the field that names each.
fn references(svc: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    match svc.get("depends_on") {
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(t) = item.scalar_text() {
                    out.push((format!("depends_on[{i}]"), t));
                }
            }
        }
        Some(Value::Mapping(m)) => {
            for (k, v) in m.iter() {
                let required = !matches!(v.get("required"), Some(Value::Bool(false)));
                if let (Some(t), true) = (k.scalar_text(), required) {
                    out.push((format!("depends_on.{t}"), t));
                }
            }
        }
        _ => {}
    }
    for key in ["links", "volumes_from"] {
        if let Some(Value::Sequence(items)) = svc.get(key) {
            for (i, item) in items.iter().enumerate() {
                let text = item.scalar_text().unwrap_or_default();
                if text.starts_with("container:") {
                    continue; // a container, not a service of the file
                }
                let target = text.split(':').next().unwrap_or_default();
                let target = target.strip_prefix("service:").unwrap_or(target);
                out.push((format!("{key}[{i}]"), target.to_string()));
            }
        }
    }
    if let Some(t) = svc
        .get("network_mode")
        .and_then(Value::as_str)
        .and_then(|m| m.strip_prefix("service:"))
    {
        out.push(("network_mode".into(), t.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::compose::resolve::tests::{project_with, resolved_services};

    const FILE: &str = r#"
services:
  web: {image: web}
  test_lib: {image: t, profiles: [test]}
  coverage: {image: c, profiles: [test], depends_on: [test_lib]}
  debug: {image: d, profiles: [debug], depends_on: [test_lib]}
  tool: {image: x, profiles: [tools], depends_on: {test_lib: {condition: service_started, required: false}}}
"#;

    #[test]
    fn services_without_profiles_are_always_on_and_others_only_when_active() {
        assert_eq!(resolved_services(FILE, &[]).unwrap(), vec!["web"]);
        assert_eq!(
            resolved_services(FILE, &["test"]).unwrap(),
            vec!["web", "test_lib", "coverage"]
        );
        assert_eq!(resolved_services(FILE, &["*"]).unwrap().len(), 5);
        assert_eq!(
            resolved_services(FILE, &["tools"]).unwrap(),
            vec!["web", "tool"],
            "an optional dependency may be left out"
        );
    }

    #[test]
    fn a_dependency_left_out_by_profiles_is_an_error_not_enabled_silently() {
        let errs = resolved_services(FILE, &["debug"]).unwrap_err();
        assert_eq!(errs[0].field, "services.debug.depends_on[0]");
        assert!(
            errs[0].reason.contains("\"test_lib\""),
            "{}",
            errs[0].reason
        );
    }

    #[test]
    fn the_profiles_key_is_not_sent_to_the_server() {
        let doc = project_with(FILE, &["test"]).unwrap().doc;
        let lib = doc.get("services").unwrap().get("test_lib").unwrap();
        assert!(lib.get("profiles").is_none());
    }

    #[test]
    fn every_profile_a_service_names_is_listed_whether_active_or_not() {
        let resolved = project_with(FILE, &["test"]).unwrap();
        assert_eq!(resolved.profiles, vec!["debug", "test", "tools"]);
    }
}
