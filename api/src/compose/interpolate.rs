//! Compose interpolation: `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`, nested in defaults, and `$$`
//! for a literal `$`.
//!
//! Applied to every string value of a document (never to keys) before any string is parsed,
//! so `"127.0.0.1:${PORT:-8888}:8888"` is a port like any other; then the strings of typed
//! fields get their type ([`super::casts`]). Pure: the values come from a
//! lookup the caller provides (the CLI passes its environment merged with `.env`).

use super::yaml::Value;
use super::{join, FieldError};

/// Where interpolation reads variables from.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Interpolates every string value of `doc` in place. A variable that is unset and has no
/// default becomes an empty string and a warning (as Compose does); `${VAR:?why}` and
/// `${VAR?why}` are errors naming the variable and the field. One warning per variable,
/// naming the fields that use it.
pub fn interpolate(doc: &mut Value, lookup: Lookup) -> (Vec<String>, Vec<FieldError>) {
    let mut out = Outcome::default();
    walk(doc, "", lookup, &mut out);
    // Compose types the strings of typed fields right after interpolating (a field whose
    // template failed has its error already).
    for e in super::casts::apply(doc) {
        if !out.errors.iter().any(|known| known.field == e.field) {
            out.errors.push(e);
        }
    }
    let warnings = out
        .unset
        .into_iter()
        .map(|(name, fields)| {
            format!(
                "variable {name:?} is not set; using an empty string (in {})",
                fields.join(", ")
            )
        })
        .collect();
    (warnings, out.errors)
}

#[derive(Default)]
struct Outcome {
    /// Unset variables and the fields using them, in the order first met.
    unset: Vec<(String, Vec<String>)>,
    errors: Vec<FieldError>,
}

