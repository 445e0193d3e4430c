//! [`Runtime`] on the Docker Engine API (bollard).

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use capstan_api::names;
use futures::stream::{BoxStream, StreamExt};
use std::collections::HashMap;
use std::time::Duration;

use super::create::{self, ApiVersion};
use super::registry::RegistryAuth;
use super::*;

pub struct DockerRuntime {
    docker: Docker,
    /// The negotiated API version: options newer than it are refused (or, for health
    /// `start_interval`, dropped; documented).
    api: ApiVersion,
    /// Serialises network and volume creation: the engine does not refuse a second network
    /// with the same name, so two reconciles racing would make an ambiguous pair.
    resource_lock: tokio::sync::Mutex<()>,
    /// Credentials for pulls, by registry host (`serve --registry-auth`, the Docker config).
    registry_auth: RegistryAuth,
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn engine(op: &'static str) -> impl Fn(BollardError) -> RuntimeError {
    move |e| RuntimeError::Engine {
        op,
        message: e.to_string(),
    }
}

/// A frame of a container's output as a [`LogChunk`] (a TTY's output is stdout); its
/// input, never asked for, is dropped.
fn chunk(
    op: &'static str,
    out: Result<LogOutput, BollardError>,
) -> Option<Result<LogChunk, RuntimeError>> {
    match out {
        Err(e) => Some(Err(engine(op)(e))),
        Ok(LogOutput::StdErr { message }) => Some(Ok(LogChunk {
            stderr: true,
            bytes: message.to_vec(),
        })),
        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => Some(Ok(LogChunk {
            stderr: false,
            bytes: message.to_vec(),
        })),
        Ok(LogOutput::StdIn { .. }) => None,
    }
}

/// A failed create as capstan reports it. The engine answers 404 both when it lacks the
/// image and when it has the image for another platform than `platform` asks: the latter
/// keeps the engine's words (which name both platforms), instead of saying the image is not
/// present.
fn create_error(image: &str, e: BollardError) -> RuntimeError {
    let foreign = matches!(&e, BollardError::DockerResponseServerError { message, .. }
        if message.contains("does not match the specified platform"));
    match status_of(&e) {
        Some(404) if !foreign => RuntimeError::ImageNotFound(image.to_string()),
        _ => engine("create")(e),
    }
}

impl DockerRuntime {
    /// IDs of the networks called exactly `name`, oldest first.
    async fn networks_named(&self, name: &str) -> Result<Vec<String>, RuntimeError> {
        Ok((self.networks_with_labels(name).await?.into_iter())
            .map(|(id, _)| id)
            .collect())
    }

