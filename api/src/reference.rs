//! Image references, read as the engine reads them: `[registry[:port]/]path[:tag][@digest]`.
//!
//! - `registry`: the first `/`-separated part when it has a `.` or a `:` or is `localhost`
//!   (as Docker decides): DNS labels (letters, digits, inner `-`) joined by `.`, or an IPv6
//!   address in brackets, then an optional numeric port.
//! - `path`: components of lowercase letters and digits, joined inside by `.`, `_`, `__` or
//!   runs of `-`; components are joined by `/`. With the registry, at most 255 characters.
//! - `tag`: `[\w][\w.-]{0,127}`.
//! - `digest`: `algorithm:hex`, the algorithm lowercase components joined by `+._-`, the hex
//!   part 32 digits at least (64 for `sha256`, 128 for `sha512`).
//!
//! Checked at apply, so that a reference the engine would refuse (or one holding a newline
//! or an escape sequence) never reaches etcd.

/// The longest name (registry and path), as the engine allows.
pub const MAX_NAME: usize = 255;

/// The longest tag.
pub const MAX_TAG: usize = 128;

/// A reference taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `registry.example.org:5000`, when the reference names one (the engine's default
    /// registry otherwise).
    pub registry: Option<String>,
    /// `library/nginx`, `capstan-demo/web`.
    pub path: String,
    /// `1.25-alpine`; the engine's `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// `sha256:…`: pins the image whatever the tag says.
    pub digest: Option<String>,
}

/// Why a reference is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("must not be empty")]
    Empty,
    #[error("contains {0}: a reference is printable ASCII without spaces")]
    BadChar(String),
    #[error("has a name of {0} characters, more than the {MAX_NAME} allowed")]
    NameTooLong(usize),
    #[error("registry {0:?} is not a host name or [IPv6 address], with an optional numeric port")]
    BadRegistry(String),
    #[error("has an empty path component (a leading, trailing or doubled '/')")]
    EmptyComponent,
    #[error("path component {0:?} has uppercase letters: repository names must be lowercase")]
    Uppercase(String),
    #[error(
        "path component {0:?} must be lowercase letters and digits joined by '.', '_', '__' or '-'"
    )]
    BadComponent(String),
    #[error("tag {0:?} must be letters, digits, '_', '.' and '-', not starting with '.' or '-', at most {MAX_TAG} characters")]
    BadTag(String),
    #[error("digest {0:?} is not ALGORITHM:HEX (such as sha256: and 64 hex digits)")]
    BadDigest(String),
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Reference, ReferenceError> {
        parse(text)
    }
}

/// Takes `text` apart, or says what is wrong with it.
pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
    if text.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(ReferenceError::BadChar(crate::names::describe_char(c)));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => (r, Some(digest(d)?)),
        None => (text, None),
    };
    // A ':' after the last '/' starts the tag; one before it is the registry's port.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].split_once(':') {
        Some((_, t)) => (&rest[..rest.len() - t.len() - 1], Some(tag(t)?)),
        None => (rest, None),
    };
    if name.len() > MAX_NAME {
        return Err(ReferenceError::NameTooLong(name.len()));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if is_registry(first) => (Some(registry(first)?), path),
        _ => (None, name),
    };
    for component in path.split('/') {
        path_component(component)?;
    }
    Ok(Reference {
        registry,
        path: path.to_string(),
        tag,
        digest,
    })
}

