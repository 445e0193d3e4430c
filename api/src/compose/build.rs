//! `build:` of a service: the short form (the context) and the long form, with Compose's
//! meaning; what the client added (`x-capstan-digest`, `x-capstan-image`) is read back.

use super::yaml::Value;
use super::{join, kind, InvalidStack, Parser};
use crate::build::BuildSpec;

/// The `build:` value at `path`, read alone: what the client packs and builds.
pub fn parse_build(path: &str, v: &Value) -> Result<BuildSpec, InvalidStack> {
    let mut p = Parser::default();
    let spec = p.build(path, v);
    match spec {
        Some(spec) if p.errors.is_empty() => Ok(spec),
        _ => Err(InvalidStack { errors: p.errors }),
    }
}

/// The long form's keys capstan honours.
const BUILD_KEYS: &[&str] = &[
    "context",
    "dockerfile",
    "dockerfile_inline",
    "args",
    "target",
    "labels",
    "network",
    "shm_size",
    "extra_hosts",
    "no_cache",
    "pull",
    "tags",
];

impl Parser {
    pub(super) fn build(&mut self, path: &str, v: &Value) -> Option<BuildSpec> {
        let mut b = BuildSpec {
            context: ".".into(),
            ..Default::default()
        };
        match v {
            Value::String(s) => b.context = s.clone(),
            Value::Mapping(_) => self.build_long(path, v, &mut b),
            other => {
                self.err(
                    path,
                    format!(
                        "must be a context path or a map (context, dockerfile, args, ...), got {}",
                        kind(other)
                    ),
                );
                return None;
            }
        }
        if b.context.trim().is_empty() {
            self.err(join(path, "context"), "must not be empty");
        }
        if b.dockerfile.is_some() && b.dockerfile_inline.is_some() {
            self.err(
                join(path, "dockerfile_inline"),
                "cannot be given with `dockerfile` (Compose refuses both)",
            );
        }
        Some(b)
    }

    fn build_long(&mut self, path: &str, v: &Value, b: &mut BuildSpec) {
        for (key, val) in self.map(path, v, BUILD_KEYS) {
            let field = join(path, &key);
            match key.as_str() {
                "context" => b.context = self.string(&field, val).unwrap_or_default(),
                "dockerfile" => b.dockerfile = self.nonempty(&field, val),
                "dockerfile_inline" => b.dockerfile_inline = self.nonempty(&field, val),
                "args" => b.args = self.key_values(&field, val, "build argument"),
                "target" => b.target = self.nonempty(&field, val),
                "labels" => b.labels = self.key_values(&field, val, "label"),
                "network" => {
                    b.network = self.nonempty(&field, val);
                    let problem = b.network.as_deref().and_then(crate::build::network_problem);
                    if let Some(why) = problem {
                        self.err(&field, why);
                    }
                }
                "shm_size" => b.shm_size = self.bytes(&field, val),
                "extra_hosts" => b.extra_hosts = self.extra_hosts(&field, val),
                "no_cache" => b.no_cache = self.bool(&field, val),
                "pull" => b.pull = self.bool(&field, val),
                _ => b.tags = self.tags(&field, val),
            }
        }
        if let Some(size) = b.shm_size.filter(|n| *n > i64::from(i32::MAX)) {
            self.err(
                join(path, "shm_size"),
                format!("{size} bytes is more than the engine's build API takes (2 GiB - 1)"),
            );
        }
        let extension = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        b.digest = extension("x-capstan-digest");
        b.name = extension("x-capstan-image");
    }

    fn nonempty(&mut self, path: &str, v: &Value) -> Option<String> {
        let s = self.string(path, v)?;
        if s.trim().is_empty() {
            self.err(path, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// `tags`: image references, each checked for the characters a reference may hold.
    fn tags(&mut self, path: &str, v: &Value) -> Vec<String> {
        let mut out = vec![];
        for (i, tag) in self.strings(path, v).into_iter().enumerate() {
            match crate::reference::parse(&tag) {
                Ok(_) => out.push(tag),
                Err(e) => self.err(
                    format!("{path}[{i}]"),
                    format!("{tag:?} is not an image reference: {e}"),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::spec::StackSpec;

    fn parse(yaml: &str) -> StackSpec {
        crate::parse_stack("s", yaml).unwrap_or_else(|e| panic!("{:?}", e.errors))
    }

    #[test]
    fn the_short_form_is_the_context() {
        let spec = parse("services: {web: {image: capstan.local/s/web:1, build: ./app}}");
        let b = spec.services["web"].build.clone().unwrap();
        assert_eq!(b.context, "./app");
        assert_eq!(b.dockerfile, None);
    }

    #[test]
    fn the_long_form_reads_every_option_with_composes_meaning() {
        let spec = parse(
            r#"
services:
  web:
    image: capstan.local/s/web:1
    build:
      context: /src
      dockerfile: docker/Dockerfile.prod
      args: [VERSION=1.2, "EMPTY="]
      target: prod
      labels: {team: shop}
      network: host
      shm_size: 64m
      extra_hosts: ["db:10.0.0.2"]
      no_cache: true
      pull: "true"
      tags: [registry.local:5000/web:1.2]
      x-capstan-digest: sha256:00
      x-capstan-image: shop/web
"#,
        );
        let b = spec.services["web"].build.clone().unwrap();
        assert_eq!(b.context, "/src");
        assert_eq!(b.dockerfile.as_deref(), Some("docker/Dockerfile.prod"));
        assert_eq!(b.args["VERSION"], "1.2");
        assert_eq!(b.args["EMPTY"], "");
        assert_eq!(b.target.as_deref(), Some("prod"));
        assert_eq!(b.labels["team"], "shop");
        assert_eq!(b.network.as_deref(), Some("host"));
        assert_eq!(b.shm_size, Some(64 << 20));
        assert_eq!(b.extra_hosts, vec!["db:10.0.0.2"]);
        assert!(b.no_cache && b.pull);
        assert_eq!(b.tags, vec!["registry.local:5000/web:1.2"]);
        assert_eq!(b.digest.as_deref(), Some("sha256:00"));
        assert_eq!(b.name.as_deref(), Some("shop/web"));
    }

    #[test]
    fn the_context_defaults_to_the_project_folder_and_args_may_be_a_map() {
        let spec = parse("services: {web: {image: i, build: {args: {A: 1}}}}");
        let b = spec.services["web"].build.clone().unwrap();
        assert_eq!((b.context.as_str(), b.args["A"].as_str()), (".", "1"));
    }

    #[test]
    fn bad_build_values_name_their_field() {
        let errs = errors(
            r#"
services:
  web:
    image: i
    build:
      dockerfile: D
      dockerfile_inline: "FROM scratch"
      shm_size: lots
      no_cache: maybe
      tags: ["Bad Name"]
      extra_hosts: [nohost]
      ssh: [default]
      args: [NOVALUE]
"#,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "services.web.build.dockerfile_inline",
            "services.web.build.shm_size",
            "services.web.build.no_cache",
            "services.web.build.tags[0]",
            "services.web.build.extra_hosts[0]",
            "services.web.build.ssh",
            "services.web.build.args[0]",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(errors("services: {web: {image: i, build: 3}}")[0]
            .reason
            .contains("context path or a map"));
    }

    #[test]
    fn a_built_service_still_needs_the_image_the_client_names() {
        let errs = errors("services: {web: {build: .}}");
        assert_eq!(errs[0].field, "services.web.image");
        assert!(
            errs[0].reason.contains("capstan apply"),
            "{}",
            errs[0].reason
        );
    }
}
