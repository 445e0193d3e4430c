//! Serving one listener within a budget: at most [`Limits::connections`] connections at
//! once, each closed when it is quiet too long ([`Timeouts`]), and an accept loop that backs
//! off when the process runs out of file descriptors instead of spinning.
//!
//! # Why the healing path never waits on the API
//! Every API connection is one file descriptor, and a listener only accepts while it holds
//! a permit from its own budget: the three budgets sum to [`SOCKET_CONNECTIONS`] +
//! [`TCP_CONNECTIONS`] + [`METRICS_CONNECTIONS`] = 832, well below even a 1,024 file limit
//! (and the daemon raises its soft limit to the hard one at start, [`raise_fd_limit`]). The
//! descriptors the control loop needs (the engine's socket, etcd's channel, the files it
//! writes) come from what is left, so no client, however many connections it opens, can
//! starve them. Clients beyond a budget wait in the kernel's listen backlog, which costs the
//! daemon no descriptor.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::quiet::{Busy, Quiet};
use crate::server::caller::Peer;

/// Connections on the Unix socket: admins and the CLI, one per command, plus one per
/// `watch`, `logs -f` or `run` stream someone holds open. A few hundred is far more than a
/// host's operators use, and a runaway script on the host still cannot take the others'.
pub const SOCKET_CONNECTIONS: usize = 256;
/// Connections on TCP/TLS `--listen`: remote CLIs and CI jobs, the only listener an
/// unauthenticated stranger can reach, so the one a flood hits; twice the socket's budget
/// for the larger audience, and still small beside the file limit.
pub const TCP_CONNECTIONS: usize = 512;
/// Connections on `--metrics-listen`: a Prometheus scrape and a few probes at a time.
pub const METRICS_CONNECTIONS: usize = 64;

/// How long a connection may stay quiet, on every listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From a request's first byte (or a TLS connection's accept) to its last header byte:
    /// a client sending its headers a byte at a time holds a connection no longer than
    /// this. 10 s is far beyond what any real client on any network needs.
    pub header_read: Duration,
    /// A keep-alive connection with no request in flight, between two requests (or before
    /// the first byte of the first), is closed after this. A response in progress (a log
    /// `follow`, `run` output, a watch, build progress) is never idle, however long it
    /// streams. 60 s outlives the clients' own pools' reuse of a connection.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// One listener's budget.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a connection may stay quiet.
    pub timeouts: Timeouts,
    /// Connections served at once; the next wait in the kernel's backlog.
    pub connections: usize,
}

/// How long the accept loop pauses when the process is out of file descriptors (or the
/// kernel out of memory for sockets): long enough not to spin, short enough that a freed
/// descriptor is used soon.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

/// A listener [`serve`] accepts from.
pub enum Listener {
    /// The Unix socket; the peer's credentials identify it.
    Unix(UnixListener),
    /// Plain TCP (loopback only, checked before binding).
    Tcp(TcpListener),
    /// TCP with TLS; the handshake runs in the connection's task, within its budget and
    /// bounded by the header-read timeout.
    Tls(TcpListener, TlsAcceptor),
}

/// A connection just accepted, before any byte is read.
enum Accepted {
    Ready(Box<dyn Io>, Peer),
    Tls(TcpStream, std::net::SocketAddr, TlsAcceptor),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        Ok(match self {
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                let cred = crate::server::caller::UnixCred::of(&stream);
                Accepted::Ready(Box::new(stream), Peer::Unix(cred))
            }
            Listener::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                Accepted::Ready(Box::new(stream), Peer::Tcp { addr, cert: None })
            }
            Listener::Tls(l, acceptor) => {
                let (stream, addr) = l.accept().await?;
                Accepted::Tls(stream, addr, acceptor.clone())
            }
        })
    }
}

