//! `include`: other Compose projects whose services, networks, volumes, secrets and
//! configs join this one, read as Compose reads them:
//! - `path`: one file, or a list of files (the first, then its overrides), relative to the
//!   including project's folder;
//! - `project_directory`: the folder the included files' relative paths point into (default:
//!   the first file's folder);
//! - `env_file`: the variables the included files are interpolated with (default: the `.env`
//!   of `project_directory`, if there is one). The including project's environment wins over
//!   them, as in Compose.
//!
//! A name defined both here and in an included file is an error unless both definitions are
//! the same.

use super::env::parse_env_file;
use super::merge::{keyed, merge_documents};
use super::resolve::{Resolver, MAX_EXTENDS};
use super::yaml::{Mapping, Value};
use super::FieldError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `include` entry, its paths made absolute.
struct Entry {
    files: Vec<PathBuf>,
    dir: PathBuf,
    /// `None`: the default, `.env` in `dir` if it exists.
    env_files: Option<Vec<PathBuf>>,
}

impl Resolver<'_, '_> {
    /// Reads every entry of `include` into `doc`.
    pub(super) fn include(&mut self, include: &Value, doc: &mut Value, depth: usize) {
        let items = match include {
            Value::Sequence(items) => items.clone(),
            other => vec![other.clone()],
        };
        for (i, item) in items.iter().enumerate() {
            let field = format!("include[{i}]");
            let Some(entry) = self.include_entry(&field, item) else {
                continue;
            };
            if depth >= MAX_EXTENDS {
                self.err(field, "includes nest too deep: is there a loop?");
                continue;
            }
            if let Some(included) = self.read_included(&field, &entry, depth) {
                self.import(&field, &entry.files[0], included, doc);
            }
        }
    }

    /// Parses one entry: a path, or a map with `path`, `project_directory`, `env_file`.
    fn include_entry(&mut self, field: &str, item: &Value) -> Option<Entry> {
        let base = self.working_dir();
        let absolute = |p: &str| base.join(p).components().collect::<PathBuf>();
        let paths = |v: &Value| -> Option<Vec<PathBuf>> {
            match v {
                Value::Sequence(items) => items
                    .iter()
                    .map(|p| p.scalar_text().map(|p| absolute(&p)))
                    .collect(),
                other => other.scalar_text().map(|p| vec![absolute(&p)]),
            }
        };
        let Some(m) = item.as_mapping() else {
            let files = paths(item).filter(|f| !f.is_empty());
            let Some(files) = files else {
                self.err(field, "must be a file path or a map with `path`");
                return None;
            };
            let dir = files[0].parent().unwrap_or(Path::new("")).to_path_buf();
            return Some(Entry {
                files,
                dir,
                env_files: None,
            });
        };
        let mut ok = true;
        for (k, _) in m.iter() {
            let key = k.scalar_text().unwrap_or_default();
            if !["path", "project_directory", "env_file"].contains(&key.as_str()) {
                self.err(
                    format!("{field}.{key}"),
                    format!("unsupported key {key:?}: an include entry has `path`, `project_directory` and `env_file`"),
                );
                ok = false;
            }
        }
        let files = m.get("path").and_then(paths).filter(|f| !f.is_empty());
        let Some(files) = files else {
            self.err(
                format!("{field}.path"),
                "is required: the Compose file to include (or a list: the file, then its overrides)",
            );
            return None;
        };
        let dir = match m.get("project_directory").map(Value::scalar_text) {
            None => files[0].parent().unwrap_or(Path::new("")).to_path_buf(),
            Some(Some(d)) => absolute(&d),
            Some(None) => {
                self.err(
                    format!("{field}.project_directory"),
                    "must be a folder path",
                );
                return None;
            }
        };
        let env_files = match m.get("env_file") {
            None => None,
            Some(v) => match paths(v) {
                Some(files) => Some(files),
                None => {
                    self.err(
                        format!("{field}.env_file"),
                        "must be a path or a list of paths",
                    );
                    return None;
                }
            },
        };
        ok.then_some(Entry {
            files,
            dir,
            env_files,
        })
    }

