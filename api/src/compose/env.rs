//! Environment files (`.env`, `--env-file`, a service's `env_file`) and entries without a
//! value: `environment: [TZ]` or `TZ:` takes the variable from the client's environment and is
//! left out when it is unset, as Compose does; a label without a value is an empty label.

use super::interpolate::{expand, Lookup};
use super::merge::keyed;
use super::resolve::Resolver;
use super::yaml::{Mapping, Value};
use std::path::Path;

/// Why an env file could not be read, and on which line (counted from 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct EnvFileError {
    pub line: usize,
    pub problem: EnvProblem,
}

/// What is wrong with a line of an env file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvProblem {
    #[error(
        "{0:?} is not KEY=VALUE: a variable name holds letters, digits, '_', '.', '-', '[' and ']'"
    )]
    NotAnAssignment(String),
    #[error("the value's opening {0} is never closed")]
    Unterminated(char),
    #[error("{0:?} follows the closing quote: only a `# comment` may")]
    AfterQuote(String),
    #[error("{0}")]
    Interpolation(String),
}

/// How an env file is read (`env_file: {path, format}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvFormat {
    /// Compose's dotenv syntax: `export`, quotes, escapes, comments, interpolation.
    Dotenv,
    /// `format: raw`: `KEY=VALUE` lines whose values are taken exactly as written.
    Raw,
}

type Entries = Vec<(String, Option<String>)>;

/// Reads an env file as Compose does: `KEY=VALUE`, `export KEY=VALUE` (after a space or a
/// tab), `KEY: VALUE`, or `KEY` alone (`None`: take it from the environment). Blank lines and
/// `#` comments are skipped, a UTF-8 byte-order mark is not part of the first key.
/// - unquoted values end at the line's end or at ` #`, trimmed, and are interpolated;
/// - double-quoted values may span lines, know the escapes `\n`, `\t`, `\r`, `\\`, `\"`,
///   `\$` (a literal `$`), `\a`, `\b`, `\f`, `\v` and octal `\0NNN` (any other backslash is
///   kept), and are interpolated;
/// - single-quoted values may span lines and are taken literally.
///
/// A value may use the variables defined above it; the environment wins over them.
pub fn parse_env_file(text: &str, lookup: Lookup) -> Result<Entries, EnvFileError> {
    let mut reader = Reader {
        rest: text.strip_prefix('\u{feff}').unwrap_or(text),
        line: 1,
    };
    let mut out: Entries = vec![];
    while let Some((line, key, value)) = reader.statement()? {
        let value = match value {
            None => None,
            Some(raw) => {
                let earlier = |name: &str| {
                    lookup(name).or_else(|| {
                        out.iter()
                            .rev()
                            .find(|(k, _)| k == name)
                            .and_then(|(_, v)| v.clone())
                    })
                };
                let problem = |e| EnvFileError {
                    line,
                    problem: EnvProblem::Interpolation(e),
                };
                Some(raw.value(&earlier).map_err(problem)?)
            }
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Reads an env file of `format: raw`: every line that is not blank or a `#` comment is
/// `KEY=VALUE` with VALUE exactly as written (quotes, backslashes and `$` included), or `KEY`.
pub fn parse_raw_env_file(text: &str) -> Result<Entries, EnvFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.to_string())),
            None => (line.trim(), None),
        };
        if !is_name(key) {
            return Err(EnvFileError {
                line: n + 1,
                problem: EnvProblem::NotAnAssignment(line.to_string()),
            });
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// A name as Compose's env-file reader takes it.
fn is_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']'))
}

/// A value as written, before unescaping and interpolation.
enum RawValue<'t> {
    Plain(&'t str),
    Double(&'t str),
    Single(&'t str),
}

impl RawValue<'_> {
    fn value(&self, lookup: Lookup) -> Result<String, String> {
        let mut unset = vec![];
        match self {
            RawValue::Plain(v) => expand(v, lookup, &mut unset),
            RawValue::Double(v) => expand(&unescape(v), lookup, &mut unset),
            RawValue::Single(v) => Ok(v.to_string()),
        }
    }
}

/// The escapes of a double-quoted value; `\$` becomes `$$`, which interpolation turns into a
/// literal `$`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let replacement = match chars.peek() {
            Some('n') => "\n",
            Some('t') => "\t",
            Some('r') => "\r",
            Some('a') => "\x07",
            Some('b') => "\x08",
            Some('f') => "\x0c",
            Some('v') => "\x0b",
            Some('"') => "\"",
            Some('\\') => "\\",
            Some('$') => "$$",
            Some('0') => {
                let digits: String = chars.clone().skip(1).take(3).collect();
                match u8::from_str_radix(&digits, 8) {
                    Ok(byte) if digits.len() == 3 && byte.is_ascii() => {
                        chars.nth(3);
                        out.push(char::from(byte));
                        continue;
                    }
                    _ => "",
                }
            }
            _ => "",
        };
        if replacement.is_empty() {
            out.push('\\');
        } else {
            chars.next();
            out.push_str(replacement);
        }
    }
    out
}

