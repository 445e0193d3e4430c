//! Top-level `secrets` and `configs`, and a service's references to them.
//!
//! The client reads `file:` and `environment:` sources (see `resolve`) and sends the value as
//! `content:`; the server accepts only `content:`, so it never reads the client's files. A
//! service's mounts name the top-level object; their digest is filled from it once the whole
//! stack is read.

use super::yaml::Value;
use super::{describe, join, kind, Parser};
use crate::files::{FileKind, FileMount, FileObject};
use crate::names;
use crate::spec::StackSpec;
use std::collections::{BTreeMap, BTreeSet};

/// The keys of a top-level secret or config capstan reads; the specification's others
/// (`driver`, `driver_opts`, `labels`, `template_driver`) belong to Swarm's objects and are
/// refused with that reason (`keys::unsupported`).
const TOP_KEYS: &[&str] = &["content", "file", "environment", "external", "name"];
const MOUNT_KEYS: &[&str] = &["source", "target", "uid", "gid", "mode"];

impl Parser {
    /// Top-level `secrets` or `configs`.
    pub(super) fn file_objects(
        &mut self,
        kind: FileKind,
        v: &Value,
    ) -> BTreeMap<String, FileObject> {
        let mut out = BTreeMap::new();
        if v.is_null() {
            return out;
        }
        for (name, fv) in self.map(kind.key(), v, &[]) {
            let path = join(kind.key(), &name);
            if !self.check_name(
                &path,
                &format!("{} key", kind.word()),
                &name,
                names::member_name,
            ) {
                continue;
            }
            if let Some(obj) = self.file_object(kind, &path, fv) {
                out.insert(name, obj);
            }
        }
        out
    }

    fn file_object(&mut self, kind: FileKind, path: &str, v: &Value) -> Option<FileObject> {
        let mut content = None;
        for (key, val) in self.map(path, v, TOP_KEYS) {
            let field = join(path, &key);
            match key.as_str() {
                "content" => content = self.string(&field, val),
                "file" | "environment" => self.err(
                    field,
                    format!("`capstan apply` reads the {key} on the client and sends its value as `content`; a document sent to the API must carry `content`"),
                ),
                "external" => {
                    if self.bool(&field, val) {
                        self.err(field, format!("an external {} is a Swarm object, and capstan runs without Swarm; give its value with `file` or `environment`", kind.word()));
                    }
                }
                "name" => {
                    self.engine_name(&field, &format!("{} name", kind.word()), val);
                }
                _ => unreachable!(),
            }
        }
        if content.is_none() && !self.errors.iter().any(|e| e.field.starts_with(path)) {
            let sources = match kind {
                FileKind::Secret => "`file` or `environment`",
                FileKind::Config => "`file`, `environment` or `content`",
            };
            self.err(path, format!("needs a source: {sources}"));
        }
        content.map(|c| FileObject::new(c.into_bytes()))
    }

