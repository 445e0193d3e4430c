//! [`Kv`] on etcd v3.

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EC, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp,
    WatchOptions,
};
use futures::stream::{BoxStream, StreamExt};
use std::time::Duration;

use super::kv::*;

/// Above etcd's default --grpc-keepalive-min-time of 5 s.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The largest list or watch response read. gRPC's default of 4 MiB is less than a stack
/// of 2,000 services (each up to etcd's request limit, which bounds writes, not reads).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// An etcd client. Cloning is cheap (one shared channel that reconnects by itself).
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
}

/// Sorts etcd's errors: a refused request (invalid argument, failed precondition, too
/// large, not allowed) is the caller's fault; anything else is taken as an outage.
fn unavailable(e: etcd_client::Error) -> KvError {
    if let etcd_client::Error::GRpcStatus(status) = &e {
        use tonic::Code;
        if matches!(
            status.code(),
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::PermissionDenied
                | Code::Unauthenticated
        ) {
            return KvError::Rejected(status.message().to_string());
        }
    }
    KvError::Unavailable(e.to_string())
}

/// How to reach etcd: where, and with which credentials (`serve --etcd-cacert`,
/// `--etcd-cert`/`--etcd-key`, `--etcd-user` with its password from a file or the
/// environment). Read once at start, so a missing file fails the start, not every retry.
#[derive(Clone, Default)]
pub struct EtcdAccess {
    pub endpoints: Vec<String>,
    /// The CA that signed etcd's server certificate (PEM): required for `https://`.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key (PEM), for an etcd with `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd's user and password (etcd's `auth enable`).
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdAccess {
    /// Never the password, nor the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.ca.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdAccess {
    /// Plain endpoints, no credentials (tests, the in-process fixtures).
    pub fn plain(endpoints: &[String]) -> EtcdAccess {
        EtcdAccess {
            endpoints: endpoints.to_vec(),
            ..Default::default()
        }
    }

    /// Whether etcd took capstan without proof of who it is: an endpoint over TCP (`http://`,
    /// `https://` or none named) while capstan presents neither a client certificate nor a
    /// user. An etcd that lets capstan in that way lets in any local user and any container
    /// on the host network too (`serve` warns, `capstan_etcd_unauthenticated` is 1). TLS
    /// without a client certificate only hides the traffic: it proves nothing about the
    /// client. A `unix://` endpoint is not TCP: the socket file's mode guards it.
    pub fn unauthenticated(&self) -> bool {
        let over_tcp = self
            .endpoints
            .iter()
            .any(|e| !e.starts_with("unix://") && !e.starts_with("unixs://"));
        over_tcp && self.identity.is_none() && self.user.is_none()
    }

    fn tls(&self) -> Option<etcd_client::TlsOptions> {
        let ca = self.ca.as_ref()?;
        let mut tls =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        Some(tls)
    }
}

impl EtcdKv {
    /// Connects to `access.endpoints` (e.g. `http://127.0.0.1:2379`, or `https://` with a
    /// CA). Every request times out after 5 s so an unreachable etcd is reported rather than
    /// waited on forever. Refused credentials are [`KvError::Rejected`]: no retry mends them.
    pub async fn connect(access: &EtcdAccess) -> Result<Self, KvError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            // etcd hangs up on clients that ping more often than its
            // --grpc-keepalive-min-time (5 s by default): every few seconds the watch would
            // break and everything would be relisted and reconciled. A killed etcd is seen at
            // once anyway (the connection resets); the pings only catch silent partitions.
            .with_keep_alive(KEEPALIVE_INTERVAL, Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = access.tls() {
            opts = opts.with_tls(tls);
        }
        if let Some((user, password)) = &access.user {
            // etcd's simple tokens expire (and die with an etcd restart): get a new one.
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        let client = Client::connect(&access.endpoints, Some(opts))
            .await
            .map_err(unavailable)?;
        Ok(EtcdKv { client })
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

#[async_trait]
impl Kv for EtcdKv {
    async fn range(&self, prefix: &str) -> Result<Listing, KvError> {
        let resp = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Listing {
            items: resp.kvs().iter().map(to_kv).collect(),
            revision,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool, KvError> {
        Ok(self.txn_at(compares, ops).await?.is_some())
    }

    async fn txn_at(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<i64>, KvError> {
        let when: Vec<EC> = compares
            .into_iter()
            .map(|Compare::ModRevision(key, rev)| EC::mod_revision(key, CompareOp::Equal, rev))
            .collect();
        let then: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put(k, v) => TxnOp::put(k, v, None),
                Op::PutWithLease(k, v, lease) => {
                    TxnOp::put(k, v, Some(etcd_client::PutOptions::new().with_lease(lease)))
                }
                Op::Delete(k) => TxnOp::delete(k, None),
                Op::DeletePrefix(p) => {
                    TxnOp::delete(p, Some(etcd_client::DeleteOptions::new().with_prefix()))
                }
            })
            .collect();
        let resp = self
            .client
            .clone()
            .txn(Txn::new().when(when).and_then(then))
            .await
            .map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(resp.succeeded().then_some(revision))
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Vec<WatchEvent>, KvError>>, KvError> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_revision)
            .with_progress_notify();
        let stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .watch(prefix, Some(opts))
            .await
            .map_err(unavailable)?;
        let stream = futures::stream::unfold(Some(stream), move |state| async move {
            let mut stream = state?;
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            let err = KvError::Compacted {
                                requested: from_revision,
                                compacted: resp.compact_revision(),
                            };
                            return Some((Err(err), None));
                        }
                        if resp.canceled() {
                            let err = KvError::Unavailable(format!(
                                "watch canceled: {}",
                                resp.cancel_reason()
                            ));
                            return Some((Err(err), None));
                        }
                        let batch: Vec<WatchEvent> = resp
                            .events()
                            .iter()
                            .filter_map(|e| {
                                let kv = e.kv()?;
                                Some(match e.event_type() {
                                    EventType::Put => WatchEvent::Put(to_kv(kv)),
                                    EventType::Delete => WatchEvent::Delete {
                                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                                        mod_revision: kv.mod_revision(),
                                    },
                                })
                            })
                            .collect();
                        if batch.is_empty() {
                            continue;
                        }
                        return Some((Ok(batch), Some(stream)));
                    }
                    Ok(None) => {
                        return Some((Err(KvError::Unavailable("watch stream ended".into())), None))
                    }
                    Err(e) => return Some((Err(unavailable(e)), None)),
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let resp = self
            .client
            .clone()
            .lease_grant(ttl.as_secs().max(1) as i64, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, KvError> {
        let (mut keeper, mut stream) = match self.client.clone().lease_keep_alive(lease).await {
            Ok(pair) => pair,
            // etcd answered: the lease is gone (the client reports a TTL of 0 this way).
            Err(etcd_client::Error::LeaseKeepAliveError(e)) if e == "lease not found" => {
                return Ok(None)
            }
            Err(e) => return Err(unavailable(e)),
        };
        keeper.keep_alive().await.map_err(unavailable)?;
        match stream.message().await.map_err(unavailable)? {
            Some(resp) if resp.ttl() > 0 => Ok(Some(Duration::from_secs(resp.ttl() as u64))),
            Some(_) => Ok(None),
            None => Err(KvError::Unavailable("lease keep-alive stream ended".into())),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            // Already gone: what revoking wanted.
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(endpoint: &str) -> EtcdAccess {
        EtcdAccess::plain(&[endpoint.to_string()])
    }

    #[test]
    fn a_plain_tcp_endpoint_without_credentials_is_unauthenticated() {
        assert!(access("http://127.0.0.1:2379").unauthenticated());
        assert!(access("127.0.0.1:2379").unauthenticated());
    }

    #[test]
    fn tls_without_a_client_certificate_or_user_is_still_unauthenticated() {
        let tls = EtcdAccess {
            ca: Some(b"ca".to_vec()),
            ..access("https://127.0.0.1:2379")
        };
        assert!(tls.unauthenticated());
    }

    #[test]
    fn a_client_certificate_or_a_user_authenticates_capstan() {
        let cert = EtcdAccess {
            ca: Some(b"ca".to_vec()),
            identity: Some((b"cert".to_vec(), b"key".to_vec())),
            ..access("https://127.0.0.1:2379")
        };
        let user = EtcdAccess {
            user: Some(("capstan".into(), "secret".into())),
            ..access("http://127.0.0.1:2379")
        };
        assert!(!cert.unauthenticated());
        assert!(!user.unauthenticated());
    }

    #[test]
    fn a_unix_socket_endpoint_is_not_tcp() {
        assert!(!access("unix:///run/etcd.sock").unauthenticated());
    }
}
