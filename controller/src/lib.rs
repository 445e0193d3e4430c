//! The capstan daemon: keeps a Docker host converged on the stacks declared in etcd.
//!
//! # Layout
//! - [`store`]: desired state in etcd: typed keys, apply as one compare-and-swap
//!   transaction, status guarded by the spec it describes. Behind the small [`store::Kv`]
//!   trait, with an in-memory twin for tests.
//! - [`runtime`]: the container engine as a few verbs over labelled objects
//!   ([`runtime::Runtime`]); [`runtime::docker`] is the real one, [`runtime::fake`] an
//!   in-memory one for tests and scale simulations.
//! - [`cache`]: the reflector, an in-memory copy of desired state; [`watcher`] keeps it in
//!   step with etcd (list, watch, relist on compaction, freeze while etcd is away).
//! - [`triggers`]: Docker events and the periodic resync; like the watcher, they only
//!   enqueue keys.
//! - [`scheduler`]: the key queue: deduplicates, delays, never runs one key twice at once.
//! - [`reconcile`]: `reconcile(key, ctx) -> Result<Action>`, level-triggered and idempotent,
//!   with its pure planner and status computation.
//! - [`traffic`]: endpoints of ready replicas, the built-in proxy, Traefik's views.
//! - [`metrics`]: Prometheus metrics, and the decorators that measure etcd and Docker calls.
//! - [`server`]: the HTTP API; [`daemon`] wires everything for `capstan serve`.

pub mod cache;
pub mod daemon;
pub mod metrics;
pub mod reconcile;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod traffic;
pub mod triggers;
pub mod watcher;
