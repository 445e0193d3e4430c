//! Deterministic names and the ownership labels of everything capstan creates.
//!
//! Capstan only ever touches Docker objects that carry [`STACK`]; a container without it is
//! foreign, whatever its name.

/// The stack that owns a container, network or volume.
pub const STACK: &str = "capstan.stack";
/// The service that owns a container.
pub const SERVICE: &str = "capstan.service";
/// The replica ordinal (1-based) of a container.
pub const REPLICA: &str = "capstan.replica";
/// Hash of the container-affecting parts of the service spec; a mismatch means outdated.
pub const SPEC_HASH: &str = "capstan.spec-hash";
/// On a sidecar's replica: the partner containers it was made with (`SERVICE=ID,...`), so
/// that a replaced partner has its sidecar made anew.
pub const PARTNERS: &str = "capstan.partners";
/// The Compose-level name of a network or volume (`frontend`, `db_data`).
pub const RESOURCE: &str = "capstan.resource";
/// The stack of a one-off container (`capstan run`). Not [`STACK`]: the reconciler, the
/// endpoints and the events never see one-offs.
pub const ONEOFF_STACK: &str = "capstan.oneoff.stack";
/// The service a one-off container was made from.
pub const ONEOFF_SERVICE: &str = "capstan.oneoff.service";

/// `<stack>-<service>-<n>`, the name of replica `n` (1-based).
pub fn container(stack: &str, service: &str, ordinal: u32) -> String {
    format!("{stack}-{service}-{ordinal}")
}

/// `<stack>_<name>`, like Compose, for networks and volumes the stack declares.
pub fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// The network every service joins when it names none.
pub const DEFAULT_NETWORK: &str = "default";

/// Whether `name` is a valid stack name: Compose's project-name rule.
pub fn valid_stack_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 63
}

/// Whether `name` is a valid service, network or volume name inside a stack.
pub fn valid_member_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && name.len() <= 63
}

/// Turns a folder name into a stack name the way Compose does: lowercase, and only
/// `[a-z0-9_-]` kept.
pub fn normalize_stack_name(raw: &str) -> String {
    raw.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect::<String>()
        .trim_start_matches(['_', '-'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_names_are_stack_service_ordinal() {
        assert_eq!(container("shop", "web", 3), "shop-web-3");
        assert_eq!(scoped("shop", "frontend"), "shop_frontend");
    }

    #[test]
    fn stack_names_follow_compose_project_rules() {
        assert!(valid_stack_name("shop-2"));
        assert!(!valid_stack_name("Shop"));
        assert!(!valid_stack_name("-shop"));
        assert!(!valid_stack_name("a/b"));
        assert_eq!(normalize_stack_name("My App.v2"), "myappv2");
    }
}
