//! The HTTP client behind the CLI commands, and the two commands that do more than one call:
//! `apply` (with `--wait`) and `delete` (which waits for the teardown).

use anyhow::{bail, Context as _};
use capstan_api::object::{ApplyResult, ErrorBody, ScaleRequest, ServiceView, StackView};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Client {
    base: String,
    /// Where the requests go, for messages: the server as given (`unix:///PATH`), or `base`.
    server: String,
    http: reqwest::Client,
}

/// How the client proves who it is on TCP, and which CA it trusts for TLS.
#[derive(Default)]
pub struct Credentials {
    /// `--token` / `CAPSTAN_TOKEN`.
    pub token: Option<String>,
    /// `--token-file` / `CAPSTAN_TOKEN_FILE`: mode 0600 or stricter.
    pub token_file: Option<std::path::PathBuf>,
    /// `--cacert` / `CAPSTAN_CACERT`: PEM; the only roots trusted when given.
    pub cacert: Option<std::path::PathBuf>,
    /// `--client-cert` / `CAPSTAN_CLIENT_CERT`: PEM certificate presented to a server that
    /// verifies client certificates (`serve --tls-client-ca`), with its key below.
    pub client_cert: Option<std::path::PathBuf>,
    /// `--client-key` / `CAPSTAN_CLIENT_KEY`: mode 0600 or stricter.
    pub client_key: Option<std::path::PathBuf>,
}

impl Credentials {
    /// The token, from the flag or variable, else the file; a file others can read is refused.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        Ok(Some(private_file(path, "token file")?.trim().to_string()))
    }

    /// The client certificate and its key, as one PEM (`--client-cert`, `--client-key`).
    fn identity(&self) -> anyhow::Result<Option<reqwest::Identity>> {
        let Some((cert, key)) = self.client_cert.as_ref().zip(self.client_key.as_ref()) else {
            return Ok(None);
        };
        let mut pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading the client certificate {}", cert.display()))?;
        pem.push('\n');
        pem.push_str(&private_file(key, "client key")?);
        let identity = reqwest::Identity::from_pem(pem.as_bytes()).with_context(|| {
            format!(
                "{} and {} are not a PEM certificate and its key",
                cert.display(),
                key.display()
            )
        })?;
        Ok(Some(identity))
    }
}

/// A file of secrets: read, unless others than its owner may read it.
fn private_file(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the {what} {} is readable by others: `chmod 600 {0}`",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("reading the {what} {}", path.display()))
}

