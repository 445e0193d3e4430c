//! `build:` on the client: the contexts of a project's built services are packed
//! ([`context`], honouring `.dockerignore` by [`ignore`]'s rules) and digested; each service's
//! image becomes the deterministic `capstan.local/<stack>/<service>:<16 hex of the digest>`,
//! built by the daemon (`POST /v1/builds`) only when the engine does not have it yet, with
//! its output shown as it comes. The document sent to `apply` names that tag in `image` and
//! keeps the build options with the digest (`x-capstan-digest`) and the image's Compose name
//! (`x-capstan-image`: `image`, else `<stack>-<service>`, as Compose v2 names it).

pub mod context;
pub mod ignore;

use crate::client::Client;
use anyhow::{bail, Context as _};
use capstan_api::build::{built_tag, default_image_name, BuildEvent, BuildRequest, BuildSpec};
use capstan_api::compose::yaml::{Mapping, Value};
use std::io::Write as _;
use std::path::Path;

/// One service to build (or find already built).
pub struct Job {
    pub service: String,
    pub tag: String,
    /// Every other name the image gets.
    pub names: Vec<String>,
    pub spec: BuildSpec,
    pub packed: context::Packed,
}

/// Packs and digests the context of every service with `build:` (of `only`, if not empty),
/// and rewrites the document to name the built tags.
pub fn plan(stack: &str, dir: &Path, doc: &mut Value, only: &[String]) -> anyhow::Result<Vec<Job>> {
    let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) else {
        return Ok(vec![]);
    };
    let mut jobs = vec![];
    for (name, svc) in services.iter_mut() {
        let service = name.as_str().unwrap_or_default().to_string();
        let Some(build) = svc.get("build") else {
            continue;
        };
        if !only.is_empty() && !only.contains(&service) {
            continue;
        }
        let path = format!("services.{service}.build");
        let mut spec = capstan_api::compose::parse_build(&path, build).map_err(|e| {
            let lines: Vec<String> = (e.errors.iter())
                .map(|e| format!("  {}: {}", e.field, e.reason))
                .collect();
            anyhow::anyhow!(
                "invalid build of {service}; nothing was built\n{}",
                lines.join("\n")
            )
        })?;
        if spec.extra_hosts.len() > 1 {
            bail!(
                "{path}.extra_hosts: one entry at most for now: the engine's build API takes \
                 each host as a repeated query parameter, which capstan's engine client cannot \
                 send yet; nothing was built"
            );
        }
        let job = job(stack, &service, dir, svc, &mut spec)
            .with_context(|| format!("{path}: packing the context"))?;
        rewrite(svc, &job);
        jobs.push(job);
    }
    Ok(jobs)
}

fn job(
    stack: &str,
    service: &str,
    dir: &Path,
    svc: &Value,
    spec: &mut BuildSpec,
) -> anyhow::Result<Job> {
    if spec.context.contains("://") || spec.context.starts_with("git@") {
        bail!(
            "{:?} is a remote context; capstan packs a local folder (clone it first)",
            spec.context
        );
    }
    let context = dir
        .join(&spec.context)
        .components()
        .collect::<std::path::PathBuf>();
    spec.context = context.display().to_string();
    let packed = context::pack(&context, spec)?;
    let tag = built_tag(stack, service, &packed.digest);
    let name = (svc.get("image").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| default_image_name(stack, service));
    spec.digest = Some(packed.digest.clone());
    spec.name = Some(name.clone());
    let mut names = vec![name];
    names.extend(spec.tags.iter().cloned());
    Ok(Job {
        service: service.to_string(),
        tag,
        names,
        spec: spec.clone(),
        packed,
    })
}

/// `image:` becomes the built tag; `build:` its long form, with the absolute context and
/// what the client learnt.
fn rewrite(svc: &mut Value, job: &Job) {
    let Some(m) = svc.as_mapping_mut() else {
        return;
    };
    let mut build = match m.get("build") {
        Some(Value::Mapping(b)) => b.clone(),
        _ => Mapping::default(),
    };
    let s = |t: &str| Value::String(t.to_string());
    build.insert("context", s(&job.spec.context));
    build.insert("x-capstan-digest", s(&job.packed.digest));
    build.insert("x-capstan-image", s(&job.names[0]));
    m.insert("build", Value::Mapping(build));
    m.insert("image", s(&job.tag));
}

/// Builds every job the engine does not have yet; an error (a failed step, a context over
/// the limit) is returned once the builder's output was shown.
pub async fn ensure(api: &Client, stack: &str, jobs: &[Job]) -> anyhow::Result<()> {
    for job in jobs {
        let view = api.image(&job.tag).await?;
        let size = job.packed.tar.len() as u64;
        if view.exists {
            eprintln!(
                "{stack}/{}: image {} is up to date, not built",
                job.service, job.tag
            );
            continue;
        }
        if size > view.max_build_context {
            bail!(
                "{stack}/{}: the build context ({} bytes) is over the daemon's limit of {} bytes \
                 (serve --max-build-context); nothing was built or applied",
                job.service,
                size,
                view.max_build_context
            );
        }
        eprintln!(
            "{stack}/{}: building {} ({} files, {} bytes of context)",
            job.service, job.tag, job.packed.files, size
        );
        build_one(api, stack, job).await?;
    }
    Ok(())
}

