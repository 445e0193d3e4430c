//! Compose's merge rules, used for several `-f` files (later files override earlier ones) and
//! for `extends` (the local service overrides the one it extends).
//!
//! Maps merge key by key; sequences append the entries not already there; scalars are
//! replaced. The exceptions are the spec's: `command`, `entrypoint` and `healthcheck.test`
//! are replaced; `environment`, `labels`, `annotations`, `sysctls` and `deploy.labels` merge by
//! key whether written as a list or a map; `depends_on` and `networks` merge by name;
//! `volumes`, `secrets` and `configs` are unique by target and `ports` by
//! (host IP, target, published, protocol) in either syntax, `devices` by target, a later
//! entry replacing an earlier one. `dns`, `dns_search`, `tmpfs` and `env_file` may be one
//! string, a list of one when merged. A `ulimits` entry is replaced whole, and `logging`
//! with another driver drops the old driver's options. At the top level, a network's
//! `ipam.config` entries are unique by subnet, and networks' and volumes' `labels` merge by
//! key like a service's.

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
            ("networks" | "volumes", Some(Value::Mapping(mine))) if v.is_mapping() => {
                merge_top_level(mine, v.clone())
            }
            (_, Some(existing)) => merge_value(existing, v.clone()),
            (_, None) => b.0.push((k.clone(), v.clone())),
        }
    }
}

/// Top-level networks and volumes: their `labels` merge by key in either form, and a
/// network's `ipam.config` entries are unique by subnet.
fn merge_top_level(base: &mut Mapping, over: Value) {
    let Value::Mapping(over) = over else {
        return;
    };
    for (name, item) in over.0 {
        let key = name.scalar_text().unwrap_or_default();
        if tagged_entry(base, &key, &item) {
            continue;
        }
        let Some(existing) = base.get_mut(&key) else {
            base.0.push((name, item));
            continue;
        };
        let (Value::Mapping(b), Value::Mapping(mut o)) = (&mut *existing, item.clone()) else {
            merge_value(existing, item);
            continue;
        };
        if let Some(labels) = o.remove("labels") {
            merge_keyed(b, "labels", &labels);
        }
        let configs = o
            .get_mut("ipam")
            .and_then(Value::as_mapping_mut)
            .and_then(|ipam| ipam.remove("config"));
        merge_value(existing, Value::Mapping(o));
        if let Some(configs) = configs {
            let ipam = match existing.get_mut("ipam") {
                Some(ipam) => ipam,
                None => {
                    if let Some(m) = existing.as_mapping_mut() {
                        m.insert("ipam", Value::Mapping(Mapping::default()));
                    }
                    existing.get_mut("ipam").expect("just inserted")
                }
            };
            match ipam.get_mut("config") {
                Some(base_configs) => merge_unique(base_configs, configs, &|c| {
                    c.get("subnet")
                        .and_then(Value::scalar_text)
                        .unwrap_or_default()
                }),
                None => {
                    if let Some(m) = ipam.as_mapping_mut() {
                        m.insert("config", configs);
                    }
                }
            }
        }
    }
}

/// A map whose `fields` merge by key in either form (`build.args`, `deploy.labels`) and whose
/// other entries merge by the generic rule.
fn merge_with_keyed(existing: &mut Value, over: Value, fields: &[&str]) {
    let (Value::Mapping(b), Value::Mapping(mut o)) = (&mut *existing, over.clone()) else {
        *existing = over;
        return;
    };
    for field in fields {
        if let Some(over) = o.remove(field) {
            merge_keyed(b, field, &over);
        }
    }
    merge_value(existing, Value::Mapping(o));
}

/// Merges `over` into the map entry `key` of `base` by key, either being a `KEY=VALUE` list
/// or a map.
fn merge_keyed(base: &mut Mapping, key: &str, over: &Value) {
    let merged = match base.get(key) {
        Some(existing) => {
            let mut m = keyed(existing);
            merge_value(&mut m, keyed(over));
            m
        }
        None => over.clone(),
    };
    base.insert(key, merged);
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
        merge_attribute(&key, existing, v);
    }
}