impl Client {
    /// A client of `server`: `unix:///PATH` (the default socket), `http://` or `https://`.
    pub fn new(server: &str, creds: &Credentials) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let (base, shown) = match server.strip_prefix("unix://") {
            Some(path) => {
                builder = builder.unix_socket(std::path::Path::new(path));
                ("http://capstan".to_string(), server.to_string())
            }
            None => {
                let base = server.trim_end_matches('/').to_string();
                (base.clone(), base)
            }
        };
        if !server.starts_with("unix://") {
            builder = tls_and_token(builder, creds)?;
        }
        Ok(Client {
            base,
            server: shown,
            http: builder.build().context("building the HTTP client")?,
        })
    }

    /// `POST /v1/tokens`.
    pub async fn create_token(
        &self,
        name: &str,
        role: capstan_api::token::Role,
        policy: Option<String>,
    ) -> anyhow::Result<capstan_api::token::CreatedToken> {
        let body = capstan_api::token::CreateToken {
            name: name.into(),
            role,
            policy,
        };
        let req = self.http.post(format!("{}/v1/tokens", self.base));
        self.send(req.json(&body)).await
    }

    pub async fn tokens(&self) -> anyhow::Result<Vec<capstan_api::token::TokenRecord>> {
        self.send(self.http.get(format!("{}/v1/tokens", self.base)))
            .await
    }

    pub async fn revoke_token(&self, name: &str) -> anyhow::Result<()> {
        let req = self.http.delete(format!("{}/v1/tokens/{name}", self.base));
        self.send::<serde_json::Value>(req).await.map(|_| ())
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let bytes = self.body(resp).await?;
        if status == reqwest::StatusCode::NO_CONTENT {
            return serde_json::from_slice(b"null").context("unexpected response from capstan");
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes).context("unexpected response from capstan");
        }
        Err(self.refused(status, &bytes))
    }

    pub async fn apply(
        &self,
        stack: &str,
        body: String,
        dry_run: bool,
    ) -> anyhow::Result<ApplyResult> {
        let mut req = self
            .http
            .put(format!("{}/v1/stacks/{stack}", self.base))
            .header("content-type", "application/yaml")
            .body(body);
        if dry_run {
            req = req.query(&[("dryRun", "true")]);
        }
        self.send(req).await
    }

    /// `GET /v1/images?tag=`: whether the engine has a built image, and the context limit.
    pub async fn image(&self, tag: &str) -> anyhow::Result<capstan_api::build::ImageView> {
        let req = self.http.get(format!("{}/v1/images", self.base));
        self.send(req.query(&[("tag", tag)])).await
    }

    /// `POST /v1/builds`: uploads a context; the answer streams NDJSON build events. Builds
    /// may take long: no overall timeout.
    pub async fn build(
        &self,
        request: &capstan_api::build::BuildRequest,
        tar: Vec<u8>,
    ) -> anyhow::Result<reqwest::Response> {
        let req = (self.http.post(format!("{}/v1/builds", self.base)))
            .query(&[("options", serde_json::to_string(request)?)])
            .header("content-type", "application/x-tar")
            .timeout(Duration::from_secs(24 * 3600))
            .body(tar);
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(self.refused(status, &self.body(resp).await?))
    }

    /// `GET /v1/stacks/{stack}/logs`: NDJSON log records; followed streams last as long as
    /// the user wants, so no overall timeout.
    pub async fn logs(
        &self,
        stack: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let req = (self
            .http
            .get(format!("{}/v1/stacks/{stack}/logs", self.base)))
        .query(query)
        .timeout(Duration::from_secs(365 * 24 * 3600));
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(self.refused(status, &self.body(resp).await?))
    }

    /// `POST /v1/stacks/{stack}/services/{service}/run`: the stream of the one-off's records.
    pub async fn run(
        &self,
        stack: &str,
        service: &str,
        req: &capstan_api::run::RunRequest,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/v1/stacks/{stack}/services/{service}/run", self.base);
        let req = (self.http.post(url).json(req)).timeout(Duration::from_secs(365 * 24 * 3600));
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(self.refused(status, &self.body(resp).await?))
    }

    pub async fn stack(&self, stack: &str) -> anyhow::Result<Option<StackView>> {
        let resp = self
            .http
            .get(format!("{}/v1/stacks/{stack}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = resp.status();
        let bytes = self.body(resp).await?;
        if !status.is_success() {
            return Err(self.refused(status, &bytes));
        }
        Ok(Some(serde_json::from_slice(&bytes)?))
    }

    pub async fn leader(&self) -> anyhow::Result<capstan_api::object::LeaderView> {
        self.send(self.http.get(format!("{}/v1/leader", self.base)))
            .await
    }

    pub async fn stacks(&self) -> anyhow::Result<Vec<StackView>> {
        self.send(self.http.get(format!("{}/v1/stacks", self.base)))
            .await
    }

    pub async fn services(&self, stack: Option<&str>) -> anyhow::Result<Vec<ServiceView>> {
        let mut req = self.http.get(format!("{}/v1/services", self.base));
        if let Some(s) = stack {
            req = req.query(&[("stack", s)]);
        }
        self.send(req).await
    }

    pub async fn service(&self, stack: &str, service: &str) -> anyhow::Result<ServiceView> {
        self.send(self.http.get(format!(
            "{}/v1/stacks/{stack}/services/{service}",
            self.base
        )))
        .await
    }

    pub async fn scale(
        &self,
        stack: &str,
        service: &str,
        replicas: u32,
    ) -> anyhow::Result<ServiceView> {
        self.send(
            self.http
                .put(format!(
                    "{}/v1/stacks/{stack}/services/{service}/scale",
                    self.base
                ))
                .json(&ScaleRequest { replicas }),
        )
        .await
    }

    /// `capstan rollout undo`.
    /// `rollout undo`: to revision `to` (None: the previous one).
    pub async fn undo(
        &self,
        stack: &str,
        service: &str,
        to: Option<i64>,
    ) -> anyhow::Result<ServiceView> {
        let url = format!("{}/v1/stacks/{stack}/services/{service}/undo", self.base);
        let query: Vec<(&str, i64)> = to.map(|n| ("toRevision", n)).into_iter().collect();
        self.send(self.http.post(url).query(&query)).await
    }

    /// `rollout pause|resume|restart`.
    pub async fn rollout(
        &self,
        stack: &str,
        service: &str,
        verb: &str,
    ) -> anyhow::Result<ServiceView> {
        self.send(self.http.post(format!(
            "{}/v1/stacks/{stack}/services/{service}/rollout/{verb}",
            self.base
        )))
        .await
    }

    pub async fn history(
        &self,
        stack: &str,
        service: &str,
    ) -> anyhow::Result<Vec<capstan_api::object::RevisionView>> {
        self.send(self.http.get(format!(
            "{}/v1/stacks/{stack}/services/{service}/history",
            self.base
        )))
        .await
    }

    /// What applying `body` (a resolved Compose document) would change, per service.
    pub async fn diff(
        &self,
        stack: &str,
        body: String,
    ) -> anyhow::Result<std::collections::BTreeMap<String, capstan_api::diff::ServiceDiff>> {
        self.send(
            self.http
                .post(format!("{}/v1/stacks/{stack}/diff", self.base))
                .body(body),
        )
        .await
    }

    pub async fn delete(&self, stack: &str, volumes: bool) -> anyhow::Result<serde_json::Value> {
        self.send(
            self.http
                .delete(format!("{}/v1/stacks/{stack}", self.base))
                .query(&[("volumes", volumes)]),
        )
        .await
    }
}

impl Client {
    /// The server as the user named it (`unix:///run/capstan/capstan.sock`, `https://...`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A request that got no answer, as one sentence: the server and why.
    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!("{}", transport(&self.server, Phase::Connect, &e))
    }

    /// An answer whose body broke off (`what` was being read), as one sentence.
    pub fn dropped(&self, e: reqwest::Error, what: &str) -> anyhow::Error {
        anyhow::anyhow!("{}", transport(&self.server, Phase::Reading(what), &e))
    }

    /// A refusal as one message: the documented JSON error with a line per field; a 503
    /// says the daemon cannot serve now (its etcd is gone) rather than that the request is
    /// wrong.
    fn refused(&self, status: reqwest::StatusCode, bytes: &[u8]) -> anyhow::Error {
        let message = api_message(status, bytes);
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return anyhow::anyhow!(
                "capstan at {} cannot serve this now: {message}",
                self.server
            );
        }
        anyhow::anyhow!("{message}")
    }

    /// The body of an answer, or the sentence saying the connection dropped.
    async fn body(&self, resp: reqwest::Response) -> anyhow::Result<Vec<u8>> {
        let bytes = resp.bytes().await;
        bytes
            .map(|b| b.to_vec())
            .map_err(|e| self.dropped(e, "its answer"))
    }
}

