//! `capstan config`, as `docker compose config`: the project resolved exactly as `apply`
//! would send it, printed without a daemon, so a user sees what capstan understood of their
//! files before anything runs.
//!
//! One function, [`request`], makes the document `apply`, `diff` and `config` send or show:
//! were `config` to render a copy of its own, it could drift from what is applied and would
//! then show the user something capstan never received.

use crate::project::{Loaded, Options};
use capstan_api::compose::yaml::Value;

/// A project ready to send: what `PUT /v1/stacks/{stack}` gets.
pub struct Request {
    /// The stack the document is applied as (the URL's, and the document's `name:`).
    pub stack: String,
    pub doc: Value,
    /// The services with `build:`, their contexts packed: `apply` builds what the engine
    /// lacks before it sends the document.
    pub jobs: Vec<crate::build::Job>,
    /// What the user should hear about the files (unset variables, ...), not yet shown.
    pub warnings: Vec<String>,
    /// Every profile the services name, active or not.
    pub profiles: Vec<String>,
}

impl Request {
    /// The request body: JSON, which is YAML, and writes every resolved value exactly.
    pub fn body(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(&self.doc)?)
    }
}

/// Resolves the project (files, environment, profiles, relative paths) and names the tag
/// each built service's context gets; nothing is built and no server is asked.
pub fn request(opts: &Options) -> anyhow::Result<Request> {
    from_loaded(crate::project::load(opts)?)
}

fn from_loaded(mut loaded: Loaded) -> anyhow::Result<Request> {
    let jobs = crate::build::plan(&loaded.stack, &loaded.dir, &mut loaded.doc, &[])?;
    name_stack(&mut loaded.doc, &loaded.stack);
    Ok(Request {
        stack: loaded.stack,
        doc: loaded.doc,
        jobs,
        warnings: loaded.warnings,
        profiles: loaded.profiles,
    })
}

/// `name:` first, as Compose prints it, and the stack's: `--stack` or
/// `COMPOSE_PROJECT_NAME` may have overridden the files' name. The server goes by the URL's
/// name, so this tells the reader without changing what is applied.
fn name_stack(doc: &mut Value, stack: &str) {
    if let Some(m) = doc.as_mapping_mut() {
        m.remove("name");
        (m.0).insert(
            0,
            (Value::String("name".into()), Value::String(stack.into())),
        );
    }
}

/// What `capstan config` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// The whole document.
    Document(Format),
    /// Nothing: only the exit code says whether the project is valid.
    Quiet,
    /// The services in the stack (profiles applied), one per line.
    Services,
    /// The top-level named volumes, one per line.
    Volumes,
    /// Every profile the services name, active or not, one per line.
    Profiles,
    /// The image each service runs (a built service: the tag its context gets), one per line.
    Images,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// `capstan config`: prints what `show` asks of the project, once it is valid as the
/// server would find it; otherwise every problem, each naming its field (exit 1).
pub fn run(opts: &Options, show: Show) -> anyhow::Result<i32> {
    let req = request(opts)?;
    for w in &req.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", render(&req, show)?);
    Ok(0)
}

/// The text `show` asks for, once the document passes the server's own checks of it (its
/// policy and the other stacks are the server's to judge: `apply --dry-run` asks it).
pub fn render(req: &Request, show: Show) -> anyhow::Result<String> {
    validate(req)?;
    let lines = |names: Vec<String>| names.iter().map(|n| format!("{n}\n")).collect();
    Ok(match show {
        Show::Document(Format::Yaml) => serde_saphyr::to_string(&req.doc)?,
        Show::Document(Format::Json) => serde_json::to_string_pretty(&req.doc)? + "\n",
        Show::Quiet => String::new(),
        Show::Services => lines(sorted_keys(req.doc.get("services"))),
        Show::Volumes => lines(sorted_keys(req.doc.get("volumes"))),
        Show::Profiles => lines(req.profiles.clone()),
        Show::Images => lines(images(&req.doc)),
    })
}

/// The document as the server parses it: every problem, each with its field.
fn validate(req: &Request) -> anyhow::Result<()> {
    let body = req.body()?;
    let Err(invalid) = capstan_api::parse_stack(&req.stack, &body) else {
        return Ok(());
    };
    let lines: Vec<String> = (invalid.errors.iter())
        .map(|e| format!("  {}: {}", e.field, e.reason))
        .collect();
    anyhow::bail!(
        "invalid stack: {} problem(s)\n{}",
        lines.len(),
        lines.join("\n")
    )
}

/// A mapping's keys, sorted as Compose lists them.
fn sorted_keys(map: Option<&Value>) -> Vec<String> {
    let mut keys: Vec<String> = (map.and_then(Value::as_mapping).into_iter())
        .flat_map(|m| m.iter().filter_map(|(k, _)| k.scalar_text()))
        .collect();
    keys.sort();
    keys
}

