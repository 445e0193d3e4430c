//! How long a string of a Compose document may be, checked on the parsed tree before
//! anything reads it: an environment value or a label is a few KiB at most in real files,
//! and an unbounded one would reach container configs, etcd and every status write. A
//! config's or secret's `content` is a file and may be as large as the request allows. Keys
//! need no bound here: YAML refuses an implicit key over 1024 characters.

use super::yaml::Value;
use crate::compose::FieldError;

/// The longest string value, in bytes.
pub const MAX_STRING: usize = 64 * 1024;

/// One error per string over its bound, naming its path.
pub fn check(doc: &Value) -> Vec<FieldError> {
    let mut errors = vec![];
    walk("", doc, &mut errors);
    errors
}

fn walk(path: &str, v: &Value, errors: &mut Vec<FieldError>) {
    match v {
        Value::String(s) if s.len() > MAX_STRING && !is_file_content(path) => {
            errors.push(FieldError {
                field: path.to_string(),
                reason: format!(
                    "a string of {} bytes, longer than the {MAX_STRING} allowed",
                    s.len()
                ),
            })
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), item, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.0.iter() {
                let key = key_text(k);
                let here = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(&here, item, errors);
            }
        }
        Value::Tagged(t) => walk(path, &t.value, errors),
        _ => {}
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// `configs.NAME.content` or `secrets.NAME.content`: a whole file.
fn is_file_content(path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    matches!(parts.as_slice(), ["configs" | "secrets", _, "content"])
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn an_overlong_value_is_an_error_naming_its_path_and_file_content_may_be_long() {
        let long = "x".repeat(MAX_STRING + 1);
        let errs = errors(&format!(
            "services: {{web: {{image: x, environment: {{A: {long}}}}}}}"
        ));
        assert_eq!(errs[0].field, "services.web.environment.A");
        assert!(
            errs[0].reason.contains("longer than the 65536 allowed"),
            "{}",
            errs[0].reason
        );
        let ok = format!(
            "services: {{web: {{image: x, configs: [c]}}}}\nconfigs: {{c: {{content: {long}}}}}"
        );
        assert!(crate::parse_stack("s", &ok).is_ok());
    }
}
