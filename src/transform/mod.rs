//! From a decoded command to one versioned Elasticsearch write.
//!
//! [`prepare`] is the whole per-message transform: decode the envelope, resolve the document id
//! and external version, and encode the document body for the target schema. It is pure, so the
//! same function serves the live replay, the benchmarks and the property tests.
//!
//! Every write is a full-document `index` or a `delete`, both with `version_type=external`.
//! Elasticsearch then keeps whichever write carries the highest version, so duplicates, replays
//! and out-of-order deliveries all converge on the newest command per document, without scripts
//! (real ES cannot version an `_update`, and the test stand-in has no painless).

pub mod key_to_value;
pub mod legacy;
pub mod new_schema;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::command::{Command, CommandKind};

/// Elasticsearch's limit on a document `_id`, in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 512;

/// The largest external version Elasticsearch accepts (`i64::MAX`).
pub const MAX_EXTERNAL_VERSION: u64 = i64::MAX as u64;

/// Where a write's external version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionSource {
    /// The Kafka offset of the command. Right when one document's commands share a partition,
    /// which keying the topic by document id guarantees.
    #[default]
    Offset,
    /// The command's `version` field (a per-document sequence).
    Version,
    /// The command's `timestamp` field (epoch milliseconds).
    Timestamp,
}

impl VersionSource {
    /// The accepted spellings, for help texts and error messages.
    pub const NAMES: &'static str = "offset, version, timestamp";
}

impl FromStr for VersionSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "offset" => Ok(Self::Offset),
            "version" => Ok(Self::Version),
            "timestamp" => Ok(Self::Timestamp),
            other => Err(format!(
                "`{other}` is not a version source; accepted: {}",
                Self::NAMES
            )),
        }
    }
}

impl fmt::Display for VersionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Offset => "offset",
            Self::Version => "version",
            Self::Timestamp => "timestamp",
        })
    }
}

/// Which document shape a run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// The flattened `keyToValue` tag schema (`schemas/new-index-template.json`).
    #[default]
    New,
    /// The legacy dynamic-field shape (`schemas/legacy-index-template.json`): the reference
    /// legacy indexer.
    Legacy,
}

impl Schema {
    /// The index template of this schema.
    pub fn template(self) -> &'static str {
        match self {
            Self::New => crate::schemas::NEW_INDEX_TEMPLATE,
            Self::Legacy => crate::schemas::LEGACY_INDEX_TEMPLATE,
        }
    }
}

impl FromStr for Schema {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "new" => Ok(Self::New),
            "legacy" => Ok(Self::Legacy),
            other => Err(format!("`{other}` is not a schema; accepted: new, legacy")),
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::New => "new",
            Self::Legacy => "legacy",
        })
    }
}

/// What happens to the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Index this full `_source` (JSON bytes).
    Index(Vec<u8>),
    /// Delete the document.
    Delete,
}

/// One versioned write, ready for the bulk encoder. It borrows its id from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write<'a> {
    /// The document `_id`.
    pub id: Cow<'a, str>,
    /// The external version.
    pub version: u64,
    /// Index or delete.
    pub op: Op,
}

/// Why a command cannot become a write. It goes to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The payload is not a valid command envelope.
    #[error("{0}")]
    Decode(String),
    /// The command is valid JSON but breaks a rule of the document schema.
    #[error("{0}")]
    Transform(String),
}

impl Rejection {
    /// The error class written to the dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Decode(_) => "decode",
            Self::Transform(_) => "transform",
        }
    }
}

/// The message a command arrived in: what the transform needs besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The message key, if any.
    pub key: Option<&'a [u8]>,
    /// The message offset in its partition.
    pub offset: i64,
}

/// Decodes a payload and turns it into one write for the new schema.
pub fn prepare<'a>(
    payload: &'a [u8],
    origin: Origin<'a>,
    versions: VersionSource,
) -> Result<Write<'a>, Rejection> {
    prepare_for(Schema::New, payload, origin, versions)
}

/// Decodes a payload and turns it into one write for `schema`.
pub fn prepare_for<'a>(
    schema: Schema,
    payload: &'a [u8],
    origin: Origin<'a>,
    versions: VersionSource,
) -> Result<Write<'a>, Rejection> {
    let mut command = Command::decode(payload).map_err(|e| Rejection::Decode(e.0))?;
    let id = document_id(&mut command, origin.key)?;
    let version = external_version(&command, origin.offset, versions)?;
    let op = match command.kind {
        CommandKind::Delete => Op::Delete,
        CommandKind::Upsert => Op::Index(match schema {
            Schema::New => new_schema::encode_document(&command)?,
            Schema::Legacy => legacy::encode_document(&command)?,
        }),
    };
    Ok(Write { id, version, op })
}

