//! Decoding one message of the command topic into a [`Command`].
//!
//! The envelope is documented as a JSON Schema in `schemas/command.schema.json`; this decoder is
//! the executable form of that schema, and `tests/command_schema.rs` checks that the two agree.
//! Decoding borrows from the message payload wherever the JSON has no escapes, because this runs
//! once per message on the hot path.
//!
//! Rules beyond plain JSON typing, each a rejection with a reason rather than a silent fix:
//! - unknown envelope fields, unknown `type`s and duplicate keys anywhere in the envelope, `tags`
//!   or `fields` are rejected (a duplicate key would make "which value wins" depend on the parser);
//! - tag values must be strings, numbers or booleans; numbers and booleans are kept as their
//!   JSON text (`3`, `2.5`, `true`), which is how the legacy `text` fields indexed them;
//! - tag keys must be non-empty;
//! - a delete carries neither `tags` nor `fields`;
//! - `fields` may not contain `tags`, which the document schema owns;
//! - a field value may nest arrays and objects at most [`MAX_FIELD_DEPTH`] levels deep (no
//!   Elasticsearch mapping needs more, and a hostile payload should not reach the cluster).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

mod plain;

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Create the document or replace it whole.
    Upsert,
    /// Remove the document.
    Delete,
}

/// How deeply a field value may nest arrays and objects.
pub const MAX_FIELD_DEPTH: usize = 32;

/// A tag as (key, value text).
pub type Tag<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A document field as (name, raw JSON text of its value). The text was checked to be one valid
/// JSON value by whichever decoder read it.
pub type Field<'a> = (Cow<'a, str>, &'a str);

/// A decoded command, borrowing from the message payload.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    /// Upsert or delete.
    pub kind: CommandKind,
    /// The document id from the envelope, if it carries one.
    pub id: Option<Cow<'a, str>>,
    /// The envelope's `version` field.
    pub version: Option<u64>,
    /// The envelope's `timestamp` field (epoch milliseconds).
    pub timestamp: Option<u64>,
    /// Tags as (key, value text), sorted by key, keys unique.
    pub tags: Vec<Tag<'a>>,
    /// The document's other fields as (name, raw JSON), sorted by name, names unique.
    pub fields: Vec<Field<'a>>,
}

/// Why a payload is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl<'a> Command<'a> {
    /// Decodes and validates one payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        // Validating UTF-8 once up front lets the parser skip it for every string and raw value.
        let text = crate::json_text::utf8(payload).map_err(|e| {
            DecodeError(format!(
                "not a valid command envelope: the payload is not UTF-8 ({e})"
            ))
        })?;
        let envelope: Envelope<'a> = match plain::read(text) {
            Some(envelope) => envelope,
            None => serde_json::from_str(text)
                .map_err(|e| DecodeError(format!("not a valid command envelope: {e}")))?,
        };
        envelope.validate()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: CommandKind,
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(borrow, default)]
    tags: Option<Entries<'a, Cow<'a, str>>>,
    #[serde(borrow, default)]
    fields: Option<Entries<'a, &'a str>>,
}

impl<'a> Envelope<'a> {
    fn validate(self) -> Result<Command<'a>, DecodeError> {
        if self.kind == CommandKind::Delete && (self.tags.is_some() || self.fields.is_some()) {
            return Err(DecodeError(
                "a delete carries neither `tags` nor `fields`".into(),
            ));
        }
        let tags = match self.tags {
            Some(entries) => sorted_unique(entries.0, "tags")?,
            None => Vec::new(),
        };
        let fields = match self.fields {
            Some(entries) => sorted_unique(entries.0, "fields")?,
            None => Vec::new(),
        };
        check_fields(
            &fields,
            "`fields` may not contain `tags`; tags belong in the envelope's `tags` map",
        )?;
        Ok(Command {
            kind: self.kind,
            id: self.id.map(|t| t.0),
            version: self.version,
            timestamp: self.timestamp,
            tags,
            fields,
        })
    }
}

