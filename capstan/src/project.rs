//! The client's half of `capstan apply`: finds the Compose files as Compose does, builds the
//! environment (the process's, then `.env` or `--env-file`), resolves the project with
//! `capstan_api::compose::resolve`, and makes relative bind paths absolute. The server gets
//! one resolved document and stores what was resolved.

use anyhow::{bail, Context as _};
use capstan_api::compose::env::parse_env_file;
use capstan_api::compose::interpolate::expand;
use capstan_api::compose::resolve::{resolve, Project};
use capstan_api::compose::yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file names Compose looks for when `-f` is not given, in its order of preference.
const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];
/// The override files Compose picks up next to the main file when `-f` is not given.
const OVERRIDE_FILES: &[&str] = &[
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// What `capstan apply` was told.
#[derive(Default)]
pub struct Options {
    pub files: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
    pub profiles: Vec<String>,
    pub project_directory: Option<PathBuf>,
    /// `--stack`: the stack's name, winning over every other source.
    pub stack: Option<String>,
}

/// A resolved project, ready to send.
pub struct Loaded {
    pub doc: Value,
    pub warnings: Vec<String>,
    /// `--stack`, else `COMPOSE_PROJECT_NAME`, else the files' `name:`, else the folder's name.
    pub stack: String,
    /// The project folder: relative build contexts are in it.
    pub dir: PathBuf,
    /// Every profile the services name, active or not (`config --profiles`).
    pub profiles: Vec<String>,
}

/// Resolves the project; a Compose error is returned as the server would word it. `-f -`
/// reads that file from standard input, as Compose does (its folder is the current one).
pub fn load(opts: &Options) -> anyhow::Result<Loaded> {
    let stdin = if opts.files.iter().any(|f| f.as_os_str() == "-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the Compose file from standard input (-f -)")?;
        Some(text)
    } else {
        None
    };
    load_with_stdin(opts, stdin)
}

/// [`load`], with what standard input held.
pub(crate) fn load_with_stdin(opts: &Options, stdin: Option<String>) -> anyhow::Result<Loaded> {
    let cwd = std::env::current_dir()?;
    let files = compose_files(&cwd, opts)?;
    let stdin_path = cwd.join("-");
    let dir = match &opts.project_directory {
        Some(d) => absolute(&cwd, d),
        None => files[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(cwd.clone()),
    };
    let process: BTreeMap<String, String> = std::env::vars().collect();
    let dotenv = env_files(&dir, &cwd, &opts.env_files, &process)?;
    let lookup = |name: &str| process.get(name).or_else(|| dotenv.get(name)).cloned();
    let profiles = active_profiles(&opts.profiles, lookup("COMPOSE_PROFILES"));
    let load = |p: &Path| {
        if p == stdin_path && stdin.is_some() {
            return Ok(stdin.clone());
        }
        match std::fs::read_to_string(p) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    let stack = stack_name(opts, &lookup, &files, &load, &dir)?;
    // Compose sets COMPOSE_PROJECT_NAME for interpolation to the name it settled on.
    let lookup = |name: &str| match name {
        "COMPOSE_PROJECT_NAME" => Some(stack.clone()),
        other => lookup(other),
    };
    let project = Project {
        files,
        dir: dir.clone(),
        lookup: &lookup,
        load: &load,
        profiles,
    };
    let resolved = resolve(&project).map_err(|e| {
        let lines: Vec<String> = e
            .errors
            .iter()
            .map(|e| format!("  {}: {}", e.field, e.reason))
            .collect();
        anyhow::anyhow!(
            "invalid stack: {} problem(s); nothing was applied\n{}",
            lines.len(),
            lines.join("\n")
        )
    })?;
    let mut doc = resolved.doc;
    resolve_relative_binds(&dir, &mut doc);
    Ok(Loaded {
        doc,
        warnings: resolved.warnings,
        stack,
        dir,
        profiles: resolved.profiles,
    })
}

/// `--profile` flags if any were given, else `COMPOSE_PROFILES` (comma-separated), as Compose
/// decides it: the flags replace the variable, they do not add to it.
fn active_profiles(flags: &[String], env: Option<String>) -> Vec<String> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    env.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    cwd.join(p).components().collect()
}

/// `-f` files as given, else `COMPOSE_FILE` (`:`-separated), else the first default name in
/// the project folder (or the nearest folder above it that has one) and its override.
fn compose_files(cwd: &Path, opts: &Options) -> anyhow::Result<Vec<PathBuf>> {
    if !opts.files.is_empty() {
        return Ok(opts.files.iter().map(|f| absolute(cwd, f)).collect());
    }
    if let Ok(list) = std::env::var("COMPOSE_FILE") {
        let sep = std::env::var("COMPOSE_PATH_SEPARATOR").unwrap_or_else(|_| ":".into());
        let files: Vec<PathBuf> = list
            .split(sep.as_str())
            .filter(|f| !f.is_empty())
            .map(|f| absolute(cwd, Path::new(f)))
            .collect();
        if !files.is_empty() {
            return Ok(files);
        }
    }
    let dir = opts
        .project_directory
        .as_deref()
        .map_or(cwd.to_path_buf(), |d| absolute(cwd, d));
    // As Compose, the nearest folder up from here that has one.
    let found = dir.ancestors().find_map(|folder| {
        DEFAULT_FILES
            .iter()
            .map(|f| folder.join(f))
            .find(|p| p.is_file())
    });
    let Some(main) = found else {
        bail!(
            "no Compose file in {} or a folder above it: looked for {}; name one with -f",
            dir.display(),
            DEFAULT_FILES.join(", ")
        );
    };
    let dir = main.parent().unwrap_or(&dir).to_path_buf();
    let mut files = vec![main];
    files.extend(
        OVERRIDE_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file()),
    );
    Ok(files)
}

