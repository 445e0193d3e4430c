//! The YAML tree the Compose layer walks, read by `serde-saphyr` with bounded resources.
//!
//! `serde-saphyr` builds no tree of its own, so this module has one: ordered maps (errors
//! come out in file order), keys of any scalar type (so a non-string key is reported, not
//! rejected by the reader), and numbers kept as the reader inferred them. YAML merge keys
//! (`<<: *a`, `<<: [*a, *b]`) are expanded while reading, local keys winning, as the YAML
//! merge-key spec and Compose say.
//!
//! Scalars follow YAML 1.2 as Compose v2 does: only `true`/`false` are booleans (`no` stays the
//! string "no"), and numbers with leading zeros (`0755`) stay strings.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::fmt;

/// The deepest nesting accepted; a Compose file needs about ten levels. Reading recurses
/// per level, so this also bounds the stack a hostile file can take.
pub const MAX_DEPTH: usize = 32;
/// The most nodes a document may have as written (aliases not expanded).
pub const MAX_NODES: usize = 100_000;

/// How much work expanding aliases may make. A real file's anchors (`x-defaults: &d`, then
/// `<<: *d` in each of dozens of services, defaults nested in defaults) replay about one event
/// per byte of their text at most; a "billion laughs" file replays millions of times its size.
/// So the bound follows the text: at most [`EXPANSION_PER_BYTE`] replayed events, and as
/// many nodes built, per byte of source, never less than [`MIN_EXPANSION`] (a small file may
/// use aliases freely) and never more than [`MAX_EXPANSION`] whatever the file's size.
/// Reading costs about the same per replayed event, so this bounds the time too: a bomb is
/// refused within milliseconds, and no file, however long, reads for more than about a second.
pub const EXPANSION_PER_BYTE: usize = 8;
/// The replayed events (and nodes) any file may have, however short.
pub const MIN_EXPANSION: usize = 10_000;
/// The replayed events (and nodes) no file may exceed, however long.
pub const MAX_EXPANSION: usize = 1_000_000;
/// Bytes of expanded strings per byte of source: a string can be long, and replaying it is
/// one event (a certificate anchored once and used by every service is the large legitimate
/// case).
pub const BYTES_PER_BYTE: usize = 64;
/// The expanded string bytes any file may have, however short.
pub const MIN_EXPANDED_BYTES: usize = 8 << 20;
/// The expanded string bytes no file may exceed, however long.
pub const MAX_EXPANDED_BYTES: usize = 128 << 20;

/// What reading one document may build, and what it built so far. Kept per thread while
/// [`parse`] runs: the tree is built by serde visitors, which hold no state of their own.
#[derive(Clone, Copy, Default)]
struct Expansion {
    nodes: usize,
    bytes: usize,
    max_nodes: usize,
    max_bytes: usize,
    exceeded: bool,
}

impl Expansion {
    fn for_source(len: usize) -> Self {
        Expansion {
            max_nodes: len
                .saturating_mul(EXPANSION_PER_BYTE)
                .clamp(MIN_EXPANSION, MAX_EXPANSION),
            max_bytes: len
                .saturating_mul(BYTES_PER_BYTE)
                .clamp(MIN_EXPANDED_BYTES, MAX_EXPANDED_BYTES),
            ..Default::default()
        }
    }
}

thread_local! {
    static EXPANSION: std::cell::Cell<Expansion> = std::cell::Cell::new(Expansion::for_source(0));
}

/// Counts one node holding `bytes` of text; an error once the document outgrows its bound.
fn charge<E: de::Error>(bytes: usize) -> Result<(), E> {
    EXPANSION.with(|cell| {
        let mut e = cell.get();
        e.nodes += 1;
        e.bytes += bytes;
        e.exceeded = e.nodes > e.max_nodes || e.bytes > e.max_bytes;
        cell.set(e);
        if e.exceeded {
            Err(E::custom(
                "the document grows too large once aliases are expanded",
            ))
        } else {
            Ok(())
        }
    })
}

/// One YAML node.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Sequence(Vec<Value>),
    Mapping(Mapping),
    /// A value under Compose's merge tags `!reset` or `!override`; other tags are dropped.
    /// Merging consumes them, and [`strip_tags`] resolves what is left.
    Tagged(Box<Tagged>),
}

/// A value and the Compose merge tag on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tagged {
    pub tag: MergeTag,
    pub value: Value,
}