/// A cursor over an env file's text that knows its line.
struct Reader<'t> {
    rest: &'t str,
    line: usize,
}

fn blank(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\r'
}

impl<'t> Reader<'t> {
    fn advance(&mut self, n: usize) -> &'t str {
        let (taken, rest) = self.rest.split_at(n);
        self.line += taken.matches('\n').count();
        self.rest = rest;
        taken
    }

    /// The text up to the end of the line (not included).
    fn rest_of_line(&mut self) -> &'t str {
        let end = self.rest.find('\n').unwrap_or(self.rest.len());
        self.advance(end)
    }

    fn skip_blanks(&mut self) {
        let n = self.rest.len() - self.rest.trim_start_matches(blank).len();
        self.advance(n);
    }

    /// The next `KEY[=VALUE]` and the line it starts on; `None` at the end of the text.
    fn statement(&mut self) -> Result<Option<(usize, String, Option<RawValue<'t>>)>, EnvFileError> {
        loop {
            let n = self.rest.len() - self.rest.trim_start().len();
            self.advance(n);
            if self.rest.is_empty() {
                return Ok(None);
            }
            if !self.rest.starts_with('#') {
                break;
            }
            self.rest_of_line();
        }
        let line = self.line;
        if let Some(after) = self.rest.strip_prefix("export") {
            if after.starts_with([' ', '\t']) {
                self.advance("export".len());
                self.skip_blanks();
            }
        }
        let whole = self.rest[..self.rest.find('\n').unwrap_or(self.rest.len())].trim_end();
        let end = self.rest.find(['=', ':', '\n']).unwrap_or(self.rest.len());
        let key = self.advance(end).trim_matches(blank);
        let not_assignment = || EnvFileError {
            line,
            problem: EnvProblem::NotAnAssignment(whole.to_string()),
        };
        if !is_name(key) {
            return Err(not_assignment());
        }
        if !self.rest.starts_with(['=', ':']) {
            return Ok(Some((line, key.to_string(), None)));
        }
        self.advance(1);
        self.skip_blanks();
        let value = self.value(line)?;
        Ok(Some((line, key.to_string(), Some(value))))
    }

    fn value(&mut self, line: usize) -> Result<RawValue<'t>, EnvFileError> {
        let Some(quote) = self.rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            let text = self.rest_of_line();
            let text = text.split(" #").next().unwrap_or_default();
            return Ok(RawValue::Plain(text.trim_end_matches(blank)));
        };
        // The closing quote is the first one not escaped by a backslash.
        let mut escaped = false;
        let close = self.rest[1..].char_indices().find_map(|(i, c)| {
            let found = c == quote && !escaped;
            escaped = c == '\\' && !escaped;
            found.then_some(i + 1)
        });
        let Some(close) = close else {
            return Err(EnvFileError {
                line,
                problem: EnvProblem::Unterminated(quote),
            });
        };
        let inner = &self.advance(close + 1)[1..close];
        self.skip_blanks();
        let after = self.rest_of_line();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(EnvFileError {
                line: self.line,
                problem: EnvProblem::AfterQuote(after.to_string()),
            });
        }
        Ok(if quote == '"' {
            RawValue::Double(inner)
        } else {
            RawValue::Single(inner)
        })
    }
}

