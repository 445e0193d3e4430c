//! Compose's merge rules, used for several `-f` files (later files override earlier ones) and
//! for `extends` (the local service overrides the one it extends).
//!
//! Maps merge key by key; sequences append the entries not already there; scalars are
//! replaced. The exceptions are the spec's: `command`, `entrypoint` and `healthcheck.test`
//! are replaced; `environment`, `labels`, `annotations`, `sysctls` and `deploy.labels` merge by
//! key whether written as a list or a map; `depends_on` and `networks` merge by name;
//! `volumes`, `secrets` and `configs` are unique by target and `ports` by
//! (host IP, target, published, protocol), a later entry replacing an earlier one.

use super::yaml::{Mapping, MergeTag, Value};

/// `!reset` and `!override` on an entry of `over`: handled here (true), or not tagged.
fn tagged_entry(base: &mut Mapping, key: &str, v: &Value) -> bool {
    let Value::Tagged(t) = v else {
        return false;
    };
    match t.tag {
        MergeTag::Reset => {
            base.remove(key);
        }
        MergeTag::Override => base.insert(key, t.value.clone()),
    }
    true
}

/// Merges the document `over` into `base`.
pub fn merge_documents(base: &mut Value, over: Value) {
    let (Value::Mapping(b), Value::Mapping(o)) = (&mut *base, &over) else {
        if !over.is_null() {
            *base = over;
        }
        return;
    };
    for (k, v) in &o.0 {
        let key = k.as_str().unwrap_or_default();
        if tagged_entry(b, key, v) {
            continue;
        }
        match (key, b.get_mut(key)) {
            ("services", Some(Value::Mapping(services))) => {
                if let Value::Mapping(over_services) = v {
                    for (name, svc) in &over_services.0 {
                        let name = name.scalar_text().unwrap_or_default();
                        if tagged_entry(services, &name, svc) {
                            continue;
                        }
                        match services.get_mut(&name) {
                            Some(existing) => merge_service(existing, svc.clone()),
                            None => services.0.push((Value::String(name), svc.clone())),
                        }
                    }
                }
            }
            (_, Some(existing)) => merge_value(existing, v.clone()),
            (_, None) => b.0.push((k.clone(), v.clone())),
        }
    }
}

/// Merges service `over` into service `base`.
pub fn merge_service(base: &mut Value, over: Value) {
    let (Value::Mapping(b), Value::Mapping(o)) = (&mut *base, over.clone()) else {
        if !over.is_null() {
            *base = over;
        }
        return;
    };
    for (k, v) in o.0 {
        let key = k.as_str().unwrap_or_default().to_string();
        if tagged_entry(b, &key, &v) {
            continue;
        }
        let Some(existing) = b.get_mut(&key) else {
            b.0.push((k, v));
            continue;
        };
        match key.as_str() {
            "command" | "entrypoint" => *existing = v,
            "environment" | "labels" | "annotations" | "sysctls" => {
                *existing = keyed(existing);
                merge_value(existing, keyed(&v));
            }
            "depends_on" | "networks" => {
                *existing = named(existing);
                merge_value(existing, named(&v));
            }
            "volumes" | "secrets" | "configs" | "ports" => {
                merge_unique(existing, v, &|item| unique_key(&key, item))
            }
            "healthcheck" => {
                let test = v.get("test").cloned();
                merge_value(existing, v);
                if let (Some(test), Some(slot)) = (test, existing.get_mut("test")) {
                    *slot = test;
                }
            }
            "deploy" => {
                if let (Some(over_labels), Value::Mapping(d)) = (v.get("labels"), &mut *existing) {
                    let merged = match d.get("labels") {
                        Some(base_labels) => {
                            let mut l = keyed(base_labels);
                            merge_value(&mut l, keyed(over_labels));
                            l
                        }
                        None => over_labels.clone(),
                    };
                    d.insert("labels", merged);
                }
                let mut v = v;
                if let Some(m) = v.as_mapping_mut() {
                    m.remove("labels");
                }
                merge_value(existing, v);
            }
            _ => merge_value(existing, v),
        }
    }
}

