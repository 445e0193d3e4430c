//! A service's `healthcheck`.

use super::yaml::Value;
use super::{describe, join, Parser};
use crate::spec::*;

impl Parser {
    pub(super) fn healthcheck(&mut self, path: &str, v: &Value) -> Option<Healthcheck> {
        let mut h = Healthcheck::default();
        let mut disabled = false;
        for (key, val) in self.map(
            path,
            v,
            &[
                "test",
                "interval",
                "timeout",
                "retries",
                "start_period",
                "start_interval",
                "disable",
            ],
        ) {
            let field = join(path, &key);
            match key.as_str() {
                "test" => {
                    h.test = match val {
                        Value::String(s) => vec!["CMD-SHELL".into(), s.clone()],
                        _ => self.words(&field, val).unwrap_or_default(),
                    };
                    match h.test.first().map(String::as_str) {
                        Some("CMD") | Some("CMD-SHELL") if h.test.len() > 1 => {}
                        Some("NONE") => {}
                        _ => self.err(&field, "must be a string, or a list starting with \"CMD\", \"CMD-SHELL\" or \"NONE\""),
                    }
                }
                "interval" => h.interval_ns = self.duration_ns(&field, val),
                "timeout" => h.timeout_ns = self.duration_ns(&field, val),
                "start_period" => h.start_period_ns = self.duration_ns(&field, val),
                "start_interval" => h.start_interval_ns = self.duration_ns(&field, val),
                "retries" => h.retries = self.retries(&field, val),
                "disable" => disabled = self.bool(&field, val),
                _ => unreachable!(),
            }
        }
        if disabled {
            return Some(Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            });
        }
        for (name, ns) in [
            ("interval", h.interval_ns),
            ("timeout", h.timeout_ns),
            ("start_interval", h.start_interval_ns),
        ] {
            if ns.is_some_and(|ns| ns < 1_000_000) {
                self.err(join(path, name), "must be at least 1ms");
            }
        }
        Some(h)
    }

    /// The engine stores retries as a signed 64-bit number: anything larger would wrap.
    fn retries(&mut self, path: &str, v: &Value) -> Option<i64> {
        match v.as_whole_number().map(i64::try_from) {
            Some(Ok(n)) => Some(n),
            _ => {
                self.err(
                    path,
                    format!(
                        "must be a whole number from 0 to {}, got {}",
                        i64::MAX,
                        describe(v)
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn healthchecks_take_every_compose_form() {
        let spec = parse_stack("s", r#"
services:
  a: {image: x, healthcheck: {test: "wget -q -O- http://localhost/", interval: 2s, timeout: 1s, retries: 3, start_period: 5s}}
  b: {image: x, healthcheck: {test: ["CMD", "true"]}}
  c: {image: x, healthcheck: {disable: true}}
  d: {image: x, healthcheck: {interval: 30s}}
"#).unwrap();
        let a = spec.services["a"].healthcheck.clone().unwrap();
        assert_eq!(a.test, vec!["CMD-SHELL", "wget -q -O- http://localhost/"]);
        assert_eq!(a.interval_ns, Some(2_000_000_000));
        assert_eq!(a.retries, Some(3));
        assert_eq!(
            spec.services["b"].healthcheck.as_ref().unwrap().test,
            vec!["CMD", "true"]
        );
        assert_eq!(
            spec.services["c"].healthcheck.as_ref().unwrap().test,
            vec!["NONE"]
        );
        let d = spec.services["d"].healthcheck.clone().unwrap();
        assert!(d.test.is_empty(), "no test keeps the image's");
        assert_eq!(d.interval_ns, Some(30_000_000_000));
        assert_eq!(
            fields("services: {a: {image: x, healthcheck: {test: [\"true\"]}}}"),
            vec!["services.a.healthcheck.test"]
        );
    }

    #[test]
    fn out_of_range_numbers_and_durations_are_field_errors_naming_the_bound() {
        let errs =
            errors("services: {a: {image: x, healthcheck: {retries: 18446744073709551615}}}");
        assert_eq!(errs[0].field, "services.a.healthcheck.retries");
        assert!(
            errs[0].reason.contains("9223372036854775807"),
            "{}",
            errs[0].reason
        );
        let errs = errors("services: {a: {image: x, healthcheck: {interval: 3000000000h}}}");
        assert_eq!(errs[0].field, "services.a.healthcheck.interval");
        assert!(errs[0].reason.contains("2562047h"), "{}", errs[0].reason);
        let errs = errors("services: {a: {image: x, stop_grace_period: 1e20}}");
        assert_eq!(errs[0].field, "services.a.stop_grace_period");
        assert!(errs[0].reason.contains("2562047h"), "{}", errs[0].reason);
        assert_eq!(
            fields("services: {a: {image: x, healthcheck: {retries: -1}}}"),
            vec!["services.a.healthcheck.retries"]
        );
    }
}
