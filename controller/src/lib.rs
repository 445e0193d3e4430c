//! The capstan daemon: keeps a Docker host converged on the stacks declared in etcd.
//!
//! # Layout
//! Following one service key: [`watch`] → [`scheduler`] → [`reconcile`]'s pipeline
//! (`observe` → `plan` → `act`, whose last step writes the status) → its backend (the
//! engine's containers, over [`runtime`]) and [`traffic`].
//!
//! - [`store`]: desired state in etcd: typed keys, apply committed by one compare-and-swap
//!   of the stack record, status guarded by the spec it describes, the leader key and the
//!   fence on the reconciler's writes. Behind the small [`store::Kv`] trait, with an
//!   in-memory twin for tests (`store::memory`, with the `testing` feature).
//! - [`leader`]: the election; its [`leader::Leadership`] gates the workers, fences the
//!   reconciler's etcd writes and engine calls. [`health`]: whether etcd and the engine
//!   answer now (`/readyz`).
//! - [`watch`]: the watcher (list, watch, relist on compaction; decodes keys into typed
//!   events) and the reflector it alone writes, read through a cheap [`watch::Desired`].
//! - [`runtime`]: the container engine as a few verbs over labelled objects
//!   ([`runtime::Runtime`]), the container reflector (one list, then events), the real
//!   engine ([`runtime::docker`]) and, for tests only (the `testing` feature), an in-memory
//!   one (`runtime::fake`).
//! - [`triggers`]: engine events and the periodic resync; like the watcher, they only
//!   enqueue [`key::ObjectKey`]s.
//! - [`scheduler`]: the key queue (deduplicates, delays, never runs one key twice at once)
//!   and the per-key exponential back-off of failing keys.
//! - [`reconcile`]: `reconcile(key, ctx) -> Result<Action>`, level-triggered and idempotent:
//!   the pipeline stages, the pure planner of every step, one memory per service, the
//!   backend seam and the engine's container backend, status and drift, the stack's part.
//! - [`traffic`]: publishing endpoints (proxy, etcd, Traefik) behind one call.
//! - [`metrics`]: the Prometheus registry, and the decorators that measure etcd and Docker.
//! - [`controller`]: the loop's tasks wired around one context; [`server`]: the HTTP API,
//!   behind [`server::auth`] (who may call: socket peers, bearer tokens, roles) and
//!   [`server::audit`]; with [`server::logs`] and [`server::run`] (the replicas' output, and
//!   one-off containers, `capstan run`, streamed as NDJSON by any daemon, leader or not) and
//!   [`server::build`] (`build:` contexts); [`listen`]: its Unix socket, TCP and TLS
//!   listeners; [`daemon`]: `capstan serve`.
//! - [`files`]: secrets and configs written on the host for the replicas to bind-mount.
//! - [`seal`]: secret values encrypted at rest (the key file, AES-256-GCM, key ids).
//! - [`memory`]: how maps emptied of a deleted big stack give their room back.

pub mod controller;
pub mod daemon;
pub mod files;
pub mod health;
pub mod key;
pub mod leader;
pub mod listen;
pub mod memory;
pub mod metrics;
pub mod reconcile;
pub mod runtime;
pub mod scheduler;
pub mod seal;
pub mod server;
pub mod store;
pub mod traffic;
pub mod triggers;
pub mod watch;
