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

/// The hostname of a replica that names none: its container name, cut to one DNS label's
/// [`MAX_DNS_LABEL`] characters when longer (within the kernel's 64 bytes), keeping the
/// ordinal at its end (`<head>-<n>`) so that replicas keep apart. Container names are ASCII
/// (the naming rules), so bytes are chars.
pub fn default_hostname(container: &str) -> String {
    if container.len() <= MAX_DNS_LABEL {
        return container.to_string();
    }
    let tail = container.rsplit_once('-').map_or("", |(_, t)| t);
    let tail = if tail.len() < 12 { tail } else { "" };
    let keep = MAX_DNS_LABEL - if tail.is_empty() { 0 } else { tail.len() + 1 };
    let head = container[..keep].trim_end_matches(['-', '_', '.']);
    match tail {
        "" => head.to_string(),
        t => format!("{head}-{t}"),
    }
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

/// The longest service, network, volume, secret or config key, and the longest engine name
/// a file may give (`name:`, `container_name`).
pub const MAX_NAME: usize = 63;

/// Linux' `HOST_NAME_MAX`: `sethostname` and `setdomainname` refuse longer names, and so does
/// the engine when it starts the container.
pub const MAX_HOSTNAME: usize = 64;

/// The longest label of a DNS name (RFC 1123).
pub const MAX_DNS_LABEL: usize = 63;

/// Why a name is refused; each says it in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("has {len} characters, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("must start with a letter or digit, not {0:?}")]
    BadStart(char),
    #[error("contains {0:?}: only letters, digits, '_', '.' and '-' are allowed ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")]
    BadChar(char),
    #[error("has one character: the engine wants at least two for the name of a container, network or volume")]
    TooShort,
    #[error("contains {}: a name reaches terminals, logs and the engine as it is", describe_char(*.0))]
    Control(char),
    #[error("has an empty label (\"..\", or a leading or trailing '.')")]
    EmptyLabel,
    #[error("label {label:?} has {len} characters, more than the {MAX_DNS_LABEL} of a DNS label")]
    LabelTooLong { label: String, len: usize },
    #[error(
        "label {0:?} must be letters, digits, '-' and '_', neither starting nor ending with '-'"
    )]
    BadLabel(String),
}

/// A character as a reason names it: `the control character U+000A ('\n')`,
/// `the control character U+001B (ESC)`, or `' '`.
pub fn describe_char(c: char) -> String {
    match c {
        '\u{1b}' => "the control character U+001B (ESC)".to_string(),
        '\0' => "the control character U+0000 (NUL)".to_string(),
        c if c.is_control() => format!("the control character U+{:04X} ({c:?})", c as u32),
        c => format!("{c:?}"),
    }
}

/// The first control character of `text` (C0, DEL or C1), refused in every name: it would
/// reach a terminal (an escape sequence), a log line or the engine as it is.
pub fn control_char(text: &str) -> Result<(), NameError> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(NameError::Control(c)),
        None => Ok(()),
    }
}

/// The one rule for a name inside a stack: keys of `services`, `networks`, `volumes`,
/// `secrets` and `configs`. `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most [`MAX_NAME`] characters:
/// the characters Docker allows in container, network and volume names, so `<stack>_<key>`
/// is always one.
pub fn member_name(name: &str) -> Result<(), NameError> {
    control_char(name)?;
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(NameError::Empty),
        Some(c) if !c.is_ascii_alphanumeric() => return Err(NameError::BadStart(c)),
        Some(_) => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(NameError::BadChar(c));
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_NAME,
        });
    }
    Ok(())
}

/// A name given to the engine as it is (`name:` of a network, volume, secret or config, an
/// external one's, `container_name`): the member rule, and two characters at least, as
/// Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+` wants.
pub fn engine_name(name: &str) -> Result<(), NameError> {
    member_name(name)?;
    if name.len() < 2 {
        return Err(NameError::TooShort);
    }
    Ok(())
}