    /// The IDs of the networks called `name`, oldest first, each with its stack label.
    async fn networks_with_labels(
        &self,
        name: &str,
    ) -> Result<Vec<(String, Option<String>)>, RuntimeError> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let opts = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let mut found: Vec<(String, String, Option<String>)> = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(engine("list networks"))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| {
                let stack = n.labels.and_then(|mut l| l.remove(names::STACK));
                Some((n.created.unwrap_or_default(), n.id?, stack))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, id, s)| (id, s)).collect())
    }

    /// Keeps the network of `name` with the most containers (the oldest of equals) and
    /// removes the others, with the capstan replicas on them (the reconcile makes them
    /// again on the one kept). A container capstan does not own on a duplicate stops the
    /// repair, named in the error.
    async fn repair_duplicates(&self, name: &str) -> Result<(), RuntimeError> {
        let mut nets = vec![];
        for id in self.networks_named(name).await? {
            let net = self
                .docker
                .inspect_network(&id, None)
                .await
                .map_err(engine("inspect network"))?;
            nets.push((id, net.containers.unwrap_or_default()));
        }
        // Stable: the oldest of those with the most containers comes first.
        nets.sort_by_key(|(_, containers)| std::cmp::Reverse(containers.len()));
        let kept = nets[0].0.clone();
        for (id, containers) in nets.into_iter().skip(1) {
            tracing::warn!(network = name, duplicate = %id, kept = %kept, containers = containers.len(), "two networks share a name; removing the duplicate");
            for cid in containers.keys() {
                self.remove_replica_on_duplicate(name, cid).await?;
            }
            match self.docker.remove_network(&id).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(engine("remove duplicate network")(e)),
            }
        }
        Ok(())
    }

    async fn remove_replica_on_duplicate(
        &self,
        network: &str,
        id: &str,
    ) -> Result<(), RuntimeError> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(engine("inspect"))?;
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        if !labels.contains_key(names::STACK) {
            return Err(RuntimeError::Engine {
                op: "repair duplicate network",
                message: format!(
                    "network {network} exists twice and the duplicate holds container {} that capstan does not own; disconnect it",
                    info.name.unwrap_or_default().trim_start_matches('/')
                ),
            });
        }
        self.remove(id, Duration::from_secs(10)).await
    }

    /// Connects to the local engine and negotiates the API version (an API-1.41 engine
    /// refuses bollard's newer default).
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_socket_defaults().map_err(engine("connect"))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(engine("version negotiation"))?;
        docker.ping().await.map_err(engine("ping"))?;
        let v = docker.client_version();
        Ok(DockerRuntime {
            docker,
            api: ApiVersion(v.major_version, v.minor_version),
            resource_lock: tokio::sync::Mutex::new(()),
            registry_auth: RegistryAuth::default(),
        })
    }

    /// Pulls with these credentials.
    pub fn with_registry_auth(mut self, auth: RegistryAuth) -> Self {
        self.registry_auth = auth;
        self
    }

    /// What the engine gets as `X-Registry-Auth` for `image`, if anything.
    fn credentials_for(&self, image: &str) -> Option<DockerCredentials> {
        let c = self.registry_auth.for_image(image)?;
        Some(DockerCredentials {
            username: c.username.clone(),
            password: c.password.clone(),
            identitytoken: c.identity_token.clone(),
            serveraddress: Some(match super::registry::registry_of(image) {
                hub if hub == super::registry::DOCKER_HUB => "https://index.docker.io/v1/".into(),
                host => host,
            }),
            ..Default::default()
        })
    }

    pub fn api_version(&self) -> String {
        self.api.to_string()
    }

    /// After a 409 on create: the name's holder is ours (a replica created by an earlier,
    /// interrupted reconcile) or foreign.
    async fn holder_of(&self, plan: &ContainerConfig) -> Result<String, RuntimeError> {
        let info = self
            .docker
            .inspect_container(&plan.name, None)
            .await
            .map_err(engine("inspect"))?;
        let id = info.id.unwrap_or_default();
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        let same = |k: &str| labels.get(k) == plan.labels.get(k);
        if same(names::STACK)
            && same(names::SERVICE)
            && same(names::REPLICA)
            && labels.contains_key(names::STACK)
        {
            Ok(id)
        } else {
            Err(RuntimeError::NameConflict {
                name: plan.name.clone(),
                id: id.chars().take(12).collect(),
            })
        }
    }
}

/// `Up 3 minutes (healthy)`, `Up 2 seconds (health: starting)`, `Exited (137) 5 seconds ago`.
fn parse_status(state: Option<ContainerSummaryStateEnum>, status: &str) -> (State, Health) {
    let health = if status.contains("(healthy)") {
        Health::Healthy
    } else if status.contains("(unhealthy)") {
        Health::Unhealthy
    } else if status.contains("(health: starting)") {
        Health::Starting
    } else {
        Health::None
    };
    let state = match state {
        Some(ContainerSummaryStateEnum::RUNNING) => State::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => State::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => State::Restarting,
        Some(ContainerSummaryStateEnum::REMOVING) => State::Removing,
        Some(ContainerSummaryStateEnum::DEAD) => State::Dead,
        Some(ContainerSummaryStateEnum::EXITED) => {
            let code = status
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .and_then(|(c, _)| c.parse().ok())
                .unwrap_or(-1);
            State::Exited { code }
        }
        _ => State::Created,
    };
    (state, health)
}

fn observed(c: ContainerSummary) -> Option<Observed> {
    let labels = c.labels.unwrap_or_default();
    let (state, health) = parse_status(c.state, c.status.as_deref().unwrap_or(""));
    Some(Observed {
        id: c.id?,
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        stack: labels.get(names::STACK)?.clone(),
        service: labels.get(names::SERVICE).cloned().unwrap_or_default(),
        ordinal: labels
            .get(names::REPLICA)
            .and_then(|r| r.parse().ok())
            .filter(|n| *n > 0),
        spec_hash: labels.get(names::SPEC_HASH).cloned().unwrap_or_default(),
        partners: labels.get(names::PARTNERS).cloned(),
        state,
        health: if state == State::Running {
            health
        } else {
            Health::None
        },
        created: c.created.unwrap_or_default(),
        addresses: c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(net, ep)| Some((net, ep.ip_address.filter(|ip| !ip.is_empty())?)))
            .collect(),
        published: c
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let proto = match p.typ {
                    Some(bollard::models::PortSummaryTypeEnum::UDP) => "udp",
                    _ => "tcp",
                };
                Some(((p.private_port, proto.to_string()), p.public_port?))
            })
            .collect(),
    })
}