impl Resolver<'_, '_> {
    /// For every service: `env_file` read into `environment`, valueless entries (and
    /// `build.args`) looked up, valueless labels made empty.
    pub(super) fn environments(&mut self, doc: &mut Value) {
        let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) else {
            return;
        };
        for (name, svc) in services.iter_mut() {
            let path = format!("services.{}", name.scalar_text().unwrap_or_default());
            let Some(svc) = svc.as_mapping_mut() else {
                continue;
            };
            let mut env = Mapping::default();
            if let Some(files) = svc.remove("env_file") {
                self.env_files(&format!("{path}.env_file"), &files, &mut env);
            }
            if let Some(own) = svc.get("environment") {
                if let Value::Mapping(own) = keyed(own) {
                    for (k, v) in own.0 {
                        env.insert(&k.scalar_text().unwrap_or_default(), v);
                    }
                }
            }
            if !env.is_empty() {
                env.0.retain_mut(|(k, v)| self.fill(k, v));
                svc.insert("environment", Value::Mapping(env));
            }
            if let Some(labels) = svc.get_mut("labels") {
                *labels = empty_labels(keyed(labels));
            }
            // `build.args` without a value come from the environment too, as in Compose.
            if let Some(args) = svc.get_mut("build").and_then(|b| b.get_mut("args")) {
                if let Value::Mapping(mut m) = keyed(args) {
                    m.0.retain_mut(|(k, v)| self.fill(k, v));
                    *args = Value::Mapping(m);
                }
            }
        }
    }

    /// An entry without a value takes the environment's; unset, it is left out.
    fn fill(&self, key: &Value, value: &mut Value) -> bool {
        if !value.is_null() {
            return true;
        }
        match (self.project.lookup)(&key.scalar_text().unwrap_or_default()) {
            Some(v) => {
                *value = Value::String(v);
                true
            }
            None => false,
        }
    }

    /// `env_file: a.env`, a list of those, or `{path, required}` entries.
    fn env_files(&mut self, field: &str, files: &Value, env: &mut Mapping) {
        let entries: Vec<(String, &Value)> = match files {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{field}[{i}]"), v))
                .collect(),
            other => vec![(field.to_string(), other)],
        };
        for (field, entry) in entries {
            let (path, required, format) = match entry {
                Value::Mapping(m) => {
                    let format = match m.get("format").map(Value::scalar_text) {
                        None => EnvFormat::Dotenv,
                        Some(Some(f)) if f == "raw" => EnvFormat::Raw,
                        Some(other) => {
                            self.err(
                                format!("{field}.format"),
                                format!(
                                    "unsupported env file format {:?}: capstan reads Compose's \
                                     default format and `raw`",
                                    other.unwrap_or_default()
                                ),
                            );
                            continue;
                        }
                    };
                    (
                        m.get("path").and_then(Value::scalar_text),
                        !matches!(m.get("required"), Some(Value::Bool(false))),
                        format,
                    )
                }
                other => (other.scalar_text(), true, EnvFormat::Dotenv),
            };
            let Some(path) = path else {
                self.err(format!("{field}.path"), "is required: the env file to read");
                continue;
            };
            let full = self.project_dir().join(&path);
            self.env_file(&field, &full, (required, format), env);
        }
    }

    fn env_file(
        &mut self,
        field: &str,
        full: &Path,
        (required, format): (bool, EnvFormat),
        env: &mut Mapping,
    ) {
        let text = match (self.project.load)(full) {
            Ok(Some(text)) => text,
            Ok(None) if !required => return,
            Ok(None) => {
                return self.err(
                    field,
                    format!(
                        "{} does not exist (mark it `required: false` if that is fine)",
                        full.display()
                    ),
                )
            }
            Err(e) => return self.err(field, format!("cannot read {}: {e}", full.display())),
        };
        let pairs = match format {
            EnvFormat::Dotenv => parse_env_file(&text, self.project.lookup),
            EnvFormat::Raw => parse_raw_env_file(&text),
        };
        match pairs {
            Ok(pairs) => {
                for (k, v) in pairs {
                    env.insert(&k, v.map(Value::String).unwrap_or(Value::Null));
                }
            }
            Err(e) => self.err(field, format!("{}: {e}", full.display())),
        }
    }
}

