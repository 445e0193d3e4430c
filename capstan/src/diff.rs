//! `capstan diff -f FILE`: what an apply of the project would change, field by field, per
//! service, against what is stored. Exit code as `kubectl diff`: 0 no changes, 1 changes,
//! 2 an error (the file does not parse, the server cannot be reached).

use capstan_api::spec::ServiceSpec;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// One changed field: its path in the spec's JSON form, before and after (None: absent).
#[derive(Debug, PartialEq)]
pub struct Change {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// The field-level changes from `old` to `new`; lists are compared whole.
pub fn changes(old: &ServiceSpec, new: &ServiceSpec) -> Vec<Change> {
    let (old, new) = (to_value(old), to_value(new));
    let mut out = vec![];
    walk("", Some(&old), Some(&new), &mut out);
    out
}

fn to_value(spec: &ServiceSpec) -> Value {
    serde_json::to_value(spec).expect("a spec always serialises")
}

fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
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

/// The diff of a whole stack: service → its changes; a new service compares with an empty
/// spec, a removed one with nothing.
pub enum ServiceDiff {
    Created(Vec<Change>),
    Changed(Vec<Change>),
    Removed,
}

pub fn stack_changes(
    stored: &BTreeMap<String, ServiceSpec>,
    file: &BTreeMap<String, ServiceSpec>,
) -> BTreeMap<String, ServiceDiff> {
    let mut out = BTreeMap::new();
    for (name, spec) in file {
        match stored.get(name) {
            None => {
                let mut all = vec![];
                walk("", None, Some(&to_value(spec)), &mut all);
                let fields = match all.pop() {
                    Some(Change {
                        new: Some(Value::Object(m)),
                        ..
                    }) => m
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

/// The diff as text, red and green on a terminal.
pub fn render(stack: &str, diff: &BTreeMap<String, ServiceDiff>, colour: bool) -> String {
    let (red, green, reset) = if colour {
        ("\x1b[31m", "\x1b[32m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let show = |v: &Option<Value>| v.as_ref().map_or("(none)".to_string(), |v| v.to_string());
    let mut text = String::new();
    for (name, d) in diff {
        let (sign, what, fields) = match d {
            ServiceDiff::Created(f) => ("+", "new service", f.as_slice()),
            ServiceDiff::Changed(f) => ("~", "changed", f.as_slice()),
            ServiceDiff::Removed => ("-", "removed", &[][..]),
        };
        text.push_str(&format!("{sign} {stack}/{name} ({what})\n"));
        for c in fields {
            text.push_str(&format!("    {}:\n", c.path));
            if c.old.is_some() {
                text.push_str(&format!("{red}      - {}{reset}\n", show(&c.old)));
            }
            if c.new.is_some() {
                text.push_str(&format!("{green}      + {}{reset}\n", show(&c.new)));
            }
        }
    }
    text
}

/// `capstan diff`: loads the project as `apply` would, compares it with the stored stack.
pub async fn run(api: &crate::client::Client, opts: &crate::project::Options) -> i32 {
    match diff(api, opts).await {
        Ok(changed) => changed as i32,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

async fn diff(api: &crate::client::Client, opts: &crate::project::Options) -> anyhow::Result<bool> {
    let mut loaded = crate::project::load(opts)?;
    // Built services are compared by the tag their context would get (nothing is built).
    crate::build::plan(&loaded.stack, &loaded.dir, &mut loaded.doc, &[])?;
    let body = serde_json::to_string(&loaded.doc)?;
    let spec =
        capstan_api::parse_stack(&loaded.stack, &body).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stored: BTreeMap<String, ServiceSpec> = api
        .stack(&loaded.stack)
        .await?
        .map(|v| v.services.into_iter().map(|s| (s.name, s.spec)).collect())
        .unwrap_or_default();
    let d = stack_changes(&stored, &spec.services);
    print!(
        "{}",
        render(&loaded.stack, &d, std::io::stdout().is_terminal())
    );
    Ok(!d.is_empty())
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
    fn a_diff_names_each_changed_field_and_each_new_or_removed_service() {
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
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["api", "old", "web"],
            "db is unchanged"
        );
        let text = render("shop", &d, false);
        assert!(text.contains("~ shop/web (changed)\n    environment:\n      + {\"MODE\":\"fast\"}\n    image:\n      - \"web:1\"\n      + \"web:2\"\n"), "{text}");
        assert!(text.contains("+ shop/api (new service)\n"), "{text}");
        assert!(text.contains("- shop/old (removed)\n"), "{text}");
        assert!(stack_changes(&stored, &stored).is_empty());
    }
}
