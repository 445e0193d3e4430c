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
//! The including file may define again a service (or network, volume, ...) it includes: its
//! definition overrides the included one by the rules of several `-f` files, so a project can
//! tune what it includes (a port, a variable) without copying it. Two included projects that
//! define one name differently are an error: neither may silently win.
//!
//! Relative paths of an included project (bind sources, env files, build contexts, the
//! `file:` of secrets and configs) point into its `project_directory`.

use super::env::parse_env_file;
use super::merge::{keyed, merge_documents};
use super::resolve::{lexical, Resolver, MAX_EXTENDS};
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
        // What this file defines itself, as opposed to what an earlier entry brought in.
        let own = Value::Mapping(Mapping::default());
        let own = std::mem::replace(doc, own);
        let mut imported = Value::Null;
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
                self.import(&field, &entry.files[0], included, &mut imported);
            }
        }
        *doc = imported;
        redefine(doc, own);
    }

    /// Parses one entry: a path, or a map with `path`, `project_directory`, `env_file`.
    fn include_entry(&mut self, field: &str, item: &Value) -> Option<Entry> {
        let base = self.working_dir();
        let absolute = |p: &str| lexical(&base.join(p));
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
        rebase_file_sources(&entry.dir, &mut doc);
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
                            "is defined differently by two included projects, one of them {} \
                             ({field}): define it in the including file to say which it is",
                            from.display()
                        ),
                    }),
                    None => mine.0.push((name.clone(), item.clone())),
                }
            }
        }
    }
}

/// The including file's own definitions over what its `include` entries brought in: a
/// resource it defines again is the included one overridden by its definition, by the merge
/// rules of several `-f` files (as Compose does since it lets an including file tune what it
/// includes); a resource of its own stays as it is.
fn redefine(imported: &mut Value, own: Value) {
    let Value::Mapping(mut own) = own else {
        return;
    };
    let services = own.remove("services");
    let mut sections = Mapping::default();
    for section in ["networks", "volumes", "secrets", "configs"] {
        if let Some(v) = own.remove(section) {
            sections.insert(section, v);
        }
    }
    // Top-level keys other than the resources (`name`, `x-*`) are the including file's.
    let mut base = std::mem::take(imported);
    if base.is_null() {
        base = Value::Mapping(Mapping::default());
    }
    if let Some(m) = base.as_mapping_mut() {
        for (k, v) in own.0 {
            m.0.push((k, v));
        }
    }
    merge_documents(&mut base, Value::Mapping(sections));
    if let Some(services) = services {
        let mut s = Mapping::default();
        s.insert("services", services);
        merge_documents(&mut base, Value::Mapping(s));
    }
    *imported = base;
}

/// The `file:` of an included project's secrets and configs is relative to its own folder.
fn rebase_file_sources(dir: &Path, doc: &mut Value) {
    for section in ["secrets", "configs"] {
        let Some(Value::Mapping(items)) = doc.get_mut(section) else {
            continue;
        };
        for (_, item) in items.iter_mut() {
            if let Some(Value::String(file)) = item.get_mut("file") {
                *file = lexical(&dir.join(&*file)).display().to_string();
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
    fn include_brings_services_from_another_file_and_refuses_one_name_from_two_includes() {
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
                    "include: [{path: other.yml}, second.yml]\nservices: {web: {image: w}}",
                ),
                ("other.yml", "services: {db: {image: other}}"),
                ("second.yml", "services: {db: {image: second}}"),
            ],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.db");
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

    #[test]
    fn the_including_file_may_redefine_an_included_service_which_it_overrides() {
        let r = project_files(
            &[
                (
                    "compose.yaml",
                    "include: [db/compose.yml]\nservices:\n  db:\n    ports: ['5432:5432']\n    environment: {MODE: dev}\nvolumes: {data: {labels: {tier: db}}}",
                ),
                (
                    "db/compose.yml",
                    "services: {db: {image: pg, environment: [USER=app], volumes: ['./init:/init', 'data:/d']}}\nvolumes: {data: {}}",
                ),
            ],
            &[],
        )
        .unwrap();
        let db = r.doc.get("services").unwrap().get("db").unwrap();
        assert_eq!(text(db, &["image"]).as_deref(), Some("pg"));
        assert_eq!(text(db, &["environment", "USER"]).as_deref(), Some("app"));
        assert_eq!(text(db, &["environment", "MODE"]).as_deref(), Some("dev"));
        assert_eq!(db.get("ports").unwrap().as_sequence().unwrap().len(), 1);
        assert_eq!(
            db.get("volumes").unwrap().as_sequence().unwrap()[0].as_str(),
            Some("/p/db/init:/init"),
            "the included paths stay the included folder's"
        );
        let data = r.doc.get("volumes").unwrap().get("data").unwrap();
        assert_eq!(text(data, &["labels", "tier"]).as_deref(), Some("db"));
    }

    #[test]
    fn relative_paths_of_an_included_project_point_into_its_folder() {
        let r = project_files(
            &[
                ("compose.yaml", "include: [lib/compose.yml]\nservices: {}"),
                (
                    "lib/compose.yml",
                    "services: {app: {image: a, build: ./src, secrets: [token]}, tool: {image: t, build: {context: ../tools}}}\nsecrets: {token: {file: ./token.txt}}",
                ),
                ("lib/token.txt", "s3cret"),
            ],
            &[],
        )
        .unwrap();
        let services = r.doc.get("services").unwrap();
        assert_eq!(
            text(services.get("app").unwrap(), &["build"]).as_deref(),
            Some("/p/lib/src")
        );
        assert_eq!(
            text(services.get("tool").unwrap(), &["build", "context"]).as_deref(),
            Some("/p/tools")
        );
        let token = r.doc.get("secrets").unwrap().get("token").unwrap();
        assert_eq!(text(token, &["content"]).as_deref(), Some("s3cret"));
    }
}
