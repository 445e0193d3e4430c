//! Memory follows the work: every memory the daemon keeps per service forgets the service
//! when it goes (the take-down plan's `Forget` step, and the reflectors' events), and gives
//! back the room a deleted big stack took. `reconcile::Context::remembered` counts what
//! each still holds, so a test can prove that a deletion left nothing behind.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

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
