//! Compose durations: `10s`, `1m30s`, `1.5s`, `500ms`, `2h`, `100us`. A bare number is seconds.

use std::time::Duration;

/// Parses a Compose duration. The error is a reason fit to follow a field path.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return from_secs(secs, text);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has a number without a unit"))?;
        if num_len == 0 {
            return Err(format!(
                "{text:?} is not a duration like 10s, 1m30s or 500ms"
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{text:?} has a malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => {
                return Err(format!(
                    "{text:?} has an unknown unit {unit:?} (use h, m, s, ms, us, ns)"
                ))
            }
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    from_secs(total, text)
}

/// The longest duration accepted: what fits the engine's signed 64-bit nanoseconds, written
/// in whole hours (Go's own limit is 2562047h47m16.854775807s).
pub const MAX_HOURS: u64 = 2_562_047;

fn from_secs(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{text:?} must be a non-negative duration"));
    }
    if secs > (MAX_HOURS * 3600) as f64 {
        return Err(format!(
            "{text:?} is longer than {MAX_HOURS}h, the longest duration the Docker engine takes"
        ));
    }
    // In range by the check above, so this cannot panic.
    Ok(Duration::from_secs_f64(secs))
}

/// A parsed duration in nanoseconds as the engine takes them. Never wraps: `parse` bounds it.
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Formats a duration the way Compose writes it, for messages and tables.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 && secs < 60 {
        return format!("{}ms", d.as_millis());
    }
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_durations_add_up() {
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("10").unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn malformed_durations_say_why() {
        assert!(parse("ten seconds").unwrap_err().contains("not a duration"));
        assert!(parse("10x").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn huge_durations_are_errors_naming_the_bound_not_panics_or_wraps() {
        for text in [
            "1e20",
            "3000000000h",
            "2562048h",
            "inf",
            "NaN",
            "9999999999999999999s",
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains("2562047h") || err.contains("non-negative"),
                "{text}: {err}"
            );
        }
        let max = parse("2562047h").unwrap();
        assert_eq!(nanos(max), 2_562_047 * 3_600 * 1_000_000_000);
    }
}