/// The rules every document's fields meet, whatever envelope they came in: no field nests deeper
/// than [`MAX_FIELD_DEPTH`], and none is named `tags` (`tags_rule` says where tags go instead).
pub(crate) fn check_fields(fields: &[Field<'_>], tags_rule: &str) -> Result<(), DecodeError> {
    if let Some((name, _)) = fields
        .iter()
        .find(|(_, raw)| nesting_depth(raw) > MAX_FIELD_DEPTH)
    {
        return Err(DecodeError(format!(
            "field `{name}` nests arrays or objects more than {MAX_FIELD_DEPTH} levels deep"
        )));
    }
    if fields.iter().any(|(name, _)| name == "tags") {
        return Err(DecodeError(tags_rule.into()));
    }
    Ok(())
}

/// Sorts members by name and refuses a name given twice (`what` names the object).
pub(crate) fn sorted_unique<'a, V>(
    mut entries: Vec<(Cow<'a, str>, V)>,
    what: &str,
) -> Result<Vec<(Cow<'a, str>, V)>, DecodeError> {
    // A producer that serializes a sorted map has already done both: one pass confirms it.
    if entries
        .windows(2)
        .all(|w| name_order(&w[0].0, &w[1].0) == Ordering::Less)
    {
        return Ok(entries);
    }
    entries.sort_by(|a, b| name_order(&a.0, &b.0));
    if let Some(pair) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(DecodeError(format!(
            "`{what}` has the key `{}` more than once",
            pair[0].0
        )));
    }
    Ok(entries)
}

/// `str`'s own order. Names mostly differ in their first byte, and comparing that inline saves
/// a call to `memcmp` per comparison (4 % of the hot path in `benches/pipeline.rs`).
fn name_order(a: &str, b: &str) -> Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// The text a tag value is indexed as: strings as they are, numbers and booleans as their JSON text.
pub(crate) fn tag_value_text<'a>(
    key: &str,
    raw: &'a RawValue,
) -> Result<Cow<'a, str>, DecodeError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') if !has_escape(text) => Ok(Cow::Borrowed(&text[1..text.len() - 1])),
        Some(b'"') => {
            let Text(s) =
                serde_json::from_str(text).map_err(|e| DecodeError(format!("tag `{key}`: {e}")))?;
            Ok(s)
        }
        Some(b't' | b'f' | b'-' | b'0'..=b'9') => Ok(Cow::Borrowed(text)),
        _ => Err(DecodeError(format!(
            "tag `{key}` must be a string, number or boolean, got {}",
            json_kind(text)
        ))),
    }
}

/// What kind of JSON value `text` is, for messages: `null`, `an array`, `a string`, …
pub(crate) fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b'n') => "null",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "an unknown JSON value",
    }
}

/// The deepest nesting of arrays and objects in a valid JSON text. (It skips strings as
/// `json_text::write_single_line` does; a shared iterator for both cost 3–7 % on the hot path in
/// `benches/pipeline.rs`, which runs this for every field value, so the loop stays here.)
fn nesting_depth(json: &str) -> usize {
    // A scalar nests nothing: most fields are strings, whose every byte the scan would visit.
    if !matches!(json.as_bytes().first(), Some(b'[' | b'{')) {
        return 0;
    }
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether a raw JSON string has an escape, so that it cannot be borrowed as it stands.
/// (A byte search: `str::contains(char)` costs more on short strings.)
pub(crate) fn has_escape(raw: &str) -> bool {
    raw.as_bytes().contains(&b'\\')
}

/// A string that borrows from the input when it has no escapes.
#[derive(Deserialize)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

/// How a member value of `tags` or `fields` is taken from its raw JSON.
pub(crate) trait EntryValue<'a>: Sized {
    fn from_raw(key: &str, raw: &'a RawValue) -> Result<Self, DecodeError>;
}

/// `fields` members stay raw JSON.
impl<'a> EntryValue<'a> for &'a str {
    fn from_raw(_key: &str, raw: &'a RawValue) -> Result<Self, DecodeError> {
        Ok(raw.get())
    }
}

/// `tags` members become their value text.
impl<'a> EntryValue<'a> for Cow<'a, str> {
    fn from_raw(key: &str, raw: &'a RawValue) -> Result<Self, DecodeError> {
        if key.is_empty() {
            return Err(DecodeError("tag keys must not be empty".into()));
        }
        tag_value_text(key, raw)
    }
}

/// A JSON object's members in document order.
pub(crate) struct Entries<'a, V>(pub(crate) Vec<(Cow<'a, str>, V)>);