/// `--env-file` files, else the project's `.env` if there is one.
fn env_files(
    dir: &Path,
    cwd: &Path,
    given: &[PathBuf],
    process: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let files: Vec<PathBuf> = if given.is_empty() {
        Some(dir.join(".env"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect()
    } else {
        given.iter().map(|f| absolute(cwd, f)).collect()
    };
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        let lookup = |name: &str| process.get(name).cloned();
        let pairs = parse_env_file(&text, &lookup)
            .map_err(|e| anyhow::anyhow!("env file {}: {e}", file.display()))?;
        for (k, v) in pairs {
            if let Some(v) = v.or_else(|| process.get(&k).cloned()) {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}

/// The stack name, decided as Compose decides the project name: `--stack` (Compose's `-p`),
/// else `COMPOSE_PROJECT_NAME`, else the last `name:` the files declare (interpolated), else
/// the project folder's name.
fn stack_name(
    opts: &Options,
    lookup: &dyn Fn(&str) -> Option<String>,
    files: &[PathBuf],
    load: &dyn Fn(&Path) -> Result<Option<String>, String>,
    dir: &Path,
) -> anyhow::Result<String> {
    if let Some(name) = opts.stack.clone().filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    if let Some(name) = lookup("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    let declared = files
        .iter()
        .filter_map(|f| load(f).ok().flatten())
        .filter_map(|text| capstan_api::compose::declared_name(&text))
        .filter_map(|name| expand(&name, lookup, &mut vec![]).ok())
        .filter(|name| !name.is_empty())
        .last();
    if let Some(name) = declared {
        return Ok(name);
    }
    let raw = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let name = capstan_api::names::normalize_stack_name(raw);
    if name.is_empty() {
        bail!("cannot derive a stack name from folder {raw:?}; pass --stack NAME");
    }
    Ok(name)
}

/// Rewrites relative bind-mount sources (`./html:/www`, `~/x:/x`, and the long syntax's
/// `source: ./html`) against the project folder, as Compose does, so the server gets
/// absolute paths.
fn resolve_relative_binds(base: &Path, doc: &mut Value) {
    let home = std::env::var("HOME").unwrap_or_default();
    let absolute = |source: &str| -> Option<String> {
        let abs = if let Some(r) = source.strip_prefix("~/") {
            PathBuf::from(&home).join(r)
        } else if source.starts_with('.') {
            base.join(source)
        } else {
            return None;
        };
        Some(abs.components().collect::<PathBuf>().display().to_string())
    };
    let Some(services) = doc.get_mut("services").and_then(|s| s.as_mapping_mut()) else {
        return;
    };
    for (_, svc) in services.iter_mut() {
        let Some(vols) = svc.get_mut("volumes").and_then(|v| v.as_sequence_mut()) else {
            continue;
        };
        for v in vols.iter_mut() {
            if v.get("type").and_then(Value::as_str) == Some("bind") {
                let abs = v.get("source").and_then(Value::as_str).and_then(absolute);
                if let (Some(abs), Some(source)) = (abs, v.get_mut("source")) {
                    *source = Value::String(abs);
                }
                continue;
            }
            let Some(s) = v.as_str() else { continue };
            let Some((source, rest)) = s.split_once(':') else {
                continue;
            };
            if let Some(abs) = absolute(source) {
                *v = Value::String(format!("{abs}:{rest}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("capstan-cli-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir.canonicalize().unwrap())
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn options_in(dir: &Path) -> Options {
        Options {
            project_directory: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn relative_bind_sources_are_resolved_against_the_project_folder() {
        let tmp = TempDir::new("binds");
        let file = tmp.write(
            "compose.yaml",
            "services:\n  web:\n    image: x\n    volumes: [\"./html:/www:ro\", \"data:/d\", {type: bind, source: ./conf, target: /c}]\n",
        );
        let loaded = load(&Options {
            files: vec![file],
            ..Default::default()
        })
        .unwrap();
        let vols = loaded
            .doc
            .get("services")
            .unwrap()
            .get("web")
            .unwrap()
            .get("volumes")
            .unwrap();
        let vols = vols.as_sequence().unwrap();
        assert_eq!(
            vols[0].as_str().unwrap(),
            format!("{}/html:/www:ro", tmp.0.display())
        );
        assert_eq!(vols[1].as_str(), Some("data:/d"));
        assert_eq!(
            vols[2].get("source").unwrap().as_str().unwrap(),
            format!("{}/conf", tmp.0.display()),
            "the long syntax too"
        );
        assert_eq!(
            loaded.stack,
            capstan_api::names::normalize_stack_name(tmp.0.file_name().unwrap().to_str().unwrap())
        );
    }

    #[test]
    fn without_f_the_default_file_and_its_override_are_found_and_dot_env_is_read() {
        let tmp = TempDir::new("defaults");
        tmp.write(
            "docker-compose.yml",
            "name: shop\nservices: {web: {image: \"web:${TAG}\"}}\n",
        );
        tmp.write(
            "compose.yaml",
            "name: shop\nservices: {web: {image: \"app:${TAG:-0}\", ports: ['${PORT:-80}:80']}}\n",
        );
        tmp.write(
            "compose.override.yaml",
            "services: {web: {environment: [MODE=dev]}}\n",
        );
        tmp.write(".env", "TAG=7\n");
        let loaded = load(&options_in(&tmp.0)).unwrap();
        let web = loaded.doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(
            web.get("image").unwrap().as_str(),
            Some("app:7"),
            "compose.yaml wins over docker-compose.yml"
        );
        assert_eq!(
            web.get("environment")
                .unwrap()
                .get("MODE")
                .unwrap()
                .as_str(),
            Some("dev")
        );
        assert_eq!(loaded.stack, "shop");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn dash_f_dash_reads_the_file_from_standard_input_with_the_current_folder_as_project() {
        let cwd = std::env::current_dir().unwrap();
        let loaded = load_with_stdin(
            &Options {
                files: vec![PathBuf::from("-")],
                ..Default::default()
            },
            Some("services: {web: {image: \"web:${NO_SUCH_VAR_HERE:-9}\", volumes: ['./html:/www']}}\n".into()),
        )
        .unwrap();
        let web = loaded.doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().as_str(), Some("web:9"));
        assert_eq!(
            web.get("volumes").unwrap().as_sequence().unwrap()[0].as_str(),
            Some(format!("{}/html:/www", cwd.display()).as_str())
        );
    }

    #[test]
    fn profile_flags_replace_compose_profiles_instead_of_adding_to_it() {
        let env = Some(" metrics, ,debug".to_string());
        assert_eq!(active_profiles(&[], env.clone()), vec!["metrics", "debug"]);
        assert_eq!(active_profiles(&["tools".into()], env), vec!["tools"]);
        assert!(active_profiles(&[], None).is_empty());
    }

    #[test]
    fn compose_project_name_is_set_for_interpolation_to_the_stack_name() {
        let tmp = TempDir::new("project-name");
        tmp.write(
            "compose.yaml",
            "name: ${SITE:-blog}\nservices: {web: {image: x, container_name: \"${COMPOSE_PROJECT_NAME}-web\"}}\n",
        );
        let name = |opts: Options| {
            let loaded = load(&opts).unwrap();
            let web = loaded.doc.get("services").unwrap().get("web").unwrap();
            let container = web
                .get("container_name")
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            (loaded.stack, container)
        };
        assert_eq!(
            name(options_in(&tmp.0)),
            ("blog".to_string(), "blog-web".to_string()),
            "the file's name:, interpolated"
        );
        let opts = Options {
            stack: Some("shop".into()),
            ..options_in(&tmp.0)
        };
        assert_eq!(name(opts), ("shop".to_string(), "shop-web".to_string()));
    }

    #[test]
    fn without_f_the_compose_file_of_the_nearest_folder_above_is_read() {
        let tmp = TempDir::new("parents");
        tmp.write(
            "compose.yaml",
            "services: {web: {image: x, volumes: ['./html:/www']}}\n",
        );
        tmp.write("compose.override.yaml", "services: {web: {user: \"7\"}}\n");
        let sub = tmp.0.join("src/deep");
        std::fs::create_dir_all(&sub).unwrap();
        let loaded = load(&options_in(&sub)).unwrap();
        let web = loaded.doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(
            web.get("user").unwrap().as_str(),
            Some("7"),
            "its override too"
        );
        assert_eq!(
            web.get("volumes").unwrap().as_sequence().unwrap()[0].as_str(),
            Some(format!("{}/html:/www", sub.display()).as_str()),
            "a --project-directory given stays the project folder, as in Compose"
        );
    }

    #[test]
    fn a_folder_without_a_compose_file_says_which_names_were_looked_for() {
        let tmp = TempDir::new("empty");
        let err = load(&options_in(&tmp.0)).err().unwrap().to_string();
        assert!(err.contains("compose.yaml, compose.yml"), "{err}");
    }

    #[test]
    fn the_resolved_document_is_what_the_server_parses_with_the_same_meaning() {
        let tmp = TempDir::new("roundtrip");
        tmp.write(
            "compose.yaml",
            r#"
x-base: &base
  restart: "no"
  labels: [tier]
services:
  web:
    <<: *base
    image: "web:${TAG:-3}"
    ports: ["127.0.0.1:${WEB_PORT:-8888}:80"]
    healthcheck: {test: "test -f /tmp/$$HOSTNAME", retries: 3}
    environment: {QUOTE: 'say "hi"', VERSION: 1.0, OCTAL: 0755, EMPTY: ""}
  tools: {image: t, profiles: [tools]}
"#,
        );
        let loaded = load(&options_in(&tmp.0)).unwrap();
        let body = serde_json::to_string(&loaded.doc).unwrap();
        let spec = capstan_api::parse_stack("demo", &body).unwrap();
        assert_eq!(spec.services.len(), 1, "the tools profile is off");
        let web = &spec.services["web"];
        assert_eq!(web.image, "web:3");
        assert_eq!(web.ports[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(web.ports[0].host_ports, Some((8888, 8888)));
        assert_eq!(
            web.healthcheck.as_ref().unwrap().test[1],
            "test -f /tmp/$HOSTNAME"
        );
        assert_eq!(web.environment["QUOTE"], "say \"hi\"");
        assert_eq!(web.environment["VERSION"], "1.0");
        assert_eq!(web.environment["OCTAL"], "0755");
        assert_eq!(web.environment["EMPTY"], "");
        assert_eq!(web.labels["tier"], "");
        assert_eq!(web.restart, Some(capstan_api::spec::RestartPolicy::No));
    }

    #[test]
    fn an_anchor_heavy_file_of_real_shape_is_resolved_and_accepted_by_the_server() {
        let tmp = TempDir::new("self-hosted");
        tmp.write(
            "compose.yaml",
            include_str!("../../api/tests/data/self-hosted.yaml"),
        );
        let loaded = load(&options_in(&tmp.0)).unwrap();
        let body = serde_json::to_string(&loaded.doc).unwrap();
        let spec = capstan_api::parse_stack("demo", &body).unwrap();
        assert!(spec.services.len() >= 60, "{}", spec.services.len());
        let web = &spec.services["web"];
        assert_eq!(
            web.restart,
            Some(capstan_api::spec::RestartPolicy::UnlessStopped)
        );
    }

    #[test]
    fn interpolated_typed_fields_reach_the_server_with_their_type() {
        let tmp = TempDir::new("typed");
        tmp.write(
            "compose.yaml",
            "services:\n  web:\n    image: x\n    read_only: ${RO:-yes}\n    tty: \"${TTY:-off}\"\n    cpus: ${CPUS:-0.5}\n    mem_limit: ${MEM:-64m}\n    deploy: {replicas: \"${N:-2}\"}\n",
        );
        let loaded = load(&options_in(&tmp.0)).unwrap();
        let web = loaded.doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("read_only"), Some(&Value::Bool(true)));
        assert_eq!(web.get("tty"), Some(&Value::Bool(false)));
        let body = serde_json::to_string(&loaded.doc).unwrap();
        let spec = capstan_api::parse_stack("demo", &body).unwrap();
        let web = &spec.services["web"];
        assert_eq!(web.replicas, 2);
        assert_eq!(web.options.read_only, Some(true));
        assert_eq!(web.options.nano_cpus, Some(500_000_000));
        assert_eq!(web.options.memory, Some(64 << 20));
    }
}