/// When a transport error happened.
#[derive(Clone, Copy, Debug)]
enum Phase<'a> {
    /// Sending the request: no answer came.
    Connect,
    /// Reading the answer's body, which holds `.0`.
    Reading(&'a str),
}

/// A transport error as one sentence naming `server`, what failed and what to check,
/// instead of the HTTP stack's chain of errors.
fn transport(server: &str, phase: Phase<'_>, e: &(dyn std::error::Error + 'static)) -> String {
    let (reason, hint) = cause(e);
    match phase {
        Phase::Connect => format!("cannot reach capstan at {server}: {reason} ({hint})"),
        Phase::Reading(what) => format!(
            "the connection to capstan at {server} broke while reading {what}: {reason} (did the daemon stop or restart?)"
        ),
    }
}

/// The innermost cause of `e` in a few words, and what to check.
fn cause(e: &(dyn std::error::Error + 'static)) -> (String, &'static str) {
    const RUNNING: &str = "is `capstan serve` running? set --server or CAPSTAN_SERVER";
    let mut innermost = e;
    let mut io_kind = None;
    let mut timed_out = false;
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = io_kind.or(Some(io.kind()));
        }
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            timed_out |= r.is_timeout();
        }
        innermost = s;
        source = s.source();
    }
    use std::io::ErrorKind as K;
    match io_kind {
        _ if timed_out => ("no answer in time".into(), "is the daemon overloaded, or its etcd slow?"),
        Some(K::ConnectionRefused) => ("connection refused".into(), RUNNING),
        Some(K::NotFound) => ("no such socket".into(), RUNNING),
        Some(K::PermissionDenied) => (
            "permission denied".into(),
            "the socket is only for root and its group: run as root, or join the group given to `serve --socket-group`",
        ),
        Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof) => {
            ("the connection was closed".into(), RUNNING)
        }
        _ => {
            let words = innermost.to_string();
            let words = match words.find(" (os error") {
                Some(at) => words[..at].to_string(),
                None => words,
            };
            let words = crate::output::safe(words.trim()).into_owned();
            (lowercase_first(&words), RUNNING)
        }
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if !chars.clone().next().is_some_and(char::is_uppercase) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => s.to_string(),
    }
}

