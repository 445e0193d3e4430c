//! The reflector: an in-memory copy of everything under the prefix. One [`Writer`], fed typed
//! [`Event`]s by the watcher; any number of [`Desired`] views, cheap to clone, read-only.
//! Reconcilers read desired state only from here, and only once it has synced; objects are
//! shared `Arc`s and never mutated in place.

use capstan_api::object::{Endpoints, Service, ServiceStatus, Stack};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

use crate::key::ObjectKey;
use crate::memory::shrink_if_sparse;
use crate::store::Snapshot;

/// One change to desired state, decoded by the watcher. `None` is a deletion.
// Each event is built once and moved into the writer: boxing its payload would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A fresh list at one revision: replaces everything and marks the copy synced.
    Relisted(Snapshot),
    /// The watch or the list failed: the copy may be stale, so nothing acts on it until the
    /// next [`Event::Relisted`].
    Lost,
    /// A stack's record was committed (None: removed) with every service whose committed
    /// version changed in that commit (None: gone). Applied whole, so no reader sees a stack
    /// half old and half new.
    Commit {
        stack: String,
        record: Option<Stack>,
        services: Vec<(String, Option<Service>)>,
    },
    Status(String, String, Option<ServiceStatus>),
    Endpoints(String, String, Option<Endpoints>),
}

type ServiceKey = (String, String);

#[derive(Default)]
struct State {
    /// An initial list succeeded and the watch has not failed since. While false, the
    /// reconciler acts on nothing: desired state is never inferred from a failed read.
    synced: bool,
    /// An initial list ever succeeded: the copy holds what etcd had then, or later. The API
    /// serves it, marked stale, while etcd does not answer.
    listed: bool,
    stacks: HashMap<String, Arc<Stack>>,
    services: HashMap<ServiceKey, Arc<Service>>,
    /// (stack, service) → the services of that stack that depend on it or pair with it as
    /// its sidecars: kept with `services`, so that a reconcile finds a service's dependents
    /// without reading every service of its stack.
    dependents: HashMap<ServiceKey, BTreeSet<String>>,
    statuses: HashMap<ServiceKey, Arc<ServiceStatus>>,
    endpoints: HashMap<ServiceKey, Arc<Endpoints>>,
}

struct Shared {
    state: RwLock<State>,
    /// Tells watchers of `/endpoints` (and the Traefik view) that a service's endpoints moved.
    endpoints_changed: broadcast::Sender<ServiceKey>,
}

/// The only way to change the copy. Not `Clone`: the watcher owns it.
pub struct Writer {
    shared: Arc<Shared>,
}

/// A read-only view of the copy.
#[derive(Clone)]
pub struct Desired {
    shared: Arc<Shared>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            shared: Arc::new(Shared {
                state: RwLock::default(),
                endpoints_changed: broadcast::channel(1024).0,
            }),
        }
    }
}

impl Writer {
    pub fn reader(&self) -> Desired {
        Desired {
            shared: self.shared.clone(),
        }
    }

    /// Applies one event; returns the keys whose desired state changed, to reconcile. Status
    /// and endpoints changes reconcile nothing: they are the controller's own output.
    pub fn apply(&mut self, event: Event) -> Vec<ObjectKey> {
        let mut changed = BTreeSet::new();
        let mut moved_endpoints = vec![];
        {
            let mut st = self.shared.state.write().unwrap();
            match event {
                Event::Relisted(snap) => {
                    moved_endpoints = snap
                        .endpoints
                        .iter()
                        .map(|e| (e.stack.clone(), e.service.clone()))
                        .collect();
                    changed = replace(&mut st, snap);
                }
                Event::Lost => st.synced = false,
                Event::Commit {
                    stack,
                    record,
                    services,
                } => changed = commit(&mut st, stack, record, services),
                Event::Status(stack, name, status) => put(&mut st.statuses, (stack, name), status),
                Event::Endpoints(stack, name, eps) => {
                    put(&mut st.endpoints, (stack.clone(), name.clone()), eps);
                    moved_endpoints.push((stack, name));
                }
            }
        }
        for key in moved_endpoints {
            let _ = self.shared.endpoints_changed.send(key);
        }
        changed.into_iter().collect()
    }
}

