//! `capstan`: the daemon (`serve`) and the client commands, in one binary. Thin: the work
//! is in `capstan-controller`; this file parses arguments and reports errors.

mod allocator;
mod build;
mod client;
mod config;
mod diff;
mod logs;
mod output;
mod project;
mod rollout;
mod run;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// jemalloc (or, for comparison, glibc's malloc as `CAPSTAN_ALLOCATOR` says): why, in
/// [`allocator`].
#[global_allocator]
static ALLOCATOR: allocator::Chosen = allocator::Chosen;

#[derive(Parser)]
#[command(
    name = "capstan",
    version,
    args_override_self = true,
    about = "Keeps a Docker host converged on declared Compose stacks"
)]
struct Cli {
    /// The capstan API to talk to (client commands): `unix:///PATH`, `http://` or `https://`.
    #[arg(
        long,
        global = true,
        env = "CAPSTAN_SERVER",
        default_value = "unix:///run/capstan/capstan.sock"
    )]
    server: String,
    /// Bearer token for a TCP server (`capstan token create`).
    #[arg(long, global = true, env = "CAPSTAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token (mode 0600 or stricter), if --token is not given.
    #[arg(long, global = true, env = "CAPSTAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for an https:// server, instead of the system's.
    #[arg(long, global = true, env = "CAPSTAN_CACERT")]
    cacert: Option<PathBuf>,
    /// PEM client certificate for a server that verifies them (serve --tls-client-ca).
    #[arg(
        long,
        global = true,
        env = "CAPSTAN_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's PEM key (mode 0600 or stricter).
    #[arg(
        long,
        global = true,
        env = "CAPSTAN_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Which Compose project `apply`, `diff`, `build` and `config` read, as `docker compose` finds it.
#[derive(clap::Args)]
struct ProjectArgs {
    /// Compose files, merged in order (`-`: standard input); without -f, compose.yaml (or
    /// compose.yml, docker-compose.yaml, docker-compose.yml) and its override file.
    #[arg(short = 'f', long = "file")]
    file: Vec<PathBuf>,
    /// Environment files for interpolation, instead of the project's `.env`.
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Profiles to enable (also COMPOSE_PROFILES, comma-separated).
    #[arg(long)]
    profile: Vec<String>,
    /// The project folder (default: the first file's folder).
    #[arg(long)]
    project_directory: Option<PathBuf>,
    /// Stack name; defaults to COMPOSE_PROJECT_NAME, the file's `name:`, else the
    /// project folder's name.
    #[arg(long)]
    stack: Option<String>,
}

impl From<ProjectArgs> for project::Options {
    fn from(a: ProjectArgs) -> Self {
        project::Options {
            files: a.file,
            env_files: a.env_file,
            profiles: a.profile,
            project_directory: a.project_directory,
            stack: a.stack,
        }
    }
}

/// What `capstan config` prints: the document, or one of Compose's lists.
#[derive(clap::Args)]
struct ConfigArgs {
    /// The document's format.
    #[arg(long, value_enum, default_value = "yaml")]
    format: config::Format,
    /// Only validate: print nothing, exit 0 when valid, 1 with every problem otherwise.
    #[arg(short, long, group = "list")]
    quiet: bool,
    /// Print the services in the stack (profiles applied), one per line.
    #[arg(long, group = "list")]
    services: bool,
    /// Print the named volumes, one per line.
    #[arg(long, group = "list")]
    volumes: bool,
    /// Print every profile the services name, one per line.
    #[arg(long, group = "list")]
    profiles: bool,
    /// Print each service's image, one per line (a built one: the tag its context gets).
    #[arg(long, group = "list")]
    images: bool,
}

