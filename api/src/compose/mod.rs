//! Compose file → [`StackSpec`].
//!
//! The file is walked as a YAML tree so that every error carries its field path
//! (`services.web.deploy.replicas`). All errors are collected, not just the first, and any
//! key outside the supported subset is an error naming it: nothing is silently dropped.
//! Extension keys (`x-*`) are allowed anywhere, as the Compose spec says.
//!
//! # Where each rule lives
//! Two stages, both pure:
//! - **The file layer**, run by the client (`capstan apply`), see [`resolve::resolve`]:
//!   [`yaml`] (reading, bounded by the work aliases make; anchors and `<<`; several documents),
//!   [`interpolate`] (`${VAR}` and friends), [`casts`] (the types of typed fields written as text),
//!   [`merge`] (override files, `extends`, `!reset`/`!override`), `profiles`, [`env`](mod@env)
//!   (`.env`, `env_file`, valueless entries), `include` (other projects, with their own folder
//!   and env files), and [`resolve`] tying them together (`extends`). Its output is one plain
//!   document.
//! - **The model**, run by the server on that document ([`parse_stack`]): `stack` (top level
//!   and cross-checks), `services`, `ports`, `volumes`, `networks`, `healthcheck`, `values`
//!   (the typed readers every file uses), `build`, and `keys` (why a key is refused); `bounds`
//!   (string lengths) and `chars` (control characters and NUL) walk the whole document first.

use serde::{Deserialize, Serialize};

use crate::spec::*;

mod bounds;
mod build;
pub mod casts;
mod chars;
mod deploy;
pub mod env;
mod healthcheck;
mod hooks;
mod include;
pub mod interpolate;
mod kernel;
mod keys;
pub mod merge;
mod networks;
pub mod notices;
mod options;
mod ports;
mod profiles;
mod pull;
pub mod resolve;
mod secrets;
mod services;
mod sidecars;
mod sources;
mod stack;
mod values;
mod volumes;
pub mod yaml;

use yaml::Value;

pub use build::parse_build;
pub use values::split_shell_words;

/// One problem in a Compose file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where: `services.web.ports[0]`.
    pub field: String,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// Every problem found in a file; nothing was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid stack: {}", .errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
pub struct InvalidStack {
    pub errors: Vec<FieldError>,
}

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = 1000;

/// Parses a Compose document (YAML, or JSON, which is YAML) for stack `stack`. The stack name
/// given by the caller wins over the file's `name:`, as `docker compose -p` does.
pub fn parse_stack(stack: &str, text: &str) -> Result<StackSpec, InvalidStack> {
    let mut p = Parser::default();
    let doc = match yaml::parse(text) {
        Ok(mut doc) => {
            yaml::strip_tags(&mut doc);
            doc
        }
        Err(e) => {
            return Err(InvalidStack {
                errors: vec![FieldError {
                    field: "(file)".into(),
                    reason: format!("not valid YAML: {e}"),
                }],
            })
        }
    };
    // Overlong strings and characters no name may hold are refused before any reader sees
    // them (and prints them back in a reason).
    let mut unreadable = bounds::check(&doc);
    unreadable.extend(chars::check(&doc));
    if !unreadable.is_empty() {
        return Err(InvalidStack { errors: unreadable });
    }
    let spec = p.stack(stack, &doc);
    if p.errors.is_empty() {
        Ok(spec)
    } else {
        Err(InvalidStack { errors: p.errors })
    }
}

/// The `name:` a file declares, if any (for the CLI's default stack name).
pub fn declared_name(text: &str) -> Option<String> {
    let doc = yaml::parse(text).ok()?;
    doc.get("name")?.as_str().map(str::to_string)
}

#[derive(Default)]
struct Parser {
    errors: Vec<FieldError>,
    /// `links` of every service, applied when the whole stack is read.
    links: Vec<Link>,
    /// Services that gave a replica count of their own, and the field that did (a sidecar's
    /// must agree with its partner's).
    counted: std::collections::BTreeMap<String, String>,
}

/// One `links` entry: `service` links `target`, seen by it as `alias`.
struct Link {
    service: String,
    field: String,
    target: String,
    alias: Option<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    pub use super::{parse_stack, FieldError};

    pub fn errors(text: &str) -> Vec<FieldError> {
        parse_stack("demo", text).unwrap_err().errors
    }

    pub fn fields(text: &str) -> Vec<String> {
        errors(text).into_iter().map(|e| e.field).collect()
    }