/// Each service's image, in the order of the services' names.
fn images(doc: &Value) -> Vec<String> {
    let services = doc.get("services");
    sorted_keys(services)
        .iter()
        .filter_map(|name| services?.get(name)?.get("image")?.scalar_text())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A project folder of its own, removed afterwards.
    struct Folder(PathBuf);

    impl Folder {
        fn with(tag: &str, files: &[(&str, &str)]) -> Folder {
            let dir =
                std::env::temp_dir().join(format!("capstan-config-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (name, text) in files {
                let path = dir.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            Folder(dir.canonicalize().unwrap())
        }

        fn request(&self, profiles: &[&str]) -> Request {
            request(&Options {
                files: vec![self.0.join("compose.yaml")],
                profiles: profiles.iter().map(|p| p.to_string()).collect(),
                stack: Some("shop".into()),
                ..Default::default()
            })
            .unwrap()
        }

        fn show(&self, show: Show) -> String {
            render(&self.request(&[]), show).unwrap()
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SHOP: &str = r#"
name: ${SITE:-store}
services:
  web:
    image: "web:${TAG:-3}"
    volumes: ["./html:/www:ro", "uploads:/up"]
    environment: {MODE: "yes", VERSION: 1.0, OCTAL: "0755", EMPTY: ""}
  db: {image: "db:1", volumes: [dbdata:/var/lib/db]}
  debug: {image: busybox, profiles: [debug]}
  docs: {image: docs, profiles: [tools, debug]}
volumes:
  uploads: {}
  dbdata: {}
"#;

    fn shop(tag: &str) -> Folder {
        Folder::with(tag, &[("compose.yaml", SHOP)])
    }

    #[test]
    fn services_lists_the_services_the_active_profiles_enable_sorted() {
        let shop = shop("services");
        assert_eq!(shop.show(Show::Services), "db\nweb\n");
        let with_debug = render(&shop.request(&["debug"]), Show::Services).unwrap();
        assert_eq!(with_debug, "db\ndebug\ndocs\nweb\n");
    }

    #[test]
    fn volumes_lists_the_named_volumes_sorted() {
        assert_eq!(shop("volumes").show(Show::Volumes), "dbdata\nuploads\n");
    }

    #[test]
    fn profiles_lists_every_profile_a_service_names_even_when_none_is_active() {
        assert_eq!(shop("profiles").show(Show::Profiles), "debug\ntools\n");
    }

    #[test]
    fn images_lists_each_service_s_image_and_for_a_built_one_the_tag_apply_would_run() {
        let folder = Folder::with(
            "images",
            &[
                (
                    "compose.yaml",
                    "services:\n  web: {image: \"web:2\"}\n  app: {build: ./app}\n",
                ),
                ("app/Dockerfile", "FROM scratch\n"),
            ],
        );
        let req = folder.request(&[]);
        let text = render(&req, Show::Images).unwrap();
        let built = &req.jobs[0].tag;
        assert!(built.starts_with("capstan.local/shop/app:"), "{built}");
        assert_eq!(text, format!("{built}\nweb:2\n"));
    }

    #[test]
    fn quiet_prints_nothing_for_a_valid_project() {
        assert_eq!(shop("quiet").show(Show::Quiet), "");
    }

    #[test]
    fn an_invalid_project_is_refused_with_every_problem_each_naming_its_field() {
        let folder = Folder::with(
            "invalid",
            &[(
                "compose.yaml",
                "services:\n  web: {image: web, ports: [\"99999:80\"]}\n  db: {image: db, restart: sometimes}\n",
            )],
        );
        for show in [Show::Quiet, Show::Document(Format::Yaml), Show::Services] {
            let err = render(&folder.request(&[]), show).unwrap_err().to_string();
            assert!(err.starts_with("invalid stack: 2 problem(s)\n"), "{err}");
            assert!(err.contains("\n  services.web.ports[0]: "), "{err}");
            assert!(err.contains("\n  services.db.restart: "), "{err}");
        }
    }

    #[test]
    fn json_format_is_the_request_body_apply_sends() {
        let req = shop("json").request(&[]);
        let text = render(&req, Show::Document(Format::Json)).unwrap();
        let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sent: serde_json::Value = serde_json::from_str(&req.body().unwrap()).unwrap();
        assert_eq!(shown, sent);
    }

    #[test]
    fn yaml_format_reads_back_as_the_document_apply_sends() {
        let req = shop("yaml").request(&[]);
        let text = render(&req, Show::Document(Format::Yaml)).unwrap();
        let parse = capstan_api::compose::yaml::parse;
        assert_eq!(parse(&text).unwrap(), parse(&req.body().unwrap()).unwrap());
        let env = req.doc.get("services").unwrap().get("web").unwrap();
        let env = env.get("environment").unwrap();
        assert_eq!(env.get("MODE").unwrap().as_str(), Some("yes"), "{text}");
        assert_eq!(env.get("OCTAL").unwrap().as_str(), Some("0755"), "{text}");
    }

    #[test]
    fn the_document_is_resolved_with_the_stack_as_its_name_and_absolute_bind_paths() {
        let folder = shop("resolved");
        let req = folder.request(&[]);
        let doc = &req.doc;
        let first = doc.as_mapping().unwrap().iter().next().unwrap();
        assert_eq!(
            first.0.as_str(),
            Some("name"),
            "name comes first, as Compose prints it"
        );
        assert_eq!(
            first.1.as_str(),
            Some("shop"),
            "--stack wins over the file's name"
        );
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().as_str(), Some("web:3"));
        let vols = web.get("volumes").unwrap().as_sequence().unwrap();
        let html = format!("{}/html:/www:ro", folder.0.display());
        assert_eq!(vols[0].as_str(), Some(html.as_str()));
        assert!(doc.get("services").unwrap().get("debug").is_none());
    }

    #[test]
    fn dash_f_dash_reads_the_project_from_standard_input() {
        let opts = Options {
            files: vec![PathBuf::from("-")],
            stack: Some("piped".into()),
            ..Default::default()
        };
        let text = "services: {web: {image: \"web:${NO_SUCH_CONFIG_VAR:-7}\"}}\n";
        let loaded = crate::project::load_with_stdin(&opts, Some(text.into())).unwrap();
        let req = from_loaded(loaded).unwrap();
        assert_eq!(render(&req, Show::Services).unwrap(), "web\n");
        assert_eq!(render(&req, Show::Images).unwrap(), "web:7\n");
    }
}