impl From<ConfigArgs> for config::Show {
    fn from(a: ConfigArgs) -> Self {
        use config::Show;
        match a {
            ConfigArgs { quiet: true, .. } => Show::Quiet,
            ConfigArgs { services: true, .. } => Show::Services,
            ConfigArgs { volumes: true, .. } => Show::Volumes,
            ConfigArgs { profiles: true, .. } => Show::Profiles,
            ConfigArgs { images: true, .. } => Show::Images,
            ConfigArgs { format, .. } => Show::Document(format),
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "CAPSTAN_ETCD",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// PEM CA certificate(s) to check etcd's certificate against (`https://` endpoints).
    #[arg(long, env = "CAPSTAN_ETCD_CACERT")]
    etcd_cacert: Option<PathBuf>,
    /// PEM client certificate for etcd (with --etcd-key).
    #[arg(long, requires = "etcd_key", env = "CAPSTAN_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(long, requires = "etcd_cert", env = "CAPSTAN_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
    /// etcd user; its password comes from --etcd-password-file or CAPSTAN_ETCD_PASSWORD,
    /// never from a flag (other users could read it in `ps`).
    #[arg(long, env = "CAPSTAN_ETCD_USER")]
    etcd_user: Option<String>,
    /// A file holding the etcd user's password (refused unless 0600 or stricter).
    #[arg(long, requires = "etcd_user", env = "CAPSTAN_ETCD_PASSWORD_FILE")]
    etcd_password_file: Option<PathBuf>,
    /// The API's Unix socket (folder 0750 if created here, socket 0660); whoever may
    /// open it is an admin.
    #[arg(
        long,
        env = "CAPSTAN_SOCKET",
        default_value = "/run/capstan/capstan.sock"
    )]
    socket: PathBuf,
    /// The group owning the socket (name or gid): its members may call the API.
    #[arg(long, default_value = "root")]
    socket_group: String,
    /// Also serve the API on TCP; bearer tokens required, and TLS off loopback.
    #[arg(long, env = "CAPSTAN_LISTEN")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain for the TCP listener (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TCP listener (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): a client certificate they sign identifies its caller on the
    /// TLS listener, instead of a token (subject CN: the name; O: admin, deploy or read).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here without authentication (Prometheus).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// How long every listener waits for a request's headers once its first byte came
    /// (hidden: the default suits every client; tests shorten it).
    #[arg(long, hide = true, default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// How long every listener keeps a connection with no request in flight (hidden, as
    /// above).
    #[arg(long, hide = true, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Key prefix in etcd; installations with different prefixes share an etcd safely.
    #[arg(long, env = "CAPSTAN_PREFIX", default_value = "/capstan")]
    prefix: String,
    /// How often every service is reconciled without a trigger.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Services reconciled at once.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Replica operations (create+start, stop+remove, restart) in flight on the engine
    /// (Compose's default limit is 64 too).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    engine_parallelism: u16,
    /// Also write Traefik's etcd KV layout under this root (e.g. `traefik`).
    #[arg(long)]
    traefik_etcd_root: Option<String>,
    /// This daemon's identity in the leader election; unique among the daemons sharing
    /// an etcd prefix. Default: `<hostname>:<socket path>`.
    #[arg(long, env = "CAPSTAN_ID")]
    id: Option<String>,
    /// Earlier revisions each service keeps for `rollout history` and `rollout undo`
    /// (a Deployment's revisionHistoryLimit).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    revision_history_limit: u16,
    /// The leader lease's time to live: a dead leader is replaced within it (2s..5m).
    #[arg(long, default_value = "10s", value_parser = parse_lease_ttl)]
    lease_ttl: Duration,
    /// Log format: human-readable text, or JSON for collectors. Filter with RUST_LOG.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Also append every audit record (each API request that asked for a change: who, what,
    /// the answer) to this file, one JSON object per line, whatever RUST_LOG says.
    #[arg(long, env = "CAPSTAN_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// What stacks may do to the host (privileged, host network, binds, ports, ...), per
    /// caller: profiles `privileged` (Docker's own semantics), `baseline` (no privileged,
    /// host namespaces, Docker socket or `/`; any host port) and `restricted` (also no
    /// binds, a non-root user). Without a file, socket callers who are root or in the
    /// engine socket's group get `privileged`; other socket callers, tokens and client
    /// certificates get `baseline`. The YAML file sets `socket:`, `socket_others:`,
    /// `roles: {deploy: ...}` and tunes or adds `profiles:`; rules at its top level tune
    /// `baseline` (README "Policy"; `token create --policy` sets one token's).
    #[arg(long, env = "CAPSTAN_POLICY")]
    policy: Option<PathBuf>,
    /// The largest build context `POST /v1/builds` accepts (bytes, or with k/m/g: powers
    /// of 1024, as Compose sizes); a larger one is refused with 413.
    #[arg(long, default_value = "256m", value_parser = parse_size)]
    max_build_context: u64,
    /// Registry credentials for pulls, in the Docker config format (`{"auths": {HOST:
    /// {"auth": base64(USER:PASS)}}}`), over the operator's own Docker config
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    #[arg(long, env = "CAPSTAN_REGISTRY_AUTH")]
    registry_auth: Option<PathBuf>,
    /// Where secrets and configs are written for the replicas (folders 0700). Default:
    /// /var/lib/capstan as root, else `$XDG_DATA_HOME/capstan` (~/.local/share/capstan).
    #[arg(long, env = "CAPSTAN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The keys sealing secret values in etcd: one base64 256-bit key a line, the first
    /// seals; created 0600 when absent, refused when group or others may read it.
    /// Default: `<state-dir>/encryption.key`.
    #[arg(long, env = "CAPSTAN_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is shown once (only its SHA-256 is stored).
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "read")]
        role: RoleArg,
        /// The policy profile its applies are checked under (`privileged`, `baseline`,
        /// `restricted`, or one of the daemon's policy file); default: its role's, from
        /// the file's `roles:` (`baseline` unless it says otherwise).
        #[arg(long)]
        policy: Option<String>,
    },
    /// List tokens: names, roles, creation times.
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// GETs: stacks, services, endpoints, metrics.
    Read,
    /// Also apply, scale and delete stacks.
    Deploy,
    /// Also tokens.
    Admin,
}