    /// Service `web` (image `x`, plus `yaml`), parsed beside a plain service `db`.
    pub fn web(yaml: &str) -> crate::spec::ServiceSpec {
        let text = format!("services: {{web: {{image: x, {yaml}}}, db: {{image: x}}}}");
        let mut parsed = parse_stack("s", &text).unwrap();
        parsed.services.remove("web").unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn the_seed_stack_parses_with_networks_volumes_and_replicas() {
        let spec = parse_stack(
            "shop",
            r#"
version: "3.9"
services:
  web:
    image: capstan-demo/web:1
    ports: ["80"]
    deploy: {replicas: 3}
    networks: [frontend]
  app:
    image: capstan-demo/web:1
    environment:
      DB_HOST: db
      PORT: 8080
    networks:
      frontend:
      backend: {aliases: [api]}
  db:
    image: capstan-demo/web:1
    environment: ["MYSQL_DATABASE=appdb"]
    volumes: ["db_data:/var/lib/mysql", "/srv/conf:/etc/conf:ro", "/scratch"]
    networks: [backend]
    restart: "no"
    stop_grace_period: 1m30s
networks: {frontend: {}, backend: {}}
volumes: {db_data: {}}
"#,
        )
        .unwrap();
        assert_eq!(spec.services["web"].replicas, 3);
        assert_eq!(spec.services["app"].environment["PORT"], "8080");
        assert_eq!(
            spec.services["app"].networks["backend"].aliases,
            vec!["api"]
        );
        let db = &spec.services["db"];
        assert_eq!(db.volumes[0].kind, MountKind::Volume);
        assert_eq!(
            db.volumes[1],
            MountSpec::plain(MountKind::Bind, Some("/srv/conf".into()), "/etc/conf", true)
        );
        assert_eq!(db.volumes[2].kind, MountKind::Anonymous);
        assert_eq!(db.restart, Some(RestartPolicy::No));
        assert_eq!(db.stop_grace_period_ms, Some(90_000));
    }

    #[test]
    fn a_service_without_networks_joins_the_default_network() {
        let spec = parse_stack("s", "services: {web: {image: x}}").unwrap();
        assert!(spec.services["web"].networks.contains_key("default"));
        assert_eq!(spec.services["web"].replicas, 1);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let errs = errors("services: {web: {image: x, gpus: all}}");
        assert_eq!(errs[0].field, "services.web.gpus");
        assert!(errs[0].reason.contains("unsupported key \"gpus\""));
        assert_eq!(
            fields("services: {web: {image: x}}\nmodels: {}"),
            vec!["models"]
        );
        assert_eq!(
            fields("services: {web: {image: x, deploy: {placement: {}}}}"),
            vec!["services.web.deploy.placement"]
        );
    }

    #[test]
    fn extension_keys_are_allowed_anywhere() {
        parse_stack(
            "s",
            "x-common: {a: 1}\nservices: {web: {image: x, x-note: hi}}",
        )
        .unwrap();
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let f = fields("services: {web: {ports: [\"99999\"]}, db: {image: x, networks: [nope]}}");
        assert_eq!(
            f,
            vec![
                "services.web.ports[0]",
                "services.web.image",
                "services.db.networks.nope"
            ]
        );
    }

    #[test]
    fn durations_too_long_for_the_engine_are_field_errors_not_panics() {
        for d in ["1e20", "3000000000h", "-1s", "99999999999999999999s"] {
            let errs = errors(&format!(
                "services: {{web: {{image: x, stop_grace_period: {d}}}}}"
            ));
            assert_eq!(errs[0].field, "services.web.stop_grace_period", "{d}");
        }
    }

    #[test]
    fn json_bodies_parse_like_yaml() {
        let spec = parse_stack(
            "s",
            r#"{"services": {"web": {"image": "x", "deploy": {"replicas": 2}}}}"#,
        )
        .unwrap();
        assert_eq!(spec.services["web"].replicas, 2);
    }

    #[test]
    fn broken_yaml_and_empty_files_are_errors() {
        assert_eq!(fields("services: [unclosed"), vec!["(file)"]);
        assert_eq!(fields("name: x"), vec!["services"]);
        assert_eq!(fields("services: {}"), vec!["services"]);
        assert_eq!(
            parse_stack("Bad Name", "services: {a: {image: x}}")
                .unwrap_err()
                .errors[0]
                .field,
            "name"
        );
    }
}

#[cfg(test)]
mod examples {
    /// Every example in `examples/` parses: they are documentation that must not rot.
    #[test]
    fn every_example_stack_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = super::declared_name(&text).expect("examples name their stack");
                if let Err(e) = super::parse_stack(&name, &text) {
                    panic!("{}: {e}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 4, "found {seen} examples");
    }
}
