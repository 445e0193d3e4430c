//! Reading YAML values: maps with allowed keys, strings, booleans, durations, words and
//! `KEY=VALUE` lists. Each reader records an error at its field path and carries on.

use super::yaml::Value;
use super::{join, kind, FieldError, Parser};
use crate::duration;
use std::collections::BTreeMap;

impl Parser {
    pub(super) fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Whether `name` follows `rule` (one of [`crate::names`]' rules); if not, an error at
    /// `path` saying which `what` it is and why.
    pub(super) fn check_name(
        &mut self,
        path: &str,
        what: &str,
        name: &str,
        rule: fn(&str) -> Result<(), crate::names::NameError>,
    ) -> bool {
        match rule(name) {
            Ok(()) => true,
            Err(e) => {
                self.err(path, format!("{what} {name:?} {e}"));
                false
            }
        }
    }

    /// The entries of a map with string keys; keys outside `allowed` (and not `x-*`) are errors.
    pub(super) fn map<'a>(
        &mut self,
        path: &str,
        v: &'a Value,
        allowed: &[&str],
    ) -> Vec<(String, &'a Value)> {
        let Some(m) = v.as_mapping() else {
            self.err(path, format!("must be a map, got {}", kind(v)));
            return vec![];
        };
        let mut out = vec![];
        for (k, val) in m {
            let Some(key) = k.as_str() else {
                self.err(path, format!("keys must be strings, got {}", kind(k)));
                continue;
            };
            if key.starts_with("x-") {
                continue;
            }
            if !allowed.is_empty() && !allowed.contains(&key) {
                self.err(join(path, key), super::keys::unsupported(path, key));
                continue;
            }
            out.push((key.to_string(), val));
        }
        out
    }

    /// The entries of a map whose keys are data (variable or label names), not Compose keys:
    /// `x-` keys are kept, and scalar keys are read as text.
    fn data_entries<'a>(&mut self, path: &str, v: &'a Value) -> Vec<(String, &'a Value)> {
        let Some(m) = v.as_mapping() else {
            self.err(path, format!("must be a map, got {}", kind(v)));
            return vec![];
        };
        let mut out = vec![];
        for (k, val) in m {
            match k.scalar_text() {
                Some(key) => out.push((key, val)),
                None => self.err(path, format!("keys must be strings, got {}", kind(k))),
            }
        }
        out
    }

    pub(super) fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.err(path, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A string given to the engine as a name as it is (`name:`, `container_name`):
    /// [`crate::names::engine_name`].
    pub(super) fn engine_name(&mut self, path: &str, what: &str, v: &Value) -> Option<String> {
        let name = self.string(path, v)?;
        self.check_name(path, what, &name, crate::names::engine_name)
            .then_some(name)
    }

    /// `true`/`false`; a string with one of the words Compose reads as a boolean (a
    /// document sent straight to the API may hold them) too.
    pub(super) fn bool(&mut self, path: &str, v: &Value) -> bool {
        if let Value::Bool(b) = v {
            return *b;
        }
        match v.as_str().and_then(super::casts::boolean) {
            Some(b) => b,
            None => {
                self.err(path, format!("must be true or false, got {}", kind(v)));
                false
            }
        }
    }

    pub(super) fn duration_ns(&mut self, path: &str, v: &Value) -> Option<i64> {
        let text = self.string(path, v)?;
        match duration::parse(&text) {
            Ok(d) => Some(duration::nanos(d)),
            Err(reason) => {
                self.err(path, reason);
                None
            }
        }
    }

    /// A string (split like a shell would) or a list of strings.
    pub(super) fn words(&mut self, path: &str, v: &Value) -> Option<Vec<String>> {
        match v {
            Value::String(s) => match split_shell_words(s) {
                Ok(words) => Some(words),
                Err(reason) => {
                    self.err(path, reason);
                    None
                }
            },
            Value::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.string(&format!("{path}[{i}]"), item))
                    .collect(),
            ),
            Value::Null => None,
            other => {
                self.err(
                    path,
                    format!("must be a string or a list of strings, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// `KEY=VALUE` list or `KEY: VALUE` map.
    pub(super) fn key_values(
        &mut self,
        path: &str,
        v: &Value,
        what: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("{path}[{i}]");
                    let Some(entry) = self.string(&field, item) else {
                        continue;
                    };
                    match entry.split_once('=') {
                        Some((k, _)) if what == "variable" && k.ends_with(char::is_whitespace) => {
                            self.err(field, trailing_space(k))
                        }
                        Some((k, val)) if !k.is_empty() => {
                            out.insert(k.to_string(), val.to_string());
                        }
                        None if what == "label" => {
                            out.insert(entry, String::new());
                        }
                        _ => self.err(field, no_value(what, &entry)),
                    }
                }
            }
            Value::Mapping(_) => {
                for (k, val) in self.data_entries(path, v) {
                    let field = join(path, &k);
                    if what == "variable" && (k.is_empty() || k.contains('=')) {
                        // The engine takes `KEY=VALUE`: a '=' in the key would move it.
                        self.err(
                            field,
                            format!("variable name {k:?} must be non-empty and hold no '='"),
                        );
                    } else if what == "variable" && k.ends_with(char::is_whitespace) {
                        self.err(field, trailing_space(&k));
                    } else if val.is_null() && what == "label" {
                        out.insert(k, String::new());
                    } else if val.is_null() {
                        self.err(field, no_value(what, &k));
                    } else if let Some(s) = self.string(&field, val) {
                        out.insert(k, s);
                    }
                }
            }
            Value::Null => {}
            other => self.err(
                path,
                format!("must be a list of KEY=VALUE or a map, got {}", kind(other)),
            ),
        }
        out
    }
}