impl From<RoleArg> for capstan_api::token::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Read => Self::Read,
            RoleArg::Deploy => Self::Deploy,
            RoleArg::Admin => Self::Admin,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Stacks,
    Services,
    /// Which daemon holds the leader lease, and what the one asked is.
    Leader,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: store in etcd, reconcile against the local Docker engine, serve the API.
    Serve(Box<ServeArgs>),
    /// Print the API's OpenAPI 3.1 document (what `GET /openapi.json` serves), without a
    /// daemon: `make openapi` writes it to docs/openapi.json.
    Openapi,
    /// API tokens for the TCP listener (admin; over the Unix socket as its owner or group).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Declare a stack from a Compose project: what the files no longer name is removed.
    /// Interpolation, `.env`, overrides, `extends`, `include`, profiles and `env_file` are
    /// resolved here, as Compose does; the server stores the resolved document.
    Apply {
        #[command(flatten)]
        project: ProjectArgs,
        /// Validate on the server and show what would change, without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Wait until every service is converged, showing progress.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print the project resolved exactly as `apply` would send it (as `docker compose
    /// config`): interpolated, merged, profiles applied, relative paths absolute. Checks it
    /// as the server would, without a daemon: exit 1 with every problem.
    Config {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        show: ConfigArgs,
    },
    /// Build the images of the project's services that have `build:` (all, or those named),
    /// without applying anything; an image the engine already has is not built again.
    Build {
        #[command(flatten)]
        project: ProjectArgs,
        services: Vec<String>,
    },
    /// Show what `apply` would change, field by field per service, against what is stored.
    /// Exit code: 0 no changes, 1 changes, 2 an error.
    Diff {
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// List stacks or services.
    Get {
        #[arg(value_enum)]
        kind: Kind,
        #[arg(long)]
        stack: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Show one service: spec, conditions and replicas.
    Describe {
        /// STACK/SERVICE
        target: String,
    },
    /// Manage a service's rollout.
    Rollout {
        #[command(subcommand)]
        action: RolloutCommand,
    },
    /// Set a service's replica count: STACK/SERVICE=N.
    Scale { target: String },
    /// Run a one-off container from a service's spec, as `docker compose run`: on its
    /// networks, with its environment, volumes and secrets, no published port; removed
    /// afterwards. Exits with the container's exit code.
    Run {
        /// STACK/SERVICE
        target: String,
        /// An environment variable added to the service's (KEY=VALUE); repeatable.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// The command, instead of the service's (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Show the output of a stack's replicas (or one service's), each line prefixed
    /// `service-n |`; read through the daemon, so it works against a remote --server.
    Logs {
        /// STACK or STACK/SERVICE
        target: String,
        /// Keep streaming new output, and that of replicas that start later.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only output since a duration ago (10m) or a time (RFC 3339, or Unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Only the last N lines of each replica (`all` for everything).
        #[arg(short = 'n', long)]
        tail: Option<String>,
        /// Show the engine's timestamp before each line.
        #[arg(short = 't', long)]
        timestamps: bool,
    },
    /// Delete a stack: its containers and networks (and named volumes with --volumes).
    Delete {
        stack: String,
        #[arg(long)]
        volumes: bool,
        /// Return once the deletion is recorded, without waiting for the teardown.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Go back to an earlier revision's spec (the replica count stays): STACK/SERVICE.
    Undo {
        target: String,
        /// The revision to go back to (`rollout history` lists them); the previous one
        /// when not given.
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Follow the rollout until it is done: exit 0 when every replica is updated and ready,
    /// 1 when it was rolled back, paused, or not done within --timeout.
    Status {
        target: String,
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// The service's revisions, oldest first, the current one last: STACK/SERVICE.
    History { target: String },
    /// Replace no more outdated replicas until `resume` (scaling and healing go on).
    Pause { target: String },
    /// Continue a paused rollout.
    Resume { target: String },
    /// Replace every replica with the same spec, as its update_config says.
    Restart { target: String },
}

/// The daemon's log on stderr, filtered by RUST_LOG; and the audit records, also in
/// `audit_log` when one is given.
fn init_logging(format: LogFormat, audit_log: Option<std::fs::File>) {
    use tracing_subscriber::{filter::Targets, fmt, prelude::*, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = match format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => (fmt::layer().json().flatten_event(true))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let audit = audit_log.map(|file| {
        let records = Targets::new().with_target("capstan::audit", tracing::Level::INFO);
        (fmt::layer().json().flatten_event(true))
            .with_writer(std::sync::Mutex::new(file))
            .with_filter(records)
    });
    tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(audit)
        .init();
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = allocator::start() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            // Its words may quote what the server holds: shown, never obeyed.
            eprintln!("error: {}", output::safe_lines(&format!("{e:#}")));
            1
        }
    };
    std::process::exit(code);
}

/// `capstan serve`: the daemon, until SIGINT or SIGTERM.
async fn serve(config: capstan_controller::daemon::Config) -> anyhow::Result<i32> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received");
        let _ = tx.send(true);
    });
    capstan_controller::daemon::serve(config, rx)
        .await
        .context("capstan serve")?;
    Ok(0)
}

fn serve_config(a: ServeArgs) -> anyhow::Result<capstan_controller::daemon::Config> {
    let audit_log = (a.audit_log.as_deref())
        .map(|path| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path);
            file.with_context(|| format!("--audit-log {}", path.display()))
        })
        .transpose()?;
    init_logging(a.log_format, audit_log);
    let etcd = etcd_access(&a)?;
    let state_dir = a.state_dir.unwrap_or_else(default_state_dir);
    Ok(capstan_controller::daemon::Config {
        encryption_key_file: (a.encryption_key_file)
            .unwrap_or_else(|| state_dir.join("encryption.key")),
        state_dir,
        policy: load_policy(a.policy.as_deref())?,
        identity: (a.id).unwrap_or_else(|| format!("{}:{}", hostname(), a.socket.display())),
        lease_ttl: a.lease_ttl,
        etcd,
        socket: a.socket,
        socket_group: a.socket_group,
        listen: a.listen,
        tls: a.tls_cert.zip(a.tls_key),
        tls_client_ca: a.tls_client_ca,
        metrics_listen: a.metrics_listen,
        timeouts: capstan_controller::listen::Timeouts {
            header_read: a.header_read_timeout,
            idle: a.idle_timeout,
        },
        prefix: a.prefix,
        resync: a.resync,
        workers: a.workers,
        engine_parallelism: a.engine_parallelism.into(),
        traefik_root: a.traefik_etcd_root,
        revision_history_limit: a.revision_history_limit.into(),
        max_build_context: a.max_build_context,
        registry_auth: capstan_controller::runtime::registry::RegistryAuth::load(
            a.registry_auth.as_deref(),
        )?,
    })
}

