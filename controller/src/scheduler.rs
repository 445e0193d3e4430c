//! A work queue of keys, in the shape of kube-runtime's scheduler and client-go's workqueue:
//! a key queued many times runs once; a key is never run by two workers at once (queued
//! again while it runs, it runs once more afterwards); a key can be scheduled for later,
//! and the earliest request wins.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

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
                if let Some(key) = st.ready.pop_front() {
                    st.queued.remove(&key);
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

    /// Keys waiting to run now (not delayed ones), for the queue-depth metric.
    pub fn depth(&self) -> usize {
        self.state.lock().unwrap().ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
