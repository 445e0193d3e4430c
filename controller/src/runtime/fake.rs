//! An in-memory [`Runtime`] that behaves like the engine, for in-process tests and scale
//! simulations.
//!
//! Like Docker it keeps containers (capstan's, and foreign ones that only hold a name),
//! networks and volumes; lists by label; refuses a taken name; refuses to remove a network
//! with attached containers or a volume in use; and streams container events (`create`,
//! `start`, `die`, `destroy`, `health_status: ...`, `oom`) labelled with the container's
//! stack and service. By default a started container runs and is ready at once; a container
//! with a healthcheck starts `starting`, and tests move it on ([`FakeRuntime::set_health`]).
//!
//! Tests play the person at the keyboard and the kernel: [`FakeRuntime::exit`],
//! [`FakeRuntime::set_health`], [`FakeRuntime::remove_behind_back`],
//! [`FakeRuntime::add_foreign`], [`FakeRuntime::oom_kill`]; give containers a behaviour
//! ([`FakeRuntime::on_start`]: exit after a while, turn healthy after a while); inject
//! failures ([`FakeRuntime::fail`]); and read back every call made ([`FakeRuntime::calls`],
//! [`FakeRuntime::records`] with the time of each call).

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::*;
use capstan_api::names;

/// One call made to the engine, naming what it was about: the container's name (not its ID),
/// the network's or volume's name, or the stack listed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    List {
        stack: Option<String>,
        service: Option<String>,
    },
    Create {
        name: String,
    },
    Start {
        name: String,
    },
    Restart {
        name: String,
    },
    Inspect {
        name: String,
    },
    Remove {
        name: String,
    },
    /// A rename (the container's name before it).
    Rename {
        name: String,
    },
    EnsureNetwork {
        name: String,
    },
    EnsureVolume {
        name: String,
    },
    StackNetworks {
        stack: String,
    },
    StackVolumes {
        stack: String,
    },
    RemoveNetwork {
        name: String,
    },
    RemoveVolume {
        name: String,
    },
    /// Whether the engine has an image (the image's name).
    InspectImage {
        name: String,
    },
    /// A pull of an image (the image's name).
    Pull {
        name: String,
    },
    /// A hook run in a container: its name, and the command joined by spaces.
    Exec {
        name: String,
        command: String,
    },
}

/// The kind of a [`Call`], to aim a failure at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    List,
    Create,
    Start,
    Restart,
    Inspect,
    Remove,
    Rename,
    EnsureNetwork,
    EnsureVolume,
    StackNetworks,
    StackVolumes,
    RemoveNetwork,
    RemoveVolume,
    InspectImage,
    Pull,
    Exec,
}

impl Call {
    pub fn op(&self) -> Op {
        match self {
            Call::List { .. } => Op::List,
            Call::Create { .. } => Op::Create,
            Call::Start { .. } => Op::Start,
            Call::Restart { .. } => Op::Restart,
            Call::Inspect { .. } => Op::Inspect,
            Call::Remove { .. } => Op::Remove,
            Call::Rename { .. } => Op::Rename,
            Call::EnsureNetwork { .. } => Op::EnsureNetwork,
            Call::EnsureVolume { .. } => Op::EnsureVolume,
            Call::StackNetworks { .. } => Op::StackNetworks,
            Call::StackVolumes { .. } => Op::StackVolumes,
            Call::RemoveNetwork { .. } => Op::RemoveNetwork,
            Call::RemoveVolume { .. } => Op::RemoveVolume,
            Call::InspectImage { .. } => Op::InspectImage,
            Call::Pull { .. } => Op::Pull,
            Call::Exec { .. } => Op::Exec,
        }
    }

    /// The container, network or volume name (or listed stack, `*` for all) it was about.
    pub fn target(&self) -> &str {
        match self {
            Call::List { stack, .. } => stack.as_deref().unwrap_or("*"),
            Call::StackNetworks { stack } | Call::StackVolumes { stack } => stack,
            Call::Create { name }
            | Call::Start { name }
            | Call::Restart { name }
            | Call::Inspect { name }
            | Call::Remove { name }
            | Call::Rename { name }
            | Call::EnsureNetwork { name }
            | Call::EnsureVolume { name }
            | Call::RemoveNetwork { name }
            | Call::RemoveVolume { name }
            | Call::InspectImage { name }
            | Call::Pull { name }
            | Call::Exec { name, .. } => name,
        }
    }

    /// Whether the call is one that changes the world: creates, starts, restarts,
    /// removals and pulls. Lists, inspects and lookups are not, and neither are `ensure_*`, which the
    /// daemon makes on every stack reconcile and which only create what is missing (see
    /// [`FakeRuntime::networks`]).
    pub fn mutates(&self) -> bool {
        matches!(
            self.op(),
            Op::Create
                | Op::Start
                | Op::Restart
                | Op::Remove
                | Op::Rename
                | Op::RemoveNetwork
                | Op::RemoveVolume
                | Op::Pull
                | Op::Exec
        )
    }
}

/// A call with when it was made (tokio's clock, so paused time tells exact times) and
/// whether it succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub at: Instant,
    pub call: Call,
    pub ok: bool,
}

/// How many times an injected failure fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    Once,
    N(u32),
    Always,
}

/// What a container does once started: its command, as far as the engine can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStart {
    /// The process exits with `code` after running for `after` (a job, or a crash).
    Exit { after: Duration, code: i64 },
    /// The healthcheck passes `after` the start.
    Healthy { after: Duration },
    /// The healthcheck fails `after` the start.
    Unhealthy { after: Duration },
}

