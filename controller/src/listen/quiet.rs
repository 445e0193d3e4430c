//! When a connection has been quiet too long: the header-read and idle timeouts.
//!
//! A connection is *busy* while a request is in flight: from the moment its headers are
//! read until its response has been sent, however long that response streams. Otherwise
//! it is *quiet*, and closed `idle` after it went quiet, or `header_read` after the first
//! byte of the next request if its headers are still incomplete by then.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Timeouts;

/// No byte of a next request yet.
const NONE: u64 = u64::MAX;

/// Why a quiet connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A request's headers took longer than `header_read`.
    HeaderRead,
    /// No request came for `idle`.
    Idle,
}

/// One connection's clock, shared by its stream (bytes read), its service (requests in
/// flight) and its watchdog ([`Quiet::expired`]).
pub struct Quiet {
    /// The origin of the millisecond stamps below.
    epoch: Instant,
    /// Requests whose response is not yet sent.
    in_flight: AtomicUsize,
    /// When the connection last went quiet (accept, or a response sent), in ms.
    quiet_since: AtomicU64,
    /// When the first byte of the next request arrived, in ms, or [`NONE`].
    head_since: AtomicU64,
    /// Wakes the watchdog when the state above changes its deadline.
    changed: Notify,
}

/// A request in flight; dropping it (with the response body) makes the connection quiet.
pub struct Busy(Arc<Quiet>);

impl Default for Quiet {
    fn default() -> Self {
        Quiet::new()
    }
}

impl Quiet {
    pub fn new() -> Quiet {
        Quiet {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived: while quiet, the first ones start the header-read timer.
    pub fn read_some(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0
            && (self.head_since)
                .compare_exchange(NONE, self.now(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.changed.notify_waiters();
        }
    }

    /// A request's headers are in: the connection is busy until the [`Busy`] is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Returns when the connection has been quiet too long; never while it is busy.
    pub async fn expired(&self, timeouts: Timeouts) -> Expiry {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let head = self.head_since.load(Ordering::SeqCst);
            let (deadline, why) = if head != NONE {
                (
                    head + timeouts.header_read.as_millis() as u64,
                    Expiry::HeaderRead,
                )
            } else {
                let since = self.quiet_since.load(Ordering::SeqCst);
                (since + timeouts.idle.as_millis() as u64, Expiry::Idle)
            };
            if self.now() >= deadline {
                return why;
            }
            let at = self.epoch + std::time::Duration::from_millis(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = changed => {}
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let q = &self.0;
        // The new quiet period is stamped before it is visible as quiet.
        q.quiet_since.store(q.now(), Ordering::SeqCst);
        q.head_since.store(NONE, Ordering::SeqCst);
        q.in_flight.fetch_sub(1, Ordering::SeqCst);
        q.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    /// Runs `expired` until it returns, and says after how long (in paused time).
    async fn expiry_after(q: &Quiet) -> (Expiry, Duration) {
        let start = Instant::now();
        let why = q.expired(T).await;
        (why, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
        let q = Quiet::new();
        assert_eq!(expiry_after(&q).await, (Expiry::Idle, T.idle));
    }

    #[tokio::test(start_paused = true)]
    async fn half_sent_headers_are_closed_after_the_header_read_timeout() {
        let q = Arc::new(Quiet::new());
        let watchdog = tokio::spawn({
            let q = q.clone();
            async move { expiry_after(&q).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        q.read_some();
        let (why, after) = watchdog.await.unwrap();
        assert_eq!(why, Expiry::HeaderRead);
        assert_eq!(after, Duration::from_secs(5) + T.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_response_is_never_idle_and_the_idle_clock_starts_when_it_ends() {
        let q = Arc::new(Quiet::new());
        q.read_some();
        let busy = q.begin();
        let watchdog = tokio::spawn({
            let q = q.clone();
            async move { expiry_after(&q).await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watchdog.is_finished());
        drop(busy);
        let (why, after) = watchdog.await.unwrap();
        assert_eq!(why, Expiry::Idle);
        assert_eq!(after, Duration::from_secs(600) + T.idle);
    }
}
