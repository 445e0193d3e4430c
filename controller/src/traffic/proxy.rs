//! The built-in TCP proxy: one listener per proxied host port, connections balanced
//! round-robin over the service's endpoints. The backend list is swapped atomically, so an
//! update never drops an established connection; a backend that refuses a connection is
//! skipped for the next. Active connections are counted per backend so a leaving replica
//! can be drained before it is stopped. A port that declares the PROXY protocol opens each
//! connection to a replica with the client's address ([`super::proxy_protocol`]).

use capstan_api::spec::ProxyProtocol;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a connection attempt to one backend may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// (stack, service, host port).
type Key = (String, String, u16);

#[derive(Default)]
pub struct Proxies {
    listeners: Mutex<HashMap<Key, Listener>>,
}

struct Listener {
    bind: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    backends: RwLock<Arc<Vec<SocketAddr>>>,
    /// The PROXY protocol the replicas expect first, if any.
    protocol: RwLock<Option<ProxyProtocol>>,
    next: AtomicUsize,
    /// Open connections per backend, for draining.
    active: Mutex<HashMap<SocketAddr, usize>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxies {
    /// Makes sure `bind` is served for (stack, service) and sends it to `backends`, each
    /// connection opened with a `protocol` header if one is given.
    pub async fn serve(
        &self,
        stack: &str,
        service: &str,
        bind: SocketAddr,
        backends: Vec<SocketAddr>,
        protocol: Option<ProxyProtocol>,
    ) -> std::io::Result<()> {
        let key = (stack.to_string(), service.to_string(), bind.port());
        {
            let listeners = self.listeners.lock().unwrap();
            if let Some(l) = listeners.get(&key).filter(|l| l.bind == bind) {
                *l.shared.backends.write().unwrap() = Arc::new(backends);
                *l.shared.protocol.write().unwrap() = protocol;
                return Ok(());
            }
        }
        let listener = TcpListener::bind(bind).await?;
        let shared = Arc::new(Shared {
            backends: RwLock::new(Arc::new(backends)),
            protocol: RwLock::new(protocol),
            ..Default::default()
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::info!(%stack, %service, %bind, "proxy listening");
        self.listeners
            .lock()
            .unwrap()
            .insert(key, Listener { bind, shared, task });
        Ok(())
    }

    /// Listeners open.
    pub fn listening(&self) -> usize {
        self.listeners.lock().unwrap().len()
    }

    /// Stops serving the host ports of (stack, service) not in `keep`.
    pub fn retain(&self, stack: &str, service: &str, keep: &[u16]) {
        self.listeners
            .lock()
            .unwrap()
            .retain(|(s, v, port), _| !(s == stack && v == service && !keep.contains(port)));
    }

    /// Waits until no connection to `backends` is open, at most `timeout`.
    pub async fn drain(&self, backends: &[SocketAddr], timeout: Duration) {
        let shared: Vec<Arc<Shared>> = self
            .listeners
            .lock()
            .unwrap()
            .values()
            .map(|l| l.shared.clone())
            .collect();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open: usize = shared
                .iter()
                .map(|s| {
                    let active = s.active.lock().unwrap();
                    backends
                        .iter()
                        .map(|b| active.get(b).copied().unwrap_or(0))
                        .sum::<usize>()
                })
                .sum();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The backends a host port currently sends to (for tests and diagnostics).
    pub fn backends(&self, stack: &str, service: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let listeners = self.listeners.lock().unwrap();
        let l = listeners.get(&(stack.to_string(), service.to_string(), port))?;
        let backends = l.shared.backends.read().unwrap().clone();
        Some(backends.as_ref().clone())
    }

    /// Closes every listener (shutdown).
    pub fn close_all(&self) {
        self.listeners.lock().unwrap().clear();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(relay(client, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay(mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let backends = shared.backends.read().unwrap().clone();
    if backends.is_empty() {
        return;
    }
    let header = match *shared.protocol.read().unwrap() {
        None => None,
        Some(version) => match (client.peer_addr(), client.local_addr()) {
            (Ok(peer), Ok(local)) => Some(super::proxy_protocol::header(version, peer, local)),
            // The client is gone already.
            _ => return,
        },
    };
    let start = shared.next.fetch_add(1, Ordering::Relaxed);
    for i in 0..backends.len() {
        let backend = backends[(start + i) % backends.len()];
        let upstream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
                Ok(Ok(s)) => s,
                _ => continue,
            };
        let _ = upstream.set_nodelay(true);
        *shared.active.lock().unwrap().entry(backend).or_default() += 1;
        let mut upstream = upstream;
        let introduced = match &header {
            Some(h) => upstream.write_all(h).await.is_ok(),
            None => true,
        };
        if introduced {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        let mut active = shared.active.lock().unwrap();
        if let Some(n) = active.get_mut(&backend) {
            *n -= 1;
            if *n == 0 {
                active.remove(&backend);
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(tag: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = s.write_all(tag.as_bytes()).await;
                });
            }
        });
        addr
    }

    async fn ask(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn connections_are_balanced_round_robin_and_follow_updates() {
        let (a, b) = (echo_server("a").await, echo_server("b").await);
        let p = Proxies::default();
        let bind = free_addr();
        p.serve("s", "web", bind, vec![a, b], None).await.unwrap();
        let mut seen = vec![ask(bind).await, ask(bind).await];
        seen.sort();
        assert_eq!(seen, vec!["a", "b"]);
        p.serve("s", "web", bind, vec![b], None).await.unwrap();
        assert_eq!(
            (ask(bind).await, ask(bind).await),
            ("b".to_string(), "b".to_string())
        );
    }

    #[tokio::test]
    async fn a_refused_backend_is_skipped_for_the_next() {
        let dead = free_addr();
        let live = echo_server("live").await;
        let p = Proxies::default();
        let bind = free_addr();
        p.serve("s", "web", bind, vec![dead, live], None)
            .await
            .unwrap();
        for _ in 0..4 {
            assert_eq!(ask(bind).await, "live");
        }
    }

    #[tokio::test]
    async fn retain_closes_listeners_no_longer_wanted() {
        let p = Proxies::default();
        let bind = free_addr();
        p.serve("s", "web", bind, vec![], None).await.unwrap();
        p.retain("s", "web", &[]);
        tokio::task::yield_now().await;
        assert!(p.backends("s", "web", bind.port()).is_none());
        assert!(
            std::net::TcpListener::bind(bind).is_ok(),
            "the port is free again"
        );
    }

    /// A backend that answers with the first line it reads.
    async fn first_line_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut s = tokio::io::BufStream::new(s);
                    let mut line = String::new();
                    let _ = tokio::io::AsyncBufReadExt::read_line(&mut s, &mut line).await;
                    let _ = s.write_all(line.as_bytes()).await;
                    let _ = s.flush().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_port_with_the_proxy_protocol_tells_the_backend_the_clients_address_first() {
        let backend = first_line_server().await;
        let p = Proxies::default();
        let bind = free_addr();
        let v1 = Some(ProxyProtocol::V1);
        p.serve("s", "web", bind, vec![backend], v1).await.unwrap();
        let mut s = TcpStream::connect(bind).await.unwrap();
        let client = s.local_addr().unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let want = format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
            client.port(),
            bind.port()
        );
        assert_eq!(out, want);
        p.serve("s", "web", bind, vec![backend], None)
            .await
            .unwrap();
        let mut s = TcpStream::connect(bind).await.unwrap();
        s.write_all(b"plain\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(
            out, "plain\n",
            "no header once the port no longer declares one"
        );
    }
}
