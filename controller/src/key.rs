//! What the scheduler queues: the name of something to reconcile, never the object.

/// A reconcile key. Triggers only ever produce these; the reconciler looks the objects up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    /// The stack's own part: its networks and volumes, and its teardown.
    Stack(String),
    /// One service of a stack: its replicas, traffic and status.
    Service(String, String),
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::Stack(s) => write!(f, "stack/{s}"),
            ObjectKey::Service(s, v) => write!(f, "{s}/{v}"),
        }
    }
}
