//! The reconciler's own memory, kept apart from the reflector (which only the watcher
//! writes): what this process wrote last, and what it still owes.

use capstan_api::object::ServiceStatus;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::status::Problem;
use crate::memory::shrink_if_sparse;
use crate::watch::Desired;
use std::sync::{Arc, Mutex};

type ServiceKey = (String, String);

#[derive(Default)]
pub struct Scratch {
    /// The status this process last wrote per service. The next reconcile compares against
    /// it (before the reflector's copy, which lags by a watch round trip), so an unchanged
    /// world never writes a status twice.
    written: Mutex<HashMap<ServiceKey, Arc<ServiceStatus>>>,
    /// Dependents to restart because capstan restarted a dependency they declared
    /// `restart: true` on: (stack, service) → those dependencies.
    dependent_restarts: Mutex<HashMap<ServiceKey, BTreeSet<String>>>,
    /// Why replicas could not be made, by ordinal, while they wait out their back-off: the
    /// status keeps naming the cause (a taken name, a missing image) between tries.
    unmade: Mutex<HashMap<ServiceKey, BTreeMap<u32, Problem>>>,
    /// Why each stack's deletion cannot finish yet; shared with the API.
    pub blocked: Arc<BlockedDeletions>,
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

fn key(stack: &str, service: &str) -> ServiceKey {
    (stack.to_string(), service.to_string())
}

impl Scratch {
    /// The status last written for a service: this process's own write until the
    /// reflector has caught up with it (then the copy here is dropped, so an idle daemon
    /// holds each status once), else the reflector's.
    pub fn last_status(
        &self,
        desired: &Desired,
        stack: &str,
        service: &str,
    ) -> Option<Arc<ServiceStatus>> {
        let stored = desired.status(stack, service);
        let mut written = self.written.lock().unwrap();
        let k = key(stack, service);
        match (written.get(&k), stored) {
            (Some(w), Some(s)) if **w == *s => {
                written.remove(&k);
                Some(s)
            }
            (Some(w), _) => Some(w.clone()),
            (None, stored) => stored,
        }
    }

    pub fn wrote_status(&self, stack: &str, service: &str, status: ServiceStatus) {
        let mut written = self.written.lock().unwrap();
        written.insert(key(stack, service), Arc::new(status));
    }

    /// Asks `dependent` to restart its replicas because `dependency` was restarted.
    pub fn request_restart(&self, stack: &str, dependent: &str, dependency: &str) {
        let mut pending = self.dependent_restarts.lock().unwrap();
        let deps = pending.entry(key(stack, dependent)).or_default();
        deps.insert(dependency.to_string());
    }

    /// Takes the service's pending dependent restart, if any: the dependencies restarted.
    pub fn take_restart(&self, stack: &str, service: &str) -> Option<Vec<String>> {
        let mut pending = self.dependent_restarts.lock().unwrap();
        let deps = pending.remove(&key(stack, service))?;
        Some(deps.into_iter().collect())
    }

    /// Replica `problem.ordinal` could not be made.
    pub fn unmade(&self, stack: &str, service: &str, problem: Problem) {
        let mut unmade = self.unmade.lock().unwrap();
        let service = unmade.entry(key(stack, service)).or_default();
        service.insert(problem.ordinal, problem);
    }

    /// Why the replicas not made yet could not be made; `made` are those that exist now.
    pub fn still_unmade(&self, stack: &str, service: &str, made: &BTreeSet<u32>) -> Vec<Problem> {
        let mut unmade = self.unmade.lock().unwrap();
        let Some(problems) = unmade.get_mut(&key(stack, service)) else {
            return vec![];
        };
        problems.retain(|n, _| !made.contains(n));
        problems.values().cloned().collect()
    }

    /// Forgets a removed service.
    pub fn forget(&self, stack: &str, service: &str) {
        let mut unmade = self.unmade.lock().unwrap();
        unmade.remove(&key(stack, service));
        shrink_if_sparse(&mut unmade);
        let mut written = self.written.lock().unwrap();
        written.remove(&key(stack, service));
        shrink_if_sparse(&mut written);
        let mut pending = self.dependent_restarts.lock().unwrap();
        pending.remove(&key(stack, service));
        shrink_if_sparse(&mut pending);
    }

    /// Entries held: statuses not yet echoed by the reflector, owed restarts, unmade
    /// replicas' causes, and stacks whose deletion is blocked.
    pub fn remembered(&self) -> usize {
        self.written.lock().unwrap().len()
            + self.dependent_restarts.lock().unwrap().len()
            + self.unmade.lock().unwrap().len()
            + self.blocked.0.lock().unwrap().len()
    }
}