/// Merges `over` into the attribute `key` of a service, by that attribute's rule.
fn merge_attribute(key: &str, existing: &mut Value, v: Value) {
    match key {
        "command" | "entrypoint" => *existing = v,
        // A single string is a list of one: merged with a list, it is appended to.
        "dns" | "dns_search" | "tmpfs" | "env_file" => {
            *existing = listed(existing);
            merge_value(existing, listed(&v));
        }
        // Each limit is replaced whole: `nofile: {soft, hard}` over `nofile: 1024` does
        // not keep a part of either.
        "ulimits" => match (&mut *existing, v) {
            (Value::Mapping(b), Value::Mapping(o)) => {
                for (name, limit) in o.0 {
                    let name = name.scalar_text().unwrap_or_default();
                    if !tagged_entry(b, &name, &limit) {
                        b.insert(&name, limit);
                    }
                }
            }
            (_, v) => *existing = v,
        },
        // Another driver's options mean nothing to this one: a new driver takes its own
        // options only.
        "logging" => {
            let driver = |l: &Value| l.get("driver").and_then(Value::scalar_text);
            match (driver(existing), driver(&v)) {
                (Some(a), Some(b)) if a != b => *existing = v,
                _ => merge_value(existing, v),
            }
        }
        "environment" | "labels" | "annotations" | "sysctls" => {
            *existing = keyed(existing);
            merge_value(existing, keyed(&v));
        }
        "depends_on" | "networks" => {
            *existing = named(existing);
            merge_value(existing, named(&v));
        }
        "volumes" | "secrets" | "configs" | "ports" | "devices" => {
            merge_unique(existing, v, &|item| unique_key(key, item))
        }
        "build" => merge_with_keyed(existing, v, &["args", "labels"]),
        "healthcheck" => {
            let test = v.get("test").cloned();
            merge_value(existing, v);
            if let (Some(test), Some(slot)) = (test, existing.get_mut("test")) {
                *slot = test;
            }
        }
        "deploy" => merge_with_keyed(existing, v, &["labels"]),
        _ => merge_value(existing, v),
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
        ("devices", Value::String(s)) => {
            let parts: Vec<&str> = s.split(':').collect();
            parts.get(1).unwrap_or(&parts[0]).to_string()
        }
        ("volumes" | "devices", _) => field("target"),
        ("ports", Value::String(s)) => short_port_key(s),
        ("ports", Value::Number(n)) => short_port_key(&n.to_string()),
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

/// The unique key of a port in the short syntax, `[[IP:]PUBLISHED:]TARGET[/PROTOCOL]`, the
/// same as the long syntax's with the same meaning (`"8080:80"` and `{target: 80, published:
/// 8080}` are one port).
fn short_port_key(s: &str) -> String {
    let (spec, protocol) = s.split_once('/').unwrap_or((s, "tcp"));
    let (rest, target) = spec.rsplit_once(':').unwrap_or(("", spec));
    let (ip, published) = match rest.rsplit_once(':') {
        Some((ip, published)) => (ip.trim_start_matches('[').trim_end_matches(']'), published),
        None => ("", rest),
    };
    format!("{ip}|{target}|{published}|{protocol}")
}

/// A string as a list of one; anything else as it is.
fn listed(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::Sequence(vec![v.clone()]),
        other => other.clone(),
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

    #[test]
    fn a_string_merged_with_a_list_is_appended_to_it() {
        let web = merged(
            "services: {web: {dns: 1.1.1.1, dns_search: [a.example], tmpfs: /run, env_file: a.env}}",
            "services: {web: {dns: [8.8.8.8], dns_search: b.example, tmpfs: [/tmp], env_file: [b.env]}}",
        );
        assert_eq!(texts(web.get("dns")), vec!["1.1.1.1", "8.8.8.8"]);
        assert_eq!(texts(web.get("dns_search")), vec!["a.example", "b.example"]);
        assert_eq!(texts(web.get("tmpfs")), vec!["/run", "/tmp"]);
        assert_eq!(texts(web.get("env_file")), vec!["a.env", "b.env"]);
    }

    #[test]
    fn ports_are_one_entry_per_ip_target_published_and_protocol_in_either_syntax() {
        let web = merged(
            "services: {web: {ports: ['8080:80', '127.0.0.1:9090:90/udp', 53]}}",
            "services: {web: {ports: [{target: 80, published: 8080, mode: host}, {target: 90, published: '9090', host_ip: 127.0.0.1, protocol: udp}, '53', '8443:443']}}",
        );
        let ports = web.get("ports").unwrap().as_sequence().unwrap();
        assert_eq!(ports.len(), 4, "{ports:?}");
        assert_eq!(ports[0].get("mode").unwrap().as_str(), Some("host"));
        assert_eq!(ports[1].get("protocol").unwrap().as_str(), Some("udp"));
    }

    #[test]
    fn devices_are_unique_by_target_and_links_by_their_entry() {
        let web = merged(
            "services: {web: {devices: ['/dev/ttyUSB0:/dev/serial', /dev/fuse], links: [db, 'cache:c']}}",
            "services: {web: {devices: ['/dev/ttyUSB1:/dev/serial', {source: /dev/fuse, target: /dev/fuse, permissions: r}], links: [db, 'cache:c', queue]}}",
        );
        let devices = web.get("devices").unwrap().as_sequence().unwrap();
        assert_eq!(devices.len(), 2, "{devices:?}");
        assert_eq!(devices[0].as_str(), Some("/dev/ttyUSB1:/dev/serial"));
        assert_eq!(texts(web.get("links")), vec!["db", "cache:c", "queue"]);
    }

    #[test]
    fn a_ulimit_entry_is_replaced_whole() {
        let web = merged(
            "services: {web: {ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 64}}}",
            "services: {web: {ulimits: {nofile: {soft: 4096}}}}",
        );
        let ulimits = web.get("ulimits").unwrap();
        let nofile = ulimits.get("nofile").unwrap();
        assert!(nofile.get("hard").is_none(), "{nofile:?}");
        assert_eq!(nofile.get("soft").and_then(Value::as_u64), Some(4096));
        assert_eq!(ulimits.get("nproc").and_then(Value::as_u64), Some(64));
    }

    #[test]
    fn logging_options_merge_for_the_same_driver_and_are_replaced_with_another() {
        let base = "services: {web: {logging: {driver: json-file, options: {max-size: 10m, max-file: '3'}}}}";
        let same = merged(
            base,
            "services: {web: {logging: {options: {max-size: 20m}}}}",
        );
        let options = same.get("logging").unwrap().get("options").unwrap();
        assert_eq!(options.get("max-size").unwrap().as_str(), Some("20m"));
        assert_eq!(options.get("max-file").unwrap().as_str(), Some("3"));
        let other = merged(
            base,
            "services: {web: {logging: {driver: syslog, options: {tag: web}}}}",
        );
        let options = other.get("logging").unwrap().get("options").unwrap();
        assert!(options.get("max-size").is_none(), "{options:?}");
        assert_eq!(options.get("tag").unwrap().as_str(), Some("web"));
    }

    #[test]
    fn network_ipam_config_merges_by_subnet_and_labels_merge_across_forms() {
        let mut doc = parse(
            "services: {}\nnetworks: {back: {labels: [a=1], ipam: {config: [{subnet: 10.1.0.0/24, gateway: 10.1.0.1}, {subnet: 10.2.0.0/24}]}}}\nvolumes: {data: {labels: {x: '1'}}}",
        )
        .unwrap();
        merge_documents(
            &mut doc,
            parse("networks: {back: {labels: {b: '2'}, ipam: {config: [{subnet: 10.1.0.0/24, gateway: 10.1.0.254}, {subnet: 10.3.0.0/24}]}}}\nvolumes: {data: {labels: [y=2]}}").unwrap(),
        );
        let back = doc.get("networks").unwrap().get("back").unwrap();
        let configs = back
            .get("ipam")
            .unwrap()
            .get("config")
            .unwrap()
            .as_sequence()
            .unwrap();
        assert_eq!(configs.len(), 3, "{configs:?}");
        assert_eq!(
            configs[0].get("gateway").unwrap().as_str(),
            Some("10.1.0.254")
        );
        let labels = back.get("labels").unwrap();
        assert_eq!(labels.get("a").unwrap().as_str(), Some("1"));
        assert_eq!(labels.get("b").unwrap().as_str(), Some("2"));
        let data = doc.get("volumes").unwrap().get("data").unwrap();
        assert_eq!(
            data.get("labels").unwrap().get("y").unwrap().as_str(),
            Some("2")
        );
        assert_eq!(
            data.get("labels").unwrap().get("x").unwrap().as_str(),
            Some("1")
        );
    }

    #[test]
    fn build_args_and_labels_merge_by_key_across_forms() {
        let web = merged(
            "services: {web: {build: {context: ., args: [A=1, B=2], labels: {l: '1'}}}}",
            "services: {web: {build: {args: {B: '3'}, labels: [m=2]}}}",
        );
        let build = web.get("build").unwrap();
        assert_eq!(
            build.get("args").unwrap().get("A").unwrap().as_str(),
            Some("1")
        );
        assert_eq!(
            build.get("args").unwrap().get("B").unwrap().as_str(),
            Some("3")
        );
        assert_eq!(
            build.get("labels").unwrap().get("m").unwrap().as_str(),
            Some("2")
        );
        assert_eq!(build.get("context").unwrap().as_str(), Some("."));
    }
}