/// A pull that takes longer (a registry that stopped answering mid-pull) is given up: it
/// holds a reconcile worker meanwhile.
const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `name[:tag][@digest]` as the engine's pull wants it: the name, and the tag or digest
/// (`latest` when neither is given; an empty tag would pull every tag).
fn pull_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// The registry's words in a failed pull, without bollard's wrapping.
fn pull_message(e: BollardError) -> String {
    match e {
        BollardError::DockerStreamError { error } => error,
        BollardError::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

fn label_filter(stack: Option<&str>, service: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![match stack {
        Some(s) => format!("{}={s}", names::STACK),
        None => names::STACK.to_string(),
    }];
    if let Some(svc) = service {
        labels.push(format!("{}={svc}", names::SERVICE));
    }
    HashMap::from([("label".to_string(), labels)])
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker.ping().await.map(|_| ()).map_err(engine("ping"))
    }

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine("inspect image")(e)),
        }
    }

    /// Follows the pull's progress stream to its end: an error in it is the registry's.
    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let (name, tag) = pull_reference(image);
        let opts = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let mut progress = self
            .docker
            .create_image(Some(opts), None, self.credentials_for(image));
        let follow = async {
            while let Some(step) = progress.next().await {
                step.map_err(pull_message)?;
            }
            Ok(())
        };
        let failed = |message| RuntimeError::Pull {
            image: image.to_string(),
            message,
        };
        match tokio::time::timeout(PULL_TIMEOUT, follow).await {
            Ok(done) => done.map_err(failed),
            Err(_) => Err(failed(format!(
                "not finished after {} minutes; given up, to be tried again",
                PULL_TIMEOUT.as_secs() / 60
            ))),
        }
    }

    async fn list(
        &self,
        stack: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&label_filter(stack, service))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(engine("list containers"))?;
        Ok(list.into_iter().filter_map(observed).collect())
    }

    async fn create(&self, plan: &ContainerConfig) -> Result<String, RuntimeError> {
        let body = create::body(plan, self.api)?;
        let mut opts = CreateContainerOptionsBuilder::new().name(&plan.name);
        if let Some(platform) = &plan.options.platform {
            opts = opts.platform(platform);
        }
        let id = match self.docker.create_container(Some(opts.build()), body).await {
            Ok(resp) => resp.id,
            Err(e) if status_of(&e) == Some(409) => return self.holder_of(plan).await,
            Err(e) => return Err(create_error(&plan.image, e)),
        };
        for (net, aliases) in plan.networks.iter().skip(1) {
            let req = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(create::endpoint(plan, aliases, plan.addresses.get(net))),
            };
            if let Err(e) = self.docker.connect_network(net, req).await {
                // Do not leave a half-wired container behind.
                let _ = self.remove(&id, Duration::ZERO).await;
                return Err(engine("network connect")(e));
            }
        }
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(304) => Ok(()),
            Err(e) => Err(engine("start")(e)),
        }
    }

    async fn restart(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let opts = RestartContainerOptionsBuilder::new()
            .t(grace.as_secs() as i32)
            .build();
        self.docker
            .restart_container(id, Some(opts))
            .await
            .map_err(engine("restart"))
    }

    async fn inspect(&self, id: &str) -> Result<Detail, RuntimeError> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(engine("inspect"))?;
        let state = info.state.unwrap_or_default();
        let health_output = state
            .health
            .and_then(|h| h.log)
            .and_then(|log| log.into_iter().last())
            .and_then(|entry| entry.output)
            .map(|o| {
                let o = o.trim();
                o.chars().take(300).collect::<String>()
            });
        let started_at = (state.started_at.as_deref())
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .filter(|ns| *ns > 0);
        Ok(Detail {
            oom_killed: state.oom_killed.unwrap_or(false),
            health_output,
            started_at,
        })
    }

    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        if !grace.is_zero() {
            let opts = StopContainerOptionsBuilder::new()
                .t(grace.as_secs().max(1) as i32)
                .build();
            match self.docker.stop_container(id, Some(opts)).await {
                Ok(()) => {}
                Err(e) if matches!(status_of(&e), Some(304) | Some(404)) => {}
                Err(e) => return Err(engine("stop")(e)),
            }
        }
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            // 404: already gone; 409: removal already in progress.
            Err(e) if matches!(status_of(&e), Some(404) | Some(409)) => Ok(()),
            Err(e) => Err(engine("remove")(e)),
        }
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let opts = bollard::query_parameters::WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut answers = self.docker.wait_container(id, Some(opts));
        match answers.next().await {
            Some(Ok(done)) => Ok(done.status_code),
            // bollard makes a non-zero exit an error; it is an answer here.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine("wait")(e)),
            None => Err(RuntimeError::Engine {
                op: "wait",
                message: "the engine closed the wait without an exit code".into(),
            }),
        }
    }

    async fn exec(&self, id: &str, hook: &capstan_api::spec::Hook) -> Result<i64, RuntimeError> {
        let config = bollard::models::ExecConfig {
            cmd: Some(hook.command.clone()),
            user: hook.user.clone(),
            privileged: Some(hook.privileged),
            working_dir: hook.working_dir.clone(),
            env: (!hook.environment.is_empty()).then(|| {
                (hook.environment.iter())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            }),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self.docker.create_exec(id, config).await;
        let exec_id = created.map_err(engine("exec"))?.id;
        let started = self.docker.start_exec(&exec_id, None).await;
        if let bollard::exec::StartExecResults::Attached { mut output, .. } =
            started.map_err(engine("exec"))?
        {
            // The hook's output is drained, not kept: the hook is done once it closes.
            while let Some(chunk) = output.next().await {
                chunk.map_err(engine("exec"))?;
            }
        }
        let done = self.docker.inspect_exec(&exec_id).await;
        Ok(done.map_err(engine("exec"))?.exit_code.unwrap_or(-1))
    }

    async fn oneoffs(&self) -> Result<Vec<OneOff>, RuntimeError> {
        let filters = HashMap::from([("label".to_string(), vec![names::ONEOFF_STACK.to_string()])]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list =
            (self.docker.list_containers(Some(opts)).await).map_err(engine("list containers"))?;
        Ok((list.into_iter())
            .filter_map(|c| {
                Some(OneOff {
                    id: c.id?,
                    name: (c.names?.into_iter().next()?)
                        .trim_start_matches('/')
                        .to_string(),
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                    created: c.created.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let opts = bollard::query_parameters::RenameContainerOptions {
            name: name.to_string(),
        };
        match self.docker.rename_container(id, opts).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => {
                let holder = self.docker.inspect_container(name, None).await;
                let id = holder.ok().and_then(|h| h.id).unwrap_or_default();
                Err(RuntimeError::NameConflict {
                    name: name.to_string(),
                    id: id.chars().take(12).collect(),
                })
            }
            Err(e) => Err(engine("rename")(e)),
        }
    }

    /// The engine lets two networks share a name (two daemons, or a retry after a
    /// timeout, could each make one): a duplicate found here is reported and repaired.
    async fn ensure_network(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        let _guard = self.resource_lock.lock().await;
        match self.networks_with_labels(&plan.name).await?.as_slice() {
            [] => {}
            [(_, owner)] => return plan.check_owner("network", owner.as_ref()),
            _ => return self.repair_duplicates(&plan.name).await,
        }
        if plan.external {
            return Err(RuntimeError::ExternalMissing {
                kind: "network",
                name: plan.name.clone(),
            });
        }
        self.docker
            .create_network(create::network_request(plan))
            .await
            .map(|_| ())
            .map_err(engine("create network"))
    }

    async fn ensure_volume(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        let _guard = self.resource_lock.lock().await;
        match self.docker.inspect_volume(&plan.name).await {
            Ok(v) => return plan.check_owner("volume", v.labels.get(names::STACK)),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(engine("inspect volume")(e)),
        }
        if plan.external {
            return Err(RuntimeError::ExternalMissing {
                kind: "volume",
                name: plan.name.clone(),
            });
        }
        self.docker
            .create_volume(create::volume_request(plan))
            .await
            .map(|_| ())
            .map_err(engine("create volume"))
    }

    async fn stack_networks(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        let opts = ListNetworksOptionsBuilder::new()
            .filters(&label_filter(Some(stack), None))
            .build();
        let nets = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(engine("list networks"))?;
        Ok(nets.into_iter().filter_map(|n| n.name).collect())
    }

    async fn stack_volumes(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        let opts = ListVolumesOptionsBuilder::new()
            .filters(&label_filter(Some(stack), None))
            .build();
        let vols = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(engine("list volumes"))?;
        Ok(vols
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// By ID, every network of the name: duplicates go too.
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        for id in self.networks_named(name).await? {
            match self.docker.remove_network(&id).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(engine("remove network")(e)),
            }
        }
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine("remove volume")(e)),
        }
    }

    fn logs(
        &self,
        id: &str,
        opts: &LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        let mut q = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .timestamps(opts.timestamps);
        if let Some(since) = opts.since {
            q = q.since(since.clamp(0, i32::MAX as i64) as i32);
        }
        q = q.tail(&opts.tail.map_or("all".to_string(), |n| n.to_string()));
        self.docker
            .logs(id, Some(q.build()))
            .filter_map(|out| async move { chunk("logs", out) })
            .boxed()
    }

    async fn attach(&self, id: &str) -> Result<LogStream, RuntimeError> {
        let opts = bollard::query_parameters::AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached =
            (self.docker.attach_container(id, Some(opts)).await).map_err(engine("attach"))?;
        Ok(attached
            .output
            .filter_map(|out| async move { chunk("attach", out) })
            .boxed())
    }

    fn events(
        &self,
        since_nano: Option<i64>,
    ) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        let mut filters = label_filter(None, None);
        filters.insert("type".into(), vec!["container".into()]);
        let mut opts = EventsOptionsBuilder::new().filters(&filters);
        let since =
            since_nano.map(|ns| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000));
        if let Some(since) = &since {
            opts = opts.since(since);
        }
        self.docker
            .events(Some(opts.build()))
            .filter_map(|ev| async move {
                match ev {
                    Err(e) => Some(Err(engine("events")(e))),
                    Ok(msg) => {
                        let attrs = msg.actor.and_then(|a| a.attributes).unwrap_or_default();
                        Some(Ok(ContainerEvent {
                            stack: attrs.get(names::STACK)?.clone(),
                            service: attrs.get(names::SERVICE).cloned().unwrap_or_default(),
                            action: msg.action.unwrap_or_default(),
                            time_nano: msg.time_nano.unwrap_or_default(),
                        }))
                    }
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_of_another_platform_is_an_engine_error_in_the_engines_words_not_a_missing_image() {
        let answer = |message: &str| BollardError::DockerResponseServerError {
            status_code: 404,
            message: message.into(),
        };
        assert!(matches!(
            create_error("web:1", answer("No such image: web:1")),
            RuntimeError::ImageNotFound(i) if i == "web:1"
        ));
        let foreign = create_error(
            "web:1",
            answer("image with reference web:1 was found but does not match the specified platform: wanted linux/arm64, actual: linux/amd64"),
        );
        assert!(
            matches!(&foreign, RuntimeError::Engine { op: "create", message } if message.contains("wanted linux/arm64")),
            "{foreign:?}"
        );
    }

    #[test]
    fn a_pull_names_the_tag_or_digest_and_latest_when_none_is_given() {
        assert_eq!(pull_reference("busybox"), ("busybox", "latest"));
        assert_eq!(pull_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            pull_reference("127.0.0.1:5000/web"),
            ("127.0.0.1:5000/web", "latest")
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/team/web:2"),
            ("127.0.0.1:5000/team/web", "2")
        );
        assert_eq!(
            pull_reference("ghcr.io/a/b@sha256:0123"),
            ("ghcr.io/a/b", "sha256:0123")
        );
    }

    #[test]
    fn health_and_exit_codes_are_read_from_the_status_line() {
        use ContainerSummaryStateEnum as S;
        assert_eq!(
            parse_status(Some(S::RUNNING), "Up 3 minutes (healthy)"),
            (State::Running, Health::Healthy)
        );
        assert_eq!(
            parse_status(Some(S::RUNNING), "Up 2 seconds (health: starting)"),
            (State::Running, Health::Starting)
        );
        assert_eq!(
            parse_status(Some(S::RUNNING), "Up 1 hour (unhealthy)"),
            (State::Running, Health::Unhealthy)
        );
        assert_eq!(
            parse_status(Some(S::RUNNING), "Up 1 hour"),
            (State::Running, Health::None)
        );
        assert_eq!(
            parse_status(Some(S::EXITED), "Exited (137) 5 seconds ago").0,
            State::Exited { code: 137 }
        );
        assert_eq!(parse_status(Some(S::CREATED), "Created").0, State::Created);
    }
}
