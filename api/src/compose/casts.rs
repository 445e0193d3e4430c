//! The types Compose gives to strings in typed fields.
//!
//! Interpolation only makes strings, so `replicas: ${N:-3}` or `read_only: ${RO:-false}`
//! would otherwise reach the model as text. Compose converts every string at a field its
//! schema types as a boolean or a number, interpolated or not, right after interpolating each
//! file: so does capstan, with the same words. Booleans are YAML 1.1's (`true`/`false`,
//! `yes`/`no`, `on`/`off`, `y`/`n`, any case), which is also why `tty: yes` means true in
//! Compose even though its YAML reader keeps `yes` a string elsewhere. Numbers are their
//! decimal text. Sizes (`mem_limit: ${MEM:-512m}`) and durations stay strings: the model reads
//! those from text anyway.

use super::yaml::{Number, Value};
use super::{join, FieldError};

/// What a typed field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
}

/// The typed fields: `*` is any key of a map, `[]` any entry of a list.
const TYPED: &[(&[&str], Kind)] = &[
    (&["services", "*", "read_only"], Kind::Bool),
    (&["services", "*", "init"], Kind::Bool),
    (&["services", "*", "tty"], Kind::Bool),
    (&["services", "*", "stdin_open"], Kind::Bool),
    (&["services", "*", "privileged"], Kind::Bool),
    (&["services", "*", "oom_kill_disable"], Kind::Bool),
    (&["services", "*", "healthcheck", "disable"], Kind::Bool),
    (&["services", "*", "build", "no_cache"], Kind::Bool),
    (&["services", "*", "build", "pull"], Kind::Bool),
    (
        &["services", "*", "depends_on", "*", "required"],
        Kind::Bool,
    ),
    (&["services", "*", "depends_on", "*", "restart"], Kind::Bool),
    (&["services", "*", "volumes", "[]", "read_only"], Kind::Bool),
    (&["services", "*", "env_file", "[]", "required"], Kind::Bool),
    (
        &["services", "*", "volumes", "[]", "volume", "nocopy"],
        Kind::Bool,
    ),
    (
        &["services", "*", "volumes", "[]", "bind", "create_host_path"],
        Kind::Bool,
    ),
    (&["networks", "*", "external"], Kind::Bool),
    (&["networks", "*", "internal"], Kind::Bool),
    (&["networks", "*", "attachable"], Kind::Bool),
    (&["networks", "*", "enable_ipv6"], Kind::Bool),
    (&["volumes", "*", "external"], Kind::Bool),
    (&["secrets", "*", "external"], Kind::Bool),
    (&["configs", "*", "external"], Kind::Bool),
    (&["services", "*", "scale"], Kind::Int),
    (&["services", "*", "deploy", "replicas"], Kind::Int),
    (
        &["services", "*", "deploy", "update_config", "parallelism"],
        Kind::Int,
    ),
    (
        &["services", "*", "deploy", "rollback_config", "parallelism"],
        Kind::Int,
    ),
    (
        &["services", "*", "deploy", "restart_policy", "max_attempts"],
        Kind::Int,
    ),
    (&["services", "*", "healthcheck", "retries"], Kind::Int),
    (&["services", "*", "ports", "[]", "target"], Kind::Int),
    (&["services", "*", "ulimits", "*"], Kind::Int),
    (&["services", "*", "ulimits", "*", "soft"], Kind::Int),
    (&["services", "*", "ulimits", "*", "hard"], Kind::Int),
    (&["services", "*", "pids_limit"], Kind::Int),
    (&["services", "*", "cpu_shares"], Kind::Int),
    (&["services", "*", "oom_score_adj"], Kind::Int),
    (&["services", "*", "cpus"], Kind::Float),
    (
        &[
            "services",
            "*",
            "deploy",
            "update_config",
            "max_failure_ratio",
        ],
        Kind::Float,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "rollback_config",
            "max_failure_ratio",
        ],
        Kind::Float,
    ),
];

/// A boolean as Compose reads one written as a string, or `None` if it is not one.
pub fn boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" => Some(true),
        "false" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Converts every string at a typed field of `doc`; one error per string that is not of its
/// field's type, naming the field.
pub fn apply(doc: &mut Value) -> Vec<FieldError> {
    let mut errors = vec![];
    for (pattern, kind) in TYPED {
        visit(doc, pattern, "", *kind, &mut errors);
    }
    errors
}

fn visit(v: &mut Value, pattern: &[&str], path: &str, kind: Kind, errors: &mut Vec<FieldError>) {
    let Some((first, rest)) = pattern.split_first() else {
        if let Value::String(s) = v {
            match convert(s, kind) {
                Some(typed) => *v = typed,
                None => errors.push(FieldError {
                    field: path.to_string(),
                    reason: expected(kind, s),
                }),
            }
        }
        return;
    };
    match (v, *first) {
        (Value::Sequence(items), "[]") => {
            for (i, item) in items.iter_mut().enumerate() {
                visit(item, rest, &format!("{path}[{i}]"), kind, errors);
            }
        }
        (Value::Mapping(m), key) => {
            for (k, item) in m.iter_mut() {
                let name = k.scalar_text().unwrap_or_default();
                if key == "*" || name == key {
                    visit(item, rest, &join(path, &name), kind, errors);
                }
            }
        }
        _ => {}
    }
}

