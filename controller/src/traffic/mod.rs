//! Traffic follows health: the endpoints of a service are its ready replicas; the built-in
//! proxy and the Traefik views are fed from them.
//!
//! - [`endpoints`]: which replicas are endpoints, with addresses and ports. Pure.
//! - [`proxy`]: one listener per proxied host port, balancing over the endpoints.
//! - [`traefik`]: Traefik's HTTP-provider configuration and etcd KV layout. Pure.

pub mod endpoints;
pub mod proxy;
pub mod traefik;