/// The id from the envelope, or else the message key.
fn document_id<'a>(
    command: &mut Command<'a>,
    key: Option<&'a [u8]>,
) -> Result<Cow<'a, str>, Rejection> {
    let id = match (command.id.take(), key) {
        (Some(id), _) => id,
        (None, Some(key)) => Cow::Borrowed(std::str::from_utf8(key).map_err(|_| {
            Rejection::Decode("the command has no `id` and its message key is not UTF-8".into())
        })?),
        (None, None) => {
            return Err(Rejection::Decode(
                "the command has no `id` and its message has no key".into(),
            ))
        }
    };
    if id.is_empty() {
        return Err(Rejection::Transform("the document id is empty".into()));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Rejection::Transform(format!(
            "the document id is {} bytes; Elasticsearch accepts at most {MAX_ID_BYTES}",
            id.len()
        )));
    }
    Ok(id)
}

fn external_version(
    command: &Command<'_>,
    offset: i64,
    source: VersionSource,
) -> Result<u64, Rejection> {
    let (value, field) = match source {
        VersionSource::Offset => {
            return u64::try_from(offset)
                .map_err(|_| Rejection::Transform(format!("negative offset {offset}")))
        }
        VersionSource::Version => (command.version, "version"),
        VersionSource::Timestamp => (command.timestamp, "timestamp"),
    };
    let value = value.ok_or_else(|| {
        Rejection::Transform(format!(
            "version_source is `{field}` but the command has no `{field}` field"
        ))
    })?;
    // Elasticsearch stores external versions as a signed 64-bit number and refuses the whole
    // `_bulk` request, every other document with it, when one is larger.
    if value > MAX_EXTERNAL_VERSION {
        return Err(Rejection::Transform(format!(
            "`{field}` is {value}; Elasticsearch accepts external versions up to {MAX_EXTERNAL_VERSION}"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(key: Option<&[u8]>, offset: i64) -> Origin<'_> {
        Origin { key, offset }
    }

    #[test]
    fn the_id_falls_back_to_the_message_key() {
        let w = prepare(
            br#"{"type":"delete"}"#,
            origin(Some(b"k1"), 7),
            VersionSource::Offset,
        )
        .unwrap();
        assert_eq!(
            w,
            Write {
                id: "k1".into(),
                version: 7,
                op: Op::Delete
            }
        );
    }

    #[test]
    fn the_envelope_id_wins_over_the_key() {
        let w = prepare(
            br#"{"type":"delete","id":"d"}"#,
            origin(Some(b"k"), 0),
            VersionSource::Offset,
        )
        .unwrap();
        assert_eq!(w.id, "d");
    }

    #[test]
    fn a_command_without_any_id_is_rejected() {
        let err = prepare(
            br#"{"type":"delete"}"#,
            origin(None, 0),
            VersionSource::Offset,
        )
        .unwrap_err();
        assert_eq!(err.class(), "decode");
        assert!(err.to_string().contains("no key"));
    }

    #[test]
    fn oversized_ids_are_rejected_before_elasticsearch_sees_them() {
        let payload = format!(r#"{{"type":"delete","id":"{}"}}"#, "x".repeat(513));
        let err = prepare(payload.as_bytes(), origin(None, 0), VersionSource::Offset).unwrap_err();
        assert!(err.to_string().contains("513 bytes"), "{err}");
    }

    #[test]
    fn versions_come_from_the_configured_source() {
        let payload = br#"{"type":"delete","id":"d","version":5,"timestamp":1700000000000}"#;
        let at = |s| prepare(payload, origin(None, 42), s).unwrap().version;
        assert_eq!(at(VersionSource::Offset), 42);
        assert_eq!(at(VersionSource::Version), 5);
        assert_eq!(at(VersionSource::Timestamp), 1_700_000_000_000);
    }

    #[test]
    fn a_missing_version_field_is_a_rejection_not_a_default() {
        let err = prepare(
            br#"{"type":"delete","id":"d"}"#,
            origin(None, 1),
            VersionSource::Version,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no `version` field"), "{err}");
    }

    #[test]
    fn a_version_past_the_signed_range_is_refused_per_message() {
        let at_limit = format!(r#"{{"type":"delete","id":"d","version":{}}}"#, i64::MAX);
        let w = prepare(at_limit.as_bytes(), origin(None, 1), VersionSource::Version).unwrap();
        assert_eq!(w.version, i64::MAX as u64);
        for source in [VersionSource::Version, VersionSource::Timestamp] {
            let payload = format!(
                r#"{{"type":"delete","id":"d","version":{0},"timestamp":{0}}}"#,
                i64::MAX as u64 + 1
            );
            let err = prepare(payload.as_bytes(), origin(None, 1), source).unwrap_err();
            assert_eq!(err.class(), "transform");
            assert!(
                err.to_string().contains("up to 9223372036854775807"),
                "{err}"
            );
        }
    }

    #[test]
    fn version_source_names_round_trip() {
        for s in ["offset", "version", "timestamp"] {
            assert_eq!(s.parse::<VersionSource>().unwrap().to_string(), s);
        }
        assert!("seq"
            .parse::<VersionSource>()
            .unwrap_err()
            .contains("accepted: offset"));
    }
}
