//! Per-replica crash-loop bookkeeping: how often capstan restarted a replica and when it may
//! do so again. Exponential: 1 s after the first restart, doubling, capped at 60 s; forgotten
//! once a replica has gone 60 s without needing a restart. The cumulative count (what
//! `capstan get` shows as RESTARTS) is kept apart and never resets while the daemon runs.
//! The positions live in the service's [`ServiceMemory`]; the functions here read and move
//! them, on the daemon's [`Clock`].

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

use super::memory::{Restarts, ServiceMemory};
pub use super::status::RestartHistory;
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

/// The daemon's clock: the engine dates containers in Unix seconds, and ages are measured
/// on the runtime's clock from the wall time at `started` (so paused test time ages them).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: std::time::SystemTime,
    started: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            epoch: std::time::SystemTime::now(),
            started: Instant::now(),
        }
    }
}

impl Clock {
    /// Unix seconds at `now`.
    fn unix(&self, now: Instant) -> i64 {
        let wall = self.epoch + now.duration_since(self.started);
        let since = wall
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        since.as_secs() as i64
    }

    fn instant_of(&self, rfc3339: &str, now: Instant) -> Instant {
        let Ok(at) = humantime::parse_rfc3339_weak(rfc3339) else {
            return now;
        };
        let wall_now = self.epoch + now.duration_since(self.started);
        let ago = wall_now.duration_since(at).unwrap_or_default();
        now.checked_sub(ago).unwrap_or(now)
    }

    fn wall_of(&self, at: Instant) -> String {
        let wall = self.epoch + at.duration_since(self.started);
        humantime::format_rfc3339_millis(wall).to_string()
    }

    /// How long ago the container was made.
    fn age(&self, replica: &Observed, now: Instant) -> Duration {
        Duration::from_secs(self.unix(now).saturating_sub(replica.created).max(0) as u64)
    }
}

/// The replica's crash-loop position, if its window is still open at `now`.
fn in_window(memory: &ServiceMemory, ordinal: u32, t: &Timing, now: Instant) -> Option<Restarts> {
    let r = *memory.restarts.get(&ordinal)?;
    (now.duration_since(r.last) < t.reset + t.delay_after(r.in_window)).then_some(r)
}

/// Capstan restarted replica `ordinal` (or failed to make it) at `now`.
pub fn record(memory: &mut ServiceMemory, ordinal: u32, timing: &Timing, now: Instant) {
    let in_window = in_window(memory, ordinal, timing, now).map_or(0, |r| r.in_window);
    let total = memory.restarts.get(&ordinal).map_or(0, |r| r.total);
    memory.restarts.insert(
        ordinal,
        Restarts {
            in_window: in_window + 1,
            total: total + 1,
            last: now,
        },
    );
}

/// The crash-loop positions a stored status carries for replicas this daemon has none of
/// its own for (it started, or was elected, after they were made). Pure.
pub fn adopted(
    memory: &ServiceMemory,
    status: &ServiceStatus,
    clock: &Clock,
    now: Instant,
) -> BTreeMap<u32, Restarts> {
    let restarted = status.replica_states.iter().filter(|r| r.restarts > 0);
    restarted
        .filter(|r| !memory.restarts.contains_key(&r.ordinal))
        .map(|r| {
            let (in_window, last) = match &r.crash_loop {
                Some(cl) => (cl.restarts, clock.instant_of(&cl.last_restart_at, now)),
                None => (0, clock.started.min(now)),
            };
            let total = r.restarts;
            (
                r.ordinal,
                Restarts {
                    in_window,
                    total,
                    last,
                },
            )
        })
        .collect()
}

/// Replicas seen healthy now that the memory does not name yet: ordinal → container. Pure.
pub fn newly_healthy(memory: &ServiceMemory, containers: &[Observed]) -> BTreeMap<u32, String> {
    let healthy = containers.iter().filter(|c| c.health == Health::Healthy);
    healthy
        .filter_map(|c| Some((c.ordinal?, c.id.clone())))
        .filter(|(n, id)| memory.healthy.get(n) != Some(id))
        .collect()
}

pub fn delay_after(restarts: u32) -> Duration {
    Timing::default().delay_after(restarts)
}

/// One service's restart history as the planner and the status read it, at one instant.
pub struct ServiceHistory<'a> {
    pub memory: &'a ServiceMemory,
    pub clock: &'a Clock,
    pub timing: Timing,
    pub now: Instant,
}

impl RestartHistory for ServiceHistory<'_> {
    fn total_restarts(&self, ordinal: u32) -> u32 {
        self.memory.restarts.get(&ordinal).map_or(0, |r| r.total)
    }

    fn restarts(&self, ordinal: u32) -> u32 {
        in_window(self.memory, ordinal, &self.timing, self.now).map_or(0, |r| r.in_window)
    }

    fn crash_loop(&self, ordinal: u32) -> Option<CrashLoop> {
        let r = in_window(self.memory, ordinal, &self.timing, self.now)?;
        (r.in_window > 0).then(|| CrashLoop {
            restarts: r.in_window,
            last_restart_at: self.clock.wall_of(r.last),
        })
    }

    fn backoff_left(&self, ordinal: u32) -> Option<Duration> {
        let r = in_window(self.memory, ordinal, &self.timing, self.now)?;
        let due = r.last + self.timing.delay_after(r.in_window);
        (due > self.now).then(|| due - self.now)
    }

    fn settling_left(&self, replica: &Observed, grace: Duration) -> Option<Duration> {
        if self.memory.healthy.get(&replica.ordinal?) == Some(&replica.id) {
            return None;
        }
        let age = self.clock.age(replica, self.now);
        grace.checked_sub(age).filter(|left| !left.is_zero())
    }

    fn age(&self, replica: &Observed) -> Duration {
        self.clock.age(replica, self.now)
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
        let (mut memory, clock) = (ServiceMemory::default(), Clock::default());
        let t = Timing::default();
        record(&mut memory, 1, &t, Instant::now());
        record(&mut memory, 1, &t, Instant::now());
        let at = |memory| ServiceHistory {
            memory,
            clock: &clock,
            timing: t,
            now: Instant::now(),
        };
        let h = at(&memory);
        assert_eq!(h.restarts(1), 2);
        assert_eq!(h.backoff_left(1), Some(Duration::from_secs(2)));
        assert_eq!(h.restarts(2), 0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(at(&memory).backoff_left(1), None);
        tokio::time::advance(BACKOFF_RESET).await;
        assert_eq!(at(&memory).restarts(1), 0);
        assert_eq!(
            at(&memory).total_restarts(1),
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
        let (mut memory, clock) = (ServiceMemory::default(), Clock::default());
        record(&mut memory, 1, &t, Instant::now());
        let at = |memory| ServiceHistory {
            memory,
            clock: &clock,
            timing: t,
            now: Instant::now(),
        };
        assert_eq!(at(&memory).backoff_left(1), Some(Duration::from_secs(90)));
        tokio::time::advance(Duration::from_secs(101)).await;
        assert_eq!(at(&memory).restarts(1), 0, "forgotten after the window");
        assert_eq!(Timing::of(&ServiceSpec::default()), Timing::default());
    }
}
