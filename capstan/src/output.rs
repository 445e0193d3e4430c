//! Tables, JSON and YAML for the CLI. What the server sent is made safe for a terminal in
//! tables and messages ([`safe`]); JSON and YAML are data, and left as they are.

use capstan_api::object::{ServiceView, StackView};
use std::borrow::Cow;

use crate::Format;

fn age(created_at: &str) -> String {
    match humantime::parse_rfc3339(created_at) {
        Ok(t) => {
            let secs = std::time::SystemTime::now()
                .duration_since(t)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            capstan_api::duration::format(std::time::Duration::from_secs(secs))
        }
        Err(_) => "-".into(),
    }
}

/// Whether a terminal would act on `c` rather than show it: control characters (C0, DEL,
/// C1: ESC starts the sequences that recolour, move the cursor, retitle the window) and the
/// bidirectional marks and overrides that reorder what is shown around them.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character a terminal would act on written out instead (`\x1b`,
/// `\u{202e}`), so a value from the server (an older one may hold an image name with
/// `ESC[31m`) can neither recolour nor rewrite the screen; line breaks are escaped too.
pub fn safe(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// [`safe`] for a message of several lines: its line breaks stay.
pub fn safe_lines(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let shown = |c: char| !acts_on_terminal(c) || (keep_newlines && c == '\n');
    if text.chars().all(shown) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if shown(c) => out.push(c),
            c if u32::from(c) <= 0xff => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// Prints the header and rows in aligned columns, each cell made [`safe`].
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = (rows.into_iter())
        .map(|row| row.iter().map(|c| safe(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("   ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn structured<T: serde::Serialize>(value: &T, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        Format::Table => unreachable!(),
    }
    Ok(())
}

/// `capstan rollout history`: one line a revision, the current one marked.
pub fn history(revisions: &[capstan_api::object::RevisionView]) {
    let rows = revisions
        .iter()
        .map(|r| {
            vec![
                format!(
                    "{}{}",
                    r.revision,
                    if r.current { " (current)" } else { "" }
                ),
                r.generation.to_string(),
                r.at.clone(),
                r.image.clone(),
                r.change.clone(),
            ]
        })
        .collect();
    table(
        &["REVISION", "GENERATION", "SINCE", "IMAGE", "CHANGE"],
        rows,
    );
}

pub fn services(services: &[ServiceView], format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        return structured(&services, format);
    }
    let rows = services
        .iter()
        .map(|s| {
            vec![
                s.stack.clone(),
                s.name.clone(),
                format!("{}/{}", s.ready, s.replicas),
                s.updated.to_string(),
                s.restarts.to_string(),
                age(&s.created_at),
                s.image.clone(),
                s.summary(),
            ]
        })
        .collect();
    table(
        &[
            "STACK",
            "SERVICE",
            "READY",
            "UP-TO-DATE",
            "RESTARTS",
            "AGE",
            "IMAGE",
            "STATUS",
        ],
        rows,
    );
    Ok(())
}

pub fn stacks(stacks: &[StackView], format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        return structured(&stacks, format);
    }
    let rows = stacks
        .iter()
        .map(|s| {
            let ready = s.services.iter().filter(|v| v.converged()).count();
            vec![
                s.name.clone(),
                format!("{ready}/{}", s.services.len()),
                s.phase.clone(),
                age(&s.created_at),
            ]
        })
        .collect();
    table(&["STACK", "SERVICES READY", "PHASE", "AGE"], rows);
    Ok(())
}

pub fn leader(view: &capstan_api::object::LeaderView, format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        return structured(view, format);
    }
    let (holder, since, ttl) = match &view.leader {
        Some(l) => (
            l.holder.clone(),
            age(&l.since),
            format!("{}s", l.lease_ttl_seconds),
        ),
        None => ("<none>".into(), "-".into(), "-".into()),
    };
    table(
        &["LEADER", "FOR", "LEASE TTL", "ASKED", "ITS ROLE"],
        vec![vec![
            holder,
            since,
            ttl,
            view.this.clone(),
            view.role.clone(),
        ]],
    );
    Ok(())
}

pub fn describe(s: &ServiceView) {
    println!("Service:      {}/{}", safe(&s.stack), safe(&s.name));
    println!("Image:        {}", safe(&s.image));
    println!(
        "Replicas:     {} desired | {} running | {} ready | {} updated",
        s.replicas, s.running, s.ready, s.updated
    );
    println!("Restarts:     {}", s.restarts);
    println!(
        "Generation:   {} (observed {})",
        s.generation, s.observed_generation
    );
    println!(
        "Created:      {} ({} ago)",
        safe(&s.created_at),
        age(&s.created_at)
    );
    println!("Conditions:");
    table(
        &["  TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"],
        s.conditions
            .iter()
            .map(|c| {
                vec![
                    format!("  {}", c.type_),
                    c.status.clone(),
                    c.reason.clone(),
                    age(&c.last_transition_time),
                    c.message.clone(),
                ]
            })
            .collect(),
    );
    println!("Replicas:");
    table(
        &["  NAME", "ID", "STATE", "HEALTH", "UPDATED", "RESTARTS"],
        s.replica_states
            .iter()
            .map(|r| {
                vec![
                    format!("  {}", r.name),
                    r.id.clone(),
                    r.state.clone(),
                    if r.health.is_empty() {
                        "-".into()
                    } else {
                        r.health.clone()
                    },
                    r.updated.to_string(),
                    r.restarts.to_string(),
                ]
            })
            .collect(),
    );
    if !s.recent_events.is_empty() {
        println!("Recent heal actions:");
        table(
            &["  TIME", "REPLICA", "ACTION", "REASON", "MESSAGE"],
            s.recent_events
                .iter()
                .map(|e| {
                    vec![
                        format!("  {}", e.time),
                        e.replica.clone(),
                        e.action.as_str().to_string(),
                        e.reason.as_str().to_string(),
                        e.message.clone(),
                    ]
                })
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{safe, safe_lines};
    use capstan_api::object::{ServiceView, StackView};

    #[test]
    fn an_escape_sequence_from_the_server_is_shown_not_obeyed() {
        assert_eq!(safe("web\x1b[31m:1"), "web\\x1b[31m:1");
        assert_eq!(safe("a\rb\x07c\x7fd\u{9b}e"), "a\\x0db\\x07c\\x7fd\\x9be");
        assert_eq!(safe("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
    }

    #[test]
    fn printable_text_and_other_scripts_pass_unchanged_and_unallocated() {
        for text in ["web:1", "café ☕ 日本", "tab\u{a0}nbsp", ""] {
            assert!(matches!(safe(text), std::borrow::Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn a_message_keeps_its_line_breaks_but_a_cell_does_not() {
        assert_eq!(
            safe_lines("bad\n  image: \x1b]0;x\x07"),
            "bad\n  image: \\x1b]0;x\\x07"
        );
        assert_eq!(safe("two\nlines"), "two\\x0alines");
    }

    #[test]
    fn yaml_output_reads_back_as_the_same_views() {
        let mut view = ServiceView {
            stack: "shop".into(),
            name: "web".into(),
            ..Default::default()
        };
        view.spec.image = "web:1".into();
        view.spec.environment.insert("MODE".into(), "no".into());
        let text = serde_saphyr::to_string(&vec![view.clone()]).unwrap();
        let back: Vec<ServiceView> = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, vec![view]);
        let stacks = vec![StackView::default()];
        let text = serde_saphyr::to_string(&stacks).unwrap();
        assert_eq!(
            serde_saphyr::from_str::<Vec<StackView>>(&text).unwrap(),
            stacks
        );
    }
}
