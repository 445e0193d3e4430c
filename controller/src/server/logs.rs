//! `GET /v1/stacks/{stack}/logs?service=&follow=&since=&tail=&timestamps=`: the output of
//! every replica of a stack (or one service), interleaved as it comes, streamed as NDJSON
//! [`LogRecord`]s. With `follow`, replicas that start later (scale-up, replacement) join the
//! stream; it ends when the client goes away or the daemon stops, and every reader with it.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use capstan_api::logs::{replica_name, LogRecord};
use capstan_api::object::ErrorBody;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::ApiState;
use crate::runtime::{LogChunk, LogOptions, Observed, Runtime, RuntimeError};

/// How often a followed stack is listed for replicas that joined.
const JOIN_POLL: Duration = Duration::from_secs(1);

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(logs))
}

/// Every parameter as text: a bad one is a JSON 400 naming it, not the framework's words.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// Only this service's replicas.
    service: Option<String>,
    /// `true` (or empty, `1`): go on streaming, replicas that start later included.
    follow: Option<String>,
    /// Only output since: Unix seconds, a duration back from now (`10m`) or an RFC 3339 time.
    since: Option<String>,
    /// Only the last lines of each replica: a number, or `all`.
    tail: Option<String>,
    /// `true` (or empty, `1`): each line with the engine's timestamp.
    timestamps: Option<String>,
}

fn error(status: StatusCode, error: String) -> Response {
    let body = ErrorBody {
        error,
        details: vec![],
    };
    (status, Json(body)).into_response()
}

fn flag(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("" | "true" | "1") => Ok(true),
        Some(other) => Err(format!("{name}: expected true or false, got {other:?}")),
    }
}

/// `since`: Unix seconds, a duration back from `now` (`10m`, `1h30m`), or an RFC 3339 time.
fn since(value: &str, now: std::time::SystemTime) -> Result<i64, String> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    let at = match humantime::parse_duration(value) {
        Ok(back) => now.checked_sub(back),
        Err(_) => humantime::parse_rfc3339_weak(value).ok(),
    };
    at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| {
            format!(
                "since: expected a duration (10m), an RFC 3339 time or Unix seconds, got {value:?}"
            )
        })
}

impl LogsQuery {
    fn options(&self) -> Result<LogOptions, String> {
        let tail =
            match self.tail.as_deref() {
                None | Some("all") => None,
                Some(n) => Some(n.parse::<u64>().map_err(|_| {
                    format!("tail: expected a number of lines or \"all\", got {n:?}")
                })?),
            };
        Ok(LogOptions {
            follow: flag("follow", self.follow.as_deref())?,
            since: match self.since.as_deref() {
                None | Some("") => None,
                Some(s) => Some(since(s, std::time::SystemTime::now())?),
            },
            tail,
            timestamps: flag("timestamps", self.timestamps.as_deref())?,
        })
    }
}

#[utoipa::path(get, path = "/v1/stacks/{stack}/logs", tag = "services",
    params(("stack" = String, Path, description = "The stack's name."), LogsQuery),
    responses(
        (status = 200, description = "The replicas' output, one JSON `LogRecord` a line (NDJSON), interleaved as it comes.",
            body = LogRecord, content_type = "application/x-ndjson"),
        (status = 400, description = "A parameter is not understood: the error names it.", body = ErrorBody),
        (status = 404, description = "No such stack, or no such service in it.", body = ErrorBody),
        (status = 503, description = "etcd does not answer.", body = ErrorBody),
    ))]
