//! Desired state from etcd, in the shape of kube-runtime's watcher and reflector.
//!
//! - [`watcher`]: lists, then watches from the list's revision, relists after a compaction or
//!   a broken watch; it decodes every key into a typed [`Event`].
//! - [`reflector`]: the in-memory copy. Its one [`Writer`] is the watcher's; everyone else
//!   (reconcilers, the API) reads through a cheap, cloneable [`Desired`] view.

pub mod reflector;
pub mod watcher;

pub use reflector::{Desired, Event, Writer};
