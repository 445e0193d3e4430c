//! `services.*.pull_policy`.

use super::yaml::Value;
use super::Parser;
use crate::pull::PullPolicy;

impl Parser {
    pub(super) fn pull_policy(&mut self, path: &str, v: &Value) -> Option<PullPolicy> {
        let text = self.string(path, v)?;
        match PullPolicy::parse(text.trim()) {
            Ok(p) => Some(p),
            Err(why) => {
                self.err(path, why);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::pull::PullPolicy;

    #[test]
    fn a_pull_policy_is_read_into_the_spec() {
        let spec = parse_stack(
            "s",
            "services: {a: {image: x, pull_policy: every_12h}, b: {image: x, pull_policy: if_not_present}, c: {image: x}}",
        )
        .unwrap();
        assert_eq!(
            spec.services["a"]
                .pull_policy
                .as_ref()
                .map(PullPolicy::as_compose),
            Some("every_12h".into())
        );
        assert_eq!(spec.services["b"].pull_policy, Some(PullPolicy::Missing));
        assert_eq!(spec.services["c"].pull_policy, None);
    }

    #[test]
    fn a_bad_pull_policy_names_the_field_and_lists_the_valid_values() {
        let errs = errors("services: {web: {image: x, pull_policy: sometimes}}");
        assert_eq!(errs[0].field, "services.web.pull_policy");
        assert!(
            errs[0].reason.contains("\"sometimes\""),
            "{}",
            errs[0].reason
        );
        assert!(
            errs[0].reason.contains("always, missing (or if_not_present), never, build, daily, weekly, every_<duration>"),
            "{}",
            errs[0].reason
        );
        let errs = errors("services: {web: {image: x, pull_policy: every_5x}}");
        assert!(
            errs[0].reason.contains("unknown unit"),
            "{}",
            errs[0].reason
        );
    }
}
