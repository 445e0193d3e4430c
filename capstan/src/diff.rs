//! `capstan diff -f FILE`: what an apply of the project would change, field by field, per
//! service, against what is stored. Exit code as `kubectl diff`: 0 no changes, 1 changes,
//! 2 an error (the file does not parse, the server cannot be reached).

use capstan_api::diff::ServiceDiff;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;

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
    // What apply would send; built services are compared by the tag their context would
    // get (nothing is built).
    let req = crate::config::request(opts)?;
    let d = api.diff(&req.stack, req.body()?).await?;
    print!(
        "{}",
        render(&req.stack, &d, std::io::stdout().is_terminal())
    );
    Ok(!d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::diff::Change;
    use serde_json::json;

    #[test]
    fn a_diff_renders_each_changed_field_and_each_new_or_removed_service() {
        let image = Change {
            path: "image".into(),
            old: Some(json!("web:1")),
            new: Some(json!("web:2")),
        };
        let d = BTreeMap::from([
            ("web".to_string(), ServiceDiff::Changed(vec![image])),
            ("api".to_string(), ServiceDiff::Created(vec![])),
            ("old".to_string(), ServiceDiff::Removed),
        ]);
        let text = render("shop", &d, false);
        assert!(
            text.contains(
                "~ shop/web (changed)\n    image:\n      - \"web:1\"\n      + \"web:2\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("+ shop/api (new service)\n"), "{text}");
        assert!(text.contains("- shop/old (removed)\n"), "{text}");
    }
}