/// TLS roots (`--cacert`), the client certificate and the bearer token, for TCP servers.
fn tls_and_token(
    mut builder: reqwest::ClientBuilder,
    creds: &Credentials,
) -> anyhow::Result<reqwest::ClientBuilder> {
    if let Some(path) = &creds.cacert {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    if let Some(identity) = creds.identity()? {
        builder = builder.identity(identity);
    }
    if let Some(token) = creds.token()? {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    Ok(builder)
}

/// The documented JSON error, as one message with a line per field; anything else (a
/// proxy's page) as the status and its first line.
fn api_message(status: reqwest::StatusCode, bytes: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => {
            let mut msg = body.error;
            for d in body.details {
                msg.push_str(&format!("\n  {}: {}", d.field, d.reason));
            }
            msg
        }
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let first = text.lines().next().unwrap_or("").trim();
            let first: String = first.chars().take(200).collect();
            format!("capstan answered {status}: {first}")
        }
    }
}

pub fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('/') {
        Some((s, v)) if !s.is_empty() && !v.is_empty() => Ok((s, v)),
        _ => bail!("expected STACK/SERVICE, got {target:?}"),
    }
}

/// `capstan apply`: resolves the project on this side, sends one document, and reports
/// per service what the server did (or, with `dry_run`, would do).
pub async fn apply(
    api: &Client,
    opts: &crate::project::Options,
    dry_run: bool,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    // The document `capstan config` shows.
    let req = crate::config::request(opts)?;
    for w in &req.warnings {
        eprintln!("warning: {w}");
    }
    let stack = req.stack.clone();
    // Built services: their images are built first (unless the engine has them); a failed
    // build returns here, before anything is applied.
    if !dry_run {
        crate::build::ensure(api, &stack, &req.jobs).await?;
    }
    let body = req.body()?;
    // Parsed here too, for the notices; the server validates again and has the last word.
    if let Ok(spec) = capstan_api::parse_stack(&stack, &body) {
        for n in capstan_api::compose::notices::notices(&spec) {
            eprintln!("notice: {n}");
        }
    }
    let result = api.apply(&stack, body, dry_run).await?;
    let note = if result.dry_run { " (dry run)" } else { "" };
    for (svc, outcome) in &result.services {
        println!("{stack}/{svc} {outcome}{note}");
    }
    if !wait || dry_run {
        return Ok(0);
    }
    wait_converged(api, &stack, timeout).await
}