    /// The included project as one document: its files read with its own folder and
    /// variables, merged, its relative paths made absolute.
    fn read_included(&mut self, field: &str, entry: &Entry, depth: usize) -> Option<Value> {
        let layer = self.include_env(field, entry)?;
        self.overlay.push(layer);
        self.dirs.push(entry.dir.clone());
        let mut doc = Value::Null;
        let mut read_all = true;
        for file in &entry.files {
            match self.file_at(file, depth + 1) {
                Some(one) => merge_documents(&mut doc, one),
                None => read_all = false,
            }
        }
        if let Some(Value::Mapping(services)) = doc.get_mut("services") {
            for (_, svc) in services.iter_mut() {
                self.rebase_paths(&entry.dir, svc);
                self.fill_environment(svc);
            }
        }
        self.dirs.pop();
        self.overlay.pop();
        read_all.then_some(doc)
    }

    /// The variables of an entry's env files; a missing file named in `env_file` is an error.
    fn include_env(&mut self, field: &str, entry: &Entry) -> Option<BTreeMap<String, String>> {
        let (files, required) = match &entry.env_files {
            Some(files) => (files.clone(), true),
            None => (vec![entry.dir.join(".env")], false),
        };
        let mut layer = BTreeMap::new();
        for file in files {
            let text = match (self.project.load)(&file) {
                Ok(Some(text)) => text,
                Ok(None) if !required => continue,
                Ok(None) => {
                    self.err(
                        format!("{field}.env_file"),
                        format!("{} does not exist", file.display()),
                    );
                    return None;
                }
                Err(e) => {
                    self.err(
                        format!("{field}.env_file"),
                        format!("cannot read {}: {e}", file.display()),
                    );
                    return None;
                }
            };
            let lookup = |name: &str| self.var(name);
            match parse_env_file(&text, &lookup) {
                Ok(pairs) => {
                    for (k, v) in pairs {
                        if let Some(v) = v.or_else(|| self.var(&k)) {
                            layer.insert(k, v);
                        }
                    }
                }
                Err(e) => {
                    self.err(
                        format!("{field}.env_file"),
                        format!("{}: {e}", file.display()),
                    );
                    return None;
                }
            }
        }
        Some(layer)
    }

    /// `environment` entries without a value take the included project's variables (Compose
    /// resolves them with that project's environment); unset ones are left for later.
    fn fill_environment(&self, svc: &mut Value) {
        let Some(env) = svc.get_mut("environment") else {
            return;
        };
        let Value::Mapping(mut m) = keyed(env) else {
            return;
        };
        for (k, v) in m.iter_mut() {
            if v.is_null() {
                if let Some(found) = self.var(&k.scalar_text().unwrap_or_default()) {
                    *v = Value::String(found);
                }
            }
        }
        *env = Value::Mapping(m);
    }