/// Applies one commit; returns the keys to reconcile: the services it changed and, when the
/// stack's own part changed (its set of services, networks, volumes, or its deletion), the
/// stack and all of its services, old and new.
fn commit(
    st: &mut State,
    name: String,
    record: Option<Stack>,
    services: Vec<(String, Option<Service>)>,
) -> BTreeSet<ObjectKey> {
    let mut changed = BTreeSet::new();
    for (svc, value) in services {
        put_service(st, (name.clone(), svc.clone()), value);
        changed.insert(ObjectKey::Service(name.clone(), svc));
    }
    let old = match record {
        Some(s) => st.stacks.insert(name.clone(), Arc::new(s)),
        None => st.stacks.remove(&name),
    };
    shrink_if_sparse(&mut st.stacks);
    let new = st.stacks.get(&name);
    let own = |s: Option<&Arc<Stack>>| s.map(|s| (s.generation, s.deletion.clone()));
    if own(old.as_ref()) != own(new) {
        for svc in new
            .into_iter()
            .chain(old.as_ref())
            .flat_map(|s| &s.services)
        {
            changed.insert(ObjectKey::Service(name.clone(), svc.clone()));
        }
        changed.insert(ObjectKey::Stack(name));
    }
    changed
}

/// Stores (or removes) a service and moves its edges in the dependents index with it.
fn put_service(st: &mut State, key: ServiceKey, value: Option<Service>) {
    let old = match value {
        Some(v) => st.services.insert(key.clone(), Arc::new(v)),
        None => st.services.remove(&key),
    };
    if let Some(old) = old {
        for named in names(&old) {
            let k = (key.0.clone(), named.to_string());
            if let Some(set) = st.dependents.get_mut(&k) {
                set.remove(&key.1);
                if set.is_empty() {
                    st.dependents.remove(&k);
                }
            }
        }
    }
    if let Some(new) = st.services.get(&key) {
        for named in names(new) {
            let k = (key.0.clone(), named.to_string());
            st.dependents.entry(k).or_default().insert(key.1.clone());
        }
    }
    shrink_if_sparse(&mut st.services);
    shrink_if_sparse(&mut st.dependents);
}

/// The services `svc` depends on or pairs with: the edges of the dependents index.
fn names(svc: &Service) -> impl Iterator<Item = &str> {
    let spec = &svc.spec;
    (spec.depends_on.keys().map(String::as_str)).chain(spec.partners().map(|p| p.service.as_str()))
}

fn put<V>(map: &mut HashMap<ServiceKey, Arc<V>>, key: ServiceKey, value: Option<V>) {
    match value {
        Some(v) => map.insert(key, Arc::new(v)),
        None => map.remove(&key),
    };
    shrink_if_sparse(map);
}