/// Compose's merge tags: `!reset` removes what earlier files set, `!override` replaces it
/// instead of merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeTag {
    Reset,
    Override,
}

/// Resolves the merge tags left once merging is done: a `!reset` entry is removed, an
/// `!override` value is the value.
pub fn strip_tags(v: &mut Value) {
    match v {
        Value::Tagged(t) => {
            let inner = std::mem::take(&mut t.value);
            *v = match t.tag {
                MergeTag::Reset => Value::Null,
                MergeTag::Override => inner,
            };
            strip_tags(v);
        }
        Value::Sequence(items) => {
            items.retain(|i| !is_reset(i));
            items.iter_mut().for_each(strip_tags);
        }
        Value::Mapping(m) => {
            m.0.retain(|(_, v)| !is_reset(v));
            m.0.iter_mut().for_each(|(_, v)| strip_tags(v));
        }
        _ => {}
    }
}

fn is_reset(v: &Value) -> bool {
    matches!(v, Value::Tagged(t) if t.tag == MergeTag::Reset)
}

/// A node as read, with a Compose merge tag kept and any other tag dropped.
fn untag(node: serde_saphyr::Tagged<Value>) -> Value {
    let serde_saphyr::Tagged(value, tag) = node;
    let tag = match tag.as_deref() {
        Some("!reset") => MergeTag::Reset,
        Some("!override") => MergeTag::Override,
        _ => return value,
    };
    Value::Tagged(Box::new(Tagged { tag, value }))
}

/// A number as YAML inferred it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(n) => write!(f, "{n}"),
            Number::UInt(n) => write!(f, "{n}"),
            // Debug keeps the point (`1.0`, `1e20`), as the file most likely wrote it.
            Number::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// A map in file order. Duplicate keys are refused by the reader.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Mapping(pub Vec<(Value, Value)>);

