//! The client's side of a Compose project: everything Compose resolves before a model exists.
//!
//! Files are read (through a loader the caller provides: this crate does no I/O), each is
//! interpolated, its `extends` resolved, then the files are merged in order by Compose's
//! rules. Services outside the active profiles are left out, `env_file` is read into
//! `environment`, and entries without a value are taken from the environment. What comes
//! out is one plain document, the one `capstan apply` sends and the server stores.

use super::interpolate::{self, Lookup};
use super::merge::{merge_documents, merge_service};
use super::yaml::{self, Mapping, Value};
use super::{FieldError, InvalidStack};
use std::path::{Path, PathBuf};

/// Reads a file: `Ok(None)` when it does not exist.
pub type Loader<'a> = &'a dyn Fn(&Path) -> Result<Option<String>, String>;

/// What the caller knows: the files in `-f` order, the environment, the active profiles.
pub struct Project<'a> {
    /// The Compose files, the main one first. Relative paths inside them are relative to
    /// the folder of the main file, as the spec says for overrides.
    pub files: Vec<PathBuf>,
    /// The project folder (`--project-directory`, else the main file's folder): `env_file`
    /// paths are relative to it.
    pub dir: PathBuf,
    pub lookup: Lookup<'a>,
    pub load: Loader<'a>,
    /// `--profile` and `COMPOSE_PROFILES`; `*` activates every profile.
    pub profiles: Vec<String>,
}

/// One document ready for the server, and what the user should hear about it.
#[derive(Debug)]
pub struct Resolved {
    pub doc: Value,
    pub warnings: Vec<String>,
    /// Every profile the services name, active or not, sorted (`capstan config --profiles`,
    /// as Compose lists them): the document no longer holds them.
    pub profiles: Vec<String>,
}

/// Resolves a project into one document, or every error found.
pub fn resolve(project: &Project) -> Result<Resolved, InvalidStack> {
    let mut r = Resolver {
        project,
        errors: vec![],
        warnings: vec![],
        overlay: vec![],
        dirs: vec![],
    };
    let mut doc = Value::Null;
    for file in &project.files {
        if let Some(one) = r.file(file) {
            merge_documents(&mut doc, one);
        }
    }
    yaml::strip_tags(&mut doc);
    let mut profiles = vec![];
    if r.errors.is_empty() {
        profiles = r.profiles(&mut doc);
        r.environments(&mut doc);
        r.file_sources(&mut doc);
    }
    if r.errors.is_empty() {
        Ok(Resolved {
            doc,
            warnings: r.warnings,
            profiles,
        })
    } else {
        Err(InvalidStack { errors: r.errors })
    }
}

pub(super) struct Resolver<'a, 'p> {
    pub(super) project: &'a Project<'p>,
    pub(super) errors: Vec<FieldError>,
    pub(super) warnings: Vec<String>,
    /// Variables from the `env_file`s (or `.env`) of the `include` entries being read,
    /// outermost first: they fill in what the project's environment does not set.
    pub(super) overlay: Vec<std::collections::BTreeMap<String, String>>,
    /// The project folders of the `include` entries being read, innermost last.
    pub(super) dirs: Vec<PathBuf>,
}

/// How deep `extends` (and `include`) may chain before it is taken for a loop.
pub(super) const MAX_EXTENDS: usize = 32;

impl Resolver<'_, '_> {
    pub(super) fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn project_dir(&self) -> PathBuf {
        self.project.dir.clone()
    }

    /// The folder relative paths are read against: the project's, or inside an `include`,
    /// that entry's `project_directory`.
    pub(super) fn working_dir(&self) -> PathBuf {
        self.dirs
            .last()
            .cloned()
            .unwrap_or_else(|| self.project_dir())
    }

    /// A variable as interpolation sees it here: the project's environment first, then the
    /// env files of the `include` entries being read.
    pub(super) fn var(&self, name: &str) -> Option<String> {
        (self.project.lookup)(name).or_else(|| {
            self.overlay
                .iter()
                .find_map(|layer| layer.get(name).cloned())
        })
    }

    /// One file, read, interpolated, with its `extends` resolved.
    fn file(&mut self, path: &Path) -> Option<Value> {
        self.file_at(path, 0)
    }

    pub(super) fn file_at(&mut self, path: &Path, depth: usize) -> Option<Value> {
        let mut doc = self.read(path, &path.display().to_string())?;
        if let Some(include) = doc.as_mapping_mut().and_then(|m| m.remove("include")) {
            self.include(&include, &mut doc, depth);
        }
        let Some(services) = doc.get("services").and_then(Value::as_mapping).cloned() else {
            return Some(doc);
        };
        let mut resolved = Mapping::default();
        for (name, svc) in services.iter() {
            let name = name.scalar_text().unwrap_or_default();
            let mut svc = svc.clone();
            self.extends(path, &services, &name, &mut svc, 0);
            resolved.0.push((Value::String(name), svc));
        }
        if let Some(m) = doc.as_mapping_mut() {
            m.insert("services", Value::Mapping(resolved));
        }
        Some(doc)
    }