fn empty_labels(labels: Value) -> Value {
    match labels {
        Value::Mapping(mut m) => {
            for (_, v) in m.iter_mut() {
                if v.is_null() {
                    *v = Value::String(String::new());
                }
            }
            Value::Mapping(m)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::resolve::tests::project_files;

    fn env(name: &str) -> Option<String> {
        match name {
            "TZ" => Some("Europe/Paris".into()),
            "HOST" => Some("db".into()),
            _ => None,
        }
    }

    #[test]
    fn env_files_read_like_compose_reads_them() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='$HOST literal'\nD=\"q $HOST\\n\"\nE=x # note\nTZ\nF=\n";
        let pairs = parse_env_file(text, &env).unwrap();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("A").as_deref(), Some("1"));
        assert_eq!(get("B").as_deref(), Some("two words"));
        assert_eq!(get("C").as_deref(), Some("$HOST literal"));
        assert_eq!(get("D").as_deref(), Some("q db\n"));
        assert_eq!(get("E").as_deref(), Some("x"));
        assert_eq!(get("TZ"), None);
        assert_eq!(get("F").as_deref(), Some(""));
        assert!(parse_env_file("NOT VALID LINE", &env).is_err());
        let chained = parse_env_file(
            "BASE=/srv\nDATA=${BASE}/data\nHOST=ignored\nURL=$HOST:1\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            chained[1].1.as_deref(),
            Some("/srv/data"),
            "earlier lines are visible"
        );
        assert_eq!(
            chained[3].1.as_deref(),
            Some("db:1"),
            "the environment wins over the file"
        );
    }

    fn one(text: &str) -> Option<String> {
        let pairs = parse_env_file(text, &env).unwrap();
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        pairs[0].1.clone()
    }

    #[test]
    fn double_quoted_values_know_the_escapes_of_compose_and_dollar_escapes_interpolation() {
        assert_eq!(
            one(r#"A="a\nb\tc\rd\\e\"f""#).as_deref(),
            Some("a\nb\tc\rd\\e\"f")
        );
        assert_eq!(one(r#"A="\a\b\f\v""#).as_deref(), Some("\x07\x08\x0c\x0b"));
        assert_eq!(one(r#"A="\0101\q\'""#).as_deref(), Some("A\\q\\'"));
        assert_eq!(
            one(r#"A="\$HOST is $HOST""#).as_deref(),
            Some("$HOST is db")
        );
        assert_eq!(one(r#"A="\\$HOST""#).as_deref(), Some("\\db"));
    }

    #[test]
    fn single_quoted_values_are_taken_literally() {
        assert_eq!(
            one(r"A='$HOST \n ${X:-y}'").as_deref(),
            Some(r"$HOST \n ${X:-y}")
        );
    }

    #[test]
    fn a_comment_may_follow_a_quoted_value_and_an_unquoted_one_after_a_space() {
        assert_eq!(one("A=\"x # kept\"  # note").as_deref(), Some("x # kept"));
        assert_eq!(one("A='y' #note").as_deref(), Some("y"));
        assert_eq!(
            one("A=z#not-a-comment # note").as_deref(),
            Some("z#not-a-comment")
        );
    }

    #[test]
    fn quoted_values_may_span_lines_and_errors_count_them() {
        let pairs = parse_env_file("A=\"one\ntwo\"\nB='x\ny'\nC=3\n", &env).unwrap();
        assert_eq!(pairs[0].1.as_deref(), Some("one\ntwo"));
        assert_eq!(pairs[1].1.as_deref(), Some("x\ny"));
        assert_eq!(pairs[2], ("C".to_string(), Some("3".to_string())));
        let err = parse_env_file("A=1\nB=\"x\ny\"\n\nC=\"never closed\nD=4\n", &env).unwrap_err();
        assert_eq!(
            err,
            EnvFileError {
                line: 5,
                problem: EnvProblem::Unterminated('"')
            }
        );
    }

    #[test]
    fn export_may_be_followed_by_a_tab_and_a_byte_order_mark_is_not_part_of_the_first_key() {
        let pairs =
            parse_env_file("\u{feff}FIRST=1\nexport\tSECOND=2\nexport  THIRD=3\n", &env).unwrap();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["FIRST", "SECOND", "THIRD"]);
        assert_eq!(
            one("export=1").as_deref(),
            Some("1"),
            "a variable named export"
        );
    }

    #[test]
    fn invalid_lines_are_errors_naming_the_line_not_values() {
        for (text, line) in [
            ("A=1\nNOT VALID LINE\n", 2),
            ("A=1\n\nB='open\n", 3),
            ("A=\"x\" y\n", 1),
            ("=value\n", 1),
            ("A=${oops\n", 1),
        ] {
            let err = parse_env_file(text, &env).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }

    #[test]
    fn a_raw_env_file_keeps_values_exactly_as_written() {
        let pairs = parse_raw_env_file("# c\nA=\"q\" $HOST \\n \nB='x'\nTZ\n").unwrap();
        assert_eq!(pairs[0].1.as_deref(), Some("\"q\" $HOST \\n "));
        assert_eq!(pairs[1].1.as_deref(), Some("'x'"));
        assert_eq!(pairs[2], ("TZ".to_string(), None));
        assert_eq!(parse_raw_env_file("A=1\nB C\n").unwrap_err().line, 2);
    }

    #[test]
    fn env_file_entries_take_format_raw_and_required_false() {
        let doc = project_files(
            &[
                ("compose.yaml", "services: {web: {image: x, env_file: [{path: raw.env, format: raw}, {path: gone.env, required: false}]}}"),
                ("raw.env", "PW='$ecret'\n"),
            ],
            &[],
        )
        .unwrap()
        .doc;
        let e = doc
            .get("services")
            .unwrap()
            .get("web")
            .unwrap()
            .get("environment")
            .unwrap();
        assert_eq!(e.get("PW").unwrap().as_str(), Some("'$ecret'"));
    }

    #[test]
    fn a_bad_line_in_an_env_file_is_an_error_naming_the_file_and_the_line() {
        let errs = project_files(
            &[
                (
                    "compose.yaml",
                    "services: {web: {image: x, env_file: app.env}}",
                ),
                ("app.env", "A=1\nB=\"unterminated\n"),
            ],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web.env_file");
        assert!(
            errs[0].reason.contains("/p/app.env: line 2"),
            "{}",
            errs[0].reason
        );
    }

    #[test]
    fn valueless_build_args_come_from_the_client_and_unset_ones_are_left_out() {
        let doc = project_files(
            &[(
                "compose.yaml",
                "services:\n  web:\n    image: x\n    build: {context: ., args: [TZ, UNSET_ONE, V=1]}\n",
            )],
            &[],
        )
        .unwrap()
        .doc;
        let build = doc
            .get("services")
            .unwrap()
            .get("web")
            .unwrap()
            .get("build")
            .unwrap();
        let args = build.get("args").unwrap();
        assert_eq!(args.get("TZ").unwrap().as_str(), Some("Europe/Paris"));
        assert_eq!(args.get("V").unwrap().as_str(), Some("1"));
        assert!(args.get("UNSET_ONE").is_none());
    }

    #[test]
    fn env_files_feed_environment_which_wins_and_valueless_entries_come_from_the_client() {
        let doc = project_files(
            &[
                ("compose.yaml", "services:\n  web:\n    image: x\n    env_file: [a.env, {path: missing.env, required: false}]\n    environment: [B=own, TZ, UNSET_ONE]\n    labels: [plain, k=v]\n"),
                ("a.env", "A=from-file\nB=from-file\n"),
            ],
            &[],
        )
        .unwrap()
        .doc;
        let web = doc.get("services").unwrap().get("web").unwrap();
        let e = web.get("environment").unwrap();
        assert_eq!(e.get("A").unwrap().as_str(), Some("from-file"));
        assert_eq!(e.get("B").unwrap().as_str(), Some("own"));
        assert_eq!(e.get("TZ").unwrap().as_str(), Some("Europe/Paris"));
        assert!(
            e.get("UNSET_ONE").is_none(),
            "an unset variable is left out"
        );
        assert!(web.get("env_file").is_none());
        assert_eq!(
            web.get("labels").unwrap().get("plain").unwrap().as_str(),
            Some("")
        );
    }

    #[test]
    fn a_required_env_file_that_is_missing_is_an_error_naming_it() {
        let errs = project_files(
            &[(
                "compose.yaml",
                "services: {web: {image: x, env_file: nope.env}}",
            )],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web.env_file");
        assert!(errs[0].reason.contains("nope.env"), "{}", errs[0].reason);
        let errs = project_files(
            &[(
                "compose.yaml",
                "services: {web: {image: x, env_file: [{path: a.env, format: toml}]}}",
            )],
            &[],
        )
        .unwrap_err()
        .errors;
        assert_eq!(errs[0].field, "services.web.env_file[0].format");
    }
}