/// TLS files and the user for etcd, read now so that a mistake stops `serve` at once.
fn etcd_access(a: &ServeArgs) -> anyhow::Result<capstan_controller::store::etcd::EtcdAccess> {
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()))
    };
    if a.etcd.iter().any(|e| e.starts_with("https://")) && a.etcd_cacert.is_none() {
        anyhow::bail!("--etcd names an https:// endpoint: give etcd's CA with --etcd-cacert");
    }
    let password = match (&a.etcd_user, &a.etcd_password_file) {
        (None, _) => None,
        (Some(_), Some(file)) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file)
                .with_context(|| format!("reading --etcd-password-file {}", file.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "--etcd-password-file {}: mode {:o} lets its group or others read it; `chmod 600` it",
                    file.display(),
                    mode & 0o777
                );
            }
            let text = String::from_utf8(read(file, "--etcd-password-file")?)
                .context("the etcd password file is not UTF-8")?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (Some(user), None) => Some(std::env::var("CAPSTAN_ETCD_PASSWORD").with_context(|| {
            format!("--etcd-user {user} needs a password: --etcd-password-file or CAPSTAN_ETCD_PASSWORD")
        })?),
    };
    Ok(capstan_controller::store::etcd::EtcdAccess {
        endpoints: a.etcd.clone(),
        ca: a
            .etcd_cacert
            .as_ref()
            .map(|p| read(p, "--etcd-cacert"))
            .transpose()?,
        identity: match (&a.etcd_cert, &a.etcd_key) {
            (Some(c), Some(k)) => Some((read(c, "--etcd-cert")?, read(k, "--etcd-key")?)),
            _ => None,
        },
        user: a.etcd_user.clone().zip(password),
    })
}