impl Mapping {
    pub fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Value, &mut Value)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Sets `key`, keeping its place if it was there already.
    pub fn insert(&mut self, key: &str, value: Value) {
        match self.get_mut(key) {
            Some(slot) => *slot = value,
            None => self.0.push((Value::String(key.to_string()), value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let pos = self.0.iter().position(|(k, _)| k.as_str() == Some(key))?;
        Some(self.0.remove(pos).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Mapping {
    type Item = (&'a Value, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Value, Value)>,
        fn(&'a (Value, Value)) -> (&'a Value, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(Number::UInt(n)) => Some(*n),
            Value::Number(Number::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        }
    }

    /// A whole number, also written as a string: interpolation leaves strings
    /// (`replicas: ${N:-3}`), and Compose casts them where its schema wants a number.
    pub fn as_whole_number(&self) -> Option<u64> {
        match self {
            Value::String(s) => s.trim().parse().ok(),
            other => other.as_u64(),
        }
    }

    pub fn as_mapping(&self) -> Option<&Mapping> {
        match self {
            Value::Mapping(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_mapping_mut(&mut self) -> Option<&mut Mapping> {
        match self {
            Value::Mapping(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_sequence(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Sequence(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_sequence_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::Sequence(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_mapping(&self) -> bool {
        matches!(self, Value::Mapping(_))
    }

    /// The value at `key` when this is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_mapping()?.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.as_mapping_mut()?.get_mut(key)
    }

    /// A scalar as text (what Compose does with a number or boolean where a string goes).
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Reads one YAML (or JSON) document. The error is a reason fit to follow `(file)`.
pub fn parse(text: &str) -> Result<Value, String> {
    read(text, 1, |t, o| {
        serde_saphyr::from_str_with_options::<Value>(t, o)
    })
    .0
}

/// The most documents (`---`) one file may hold.
pub const MAX_DOCUMENTS: usize = 64;

/// Reads every document of a file (separated by `---`), in order: Compose reads a file of
/// several as if each were one more `-f` file. The expansion bound is for the whole file.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let (read, _) = read(text, MAX_DOCUMENTS, |t, o| {
        serde_saphyr::from_multiple_with_options::<Value>(t, o)
    });
    read.map(|docs| match docs {
        Value::Sequence(docs) => docs,
        other => vec![other],
    })
}

/// The nodes and string bytes reading `text` builds once its aliases are expanded (for
/// measurements and tests).
pub fn expanded_size(text: &str) -> Result<(usize, usize), String> {
    let (read, used) = read(text, 1, |t, o| {
        serde_saphyr::from_str_with_options::<Value>(t, o)
    });
    read.map(|_| (used.nodes, used.bytes))
}

/// Reads `text` with `reader` under the bounds for its size; several documents come back
/// as one sequence.
fn read<T: IntoValue>(
    text: &str,
    documents: usize,
    reader: impl Fn(&str, serde_saphyr::Options) -> Result<T, serde_saphyr::Error>,
) -> (Result<Value, String>, Expansion) {
    let bound = Expansion::for_source(text.len());
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return (Ok(Value::Null), bound);
    }
    EXPANSION.with(|cell| cell.set(bound));
    let read = reader(text, options(&bound, documents));
    let used = EXPANSION.with(|cell| cell.replace(bound));
    let read = read.map(IntoValue::into_value).map_err(|e| {
        if used.exceeded || is_replay_limit(&e) {
            too_large(&e, &used)
        } else {
            describe_error(&e)
        }
    });
    (read, used)
}

/// One document, or several as a sequence of them.
trait IntoValue {
    fn into_value(self) -> Value;
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}

impl IntoValue for Vec<Value> {
    fn into_value(self) -> Value {
        Value::Sequence(self)
    }
}

fn too_large(e: &serde_saphyr::Error, bound: &Expansion) -> String {
    let at = e
        .location()
        .map(|l| format!("line {} column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    format!(
        "{at}grows too large once aliases are expanded: a file of this size may replay \
         {} nodes and {} MiB of text through aliases (real anchors stay far below), this \
         one goes past that, as an alias bomb (\"billion laughs\") does",
        bound.max_nodes,
        bound.max_bytes >> 20
    )
}

/// The reader's own limits on what aliases replay (and anchors record) were reached.
fn is_replay_limit(e: &serde_saphyr::Error) -> bool {
    use serde_saphyr::budget::BudgetBreach;
    use serde_saphyr::Error;
    let mut inner = e;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    matches!(
        inner,
        Error::AliasReplayLimitExceeded { .. }
            | Error::AliasExpansionLimitExceeded { .. }
            | Error::AliasReplayCounterOverflow { .. }
            | Error::Budget {
                breach: BudgetBreach::RecordedAnchorEvents { .. }
                    | BudgetBreach::RecordedAnchorBytes { .. },
                ..
            }
    )
}

fn options(bound: &Expansion, documents: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_events = MAX_NODES * 2;
    // Many aliases to few anchors is what real files do (`<<: *defaults` in every service):
    // the expansion is bounded by the work it makes, not by that ratio.
    budget.enforce_alias_anchor_ratio = false;
    budget.max_recorded_anchor_events = bound.max_nodes;
    budget.max_documents = documents;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = bound.max_nodes;
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.with_snippet = false;
    options
}

/// The reader's message, with the resource limits said in words.
fn describe_error(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::budget::BudgetBreach;
    use serde_saphyr::Error;
    let at = e
        .location()
        .map(|l| format!("line {} column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    let mut inner = e;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    match inner {
        Error::Budget {
            breach: BudgetBreach::Depth { .. },
            ..
        } => format!("{at}nested more than {MAX_DEPTH} levels deep"),
        Error::Budget {
            breach: BudgetBreach::Documents { .. },
            ..
        } => format!(
            "{at}holds more YAML documents (`---`) than it may: one in a resolved document, \
             {MAX_DOCUMENTS} in a Compose file"
        ),
        Error::Budget { .. } => {
            format!("{at}too large: more than {MAX_NODES} nodes as written")
        }
        // The scanner's own flow-nesting guard, hit before any tree is built.
        other if other.to_string().contains("recursion limit exceeded") => {
            format!("{at}nested more than {MAX_DEPTH} levels deep")
        }
        _ => e.to_string(),
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(Value::Number(Number::Int(n)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(Value::Number(Number::UInt(n)))
    }

    fn visit_i128<E: de::Error>(self, n: i128) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(match (i64::try_from(n), u64::try_from(n)) {
            (Ok(n), _) => Value::Number(Number::Int(n)),
            (_, Ok(n)) => Value::Number(Number::UInt(n)),
            _ => Value::String(n.to_string()),
        })
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(match u64::try_from(n) {
            Ok(n) => Value::Number(Number::UInt(n)),
            Err(_) => Value::String(n.to_string()),
        })
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(Value::Number(Number::Float(x)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        charge::<E>(s.len())?;
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        charge::<E>(s.len())?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        charge::<E>(0)?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        charge::<A::Error>(0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(untag(v));
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        charge::<A::Error>(0)?;
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry()? {
            out.push((k, untag(v)));
        }
        Ok(Value::Mapping(Mapping(out)))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(Number::Int(n)) => s.serialize_i64(*n),
            Value::Number(Number::UInt(n)) => s.serialize_u64(*n),
            Value::Number(Number::Float(x)) => s.serialize_f64(*x),
            Value::String(v) => s.serialize_str(v),
            Value::Sequence(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Tagged(t) => t.value.serialize(s),
            Value::Mapping(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn scalars_are_read_as_compose_v2_reads_them() {
        let v = parse("a: no\nb: 0755\nc: 1.0\nd: 18446744073709551615\ne: -3\nf: ~\ng: true\n")
            .unwrap();
        assert_eq!(v.get("a"), Some(&Value::String("no".into())));
        assert_eq!(v.get("b"), Some(&Value::String("0755".into())));
        assert_eq!(
            v.get("c").and_then(Value::scalar_text).as_deref(),
            Some("1.0")
        );
        assert_eq!(v.get("d").and_then(Value::as_u64), Some(u64::MAX));
        assert_eq!(v.get("e"), Some(&Value::Number(Number::Int(-3))));
        assert_eq!(v.get("f"), Some(&Value::Null));
        assert_eq!(v.get("g"), Some(&Value::Bool(true)));
    }

    #[test]
    fn merge_keys_expand_with_local_keys_winning_and_earlier_sources_first() {
        let v = parse(
            "x-a: &a {image: a, env: 1}\nx-b: &b {env: 2, user: b}\nweb:\n  <<: [*a, *b]\n  env: 9\nold:\n  <<: *b\n",
        )
        .unwrap();
        let web = v.get("web").unwrap();
        assert_eq!(web.get("image"), Some(&Value::String("a".into())));
        assert_eq!(web.get("user"), Some(&Value::String("b".into())));
        assert_eq!(web.get("env"), Some(&Value::Number(Number::UInt(9))));
        assert_eq!(
            v.get("old").unwrap().get("env"),
            Some(&Value::Number(Number::UInt(2)))
        );
    }

    #[test]
    fn compose_merge_tags_are_kept_and_other_tags_dropped() {
        let mut v =
            parse("a: !reset [1]\nb: !override {x: 1}\nc: !custom 5\nd: [!reset 1, 2]\n").unwrap();
        assert!(matches!(v.get("a"), Some(Value::Tagged(t)) if t.tag == MergeTag::Reset));
        assert!(matches!(v.get("b"), Some(Value::Tagged(t)) if t.tag == MergeTag::Override));
        assert_eq!(v.get("c"), Some(&Value::Number(Number::UInt(5))));
        strip_tags(&mut v);
        assert!(v.get("a").is_none());
        assert!(v.get("b").unwrap().is_mapping());
        assert_eq!(v.get("d").unwrap().as_sequence().unwrap().len(), 1);
    }

    #[test]
    fn deep_nesting_is_a_fast_clear_error() {
        for text in [
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a: {}1{}", "{b: ".repeat(100_000), "}".repeat(100_000)),
            format!("a:\n{}1\n", "- ".repeat(100_000)),
            "[".repeat(100_000),
            "{\"a\":".repeat(100_000),
        ] {
            let start = Instant::now();
            let err = parse(&text).unwrap_err();
            assert!(
                start.elapsed() < Duration::from_millis(500),
                "{:?}",
                start.elapsed()
            );
            eprintln!("{} bytes refused in {:?}", text.len(), start.elapsed());
            assert!(err.contains("levels deep"), "{err}");
        }
    }

    #[test]
    fn the_deepest_accepted_nesting_and_a_hostile_one_fit_in_a_small_stack() {
        let run = |n: usize| {
            let text = format!("a: {}1{}", "{b: ".repeat(n), "}".repeat(n));
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || parse(&text).map(|_| ()))
                .unwrap()
                .join()
                .unwrap()
        };
        assert!(run(MAX_DEPTH - 1).is_ok());
        assert!(run(100_000).unwrap_err().contains("levels deep"));
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = parse("services: [unclosed").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
    }

    #[test]
    fn a_compose_file_may_hold_several_documents_and_a_resolved_one_only_one() {
        let text = "services: {a: {image: a}}\n---\nservices: {b: {image: b}}\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[1].get("services").unwrap().get("b").is_some());
        let err = parse(text).unwrap_err();
        assert!(err.contains("documents"), "{err}");
    }

    #[test]
    fn empty_and_comment_only_files_are_null() {
        assert_eq!(parse("").unwrap(), Value::Null);
        assert_eq!(parse("# nothing\n\n").unwrap(), Value::Null);
    }
}

#[cfg(test)]
mod expansion {
    use super::*;
    use std::time::Instant;

    /// A file of real shape: a self-hosted platform of 67 services built from `x-` anchors.
    pub(super) const SELF_HOSTED: &str = include_str!("../../tests/data/self-hosted.yaml");

    /// The classic alias bomb: nine levels of nine references each, 9^9 leaves.
    pub fn billion_laughs() -> String {
        let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(", ");
            text += &format!("{}: &{} [{refs}]\n", w[1], w[1]);
        }
        text
    }

    #[test]
    fn an_anchor_heavy_file_of_real_shape_is_accepted() {
        assert!(SELF_HOSTED.lines().count() >= 800);
        let (nodes, bytes) = expanded_size(SELF_HOSTED).unwrap();
        let len = SELF_HOSTED.len();
        assert!(
            nodes <= len * EXPANSION_PER_BYTE / 8,
            "{nodes} nodes from {len} bytes: keep the bound well above what real files need"
        );
        assert!(bytes <= len * BYTES_PER_BYTE / 2, "{bytes} bytes");
        let services = parse(SELF_HOSTED).unwrap();
        let services = services.get("services").unwrap().as_mapping().unwrap();
        assert!(services.len() >= 60, "{}", services.len());
    }

    #[test]
    fn the_billion_laughs_is_refused_for_growing_far_faster_than_its_text() {
        let err = parse(&billion_laughs()).unwrap_err();
        assert!(err.contains("aliases are expanded"), "{err}");
        assert!(err.contains("billion laughs"), "{err}");
    }

    #[test]
    fn a_long_string_repeated_by_aliases_is_bounded_by_its_bytes() {
        let long = "x".repeat(60_000);
        let refs = vec!["*s"; 200].join(", ");
        let text = format!(
            "s: &s {long}\nl: &l [{refs}]\nm: [{}]\n",
            vec!["*l"; 20].join(", ")
        );
        let err = parse(&text).unwrap_err();
        assert!(err.contains("MiB of text"), "{err}");
    }

    #[test]
    fn a_long_file_gets_a_bound_that_grows_with_it_up_to_the_cap() {
        assert_eq!(Expansion::for_source(10).max_nodes, MIN_EXPANSION);
        assert_eq!(Expansion::for_source(100_000).max_nodes, 800_000);
        assert_eq!(Expansion::for_source(usize::MAX).max_nodes, MAX_EXPANSION);
        assert_eq!(
            Expansion::for_source(usize::MAX).max_bytes,
            MAX_EXPANDED_BYTES
        );
    }

    /// The measurement behind the bound: `cargo test -p capstan-api --release --lib
    /// expansion::reading_times -- --ignored --nocapture`. Prints, asserts nothing timed.
    #[test]
    #[ignore]
    fn reading_times() {
        let median = |text: &str| {
            let mut runs: Vec<f64> = (0..21)
                .map(|_| {
                    let start = Instant::now();
                    let _ = parse(text);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            runs.sort_by(f64::total_cmp);
            runs[runs.len() / 2]
        };
        let (nodes, bytes) = expanded_size(SELF_HOSTED).unwrap();
        println!(
            "self-hosted file: {} lines, {} bytes, {nodes} nodes and {bytes} string bytes expanded: parsed in {:.2} ms (median of 21; target well under 100 ms)",
            SELF_HOSTED.lines().count(),
            SELF_HOSTED.len(),
            median(SELF_HOSTED)
        );
        let plain = serde_json::to_string(&parse(SELF_HOSTED).unwrap()).unwrap();
        println!(
            "its expansion written out as JSON ({} bytes, no aliases): {:.2} ms",
            plain.len(),
            median(&plain)
        );
        let bomb = billion_laughs();
        println!(
            "billion laughs: {} bytes, refused in {:.2} ms (median of 21; target under 50 ms)",
            bomb.len(),
            median(&bomb)
        );
    }
}