/// Replaces the contents with a fresh list; returns the keys whose objects appeared,
/// changed or vanished (all of them after an outage: the world may have moved meanwhile).
fn replace(st: &mut State, snap: Snapshot) -> BTreeSet<ObjectKey> {
    let stacks: HashMap<String, Arc<Stack>> = snap
        .stacks
        .into_iter()
        .map(|s| (s.name.clone(), Arc::new(s)))
        .collect();
    let services: HashMap<ServiceKey, Arc<Service>> = snap
        .services
        .into_iter()
        .map(|s| ((s.stack.clone(), s.name.clone()), Arc::new(s)))
        .collect();
    let mut changed = BTreeSet::new();
    for (name, s) in stacks.iter().chain(st.stacks.iter()) {
        // The record's revision moves with every service's change; the stack's own part is
        // its generation and deletion.
        let own = |m: &HashMap<String, Arc<Stack>>| {
            m.get(name).map(|s| (s.generation, s.deletion.clone()))
        };
        if own(&stacks) != own(&st.stacks) || !st.synced {
            changed.insert(ObjectKey::Stack(name.clone()));
            for svc in &s.services {
                changed.insert(ObjectKey::Service(name.clone(), svc.clone()));
            }
        }
    }
    for key in services.keys().chain(st.services.keys()) {
        let rv = |m: &HashMap<ServiceKey, Arc<Service>>| m.get(key).map(|s| s.resource_version);
        if rv(&services) != rv(&st.services) || !st.synced {
            changed.insert(ObjectKey::Service(key.0.clone(), key.1.clone()));
        }
    }
    let mut dependents: HashMap<ServiceKey, BTreeSet<String>> = HashMap::new();
    for ((stack, name), svc) in &services {
        for named in names(svc) {
            let k = (stack.clone(), named.to_string());
            dependents.entry(k).or_default().insert(name.clone());
        }
    }
    *st = State {
        synced: true,
        listed: true,
        stacks,
        services,
        dependents,
        statuses: snap
            .statuses
            .into_iter()
            .map(|(s, v, status)| ((s, v), Arc::new(status)))
            .collect(),
        endpoints: snap
            .endpoints
            .into_iter()
            .map(|e| ((e.stack.clone(), e.service.clone()), Arc::new(e)))
            .collect(),
    };
    changed
}

fn key(stack: &str, name: &str) -> ServiceKey {
    (stack.to_string(), name.to_string())
}

impl Desired {
    pub fn is_synced(&self) -> bool {
        self.shared.state.read().unwrap().synced
    }

    /// Everything the copy holds, taken at once (no stack half old and half new), or None
    /// before the first list. `revision` is not tracked by the copy: it is 0.
    pub fn copy(&self) -> Option<Snapshot> {
        let st = self.shared.state.read().unwrap();
        if !st.listed {
            return None;
        }
        let pairs = |m: &HashMap<ServiceKey, Arc<ServiceStatus>>| {
            m.iter()
                .map(|((s, v), x)| (s.clone(), v.clone(), (**x).clone()))
                .collect()
        };
        Some(Snapshot {
            revision: 0,
            stacks: st.stacks.values().map(|s| (**s).clone()).collect(),
            services: st.services.values().map(|s| (**s).clone()).collect(),
            statuses: pairs(&st.statuses),
            endpoints: st.endpoints.values().map(|e| (**e).clone()).collect(),
        })
    }

    pub fn stack(&self, name: &str) -> Option<Arc<Stack>> {
        self.shared.state.read().unwrap().stacks.get(name).cloned()
    }

    pub fn service(&self, stack: &str, name: &str) -> Option<Arc<Service>> {
        let st = self.shared.state.read().unwrap();
        st.services.get(&key(stack, name)).cloned()
    }

    /// The services of `stack` (as it lists them) that depend on `name` or pair with it as
    /// its sidecars, by name.
    pub fn dependents(&self, stack: &Stack, name: &str) -> Vec<Arc<Service>> {
        let st = self.shared.state.read().unwrap();
        let Some(names) = st.dependents.get(&key(&stack.name, name)) else {
            return vec![];
        };
        (names.iter())
            .filter(|d| stack.services.contains(d))
            .filter_map(|d| st.services.get(&key(&stack.name, d)).cloned())
            .collect()
    }

    pub fn status(&self, stack: &str, name: &str) -> Option<Arc<ServiceStatus>> {
        let st = self.shared.state.read().unwrap();
        st.statuses.get(&key(stack, name)).cloned()
    }

    pub fn endpoints(&self, stack: &str, name: &str) -> Option<Arc<Endpoints>> {
        let st = self.shared.state.read().unwrap();
        st.endpoints.get(&key(stack, name)).cloned()
    }

    /// A service's endpoints, or none yet.
    pub fn endpoints_or_empty(&self, stack: &str, name: &str) -> Endpoints {
        self.endpoints(stack, name)
            .map(|e| (*e).clone())
            .unwrap_or_else(|| Endpoints {
                stack: stack.to_string(),
                service: name.to_string(),
                endpoints: vec![],
            })
    }

