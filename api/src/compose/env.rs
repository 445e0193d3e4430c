//! Environment files (`.env`, `--env-file`, a service's `env_file`) and entries without a
//! value: `environment: [TZ]` or `TZ:` takes the variable from the client's environment and is
//! left out when it is unset, as Compose does; a label without a value is an empty label.

use super::interpolate::{expand, Lookup};
use super::merge::keyed;
use super::resolve::Resolver;
use super::yaml::{Mapping, Value};
use std::path::Path;

/// One line of an env file: `KEY=VALUE`, `export KEY=VALUE`, or `KEY` alone (`None`: take it
/// from the environment). Comments and blank lines are skipped. Unquoted and double-quoted
/// values are interpolated; single-quoted values are literal.
pub fn parse_env_file(text: &str, lookup: Lookup) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line, None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("line {}: {line:?} is not KEY=VALUE", n + 1));
        }
        // A value may use the variables defined above it in the same file.
        let earlier = |name: &str| {
            lookup(name).or_else(|| {
                out.iter()
                    .rev()
                    .find(|(k, _): &&(String, Option<String>)| k == name)
                    .and_then(|(_, v)| v.clone())
            })
        };
        let value = match value {
            None => None,
            Some(v) => Some(env_value(v, &earlier).map_err(|e| format!("line {}: {e}", n + 1))?),
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn env_value(v: &str, lookup: Lookup) -> Result<String, String> {
    let mut unset = vec![];
    if let Some(inner) = v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(inner.to_string());
    }
    if let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let unescaped = inner
            .replace("\\n", "\n")
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
        return expand(&unescaped, lookup, &mut unset);
    }
    let v = match v.find(" #") {
        Some(pos) => v[..pos].trim_end(),
        None => v,
    };
    expand(v, lookup, &mut unset)
}

impl Resolver<'_, '_> {
    /// For every service: `env_file` read into `environment`, valueless entries (and
    /// `build.args`) looked up, valueless labels made empty.
    pub(super) fn environments(&mut self, doc: &mut Value) {
        let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) else {
            return;
        };
        for (name, svc) in services.iter_mut() {
            let path = format!("services.{}", name.scalar_text().unwrap_or_default());
            let Some(svc) = svc.as_mapping_mut() else {
                continue;
            };
            let mut env = Mapping::default();
            if let Some(files) = svc.remove("env_file") {
                self.env_files(&format!("{path}.env_file"), &files, &mut env);
            }
            if let Some(own) = svc.get("environment") {
                if let Value::Mapping(own) = keyed(own) {
                    for (k, v) in own.0 {
                        env.insert(&k.scalar_text().unwrap_or_default(), v);
                    }
                }
            }
            if !env.is_empty() {
                env.0.retain_mut(|(k, v)| self.fill(k, v));
                svc.insert("environment", Value::Mapping(env));
            }
            if let Some(labels) = svc.get_mut("labels") {
                *labels = empty_labels(keyed(labels));
            }
            // `build.args` without a value come from the environment too, as in Compose.
            if let Some(args) = svc.get_mut("build").and_then(|b| b.get_mut("args")) {
                if let Value::Mapping(mut m) = keyed(args) {
                    m.0.retain_mut(|(k, v)| self.fill(k, v));
                    *args = Value::Mapping(m);
                }
            }
        }
    }

    /// An entry without a value takes the environment's; unset, it is left out.
    fn fill(&self, key: &Value, value: &mut Value) -> bool {
        if !value.is_null() {
            return true;
        }
        match (self.project.lookup)(&key.scalar_text().unwrap_or_default()) {
            Some(v) => {
                *value = Value::String(v);
                true
            }
            None => false,
        }
    }

    /// `env_file: a.env`, a list of those, or `{path, required}` entries.
    fn env_files(&mut self, field: &str, files: &Value, env: &mut Mapping) {
        let entries: Vec<(String, &Value)> = match files {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{field}[{i}]"), v))
                .collect(),
            other => vec![(field.to_string(), other)],
        };
        for (field, entry) in entries {
            let (path, required) = match entry {
                Value::Mapping(m) => {
                    if let Some(format) = m.get("format").and_then(Value::scalar_text) {
                        self.err(format!("{field}.format"), format!("unsupported env file format {format:?}: capstan reads the default KEY=VALUE format only"));
                        continue;
                    }
                    (
                        m.get("path").and_then(Value::scalar_text),
                        !matches!(m.get("required"), Some(Value::Bool(false))),
                    )
                }
                other => (other.scalar_text(), true),
            };
            let Some(path) = path else {
                self.err(format!("{field}.path"), "is required: the env file to read");
                continue;
            };
            let full = self.project_dir().join(&path);
            self.env_file(&field, &full, required, env);
        }
    }

    fn env_file(&mut self, field: &str, full: &Path, required: bool, env: &mut Mapping) {
        let text = match (self.project.load)(full) {
            Ok(Some(text)) => text,
            Ok(None) if !required => return,
            Ok(None) => {
                return self.err(
                    field,
                    format!(
                        "{} does not exist (mark it `required: false` if that is fine)",
                        full.display()
                    ),
                )
            }
            Err(e) => return self.err(field, format!("cannot read {}: {e}", full.display())),
        };
        match parse_env_file(&text, self.project.lookup) {
            Ok(pairs) => {
                for (k, v) in pairs {
                    env.insert(&k, v.map(Value::String).unwrap_or(Value::Null));
                }
            }
            Err(e) => self.err(field, format!("{}: {e}", full.display())),
        }
    }
}

