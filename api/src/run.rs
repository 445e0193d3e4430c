//! `POST /v1/stacks/{stack}/services/{service}/run`: a one-off container from a service's
//! spec (`capstan run`, as `docker compose run`), its output streamed as NDJSON
//! [`RunRecord`]s that end with its exit code: every byte it wrote, in order, in pieces
//! ([`RunRecord::Output`]), then the code. [`encode`] writes a record, [`Decoder`] reads
//! the stream back.

use serde::{Deserialize, Serialize};

/// How often a running one-off's stream carries [`RunRecord::Alive`].
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// The command, instead of the service's (`None`: the service's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `KEY=VALUE` entries added to the service's environment (`-e`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

/// One record of the run's stream: a JSON object on a line of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RunRecord {
    /// The one-off container, once it started.
    Started { container: String },
    /// A piece of its output, as the container wrote it: any bytes (not always text, not
    /// cut at line breaks), carried in base64 as `data`; the pieces of one stream in order
    /// are exactly what it wrote.
    Output {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stderr: bool,
        #[serde(rename = "data", with = "base64_bytes")]
        #[schema(value_type = String, content_encoding = "base64")]
        bytes: Vec<u8>,
    },
    /// One line of its output, without the line break: what daemons before [`RunRecord::Output`]
    /// sent (they lost an unfinished last line); read so a newer CLI still works with them.
    Line {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stderr: bool,
        text: String,
    },
    /// Sent every [`ALIVE_EVERY`] while the container runs: a long silent run keeps its
    /// connection busy through proxies that close idle ones, and a write to a client that
    /// went away fails at once.
    Alive,
    /// It exited with `code`, after all its output was sent; it has been removed. The last
    /// record.
    Exit { code: i64 },
    /// Something went wrong after it started (its output or exit could not be read); the
    /// container has been removed. The last record.
    Error { message: String },
}

/// The largest piece of output one [`RunRecord::Output`] carries; the daemon cuts bigger
/// ones, so a record stays well under [`MAX_RECORD`].
pub const MAX_OUTPUT_PIECE: usize = 64 * 1024;

/// The longest record line a reader accepts (base64 makes 4 bytes of 3): a stream that
/// never ends its line cannot make the reader hold unbounded memory.
pub const MAX_RECORD: usize = 1024 * 1024;

/// `Vec<u8>` as standard base64 text.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// One record as the stream carries it: its JSON and a line break.
pub fn encode(record: &RunRecord) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).expect("a run record always serialises");
    line.push(b'\n');
    line
}

/// Why the run's stream could not be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// A line that is not a record (a newer daemon's kind, or damage).
    #[error("record {number} of the run is unreadable: {reason}")]
    Unreadable { number: usize, reason: String },
    /// A line longer than [`MAX_RECORD`] without its end.
    #[error("record {number} of the run is longer than {MAX_RECORD} bytes")]
    TooLong { number: usize },
    /// The stream ended inside a record.
    #[error("the run's stream ended inside record {number}")]
    Truncated { number: usize },
}

/// Reads the run's stream as it arrives, in pieces cut anywhere: [`Decoder::feed`] returns
/// the records its bytes complete, [`Decoder::finish`] says whether the stream ended
/// cleanly. Never panics, whatever the bytes; after an error it reads nothing more.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The start of a record whose line break has not arrived yet.
    partial: Vec<u8>,
    /// How many lines were read, to name the bad one.
    lines: usize,
    /// The first error; once set, every call returns it.
    failed: Option<StreamError>,
}

impl Decoder {
    /// The records `bytes` completes, in order (blank lines are skipped).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<RunRecord>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut out = vec![];
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            let line = std::mem::take(&mut self.partial);
            match self.record(&line) {
                Ok(Some(record)) => out.push(record),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_RECORD {
            let e = StreamError::TooLong {
                number: self.lines + 1,
            };
            return Err(self.fail(e));
        }
        Ok(out)
    }

    /// The stream ended: an error if it ended inside a record.
    pub fn finish(self) -> Result<(), StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.partial.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        Err(StreamError::Truncated {
            number: self.lines + 1,
        })
    }

    fn record(&mut self, line: &[u8]) -> Result<Option<RunRecord>, StreamError> {
        self.lines += 1;
        if line.len() > MAX_RECORD {
            return Err(StreamError::TooLong { number: self.lines });
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(line)
            .map(Some)
            .map_err(|e| StreamError::Unreadable {
                number: self.lines,
                reason: e.to_string(),
            })
    }

    fn fail(&mut self, e: StreamError) -> StreamError {
        self.partial.clear();
        self.failed = Some(e.clone());
        e
    }
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
    fn output_is_base64_bytes_and_stdout_leaves_the_flag_out() {
        let out = RunRecord::Output {
            stderr: false,
            bytes: b"x\xff".to_vec(),
        };
        let json = serde_json::to_string(&out).unwrap();
        assert_eq!(json, r#"{"kind":"output","data":"eP8="}"#);
        assert_eq!(serde_json::from_str::<RunRecord>(&json).unwrap(), out);
    }

    fn records() -> Vec<RunRecord> {
        vec![
            RunRecord::Started {
                container: "s-web-run-1".into(),
            },
            RunRecord::Output {
                stderr: false,
                bytes: b"no line break".to_vec(),
            },
            RunRecord::Alive,
            RunRecord::Output {
                stderr: true,
                bytes: b"\n\x1b[31m\0".to_vec(),
            },
            RunRecord::Exit { code: 3 },
        ]
    }

    #[test]
    fn the_decoder_reads_records_back_wherever_the_stream_is_cut() {
        let stream: Vec<u8> = records().iter().flat_map(encode).collect();
        for cut in 0..=stream.len() {
            let mut d = Decoder::default();
            let mut got = d.feed(&stream[..cut]).unwrap();
            got.extend(d.feed(&stream[cut..]).unwrap());
            d.finish().unwrap();
            assert_eq!(got, records(), "cut at {cut}");
        }
        let mut d = Decoder::default();
        let got: Vec<RunRecord> = (stream.iter())
            .flat_map(|b| d.feed(std::slice::from_ref(b)).unwrap())
            .collect();
        assert_eq!(got, records(), "one byte at a time");
    }

    #[test]
    fn a_stream_ending_inside_a_record_or_a_bad_line_is_an_error_naming_the_record() {
        let mut d = Decoder::default();
        assert_eq!(
            d.feed(b"{\"kind\":\"alive\"}\n\n{\"kind\"").unwrap().len(),
            1
        );
        assert_eq!(d.finish(), Err(StreamError::Truncated { number: 3 }));
        let mut d = Decoder::default();
        let e = d.feed(b"{\"kind\":\"alive\"}\nnot json\n").unwrap_err();
        assert!(
            matches!(e, StreamError::Unreadable { number: 2, .. }),
            "{e}"
        );
        assert_eq!(d.feed(b"{\"kind\":\"alive\"}\n"), Err(e), "it stays failed");
    }

    #[test]
    fn a_record_that_never_ends_is_refused_at_the_bound() {
        let mut d = Decoder::default();
        let long = vec![b'x'; MAX_RECORD / 2 + 1];
        assert!(d.feed(&long).unwrap().is_empty());
        assert_eq!(d.feed(&long), Err(StreamError::TooLong { number: 1 }));
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