/// Whether `pattern` names `name`: `*` is anything, a trailing `*` a prefix, else exact.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn clone_err(e: &RuntimeError) -> RuntimeError {
    match e {
        RuntimeError::NameConflict { name, id } => RuntimeError::NameConflict {
            name: name.clone(),
            id: id.clone(),
        },
        RuntimeError::ImageNotFound(i) => RuntimeError::ImageNotFound(i.clone()),
        RuntimeError::ExternalMissing { kind, name } => RuntimeError::ExternalMissing {
            kind,
            name: name.clone(),
        },
        RuntimeError::BindRefused { path, reason } => RuntimeError::BindRefused {
            path: path.clone(),
            reason: reason.clone(),
        },
        RuntimeError::NotOwned { kind, name, owner } => RuntimeError::NotOwned {
            kind,
            name: name.clone(),
            owner: owner.clone(),
        },
        RuntimeError::Engine { op, message } => RuntimeError::Engine {
            op,
            message: message.clone(),
        },
        RuntimeError::TooOld { what, needs, has } => RuntimeError::TooOld {
            what: what.clone(),
            needs,
            has: has.clone(),
        },
        RuntimeError::Fenced { op } => RuntimeError::Fenced { op },
        RuntimeError::Pull { image, message } => RuntimeError::Pull {
            image: image.clone(),
            message: message.clone(),
        },
        RuntimeError::Hook {
            hook,
            index,
            command,
            outcome,
        } => RuntimeError::Hook {
            hook: *hook,
            index: *index,
            command: command.clone(),
            outcome: *outcome,
        },
    }
}

fn no_such(op: &'static str, what: &str) -> RuntimeError {
    RuntimeError::Engine {
        op,
        message: format!("Error response from daemon: No such container: {what}"),
    }
}

struct Fault {
    op: Op,
    pattern: String,
    err: RuntimeError,
    left: Option<u32>,
}

struct Container {
    obs: Observed,
    /// No capstan labels: never listed, never in events.
    foreign: bool,
    image: String,
    healthcheck: bool,
    networks: Vec<String>,
    volumes: Vec<String>,
    detail: Detail,
    /// Counts starts, so a behaviour scheduled for an earlier run does not hit a later one.
    starts: u64,
    /// A `capstan run` container (it carries [`names::ONEOFF_STACK`]).
    oneoff: bool,
    /// The container whose network namespace this one joins (`container:ID`).
    join: Option<String>,
    /// The containers whose volumes it mounts (`ID[:ro]`).
    volumes_from: Vec<String>,
    /// The options it was made with (namespaces, resources, ...), as the engine keeps them.
    options: capstan_api::spec::ContainerOptions,
}

struct Resource {
    labels: BTreeMap<String, String>,
}

/// How many past events a new event stream can replay from `since`.
const EVENT_HISTORY: usize = 4096;

#[derive(Default)]
struct Inner {
    next_id: u64,
    containers: HashMap<String, Container>,
    /// (stack, service) → container IDs: the label filter the engine applies.
    by_service: HashMap<(String, String), Vec<String>>,
    /// Name → ID, of every container, foreign ones included.
    names: HashMap<String, String>,
    networks: BTreeMap<String, Resource>,
    volumes: BTreeMap<String, Resource>,
    log: Vec<Record>,
    faults: Vec<Fault>,
    /// The engine is gone: every call and ping fails (`set_down`).
    down: bool,
    behaviours: Vec<(String, OnStart)>,
    /// Exit codes of hooks run in the containers a pattern names (`on_exec`); else 0.
    exec_codes: Vec<(String, i64)>,
    missing_images: Vec<String>,
    /// Images a pull finds in "the registry" (anything else: `manifest unknown`).
    registry: Vec<String>,
    /// How long a pull takes.
    pull_time: Duration,
    history: VecDeque<ContainerEvent>,
    last_event_nano: i64,
    /// Calls made at the same instant: (that instant, how many).
    burst: Option<(Instant, u64)>,
}

/// Calls at one instant of tokio's clock after which the fake gives up: under paused time a
/// daemon in a hot loop never lets the clock move, so a test would hang instead of failing.
const HOT_LOOP_CALLS: u64 = 20_000;

struct Shared {
    state: Mutex<Inner>,
    events: broadcast::Sender<ContainerEvent>,
    /// Event times: wall-clock nanoseconds at `t0`, advanced by tokio's clock.
    epoch_nano: i64,
    t0: Instant,
}