    /// Reads and interpolates a file; errors name `field`.
    fn read(&mut self, path: &Path, field: &str) -> Option<Value> {
        let text = match (self.project.load)(path) {
            Ok(Some(text)) => text,
            Ok(None) => {
                self.err(field, format!("{} does not exist", path.display()));
                return None;
            }
            Err(e) => {
                self.err(field, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        // Several documents in one file are read as Compose reads them: each merged over
        // the ones before it, as another `-f` file would be.
        let mut doc = match yaml::parse_documents(&text) {
            Ok(docs) => docs.into_iter().fold(Value::Null, |mut doc, one| {
                merge_documents(&mut doc, one);
                doc
            }),
            Err(e) => {
                self.err(field, format!("not valid YAML: {e}"));
                return None;
            }
        };
        let lookup = |name: &str| self.var(name);
        let (warnings, errors) = interpolate::interpolate(&mut doc, &lookup);
        let suffix = self.in_file(path);
        self.warnings
            .extend(warnings.into_iter().map(|w| format!("{w}{suffix}")));
        for e in errors {
            self.err(e.field, format!("{}{suffix}", e.reason));
        }
        Some(doc)
    }

    /// ` (in FILE)` for any file but the main one.
    fn in_file(&self, path: &Path) -> String {
        if self.project.files.first().map(PathBuf::as_path) == Some(path) {
            String::new()
        } else {
            format!(" (in {})", path.display())
        }
    }
}

impl Resolver<'_, '_> {
    /// `extends: NAME` or `extends: {service, file}`: the extended service, resolved in turn,
    /// overridden by this one.
    fn extends(
        &mut self,
        file: &Path,
        services: &Mapping,
        name: &str,
        svc: &mut Value,
        depth: usize,
    ) {
        let Some(ext) = svc.as_mapping_mut().and_then(|m| m.remove("extends")) else {
            return;
        };
        let field = format!("services.{name}.extends");
        if depth >= MAX_EXTENDS {
            return self.err(
                field,
                format!("extends chains more than {MAX_EXTENDS} services deep: is there a loop?"),
            );
        }
        let (base_name, base_file) = match &ext {
            Value::String(s) => (s.clone(), None),
            Value::Mapping(m) => {
                let Some(service) = m.get("service").and_then(Value::scalar_text) else {
                    return self.err(
                        format!("{field}.service"),
                        "is required: the name of the service to extend",
                    );
                };
                (service, m.get("file").and_then(Value::scalar_text))
            }
            _ => {
                return self.err(
                    field,
                    "must be a service name or a map with `service` and `file`",
                )
            }
        };
        let (base_path, base_services) = match base_file {
            None => (file.to_path_buf(), services.clone()),
            Some(f) => {
                let path = file.parent().unwrap_or(Path::new("")).join(f);
                let Some(doc) = self.read(&path, &format!("{field}.file")) else {
                    return;
                };
                let services = doc
                    .get("services")
                    .and_then(Value::as_mapping)
                    .cloned()
                    .unwrap_or_default();
                (path, services)
            }
        };
        let Some(base) = base_services.get(&base_name) else {
            return self.err(field, format!("service {base_name:?} is not in {}, so this service's `extends` cannot be resolved", base_path.display()));
        };
        let mut base = base.clone();
        self.extends(&base_path, &base_services, &base_name, &mut base, depth + 1);
        if base_path != file {
            self.rebase_paths(base_path.parent().unwrap_or(Path::new("")), &mut base);
        }
        merge_service(&mut base, svc.clone());
        *svc = base;
    }

    /// Relative bind sources and env files of a service from another file are relative to
    /// `dir` (that file's folder, or an `include`'s project folder): rewrite them absolute.
    pub(super) fn rebase_paths(&self, dir: &Path, svc: &mut Value) {
        let absolute = |p: &str| lexical(&dir.join(p));
        let rebase = |p: &str| -> Option<String> {
            (p.starts_with("./") || p.starts_with("../") || p == ".")
                .then(|| absolute(p).display().to_string())
        };
        if let Some(Value::Sequence(vols)) = svc.get_mut("volumes") {
            for v in vols.iter_mut() {
                if let Value::String(s) = v {
                    if let Some((src, rest)) = s.split_once(':') {
                        if let Some(abs) = rebase(src) {
                            *s = format!("{abs}:{rest}");
                        }
                    }
                } else if let Some(Value::String(src)) = v.get_mut("source") {
                    // The long syntax; only a bind's source is a path.
                    if let Some(abs) = rebase(src) {
                        *src = abs;
                    }
                }
            }
        }
        // A build context is a folder even without `./`, unless it is a URL (a Git
        // repository or a tarball).
        let context = |p: &mut String| {
            if !p.contains("://") && !p.starts_with("git@") && !p.starts_with('/') {
                *p = absolute(p).display().to_string();
            }
        };
        match svc.get_mut("build") {
            Some(Value::String(p)) => context(p),
            Some(Value::Mapping(b)) => {
                if let Some(Value::String(p)) = b.get_mut("context") {
                    context(p)
                }
            }
            _ => {}
        }
        // An env file's path is a path even without `./`: `env_file: app.env`, a list of
        // those, or `{path, required}` entries.
        let env_file = |v: &mut Value| {
            let slot = match v {
                Value::Mapping(m) => m.get_mut("path"),
                other => Some(other),
            };
            if let Some(Value::String(p)) = slot {
                *p = absolute(p).display().to_string();
            }
        };
        match svc.get_mut("env_file") {
            Some(Value::Sequence(items)) => items.iter_mut().for_each(env_file),
            Some(one) => env_file(one),
            None => {}
        }
    }
}

/// `path` with `.` and `..` resolved as text (the files need not exist on this machine: the
/// paths are the server's binds and the client's reads), as Compose writes them.
pub(super) fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(name: &str) -> Option<String> {
        match name {
            "TZ" => Some("Europe/Paris".into()),
            "TAG" => Some("2".into()),
            _ => None,
        }
    }

    /// Resolves files held in memory under `/p/`, the first being the main one.
    pub fn project_files(
        files: &[(&str, &str)],
        profiles: &[&str],
    ) -> Result<Resolved, InvalidStack> {
        let store: BTreeMap<PathBuf, String> = files
            .iter()
            .map(|(name, text)| (Path::new("/p").join(name), text.to_string()))
            .collect();
        let load = |p: &Path| Ok(store.get(p).cloned());
        let names: Vec<PathBuf> = files
            .iter()
            .filter(|(n, _)| n.ends_with(".yaml") && !n.contains('/'))
            .map(|(n, _)| Path::new("/p").join(n))
            .collect();
        resolve(&Project {
            files: names,
            dir: PathBuf::from("/p"),
            lookup: &env,
            load: &load,
            profiles: profiles.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn project_with(text: &str, profiles: &[&str]) -> Result<Resolved, InvalidStack> {
        project_files(&[("compose.yaml", text)], profiles)
    }

    pub fn resolved_services(
        text: &str,
        profiles: &[&str],
    ) -> Result<Vec<String>, Vec<FieldError>> {
        let doc = project_with(text, profiles).map_err(|e| e.errors)?.doc;
        let services = doc.get("services").and_then(Value::as_mapping).unwrap();
        Ok(services
            .iter()
            .filter_map(|(k, _)| k.scalar_text())
            .collect())
    }

    fn service(r: &Resolved, name: &str) -> Value {
        r.doc.get("services").unwrap().get(name).unwrap().clone()
    }

    #[test]
    fn override_files_merge_in_order_and_are_interpolated_each() {
        let r = project_files(
            &[
                ("compose.yaml", "services: {web: {image: \"web:${TAG}\", ports: ['80:80'], environment: [A=1]}}"),
                ("compose.override.yaml", "services: {web: {ports: ['443:443'], environment: {B: $TZ}}, extra: {image: e}}"),
            ],
            &[],
        )
        .unwrap();
        let web = service(&r, "web");
        assert_eq!(web.get("image").unwrap().as_str(), Some("web:2"));
        assert_eq!(web.get("ports").unwrap().as_sequence().unwrap().len(), 2);
        assert_eq!(
            web.get("environment").unwrap().get("B").unwrap().as_str(),
            Some("Europe/Paris")
        );
        assert!(r.doc.get("services").unwrap().get("extra").is_some());
    }

    #[test]
    fn extends_in_the_same_file_takes_the_base_and_overrides_it() {
        let r = project_with(
            "services:\n  base: {image: b, environment: [A=1], command: [a]}\n  mid: {extends: base, environment: [B=2]}\n  web: {extends: {service: mid}, command: [w]}\n",
            &[],
        )
        .unwrap();
        let web = service(&r, "web");
        assert_eq!(web.get("image").unwrap().as_str(), Some("b"));
        let env = web.get("environment").unwrap();
        assert!(env.get("A").is_some() && env.get("B").is_some());
        assert_eq!(
            web.get("command").unwrap().as_sequence().unwrap()[0].as_str(),
            Some("w")
        );
        assert!(web.get("extends").is_none());
    }

    #[test]
    fn extends_from_another_file_goes_through_the_loader_and_rebases_its_paths() {
        let r = project_files(
            &[
                ("compose.yaml", "services: {web: {extends: {file: common/base.yml, service: app}, environment: [B=2]}}"),
                ("common/base.yml", "services: {app: {image: \"app:${TAG}\", volumes: ['./data:/data']}}"),
            ],
            &[],
        )
        .unwrap();
        let web = service(&r, "web");
        assert_eq!(web.get("image").unwrap().as_str(), Some("app:2"));
        assert_eq!(
            web.get("volumes").unwrap().as_sequence().unwrap()[0].as_str(),
            Some("/p/common/data:/data")
        );
    }

    #[test]
    fn an_unresolvable_extends_says_so_with_its_field() {
        let errs = project_with("services: {web: {extends: nope}}", &[])
            .unwrap_err()
            .errors;
        assert_eq!(errs[0].field, "services.web.extends");
        assert!(errs[0].reason.contains("\"nope\""), "{}", errs[0].reason);
        let errs = project_with("services: {a: {extends: b}, b: {extends: a}}", &[])
            .unwrap_err()
            .errors;
        assert!(errs[0].reason.contains("loop"), "{}", errs[0].reason);
        let errs = project_with(
            "services: {web: {extends: {file: gone.yaml, service: x}}}",
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web.extends.file");
    }

    #[test]
    fn extends_is_resolved_in_each_file_before_the_files_merge_as_compose_does() {
        let main = "services:\n  base: {image: b, environment: [LEVEL=main]}\n  app: {extends: base, command: [a]}\n";
        let r = project_files(
            &[
                ("compose.yaml", main),
                (
                    "compose.override.yaml",
                    "services:\n  base: {environment: [LEVEL=override]}\n  app: {user: \"1000\"}\n  tool: {extends: {file: compose.yaml, service: base}, command: [t]}\n  job: {extends: tool}\n  tool2: {extends: {service: job}}\n",
                ),
            ],
            &[],
        );
        // `job` extends `tool` of the same override file, itself from compose.yaml's `base`.
        let r = r.unwrap();
        let env = |svc: &str| {
            service(&r, svc)
                .get("environment")
                .and_then(|e| e.get("LEVEL"))
                .and_then(Value::scalar_text)
        };
        assert_eq!(
            env("app").as_deref(),
            Some("main"),
            "an override of the base does not reach a service extended before the merge"
        );
        assert_eq!(
            service(&r, "app").get("user").unwrap().as_str(),
            Some("1000")
        );
        assert_eq!(env("base").as_deref(), Some("override"));
        assert_eq!(
            env("tool").as_deref(),
            Some("main"),
            "read from the file itself"
        );
        assert_eq!(
            service(&r, "tool2")
                .get("command")
                .unwrap()
                .as_sequence()
                .unwrap()[0]
                .as_str(),
            Some("t")
        );
        let errs = project_files(
            &[
                ("compose.yaml", main),
                ("compose.override.yaml", "services: {tool: {extends: base}}"),
            ],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.tool.extends");
        assert!(
            errs[0].reason.contains("compose.override.yaml"),
            "a bare name is looked up in the override file itself: {}",
            errs[0].reason
        );
    }

    #[test]
    fn interpolation_errors_and_warnings_name_the_file_they_come_from() {
        let errs = project_files(
            &[
                ("compose.yaml", "services: {web: {image: x}}"),
                (
                    "compose.override.yaml",
                    "services: {web: {user: \"${NOBODY:?who runs it}\"}}",
                ),
            ],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web.user");
        assert!(
            errs[0].reason.contains("who runs it")
                && errs[0].reason.contains("compose.override.yaml")
        );
        let r = project_with("services: {web: {image: \"x:$MISSING\"}}", &[]).unwrap();
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn a_file_of_several_documents_merges_them_in_order_as_compose_reads_it() {
        let r = project_with(
            "services: {web: {image: a, environment: [A=1]}}\n---\nservices: {web: {image: b, environment: [B=2]}, db: {image: d}}\n",
            &[],
        )
        .unwrap();
        let web = service(&r, "web");
        assert_eq!(web.get("image").unwrap().as_str(), Some("b"));
        let env = web.get("environment").unwrap();
        assert!(env.get("A").is_some() && env.get("B").is_some());
        assert!(r.doc.get("services").unwrap().get("db").is_some());
    }
}
