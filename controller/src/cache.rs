//! The reflector: an in-memory copy of everything under the prefix, fed by the watcher.
//! Reconcilers read desired state only from here, and only once it has synced; objects are
//! shared `Arc`s and never mutated in place.

use capstan_api::object::{Endpoints, Service, ServiceStatus, Stack};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

use crate::store::{KeyKind, Snapshot, Store, WatchEvent};

/// What the scheduler queues: the name of something to reconcile, never the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    Stack(String),
    Service(String, String),
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::Stack(s) => write!(f, "stack/{s}"),
            ObjectKey::Service(s, v) => write!(f, "{s}/{v}"),
        }
    }
}

pub struct Cache {
    state: RwLock<State>,
    /// Tells watchers of `/endpoints` (and the Traefik view) that a service's endpoints moved.
    endpoints_changed: broadcast::Sender<(String, String)>,
    /// Stack → why its deletion cannot finish yet (the last teardown error), for the API and
    /// `capstan delete`: a teardown that retries forever must say what it waits for.
    deletion_blocked: std::sync::Mutex<HashMap<String, String>>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            state: RwLock::default(),
            endpoints_changed: broadcast::channel(1024).0,
            deletion_blocked: Default::default(),
        }
    }
}

#[derive(Default)]
struct State {
    /// An initial list succeeded and the watch has not failed since. While false, the
    /// reconciler acts on nothing: desired state is never inferred from a failed read.
    synced: bool,
    stacks: HashMap<String, Arc<Stack>>,
    services: HashMap<(String, String), Arc<Service>>,
    statuses: HashMap<(String, String), Arc<ServiceStatus>>,
    endpoints: HashMap<(String, String), Arc<Endpoints>>,
}

impl Cache {
    pub fn is_synced(&self) -> bool {
        self.state.read().unwrap().synced
    }

    /// The watch failed: freeze until the next successful list.
    pub fn mark_unsynced(&self) {
        self.state.write().unwrap().synced = false;
    }

    /// Records (or, with `None`, clears) why a stack's deletion cannot finish yet.
    pub fn set_deletion_blocked(&self, stack: &str, why: Option<String>) {
        let mut blocked = self.deletion_blocked.lock().unwrap();
        match why {
            Some(why) => blocked.insert(stack.to_string(), why),
            None => blocked.remove(stack),
        };
    }

    pub fn deletion_blocked(&self, stack: &str) -> Option<String> {
        self.deletion_blocked.lock().unwrap().get(stack).cloned()
    }

    pub fn stack(&self, name: &str) -> Option<Arc<Stack>> {
        self.state.read().unwrap().stacks.get(name).cloned()
    }

    pub fn service(&self, stack: &str, name: &str) -> Option<Arc<Service>> {
        self.state
            .read()
            .unwrap()
            .services
            .get(&(stack.to_string(), name.to_string()))
            .cloned()
    }

    pub fn status(&self, stack: &str, name: &str) -> Option<Arc<ServiceStatus>> {
        self.state
            .read()
            .unwrap()
            .statuses
            .get(&(stack.to_string(), name.to_string()))
            .cloned()
    }

    /// Records a status this process just wrote, so the next reconcile compares against it.
    pub fn set_status(&self, stack: &str, name: &str, status: Option<ServiceStatus>) {
        let key = (stack.to_string(), name.to_string());
        let mut st = self.state.write().unwrap();
        match status {
            Some(s) => st.statuses.insert(key, Arc::new(s)),
            None => st.statuses.remove(&key),
        };
    }

    pub fn endpoints(&self, stack: &str, name: &str) -> Option<Arc<Endpoints>> {
        self.state
            .read()
            .unwrap()
            .endpoints
            .get(&(stack.to_string(), name.to_string()))
            .cloned()
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
        let st = self.state.read().unwrap();
        let mut out: Vec<_> = st
            .services
            .iter()
            .map(|(k, s)| (s.clone(), st.endpoints.get(k).cloned()))
            .collect();
        out.sort_by(|a, b| (&a.0.stack, &a.0.name).cmp(&(&b.0.stack, &b.0.name)));
        out
    }

    /// Records endpoints this process just wrote, and tells watchers.
    pub fn set_endpoints(&self, endpoints: Endpoints) {
        let key = (endpoints.stack.clone(), endpoints.service.clone());
        self.state
            .write()
            .unwrap()
            .endpoints
            .insert(key.clone(), Arc::new(endpoints));
        let _ = self.endpoints_changed.send(key);
    }

    pub fn forget_endpoints(&self, stack: &str, name: &str) {
        let key = (stack.to_string(), name.to_string());
        self.state.write().unwrap().endpoints.remove(&key);
        let _ = self.endpoints_changed.send(key);
    }

    /// (stack, service) of every endpoints change from now on.
    pub fn watch_endpoints(&self) -> broadcast::Receiver<(String, String)> {
        self.endpoints_changed.subscribe()
    }