pub struct FakeRuntime {
    shared: Arc<Shared>,
    /// Every call made, for "how many engine calls" measurements.
    pub calls: AtomicU64,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        let epoch_nano = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        FakeRuntime {
            shared: Arc::new(Shared {
                state: Mutex::new(Inner::default()),
                events: broadcast::channel(EVENT_HISTORY).0,
                epoch_nano,
                t0: Instant::now(),
            }),
            calls: AtomicU64::new(0),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_nano(&self, st: &mut Inner) -> i64 {
        let t = self.epoch_nano + Instant::now().duration_since(self.t0).as_nanos() as i64;
        st.last_event_nano = t.max(st.last_event_nano + 1);
        st.last_event_nano
    }

    /// Emits `action` for the container `id` (capstan's only: the engine's filter is the
    /// `capstan.stack` label).
    fn emit(&self, st: &mut Inner, id: &str, action: &str) {
        let Some(c) = st.containers.get(id) else {
            return;
        };
        if c.foreign {
            return;
        }
        let (stack, service) = (c.obs.stack.clone(), c.obs.service.clone());
        let ev = ContainerEvent {
            stack,
            service,
            action: action.to_string(),
            time_nano: self.now_nano(st),
        };
        if st.history.len() == EVENT_HISTORY {
            st.history.pop_front();
        }
        st.history.push_back(ev.clone());
        let _ = self.events.send(ev);
    }

    /// Marks a running container as exited, as its process ending does.
    fn exit(&self, st: &mut Inner, id: &str, code: i64) {
        let Some(c) = st.containers.get_mut(id) else {
            return;
        };
        if c.obs.state != State::Running {
            return;
        }
        c.obs.state = State::Exited { code };
        c.obs.health = Health::None;
        self.emit(st, id, "die");
    }

    fn set_health(&self, st: &mut Inner, id: &str, health: Health) {
        let Some(c) = st.containers.get_mut(id) else {
            return;
        };
        if c.obs.state != State::Running || c.obs.health == health {
            return;
        }
        c.obs.health = health;
        match health {
            Health::Healthy => self.emit(st, id, "health_status: healthy"),
            Health::Unhealthy => self.emit(st, id, "health_status: unhealthy"),
            Health::None | Health::Starting => {}
        }
    }

    /// Removes a container as `docker rm -f` does: it dies if it ran, then is destroyed.
    fn destroy(&self, st: &mut Inner, id: &str) {
        let Some(c) = st.containers.get(id) else {
            return;
        };
        if c.obs.state == State::Running {
            self.emit(st, id, "kill");
            self.emit(st, id, "die");
        }
        self.emit(st, id, "destroy");
        let c = st.containers.remove(id).expect("checked above");
        st.names.remove(&c.obs.name);
        if let Some(ids) = st
            .by_service
            .get_mut(&(c.obs.stack.clone(), c.obs.service.clone()))
        {
            ids.retain(|i| i != id);
        }
    }

    /// Starts a container's process: running, health as its healthcheck starts, and the
    /// behaviours of its command scheduled.
    fn run(self: &Arc<Self>, st: &mut Inner, id: &str) {
        let at = self.now_nano(st);
        let Some(c) = st.containers.get_mut(id) else {
            return;
        };
        c.detail.started_at = Some(at);
        c.obs.state = State::Running;
        c.obs.health = if c.healthcheck {
            Health::Starting
        } else {
            Health::None
        };
        c.detail.oom_killed = false;
        c.starts += 1;
        let (name, starts) = (c.obs.name.clone(), c.starts);
        self.emit(st, id, "start");
        // The behaviours of the pattern set last that names this container (by name or ID):
        // a behaviour set for one container overrides one set for its whole service.
        let pattern = st
            .behaviours
            .iter()
            .rev()
            .find(|(p, _)| matches(p, &name) || matches(p, id))
            .map(|(p, _)| p.clone());
        let behaviours: Vec<OnStart> = st
            .behaviours
            .iter()
            .filter(|(p, _)| Some(p) == pattern.as_ref())
            .map(|(_, b)| *b)
            .collect();
        for b in behaviours {
            let after = match b {
                OnStart::Exit { after, .. }
                | OnStart::Healthy { after }
                | OnStart::Unhealthy { after } => after,
            };
            let shared = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let mut st = shared.lock();
                if st.containers.get(&id).is_none_or(|c| c.starts != starts) {
                    return;
                }
                match b {
                    OnStart::Exit { code, .. } => shared.exit(&mut st, &id, code),
                    OnStart::Healthy { .. } => shared.set_health(&mut st, &id, Health::Healthy),
                    OnStart::Unhealthy { .. } => shared.set_health(&mut st, &id, Health::Unhealthy),
                }
            });
        }
    }
}

