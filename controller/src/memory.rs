//! Memory follows the work: every memory the daemon keeps per service forgets the service
//! when it goes (the take-down plan's `Forget` step, and the reflectors' events),
//! and gives back the room a deleted big stack took. [`Context::remembered`] counts what
//! each still holds, so a test can prove that a deletion left nothing behind.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::reconcile::Context;

/// Gives back the room of a map that once held many more entries (a deleted big stack's):
/// a `HashMap` keeps its capacity when entries are removed. Shrinks only below a quarter
/// of the capacity, so the rehash is paid once per many removals.
pub fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to_fit();
    }
}

/// [`shrink_if_sparse`] for a set.
pub fn shrink_set_if_sparse<K: Eq + Hash>(set: &mut HashSet<K>) {
    if set.capacity() > 64 && set.len() * 4 < set.capacity() {
        set.shrink_to_fit();
    }
}

impl Context {
    /// Entries of each per-service memory, by name: zero everywhere once every stack is
    /// deleted and the daemon has caught up (a metric's series are checked in its
    /// exposition, not here).
    pub fn remembered(&self) -> Vec<(&'static str, usize)> {
        let mut all = vec![
            ("desired state (reflector)", self.desired.remembered()),
            ("service memories", self.memory.remembered()),
            ("proxy listeners (traffic)", self.traffic.remembered()),
            (
                "convergence and rollout clocks (metrics)",
                self.metrics.remembered(),
            ),
            ("failing keys (back-off)", self.failures.remembered()),
            (
                "keys queued or delayed (scheduler)",
                self.scheduler.remembered(),
            ),
        ];
        all.extend(self.backend.remembered());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_of_many_entries_gives_its_room_back() {
        let mut m: HashMap<u32, u32> = (0..2000).map(|i| (i, i)).collect();
        let full = m.capacity();
        for i in 0..2000 {
            m.remove(&i);
            shrink_if_sparse(&mut m);
        }
        assert!(m.capacity() < full / 8, "{} of {full}", m.capacity());
    }
}