/// `- DEBUG = true`: Compose refuses a variable name that ends in a space rather than guess
/// whether the space belongs to it.
fn trailing_space(key: &str) -> String {
    format!(
        "variable name {key:?} ends with a space: write {}=VALUE, without spaces around '='",
        key.trim_end()
    )
}

/// A valueless entry reaching the server: only the client has the environment to fill it.
fn no_value(what: &str, key: &str) -> String {
    format!(
        "{what} {key:?} has no value: `capstan apply -f` takes it from your environment; \
         a document sent to the API must give {key}=VALUE"
    )
}

/// Splits a command string like a POSIX shell would (quotes and backslashes), as Compose does.
pub fn split_shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c)
                            }
                            None => return Err(format!("unterminated double quote in {text:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated double quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}
#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn environment_without_a_value_is_refused() {
        let f = fields("services: {web: {image: x, environment: [FOO]}}");
        assert_eq!(f, vec!["services.web.environment[0]"]);
        let f = fields("services: {web: {image: x, environment: {FOO: null}}}");
        assert_eq!(f, vec!["services.web.environment.FOO"]);
    }

    #[test]
    fn a_variable_name_holding_an_equals_sign_is_refused() {
        assert_eq!(
            fields("services: {web: {image: x, environment: {\"A=B\": 1, \"\": 2}}}"),
            vec!["services.web.environment.A=B", "services.web.environment."]
        );
    }

    #[test]
    fn an_environment_key_with_a_trailing_space_is_an_error() {
        assert_eq!(
            fields("services: {web: {image: x, environment: [\"DEBUG = true\", \"OK=1\"]}}"),
            vec!["services.web.environment[0]"]
        );
        assert_eq!(
            fields("services: {web: {image: x, environment: {\"DEBUG \": \" true\"}}}"),
            vec!["services.web.environment.DEBUG "]
        );
        let errs = errors("services: {web: {image: x, environment: [\"DEBUG =1\"]}}");
        assert!(errs[0].reason.contains("DEBUG=VALUE"), "{}", errs[0].reason);
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            split_shell_words(r#"sh -c 'echo "hi there"' x\ y"#).unwrap(),
            vec!["sh", "-c", "echo \"hi there\"", "x y"]
        );
        assert!(split_shell_words("echo 'oops").is_err());
        let spec = parse_stack(
            "s",
            "services: {web: {image: x, command: [\"httpd\", \"-f\"]}}",
        )
        .unwrap();
        assert_eq!(
            spec.services["web"].command,
            Some(vec!["httpd".into(), "-f".into()])
        );
    }

    #[test]
    fn variable_and_label_names_that_look_like_extensions_or_numbers_are_kept() {
        let spec = parse_stack(
            "s",
            "services: {a: {image: x, labels: {x-trace: on, 8080: web}, environment: {x-key: k}}}",
        )
        .unwrap();
        assert_eq!(spec.services["a"].labels["x-trace"], "on");
        assert_eq!(spec.services["a"].labels["8080"], "web");
        assert_eq!(spec.services["a"].environment["x-key"], "k");
    }

    #[test]
    fn a_label_without_a_value_is_an_empty_label() {
        let spec = parse_stack(
            "s",
            "services: {a: {image: x, labels: [tier]}, b: {image: x, labels: {tier: }}}",
        )
        .unwrap();
        assert_eq!(spec.services["a"].labels["tier"], "");
        assert_eq!(spec.services["b"].labels["tier"], "");
    }
}