async fn build_one(api: &Client, stack: &str, job: &Job) -> anyhow::Result<()> {
    let mut spec = job.spec.clone();
    spec.dockerfile = Some(job.packed.dockerfile.clone());
    spec.dockerfile_inline = None;
    let request = BuildRequest {
        stack: stack.to_string(),
        service: job.service.clone(),
        tag: job.tag.clone(),
        names: job.names.clone(),
        spec,
    };
    let mut resp = api.build(&request, job.packed.tar.clone()).await?;
    let mut lines = Lines::default();
    let mut step = None;
    while let Some(chunk) = resp.chunk().await.context("reading the build's output")? {
        for line in lines.push(&chunk) {
            match serde_json::from_str::<BuildEvent>(&line) {
                Ok(BuildEvent::Stream(text)) => {
                    if let Some(s) = text.lines().find(|l| l.starts_with("Step ")) {
                        step = Some(s.to_string());
                    }
                    let mut err = std::io::stderr();
                    let _ = err.write_all(text.as_bytes());
                }
                Ok(BuildEvent::Built { names, .. }) => {
                    eprintln!("{stack}/{}: built {}", job.service, names.join(", "));
                    return Ok(());
                }
                Ok(BuildEvent::Error(msg)) => bail!(
                    "{stack}/{}: the build failed{}: {msg}; nothing was applied",
                    job.service,
                    step.map(|s| format!(" at {s}")).unwrap_or_default()
                ),
                Err(_) => eprintln!("{line}"),
            }
        }
    }
    bail!(
        "{stack}/{}: the build's output ended before it finished (the daemon stopped?)",
        job.service
    )
}

/// `capstan build -f FILE [SERVICE..]`: builds what the engine lacks, applies nothing.
pub async fn run(
    api: &Client,
    opts: &crate::project::Options,
    services: &[String],
) -> anyhow::Result<i32> {
    let mut loaded = crate::project::load(opts)?;
    let built: Vec<String> = (loaded.doc.get("services").and_then(Value::as_mapping))
        .map(|m| {
            m.iter()
                .filter(|(_, svc)| svc.get("build").is_some())
                .filter_map(|(name, _)| name.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(s) = services.iter().find(|s| !built.contains(s)) {
        bail!("service {s:?} has no `build:` in this project (built services: {built:?})");
    }
    let jobs = plan(&loaded.stack, &loaded.dir, &mut loaded.doc, services)?;
    ensure(api, &loaded.stack, &jobs).await?;
    for job in &jobs {
        println!("{}/{} {}", loaded.stack, job.service, job.tag);
    }
    Ok(0)
}

/// Splits a byte stream into lines.
#[derive(Default)]
struct Lines(Vec<u8>);

impl Lines {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.0.extend_from_slice(chunk);
        let mut out = vec![];
        while let Some(pos) = self.0.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.0.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line).trim().to_string();
            if !text.is_empty() {
                out.push(text);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_the_built_tag_and_keeps_the_options_with_the_digest_and_compose_name() {
        let dir = std::env::temp_dir().join(format!("capstan-plan-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join("app/Dockerfile"), "FROM scratch\n").unwrap();
        let yaml = "services:\n  web:\n    image: shop/web:1\n    build: {context: app, args: {V: 1}}\n  db:\n    image: db:1\n  api:\n    build: app\n";
        let mut doc = capstan_api::compose::yaml::parse(yaml).unwrap();
        let jobs = plan("shop", &dir, &mut doc, &[]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(jobs.len(), 2);
        let web = doc.get("services").unwrap().get("web").unwrap();
        let tag = web.get("image").unwrap().as_str().unwrap();
        assert!(tag.starts_with("capstan.local/shop/web:"), "{tag}");
        assert_eq!(tag, jobs[0].tag);
        let build = web.get("build").unwrap();
        let context = build.get("context").unwrap().as_str().unwrap();
        assert_eq!(context, dir.join("app").display().to_string());
        assert_eq!(
            build.get("x-capstan-image").unwrap().as_str(),
            Some("shop/web:1")
        );
        let digest = build.get("x-capstan-digest").unwrap().as_str().unwrap();
        assert!(digest.starts_with("sha256:") && tag.ends_with(&digest[7..23]));
        assert_eq!(
            jobs[1].names,
            vec!["shop-api".to_string()],
            "Compose v2's name"
        );
        assert_ne!(
            jobs[0].tag.rsplit(':').next(),
            jobs[1].tag.rsplit(':').next(),
            "args count"
        );
        let spec = capstan_api::parse_stack("shop", &serde_json::to_string(&doc).unwrap()).unwrap();
        let stored = spec.services["web"].build.clone().unwrap();
        assert_eq!(stored.digest.as_deref(), Some(digest));
        assert_eq!(spec.services["db"].image, "db:1");
    }

    #[test]
    fn a_remote_context_and_several_extra_hosts_are_refused_before_packing() {
        let dir = std::env::temp_dir();
        let mut doc = capstan_api::compose::yaml::parse(
            "services: {web: {build: 'https://github.com/x/y.git'}}",
        )
        .unwrap();
        let err = plan("s", &dir, &mut doc, &[]).err().unwrap();
        assert!(format!("{err:#}").contains("remote context"), "{err:#}");
        let mut doc = capstan_api::compose::yaml::parse(
            "services: {web: {build: {context: ., extra_hosts: ['a:1.2.3.4', 'b:1.2.3.5']}}}",
        )
        .unwrap();
        let err = plan("s", &dir, &mut doc, &[]).err().unwrap().to_string();
        assert!(err.contains("services.web.build.extra_hosts"), "{err}");
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"stream\":").is_empty());
        assert_eq!(
            l.push(b"\"a\"}\n{\"b\"\n"),
            vec!["{\"stream\":\"a\"}", "{\"b\""]
        );
    }
}
