//! A work queue of keys, in the shape of kube-runtime's scheduler and client-go's workqueue:
//! a key queued many times runs once; a key is never run by two workers at once (queued
//! again while it runs, it runs once more afterwards); a key can be scheduled for later,
//! and the earliest request wins. [`FailureBackoff`] is the per-key exponential back-off for
//! keys whose work failed, like controller-runtime's item rate limiter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::memory::{shrink_if_sparse, shrink_set_if_sparse};

pub struct Scheduler<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

struct State<K> {
    /// Keys due now, in arrival order.
    ready: VecDeque<K>,
    /// Mirror of `ready`, for deduplication.
    queued: HashSet<K>,
    /// Keys a worker holds right now.
    running: HashSet<K>,
    /// Keys asked for while running: run again when the worker is done.
    again: HashSet<K>,
    /// Keys due later.
    delayed: HashMap<K, Instant>,
}

impl<K: Clone + Eq + Hash> Default for Scheduler<K> {
    fn default() -> Self {
        Scheduler {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                running: HashSet::new(),
                again: HashSet::new(),
                delayed: HashMap::new(),
            }),
            notify: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Scheduler<K> {
    /// Runs `key` as soon as a worker is free.
    pub fn enqueue(&self, key: K) {
        let mut st = self.state.lock().unwrap();
        st.delayed.remove(&key);
        Self::push(&mut st, key);
        drop(st);
        self.notify.notify_one();
    }

    fn push(st: &mut State<K>, key: K) {
        if st.running.contains(&key) {
            st.again.insert(key);
        } else if st.queued.insert(key.clone()) {
            st.ready.push_back(key);
        }
    }

    /// Runs `key` again after `delay` at the latest: a run before then (the key is queued
    /// now, say) does not cancel it. The earliest delayed request wins.
    pub fn enqueue_after(&self, key: K, delay: Duration) {
        let at = Instant::now() + delay;
        let mut st = self.state.lock().unwrap();
        let due = st.delayed.entry(key).or_insert(at);
        if at < *due {
            *due = at;
        }
        drop(st);
        self.notify.notify_one();
    }

    /// Waits for the next due key and hands it to the caller, who must call [`Self::done`].
    pub async fn next(&self) -> K {
        loop {
            let wake_at = {
                let mut st = self.state.lock().unwrap();
                let now = Instant::now();
                let due: Vec<K> = st
                    .delayed
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    st.delayed.remove(&key);
                    Self::push(&mut st, key);
                }
                shrink_if_sparse(&mut st.delayed);
                if let Some(key) = st.ready.pop_front() {
                    st.queued.remove(&key);
                    shrink_set_if_sparse(&mut st.queued);
                    st.running.insert(key.clone());
                    if !st.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return key;
                }
                st.delayed.values().min().copied()
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Releases `key`; if it was asked for while it ran, it is queued again.
    pub fn done(&self, key: &K) {
        let mut st = self.state.lock().unwrap();
        st.running.remove(key);
        shrink_set_if_sparse(&mut st.running);
        if st.again.remove(key) {
            Self::push(&mut st, key.clone());
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Nothing due and nothing running (delayed keys may wait).
    pub fn is_idle(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.ready.is_empty() && st.running.is_empty()
    }

    /// Keys queued, running, asked for again or delayed.
    pub fn remembered(&self) -> usize {
        let st = self.state.lock().unwrap();
        st.queued.len() + st.running.len() + st.again.len() + st.delayed.len()
    }

    /// Keys waiting to run now (not delayed ones), for the queue-depth metric.
    pub fn depth(&self) -> usize {
        self.state.lock().unwrap().ready.len()
    }
}

/// Per-key exponential back-off for failed work: the n-th consecutive failure of a key
/// waits `base × 2ⁿ⁻¹`, at most `cap`; a success forgets the key's failures.
pub struct FailureBackoff<K> {
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: Clone + Eq + Hash> Default for FailureBackoff<K> {
    fn default() -> Self {
        FailureBackoff {
            failures: Mutex::default(),
        }
    }
}

/// The delays of one class of failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }
}

impl<K: Clone + Eq + Hash> FailureBackoff<K> {
    /// Records a failure of `key`; returns how long to wait before retrying it, and how many
    /// times in a row it has failed.
    pub fn failed(&self, key: &K, backoff: Backoff) -> (Duration, u32) {
        let mut failures = self.failures.lock().unwrap();
        let n = failures.entry(key.clone()).or_default();
        *n = n.saturating_add(1);
        (backoff.delay(*n), *n)
    }

    /// `key` succeeded: its next failure starts from `base` again. True if it had failed.
    pub fn succeeded(&self, key: &K) -> bool {
        self.failures.lock().unwrap().remove(key).is_some()
    }

    /// Keys failing now.
    pub fn remembered(&self) -> usize {
        self.failures.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_per_key_up_to_the_cap_and_reset_on_success() {
        let b = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(4),
        };
        let f = FailureBackoff::default();
        let delays: Vec<u64> = (0..6)
            .map(|_| f.failed(&"a", b).0.as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(
            f.failed(&"b", b),
            (Duration::from_millis(500), 1),
            "per key"
        );
        assert!(f.succeeded(&"a"));
        assert_eq!(f.failed(&"a", b).0, Duration::from_millis(500));
        assert_eq!(b.delay(u32::MAX), b.cap, "never overflows");
    }

    #[tokio::test]
    async fn a_key_queued_many_times_runs_once() {
        let s = Scheduler::default();
        s.enqueue("a");
        s.enqueue("b");
        s.enqueue("a");
        assert_eq!(s.next().await, "a");
        assert_eq!(s.next().await, "b");
        assert_eq!(s.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_not_handed_out_again_until_done() {
        let s = Scheduler::default();
        s.enqueue("a");
        let a = s.next().await;
        s.enqueue("a");
        s.enqueue("b");
        assert_eq!(s.next().await, "b", "a is still running");
        let waiting = tokio::time::timeout(Duration::from_secs(1), s.next()).await;
        assert!(waiting.is_err(), "a must not run twice at once");
        s.done(&a);
        assert_eq!(s.next().await, "a", "a runs again once done");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_key_waits_and_the_earliest_request_wins() {
        let s = Scheduler::default();
        s.enqueue_after("a", Duration::from_secs(10));
        s.enqueue_after("a", Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(s.next().await, "a");
        assert_eq!(start.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follow_up_check_still_runs_after_an_immediate_run() {
        let s = Scheduler::default();
        s.enqueue("a");
        s.enqueue_after("a", Duration::from_millis(250));
        let start = Instant::now();
        let first = s.next().await;
        s.done(&first);
        assert_eq!(s.next().await, "a", "the follow-up runs too");
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn an_immediate_request_overrides_a_delay() {
        let s = Scheduler::default();
        s.enqueue_after("a", Duration::from_secs(60));
        s.enqueue("a");
        let start = Instant::now();
        assert_eq!(s.next().await, "a");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
