//! `pull_policy`: when the daemon pulls a service's image before creating its replicas.
//! Compose's values and meanings; stored in the spec as Compose spells them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// The values a `pull_policy` may take, for error messages.
pub const VALID: &str =
    "always, missing (or if_not_present), never, build, daily, weekly, every_<duration> (e.g. every_12h, every_2d)";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull before every batch of replicas created, even when the image is present.
    Always,
    /// Pull only when the engine does not have the image (Compose's default).
    #[default]
    Missing,
    /// Never pull: a missing image is an error in the service's status.
    Never,
    /// The image is built (`build:`), never pulled.
    Build,
    /// Pull when the image is missing or the last pull is older than 24 hours.
    Daily,
    /// Pull when the image is missing or the last pull is older than 7 days.
    Weekly,
    /// `every_<duration>`: pull when the image is missing or the last pull is older than
    /// the duration. `spelled` is the duration as written (`12h`, `2d`).
    Every { spelled: String, every: Duration },
}

impl PullPolicy {
    /// Parses a Compose `pull_policy`; the error is a reason fit to follow a field path.
    pub fn parse(text: &str) -> Result<PullPolicy, String> {
        Ok(match text {
            "always" => PullPolicy::Always,
            "missing" | "if_not_present" => PullPolicy::Missing,
            "never" => PullPolicy::Never,
            "build" => PullPolicy::Build,
            "daily" => PullPolicy::Daily,
            "weekly" => PullPolicy::Weekly,
            other => match other.strip_prefix("every_") {
                Some(spelled) => PullPolicy::Every {
                    spelled: spelled.to_string(),
                    every: interval(spelled)
                        .map_err(|why| format!("{other:?}: {why}; valid values: {VALID}"))?,
                },
                None => {
                    return Err(format!(
                        "unknown pull policy {other:?}; valid values: {VALID}"
                    ))
                }
            },
        })
    }

    /// How Compose spells it (`if_not_present` is written `missing`).
    pub fn as_compose(&self) -> String {
        match self {
            PullPolicy::Always => "always".into(),
            PullPolicy::Missing => "missing".into(),
            PullPolicy::Never => "never".into(),
            PullPolicy::Build => "build".into(),
            PullPolicy::Daily => "daily".into(),
            PullPolicy::Weekly => "weekly".into(),
            PullPolicy::Every { spelled, .. } => format!("every_{spelled}"),
        }
    }

    /// How old the last pull may be before the image is pulled again, for the policies
    /// that refresh (`daily`, `weekly`, `every_<duration>`).
    pub fn refresh_after(&self) -> Option<Duration> {
        match self {
            PullPolicy::Daily => Some(Duration::from_secs(24 * 3600)),
            PullPolicy::Weekly => Some(Duration::from_secs(7 * 24 * 3600)),
            PullPolicy::Every { every, .. } => Some(*every),
            _ => None,
        }
    }

    /// Whether the daemon may pull the image at all.
    pub fn may_pull(&self) -> bool {
        !matches!(self, PullPolicy::Never | PullPolicy::Build)
    }
}

/// `12h`, `2d`, `1w`, `1d12h`, `90m`: a Compose duration, plus days (`d`) and weeks (`w`)
/// as Compose's `every_` accepts them. Must be longer than zero.
fn interval(text: &str) -> Result<Duration, String> {
    let mut days = 0u64;
    let mut rest = text;
    // Leading weeks and days; the remainder is an ordinary Compose duration.
    loop {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per = match rest[digits..].chars().next() {
            Some('w') if digits > 0 => 7,
            Some('d') if digits > 0 => 1,
            _ => break,
        };
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} has a malformed number"))?;
        days = n
            .checked_mul(per)
            .and_then(|d| days.checked_add(d))
            .filter(|d| *d <= crate::duration::MAX_HOURS / 24)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = &rest[digits + 1..];
    }
    let more = if rest.is_empty() {
        Duration::ZERO
    } else {
        crate::duration::parse(rest)?
    };
    let total = Duration::from_secs(days * 86400) + more;
    if total.is_zero() {
        return Err(format!(
            "{text:?} must be a duration longer than zero, like 12h or 2d"
        ));
    }
    Ok(total)
}

impl Serialize for PullPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_compose())
    }
}

impl<'de> Deserialize<'de> for PullPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PullPolicy::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// In the API's schemas: the Compose spelling, a string.
impl utoipa::PartialSchema for PullPolicy {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let description = format!("Compose's `pull_policy`: {VALID}.");
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(description))
            .into()
    }
}

impl utoipa::ToSchema for PullPolicy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_values_parse_and_are_written_back_as_compose_spells_them() {
        for (text, back) in [
            ("always", "always"),
            ("missing", "missing"),
            ("if_not_present", "missing"),
            ("never", "never"),
            ("build", "build"),
            ("daily", "daily"),
            ("weekly", "weekly"),
            ("every_12h", "every_12h"),
            ("every_2d", "every_2d"),
        ] {
            assert_eq!(PullPolicy::parse(text).unwrap().as_compose(), back);
        }
    }

    #[test]
    fn refreshing_policies_know_their_interval() {
        let every = |t: &str| PullPolicy::parse(t).unwrap().refresh_after().unwrap();
        assert_eq!(every("daily"), Duration::from_secs(86400));
        assert_eq!(every("weekly"), Duration::from_secs(7 * 86400));
        assert_eq!(every("every_12h"), Duration::from_secs(12 * 3600));
        assert_eq!(every("every_2d"), Duration::from_secs(2 * 86400));
        assert_eq!(every("every_1w"), Duration::from_secs(7 * 86400));
        assert_eq!(every("every_1d12h"), Duration::from_secs(36 * 3600));
        assert_eq!(every("every_1h30m"), Duration::from_secs(5400));
        assert_eq!(PullPolicy::Always.refresh_after(), None);
        assert!(!PullPolicy::Never.may_pull() && !PullPolicy::Build.may_pull());
    }

    #[test]
    fn a_refused_value_says_why_and_lists_the_valid_ones() {
        for bad in [
            "sometimes",
            "every_",
            "every_0s",
            "every_12x",
            "every_99999999999w",
            "Always",
        ] {
            let err = PullPolicy::parse(bad).unwrap_err();
            assert!(
                err.contains("valid values: always, missing"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_stored_form_is_the_compose_spelling() {
        let p = PullPolicy::parse("every_2d").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"every_2d\"");
        assert_eq!(serde_json::from_str::<PullPolicy>(&json).unwrap(), p);
    }
}