/// `/var/lib/capstan` as root, else the user's data folder.
fn default_state_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return PathBuf::from("/var/lib/capstan");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    data.join("capstan")
}

/// `capstan token create|list|revoke`.
async fn token(api: &client::Client, action: TokenCommand) -> anyhow::Result<i32> {
    match action {
        TokenCommand::Create { name, role, policy } => {
            let created = api.create_token(&name, role.into(), policy).await?;
            let profile = (created.policy.as_deref()).unwrap_or("of its role");
            eprintln!(
                "token {} (role {}, policy profile {profile}) created; it is shown only now:",
                created.name,
                created.role.name()
            );
            println!("{}", created.token);
        }
        TokenCommand::List => {
            println!("{:<24} {:<8} {:<12} CREATED", "NAME", "ROLE", "POLICY");
            for t in api.tokens().await? {
                let at = std::time::UNIX_EPOCH + Duration::from_secs(t.created);
                let at = humantime::format_rfc3339_seconds(at);
                let policy = t.policy.as_deref().unwrap_or("(role's)");
                println!("{:<24} {:<8} {policy:<12} {at}", t.name, t.role.name());
            }
        }
        TokenCommand::Revoke { name } => {
            api.revoke_token(&name).await?;
            println!("token {name} revoked");
        }
    }
    Ok(0)
}