/// The generic rule: maps merge, sequences append new entries, anything else is replaced.
pub fn merge_value(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o.0 {
                let key = k.scalar_text().unwrap_or_default();
                if tagged_entry(b, &key, &v) {
                    continue;
                }
                match b.get_mut(&key) {
                    Some(existing) => merge_value(existing, v),
                    None => b.0.push((k, v)),
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o)) => {
            for item in o {
                if !b.contains(&item) {
                    b.push(item);
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Sequences whose entries are unique by a key: an entry with a key already present
/// replaces it, others are appended.
fn merge_unique(base: &mut Value, over: Value, key: &dyn Fn(&Value) -> String) {
    let (Value::Sequence(b), Value::Sequence(o)) = (&mut *base, &over) else {
        *base = over;
        return;
    };
    for item in o {
        let k = key(item);
        match b.iter_mut().find(|existing| key(existing) == k) {
            Some(existing) => *existing = item.clone(),
            None => b.push(item.clone()),
        }
    }
}

/// What makes an entry of `volumes`, `secrets`, `configs` or `ports` unique.
fn unique_key(attribute: &str, item: &Value) -> String {
    let field = |name: &str| {
        item.get(name)
            .and_then(Value::scalar_text)
            .unwrap_or_default()
    };
    match (attribute, item) {
        ("volumes", Value::String(s)) => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [target] | [_, target, ..] => target.to_string(),
                [] => s.clone(),
            }
        }
        ("volumes", _) => field("target"),
        ("secrets" | "configs", Value::String(s)) => format!("/run/secrets/{s}"),
        ("secrets" | "configs", _) => match field("target") {
            t if t.is_empty() => format!("/run/secrets/{}", field("source")),
            t => t,
        },
        ("ports", Value::Mapping(_)) => format!(
            "{}|{}|{}|{}",
            field("host_ip"),
            field("target"),
            field("published"),
            match field("protocol") {
                p if p.is_empty() => "tcp".into(),
                p => p,
            }
        ),
        (_, other) => other.scalar_text().unwrap_or_default(),
    }
}

/// A `KEY=VALUE` list or a map, as a map (`KEY` alone maps to null).
pub fn keyed(v: &Value) -> Value {
    match v {
        Value::Sequence(items) => {
            let mut m = Mapping::default();
            for item in items {
                let text = item.scalar_text().unwrap_or_default();
                match text.split_once('=') {
                    Some((k, val)) => m.insert(k, Value::String(val.to_string())),
                    None => m.insert(&text, Value::Null),
                }
            }
            Value::Mapping(m)
        }
        other => other.clone(),
    }
}

/// A list of names or a map by name, as a map.
fn named(v: &Value) -> Value {
    match v {
        Value::Sequence(items) => {
            let mut m = Mapping::default();
            for item in items {
                m.insert(&item.scalar_text().unwrap_or_default(), Value::Null);
            }
            Value::Mapping(m)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::yaml::parse;

    fn merged(base: &str, over: &str) -> Value {
        let mut doc = parse(base).unwrap();
        merge_documents(&mut doc, parse(over).unwrap());
        doc.get("services").unwrap().get("web").unwrap().clone()
    }

    fn texts(v: Option<&Value>) -> Vec<String> {
        v.and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .map(|i| i.scalar_text().unwrap_or_else(|| format!("{i:?}")))
            .collect()
    }

    #[test]
    fn maps_merge_and_scalars_are_replaced() {
        let web = merged(
            "services: {web: {image: a, restart: always}}\nvolumes: {data: {}}",
            "services: {web: {image: b, user: me}, db: {image: d}}",
        );
        assert_eq!(web.get("image").unwrap().as_str(), Some("b"));
        assert_eq!(web.get("restart").unwrap().as_str(), Some("always"));
        assert_eq!(web.get("user").unwrap().as_str(), Some("me"));
    }

    #[test]
    fn commands_are_replaced_not_appended() {
        let web = merged(
            "services: {web: {command: [echo, a], entrypoint: sh, healthcheck: {test: [CMD, a], interval: 1s}}}",
            "services: {web: {command: [echo, b], healthcheck: {test: [CMD, b]}}}",
        );
        assert_eq!(texts(web.get("command")), vec!["echo", "b"]);
        let hc = web.get("healthcheck").unwrap();
        assert_eq!(texts(hc.get("test")), vec!["CMD", "b"]);
        assert_eq!(hc.get("interval").unwrap().as_str(), Some("1s"));
    }

    #[test]
    fn environment_and_labels_merge_by_key_across_list_and_map_forms() {
        let web = merged(
            "services: {web: {environment: [A=1, B=2], labels: {x: '1'}}}",
            "services: {web: {environment: {B: 3, C: 4}, labels: [y=2]}}",
        );
        let env = web.get("environment").unwrap();
        assert_eq!(env.get("A").unwrap().as_str(), Some("1"));
        assert_eq!(env.get("B").unwrap().scalar_text().as_deref(), Some("3"));
        assert_eq!(env.get("C").unwrap().scalar_text().as_deref(), Some("4"));
        assert_eq!(
            web.get("labels").unwrap().get("y").unwrap().as_str(),
            Some("2")
        );
    }

    #[test]
    fn plain_sequences_append_new_entries_once() {
        let web = merged(
            "services: {web: {dns: [1.1.1.1], expose: ['80']}}",
            "services: {web: {dns: [8.8.8.8, 1.1.1.1], expose: ['80', '81']}}",
        );
        assert_eq!(texts(web.get("dns")), vec!["1.1.1.1", "8.8.8.8"]);
        assert_eq!(texts(web.get("expose")), vec!["80", "81"]);
    }

    #[test]
    fn volumes_are_unique_by_target_and_ports_by_their_whole_mapping() {
        let web = merged(
            "services: {web: {volumes: ['/a:/data', 'logs:/logs'], ports: ['80:80', {target: 443, published: 443}]}}",
            "services: {web: {volumes: ['/b:/data:ro', {type: volume, source: c, target: /c}], ports: ['80:80', '8080:80', {target: 443, published: 443, mode: host}]}}",
        );
        let vols = web.get("volumes").unwrap().as_sequence().unwrap();
        assert_eq!(vols.len(), 3);
        assert_eq!(vols[0].as_str(), Some("/b:/data:ro"));
        let ports = web.get("ports").unwrap().as_sequence().unwrap();
        assert_eq!(ports.len(), 3, "{ports:?}");
        assert_eq!(ports[1].get("mode").unwrap().as_str(), Some("host"));
    }

    #[test]
    fn reset_removes_what_earlier_files_set_and_override_replaces_instead_of_merging() {
        let mut doc = parse(
            "services: {web: {image: a, ports: ['80:80'], environment: {A: '1', B: '2'}, dns: [1.1.1.1]}, old: {image: o}}",
        )
        .unwrap();
        merge_documents(
            &mut doc,
            parse("services: {web: {ports: !reset [], environment: !override {C: '3'}, dns: !reset null}, old: !reset {}}").unwrap(),
        );
        crate::compose::yaml::strip_tags(&mut doc);
        let services = doc.get("services").unwrap();
        assert!(services.get("old").is_none());
        let web = services.get("web").unwrap();
        assert!(web.get("ports").is_none() && web.get("dns").is_none());
        let env = web.get("environment").unwrap();
        assert!(env.get("A").is_none());
        assert_eq!(env.get("C").unwrap().as_str(), Some("3"));
    }

    #[test]
    fn depends_on_and_networks_merge_by_name() {
        let web = merged(
            "services: {web: {depends_on: [db], networks: [front]}}",
            "services: {web: {depends_on: {cache: {condition: service_healthy}}, networks: {back: {aliases: [w]}}}}",
        );
        let deps = web.get("depends_on").unwrap();
        assert!(deps.get("db").is_some() && deps.get("cache").is_some());
        let nets = web.get("networks").unwrap();
        assert!(nets.get("front").is_some() && nets.get("back").is_some());
    }
}