impl FakeRuntime {
    /// Logs a call and returns the failure injected for it, if any.
    fn call(&self, call: Call) -> Result<(), RuntimeError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut st = self.shared.lock();
        let now = Instant::now();
        let burst = match st.burst {
            Some((at, n)) if at == now => n + 1,
            _ => 1,
        };
        st.burst = Some((now, burst));
        if burst == HOT_LOOP_CALLS {
            let last: Vec<&Call> = st.log.iter().rev().take(12).map(|r| &r.call).collect();
            // Straight to stderr: the test harness captures eprintln!, and loses it on abort.
            let _ = writeln!(
                std::io::stderr(),
                "fake engine: {HOT_LOOP_CALLS} calls without the clock moving: the daemon is in a hot loop and a test under paused time would hang; the last calls: {last:#?}"
            );
            std::process::abort();
        }
        let (op, target) = (call.op(), call.target().to_string());
        let mut err = st.down.then(|| RuntimeError::Engine {
            op: "request",
            message: "Cannot connect to the Docker daemon at unix:///var/run/docker.sock".into(),
        });
        if let Some(i) = st
            .faults
            .iter()
            .position(|f| f.op == op && matches(&f.pattern, &target))
            .filter(|_| err.is_none())
        {
            let f = &mut st.faults[i];
            err = Some(clone_err(&f.err));
            if let Some(left) = &mut f.left {
                *left -= 1;
                if *left == 0 {
                    st.faults.remove(i);
                }
            }
        }
        st.log.push(Record {
            at: Instant::now(),
            call,
            ok: err.is_none(),
        });
        err.map_or(Ok(()), Err)
    }

    /// The name of the container `id`, or the ID itself if there is none.
    fn name_of(&self, id: &str) -> String {
        self.shared
            .lock()
            .containers
            .get(id)
            .map_or_else(|| id.to_string(), |c| c.obs.name.clone())
    }

    /// Marks the call just logged as failed (it failed past the injection point).
    fn failed<T>(&self, e: RuntimeError) -> Result<T, RuntimeError> {
        if let Some(r) = self.shared.lock().log.last_mut() {
            r.ok = false;
        }
        Err(e)
    }

    fn id_of(&self, name: &str) -> String {
        self.shared
            .lock()
            .names
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("the fake engine has no container named {name}"))
    }

    // ---- what tests read ----

    /// How many containers exist (foreign ones included).
    pub fn len(&self) -> usize {
        self.shared.lock().containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .lock()
            .log
            .iter()
            .map(|r| r.call.clone())
            .collect()
    }

    /// Every call made so far, with its time and outcome.
    pub fn records(&self) -> Vec<Record> {
        self.shared.lock().log.clone()
    }

    /// How many calls so far satisfy `pred`: `count(|c| matches!(c, Call::Create { .. }))`.
    pub fn count(&self, pred: impl Fn(&Call) -> bool) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| pred(&r.call))
            .count()
    }

    /// Forgets the calls made so far (the counter in `calls` keeps counting).
    pub fn clear_calls(&self) {
        self.shared.lock().log.clear();
    }

    /// Every container, as `docker ps -a` would show it, sorted by name. Foreign containers
    /// have an empty stack.
    pub fn containers(&self) -> Vec<Observed> {
        let st = self.shared.lock();
        let mut all: Vec<Observed> = st.containers.values().map(|c| c.obs.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<Observed> {
        let st = self.shared.lock();
        let id = st.names.get(name)?;
        st.containers.get(id).map(|c| c.obs.clone())
    }

    /// The container whose network namespace the container named `name` joined
    /// (`container:ID`), by the name it has now.
    pub fn joined(&self, name: &str) -> Option<String> {
        let st = self.shared.lock();
        let joined = st.containers.get(st.names.get(name)?)?.join.as_ref()?;
        st.containers.get(joined).map(|c| c.obs.name.clone())
    }

    /// The `volumes_from` entries the container named `name` was made with.
    pub fn volumes_from(&self, name: &str) -> Vec<String> {
        let st = self.shared.lock();
        let c = st.names.get(name).and_then(|id| st.containers.get(id));
        c.map(|c| c.volumes_from.clone()).unwrap_or_default()
    }

    /// The options the container named `name` was made with, as `docker inspect` shows
    /// them in its host config (`ipc`/`pid: service:` already resolved to a container).
    pub fn options_of(&self, name: &str) -> Option<capstan_api::spec::ContainerOptions> {
        let st = self.shared.lock();
        let id = st.names.get(name)?;
        st.containers.get(id).map(|c| c.options.clone())
    }

    /// The hooks run in the container named `name` (by the name it had then), in order.
    pub fn execs(&self, name: &str) -> Vec<String> {
        (self.shared.lock().log.iter())
            .filter_map(|r| match &r.call {
                Call::Exec { name: n, command } if n == name && r.ok => Some(command.clone()),
                _ => None,
            })
            .collect()
    }

    /// Hooks run in containers `pattern` names exit with `code` from now on.
    pub fn on_exec(&self, pattern: &str, code: i64) {
        (self.shared.lock().exec_codes).push((pattern.to_string(), code));
    }

    /// The image the container named `name` was created from.
    pub fn image_of(&self, name: &str) -> Option<String> {
        let st = self.shared.lock();
        let id = st.names.get(name)?;
        st.containers.get(id).map(|c| c.image.clone())
    }

    /// Every network, sorted.
    pub fn networks(&self) -> Vec<String> {
        self.shared.lock().networks.keys().cloned().collect()
    }

    /// Every volume, sorted.
    pub fn volumes(&self) -> Vec<String> {
        self.shared.lock().volumes.keys().cloned().collect()
    }

    // ---- what a person or the kernel does ----

    /// The container's process exits with `code` (`die`).
    pub fn exit(&self, name: &str, code: i64) {
        let id = self.id_of(name);
        let mut st = self.shared.lock();
        self.shared.exit(&mut st, &id, code);
    }

    /// Its healthcheck changes verdict (`health_status: healthy|unhealthy`).
    pub fn set_health(&self, name: &str, health: Health) {
        let id = self.id_of(name);
        let mut st = self.shared.lock();
        self.shared.set_health(&mut st, &id, health);
    }

    /// What the last health check printed, for inspect.
    pub fn set_health_output(&self, name: &str, output: &str) {
        let id = self.id_of(name);
        if let Some(c) = self.shared.lock().containers.get_mut(&id) {
            c.detail.health_output = Some(output.to_string());
        }
    }

    /// Flags the container as killed for memory, for inspect (see [`Self::oom_kill`]).
    pub fn set_oom(&self, name: &str) {
        let id = self.id_of(name);
        if let Some(c) = self.shared.lock().containers.get_mut(&id) {
            c.detail.oom_killed = true;
        }
    }

    /// The kernel kills it for memory: `oom`, then it dies with 137.
    pub fn oom_kill(&self, name: &str) {
        let id = self.id_of(name);
        let mut st = self.shared.lock();
        if let Some(c) = st.containers.get_mut(&id) {
            c.detail.oom_killed = true;
        }
        self.shared.emit(&mut st, &id, "oom");
        self.shared.exit(&mut st, &id, 137);
    }

    /// `docker rm -f`: `die` (if it ran), then `destroy`.
    pub fn remove_behind_back(&self, name: &str) {
        let id = self.id_of(name);
        let mut st = self.shared.lock();
        self.shared.destroy(&mut st, &id);
    }

    /// `docker run --name NAME` of something capstan does not own: it holds the name, is never
    /// listed and sends no events capstan sees. Returns its ID.
    pub fn add_foreign(&self, name: &str) -> String {
        self.add_foreign_on(name, &[])
    }

    /// A foreign container attached to `networks`, as a debugging container would be.
    pub fn add_foreign_on(&self, name: &str, networks: &[&str]) -> String {
        let mut st = self.shared.lock();
        assert!(
            !st.names.contains_key(name),
            "the name {name} is already taken"
        );
        st.next_id += 1;
        let id = format!("{:064x}", st.next_id);
        let n = st.next_id;
        let obs = Observed {
            id: id.clone(),
            name: name.to_string(),
            stack: String::new(),
            service: String::new(),
            ordinal: None,
            spec_hash: String::new(),
            state: State::Running,
            health: Health::None,
            created: self.shared.epoch_nano / 1_000_000_000,
            addresses: networks
                .iter()
                .map(|net| (net.to_string(), address(n)))
                .collect(),
            published: BTreeMap::new(),
            partners: None,
        };
        st.names.insert(name.to_string(), id.clone());
        st.containers.insert(
            id.clone(),
            Container {
                obs,
                foreign: true,
                image: "foreign".into(),
                healthcheck: false,
                networks: networks.iter().map(|s| s.to_string()).collect(),
                volumes: vec![],
                detail: Detail::default(),
                starts: 1,
                oneoff: false,
                join: None,
                volumes_from: vec![],
                options: Default::default(),
            },
        );
        id
    }

    /// A network or volume (`kind`) capstan made for stack `owner`.
    pub fn add_owned_by(&self, kind: &str, name: &str, owner: &str) {
        let mut st = self.shared.lock();
        let resources = match kind {
            "network" => &mut st.networks,
            _ => &mut st.volumes,
        };
        let labels = BTreeMap::from([(names::STACK.to_string(), owner.to_string())]);
        resources.insert(name.to_string(), Resource { labels });
    }

    /// A volume made outside capstan, without labels.
    pub fn add_volume(&self, name: &str) {
        self.shared.lock().volumes.insert(
            name.to_string(),
            Resource {
                labels: BTreeMap::new(),
            },
        );
    }

    /// Creating from `image` fails with ImageNotFound (or works again, with `false`).
    pub fn set_image_missing(&self, image: &str, missing: bool) {
        let mut st = self.shared.lock();
        st.missing_images.retain(|i| i != image);
        if missing {
            st.missing_images.push(image.to_string());
        }
    }

    /// The registry has `image`: a pull of it succeeds and makes it present (until then,
    /// a pull fails with the registry's `manifest unknown`).
    pub fn push_to_registry(&self, image: &str) {
        self.shared.lock().registry.push(image.to_string());
    }

    /// How long each pull takes from now on (none by default).
    pub fn set_pull_time(&self, d: Duration) {
        self.shared.lock().pull_time = d;
    }

    /// What containers named by `pattern` (`*`, `prefix*`, a name, or a container ID) do each
    /// time they are started. A pattern may have one behaviour of each kind (setting another
    /// replaces it). Of the patterns that name a container, only the one set last applies:
    /// `on_start("s-web-*", ..)` then `on_start(&id, ..)` singles out one container.
    pub fn on_start(&self, pattern: &str, behaviour: OnStart) {
        let mut st = self.shared.lock();
        let same_kind =
            |b: &OnStart| std::mem::discriminant(b) == std::mem::discriminant(&behaviour);
        st.behaviours
            .retain(|(p, b)| !(p == pattern && same_kind(b)));
        st.behaviours.push((pattern.to_string(), behaviour));
    }

    /// Forgets every behaviour set with [`Self::on_start`].
    pub fn clear_behaviours(&self) {
        self.shared.lock().behaviours.clear();
    }

    /// Makes `op` on what `pattern` names (`*`, `prefix*` or a name: a container, network or
    /// volume name, or the stack for `StackNetworks`/`StackVolumes`/`List`) fail with `err`,
    /// `times` times. The call is still logged, as failed.
    pub fn fail(&self, op: Op, pattern: &str, err: RuntimeError, times: Times) {
        let left = match times {
            Times::Once => Some(1),
            Times::N(0) => return,
            Times::N(n) => Some(n),
            Times::Always => None,
        };
        self.shared.lock().faults.push(Fault {
            op,
            pattern: pattern.to_string(),
            err,
            left,
        });
    }

    /// Every create of a container named by `pattern` fails with `err`.
    /// The engine goes away (every call and ping fails) or comes back.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    pub fn fail_create(&self, pattern: &str, err: RuntimeError, times: Times) {
        self.fail(Op::Create, pattern, err, times);
    }

    /// Every start of a container named by `pattern` fails with `err`.
    pub fn fail_start(&self, pattern: &str, err: RuntimeError, times: Times) {
        self.fail(Op::Start, pattern, err, times);
    }

    /// Every removal of a container named by `pattern` fails with `err`.
    pub fn fail_remove(&self, pattern: &str, err: RuntimeError, times: Times) {
        self.fail(Op::Remove, pattern, err, times);
    }

    /// Drops every injected failure.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }
}

