//! Traffic follows health: the endpoints of a service are its ready replicas; the built-in
//! proxy and the Traefik views are fed from them. The reconciler makes one call,
//! [`Traffic::publish`] (and [`Traffic::unpublish`] for a removed service); everything a
//! change of endpoints means (proxy backends, draining, etcd, Traefik's KV) happens here.
//!
//! - [`endpoints`]: which replicas are endpoints, with addresses and ports. Pure.
//! - [`proxy`]: one listener per proxied host port, balancing over the endpoints.
//! - [`proxy_protocol`]: the PROXY protocol header that passes the client's address on. Pure.
//! - [`traefik`]: Traefik's HTTP-provider configuration and etcd KV layout. Pure.

pub mod endpoints;
pub mod proxy;
pub mod proxy_protocol;
pub mod traefik;

use capstan_api::object::{Endpoints, Service};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Metrics;
use crate::runtime::Observed;
use crate::store::{Store, StoreError};
use crate::watch::Desired;

/// Publishes endpoints to the proxy, etcd and Traefik's KV layout.
pub struct Traffic {
    store: Store,
    /// Where endpoints written before this process started are found, so a restarted
    /// daemon does not write them again.
    desired: Desired,
    proxies: proxy::Proxies,
    /// `serve --traefik-etcd-root`: also write Traefik's etcd KV layout under this root.
    traefik_root: Option<String>,
    metrics: Arc<Metrics>,
}

/// What [`Traffic::publish`] did.
pub struct Published {
    /// The host ports that could not be served.
    pub unserved: Vec<Unserved>,
    /// The endpoints written, when they changed.
    pub written: Option<Arc<Endpoints>>,
}

/// A proxied host port that could not be served.
#[derive(Debug)]
pub struct Unserved {
    pub bind: SocketAddr,
    pub error: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
#[error("writing endpoints of {stack}/{service}: {source}")]
pub struct TrafficError {
    pub stack: String,
    pub service: String,
    #[source]
    pub source: StoreError,
}

impl Traffic {
    pub fn new(
        store: Store,
        desired: Desired,
        traefik_root: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Traffic {
            store,
            desired,
            proxies: Default::default(),
            traefik_root,
            metrics,
        }
    }

    /// Points the service's traffic at its ready replicas that are not `leaving`: the
    /// proxy's backends first, then the endpoints in etcd (and Traefik's KV) when they
    /// differ from `last`, the endpoints last written (so an unchanged service writes
    /// nothing). Then the leaving replicas' open proxied connections drain (up to the
    /// service's grace period), so the caller may stop them. `since`: when the reconcile
    /// began, for the update-latency metric.
    pub async fn publish(
        &self,
        service: &Service,
        observed: &[Observed],
        leaving: &BTreeSet<String>,
        since: Instant,
        last: Option<Arc<Endpoints>>,
    ) -> Result<Published, TrafficError> {
        let eps = endpoints::compute(service, observed, leaving);
        let unserved = self.serve_proxies(service, &eps).await;
        let mut written = None;
        if last.as_deref() != Some(&eps) {
            self.write(service, &eps).await?;
            tracing::debug!(stack = %service.stack, service = %service.name, endpoints = eps.endpoints.len(), "endpoints updated");
            written = Some(Arc::new(eps.clone()));
        }
        let written_after = written.as_ref().map(|_| since.elapsed());
        self.metrics.endpoints(
            &service.stack,
            &service.name,
            eps.endpoints.len(),
            written_after,
        );
        self.drain(service, observed, leaving).await;
        Ok(Published { unserved, written })
    }

    /// Takes a removed service out of traffic: proxy, endpoints, Traefik. `written`: this
    /// process wrote endpoints the reflector may not show yet.
    pub async fn unpublish(
        &self,
        stack: &str,
        name: &str,
        written: bool,
    ) -> Result<(), TrafficError> {
        self.proxies.retain(stack, name, &[]);
        if !written && self.desired.endpoints(stack, name).is_none() {
            return Ok(());
        }
        let failed = |source| TrafficError {
            stack: stack.into(),
            service: name.into(),
            source,
        };
        self.store
            .delete_endpoints(stack, name)
            .await
            .map_err(failed)?;
        if let Some(root) = &self.traefik_root {
            let prefix = traefik::service_prefix(root, stack, name);
            self.store
                .replace_subtree(&prefix, vec![])
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Forgets a service whose keys are gone already: its proxy listeners close, without
    /// writing to etcd.
    pub fn forget(&self, stack: &str, name: &str) {
        self.proxies.retain(stack, name, &[]);
    }

    /// The proxy's listeners open.
    pub fn remembered(&self) -> usize {
        self.proxies.listening()
    }

    /// Every listener closes (shutdown).
    pub fn close(&self) {
        self.proxies.close_all();
    }

    async fn serve_proxies(&self, service: &Service, eps: &Endpoints) -> Vec<Unserved> {
        let mut unserved = vec![];
        let mut keep = vec![];
        let replicas = service.spec.replicas;
        for p in service.spec.ports.iter().filter(|p| p.proxied(replicas)) {
            let (host_port, _) = p.host_ports.unwrap_or_default();
            keep.push(host_port);
            // Never a wider address than the file says: a host IP stored before it was
            // validated is a condition, not a listener on every interface.
            let ip = match p.host_ip.as_deref().map(str::parse::<IpAddr>) {
                None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                Some(Ok(ip)) => ip,
                Some(Err(_)) => {
                    unserved.push(Unserved {
                        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), host_port),
                        error: std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("host IP {:?} is not an IP address", p.host_ip),
                        ),
                    });
                    continue;
                }
            };
            let bind = SocketAddr::new(ip, host_port);
            let backends = endpoints::backends(eps, p.container_port);
            if let Err(error) = self
                .proxies
                .serve(
                    &service.stack,
                    &service.name,
                    bind,
                    backends,
                    p.proxy_protocol,
                )
                .await
            {
                unserved.push(Unserved { bind, error });
            }
        }
        self.proxies.retain(&service.stack, &service.name, &keep);
        unserved
    }

    async fn write(&self, service: &Service, eps: &Endpoints) -> Result<(), TrafficError> {
        let failed = |source| TrafficError {
            stack: service.stack.clone(),
            service: service.name.clone(),
            source,
        };
        self.store.write_endpoints(eps).await.map_err(failed)?;
        if let Some(root) = &self.traefik_root {
            let (prefix, pairs) = traefik::kv_pairs(root, service, Some(eps));
            self.store
                .replace_subtree(&prefix, pairs)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Waits until the leaving replicas' proxied connections are done, at most the
    /// service's grace period.
    async fn drain(&self, service: &Service, observed: &[Observed], leaving: &BTreeSet<String>) {
        if leaving.is_empty() {
            return;
        }
        let draining: Vec<SocketAddr> = observed
            .iter()
            .filter(|c| leaving.contains(&c.id))
            .flat_map(|c| {
                let ip = c.addresses.values().next().and_then(|ip| ip.parse().ok());
                service
                    .spec
                    .ports
                    .iter()
                    .filter(|p| p.proxied(service.spec.replicas))
                    .filter_map(move |p| Some(SocketAddr::new(ip?, p.container_port)))
            })
            .collect();
        if !draining.is_empty() {
            self.proxies
                .drain(&draining, service.spec.stop_grace())
                .await;
        }
    }
}
