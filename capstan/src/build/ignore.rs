//! `.dockerignore` with Docker's rules: one pattern a line, `#` comments, `!` exceptions,
//! `*` and `?` within one path component, `**` across any number of them, `[...]` classes
//! and `\` escapes. The last pattern that matches a path, or one of its parent folders,
//! decides; patterns are cleaned (`./a/` is `a`, a leading `/` is dropped) as Docker does.

use regex::Regex;

struct Pattern {
    regex: Regex,
    exception: bool,
}

/// The patterns of one `.dockerignore`.
#[derive(Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

impl Ignore {
    /// Reads `.dockerignore`'s text; a pattern that is not a valid pattern is an error
    /// naming its line.
    pub fn parse(text: &str) -> Result<Ignore, String> {
        let mut patterns = vec![];
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, raw) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(raw);
            if cleaned.is_empty() {
                continue;
            }
            let regex = Regex::new(&to_regex(&cleaned))
                .map_err(|e| format!(".dockerignore line {}: {raw:?}: {e}", n + 1))?;
            patterns.push(Pattern { regex, exception });
        }
        Ok(Ignore { patterns })
    }

    /// Whether any pattern is an exception (so an excluded folder may hold included files).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of the context.
    pub fn excluded(&self, path: &str) -> bool {
        let parents: Vec<&str> = path.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exception != matched {
                continue;
            }
            let hit = p.regex.is_match(path)
                || (1..parents.len()).any(|i| p.regex.is_match(&parents[..i].join("/")));
            if hit {
                matched = !p.exception;
            }
        }
        matched
    }
}

/// `filepath.Clean` on a `/`-separated pattern, without its leading `/`.
fn clean(raw: &str) -> String {
    let mut parts: Vec<&str> = vec![];
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The pattern as an anchored regular expression, as Docker's pattern matcher builds it.
fn to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                }
                if i + 1 >= chars.len() {
                    out.push_str(".*");
                } else {
                    out.push_str("(.*/)?");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push_str(&regex::escape(&chars[i].to_string()));
            }
            '[' => {
                let end = chars[i + 1..].iter().position(|&c| c == ']');
                match end {
                    Some(len) => {
                        // Passed through as Docker does: `[^a]` negates, `!` is literal.
                        let class: String = chars[i + 1..i + 1 + len].iter().collect();
                        out.push('[');
                        out.push_str(&class.replace('\\', "\\\\"));
                        out.push(']');
                        i += len + 1;
                    }
                    None => out.push_str("\\["),
                }
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text).unwrap()
    }

    #[test]
    fn a_pattern_excludes_the_path_and_everything_under_a_matching_folder() {
        let i = ig("# comment\n\nnode_modules\n/secret.txt\n./logs/\n");
        assert!(i.excluded("node_modules"));
        assert!(i.excluded("node_modules/a/b.js"));
        assert!(i.excluded("secret.txt"));
        assert!(i.excluded("logs/today.log"));
        assert!(!i.excluded("src/node_modules_x"));
        assert!(
            !i.excluded("src/secret.txt"),
            "patterns are anchored at the context"
        );
    }

    #[test]
    fn star_and_question_mark_stay_within_one_component() {
        let i = ig("*.log\ntmp?\n");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("dir/a.log"), "Docker's * does not cross /");
        assert!(i.excluded("tmp1"));
        assert!(!i.excluded("tmp12"));
    }

    #[test]
    fn double_star_matches_any_number_of_folders() {
        let i = ig("**/*.pyc\ndocs/**\n");
        assert!(i.excluded("a.pyc"));
        assert!(i.excluded("x/y/z/a.pyc"));
        assert!(i.excluded("docs/a/b"));
        assert!(!i.excluded("src/a.py"));
    }

    #[test]
    fn the_last_matching_pattern_wins_so_exceptions_reinclude() {
        let i = ig("*.md\n!README.md\nREADME*.md\n");
        assert!(i.excluded("CHANGES.md"));
        assert!(
            i.excluded("README.md"),
            "the later README*.md excludes it again"
        );
        let i = ig("data\n!data/keep.txt\n");
        assert!(i.excluded("data/x"));
        assert!(!i.excluded("data/keep.txt"));
        assert!(i.has_exceptions());
    }

    #[test]
    fn classes_and_escapes_are_honoured() {
        let i = ig("file[0-9].txt\nf[^a]o\nliteral\\*\n");
        assert!(i.excluded("file3.txt"));
        assert!(!i.excluded("filex.txt"));
        assert!(i.excluded("fbo"));
        assert!(!i.excluded("fao"));
        assert!(i.excluded("literal*"));
        assert!(!i.excluded("literalx"));
    }
}
