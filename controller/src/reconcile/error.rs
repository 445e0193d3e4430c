//! What can go wrong in a reconcile, one variant per failure site, and how long a failing
//! key waits before its next try (`error_policy`, with per-key exponential back-off).

use std::time::Duration;

use crate::runtime::RuntimeError;
use crate::scheduler::Backoff;
use crate::store::StoreError;
use crate::traffic::TrafficError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing containers: {0}")]
    List(#[source] RuntimeError),
    #[error("preparing {kind} {name}: {source}")]
    Resource {
        kind: &'static str,
        name: String,
        source: RuntimeError,
    },
    #[error("removing container {name}: {source}")]
    Remove { name: String, source: RuntimeError },
    #[error("removing {kind} {name}: {source}")]
    RemoveResource {
        kind: &'static str,
        name: String,
        source: RuntimeError,
    },
    #[error("writing status: {0}")]
    Status(#[source] StoreError),
    #[error("finalizing the deletion of stack {stack}: {source}")]
    Finalize { stack: String, source: StoreError },
    #[error(transparent)]
    Endpoints(#[from] TrafficError),
    /// The service's image could not be pulled, or `pull_policy` forbids pulling it.
    #[error("{reason}: {message}")]
    Image {
        reason: capstan_api::object::Reason,
        message: String,
    },
    /// Writing a service's secrets and configs on the host.
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
    /// A bug: reconcile panicked.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

/// The status reason an engine failure is reported under.
pub fn reason_of(e: &RuntimeError) -> capstan_api::object::Reason {
    use capstan_api::object::Reason;
    match e {
        RuntimeError::NameConflict { .. } => Reason::NameConflict,
        RuntimeError::ImageNotFound(_) => Reason::ImageNotFound,
        RuntimeError::Pull { .. } => Reason::ImagePullBackOff,
        RuntimeError::ExternalMissing { .. } => Reason::ExternalMissing,
        RuntimeError::NotOwned { .. } => Reason::NotOwned,
        RuntimeError::BindRefused { .. } => Reason::BindRefused,
        RuntimeError::Hook { .. } => Reason::HookFailed,
        e if e.is_port_in_use() => Reason::PortInUse,
        e if e.is_network_error() => Reason::NetworkError,
        RuntimeError::Engine { .. } | RuntimeError::TooOld { .. } | RuntimeError::Fenced { .. } => {
            Reason::EngineError
        }
    }
}

/// The `kind` label of `capstan_reconcile_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    List,
    Resource,
    Remove,
    Status,
    Finalize,
    Endpoints,
    Panic,
    Image,
}

impl ErrorKind {
    /// Every kind, pre-created at 0 so rates exist before the first error.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::List,
        ErrorKind::Resource,
        ErrorKind::Remove,
        ErrorKind::Status,
        ErrorKind::Finalize,
        ErrorKind::Endpoints,
        ErrorKind::Panic,
        ErrorKind::Image,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::List => "list",
            ErrorKind::Resource => "resource",
            ErrorKind::Remove => "remove",
            ErrorKind::Status => "status",
            ErrorKind::Finalize => "finalize",
            ErrorKind::Endpoints => "endpoints",
            ErrorKind::Panic => "panic",
            ErrorKind::Image => "image",
        }
    }
}

/// Transient failures (the engine or etcd busy or away) retry soon and back off to a minute.
pub const RETRYABLE: Backoff = Backoff {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(60),
};

/// Failures that wait on a person (an external network to be created) or are a bug (a
/// panic): retrying soon cannot help, so they start slow and back off to five minutes.
pub const TERMINAL: Backoff = Backoff {
    base: Duration::from_secs(15),
    cap: Duration::from_secs(300),
};

impl ReconcileError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::List(_) => ErrorKind::List,
            ReconcileError::Resource { .. } | ReconcileError::Files(_) => ErrorKind::Resource,
            ReconcileError::Remove { .. } | ReconcileError::RemoveResource { .. } => {
                ErrorKind::Remove
            }
            ReconcileError::Status(_) => ErrorKind::Status,
            ReconcileError::Finalize { .. } => ErrorKind::Finalize,
            ReconcileError::Endpoints(_) => ErrorKind::Endpoints,
            ReconcileError::Panicked(_) => ErrorKind::Panic,
            ReconcileError::Image { .. } => ErrorKind::Image,
        }
    }

    /// Whether retrying soon can help.
    pub fn is_retryable(&self) -> bool {
        if let ReconcileError::Files(e) = self {
            return !e.waits_on_a_person();
        }
        !matches!(
            self,
            ReconcileError::Panicked(_)
                | ReconcileError::Image {
                    reason: capstan_api::object::Reason::ErrImageNeverPull,
                    ..
                }
                | ReconcileError::Resource {
                    source: RuntimeError::ExternalMissing { .. } | RuntimeError::NotOwned { .. },
                    ..
                }
        )
    }

    /// Why no replica can be made until a network or volume can be (an external one
    /// missing, another stack's under the name, the engine refusing to create it): the
    /// service's status says so, naming the resource, rather than leaving it `Pending`.
    pub fn blocked_reason(&self) -> Option<capstan_api::object::Reason> {
        use capstan_api::object::Reason;
        match self {
            ReconcileError::Resource { source, .. } => match source {
                RuntimeError::ExternalMissing { .. } => Some(Reason::ExternalMissing),
                RuntimeError::NotOwned { .. } => Some(Reason::NotOwned),
                RuntimeError::Engine { .. } => Some(Reason::ResourceRefused),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The back-off a failed key follows: [`RETRYABLE`] or [`TERMINAL`].
pub fn error_policy(err: &ReconcileError) -> Backoff {
    if err.is_retryable() {
        RETRYABLE
    } else {
        TERMINAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_external_network_or_a_panic_backs_off_slower_than_a_busy_engine() {
        let busy = ReconcileError::List(RuntimeError::Engine {
            op: "list",
            message: "timeout".into(),
        });
        let external = ReconcileError::Resource {
            kind: "network",
            name: "edge".into(),
            source: RuntimeError::ExternalMissing {
                kind: "network",
                name: "edge".into(),
            },
        };
        assert_eq!(error_policy(&busy), RETRYABLE);
        assert_eq!(error_policy(&external), TERMINAL);
        assert_eq!(
            error_policy(&ReconcileError::Panicked("x".into())),
            TERMINAL
        );
        assert_eq!(RETRYABLE.delay(1), Duration::from_millis(500));
        assert_eq!(RETRYABLE.delay(4), Duration::from_secs(4));
        assert_eq!(RETRYABLE.delay(30), RETRYABLE.cap);
    }

    #[test]
    fn a_network_or_volume_the_engine_refuses_blocks_the_service_with_a_reason() {
        use capstan_api::object::Reason;
        let refused = ReconcileError::Resource {
            kind: "volume",
            name: "s_data".into(),
            source: RuntimeError::Engine {
                op: "create volume",
                message: "plugin \"nosuchdriver\" not found".into(),
            },
        };
        assert_eq!(refused.blocked_reason(), Some(Reason::ResourceRefused));
        let text = refused.to_string();
        assert!(
            text.contains("volume s_data") && text.contains("nosuchdriver"),
            "{text}"
        );
        let listing = ReconcileError::List(RuntimeError::Engine {
            op: "list",
            message: "timeout".into(),
        });
        assert_eq!(listing.blocked_reason(), None);
    }
}
