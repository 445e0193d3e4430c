//! Per-replica crash-loop bookkeeping: how often capstan restarted a replica and when it may
//! do so again. Exponential: 1 s after the first restart, doubling, capped at 60 s; forgotten
//! once a replica has gone 60 s without needing a restart. The cumulative count (what
//! `capstan get` shows as RESTARTS) is kept apart and never resets while the daemon runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use super::plan::RestartHistory;
use crate::runtime::{Health, Observed};
use capstan_api::object::{CrashLoop, ServiceStatus};
use capstan_api::spec::ServiceSpec;

pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A replica that needed no restart for this long starts its count afresh.
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// The back-off of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub start: Duration,
    pub cap: Duration,
    pub reset: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            start: BACKOFF_START,
            cap: BACKOFF_CAP,
            reset: BACKOFF_RESET,
        }
    }
}

impl Timing {
    /// The service's timing: capstan's, moved by `deploy.restart_policy`.
    pub fn of(spec: &ServiceSpec) -> Timing {
        let mut t = Timing::default();
        if let Some(rt) = spec.restart_timing {
            if let Some(ms) = rt.delay_ms {
                t.start = Duration::from_millis(ms);
                t.cap = t.cap.max(t.start);
            }
            if let Some(ms) = rt.window_ms {
                t.reset = Duration::from_millis(ms);
            }
        }
        t
    }

    /// The wait required after `restarts` restarts.
    pub fn delay_after(&self, restarts: u32) -> Duration {
        if restarts == 0 {
            return Duration::ZERO;
        }
        self.start
            .saturating_mul(2u32.saturating_pow(restarts - 1))
            .min(self.cap)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Restarts in the current crash-loop window.
    restarts: u32,
    /// Restarts since the daemon started.
    total: u32,
    last: Instant,
}

/// Replica key: (stack, service, ordinal).
type Key = (String, String, u32);

pub struct RestartBook {
    /// The wall clock at `started`: the engine dates containers in Unix seconds, and ages
    /// are measured on the runtime's clock from here (so paused test time ages them too).
    epoch: std::time::SystemTime,
    started: Instant,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Per replica, the container last seen healthy: an unhealthy container not listed here
    /// has not been healthy since it started, and gets its start-up grace.
    healthy: Mutex<HashMap<Key, String>>,
    /// Services whose stored crash-loop positions were taken over ([`Self::adopt`]).
    adopted: Mutex<std::collections::HashSet<(String, String)>>,
}

/// The book's view of one service, for the planner.
pub struct ServiceHistory<'a> {
    book: &'a RestartBook,
    stack: &'a str,
    service: &'a str,
    timing: Timing,
    now: Instant,
}

impl Default for RestartBook {
    fn default() -> Self {
        RestartBook {
            epoch: std::time::SystemTime::now(),
            started: Instant::now(),
            entries: Mutex::default(),
            healthy: Mutex::default(),
            adopted: Mutex::default(),
        }
    }
}

impl RestartBook {
    /// Unix seconds now.
    fn unix_now(&self) -> i64 {
        let now = self.epoch + Instant::now().duration_since(self.started);
        let since = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        since.as_secs() as i64
    }

    pub fn for_service<'a>(
        &'a self,
        stack: &'a str,
        service: &'a str,
        timing: Timing,
    ) -> ServiceHistory<'a> {
        ServiceHistory {
            book: self,
            stack,
            service,
            timing,
            now: Instant::now(),
        }
    }

    fn raw(&self, stack: &str, service: &str, ordinal: u32) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap()
            .get(&(stack.to_string(), service.to_string(), ordinal))
            .copied()
    }

    /// The entry if its crash-loop window is still open.
    fn entry(&self, key: (&str, &str, u32), t: &Timing, now: Instant) -> Option<Entry> {
        let (stack, service, ordinal) = key;
        let e = self.raw(stack, service, ordinal)?;
        (now.duration_since(e.last) < t.reset + t.delay_after(e.restarts)).then_some(e)
    }

    /// Records a restart made now.
    pub fn record(&self, stack: &str, service: &str, ordinal: u32, timing: &Timing) {
        let now = Instant::now();
        let prev = self
            .entry((stack, service, ordinal), timing, now)
            .map_or(0, |e| e.restarts);
        let total = self.raw(stack, service, ordinal).map_or(0, |e| e.total);
        self.entries.lock().unwrap().insert(
            (stack.into(), service.into(), ordinal),
            Entry {
                restarts: prev + 1,
                total: total + 1,
                last: now,
            },
        );
    }

    /// Takes over the crash-loop positions a previous daemon wrote in `status`, once per
    /// service and only for replicas this daemon has no entry of: a restarted or newly
    /// elected daemon goes on with the back-off instead of restarting a crash loop at once.
    pub fn adopt(&self, stack: &str, service: &str, status: &ServiceStatus) {
        if !self
            .adopted
            .lock()
            .unwrap()
            .insert((stack.into(), service.into()))
        {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        for r in status.replica_states.iter().filter(|r| r.restarts > 0) {
            let key = (stack.to_string(), service.to_string(), r.ordinal);
            if entries.contains_key(&key) {
                continue;
            }
            let (restarts, last) = match &r.crash_loop {
                Some(cl) => (cl.restarts, self.instant_of(&cl.last_restart_at, now)),
                None => (0, self.started.min(now)),
            };
            entries.insert(
                key,
                Entry {
                    restarts,
                    total: r.restarts,
                    last,
                },
            );
        }
    }

    /// The runtime clock's instant of a wall-clock time (now, if it does not parse or lies
    /// before this process).
    fn instant_of(&self, rfc3339: &str, now: Instant) -> Instant {
        let Ok(at) = humantime::parse_rfc3339_weak(rfc3339) else {
            return now;
        };
        let wall_now = self.epoch + now.duration_since(self.started);
        let ago = wall_now.duration_since(at).unwrap_or_default();
        now.checked_sub(ago).unwrap_or(now)
    }

    /// The wall-clock time of a runtime instant, RFC 3339 with milliseconds.
    fn wall_of(&self, at: Instant) -> String {
        let wall = self.epoch + at.duration_since(self.started);
        humantime::format_rfc3339_millis(wall).to_string()
    }

    /// Notes the containers of a service that are healthy now.
    pub fn saw(&self, stack: &str, service: &str, containers: &[Observed]) {
        let mut healthy = self.healthy.lock().unwrap();
        for c in containers.iter().filter(|c| c.health == Health::Healthy) {
            if let Some(n) = c.ordinal {
                healthy.insert((stack.into(), service.into(), n), c.id.clone());
            }
        }
    }

    /// Forgets the replicas of a service (it was removed).
    pub fn forget_service(&self, stack: &str, service: &str) {
        self.entries
            .lock()
            .unwrap()
            .retain(|(s, v, _), _| !(s == stack && v == service));
        self.healthy
            .lock()
            .unwrap()
            .retain(|(s, v, _), _| !(s == stack && v == service));
        self.adopted
            .lock()
            .unwrap()
            .remove(&(stack.to_string(), service.to_string()));
        crate::memory::shrink_if_sparse(&mut self.entries.lock().unwrap());
        crate::memory::shrink_if_sparse(&mut self.healthy.lock().unwrap());
    }

    /// Entries held: replicas' restart counts and last healthy containers, and services
    /// whose stored positions were adopted.
    pub fn remembered(&self) -> usize {
        self.entries.lock().unwrap().len()
            + self.healthy.lock().unwrap().len()
            + self.adopted.lock().unwrap().len()
    }
}