async fn wait_converged(api: &Client, stack: &str, timeout: Duration) -> anyhow::Result<i32> {
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut last_lines: Vec<String> = vec![];
    loop {
        let view = api
            .stack(stack)
            .await?
            .with_context(|| format!("stack {stack} disappeared while waiting"))?;
        let lines: Vec<String> = view
            .services
            .iter()
            .map(|s| {
                let state = if s.converged() {
                    "ready".to_string()
                } else {
                    s.summary()
                };
                format!(
                    "  {:<20} {:>4}/{:<4} {}",
                    s.name, s.ready, s.replicas, state
                )
            })
            .collect();
        if lines != last_lines {
            if tty && !last_lines.is_empty() {
                print!("\x1b[{}A\x1b[J", last_lines.len());
            }
            for l in &lines {
                println!("{l}");
            }
            last_lines = lines;
        }
        if view.services.iter().all(|s| s.converged()) {
            println!(
                "stack {stack} converged in {:.1}s",
                start.elapsed().as_secs_f64()
            );
            return Ok(0);
        }
        if start.elapsed() >= timeout {
            eprintln!(
                "timed out after {} waiting for stack {stack}:",
                humantime::format_duration(timeout)
            );
            for s in view.services.iter().filter(|s| !s.converged()) {
                let why = s
                    .summary_condition()
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_else(|| "not yet observed by the controller".into());
                eprintln!("  {}: {}/{} ready; {why}", s.name, s.ready, s.replicas);
            }
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn delete(
    api: &Client,
    stack: &str,
    volumes: bool,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    api.delete(stack, volumes).await?;
    if !wait {
        println!("stack {stack} deletion requested");
        return Ok(0);
    }
    let start = Instant::now();
    let mut said = None;
    while let Some(view) = api.stack(stack).await? {
        // Say what the teardown waits for, once each time it changes.
        if view.deletion_blocked_by.is_some() && view.deletion_blocked_by != said {
            eprintln!(
                "  waiting: {}",
                view.deletion_blocked_by.as_deref().unwrap_or("")
            );
            said = view.deletion_blocked_by.clone();
        }
        if start.elapsed() >= timeout {
            let why = view
                .deletion_blocked_by
                .map(|why| format!(": {why}"))
                .unwrap_or_default();
            eprintln!(
                "stack {stack} is still being torn down after {}{why}",
                humantime::format_duration(timeout)
            );
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("stack {stack} deleted");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// A socket path of its own under the temporary folder.
    fn socket(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("capstan-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("capstan.sock")
    }

    fn client(path: &std::path::Path) -> Client {
        Client::new(
            &format!("unix://{}", path.display()),
            &Credentials::default(),
        )
        .unwrap()
    }

    /// Answers the first request on `path` with `answer`, then closes the connection.
    fn answer_once(path: &std::path::Path, answer: &'static [u8]) {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            conn.write_all(answer).unwrap();
        });
    }

    #[tokio::test]
    async fn a_socket_nothing_listens_on_is_one_sentence_naming_it() {
        let path = socket("refused");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = client(&path).leader().await.unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!("cannot reach capstan at unix://{}: connection refused (is `capstan serve` running? set --server or CAPSTAN_SERVER)", path.display())
        );
        std::fs::remove_file(&path).unwrap();
        let e = format!("{:#}", client(&path).leader().await.unwrap_err());
        assert!(
            e.contains(": no such socket (is `capstan serve` running?"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_breaks_off_is_one_sentence_saying_so() {
        let path = socket("dropped");
        answer_once(
            &path,
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"leader\"",
        );
        let e = format!("{:#}", client(&path).leader().await.unwrap_err());
        let want = format!(
            "the connection to capstan at unix://{} broke while reading its answer: ",
            path.display()
        );
        assert!(e.starts_with(&want), "{e}");
        assert!(
            e.ends_with("(did the daemon stop or restart?)") && !e.contains('\n'),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_daemon_without_etcd_is_said_to_be_unable_to_serve_now() {
        let path = socket("unavailable");
        answer_once(
            &path,
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 45\r\n\r\n{\"error\":\"etcd does not answer\",\"details\":[]}",
        );
        let e = format!("{:#}", client(&path).leader().await.unwrap_err());
        let want = format!(
            "capstan at unix://{} cannot serve this now: etcd does not answer",
            path.display()
        );
        assert_eq!(e, want);
    }

    #[test]
    fn a_proxys_error_page_is_its_status_and_first_line() {
        let page = b"<html>bad gateway</html>\n<body>much more</body>";
        assert_eq!(
            api_message(reqwest::StatusCode::BAD_GATEWAY, page),
            "capstan answered 502 Bad Gateway: <html>bad gateway</html>"
        );
    }
}