    fn import(&mut self, field: &str, from: &Path, included: Value, doc: &mut Value) {
        let Value::Mapping(included) = included else {
            return;
        };
        if doc.is_null() {
            *doc = Value::Mapping(Mapping::default());
        }
        let Some(target) = doc.as_mapping_mut() else {
            return;
        };
        for section in ["services", "networks", "volumes", "secrets", "configs"] {
            let Some(Value::Mapping(items)) = included.get(section) else {
                continue;
            };
            if target.get(section).is_none_or(Value::is_null) {
                target.insert(section, Value::Mapping(Mapping::default()));
            }
            let Some(Value::Mapping(mine)) = target.get_mut(section) else {
                continue;
            };
            for (name, item) in items.iter() {
                let key = name.scalar_text().unwrap_or_default();
                match mine.get(&key) {
                    Some(same) if same == item => {}
                    Some(_) => self.errors.push(FieldError {
                        field: format!("{section}.{key}"),
                        reason: format!(
                            "is defined both here and in {} ({field}), differently",
                            from.display()
                        ),
                    }),
                    None => mine.0.push((name.clone(), item.clone())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::compose::resolve::tests::project_files;
    use crate::compose::yaml::Value;

    fn text(doc: &Value, path: &[&str]) -> Option<String> {
        let mut v = doc;
        for p in path {
            v = v.get(p)?;
        }
        v.scalar_text()
    }

    #[test]
    fn include_brings_services_from_another_file_and_refuses_a_name_defined_twice() {
        let r = project_files(
            &[
                ("compose.yaml", "include: [db/compose.yml]\nservices: {web: {image: w, depends_on: [db]}}"),
                ("db/compose.yml", "services: {db: {image: \"pg:${TAG}\", volumes: ['./init:/init', 'data:/var/lib/pg']}}\nvolumes: {data: {}}"),
            ],
            &[],
        )
        .unwrap();
        let db = r.doc.get("services").unwrap().get("db").unwrap();
        assert_eq!(text(db, &["image"]).as_deref(), Some("pg:2"));
        assert_eq!(
            db.get("volumes").unwrap().as_sequence().unwrap()[0].as_str(),
            Some("/p/db/init:/init")
        );
        assert!(r.doc.get("volumes").unwrap().get("data").is_some());
        let errs = project_files(
            &[
                (
                    "compose.yaml",
                    "include: [{path: other.yml}]\nservices: {web: {image: w}}",
                ),
                ("other.yml", "services: {web: {image: other}}"),
            ],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web");
        let same = project_files(
            &[
                (
                    "compose.yaml",
                    "include: [other.yml]\nservices: {web: {image: w}}\nnetworks: {back: {}}",
                ),
                (
                    "other.yml",
                    "services: {db: {image: d}}\nnetworks: {back: {}}",
                ),
            ],
            &[],
        );
        assert!(same.is_ok(), "the same definition twice is no conflict");
    }

    #[test]
    fn an_include_reads_its_own_env_file_and_the_project_environment_wins() {
        let r = project_files(
            &[
                (
                    "compose.yaml",
                    "include:\n  - path: lib/db.yaml\n    env_file: [lib/db.env]\nservices: {web: {image: w}}",
                ),
                (
                    "lib/db.yaml",
                    "services: {db: {image: \"pg:${PG_TAG}\", environment: [TZ, PG_USER, NOPE], labels: {tag: \"${TAG}\"}}}",
                ),
                ("lib/db.env", "PG_TAG=16\nTAG=from-env-file\nPG_USER=app\n"),
            ],
            &[],
        )
        .unwrap();
        let db = r.doc.get("services").unwrap().get("db").unwrap();
        assert_eq!(text(db, &["image"]).as_deref(), Some("pg:16"));
        assert_eq!(
            text(db, &["labels", "tag"]).as_deref(),
            Some("2"),
            "TAG is set in the project's environment, which wins"
        );
        assert_eq!(
            text(db, &["environment", "PG_USER"]).as_deref(),
            Some("app")
        );
        assert_eq!(
            text(db, &["environment", "TZ"]).as_deref(),
            Some("Europe/Paris")
        );
        assert!(db.get("environment").unwrap().get("NOPE").is_none());
        assert!(
            r.doc.get("services").unwrap().get("web").is_some(),
            "the includer's own services stay"
        );
    }

    #[test]
    fn an_include_defaults_to_the_dot_env_of_its_project_directory() {
        let r = project_files(
            &[
                (
                    "compose.yaml",
                    "include: [{path: [lib/app.yaml, lib/app.override.yaml], project_directory: srv}]\nservices: {}",
                ),
                (
                    "lib/app.yaml",
                    "services: {app: {image: \"a:${APP_TAG:-none}\", volumes: ['./data:/data'], env_file: app.env}}",
                ),
                (
                    "lib/app.override.yaml",
                    "services: {app: {environment: {MODE: over}}}",
                ),
                ("srv/.env", "APP_TAG=5\n"),
                ("srv/app.env", "FROM_FILE=1\n"),
            ],
            &[],
        )
        .unwrap();
        let app = r.doc.get("services").unwrap().get("app").unwrap();
        assert_eq!(text(app, &["image"]).as_deref(), Some("a:5"));
        assert_eq!(
            app.get("volumes").unwrap().as_sequence().unwrap()[0].as_str(),
            Some("/p/srv/data:/data"),
            "relative paths point into project_directory"
        );
        assert_eq!(
            text(app, &["environment", "FROM_FILE"]).as_deref(),
            Some("1")
        );
        assert_eq!(text(app, &["environment", "MODE"]).as_deref(), Some("over"));
    }

    #[test]
    fn a_bad_include_entry_names_its_field() {
        let errs = project_files(
            &[
                (
                    "compose.yaml",
                    "include: [{path: a.yml, env_file: gone.env}, {path: a.yml, extra: 1}, {env_file: x}]\nservices: {}",
                ),
                ("a.yml", "services: {a: {image: a}}"),
            ],
            &[],
        )
        .unwrap_err()
        .errors;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["include[0].env_file", "include[1].extra", "include[2].path"]
        );
    }
}