/// A container's address on every network: unique per container.
fn address(n: u64) -> String {
    format!(
        "10.{}.{}.{}",
        (n / 62500) % 250,
        (n / 250) % 250,
        n % 250 + 1
    )
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        if self.shared.lock().down {
            return Err(RuntimeError::Engine {
                op: "ping",
                message: "Cannot connect to the Docker daemon".into(),
            });
        }
        Ok(())
    }

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        self.call(Call::InspectImage {
            name: image.to_string(),
        })?;
        Ok(!self.shared.lock().missing_images.iter().any(|i| i == image))
    }

    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        self.call(Call::Pull {
            name: image.to_string(),
        })?;
        let (took, found) = {
            let st = self.shared.lock();
            (st.pull_time, st.registry.iter().any(|i| i == image))
        };
        // Marked failed now, while the pull is still the last call logged.
        let result = match found {
            true => Ok(()),
            false => self.failed(RuntimeError::Pull {
                image: image.to_string(),
                message: format!(
                    "manifest for {image} not found: manifest unknown: manifest unknown"
                ),
            }),
        };
        if !took.is_zero() {
            tokio::time::sleep(took).await;
        }
        if result.is_ok() {
            self.shared.lock().missing_images.retain(|i| i != image);
        }
        result
    }

    async fn list(
        &self,
        stack: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        self.call(Call::List {
            stack: stack.map(str::to_string),
            service: service.map(str::to_string),
        })?;
        let st = self.shared.lock();
        let mut out: Vec<Observed> = match (stack, service) {
            (Some(s), Some(v)) => st
                .by_service
                .get(&(s.to_string(), v.to_string()))
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| st.containers.get(id).map(|c| c.obs.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            _ => st
                .containers
                .values()
                .filter(|c| !c.foreign)
                .filter(|c| stack.is_none_or(|s| c.obs.stack == s))
                .filter(|c| service.is_none_or(|v| c.obs.service == v))
                .map(|c| c.obs.clone())
                .collect(),
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create(&self, plan: &ContainerConfig) -> Result<String, RuntimeError> {
        self.call(Call::Create {
            name: plan.name.clone(),
        })?;
        let shared = &self.shared;
        let mut st = shared.lock();
        if st.missing_images.contains(&plan.image) {
            drop(st);
            return self.failed(RuntimeError::ImageNotFound(plan.image.clone()));
        }
        let label = |k: &str| plan.labels.get(k).cloned().unwrap_or_default();
        if let Some(id) = st.names.get(&plan.name).cloned() {
            let holder = &st.containers[&id];
            let ours = !holder.foreign
                && holder.obs.stack == label(names::STACK)
                && holder.obs.service == label(names::SERVICE)
                && holder.obs.ordinal.map(|n| n.to_string())
                    == plan.labels.get(names::REPLICA).cloned();
            if ours {
                // Like the Docker runtime: the name is held by this very replica (an earlier
                // create that was not seen to finish), so it is adopted.
                return Ok(id);
            }
            drop(st);
            return self.failed(RuntimeError::NameConflict {
                name: plan.name.clone(),
                id: id.chars().take(12).collect(),
            });
        }
        st.next_id += 1;
        let n = st.next_id;
        let id = format!("{n:064x}");
        let created = (shared.epoch_nano
            + Instant::now().duration_since(shared.t0).as_nanos() as i64)
            / 1_000_000_000;
        let container = new_container(plan, &id, n, created);
        for v in &container.volumes {
            // The engine makes a named volume a container mounts if it is missing (unlabelled).
            st.volumes.entry(v.clone()).or_insert(Resource {
                labels: BTreeMap::new(),
            });
        }
        if !container.foreign {
            let c = &container.obs;
            st.by_service
                .entry((c.stack.clone(), c.service.clone()))
                .or_default()
                .push(id.clone());
        }
        st.names.insert(plan.name.clone(), id.clone());
        st.containers.insert(id.clone(), container);
        shared.emit(&mut st, &id, "create");
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(Call::Start {
            name: self.name_of(id),
        })?;
        let mut st = self.shared.lock();
        let Some(c) = st.containers.get(id) else {
            drop(st);
            return self.failed(no_such("start", id));
        };
        if c.obs.state == State::Running {
            return Ok(()); // 304: already started
        }
        // As the engine: a network namespace is joined at start, so its holder must run.
        let holder = c
            .join
            .as_ref()
            .map(|j| st.containers.get(j).map(|h| h.obs.state));
        if let Some(state) = holder.filter(|s| *s != Some(State::Running)) {
            let partner = c.join.clone().unwrap_or_default();
            drop(st);
            return self.failed(RuntimeError::Engine {
                op: "start",
                message: match state {
                    Some(_) => format!("Error response from daemon: cannot join network of a non running container: {partner}"),
                    None => format!("Error response from daemon: No such container: {partner}"),
                },
            });
        }
        self.shared.run(&mut st, id);
        Ok(())
    }

    async fn restart(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.call(Call::Restart {
            name: self.name_of(id),
        })?;
        let mut st = self.shared.lock();
        let Some(c) = st.containers.get(id) else {
            drop(st);
            return self.failed(no_such("restart", id));
        };
        if c.obs.state == State::Running {
            self.shared.exit(&mut st, id, 0);
        }
        self.shared.run(&mut st, id);
        self.shared.emit(&mut st, id, "restart");
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Detail, RuntimeError> {
        self.call(Call::Inspect {
            name: self.name_of(id),
        })?;
        let detail = self
            .shared
            .lock()
            .containers
            .get(id)
            .map(|c| c.detail.clone());
        match detail {
            Some(d) => Ok(d),
            None => self.failed(no_such("inspect", id)),
        }
    }

    async fn remove(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.call(Call::Remove {
            name: self.name_of(id),
        })?;
        let mut st = self.shared.lock();
        self.shared.destroy(&mut st, id); // gone already is fine
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        loop {
            let state = self.shared.lock().containers.get(id).map(|c| c.obs.state);
            match state {
                None => return Err(no_such("wait", id)),
                Some(State::Running | State::Restarting) => {}
                Some(State::Exited { code }) => return Ok(code),
                Some(_) => return Ok(0),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// As the engine: only a running container takes an exec (409 otherwise).
    async fn exec(&self, id: &str, hook: &capstan_api::spec::Hook) -> Result<i64, RuntimeError> {
        let name = self.name_of(id);
        self.call(Call::Exec {
            name: name.clone(),
            command: hook.command.join(" "),
        })?;
        let st = self.shared.lock();
        let running = st.containers.get(id).map(|c| c.obs.state);
        if running != Some(State::Running) {
            drop(st);
            return self.failed(RuntimeError::Engine {
                op: "exec",
                message: format!("Error response from daemon: Container {id} is not running"),
            });
        }
        let code = (st.exec_codes.iter().rev())
            .find(|(p, _)| matches(p, &name))
            .map_or(0, |(_, c)| *c);
        Ok(code)
    }

    async fn oneoffs(&self) -> Result<Vec<OneOff>, RuntimeError> {
        let st = self.shared.lock();
        let mut found: Vec<OneOff> = (st.containers.iter())
            .filter(|(_, c)| c.oneoff)
            .map(|(id, c)| OneOff {
                id: id.clone(),
                name: c.obs.name.clone(),
                running: c.obs.state == State::Running,
                created: c.obs.created,
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        self.call(Call::Rename {
            name: self.name_of(id),
        })?;
        let mut st = self.shared.lock();
        if let Some(holder) = st.names.get(name).filter(|h| *h != id).cloned() {
            drop(st);
            return self.failed(RuntimeError::NameConflict {
                name: name.to_string(),
                id: holder.chars().take(12).collect(),
            });
        }
        let Some(c) = st.containers.get_mut(id) else {
            drop(st);
            return self.failed(no_such("rename", id));
        };
        let old = std::mem::replace(&mut c.obs.name, name.to_string());
        st.names.remove(&old);
        st.names.insert(name.to_string(), id.to_string());
        self.shared.emit(&mut st, id, "rename");
        Ok(())
    }

    async fn ensure_network(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        self.call(Call::EnsureNetwork {
            name: plan.name.clone(),
        })?;
        let mut st = self.shared.lock();
        if let Some(found) = st.networks.get(&plan.name) {
            let owner = found.labels.get(names::STACK).cloned();
            drop(st);
            return match plan.check_owner("network", owner.as_ref()) {
                Err(e) => self.failed(e),
                ok => ok,
            };
        }
        if plan.external {
            drop(st);
            return self.failed(RuntimeError::ExternalMissing {
                kind: "network",
                name: plan.name.clone(),
            });
        }
        st.networks.insert(
            plan.name.clone(),
            Resource {
                labels: plan.labels.clone(),
            },
        );
        Ok(())
    }

    async fn ensure_volume(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        self.call(Call::EnsureVolume {
            name: plan.name.clone(),
        })?;
        let mut st = self.shared.lock();
        if let Some(found) = st.volumes.get(&plan.name) {
            let owner = found.labels.get(names::STACK).cloned();
            drop(st);
            return match plan.check_owner("volume", owner.as_ref()) {
                Err(e) => self.failed(e),
                ok => ok,
            };
        }
        if plan.external {
            drop(st);
            return self.failed(RuntimeError::ExternalMissing {
                kind: "volume",
                name: plan.name.clone(),
            });
        }
        st.volumes.insert(
            plan.name.clone(),
            Resource {
                labels: plan.labels.clone(),
            },
        );
        Ok(())
    }

    async fn stack_networks(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        self.call(Call::StackNetworks {
            stack: stack.to_string(),
        })?;
        let st = self.shared.lock();
        Ok(st
            .networks
            .iter()
            .filter(|(_, r)| r.labels.get(names::STACK).is_some_and(|s| s == stack))
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn stack_volumes(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        self.call(Call::StackVolumes {
            stack: stack.to_string(),
        })?;
        let st = self.shared.lock();
        Ok(st
            .volumes
            .iter()
            .filter(|(_, r)| r.labels.get(names::STACK).is_some_and(|s| s == stack))
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.call(Call::RemoveNetwork {
            name: name.to_string(),
        })?;
        let mut st = self.shared.lock();
        let attached = st
            .containers
            .values()
            .any(|c| c.networks.iter().any(|n| n == name));
        if attached {
            drop(st);
            return self.failed(RuntimeError::Engine {
                op: "remove network",
                message: format!(
                    "Error response from daemon: error while removing network: network {name} has active endpoints"
                ),
            });
        }
        st.networks.remove(name); // gone already is fine
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.call(Call::RemoveVolume {
            name: name.to_string(),
        })?;
        let mut st = self.shared.lock();
        let in_use = st
            .containers
            .values()
            .any(|c| c.volumes.iter().any(|v| v == name));
        if in_use {
            drop(st);
            return self.failed(RuntimeError::Engine {
                op: "remove volume",
                message: format!("Error response from daemon: remove {name}: volume is in use"),
            });
        }
        st.volumes.remove(name);
        Ok(())
    }

    /// One line, `output of NAME` (on stderr with `timestamps`, to tell the streams apart);
    /// with `follow` the stream then stays open. An unknown container is a 404's error.
    fn logs(
        &self,
        id: &str,
        opts: &LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        let name = self
            .shared
            .lock()
            .containers
            .get(id)
            .map(|c| c.obs.name.clone());
        let first = match name {
            Some(name) => Ok(LogChunk {
                stderr: opts.timestamps,
                bytes: format!("output of {name}\n").into_bytes(),
            }),
            None => Err(RuntimeError::Engine {
                op: "logs",
                message: format!("No such container: {id}"),
            }),
        };
        let once = futures::stream::once(async move { first });
        if opts.follow {
            once.chain(futures::stream::pending()).boxed()
        } else {
            once.boxed()
        }
    }

    /// `output of NAME` on stdout, then the end once the container no longer runs (as the
    /// engine closes an attached stream when the process exits).
    async fn attach(&self, id: &str) -> Result<LogStream, RuntimeError> {
        let name = (self.shared.lock().containers.get(id)).map(|c| c.obs.name.clone());
        let Some(name) = name else {
            return self.failed(no_such("attach", id));
        };
        let first = LogChunk {
            stderr: false,
            bytes: format!("output of {name}\n").into_bytes(),
        };
        let (shared, id) = (self.shared.clone(), id.to_string());
        let until_exit = futures::stream::once(async move {
            loop {
                let state = shared.lock().containers.get(&id).map(|c| c.obs.state);
                if !matches!(
                    state,
                    Some(State::Created | State::Running | State::Restarting)
                ) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .filter_map(|()| async { None });
        Ok(futures::stream::once(async { Ok(first) })
            .chain(until_exit)
            .boxed())
    }

    fn events(
        &self,
        since_nano: Option<i64>,
    ) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        let (past, rx) = {
            let st = self.shared.lock();
            let past: Vec<ContainerEvent> = match since_nano {
                Some(since) => st
                    .history
                    .iter()
                    .filter(|e| e.time_nano >= since)
                    .cloned()
                    .collect(),
                None => vec![],
            };
            (past, self.shared.events.subscribe())
        };
        // A subscriber that falls too far behind gets an error and a closed stream, as a
        // broken connection would: the daemon then reconnects and resyncs.
        let live = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => Some((
                    Err(RuntimeError::Engine {
                        op: "events",
                        message: format!("event stream fell {n} events behind"),
                    }),
                    None,
                )),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        futures::stream::iter(past.into_iter().map(Ok))
            .chain(live)
            .boxed()
    }
}

/// A container as the engine makes it from `plan`: created, not started, with an address on
/// each network (or the default bridge).
fn new_container(plan: &ContainerConfig, id: &str, n: u64, created: i64) -> Container {
    let label = |k: &str| plan.labels.get(k).cloned().unwrap_or_default();
    let networks: Vec<String> = plan.networks.iter().map(|(n, _)| n.clone()).collect();
    let volumes: Vec<String> = plan
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Volume { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let addresses = if networks.is_empty() {
        BTreeMap::from([("bridge".to_string(), address(n))])
    } else {
        networks
            .iter()
            .map(|net| (net.clone(), address(n)))
            .collect()
    };
    let obs = Observed {
        id: id.to_string(),
        name: plan.name.clone(),
        stack: label(names::STACK),
        service: label(names::SERVICE),
        ordinal: label(names::REPLICA).parse().ok().filter(|n| *n > 0),
        spec_hash: label(names::SPEC_HASH),
        state: State::Created,
        health: Health::None,
        created,
        addresses,
        published: BTreeMap::new(),
        partners: plan.labels.get(names::PARTNERS).cloned(),
    };
    let healthcheck = plan
        .healthcheck
        .as_ref()
        .is_some_and(|h| h.test.first().is_none_or(|t| t != "NONE"));
    Container {
        obs,
        foreign: !plan.labels.contains_key(names::STACK),
        image: plan.image.clone(),
        healthcheck,
        networks,
        volumes,
        detail: Detail::default(),
        starts: 0,
        oneoff: plan.labels.contains_key(names::ONEOFF_STACK),
        join: plan.join.clone(),
        volumes_from: plan.volumes_from.clone(),
        options: plan.options.clone(),
    }
}

/// The smallest plan of replica `n` of `stack/service`: its name and ownership labels.
#[cfg(test)]
pub fn replica_plan(stack: &str, service: &str, n: u32) -> ContainerConfig {
    ContainerConfig {
        name: names::container(stack, service, n),
        hostname: String::new(),
        image: "x".into(),
        command: None,
        entrypoint: None,
        env: vec![],
        labels: BTreeMap::from([
            (names::STACK.to_string(), stack.to_string()),
            (names::SERVICE.to_string(), service.to_string()),
            (names::REPLICA.to_string(), n.to_string()),
        ]),
        networks: vec![],
        ports: vec![],
        mounts: vec![],
        healthcheck: None,
        stop_grace: Duration::ZERO,
        addresses: Default::default(),
        options: Default::default(),
        join: None,
        volumes_from: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(stack: &str, service: &str, n: u32) -> ContainerConfig {
        let mut plan = replica_plan(stack, service, n);
        plan.image = "web:1".into();
        plan.labels
            .insert(names::SPEC_HASH.to_string(), "h".to_string());
        plan.networks = vec![(format!("{stack}_default"), vec![service.to_string()])];
        plan.mounts = vec![Mount::Volume {
            name: format!("{stack}_data"),
            target: "/d".into(),
            read_only: false,
            options: Default::default(),
        }];
        plan.stop_grace = Duration::from_secs(1);
        plan
    }

    fn net(stack: &str) -> ResourceConfig {
        ResourceConfig {
            name: format!("{stack}_default"),
            driver: None,
            internal: false,
            attachable: false,
            labels: BTreeMap::from([(names::STACK.to_string(), stack.to_string())]),
            external: false,
            ..Default::default()
        }
    }

    async fn next(events: &mut BoxStream<'static, Result<ContainerEvent, RuntimeError>>) -> String {
        let ev = tokio::time::timeout(Duration::from_secs(1), events.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        assert_eq!((ev.stack.as_str(), ev.service.as_str()), ("s", "web"));
        ev.action
    }

    #[tokio::test(start_paused = true)]
    async fn capstan_operations_and_world_changes_stream_labelled_events() {
        let fake = FakeRuntime::default();
        let mut events = fake.events(None);
        let id = fake.create(&plan("s", "web", 1)).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.exit("s-web-1", 1);
        fake.restart(&id, Duration::ZERO).await.unwrap();
        fake.remove_behind_back("s-web-1");
        let mut seen = vec![];
        for _ in 0..8 {
            seen.push(next(&mut events).await);
        }
        assert_eq!(
            seen,
            ["create", "start", "die", "start", "restart", "kill", "die", "destroy"]
        );
        assert!(fake.containers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_foreign_container_holds_its_name_but_is_never_listed() {
        let fake = FakeRuntime::default();
        let foreign = fake.add_foreign("s-web-1");
        let err = fake.create(&plan("s", "web", 1)).await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::NameConflict { ref id, .. } if foreign.starts_with(id.as_str()))
        );
        assert_eq!(
            fake.records().last().map(|r| (r.call.clone(), r.ok)),
            Some((
                Call::Create {
                    name: "s-web-1".into()
                },
                false
            ))
        );
        assert!(fake.list(None, None).await.unwrap().is_empty());
        assert_eq!(fake.container("s-web-1").unwrap().id, foreign);
    }

    #[tokio::test(start_paused = true)]
    async fn a_network_in_use_is_not_removed_and_stack_listings_follow_labels() {
        let fake = FakeRuntime::default();
        fake.ensure_network(&net("s")).await.unwrap();
        fake.ensure_network(&net("t")).await.unwrap();
        let id = fake.create(&plan("s", "web", 1)).await.unwrap();
        assert_eq!(fake.stack_networks("s").await.unwrap(), ["s_default"]);
        assert!(fake.remove_network("s_default").await.is_err());
        assert!(fake.remove_volume("s_data").await.is_err(), "in use");
        fake.remove(&id, Duration::ZERO).await.unwrap();
        fake.remove_network("s_default").await.unwrap();
        fake.remove_volume("s_data").await.unwrap();
        assert_eq!(fake.networks(), ["t_default"]);
        assert!(fake.volumes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn injected_failures_fire_the_times_asked_and_calls_are_logged() {
        let fake = FakeRuntime::default();
        let boom = || RuntimeError::Engine {
            op: "create",
            message: "boom".into(),
        };
        fake.fail_create("s-web-*", boom(), Times::Once);
        assert!(fake.create(&plan("s", "web", 1)).await.is_err());
        let id = fake.create(&plan("s", "web", 1)).await.unwrap();
        assert_eq!(
            fake.create(&plan("s", "web", 1)).await.unwrap(),
            id,
            "its own replica's name is adopted, as the Docker runtime does"
        );
        fake.fail_start("*", boom(), Times::Always);
        assert!(fake.start(&id).await.is_err());
        assert!(fake.start(&id).await.is_err());
        fake.clear_faults();
        fake.start(&id).await.unwrap();
        assert_eq!(fake.count(|c| matches!(c, Call::Create { .. })), 3);
        assert_eq!(
            fake.count(|c| matches!(c, Call::Start { name } if name == "s-web-1")),
            3
        );
        fake.clear_calls();
        assert!(fake.calls().is_empty());
        assert_eq!(fake.calls.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn behaviours_run_after_each_start_and_health_starts_by_healthcheck() {
        let fake = FakeRuntime::default();
        let mut p = plan("s", "web", 1);
        p.healthcheck = Some(Default::default());
        let id = fake.create(&p).await.unwrap();
        fake.on_start(
            "s-web-*",
            OnStart::Healthy {
                after: Duration::from_secs(2),
            },
        );
        fake.on_start(
            "s-web-*",
            OnStart::Exit {
                after: Duration::from_secs(5),
                code: 3,
            },
        );
        fake.start(&id).await.unwrap();
        assert_eq!(fake.container("s-web-1").unwrap().health, Health::Starting);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(fake.container("s-web-1").unwrap().is_ready());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            fake.container("s-web-1").unwrap().state,
            State::Exited { code: 3 }
        );
        fake.set_oom("s-web-1");
        assert!(fake.inspect(&id).await.unwrap().oom_killed);

        // A behaviour set for this one container (by ID) overrides its service's.
        fake.on_start(
            &id,
            OnStart::Unhealthy {
                after: Duration::from_secs(1),
            },
        );
        fake.start(&id).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let c = fake.container("s-web-1").unwrap();
        assert_eq!((c.state, c.health), (State::Running, Health::Unhealthy));
    }
}