/// `capstan scale STACK/SERVICE=N`.
async fn scale(api: &client::Client, target: &str) -> anyhow::Result<i32> {
    let (target, n) = target
        .split_once('=')
        .context("expected STACK/SERVICE=N, e.g. shop/web=5")?;
    let replicas: u32 = n
        .parse()
        .with_context(|| format!("replica count {n:?} is not a whole number"))?;
    let (stack, service) = client::split_target(target)?;
    let view = api.scale(stack, service, replicas).await?;
    println!(
        "{}/{} scaled to {} (generation {})",
        view.stack, view.name, view.replicas, view.generation
    );
    Ok(0)
}

/// etcd grants leases of 2 s at least; past minutes a dead leader is replaced too late to
/// matter.
fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&d) || d.subsec_nanos() != 0 {
        return Err(format!("{s}: a whole number of seconds from 2s to 5m"));
    }
    Ok(d)
}

/// `--max-build-context`: a size as Compose writes sizes (`256m`, `1g`, bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 10),
        Some((i, 'm')) => (&t[..i], 20),
        Some((i, 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size: bytes, or a number with k, m or g"))
}

/// The policy file given to `serve`, or the default profiles.
fn load_policy(path: Option<&std::path::Path>) -> anyhow::Result<capstan_api::policy::Profiles> {
    let Some(path) = path else {
        return Ok(capstan_api::policy::Profiles::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    capstan_api::policy::Profiles::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("policy file {}: {e}", path.display()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// `capstan get stacks|services|leader`.
async fn get(
    api: &client::Client,
    kind: Kind,
    stack: Option<&str>,
    output: Format,
) -> anyhow::Result<i32> {
    match kind {
        Kind::Stacks => output::stacks(&api.stacks().await?, output)?,
        Kind::Services => output::services(&api.services(stack).await?, output)?,
        Kind::Leader => output::leader(&api.leader().await?, output)?,
    }
    Ok(0)
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let creds = client::Credentials {
        token: cli.token,
        token_file: cli.token_file,
        cacert: cli.cacert,
        client_cert: cli.client_cert,
        client_key: cli.client_key,
    };
    match cli.command {
        Command::Serve(args) => return serve(serve_config(*args)?).await,
        Command::Openapi => {
            print!("{}", capstan_controller::server::openapi_json());
            return Ok(0);
        }
        // A local command: it must work with no server reachable.
        Command::Config { project, show } => return config::run(&project.into(), show.into()),
        _ => {}
    }
    let api = client::Client::new(&cli.server, &creds)?;
    match cli.command {
        Command::Serve(_) | Command::Openapi | Command::Config { .. } => {
            unreachable!("answered above")
        }
        Command::Token { action } => token(&api, action).await,
        Command::Apply {
            project,
            dry_run,
            wait,
            timeout,
        } => client::apply(&api, &project.into(), dry_run, wait, timeout).await,
        Command::Build { project, services } => build::run(&api, &project.into(), &services).await,
        Command::Diff { project } => Ok(diff::run(&api, &project.into()).await),
        Command::Get {
            kind,
            stack,
            output,
        } => get(&api, kind, stack.as_deref(), output).await,
        Command::Describe { target } => {
            let (stack, service) = client::split_target(&target)?;
            let view = api.service(stack, service).await?;
            output::describe(&view);
            Ok(0)
        }
        Command::Scale { target } => scale(&api, &target).await,
        Command::Run {
            target,
            env,
            command,
        } => {
            let req = capstan_api::run::RunRequest {
                command: (!command.is_empty()).then_some(command),
                env,
            };
            run::run(&api, &target, &req).await
        }
        Command::Rollout { action } => rollout::run(&api, action).await,
        Command::Logs {
            target,
            follow,
            since,
            tail,
            timestamps,
        } => {
            let req = logs::Request {
                target,
                follow,
                since,
                tail,
                timestamps,
            };
            logs::run(&api, &req).await
        }
        Command::Delete {
            stack,
            volumes,
            no_wait,
            timeout,
        } => client::delete(&api, &stack, volumes, !no_wait, timeout).await,
    }
}