fn empty_labels(labels: Value) -> Value {
    match labels {
        Value::Mapping(mut m) => {
            for (_, v) in m.iter_mut() {
                if v.is_null() {
                    *v = Value::String(String::new());
                }
            }
            Value::Mapping(m)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::resolve::tests::project_files;

    fn env(name: &str) -> Option<String> {
        match name {
            "TZ" => Some("Europe/Paris".into()),
            "HOST" => Some("db".into()),
            _ => None,
        }
    }

    #[test]
    fn env_files_read_like_compose_reads_them() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='$HOST literal'\nD=\"q $HOST\\n\"\nE=x # note\nTZ\nF=\n";
        let pairs = parse_env_file(text, &env).unwrap();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("A").as_deref(), Some("1"));
        assert_eq!(get("B").as_deref(), Some("two words"));
        assert_eq!(get("C").as_deref(), Some("$HOST literal"));
        assert_eq!(get("D").as_deref(), Some("q db\n"));
        assert_eq!(get("E").as_deref(), Some("x"));
        assert_eq!(get("TZ"), None);
        assert_eq!(get("F").as_deref(), Some(""));
        assert!(parse_env_file("NOT VALID LINE", &env).is_err());
        let chained = parse_env_file(
            "BASE=/srv\nDATA=${BASE}/data\nHOST=ignored\nURL=$HOST:1\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            chained[1].1.as_deref(),
            Some("/srv/data"),
            "earlier lines are visible"
        );
        assert_eq!(
            chained[3].1.as_deref(),
            Some("db:1"),
            "the environment wins over the file"
        );
    }

    #[test]
    fn valueless_build_args_come_from_the_client_and_unset_ones_are_left_out() {
        let doc = project_files(
            &[(
                "compose.yaml",
                "services:\n  web:\n    image: x\n    build: {context: ., args: [TZ, UNSET_ONE, V=1]}\n",
            )],
            &[],
        )
        .unwrap()
        .doc;
        let build = doc
            .get("services")
            .unwrap()
            .get("web")
            .unwrap()
            .get("build")
            .unwrap();
        let args = build.get("args").unwrap();
        assert_eq!(args.get("TZ").unwrap().as_str(), Some("Europe/Paris"));
        assert_eq!(args.get("V").unwrap().as_str(), Some("1"));
        assert!(args.get("UNSET_ONE").is_none());
    }

    #[test]
    fn env_files_feed_environment_which_wins_and_valueless_entries_come_from_the_client() {
        let doc = project_files(
            &[
                ("compose.yaml", "services:\n  web:\n    image: x\n    env_file: [a.env, {path: missing.env, required: false}]\n    environment: [B=own, TZ, UNSET_ONE]\n    labels: [plain, k=v]\n"),
                ("a.env", "A=from-file\nB=from-file\n"),
            ],
            &[],
        )
        .unwrap()
        .doc;
        let web = doc.get("services").unwrap().get("web").unwrap();
        let e = web.get("environment").unwrap();
        assert_eq!(e.get("A").unwrap().as_str(), Some("from-file"));
        assert_eq!(e.get("B").unwrap().as_str(), Some("own"));
        assert_eq!(e.get("TZ").unwrap().as_str(), Some("Europe/Paris"));
        assert!(
            e.get("UNSET_ONE").is_none(),
            "an unset variable is left out"
        );
        assert!(web.get("env_file").is_none());
        assert_eq!(
            web.get("labels").unwrap().get("plain").unwrap().as_str(),
            Some("")
        );
    }

    #[test]
    fn a_required_env_file_that_is_missing_is_an_error_naming_it() {
        let errs = project_files(
            &[(
                "compose.yaml",
                "services: {web: {image: x, env_file: nope.env}}",
            )],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web.env_file");
        assert!(errs[0].reason.contains("nope.env"), "{}", errs[0].reason);
        let errs = project_files(
            &[(
                "compose.yaml",
                "services: {web: {image: x, env_file: [{path: a.env, format: raw}]}}",
            )],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web.env_file[0].format");
    }
}
