//! `POST /v1/stacks/{stack}/services/{service}/run`: a one-off container from a service's
//! spec (`capstan run`, as `docker compose run`), its output streamed as NDJSON
//! [`RunRecord`]s that end with its exit code.

use serde::{Deserialize, Serialize};

/// How often a running one-off's stream carries [`RunRecord::Alive`].
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// The command, instead of the service's (`None`: the service's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `KEY=VALUE` entries added to the service's environment (`-e`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

/// One line of the run's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RunRecord {
    /// The one-off container, once it started.
    Started { container: String },
    /// One line of its output, without the line break.
    Line {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stderr: bool,
        text: String,
    },
    /// Sent every [`ALIVE_EVERY`] while the container runs: a long silent run keeps its
    /// connection busy through proxies that close idle ones, and a write to a client that
    /// went away fails at once.
    Alive,
    /// It exited with `code`; it has been removed. The last record.
    Exit { code: i64 },
    /// Something went wrong after it started (its output or exit could not be read); the
    /// container has been removed. The last record.
    Error { message: String },
}

impl RunRequest {
    /// Each problem as (field, reason): an empty command, an entry that is not `KEY=VALUE`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        if self.command.as_ref().is_some_and(|c| c.is_empty()) {
            out.push((
                "command".into(),
                "an empty command runs nothing; leave it out to run the service's own".into(),
            ));
        }
        for (i, e) in self.env.iter().enumerate() {
            if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                out.push((format!("env[{i}]"), format!("{e:?} is not KEY=VALUE")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_record_is_a_tagged_json_object() {
        let json = serde_json::to_string(&RunRecord::Exit { code: 3 }).unwrap();
        assert_eq!(json, r#"{"kind":"exit","code":3}"#);
    }

    #[test]
    fn an_empty_command_or_an_entry_without_a_key_is_named() {
        let req = RunRequest {
            command: Some(vec![]),
            env: vec!["A=1".into(), "=x".into(), "B".into()],
        };
        let fields: Vec<String> = req.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["command", "env[1]", "env[2]"]);
        assert!(RunRequest::default().problems().is_empty());
    }
}
