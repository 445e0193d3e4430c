//! `post_start` and `pre_stop`: commands capstan runs in a replica through the engine's exec
//! API, after it started the replica and before it stops it, as Compose does.

use super::yaml::Value;
use super::{join, kind, Parser};
use crate::spec::Hook;

impl Parser {
    /// A list of hooks, each `{command, user, privileged, working_dir, environment}`.
    pub(super) fn hooks(&mut self, path: &str, v: &Value) -> Vec<Hook> {
        let Some(items) = v.as_sequence() else {
            self.err(path, format!("must be a list of hooks ({{command, user, privileged, working_dir, environment}}), got {}", kind(v)));
            return vec![];
        };
        let mut out = vec![];
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            if let Some(hook) = self.hook(&field, item) {
                out.push(hook);
            }
        }
        out
    }

    fn hook(&mut self, path: &str, v: &Value) -> Option<Hook> {
        const KEYS: &[&str] = &[
            "command",
            "user",
            "privileged",
            "working_dir",
            "environment",
        ];
        let mut hook = Hook::default();
        let mut command = None;
        for (key, val) in self.map(path, v, KEYS) {
            let field = join(path, &key);
            match key.as_str() {
                "command" => command = self.words(&field, val),
                "user" => hook.user = self.string(&field, val),
                "privileged" => hook.privileged = self.bool(&field, val),
                "working_dir" => {
                    hook.working_dir = self.string(&field, val).filter(|d| {
                        let absolute = d.starts_with('/');
                        if !absolute {
                            self.err(
                                &field,
                                format!("{d:?} must be an absolute path in the container"),
                            );
                        }
                        absolute
                    })
                }
                _ => hook.environment = self.key_values(&field, val, "variable"),
            }
        }
        match command {
            Some(c) if !c.is_empty() => hook.command = c,
            _ => {
                self.err(
                    join(path, "command"),
                    "a hook needs a command to run (a string or a list)",
                );
                return None;
            }
        }
        Some(hook)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::spec::*;

    fn service(yaml: &str) -> ServiceSpec {
        web(yaml)
    }

    #[test]
    fn hooks_read_the_fields_compose_gives_them() {
        let s = service(
            r#"post_start: [{command: "sh -c 'echo up > /tmp/up'", user: root, privileged: true, working_dir: /srv, environment: {A: "1"}}],
               pre_stop: [{command: [./flush, --all]}, {command: sync, environment: [B=2]}]"#,
        );
        let h = &s.post_start[0];
        assert_eq!(h.command, vec!["sh", "-c", "echo up > /tmp/up"]);
        assert_eq!(h.user.as_deref(), Some("root"));
        assert!(h.privileged);
        assert_eq!(h.working_dir.as_deref(), Some("/srv"));
        assert_eq!(h.environment["A"], "1");
        assert_eq!(s.pre_stop[0].command, vec!["./flush", "--all"]);
        assert_eq!(s.pre_stop[1].environment["B"], "2");
    }

    #[test]
    fn a_hook_without_a_command_or_with_a_bad_field_is_a_field_error() {
        assert_eq!(
            fields(
                "services: {web: {image: x, post_start: [{user: root}, {command: x, working_dir: srv, privileged: maybe, shell: sh}], pre_stop: {command: x}}}"
            ),
            vec![
                "services.web.post_start[0].command",
                "services.web.post_start[1].shell",
                "services.web.post_start[1].working_dir",
                "services.web.post_start[1].privileged",
                "services.web.pre_stop",
            ]
        );
    }

    #[test]
    fn a_changed_hook_changes_the_container_hash_as_in_compose() {
        let plain = service("").container_hash();
        let start = service("post_start: [{command: a}]").container_hash();
        let stop = service("pre_stop: [{command: a}]").container_hash();
        assert!(plain != start && plain != stop && start != stop);
        assert_ne!(
            service("post_start: [{command: b}]").container_hash(),
            start
        );
    }
}
