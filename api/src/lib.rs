//! Capstan's resource model and the Compose dialect it accepts. Pure: no I/O.
//!
//! # Layout
//! - [`build`]: a service's `build:` as stored, and the deterministic names of built images.
//! - [`spec`]: the desired state of a stack and its services, as stored in etcd.
//! - [`compose`]: a Compose project resolved as Compose does it (interpolation, overrides,
//!   `extends`, `include`, profiles, env files), then a document (YAML or JSON) into a
//!   [`spec::StackSpec`], every error with its field path; unknown keys are errors, never
//!   silently dropped.
//! - [`object`]: the stored objects (spec plus `generation`/`resourceVersion`), the status
//!   written by the controller, and the views the HTTP API returns.
//! - [`names`]: deterministic names and the ownership labels of what capstan creates.
//! - [`diff`]: field-level differences between service specs (`capstan diff`, revision
//!   change summaries).
//! - [`duration`]: Compose durations (`1m30s`, `500ms`).
//! - [`files`]: secrets and configs: digests in specs, content kept apart.
//! - [`options`]: the container options passed through to the engine (`cap_add`, `ulimits`, ...).
//! - [`policy`]: what a stack may do to the host, by the caller's profile (`privileged`,
//!   `baseline`, `restricted`), and which caller gets which.
//! - [`pull`]: `pull_policy`, when the daemon pulls a service's image.
//! - [`reference`]: image references (`[registry[:port]/]path[:tag][@digest]`), checked at apply.
//! - [`stateful`]: the stateful guard (one rule for apply and scale) and per-replica volumes.
//! - [`token`]: API tokens and their roles, as the API takes them and etcd stores them.

pub mod build;
pub mod compose;
pub mod diff;
pub mod duration;
pub mod files;
pub mod isolation;
pub mod logs;
pub mod names;
pub mod object;
pub mod options;
pub mod policy;
pub mod pull;
pub mod reference;
pub mod run;
pub mod spec;
pub mod stateful;
pub mod token;

pub use compose::{parse_stack, FieldError, InvalidStack};
