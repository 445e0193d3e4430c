//! What the daemon remembers about each service, in one record per service key
//! ([`ServiceMemory`]), kept apart from the reflector (which only the watcher writes).
//!
//! A reconcile reads a copy of the record when it observes ([`Memories::recall`]), plans on
//! that copy, and its steps write what they did back ([`Memories::update`]). One call,
//! [`Memories::forget`], drops everything when the service goes; a record that holds
//! nothing is dropped by itself, so an idle daemon keeps only what it still needs.

use capstan_api::object::{Endpoints, ServiceStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use super::status::Problem;
use crate::memory::shrink_if_sparse;

/// One replica's place in its crash loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restarts {
    /// Restarts in the current crash-loop window.
    pub in_window: u32,
    /// Restarts since the daemon started (what `capstan get` shows as RESTARTS).
    pub total: u32,
    /// When capstan last restarted it (or failed to make it).
    pub last: Instant,
}

/// Everything this process remembers about one service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceMemory {
    /// Crash-loop positions by ordinal: the replica's back-off.
    pub restarts: BTreeMap<u32, Restarts>,
    /// Per ordinal, the container last seen healthy: an unhealthy container not named here
    /// has not been healthy since it started, and gets its start-up grace.
    pub healthy: BTreeMap<u32, String>,
    /// Whether the crash-loop positions of the stored status were taken over (once, after
    /// this daemon started or was elected).
    pub adopted: bool,
    /// The status this process wrote last, until the reflector echoes it: the next
    /// reconcile compares against it, so an unchanged world never writes a status twice.
    pub status: Option<Arc<ServiceStatus>>,
    /// The endpoints this process wrote last, until the reflector echoes them.
    pub endpoints: Option<Arc<Endpoints>>,
    /// Dependencies capstan restarted that this service declared `restart: true` on: its
    /// running replicas restart once the gate is open.
    pub owed_restarts: BTreeSet<String>,
    /// Why replicas could not be made, by ordinal, while they wait out their back-off: the
    /// status keeps naming the cause (a taken name, a missing image) between tries.
    pub unmade: BTreeMap<u32, Problem>,
    /// Since when the service is not converged (a new generation, or drift): its
    /// convergence time counts from here.
    pub unconverged_since: Option<Instant>,
    /// The rollout under way.
    pub rollout: Option<Rollout>,
}

/// A rollout under way: when its replicas were first seen outdated, and whether its pause
/// was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollout {
    pub since: Instant,
    pub pause_counted: bool,
}

impl ServiceMemory {
    fn is_empty(&self) -> bool {
        *self == ServiceMemory::default()
    }
}

/// What this process wrote last, or else what the store holds: this process's own write
/// until the reflector has caught up with it, else the reflector's copy. Pure; `mine` is
/// dropped by [`echoed`] once the store shows it.
pub fn last_written<T: PartialEq>(mine: Option<&Arc<T>>, stored: Option<Arc<T>>) -> Option<Arc<T>> {
    match (mine, stored) {
        (Some(w), Some(s)) if **w == *s => Some(s),
        (Some(w), _) => Some(w.clone()),
        (None, stored) => stored,
    }
}

/// Drops this process's copy of a write the store now shows.
pub fn echoed<T: PartialEq>(mine: &mut Option<Arc<T>>, stored: Option<&Arc<T>>) {
    if mine.is_some() && mine.as_deref() == stored.map(|s| &**s) {
        *mine = None;
    }
}

type ServiceKey = (String, String);

fn key(stack: &str, service: &str) -> ServiceKey {
    (stack.to_string(), service.to_string())
}

/// The records of every service this process works on, and why deletions are blocked.
#[derive(Default)]
pub struct Memories {
    services: Mutex<HashMap<ServiceKey, ServiceMemory>>,
    /// Why each stack's deletion cannot finish yet; shared with the API.
    pub blocked: Arc<BlockedDeletions>,
}

impl Memories {
    /// A copy of the service's record (empty when there is none), to plan on.
    pub fn recall(&self, stack: &str, service: &str) -> ServiceMemory {
        let services = self.services.lock().unwrap();
        services
            .get(&key(stack, service))
            .cloned()
            .unwrap_or_default()
    }

    /// Reads the service's record (an empty one when there is none) without copying it.
    pub fn read<R>(&self, stack: &str, service: &str, f: impl FnOnce(&ServiceMemory) -> R) -> R {
        let services = self.services.lock().unwrap();
        match services.get(&key(stack, service)) {
            Some(record) => f(record),
            None => f(&ServiceMemory::default()),
        }
    }

    /// Changes the service's record; a record left empty is dropped.
    pub fn update<R>(
        &self,
        stack: &str,
        service: &str,
        f: impl FnOnce(&mut ServiceMemory) -> R,
    ) -> R {
        let mut services = self.services.lock().unwrap();
        let k = key(stack, service);
        let Some(record) = services.get_mut(&k) else {
            // Most updates of a service without a record leave it without one.
            let mut record = ServiceMemory::default();
            let result = f(&mut record);
            if !record.is_empty() {
                services.insert(k, record);
            }
            return result;
        };
        let result = f(record);
        if record.is_empty() {
            services.remove(&k);
            shrink_if_sparse(&mut services);
        }
        result
    }

    /// Forgets everything about a service that is gone.
    pub fn forget(&self, stack: &str, service: &str) {
        let mut services = self.services.lock().unwrap();
        services.remove(&key(stack, service));
        shrink_if_sparse(&mut services);
    }

    /// Services with a record, and stacks whose deletion is blocked.
    pub fn remembered(&self) -> usize {
        self.services.lock().unwrap().len() + self.blocked.0.lock().unwrap().len()
    }
}

/// Stack → why its deletion cannot finish yet (the last teardown error), for the API and
/// `capstan delete`: a teardown that retries forever must say what it waits for.
#[derive(Default)]
pub struct BlockedDeletions(Mutex<HashMap<String, String>>);

impl BlockedDeletions {
    /// Records (or, with `None`, clears) why a stack's deletion cannot finish yet.
    pub fn set(&self, stack: &str, why: Option<String>) {
        let mut blocked = self.0.lock().unwrap();
        match why {
            Some(why) => blocked.insert(stack.to_string(), why),
            None => blocked.remove(stack),
        };
    }

    pub fn get(&self, stack: &str) -> Option<String> {
        self.0.lock().unwrap().get(stack).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_left_empty_is_dropped_and_forget_drops_a_full_one() {
        let m = Memories::default();
        m.update("s", "web", |r| {
            r.owed_restarts.insert("db".into());
        });
        assert_eq!(m.remembered(), 1);
        m.update("s", "web", |r| r.owed_restarts.clear());
        assert_eq!(m.remembered(), 0, "nothing left to remember");
        m.update("s", "web", |r| r.adopted = true);
        m.forget("s", "web");
        assert_eq!(m.recall("s", "web"), ServiceMemory::default());
        assert_eq!(m.remembered(), 0);
    }

    #[test]
    fn my_own_write_counts_until_the_store_echoes_it() {
        let (mine, old) = (Arc::new(2), Arc::new(1));
        assert_eq!(
            last_written(Some(&mine), Some(old.clone())),
            Some(mine.clone())
        );
        assert_eq!(last_written(None, Some(old.clone())), Some(old));
        let mut kept = Some(mine.clone());
        echoed(&mut kept, Some(&Arc::new(1)));
        assert!(kept.is_some(), "the store lags");
        echoed(&mut kept, Some(&Arc::new(2)));
        assert!(kept.is_none(), "echoed: the store's copy is enough");
    }
}
