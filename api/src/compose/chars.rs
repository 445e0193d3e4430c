//! The characters a document may hold, checked on the parsed tree before anything reads it,
//! in one walk over every key and string:
//!
//! - **No control character in a name** (C0, DEL, C1; `\n`, ESC, ...): every key (service,
//!   network, volume, label, variable, option names) and every string that is not free text
//!   (an image, a `name:`, `container_name`, `hostname`, an alias, a path...). A name
//!   reaches terminals (`capstan get`, logs: an escape sequence would run there), etcd and
//!   the engine as it is.
//! - **Free text** may hold them: environment, label and annotation values, `command`,
//!   `entrypoint`, `healthcheck.test`, build `args` and `dockerfile_inline`, a secret's or
//!   config's `content`, and `x-*` extensions (never read).
//! - **No NUL anywhere** but in a secret's or config's `content` (a file): the engine
//!   passes environment, labels and arguments as C strings, which end at the first NUL.

use super::yaml::Value;
use crate::compose::FieldError;
use crate::names;

/// One error per key or string holding a character it may not, naming its path.
pub fn check(doc: &Value) -> Vec<FieldError> {
    let mut errors = vec![];
    walk(&mut Vec::new(), "", doc, &mut errors);
    errors
}

/// What a string at some path may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Text {
    /// A name or an option: no control character.
    Name,
    /// Free text: anything but NUL.
    Free,
    /// A `KEY=VALUE` entry of a list: the key is a name, the value free text.
    Entry,
    /// A file's content, or an extension: anything.
    Any,
}

/// A path as segments: a map key, or `None` for a list index.
type Segments<'a> = Vec<Option<&'a str>>;

fn walk<'a>(segs: &mut Segments<'a>, path: &str, v: &'a Value, errors: &mut Vec<FieldError>) {
    match v {
        Value::String(s) => {
            if let Some(reason) = problem(text_kind(segs), s) {
                errors.push(FieldError {
                    field: path.to_string(),
                    reason,
                });
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                segs.push(None);
                walk(segs, &format!("{path}[{i}]"), item, errors);
                segs.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.0.iter() {
                let Value::String(key) = k else { continue };
                segs.push(Some(key));
                // The path shows a control character escaped, never as it is.
                let shown: String = key.escape_debug().collect();
                let here = super::join(path, &shown);
                if text_kind(segs) != Text::Any {
                    if let Err(e) = names::control_char(key) {
                        errors.push(FieldError {
                            field: here.clone(),
                            reason: format!("the key {e}"),
                        });
                    }
                }
                walk(segs, &here, item, errors);
                segs.pop();
            }
        }
        Value::Tagged(t) => walk(segs, path, &t.value, errors),
        _ => {}
    }
}

/// Which rule the string at `segs` follows.
fn text_kind(segs: &[Option<&str>]) -> Text {
    if segs.iter().flatten().any(|k| k.starts_with("x-")) {
        return Text::Any;
    }
    const KV: &[&str] = &["environment", "labels", "annotations"];
    match segs {
        [Some("configs" | "secrets"), _, Some("content")] => Text::Any,
        [Some("services"), _, Some("command" | "entrypoint"), ..]
        | [Some("services"), _, Some("healthcheck"), Some("test"), ..]
        | [Some("services"), _, Some("build"), Some("dockerfile_inline")] => Text::Free,
        [Some("services"), _, Some(k), None] if KV.contains(k) => Text::Entry,
        [Some("services"), _, Some(k), Some(_)] if KV.contains(k) => Text::Free,
        [Some("services"), _, Some("build" | "deploy"), Some("args" | "labels"), None]
        | [Some("networks" | "volumes"), _, Some("labels"), None] => Text::Entry,
        [Some("services"), _, Some("build" | "deploy"), Some("args" | "labels"), Some(_)]
        | [Some("networks" | "volumes"), _, Some("labels"), Some(_)] => Text::Free,
        _ => Text::Name,
    }
}