async fn logs(
    State(st): State<ApiState>,
    Path(stack): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let opts = match q.options() {
        Ok(o) => o,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let view = match st.store.stack_view(&stack).await {
        Ok(Some(view)) => view,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("stack {stack} not found")),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if let Some(service) = &q.service {
        if !view.services.iter().any(|s| &s.name == service) {
            let why = format!("service {service} not found in stack {stack}");
            return error(StatusCode::NOT_FOUND, why);
        }
    }
    let (tx, rx) = mpsc::channel::<LogRecord>(256);
    let target = Target {
        runtime: st.runtime.clone(),
        stack,
        service: q.service,
    };
    tokio::spawn(target.stream(opts, tx, st.stop.clone()));
    ndjson(rx)
}

/// A streamed response of the records `rx` receives, one JSON object a line; it ends when
/// every sender is gone, and dropping it (the client went away) closes `rx`.
pub(crate) fn ndjson<T: serde::Serialize + Send + 'static>(rx: mpsc::Receiver<T>) -> Response {
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let record = rx.recv().await?;
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Whose output is read.
struct Target {
    runtime: Arc<dyn Runtime>,
    stack: String,
    service: Option<String>,
}

impl Target {
    /// Lists the replicas (again every [`JOIN_POLL`] with `follow`) and reads each new one
    /// into `tx` until it ends, or `tx`'s receiver is gone, or the daemon stops. The readers
    /// live in a `JoinSet`: returning aborts them all.
    async fn stream(
        self,
        opts: LogOptions,
        tx: mpsc::Sender<LogRecord>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut seen = HashSet::new();
        let mut readers = tokio::task::JoinSet::new();
        let mut first = true;
        loop {
            // Replicas that join while following show all their output.
            let opts = if first {
                opts.clone()
            } else {
                LogOptions {
                    tail: None,
                    ..opts.clone()
                }
            };
            first = false;
            for obs in self.joined(&mut seen, &tx).await {
                let name = replica_name(&obs.service, obs.ordinal, &obs.name);
                if tx
                    .send(LogRecord::Replica { name: name.clone() })
                    .await
                    .is_err()
                {
                    return;
                }
                let chunks = self.runtime.logs(&obs.id, &opts);
                readers.spawn(read(chunks, name, tx.clone()));
            }
            if !opts.follow {
                break;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = stopping(&mut stop) => return,
                _ = tokio::time::sleep(JOIN_POLL) => {}
            }
        }
        tokio::select! {
            _ = tx.closed() => {}
            _ = stopping(&mut stop) => {}
            _ = async { while readers.join_next().await.is_some() {} } => {}
        }
    }

    /// The replicas not read yet, by service and ordinal; a failed list is an error record.
    async fn joined(
        &self,
        seen: &mut HashSet<String>,
        tx: &mpsc::Sender<LogRecord>,
    ) -> Vec<Observed> {
        let mut found = match self
            .runtime
            .list(Some(&self.stack), self.service.as_deref())
            .await
        {
            Ok(found) => found,
            Err(e) => {
                let record = LogRecord::Error {
                    replica: self.stack.clone(),
                    message: e.to_string(),
                };
                let _ = tx.send(record).await;
                return vec![];
            }
        };
        found.retain(|o| seen.insert(o.id.clone()));
        found.sort_by(|a, b| {
            (&a.service, a.ordinal, a.created).cmp(&(&b.service, b.ordinal, b.created))
        });
        found
    }
}

/// Resolves once the daemon stops (never, if nobody can tell it to).
pub(crate) async fn stopping(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

type Chunks = BoxStream<'static, Result<LogChunk, RuntimeError>>;

/// One replica's output, as [`lines`] into `tx`; a read that fails ends with an error record.
async fn read(chunks: Chunks, replica: String, tx: mpsc::Sender<LogRecord>) {
    let mut lines = lines(chunks);
    while let Some(line) = lines.next().await {
        let record = match line {
            Ok((stderr, text)) => LogRecord::Line {
                replica: replica.clone(),
                stderr,
                text,
            },
            Err(e) => {
                let message = e.to_string();
                let _ = tx.send(LogRecord::Error { replica, message }).await;
                return;
            }
        };
        if tx.send(record).await.is_err() {
            return;
        }
    }
}

/// A container's output cut into lines, as `(stderr, text)` (the engine's frames are writes,
/// not lines); when the output ends, each stream's unfinished last line too. A failed read
/// is the last item.
pub(crate) fn lines(chunks: Chunks) -> BoxStream<'static, Result<(bool, String), RuntimeError>> {
    struct Cut {
        chunks: Chunks,
        /// The unfinished line of stdout, and of stderr.
        partial: [Vec<u8>; 2],
        ready: VecDeque<Result<(bool, String), RuntimeError>>,
        done: bool,
    }
    let cut = Cut {
        chunks,
        partial: [vec![], vec![]],
        ready: VecDeque::new(),
        done: false,
    };
    let cut_lines = |mut cut: Cut| async move {
        loop {
            if let Some(next) = cut.ready.pop_front() {
                return Some((next, cut));
            }
            if cut.done {
                return None;
            }
            match cut.chunks.next().await {
                Some(Ok(chunk)) => {
                    let buf = &mut cut.partial[usize::from(chunk.stderr)];
                    buf.extend_from_slice(&chunk.bytes);
                    let complete = complete_lines(buf).into_iter();
                    cut.ready
                        .extend(complete.map(|text| Ok((chunk.stderr, text))));
                }
                Some(Err(e)) => {
                    cut.ready.push_back(Err(e));
                    cut.done = true;
                }
                None => {
                    for (i, rest) in cut.partial.iter_mut().enumerate() {
                        if !rest.is_empty() {
                            let text = String::from_utf8_lossy(rest).into_owned();
                            cut.ready.push_back(Ok((i == 1, text)));
                        }
                    }
                    cut.done = true;
                }
            }
        }
    };
    futures::stream::unfold(cut, cut_lines).boxed()
}

/// Takes the complete lines out of `buf` (without their `\n` or `\r\n`), leaving the rest.
fn complete_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return vec![];
    };
    let rest = buf.split_off(end + 1);
    let done = std::mem::replace(buf, rest);
    done[..end]
        .split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn output_is_cut_into_lines_and_a_partial_line_waits_for_its_end() {
        let mut buf = b"one\r\ntwo\nthr".to_vec();
        assert_eq!(complete_lines(&mut buf), ["one", "two"]);
        assert_eq!(buf, b"thr");
        assert!(complete_lines(&mut buf).is_empty());
        buf.extend_from_slice(b"ee\n");
        assert_eq!(complete_lines(&mut buf), ["three"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn since_takes_unix_seconds_a_duration_back_or_an_rfc3339_time() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(since("1234", now), Ok(1234));
        assert_eq!(since("10m", now), Ok(10_000 - 600));
        assert_eq!(since("1970-01-01T00:01:40Z", now), Ok(100));
        let bad = since("yesterday", SystemTime::now()).unwrap_err();
        assert!(bad.starts_with("since:"), "{bad}");
    }

    #[test]
    fn a_bad_parameter_is_refused_by_name() {
        let q = |tail: &str, follow: &str| LogsQuery {
            tail: Some(tail.into()),
            follow: Some(follow.into()),
            ..Default::default()
        };
        assert!(q("x", "true").options().unwrap_err().starts_with("tail:"));
        assert!(q("3", "maybe")
            .options()
            .unwrap_err()
            .starts_with("follow:"));
        let ok = q("3", "true").options().unwrap();
        assert_eq!((ok.tail, ok.follow), (Some(3), true));
        assert_eq!(q("all", "false").options().unwrap().tail, None);
    }

    use crate::runtime::fake::replica_plan as plan;

    /// A fake engine with replica 1 of `web` and of `db` in stack `s`.
    async fn web_and_db() -> Arc<crate::runtime::fake::FakeRuntime> {
        let fake = Arc::new(crate::runtime::fake::FakeRuntime::default());
        fake.create(&plan("s", "web", 1)).await.unwrap();
        fake.create(&plan("s", "db", 1)).await.unwrap();
        fake
    }

    async fn next(rx: &mut mpsc::Receiver<LogRecord>) -> LogRecord {
        rx.recv().await.expect("a record")
    }

    #[tokio::test]
    async fn following_reads_every_replica_then_those_that_join_and_stops_when_the_reader_goes() {
        let fake = web_and_db().await;
        let target = Target {
            runtime: fake.clone(),
            stack: "s".into(),
            service: Some("web".into()),
        };
        let (tx, mut rx) = mpsc::channel(16);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(target.stream(opts, tx, stop));
        let web1 = "web-1".to_string();
        assert_eq!(
            next(&mut rx).await,
            LogRecord::Replica { name: web1.clone() }
        );
        let line = LogRecord::Line {
            replica: web1,
            stderr: false,
            text: "output of s-web-1".into(),
        };
        assert_eq!(next(&mut rx).await, line);
        fake.create(&plan("s", "web", 2)).await.unwrap();
        let web2 = "web-2".to_string();
        assert_eq!(next(&mut rx).await, LogRecord::Replica { name: web2 });
        assert!(
            matches!(next(&mut rx).await, LogRecord::Line { text, .. } if text == "output of s-web-2")
        );
        drop(rx);
        task.await.expect("the stream ends once its reader is gone");
    }

    #[tokio::test]
    async fn without_follow_the_stream_ends_with_the_output() {
        let fake = web_and_db().await;
        let target = Target {
            runtime: fake.clone(),
            stack: "s".into(),
            service: None,
        };
        let (tx, mut rx) = mpsc::channel(16);
        // Nobody can stop this one: it still runs to the end of the output.
        let stop = tokio::sync::watch::channel(false).1;
        target.stream(LogOptions::default(), tx, stop).await;
        let mut names = vec![];
        while let Some(record) = rx.recv().await {
            if let LogRecord::Replica { name } = record {
                names.push(name);
            }
        }
        assert_eq!(names, ["db-1", "web-1"]);
    }

    #[tokio::test]
    async fn a_followed_stream_ends_when_the_daemon_stops() {
        let fake = Arc::new(crate::runtime::fake::FakeRuntime::default());
        fake.create(&plan("s", "web", 1)).await.unwrap();
        let target = Target {
            runtime: fake.clone(),
            stack: "s".into(),
            service: None,
        };
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(target.stream(opts, tx, stop));
        assert!(matches!(next(&mut rx).await, LogRecord::Replica { .. }));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        while rx.recv().await.is_some() {}
    }
}