    /// Every key the cache knows of: stacks and services.
    pub fn keys(&self) -> Vec<ObjectKey> {
        let st = self.state.read().unwrap();
        let mut keys: Vec<ObjectKey> = st
            .stacks
            .keys()
            .map(|s| ObjectKey::Stack(s.clone()))
            .collect();
        keys.extend(
            st.services
                .keys()
                .map(|(s, v)| ObjectKey::Service(s.clone(), v.clone())),
        );
        keys
    }

    /// Replaces the contents with a fresh list; returns the keys whose objects changed
    /// (appeared, changed or vanished) so they get reconciled.
    pub fn replace(&self, snap: Snapshot) -> Vec<ObjectKey> {
        let stacks: HashMap<String, Arc<Stack>> = snap
            .stacks
            .into_iter()
            .map(|s| (s.name.clone(), Arc::new(s)))
            .collect();
        let services: HashMap<(String, String), Arc<Service>> = snap
            .services
            .into_iter()
            .map(|s| ((s.stack.clone(), s.name.clone()), Arc::new(s)))
            .collect();
        let statuses = snap
            .statuses
            .into_iter()
            .map(|(s, v, st)| ((s, v), Arc::new(st)))
            .collect();
        let endpoints: HashMap<(String, String), Arc<Endpoints>> = snap
            .endpoints
            .into_iter()
            .map(|e| ((e.stack.clone(), e.service.clone()), Arc::new(e)))
            .collect();
        for key in endpoints.keys() {
            let _ = self.endpoints_changed.send(key.clone());
        }
        let mut st = self.state.write().unwrap();
        let mut changed = BTreeSet::new();
        for (name, s) in stacks.iter().chain(st.stacks.iter()) {
            if stacks.get(name).map(|a| a.resource_version)
                != st.stacks.get(name).map(|b| b.resource_version)
                || !st.synced
            {
                changed.insert(ObjectKey::Stack(name.clone()));
                for svc in &s.services {
                    changed.insert(ObjectKey::Service(name.clone(), svc.clone()));
                }
            }
        }
        for (key, _) in services.iter().chain(st.services.iter()) {
            if services.get(key).map(|a| a.resource_version)
                != st.services.get(key).map(|b| b.resource_version)
                || !st.synced
            {
                changed.insert(ObjectKey::Service(key.0.clone(), key.1.clone()));
            }
        }
        *st = State {
            synced: true,
            stacks,
            services,
            statuses,
            endpoints,
        };
        changed.into_iter().collect()
    }

    /// Applies a batch of watch events; returns the keys to reconcile. Status changes
    /// reconcile nothing (they are the controller's own output).
    pub fn apply(&self, store: &Store, batch: &[WatchEvent]) -> Vec<ObjectKey> {
        let mut st = self.state.write().unwrap();
        let mut changed = BTreeSet::new();
        for ev in batch {
            let (key, kv) = match ev {
                WatchEvent::Put(kv) => (kv.key.as_str(), Some(kv)),
                WatchEvent::Delete { key, .. } => (key.as_str(), None),
            };
            match store.classify(key) {
                Some(KeyKind::Stack(name)) => {
                    match kv.map(Store::decode_stack) {
                        Some(Ok(s)) => {
                            for svc in &s.services {
                                changed.insert(ObjectKey::Service(name.clone(), svc.clone()));
                            }
                            st.stacks.insert(name.clone(), Arc::new(s));
                        }
                        Some(Err(e)) => {
                            tracing::error!(%key, error = %e, "ignoring a stack record that does not decode")
                        }
                        None => {
                            st.stacks.remove(&name);
                        }
                    }
                    changed.insert(ObjectKey::Stack(name));
                }
                Some(KeyKind::Service(s, v)) => {
                    match kv.map(Store::decode_service) {
                        Some(Ok(svc)) => {
                            st.services.insert((s.clone(), v.clone()), Arc::new(svc));
                        }
                        Some(Err(e)) => {
                            tracing::error!(%key, error = %e, "ignoring a service record that does not decode")
                        }
                        None => {
                            st.services.remove(&(s.clone(), v.clone()));
                        }
                    }
                    changed.insert(ObjectKey::Service(s, v));
                }
                Some(KeyKind::Endpoints(s, v)) => {
                    match kv.map(Store::decode_endpoints) {
                        Some(Ok(e)) => {
                            st.endpoints.insert((s.clone(), v.clone()), Arc::new(e));
                        }
                        Some(Err(e)) => {
                            tracing::warn!(%key, error = %e, "ignoring endpoints that do not decode")
                        }
                        None => {
                            st.endpoints.remove(&(s.clone(), v.clone()));
                        }
                    }
                    let _ = self.endpoints_changed.send((s, v));
                }
                Some(KeyKind::Status(s, v)) => match kv.map(Store::decode_status) {
                    Some(Ok(status)) => {
                        st.statuses.insert((s, v), Arc::new(status));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%key, error = %e, "ignoring a status that does not decode")
                    }
                    None => {
                        st.statuses.remove(&(s, v));
                    }
                },
                None => {}
            }
        }
        changed.into_iter().collect()
    }
}