fn walk(v: &mut Value, path: &str, lookup: Lookup, out: &mut Outcome) {
    match v {
        Value::String(s) => {
            let mut unset = vec![];
            match expand(s, lookup, &mut unset) {
                Ok(text) => *s = text,
                Err(reason) => out.errors.push(FieldError {
                    field: field_name(path),
                    reason,
                }),
            }
            for name in unset {
                let field = field_name(path);
                match out.unset.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, fields)) if !fields.contains(&field) => fields.push(field),
                    Some(_) => {}
                    None => out.unset.push((name, vec![field])),
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{path}[{i}]"), lookup, out);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.scalar_text().unwrap_or_else(|| "?".into());
                walk(item, &join(path, &key), lookup, out);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, lookup, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn field_name(path: &str) -> String {
    if path.is_empty() {
        "(file)".into()
    } else {
        path.to_string()
    }
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Expands one string; the names of unset variables without a default go to `unset`.
pub fn expand(text: &str, lookup: Lookup, unset: &mut Vec<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('{') => {
                let end = closing_brace(after).ok_or_else(|| invalid(text, "an unclosed ${"))?;
                out.push_str(&braced(&after[1..end], text, lookup, unset)?);
                rest = &after[end + 1..];
            }
            Some(c) if is_name_start(c) => {
                let len = after.find(|c| !is_name_char(c)).unwrap_or(after.len());
                let name = &after[..len];
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => unset.push(name.to_string()),
                }
                rest = &after[len..];
            }
            // As Compose: a `$` that starts neither a name nor `${` is text (`$2a$14$...`
            // bcrypt hashes, `a $ sign`, a trailing `$`).
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn invalid(text: &str, what: &str) -> String {
    format!("invalid interpolation in {text:?}: {what} (write $$ for a literal $)")
}

/// The index of the `}` closing the `{` at the start of `text`. Braces nest whether or not a
/// `$` opens them, so a default may hold JSON (`${CONF:-{"debug":1}}`) and the closing brace
/// is the one that balances them, used or not.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The inside of `${...}`: a name, then optionally an operator and its word.
fn braced(
    inner: &str,
    text: &str,
    lookup: Lookup,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let len = inner.find(|c| !is_name_char(c)).unwrap_or(inner.len());
    let (name, op) = inner.split_at(len);
    if !name.starts_with(is_name_start) {
        return Err(invalid(
            text,
            &format!("${{{inner}}} does not start with a variable name"),
        ));
    }
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (word, operator) = match op {
        "" => {
            if value.is_none() {
                unset.push(name.to_string());
            }
            return Ok(value.unwrap_or_default());
        }
        _ if op.starts_with(":-") || op.starts_with(":?") || op.starts_with(":+") => {
            (&op[2..], &op[..2])
        }
        _ if op.starts_with('-') || op.starts_with('?') || op.starts_with('+') => {
            (&op[1..], &op[..1])
        }
        _ => {
            return Err(invalid(
                text,
                &format!("unknown operator in ${{{inner}}}: use :-, -, :?, ?, :+ or +"),
            ))
        }
    };
    // The word is expanded only when it is used, as a shell does.
    let mut word_value = || expand(word, lookup, unset);
    match operator {
        ":-" if !set_nonempty => word_value(),
        "-" if value.is_none() => word_value(),
        ":?" if !set_nonempty => Err(required(name, &word_value()?, value.is_some())),
        "?" if value.is_none() => Err(required(name, &word_value()?, false)),
        ":+" => Ok(if set_nonempty {
            word_value()?
        } else {
            String::new()
        }),
        "+" => Ok(if value.is_some() {
            word_value()?
        } else {
            String::new()
        }),
        _ => Ok(value.unwrap_or_default()),
    }
}

fn required(name: &str, why: &str, empty: bool) -> String {
    let state = if empty { "empty" } else { "not set" };
    if why.is_empty() {
        format!("variable {name:?} is required but {state}")
    } else {
        format!("variable {name:?} is required but {state}: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::yaml;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("9000".into()),
            _ => None,
        }
    }

    fn x(text: &str) -> Result<String, String> {
        expand(text, &env, &mut vec![])
    }

    #[test]
    fn plain_and_braced_variables_expand() {
        assert_eq!(x("a $SET b ${SET}c").unwrap(), "a value b valuec");
        assert_eq!(x("$SET.$SET-x").unwrap(), "value.value-x");
        assert_eq!(x("no dollar").unwrap(), "no dollar");
    }

    #[test]
    fn a_double_dollar_is_a_literal_dollar_and_is_not_expanded_again() {
        assert_eq!(x("$$").unwrap(), "$");
        assert_eq!(x("$$SET $${SET}").unwrap(), "$SET ${SET}");
        assert_eq!(
            x("sh -c 'echo $$(cat /run/x)'").unwrap(),
            "sh -c 'echo $(cat /run/x)'"
        );
    }

    #[test]
    fn colon_dash_defaults_when_unset_or_empty_and_dash_only_when_unset() {
        assert_eq!(x("${UNSET:-d}").unwrap(), "d");
        assert_eq!(x("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(x("${SET:-d}").unwrap(), "value");
        assert_eq!(x("${UNSET-d}").unwrap(), "d");
        assert_eq!(x("${EMPTY-d}").unwrap(), "");
        assert_eq!(x("${SET-d}").unwrap(), "value");
        assert_eq!(x("${UNSET:-}").unwrap(), "");
    }

    #[test]
    fn colon_question_fails_when_unset_or_empty_and_question_only_when_unset() {
        let err = x("${UNSET:?give the password}").unwrap_err();
        assert!(
            err.contains("\"UNSET\"") && err.contains("give the password"),
            "{err}"
        );
        assert!(x("${EMPTY:?must be set}").unwrap_err().contains("empty"));
        assert_eq!(x("${SET:?x}").unwrap(), "value");
        assert!(x("${UNSET?}").unwrap_err().contains("not set"));
        assert_eq!(x("${EMPTY?x}").unwrap(), "");
    }

    #[test]
    fn colon_plus_substitutes_when_set_and_nonempty_and_plus_when_set() {
        assert_eq!(x("${SET:+alt}").unwrap(), "alt");
        assert_eq!(x("${EMPTY:+alt}").unwrap(), "");
        assert_eq!(x("${UNSET:+alt}").unwrap(), "");
        assert_eq!(x("${EMPTY+alt}").unwrap(), "alt");
        assert_eq!(x("${UNSET+alt}").unwrap(), "");
    }

    #[test]
    fn defaults_nest_and_are_only_expanded_when_used() {
        assert_eq!(x("${UNSET:-${PORT:-1}}").unwrap(), "9000");
        assert_eq!(x("${UNSET:-${ALSO_UNSET:-x}}").unwrap(), "x");
        assert_eq!(x("${A:-${B:-${C:-deep}}}!").unwrap(), "deep!");
        assert_eq!(x("${SET:-${UNSET:?never}}").unwrap(), "value");
        assert_eq!(
            x("127.0.0.1:${PORT:-8888}:8888").unwrap(),
            "127.0.0.1:9000:8888"
        );
    }

    #[test]
    fn an_unset_variable_without_default_is_empty_and_reported() {
        let mut unset = vec![];
        assert_eq!(expand("a${UNSET}b$UNSET2", &env, &mut unset).unwrap(), "ab");
        assert_eq!(unset, vec!["UNSET", "UNSET2"]);
        let mut unset = vec![];
        assert_eq!(expand("${EMPTY}", &env, &mut unset).unwrap(), "");
        assert!(unset.is_empty(), "empty is set");
    }

    #[test]
    fn malformed_templates_say_how_to_write_a_dollar() {
        for bad in ["${unclosed", "${}", "${SET!x}", "${1A}", "${ SET}"] {
            let err = x(bad).unwrap_err();
            assert!(err.contains("$$"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_dollar_before_neither_a_name_nor_a_brace_is_kept_as_text() {
        assert_eq!(
            x("$2a$14$9jq8Q7fbtFRQvXpdCq7Jcuy.Rx1h/L4J60Otx.gyNLbAYctGMJ9tK").unwrap(),
            "$2a$14$9jq8Q7fbtFRQvXpdCq7Jcuy.Rx1h/L4J60Otx.gyNLbAYctGMJ9tK"
        );
        // As in Compose, a `$` before a letter still starts a name: `$$` keeps it.
        let mut unset = vec![];
        assert_eq!(
            expand("$2y$10$ab.cd", &env, &mut unset).unwrap(),
            "$2y$10.cd"
        );
        assert_eq!(unset, vec!["ab"]);
        assert_eq!(x("a $ string").unwrap(), "a $ string");
        assert_eq!(x("cost $5, end $").unwrap(), "cost $5, end $");
        assert_eq!(
            x("$-$SET").unwrap(),
            "$-value",
            "the name after it is still read"
        );
    }

    #[test]
    fn braces_in_a_default_nest_and_leave_nothing_behind() {
        assert_eq!(x(r#"${SET:-{"json":1}}"#).unwrap(), "value");
        assert_eq!(
            x(r#"${UNSET:-{"json":{"a":1}}}"#).unwrap(),
            r#"{"json":{"a":1}}"#
        );
        assert_eq!(x(r#"${UNSET:-{"p":${PORT}}}!"#).unwrap(), r#"{"p":9000}!"#);
        assert_eq!(x("${SET:-a}b}").unwrap(), "valueb}");
    }

    #[test]
    fn a_double_dollar_inside_a_default_stays_an_escaped_dollar() {
        assert_eq!(x("${UNSET:-$$HOME}").unwrap(), "$HOME");
        assert_eq!(x("${UNSET:-$${x}}").unwrap(), "${x}");
    }

    #[test]
    fn every_string_value_is_interpolated_but_not_keys_with_errors_naming_the_field() {
        let mut doc = yaml::parse(
            "services:\n  web:\n    image: \"img:${TAG:-1}\"\n    ports: [\"${PORT}:80\"]\n    environment: {$SET: \"${NOPE:?set NOPE}\"}\n    command: $$HOME\n",
        )
        .unwrap();
        let (warnings, errors) = interpolate(&mut doc, &env);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "services.web.environment.$SET");
        assert!(errors[0].reason.contains("set NOPE"));
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().as_str(), Some("img:1"));
        assert_eq!(
            web.get("ports").unwrap().as_sequence().unwrap()[0].as_str(),
            Some("9000:80")
        );
        assert_eq!(web.get("command").unwrap().as_str(), Some("$HOME"));
        let mut doc =
            yaml::parse("services: {web: {image: \"x:$TAG\", user: $TAG}, db: {image: $TAG}}")
                .unwrap();
        let (warnings, _) = interpolate(&mut doc, &env);
        assert_eq!(
            warnings,
            vec!["variable \"TAG\" is not set; using an empty string (in services.web.image, services.web.user, services.db.image)"]
        );
    }

    #[test]
    fn no_template_of_the_operator_characters_panics() {
        let alphabet = ["$", "{", "}", ":", "-", "?", "+", "SET", "é"];
        let mut stack = vec![String::new()];
        while let Some(text) = stack.pop() {
            let _ = x(&text);
            if text.chars().count() < 6 {
                stack.extend(alphabet.iter().map(|a| format!("{text}{a}")));
            }
        }
    }
}
