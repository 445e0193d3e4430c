//! `capstan logs STACK[/SERVICE]`: the replicas' output through the daemon
//! (`GET /v1/stacks/{stack}/logs`), each line prefixed `service-n | ` as `docker compose logs`
//! prints it; prefixes padded to one width, coloured on a terminal only.

use capstan_api::logs::LogRecord;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use crate::client::Client;

/// What to read, as the flags say.
pub struct Request {
    pub target: String,
    pub follow: bool,
    pub since: Option<String>,
    pub tail: Option<String>,
    pub timestamps: bool,
}

impl Request {
    /// The stack, and the route's query.
    fn query(&self) -> (&str, Vec<(&'static str, String)>) {
        let (stack, service) = match self.target.split_once('/') {
            Some((stack, service)) => (stack, Some(service)),
            None => (self.target.as_str(), None),
        };
        let mut q = vec![
            ("follow", self.follow.to_string()),
            ("timestamps", self.timestamps.to_string()),
        ];
        if let Some(service) = service {
            q.push(("service", service.to_string()));
        }
        if let Some(since) = &self.since {
            q.push(("since", since.clone()));
        }
        if let Some(tail) = &self.tail {
            q.push(("tail", tail.clone()));
        }
        (stack, q)
    }
}

/// Prints the stream until it ends (or, with `--follow`, until interrupted). Exit code 0.
pub async fn run(api: &Client, req: &Request) -> anyhow::Result<i32> {
    let (stack, query) = req.query();
    let mut resp = api.logs(stack, &query).await?;
    let mut out = Printer::new(std::io::stdout().is_terminal());
    let mut buf = Vec::new();
    while let Some(chunk) = (resp.chunk().await).map_err(|e| api.dropped(e, "the logs"))? {
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            match serde_json::from_slice::<LogRecord>(&line) {
                Ok(record) => out.record(record)?,
                Err(e) => tracing::debug!(error = %e, "an unreadable logs record"),
            }
        }
    }
    Ok(0)
}

/// Colours for the prefixes, as Compose cycles them.
const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

struct Printer {
    colour: bool,
    width: usize,
    /// Replica → its colour's index, in order of appearance.
    seen: HashMap<String, usize>,
}

impl Printer {
    fn new(colour: bool) -> Self {
        Printer {
            colour,
            width: 0,
            seen: HashMap::new(),
        }
    }

    fn record(&mut self, record: LogRecord) -> std::io::Result<()> {
        match record {
            LogRecord::Replica { name } => {
                self.width = self.width.max(name.chars().count());
                let n = self.seen.len();
                self.seen.entry(name).or_insert(n);
            }
            LogRecord::Line { replica, text, .. } => {
                let line = self.line(&replica, &text);
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(line.as_bytes())?;
                stdout.flush()?;
            }
            LogRecord::Error { replica, message } => {
                eprintln!("{replica}: cannot read its output: {message}");
            }
        }
        Ok(())
    }

    /// `replica | text`, the prefix padded (and coloured on a terminal).
    fn line(&self, replica: &str, text: &str) -> String {
        let padded = format!("{replica:<width$} |", width = self.width);
        match (self.colour, self.seen.get(replica)) {
            (true, Some(i)) => {
                let c = COLOURS[i % COLOURS.len()];
                format!("\x1b[{c}m{padded}\x1b[0m {text}\n")
            }
            _ => format!("{padded} {text}\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str) -> LogRecord {
        LogRecord::Replica { name: name.into() }
    }

    #[test]
    fn prefixes_are_padded_to_the_longest_replica_name_and_coloured_only_on_a_terminal() {
        let mut plain = Printer::new(false);
        plain.record(replica("web-1")).unwrap();
        plain.record(replica("worker-10")).unwrap();
        assert_eq!(plain.line("web-1", "hi"), "web-1     | hi\n");
        assert_eq!(plain.line("worker-10", "yo"), "worker-10 | yo\n");
        let mut tty = Printer::new(true);
        tty.record(replica("web-1")).unwrap();
        assert_eq!(tty.line("web-1", "hi"), "\x1b[36mweb-1 |\x1b[0m hi\n");
    }

    #[test]
    fn a_service_target_becomes_the_service_parameter() {
        let req = Request {
            target: "shop/web".into(),
            follow: true,
            since: Some("10m".into()),
            tail: Some("5".into()),
            timestamps: false,
        };
        let (stack, q) = req.query();
        assert_eq!(stack, "shop");
        assert!(q.contains(&("service", "web".into())));
        assert!(q.contains(&("since", "10m".into())));
        assert!(q.contains(&("tail", "5".into())));
        assert!(q.contains(&("follow", "true".into())));
    }
}