/// Docker's rule: the first part names a registry when it has a '.' or a ':', or is
/// `localhost`.
fn is_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn registry(text: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::BadRegistry(text.to_string());
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or_else(bad)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match text.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(text), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(text.to_string())
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__` or any run of `-`.
fn path_component(c: &str) -> Result<(), ReferenceError> {
    if c.is_empty() {
        return Err(ReferenceError::EmptyComponent);
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase(c.to_string()));
    }
    let bad = || ReferenceError::BadComponent(c.to_string());
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    let mut sep = String::new();
    let mut seen_alnum = false;
    for ch in c.chars() {
        if alnum(ch) {
            if !separator(&sep) {
                return Err(bad());
            }
            sep.clear();
            seen_alnum = true;
        } else if seen_alnum && "._-".contains(ch) {
            sep.push(ch);
        } else {
            return Err(bad());
        }
    }
    if sep.is_empty() {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Between two alphanumeric runs: nothing, `.`, `_`, `__`, or `-` repeated.
fn separator(s: &str) -> bool {
    matches!(s, "" | "." | "_" | "__") || s.chars().all(|c| c == '-')
}

fn tag(t: &str) -> Result<String, ReferenceError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = t.len() <= MAX_TAG
        && t.chars().next().is_some_and(word)
        && t.chars().all(|c| word(c) || c == '.' || c == '-');
    ok.then(|| t.to_string())
        .ok_or_else(|| ReferenceError::BadTag(t.to_string()))
}

fn digest(d: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::BadDigest(d.to_string());
    let (algo, hex) = d.split_once(':').ok_or_else(bad)?;
    let algo_ok = algo.split(['+', '.', '_', '-']).all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    let hex_len = match algo {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => hex.len() >= 32,
    };
    if algo_ok && hex_len && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(d.to_string())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_part_of_a_full_reference_is_taken_apart() {
        let r = parse(&format!(
            "registry.example.org:5000/team/web:1.2-rc_1@{SHA}"
        ))
        .unwrap();
        assert_eq!(r.registry.as_deref(), Some("registry.example.org:5000"));
        assert_eq!(r.path, "team/web");
        assert_eq!(r.tag.as_deref(), Some("1.2-rc_1"));
        assert_eq!(r.digest.as_deref(), Some(SHA));
    }

    #[test]
    fn the_references_people_write_are_accepted() {
        for ok in [
            "nginx",
            "nginx:1.25-alpine",
            "capstan-demo/web:1",
            "library/postgres:16",
            "localhost/web",
            "localhost:5000/a/b:latest",
            "[::1]:5000/web:1",
            "my_org/web__x.y--z:v",
            "ghcr.io/owner/repo:sha-abc",
            &format!("alpine@{SHA}"),
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok));
        }
    }

    #[test]
    fn a_newline_or_an_escape_sequence_in_a_reference_is_named() {
        assert_eq!(
            parse("nginx\n"),
            Err(ReferenceError::BadChar(
                "the control character U+000A ('\\n')".into()
            ))
        );
        let esc = parse("web\u{1b}[31m:1").unwrap_err().to_string();
        assert!(esc.contains("U+001B (ESC)"), "{esc}");
        assert!(matches!(parse("my web"), Err(ReferenceError::BadChar(_))));
    }

    #[test]
    fn uppercase_paths_bad_tags_and_bad_digests_are_refused() {
        assert_eq!(parse("Web:1"), Err(ReferenceError::Uppercase("Web".into())));
        assert!(
            parse("Registry.Example.org/web").is_ok(),
            "hosts may be any case"
        );
        assert_eq!(parse("web:.1"), Err(ReferenceError::BadTag(".1".into())));
        assert!(matches!(
            parse(&format!("web:{}", "t".repeat(129))),
            Err(ReferenceError::BadTag(_))
        ));
        assert!(matches!(
            parse("web@sha256:abc"),
            Err(ReferenceError::BadDigest(_))
        ));
        assert!(matches!(
            parse("web@md5"),
            Err(ReferenceError::BadDigest(_))
        ));
        assert_eq!(parse("a//b"), Err(ReferenceError::EmptyComponent));
        assert_eq!(parse("web/"), Err(ReferenceError::EmptyComponent));
        assert_eq!(
            parse("-web"),
            Err(ReferenceError::BadComponent("-web".into()))
        );
        assert_eq!(
            parse("web._x"),
            Err(ReferenceError::BadComponent("web._x".into()))
        );
        assert!(matches!(
            parse("bad_host:x/web"),
            Err(ReferenceError::BadRegistry(_))
        ));
        assert_eq!(parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            parse(&"a".repeat(256)),
            Err(ReferenceError::NameTooLong(256))
        ));
    }
}
