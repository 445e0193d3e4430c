//! An in-memory [`Runtime`] for tests and scale simulations: containers start at once and are
//! ready at once (no healthcheck). It counts the calls made to it.

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use capstan_api::names;

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<Inner>,
    /// Every call made, for "how many engine calls" measurements.
    pub calls: AtomicU64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    containers: HashMap<String, Observed>,
    /// (stack, service) → container IDs: the label filter the engine applies.
    by_service: HashMap<(String, String), Vec<String>>,
    names: HashMap<String, String>,
}

impl FakeRuntime {
    fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// How many containers exist.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn list(
        &self,
        stack: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        self.call();
        let st = self.state.lock().unwrap();
        Ok(match (stack, service) {
            (Some(s), Some(v)) => st
                .by_service
                .get(&(s.to_string(), v.to_string()))
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| st.containers.get(id).cloned())
                        .collect()
                })
                .unwrap_or_default(),
            _ => st
                .containers
                .values()
                .filter(|c| stack.is_none_or(|s| c.stack == s))
                .cloned()
                .collect(),
        })
    }

    async fn create(&self, plan: &ContainerPlan) -> Result<String, RuntimeError> {
        self.call();
        let mut st = self.state.lock().unwrap();
        if st.names.contains_key(&plan.name) {
            return Err(RuntimeError::NameConflict {
                name: plan.name.clone(),
                id: String::new(),
            });
        }
        st.next_id += 1;
        let id = format!("{:064x}", st.next_id);
        let label = |k: &str| plan.labels.get(k).cloned().unwrap_or_default();
        let c = Observed {
            id: id.clone(),
            name: plan.name.clone(),
            stack: label(names::STACK),
            service: label(names::SERVICE),
            ordinal: label(names::REPLICA).parse().ok(),
            spec_hash: label(names::SPEC_HASH),
            state: State::Created,
            health: Health::None,
            created: 0,
            addresses: BTreeMap::from([(
                "net".to_string(),
                format!("10.0.{}.{}", (st.next_id / 250) % 250, st.next_id % 250 + 1),
            )]),
            published: BTreeMap::new(),
        };
        st.by_service
            .entry((c.stack.clone(), c.service.clone()))
            .or_default()
            .push(id.clone());
        st.names.insert(c.name.clone(), id.clone());
        st.containers.insert(id.clone(), c);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.call();
        if let Some(c) = self.state.lock().unwrap().containers.get_mut(id) {
            c.state = State::Running;
        }
        Ok(())
    }

    async fn restart(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.start(id).await
    }

    async fn inspect(&self, _id: &str) -> Result<Detail, RuntimeError> {
        self.call();
        Ok(Detail::default())
    }

    async fn remove(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.call();
        let mut st = self.state.lock().unwrap();
        if let Some(c) = st.containers.remove(id) {
            st.names.remove(&c.name);
            if let Some(ids) = st.by_service.get_mut(&(c.stack, c.service)) {
                ids.retain(|i| i != id);
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, _plan: &ResourcePlan) -> Result<(), RuntimeError> {
        self.call();
        Ok(())
    }

    async fn ensure_volume(&self, _plan: &ResourcePlan) -> Result<(), RuntimeError> {
        self.call();
        Ok(())
    }

    async fn stack_networks(&self, _stack: &str) -> Result<Vec<String>, RuntimeError> {
        self.call();
        Ok(vec![])
    }

    async fn stack_volumes(&self, _stack: &str) -> Result<Vec<String>, RuntimeError> {
        self.call();
        Ok(vec![])
    }

    async fn remove_network(&self, _name: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn remove_volume(&self, _name: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn events(
        &self,
        _since_nano: Option<i64>,
    ) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        Box::pin(futures::stream::pending())
    }
}
