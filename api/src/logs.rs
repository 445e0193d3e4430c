//! The records of `GET /v1/stacks/{stack}/logs`: one JSON object a line (NDJSON).

use serde::{Deserialize, Serialize};

/// One line of the logs stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LogRecord {
    /// A replica whose output follows: every one at the start, then each that joins
    /// (`follow`). `name` is the prefix, `service-n`.
    Replica { name: String },
    /// One line of a replica's output, without its line break.
    Line {
        replica: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stderr: bool,
        text: String,
    },
    /// A replica's output could not be read (any longer).
    Error { replica: String, message: String },
}

/// The prefix of a replica's lines: `service-n`, as `docker compose logs` has it, or the
/// container's name when it has no ordinal.
pub fn replica_name(service: &str, ordinal: Option<u32>, container: &str) -> String {
    match ordinal {
        Some(n) => format!("{service}-{n}"),
        None => container.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_tagged_json_objects_and_stdout_is_the_default_stream() {
        let line = LogRecord::Line {
            replica: "web-1".into(),
            stderr: false,
            text: "hi".into(),
        };
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(json, r#"{"kind":"line","replica":"web-1","text":"hi"}"#);
        assert_eq!(serde_json::from_str::<LogRecord>(&json).unwrap(), line);
    }

    #[test]
    fn a_replica_is_named_after_its_service_and_ordinal() {
        assert_eq!(replica_name("web", Some(2), "s-web-2"), "web-2");
        assert_eq!(replica_name("web", None, "s-web-x"), "s-web-x");
    }
}