    /// A service's `secrets` or `configs`: short syntax (a name) or long syntax.
    pub(super) fn file_mounts(&mut self, kind: FileKind, path: &str, v: &Value) -> Vec<FileMount> {
        let Some(items) = v.as_sequence() else {
            self.err(path, format!("must be a list, got {}", kind_of(v)));
            return vec![];
        };
        let mut out = vec![];
        let mut targets = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            let mount = match item {
                Value::Mapping(_) => self.long_file_mount(kind, &field, item),
                other => self.string(&field, other).map(|source| FileMount {
                    target: kind.default_target(&source),
                    source,
                    uid: None,
                    gid: None,
                    mode: None,
                    digest: String::new(),
                }),
            };
            let Some(m) = mount else { continue };
            if !targets.insert(m.target.clone()) {
                self.err(&field, format!("target {:?} is mounted twice", m.target));
                continue;
            }
            out.push(m);
        }
        out
    }

    fn long_file_mount(&mut self, kind: FileKind, path: &str, v: &Value) -> Option<FileMount> {
        let before = self.errors.len();
        let (mut source, mut target) = (None, None);
        let mut m = FileMount {
            source: String::new(),
            target: String::new(),
            uid: None,
            gid: None,
            mode: None,
            digest: String::new(),
        };
        for (key, val) in self.map(path, v, MOUNT_KEYS) {
            let field = join(path, &key);
            match key.as_str() {
                "source" => source = self.string(&field, val),
                "target" => target = self.string(&field, val),
                "uid" => m.uid = self.id(&field, val),
                "gid" => m.gid = self.id(&field, val),
                "mode" => m.mode = self.file_mode(&field, val),
                _ => unreachable!(),
            }
        }
        match source {
            Some(s) => m.source = s,
            None => self.err(
                join(path, "source"),
                format!("is required: the top-level {} to mount", kind.word()),
            ),
        }
        m.target = match target {
            Some(t) if t.is_empty() || t.ends_with('/') || t.split('/').any(|p| p == "..") => {
                self.err(join(path, "target"), format!("{t:?} is not a file path"));
                return None;
            }
            Some(t) => kind.target(&t),
            None => kind.default_target(&m.source),
        };
        (self.errors.len() == before).then_some(m)
    }

    /// A numeric user or group id (Compose writes them as strings or numbers).
    fn id(&mut self, path: &str, v: &Value) -> Option<u32> {
        let text = self.string(path, v)?;
        match text.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.err(
                    path,
                    format!(
                        "must be a numeric id from 0 to {}, got {}",
                        u32::MAX,
                        describe(v)
                    ),
                );
                None
            }
        }
    }

    /// Fills each service's mounts with the digest of the top-level object they name.
    pub(super) fn settle_files(&mut self, spec: &mut StackSpec) {
        for (name, svc) in spec.services.iter_mut() {
            for (kind, mounts, objects) in [
                (FileKind::Secret, &mut svc.secrets, &spec.secrets),
                (FileKind::Config, &mut svc.configs, &spec.configs),
            ] {
                for (i, m) in mounts.iter_mut().enumerate() {
                    match objects.get(&m.source) {
                        Some(obj) => m.digest = obj.digest.clone(),
                        None => self.err(
                            format!("services.{name}.{}[{i}]", kind.key()),
                            format!(
                                "{} {:?} is not declared under the top-level `{}`",
                                kind.word(),
                                m.source,
                                kind.key()
                            ),
                        ),
                    }
                }
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    kind(v)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const STACK: &str = r#"
services:
  web:
    image: x
    secrets:
      - db_pw
      - {source: api_key, target: key, uid: "103", gid: 0, mode: 0440}
    configs:
      - app_conf
      - {source: app_conf, target: /etc/app.conf, mode: "0444"}
  other: {image: x}
secrets:
  db_pw: {content: hunter2}
  api_key: {content: k3y}
configs:
  app_conf: {content: "a = 1\n"}
"#;

    #[test]
    fn secrets_and_configs_mount_by_digest_with_compose_defaults() {
        let spec = parse_stack("s", STACK).unwrap();
        let web = &spec.services["web"];
        assert_eq!(web.secrets[0].target, "/run/secrets/db_pw");
        assert_eq!(web.secrets[0].mode(), 0o400);
        assert_eq!(web.secrets[0].digest, spec.secrets["db_pw"].digest);
        let key = &web.secrets[1];
        assert_eq!(
            (key.target.as_str(), key.uid, key.gid, key.mode),
            ("/run/secrets/key", Some(103), Some(0), Some(0o440))
        );
        assert_eq!(web.configs[0].target, "/app_conf");
        assert_eq!(web.configs[1].target, "/etc/app.conf");
        assert_eq!(web.configs[1].mode, Some(0o444));
        assert!(spec.services["other"].secrets.is_empty());
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("hunter2") && !json.contains("k3y"), "{json}");
    }

    #[test]
    fn a_content_change_changes_only_the_services_that_use_it() {
        let a = parse_stack("s", STACK).unwrap();
        let b = parse_stack("s", &STACK.replace("hunter2", "hunter3")).unwrap();
        assert_ne!(
            a.services["web"].container_hash(),
            b.services["web"].container_hash()
        );
        assert_eq!(a.services["other"], b.services["other"]);
    }

    #[test]
    fn bad_references_sources_and_modes_are_field_errors() {
        let errs = errors(
            r#"
services:
  web:
    image: x
    secrets: [nope, {source: pw, mode: rw}, {target: t}, {source: pw, uid: root}]
    configs: [{source: c, target: /a}, {source: c, target: /a}]
secrets:
  pw: {content: x}
  ext: {external: true}
  f: {file: ./pw.txt}
  empty: {}
configs:
  c: {content: x}
"#,
        );
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field.as_str(), e.reason.as_str()))
            .collect();
        let has = |field: &str, words: &str| {
            assert!(
                got.iter().any(|(f, r)| *f == field && r.contains(words)),
                "{field} {words}: {got:#?}"
            )
        };
        has("services.web.secrets[1].mode", "octal");
        has("services.web.secrets[2].source", "is required");
        has("services.web.secrets[3].uid", "numeric id");
        has("services.web.configs[1]", "mounted twice");
        has("secrets.ext.external", "Swarm");
        has("secrets.f.file", "client");
        has("secrets.empty", "`file` or `environment`");
        has("services.web.secrets[0]", "\"nope\" is not declared");
    }

    #[test]
    fn secret_and_config_names_follow_the_one_naming_rule() {
        assert_eq!(
            fields(
                "services: {web: {image: x}}\nsecrets: {pw: {content: x, name: \"../pw\"}}\nconfigs: {\"a/b\": {content: x}}"
            ),
            vec!["secrets.pw.name", "configs.a/b"]
        );
    }
}