/// The wait required after `restarts` restarts, with capstan's default timing.
pub fn delay_after(restarts: u32) -> Duration {
    Timing::default().delay_after(restarts)
}

impl RestartHistory for ServiceHistory<'_> {
    fn total_restarts(&self, ordinal: u32) -> u32 {
        self.book
            .raw(self.stack, self.service, ordinal)
            .map_or(0, |e| e.total)
    }

    fn restarts(&self, ordinal: u32) -> u32 {
        self.book
            .entry((self.stack, self.service, ordinal), &self.timing, self.now)
            .map_or(0, |e| e.restarts)
    }

    fn crash_loop(&self, ordinal: u32) -> Option<CrashLoop> {
        let e = self
            .book
            .entry((self.stack, self.service, ordinal), &self.timing, self.now)?;
        (e.restarts > 0).then(|| CrashLoop {
            restarts: e.restarts,
            last_restart_at: self.book.wall_of(e.last),
        })
    }

    fn backoff_left(&self, ordinal: u32) -> Option<Duration> {
        let e = self
            .book
            .entry((self.stack, self.service, ordinal), &self.timing, self.now)?;
        let due = e.last + self.timing.delay_after(e.restarts);
        (due > self.now).then(|| due - self.now)
    }

    fn settling_left(&self, replica: &Observed, grace: Duration) -> Option<Duration> {
        let key = (
            self.stack.to_string(),
            self.service.to_string(),
            replica.ordinal?,
        );
        let healthy = self.book.healthy.lock().unwrap();
        if healthy.get(&key) == Some(&replica.id) {
            return None;
        }
        let now = self.book.unix_now();
        let age = Duration::from_secs(now.saturating_sub(replica.created).max(0) as u64);
        grace.checked_sub(age).filter(|left| !left.is_zero())
    }

    fn age(&self, replica: &Observed) -> Duration {
        let now = self.book.unix_now();
        Duration::from_secs(now.saturating_sub(replica.created).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_one_second_up_to_the_cap() {
        let d: Vec<u64> = (0..9).map(|n| delay_after(n).as_secs()).collect();
        assert_eq!(d, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_back_off_and_are_forgotten_after_a_quiet_minute() {
        let book = RestartBook::default();
        let t = Timing::default();
        book.record("s", "web", 1, &t);
        book.record("s", "web", 1, &t);
        let h = book.for_service("s", "web", t);
        assert_eq!(h.restarts(1), 2);
        assert_eq!(h.backoff_left(1), Some(Duration::from_secs(2)));
        assert_eq!(h.restarts(2), 0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(book.for_service("s", "web", t).backoff_left(1), None);
        tokio::time::advance(BACKOFF_RESET).await;
        assert_eq!(book.for_service("s", "web", t).restarts(1), 0);
        assert_eq!(
            book.for_service("s", "web", t).total_restarts(1),
            2,
            "the cumulative count stays"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deploy_restart_policy_delay_and_window_move_the_back_off() {
        let spec: ServiceSpec = capstan_api::parse_stack(
            "s",
            "services: {web: {image: x, deploy: {restart_policy: {delay: 90s, window: 10s}}}}",
        )
        .unwrap()
        .services["web"]
            .clone();
        let t = Timing::of(&spec);
        assert_eq!(t.delay_after(1), Duration::from_secs(90));
        assert_eq!(
            t.delay_after(2),
            Duration::from_secs(90),
            "the cap rises to the delay"
        );
        let book = RestartBook::default();
        book.record("s", "web", 1, &t);
        assert_eq!(
            book.for_service("s", "web", t).backoff_left(1),
            Some(Duration::from_secs(90))
        );
        tokio::time::advance(Duration::from_secs(101)).await;
        assert_eq!(
            book.for_service("s", "web", t).restarts(1),
            0,
            "forgotten after the window"
        );
        assert_eq!(Timing::of(&ServiceSpec::default()), Timing::default());
    }
}
