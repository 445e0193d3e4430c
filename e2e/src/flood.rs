//! A connection flood against a TCP listener, for the tests and the benchmark of the
//! daemon's connection budgets: `idle` connections that send nothing and `half_sent` ones
//! that send part of a request's headers and then nothing, each opened again as soon as
//! the daemon closes it, so the pressure lasts until the [`Flood`] is dropped.
//!
//! Bounded: a fixed number of connections, loopback only in the callers, each connect
//! bounded by [`CONNECT_TIMEOUT`]. Dropping the flood closes every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A request line and the start of a header, never finished.
pub const PARTIAL_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// A connect beyond the listener's budget and backlog waits for the kernel to retry its
/// SYN; after this it is abandoned and tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the flood saw, updated as it runs.
#[derive(Default)]
pub struct FloodStats {
    /// Connections established and not yet closed.
    pub open: AtomicUsize,
    /// Connections the daemon closed (the flood itself never closes one until dropped).
    pub closed_by_peer: AtomicU64,
    /// Connects that failed or timed out.
    pub connect_failures: AtomicU64,
}

/// The flood's connections, on a thread of their own; dropped, they all close.
pub struct Flood {
    /// What the flood saw.
    pub stats: Arc<FloodStats>,
    /// Turned true on drop: every connection task ends, closing its socket.
    stop: watch::Sender<bool>,
    /// The thread running the connections.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// Starts `idle` + `half_sent` connections against `addr`.
    pub fn start(addr: SocketAddr, idle: usize, half_sent: usize) -> Flood {
        raise_own_fd_limit(idle + half_sent);
        let stats = Arc::new(FloodStats::default());
        let (stop, rx) = watch::channel(false);
        let thread = std::thread::spawn({
            let stats = stats.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the flood");
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..idle + half_sent {
                        let payload: &'static [u8] =
                            if i < half_sent { PARTIAL_REQUEST } else { b"" };
                        tasks.spawn(hold(addr, payload, stats.clone(), rx.clone()));
                    }
                    tasks.join_all().await;
                });
            }
        });
        Flood {
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// Connections the daemon has closed so far.
    pub fn closed_by_peer(&self) -> u64 {
        self.stats.closed_by_peer.load(Ordering::SeqCst)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// One connection of the flood, opened again whenever the daemon closes it.
async fn hold(
    addr: SocketAddr,
    payload: &'static [u8],
    stats: Arc<FloodStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
        let conn = tokio::select! {
            c = connect => c,
            _ = stopped(&mut stop) => return,
        };
        let Ok(Ok(mut stream)) = conn else {
            stats.connect_failures.fetch_add(1, Ordering::SeqCst);
            // Refused at once (the daemon is gone): not a busy loop.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = stopped(&mut stop) => return,
            }
        };
        stats.open.fetch_add(1, Ordering::SeqCst);
        let _ = stream.write_all(payload).await;
        let mut buf = [0u8; 512];
        // Whatever comes back (end of stream, a reset, an error response) ends this one.
        let closed = tokio::select! {
            _ = stream.read(&mut buf) => true,
            _ = stopped(&mut stop) => false,
        };
        stats.open.fetch_sub(1, Ordering::SeqCst);
        if !closed {
            return;
        }
        stats.closed_by_peer.fetch_add(1, Ordering::SeqCst);
    }
}

/// The flood needs a descriptor per connection: this process' soft limit goes up to its
/// hard one, which must leave room for `connections`.
fn raise_own_fd_limit(connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    assert!(
        lim.rlim_max as usize > connections + 256,
        "the flood needs {connections} open files, but this process' hard limit is {} \
         (raise it: ulimit -Hn)",
        lim.rlim_max
    );
}

/// Runs `f` (which starts a process) with this process' soft open-files limit at `soft`,
/// so that the process inherits it, as a daemon under systemd's usual soft limit would;
/// the limit is back to what it was afterwards.
pub fn with_soft_limit<T>(soft: u64, f: impl FnOnce() -> T) -> T {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let lowered = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let out = f();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    out
}

/// Sets a running process' open-files limit (`prlimit --nofile=SOFT:HARD`), as systemd's
/// `LimitNOFILE=` would have at its start.
pub fn limit_open_files(pid: u32, soft: u64, hard: u64) {
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .output()
        .expect("prlimit (util-linux) is needed to limit the daemon's open files");
    assert!(
        out.status.success(),
        "prlimit --pid {pid} --nofile={soft}:{hard}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process' open-files limits (soft, hard), from /proc.
pub fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = (limits.lines())
        .find(|l| l.starts_with("Max open files"))
        .expect("/proc/PID/limits names the open files limit");
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

/// Descriptors a process has open now, from /proc.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