    /// Every service with its endpoints, for the Traefik view.
    pub fn services_with_endpoints(&self) -> Vec<(Arc<Service>, Option<Arc<Endpoints>>)> {
        let st = self.shared.state.read().unwrap();
        let mut out: Vec<_> = st
            .services
            .iter()
            .map(|(k, s)| (s.clone(), st.endpoints.get(k).cloned()))
            .collect();
        out.sort_by(|a, b| (&a.0.stack, &a.0.name).cmp(&(&b.0.stack, &b.0.name)));
        out
    }

    /// (stack, service) of every endpoints change from now on.
    pub fn watch_endpoints(&self) -> broadcast::Receiver<ServiceKey> {
        self.shared.endpoints_changed.subscribe()
    }

    /// Objects the copy holds: stacks, services, statuses and endpoints.
    pub fn remembered(&self) -> usize {
        let st = self.shared.state.read().unwrap();
        st.stacks.len() + st.services.len() + st.statuses.len() + st.endpoints.len()
    }

    /// Every key the copy knows of: stacks and services.
    pub fn keys(&self) -> Vec<ObjectKey> {
        let st = self.shared.state.read().unwrap();
        let stacks = st.stacks.keys().map(|s| ObjectKey::Stack(s.clone()));
        let services = st
            .services
            .keys()
            .map(|(s, v)| ObjectKey::Service(s.clone(), v.clone()));
        stacks.chain(services).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(name: &str, services: &[&str], rv: i64) -> Stack {
        Stack {
            name: name.into(),
            resource_version: rv,
            services: services.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn service(stack: &str, name: &str, rv: i64) -> Service {
        Service {
            stack: stack.into(),
            name: name.into(),
            resource_version: rv,
            ..Default::default()
        }
    }

    #[test]
    fn nothing_is_synced_before_the_first_list_or_after_a_lost_watch() {
        let mut w = Writer::default();
        let r = w.reader();
        assert!(!r.is_synced());
        w.apply(Event::Relisted(Snapshot::default()));
        assert!(r.is_synced());
        w.apply(Event::Lost);
        assert!(!r.is_synced(), "a view sees the writer's changes at once");
    }

    #[test]
    fn a_relist_reconciles_only_what_changed_unless_it_follows_an_outage() {
        let mut w = Writer::default();
        let snap = |rv| Snapshot {
            stacks: vec![stack("s", &["web", "db"], 1)],
            services: vec![service("s", "web", rv), service("s", "db", 1)],
            ..Default::default()
        };
        assert_eq!(
            w.apply(Event::Relisted(snap(1))).len(),
            3,
            "first list: all"
        );
        assert_eq!(
            w.apply(Event::Relisted(snap(2))),
            vec![ObjectKey::Service("s".into(), "web".into())]
        );
        w.apply(Event::Lost);
        assert_eq!(
            w.apply(Event::Relisted(snap(2))).len(),
            3,
            "after an outage: all"
        );
    }

    fn commit(name: &str, record: Option<Stack>, services: &[(&str, Option<i64>)]) -> Event {
        Event::Commit {
            stack: name.into(),
            record,
            services: services
                .iter()
                .map(|(svc, rv)| (svc.to_string(), rv.map(|rv| service(name, svc, rv))))
                .collect(),
        }
    }

    #[test]
    fn a_stack_change_reconciles_its_services_old_and_new_and_a_status_reconciles_nothing() {
        let mut w = Writer::default();
        let first = Some(stack("s", &["web", "db"], 1));
        w.apply(commit("s", first, &[("web", Some(1)), ("db", Some(1))]));
        let mut next = stack("s", &["web"], 2);
        next.generation = 1;
        let keys = w.apply(commit("s", Some(next), &[("db", None)]));
        assert!(
            keys.contains(&ObjectKey::Service("s".into(), "db".into())),
            "{keys:?}"
        );
        assert!(keys.contains(&ObjectKey::Stack("s".into())), "{keys:?}");
        assert!(w.reader().service("s", "db").is_none());
        let status = ServiceStatus::default();
        let keys = w.apply(Event::Status("s".into(), "web".into(), Some(status)));
        assert!(keys.is_empty());
        assert!(w.reader().status("s", "web").is_some());
    }

    #[test]
    fn a_commit_that_changes_one_service_reconciles_only_that_service_and_shows_all_of_it_at_once()
    {
        let mut w = Writer::default();
        let r = w.reader();
        w.apply(commit(
            "s",
            Some(stack("s", &["web", "db"], 1)),
            &[("web", Some(1)), ("db", Some(1))],
        ));
        let keys = w.apply(commit(
            "s",
            Some(stack("s", &["web", "db"], 3)),
            &[("web", Some(2))],
        ));
        assert_eq!(keys, vec![ObjectKey::Service("s".into(), "web".into())]);
        assert_eq!(r.stack("s").unwrap().resource_version, 3);
        assert_eq!(r.service("s", "web").unwrap().resource_version, 2);
        assert_eq!(r.service("s", "db").unwrap().resource_version, 1);
    }

    fn depending(stack: &str, name: &str, rv: i64, on: &[&str]) -> Service {
        let mut svc = service(stack, name, rv);
        for dep in on {
            let dependency = capstan_api::spec::Dependency {
                condition: capstan_api::spec::DependencyCondition::ServiceStarted,
                required: true,
                restart: false,
            };
            svc.spec.depends_on.insert(dep.to_string(), dependency);
        }
        svc
    }

    fn dependents_of(r: &Desired, name: &str) -> Vec<String> {
        let stack = r.stack("s").unwrap();
        let found = r.dependents(&stack, name);
        found.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn the_dependents_index_follows_commits_and_relists() {
        let mut w = Writer::default();
        let r = w.reader();
        let listed = stack("s", &["db", "web", "worker"], 1);
        w.apply(Event::Relisted(Snapshot {
            stacks: vec![listed.clone()],
            services: vec![
                service("s", "db", 1),
                depending("s", "web", 1, &["db"]),
                depending("s", "worker", 1, &["db", "web"]),
            ],
            ..Default::default()
        }));
        assert_eq!(dependents_of(&r, "db"), ["web", "worker"]);
        assert_eq!(dependents_of(&r, "web"), ["worker"]);
        let web = ("web".to_string(), Some(depending("s", "web", 2, &[])));
        w.apply(Event::Commit {
            stack: "s".into(),
            record: Some(listed),
            services: vec![web],
        });
        assert_eq!(dependents_of(&r, "db"), ["worker"], "web no longer depends");
        w.apply(commit(
            "s",
            Some(stack("s", &["db", "web"], 3)),
            &[("worker", None)],
        ));
        assert!(dependents_of(&r, "db").is_empty() && dependents_of(&r, "web").is_empty());
    }

    #[test]
    fn a_dependent_the_stack_no_longer_lists_is_not_a_dependent() {
        let mut w = Writer::default();
        let r = w.reader();
        w.apply(Event::Relisted(Snapshot {
            stacks: vec![stack("s", &["db"], 1)],
            services: vec![service("s", "db", 1), depending("s", "web", 1, &["db"])],
            ..Default::default()
        }));
        assert!(dependents_of(&r, "db").is_empty());
    }

    #[tokio::test]
    async fn endpoint_changes_are_announced_to_watchers() {
        let mut w = Writer::default();
        let mut rx = w.reader().watch_endpoints();
        let eps = Endpoints {
            stack: "s".into(),
            service: "web".into(),
            endpoints: vec![],
        };
        w.apply(Event::Endpoints("s".into(), "web".into(), Some(eps)));
        assert_eq!(rx.recv().await.unwrap(), ("s".into(), "web".into()));
    }
}