/// A `hostname` or `domainname`: labels (letters, digits, '-' and, as the engine takes it,
/// '_'; at most 63 each) joined by '.', at most [`MAX_HOSTNAME`] bytes in all (the kernel's
/// limit, tighter than DNS' 253).
pub fn host_name(name: &str) -> Result<(), NameError> {
    control_char(name)?;
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_HOSTNAME {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_HOSTNAME,
        });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_DNS_LABEL {
            return Err(NameError::LabelTooLong {
                label: label.to_string(),
                len: label.len(),
            });
        }
        let ok = (label.chars()).all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok || label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::BadLabel(label.to_string()));
        }
    }
    Ok(())
}

/// Whether `name` is a valid service, network or volume name inside a stack
/// ([`member_name`]).
pub fn valid_member_name(name: &str) -> bool {
    member_name(name).is_ok()
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
    fn a_member_name_is_letters_digits_and_three_marks_up_to_63() {
        assert_eq!(member_name("db_data-1.x"), Ok(()));
        assert_eq!(member_name("../../x"), Err(NameError::BadStart('.')));
        assert_eq!(member_name("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(member_name("wéb"), Err(NameError::BadChar('é')));
        assert_eq!(member_name(""), Err(NameError::Empty));
        assert_eq!(
            member_name(&"n".repeat(100)),
            Err(NameError::TooLong { len: 100, max: 63 })
        );
        assert_eq!(member_name(&"n".repeat(63)), Ok(()));
    }

    #[test]
    fn a_control_character_is_refused_in_any_name_and_named_in_the_reason() {
        assert_eq!(member_name("bad\nname"), Err(NameError::Control('\n')));
        let esc = control_char("web\u{1b}[31m").unwrap_err().to_string();
        assert!(esc.contains("U+001B (ESC)"), "{esc}");
        assert!(control_char("x\u{7f}").is_err());
        assert!(control_char("x\u{85}").is_err());
        assert_eq!(control_char("wéb ok"), Ok(()));
    }

    #[test]
    fn an_engine_name_needs_two_characters() {
        assert_eq!(engine_name("a"), Err(NameError::TooShort));
        assert_eq!(engine_name("ab"), Ok(()));
        assert_eq!(engine_name("../../etc"), Err(NameError::BadStart('.')));
    }

    #[test]
    fn a_long_container_name_gives_a_hostname_cut_to_one_dns_label_that_keeps_its_ordinal() {
        assert_eq!(default_hostname("shop-web-1"), "shop-web-1");
        let long = container(&"s".repeat(60), "web-api", 10);
        let host = default_hostname(&long);
        assert!(host.len() <= MAX_DNS_LABEL && host.len() > 60, "{host}");
        assert!(host.ends_with("-10") && host.starts_with("sss"), "{host}");
        assert_eq!(host_name(&host), Ok(()));
        let cut = default_hostname(&format!("{}-{}-2", "a".repeat(60), "b"));
        assert!(cut.ends_with("-2") && host_name(&cut).is_ok(), "{cut}");
        assert_eq!(default_hostname(&"x".repeat(80)), "x".repeat(63));
    }

    #[test]
    fn a_hostname_is_dns_labels_within_the_kernels_64_bytes() {
        assert_eq!(host_name("web-1.example.org"), Ok(()));
        assert_eq!(host_name("1web"), Ok(()));
        assert_eq!(
            host_name(&"h".repeat(300)),
            Err(NameError::TooLong { len: 300, max: 64 })
        );
        assert_eq!(
            host_name(&"h".repeat(64)),
            Err(NameError::LabelTooLong {
                label: "h".repeat(64),
                len: 64
            })
        );
        assert_eq!(host_name("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(host_name("-web"), Err(NameError::BadLabel("-web".into())));
        assert_eq!(host_name("web_1"), Ok(()), "the engine takes '_'");
        assert_eq!(host_name("web 1"), Err(NameError::BadLabel("web 1".into())));
        assert_eq!(host_name("web\n"), Err(NameError::Control('\n')));
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