fn convert(text: &str, kind: Kind) -> Option<Value> {
    match kind {
        Kind::Bool => boolean(text).map(Value::Bool),
        Kind::Int => whole(text).map(Value::Number),
        Kind::Float => decimal(text).map(|x| Value::Number(Number::Float(x))),
    }
}

/// Decimal digits with an optional sign, and nothing else (no spaces, no `0x`).
fn whole(text: &str) -> Option<Number> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match text.strip_prefix('+').unwrap_or(text).parse::<i64>() {
        Ok(n) if n < 0 => Some(Number::Int(n)),
        Ok(n) => Some(Number::UInt(n as u64)),
        Err(_) => None,
    }
}

fn decimal(text: &str) -> Option<f64> {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-' | b'e' | b'E'));
    text.parse::<f64>().ok().filter(|x| ok && x.is_finite())
}

fn expected(kind: Kind, got: &str) -> String {
    let what = match kind {
        Kind::Bool => "a boolean (true or false; yes/no, on/off and y/n too, as in Compose)",
        Kind::Int => "a whole number",
        Kind::Float => "a number",
    };
    format!("must be {what}, got {got:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::yaml::parse;

    fn cast(text: &str) -> (Value, Vec<FieldError>) {
        let mut doc = parse(text).unwrap();
        let errors = apply(&mut doc);
        (doc, errors)
    }

    #[test]
    fn booleans_written_as_strings_become_booleans_with_yaml_1_1_words() {
        let (doc, errors) = cast(
            "services: {web: {read_only: \"true\", tty: yes, init: On, privileged: N, stdin_open: FALSE, healthcheck: {disable: off}}}",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("read_only"), Some(&Value::Bool(true)));
        assert_eq!(web.get("tty"), Some(&Value::Bool(true)));
        assert_eq!(web.get("init"), Some(&Value::Bool(true)));
        assert_eq!(web.get("privileged"), Some(&Value::Bool(false)));
        assert_eq!(web.get("stdin_open"), Some(&Value::Bool(false)));
        assert_eq!(
            web.get("healthcheck").unwrap().get("disable"),
            Some(&Value::Bool(false))
        );
    }

    #[test]
    fn numbers_written_as_strings_become_numbers_of_their_field() {
        let (doc, errors) = cast(
            "services: {web: {cpus: \"0.5\", deploy: {replicas: \"3\"}, ulimits: {nproc: \"512\", nofile: {soft: \"1024\", hard: \"+2048\"}}, oom_score_adj: \"-500\", ports: [{target: \"80\", published: \"8080-8081\"}]}}",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("cpus"), Some(&Value::Number(Number::Float(0.5))));
        let replicas = web.get("deploy").unwrap().get("replicas");
        assert_eq!(replicas, Some(&Value::Number(Number::UInt(3))));
        let ulimits = web.get("ulimits").unwrap();
        assert_eq!(
            ulimits.get("nproc"),
            Some(&Value::Number(Number::UInt(512)))
        );
        let nofile = ulimits.get("nofile").unwrap();
        assert_eq!(nofile.get("hard"), Some(&Value::Number(Number::UInt(2048))));
        assert_eq!(
            web.get("oom_score_adj"),
            Some(&Value::Number(Number::Int(-500)))
        );
        let port = &web.get("ports").unwrap().as_sequence().unwrap()[0];
        assert_eq!(port.get("target"), Some(&Value::Number(Number::UInt(80))));
        assert_eq!(
            port.get("published").and_then(Value::as_str),
            Some("8080-8081"),
            "a published port may be a range: it stays text"
        );
    }

    #[test]
    fn a_string_that_is_not_of_its_fields_type_is_an_error_naming_the_field() {
        let (_, errors) = cast(
            "services: {web: {read_only: maybe, deploy: {replicas: \" 3\"}, cpus: half}}\nnetworks: {n: {internal: \"1\"}}",
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "services.web.read_only",
                "networks.n.internal",
                "services.web.deploy.replicas",
                "services.web.cpus"
            ]
        );
        assert!(
            errors[0].reason.contains("\"maybe\""),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn strings_elsewhere_are_left_alone() {
        let (doc, errors) =
            cast("services: {web: {environment: {DEBUG: yes}, labels: {n: \"3\"}}}");
        assert!(errors.is_empty());
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(
            web.get("environment")
                .unwrap()
                .get("DEBUG")
                .and_then(Value::as_str),
            Some("yes")
        );
    }
}