/// What is wrong with `s` under `rule`, if anything.
fn problem(rule: Text, s: &str) -> Option<String> {
    let nul = "contains the control character U+0000 (NUL): the engine passes values as C \
               strings, which end at the first NUL";
    match rule {
        Text::Any => None,
        _ if s.contains('\0') => Some(nul.to_string()),
        Text::Free => None,
        Text::Entry => {
            let key = s.split_once('=').map_or(s, |(k, _)| k);
            names::control_char(key)
                .err()
                .map(|e| format!("the name before '=' {e}"))
        }
        Text::Name => names::control_char(s).err().map(|e| {
            format!(
                "{e}; only free text (environment and label values, command, entrypoint, \
                 healthcheck.test, build args) may hold control characters"
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    fn one(yaml: &str) -> (String, String) {
        let errs = errors(yaml);
        assert_eq!(errs.len(), 1, "{errs:?}");
        (errs[0].field.clone(), errs[0].reason.clone())
    }

    #[test]
    fn a_newline_in_a_network_name_is_named_escaped_in_the_path() {
        let (field, reason) = one(
            "services: {web: {image: x, networks: [n]}}\nnetworks: {n: {name: \"bad\\nname\"}}",
        );
        assert_eq!(field, "networks.n.name");
        assert!(reason.contains("U+000A"), "{reason}");
        let (field, _) = one("services: {web: {image: x}}\nnetworks: {\"bad\\nkey\": {}}");
        assert_eq!(field, "networks.bad\\nkey");
    }

    #[test]
    fn an_escape_sequence_in_an_image_or_hostname_or_alias_is_refused() {
        for (yaml, field) in [
            ("{image: \"web\\e[31m\"}", "services.web.image"),
            ("{image: x, hostname: \"h\\e[2J\"}", "services.web.hostname"),
            (
                "{image: x, networks: {default: {aliases: [\"a\\tb\"]}}}",
                "services.web.networks.default.aliases[0]",
            ),
            (
                "{image: x, container_name: \"c\\x7f\"}",
                "services.web.container_name",
            ),
            (
                "{image: x, labels: [\"a\\nb=1\"]}",
                "services.web.labels[0]",
            ),
            (
                "{image: x, environment: {\"A\\rB\": 1}}",
                "services.web.environment.A\\rB",
            ),
        ] {
            let (got, reason) = one(&format!("services: {{web: {yaml}}}"));
            assert_eq!(got, field, "{yaml}");
            assert!(reason.contains("control character"), "{reason}");
        }
    }

    #[test]
    fn free_text_keeps_its_newlines_and_tabs() {
        parse_stack(
            "s",
            "services: {web: {image: x, command: [sh, -c, \"echo a\\n\\techo b\"], environment: {A: \"l1\\nl2\"}, labels: [\"k=v\\nw\"], healthcheck: {test: \"true\\n\"}}}\nconfigs: {c: {content: \"a\\n\\u0000b\"}}\nx-note: \"\\e[1m\"",
        )
        .unwrap();
    }

    #[test]
    fn a_nul_is_refused_in_every_value_the_engine_receives() {
        for (yaml, field) in [
            (
                "{image: x, environment: {A: \"a\\0b\"}}",
                "services.web.environment.A",
            ),
            (
                "{image: x, environment: [\"A=a\\0b\"]}",
                "services.web.environment[0]",
            ),
            ("{image: x, command: [\"a\\0\"]}", "services.web.command[0]"),
            (
                "{image: x, entrypoint: \"a\\0\"}",
                "services.web.entrypoint",
            ),
            ("{image: x, labels: {l: \"\\0\"}}", "services.web.labels.l"),
        ] {
            let (got, reason) = one(&format!("services: {{web: {yaml}}}"));
            assert_eq!(got, field, "{yaml}");
            assert!(reason.contains("NUL"), "{reason}");
        }
    }
}