impl Accepted {
    /// The stream to speak HTTP on, once TLS (if any) is up; `None` if the handshake
    /// failed or took longer than `timeout`.
    async fn ready(self, timeout: Duration) -> Option<(Box<dyn Io>, Peer)> {
        let (stream, addr, acceptor) = match self {
            Accepted::Ready(io, peer) => return Some((io, peer)),
            Accepted::Tls(stream, addr, acceptor) => (stream, addr, acceptor),
        };
        let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "TLS handshake timed out");
                return None;
            }
        };
        // A client certificate, when there is one, was verified in the handshake.
        let cert = (tls.get_ref().1.peer_certificates())
            .and_then(|c| c.first())
            .map(|der| crate::server::caller::ClientCert::of(der));
        Some((Box::new(tls), Peer::Tcp { addr, cert }))
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then waits for the connections
/// in progress to finish (idle ones are closed at once). `name` names the listener in logs.
pub async fn serve(
    listener: Listener,
    app: Router,
    limits: Limits,
    name: &'static str,
    shutdown: watch::Receiver<bool>,
) {
    let budget = Arc::new(Semaphore::new(limits.connections));
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    let mut burst = Burst::default();
    loop {
        // A permit first: over budget, the next client waits in the backlog, not in an fd.
        let permit = tokio::select! {
            p = budget.clone().acquire_owned() => p.expect("the budget is never closed"),
            _ = &mut stop => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
        };
        match accepted {
            Ok(accepted) => {
                burst.over(name);
                let conn = Connection {
                    app: app.clone(),
                    timeouts: limits.timeouts,
                    _permit: permit,
                };
                tokio::spawn(conn.run(accepted, shutdown.clone()));
            }
            Err(e) if exhausted(&e) => {
                burst.failed(name, &e);
                tokio::select! {
                    _ = tokio::time::sleep(EXHAUSTED_BACKOFF) => {}
                    _ = &mut stop => break,
                }
            }
            // One client's failure (it reset before we accepted it, ...): the next one.
            Err(e) => tracing::debug!(listener = name, error = %e, "accept failed"),
        }
    }
    drop(listener);
    // Every connection task holds a permit until it ends.
    let all = u32::try_from(limits.connections).unwrap_or(u32::MAX);
    let _ = budget.acquire_many(all).await;
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Accept failures that say the process or the kernel is out of a resource: retrying at
/// once would fail again, in a busy loop.
fn exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accept failures in a row, logged once when they start and once when they end.
#[derive(Default)]
struct Burst {
    /// Failures since the last successful accept.
    failures: u64,
}

impl Burst {
    fn failed(&mut self, name: &'static str, e: &io::Error) {
        if self.failures == 0 {
            tracing::warn!(listener = name, error = %e, "cannot accept connections; backing off until resources are free");
        }
        self.failures += 1;
    }

    fn over(&mut self, name: &'static str) {
        if self.failures > 0 {
            tracing::info!(
                listener = name,
                failures = self.failures,
                "accepting connections again"
            );
            self.failures = 0;
        }
    }
}

/// One accepted connection's task.
struct Connection {
    /// The API (or the probes) this connection is served.
    app: Router,
    /// When it is closed for being quiet.
    timeouts: Timeouts,
    /// Its place in the listener's budget, given back when the task ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, accepted: Accepted, shutdown: watch::Receiver<bool>) {
        let Some((io, peer)) = accepted.ready(self.timeouts.header_read).await else {
            return;
        };
        let quiet = Arc::new(Quiet::new());
        let io = Watched {
            inner: io,
            quiet: quiet.clone(),
        };
        let app = self.app;
        let on_request = quiet.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            let busy = on_request.begin();
            let call = app.clone().oneshot(req);
            async move {
                let response = call
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
            }
        });
        // The timeouts are `Quiet`'s: hyper's own header timer would also close a
        // keep-alive connection `header_read` after its last response.
        let conn = hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let expired = quiet.expired(self.timeouts);
        tokio::pin!(expired);
        let stop = stopped(shutdown);
        tokio::pin!(stop);
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                // Dropping the connection closes it; no request is in flight.
                why = &mut expired => {
                    tracing::debug!(?why, "closing a quiet connection");
                    return;
                }
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A connection's stream, telling its [`Quiet`] when a request's first bytes arrive.
struct Watched {
    inner: Box<dyn Io>,
    quiet: Arc<Quiet>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.quiet.read_some();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request in flight (for [`Quiet`]) until it is sent.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Raises this process' soft limit on open files to its hard limit, as Go's runtime does
/// for every Go server: the soft limit (often 1,024 under systemd) is a guard for old
/// `select(2)` users, not a budget. Returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_its_place_in_the_budget_goes_to_the_next_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = Limits {
            timeouts: Timeouts {
                header_read: Duration::from_millis(200),
                idle: Duration::from_millis(200),
            },
            connections: 1,
        };
        let (stop, rx) = watch::channel(false);
        let server = tokio::spawn(serve(Listener::Tcp(listener), app, limits, "test", rx));

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut next = TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 256];
        let n = next.read(&mut answer).await.unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &answer[..n]
        );
        // With room for one connection, the one accepted first (the silent one) had to be
        // closed by the idle timeout before the next could be served.
        assert_eq!(silent.read(&mut [0u8; 16]).await.unwrap(), 0);

        stop.send(true).unwrap();
        drop(next);
        server.await.unwrap();
    }

    #[test]
    fn running_out_of_descriptors_is_told_from_one_clients_failure() {
        assert!(exhausted(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(exhausted(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!exhausted(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
