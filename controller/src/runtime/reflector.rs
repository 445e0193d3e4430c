//! The container reflector: what the engine runs, listed once and then kept fresh by its
//! events. A periodic resync costs one engine list in total, whatever the number of
//! services; a service whose containers an event touched is listed again (alone) the next
//! time a reconcile reads it, so the heal path always decides on a fresh read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::{Observed, Runtime, RuntimeError};
use crate::memory::shrink_if_sparse;

type ServiceKey = (String, String);

pub struct Containers {
    runtime: Arc<dyn Runtime>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A full list succeeded once; before that, every read goes to the engine.
    listed: bool,
    /// Containers per (stack, service), as last listed.
    by_service: HashMap<ServiceKey, Vec<Observed>>,
    /// Services an event touched since they were last listed: their next read lists them.
    stale: HashSet<ServiceKey>,
    /// Counts touches, so a list that raced an event never marks its service fresh.
    touches: u64,
    last_touch: HashMap<ServiceKey, u64>,
}

impl State {
    /// Records a list of `key` begun when `touches` was `since`.
    /// A service without containers is not kept (a read of it answers "none"), so the
    /// services of a deleted stack leave nothing behind.
    fn record(&mut self, key: ServiceKey, containers: Vec<Observed>, since: u64) {
        if self.last_touch.get(&key).is_none_or(|t| *t <= since) {
            self.stale.remove(&key);
            self.last_touch.remove(&key);
        }
        if containers.is_empty() {
            self.by_service.remove(&key);
        } else {
            self.by_service.insert(key, containers);
        }
        shrink_if_sparse(&mut self.by_service);
        shrink_if_sparse(&mut self.last_touch);
    }
}

impl Containers {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Containers {
            runtime,
            state: Mutex::default(),
        }
    }

    /// An event said something happened to a container of this service.
    pub fn touch(&self, stack: &str, service: &str) {
        let mut st = self.state.lock().unwrap();
        st.touches += 1;
        let at = st.touches;
        let key = (stack.to_string(), service.to_string());
        st.last_touch.insert(key.clone(), at);
        st.stale.insert(key);
    }

    /// Lists every capstan container in one call and replaces the copy; returns the
    /// (stack, service) of every container found.
    pub async fn relist(&self) -> Result<Vec<ServiceKey>, RuntimeError> {
        let since = self.state.lock().unwrap().touches;
        let all = self.runtime.list(None, None).await?;
        let mut grouped: HashMap<ServiceKey, Vec<Observed>> = HashMap::new();
        for c in all {
            grouped
                .entry((c.stack.clone(), c.service.clone()))
                .or_default()
                .push(c);
        }
        let mut st = self.state.lock().unwrap();
        let found: Vec<ServiceKey> = grouped.keys().cloned().collect();
        // Services with no container left: forgotten (a read of them answers "none"),
        // unless an event touched them during the list.
        let touched_since =
            |st: &State, k: &ServiceKey| st.last_touch.get(k).is_some_and(|t| *t > since);
        let gone: Vec<ServiceKey> = (st.by_service.keys())
            .chain(st.last_touch.keys())
            .filter(|k| !grouped.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            st.by_service.remove(&key);
            if !touched_since(&st, &key) {
                st.stale.remove(&key);
                st.last_touch.remove(&key);
            }
        }
        for (key, containers) in grouped {
            st.record(key, containers, since);
        }
        shrink_if_sparse(&mut st.by_service);
        shrink_if_sparse(&mut st.last_touch);
        st.listed = true;
        Ok(found)
    }

    /// Services this copy keeps anything for (containers, or an event not yet listed).
    pub fn remembered(&self) -> usize {
        let st = self.state.lock().unwrap();
        let mut keys: HashSet<&ServiceKey> = st.by_service.keys().collect();
        keys.extend(st.stale.iter().chain(st.last_touch.keys()));
        keys.len()
    }

    /// The service's containers: from the copy when no event touched them since they were
    /// listed, else from the engine (one list of this service).
    pub async fn service(&self, stack: &str, service: &str) -> Result<Vec<Observed>, RuntimeError> {
        let key = (stack.to_string(), service.to_string());
        {
            let st = self.state.lock().unwrap();
            if st.listed && !st.stale.contains(&key) {
                return Ok(st.by_service.get(&key).cloned().unwrap_or_default());
            }
        }
        self.refresh(stack, service).await
    }

    /// The service's containers from the engine, always: after acting on them.
    pub async fn refresh(&self, stack: &str, service: &str) -> Result<Vec<Observed>, RuntimeError> {
        let since = self.state.lock().unwrap().touches;
        let containers = self.runtime.list(Some(stack), Some(service)).await?;
        let key = (stack.to_string(), service.to_string());
        self.state
            .lock()
            .unwrap()
            .record(key, containers.clone(), since);
        Ok(containers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::replica_plan as plan;
    use crate::runtime::fake::FakeRuntime;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn after_one_list_untouched_services_are_read_without_asking_the_engine() {
        let fake = Arc::new(FakeRuntime::default());
        for svc in ["a", "b", "c"] {
            fake.create(&plan("s", svc, 1)).await.unwrap();
        }
        let containers = Containers::new(fake.clone());
        let before = fake.calls.load(Ordering::Relaxed);
        let mut found = containers.relist().await.unwrap();
        found.sort();
        assert_eq!(found.len(), 3);
        for svc in ["a", "b", "c", "gone"] {
            containers.service("s", svc).await.unwrap();
        }
        assert_eq!(
            fake.calls.load(Ordering::Relaxed) - before,
            1,
            "one list in all"
        );
        assert_eq!(containers.service("s", "a").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_touched_service_is_listed_again_once_and_then_read_from_the_copy() {
        let fake = Arc::new(FakeRuntime::default());
        let containers = Containers::new(fake.clone());
        containers.relist().await.unwrap();
        fake.create(&plan("s", "a", 1)).await.unwrap();
        assert!(
            containers.service("s", "a").await.unwrap().is_empty(),
            "no event yet"
        );
        containers.touch("s", "a");
        let before = fake.calls.load(Ordering::Relaxed);
        assert_eq!(containers.service("s", "a").await.unwrap().len(), 1);
        assert_eq!(containers.service("s", "a").await.unwrap().len(), 1);
        assert_eq!(fake.calls.load(Ordering::Relaxed) - before, 1);
    }

    #[tokio::test]
    async fn a_service_without_containers_is_not_kept_once_listed() {
        let fake = Arc::new(FakeRuntime::default());
        let id = fake.create(&plan("s", "a", 1)).await.unwrap();
        let containers = Containers::new(fake.clone());
        containers.relist().await.unwrap();
        assert_eq!(containers.remembered(), 1);
        fake.remove(&id, std::time::Duration::ZERO).await.unwrap();
        containers.touch("s", "a");
        assert!(containers.service("s", "a").await.unwrap().is_empty());
        assert!(containers
            .service("s", "never-had-any")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(containers.remembered(), 0);
    }

    #[tokio::test]
    async fn a_read_before_the_first_full_list_goes_to_the_engine() {
        let fake = Arc::new(FakeRuntime::default());
        fake.create(&plan("s", "a", 1)).await.unwrap();
        let containers = Containers::new(fake.clone());
        assert_eq!(containers.service("s", "a").await.unwrap().len(), 1);
    }
}