impl<'de: 'a, 'a, V: EntryValue<'a>> Deserialize<'de> for Entries<'a, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<'a, V>(std::marker::PhantomData<(&'a (), V)>);

        impl<'de: 'a, 'a, V: EntryValue<'a>> Visitor<'de> for EntriesVisitor<'a, V> {
            type Value = Entries<'a, V>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let raw: &'de RawValue = map.next_value()?;
                    let value = V::from_raw(&key, raw).map_err(|e| de::Error::custom(e.0))?;
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<Command<'_>, DecodeError> {
        Command::decode(json.as_bytes())
    }

    #[test]
    fn upsert_with_tags_and_fields_is_decoded_sorted() {
        let cmd = decode(
            r#"{"type":"upsert","id":"d1","version":3,"tags":{"name":"dor","lastName":"sever"},"fields":{"title":"t","status":"open"}}"#,
        )
        .unwrap();
        assert_eq!(cmd.kind, CommandKind::Upsert);
        assert_eq!(cmd.id.as_deref(), Some("d1"));
        assert_eq!(cmd.version, Some(3));
        let tags: Vec<_> = cmd.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(tags, [("lastName", "sever"), ("name", "dor")]);
        let fields: Vec<_> = cmd.fields.iter().map(|(k, v)| (&**k, *v)).collect();
        assert_eq!(fields, [("status", "\"open\""), ("title", "\"t\"")]);
    }

    #[test]
    fn numbers_and_booleans_become_their_json_text() {
        let cmd = decode(r#"{"type":"upsert","tags":{"n":42,"f":-2.5e3,"b":true}}"#).unwrap();
        let tags: Vec<_> = cmd.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(tags, [("b", "true"), ("f", "-2.5e3"), ("n", "42")]);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let cmd = decode(r#"{"type":"upsert","tags":{"a\"b":"caf\u00e9"}}"#).unwrap();
        assert_eq!(&*cmd.tags[0].0, "a\"b");
        assert_eq!(&*cmd.tags[0].1, "café");
    }

    #[test]
    fn rejections_say_why() {
        let cases = [
            (r#"{"type":"merge","id":"x"}"#, "unknown variant `merge`"),
            (
                r#"{"type":"upsert","colour":"red"}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"type":"upsert","tags":{"a":["x"]}}"#,
                "tag `a` must be a string, number or boolean, got an array",
            ),
            (r#"{"type":"upsert","tags":{"a":null}}"#, "got null"),
            (
                r#"{"type":"upsert","tags":{"":"x"}}"#,
                "tag keys must not be empty",
            ),
            (
                r#"{"type":"upsert","tags":{"a":"1","a":"2"}}"#,
                "`tags` has the key `a` more than once",
            ),
            (
                r#"{"type":"upsert","fields":{"tags":"x"}}"#,
                "`fields` may not contain `tags`",
            ),
            (
                r#"{"type":"delete","id":"x","tags":{}}"#,
                "a delete carries neither",
            ),
            (
                r#"{"type":"upsert","id":"a","id":"b"}"#,
                "duplicate field `id`",
            ),
            (r#"{"type":"upsert","id":7}"#, "invalid type: integer"),
            (
                r#"{"type":"upsert","version":-1}"#,
                "invalid value: integer `-1`",
            ),
            (r#"{"type":"upsert""#, "EOF"),
            (r#"[1,2]"#, "not a valid command envelope"),
        ];
        for (json, expected) in cases {
            let err = decode(json).expect_err(json);
            assert!(err.0.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn invalid_utf8_is_rejected_not_panicked_on() {
        let err = Command::decode(b"{\"type\":\"upsert\",\"id\":\"\xff\"}").unwrap_err();
        assert!(err.0.contains("not a valid command envelope"), "{err}");
    }

    #[test]
    fn deeply_nested_json_is_rejected() {
        let nested = format!(
            r#"{{"type":"upsert","fields":{{"x":{}1{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let err = decode(&nested).unwrap_err();
        assert!(
            err.0
                .contains("field `x` nests arrays or objects more than 32 levels"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn members_come_out_in_str_order_and_a_repeated_name_is_refused(
            names in proptest::collection::vec("[ab\u{e9}]{0,3}", 0..8),
        ) {
            let entries: Vec<(Cow<'_, str>, usize)> =
                names.iter().enumerate().map(|(i, n)| (Cow::Borrowed(n.as_str()), i)).collect();
            let mut expected = names.clone();
            expected.sort();
            let repeated = expected.windows(2).any(|w| w[0] == w[1]);
            match sorted_unique(entries, "tags") {
                Ok(sorted) => {
                    proptest::prop_assert!(!repeated);
                    let got: Vec<&str> = sorted.iter().map(|(n, _)| &**n).collect();
                    proptest::prop_assert_eq!(got, expected);
                }
                Err(e) => {
                    proptest::prop_assert!(repeated, "{}", e);
                    proptest::prop_assert!(e.0.contains("more than once"), "{}", e);
                }
            }
        }
    }

    #[test]
    fn nesting_depth_ignores_brackets_inside_strings() {
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":"[[[{{\"]]"}]}"#), 3);
        assert_eq!(nesting_depth("1"), 0);
    }
}
