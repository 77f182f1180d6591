//! From a decoded command to one versioned Elasticsearch write.
//!
//! [`encode`] turns a decoded command into the document body of the target schema; the rest of
//! the per-message work (reading the producer's envelope, the id, the version, the routing) is
//! [`crate::envelope::Plan::prepare`], which calls it. Both are pure, so the same functions serve
//! the live replay, the benchmarks and the property tests.
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
pub enum Op<'a> {
    /// Index this full `_source`.
    Index(Source<'a>),
    /// Delete the document.
    Delete,
}

/// A document `_source`: JSON bytes, or a checked command that is encoded only where the
/// document goes. The replay writes it straight into the bulk body, so no document is built in
/// a buffer of its own and copied.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// The document as JSON.
    Json(Vec<u8>),
    /// A command that passed [`new_schema::check`], and the schema to encode it in.
    Command(Schema, Command<'a>),
}

impl Source<'_> {
    /// Appends the document's JSON to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Json(json) => out.extend_from_slice(json),
            Self::Command(Schema::New, command) => new_schema::write_document(command, out),
            Self::Command(Schema::Legacy, command) => legacy::write_document(command, out),
        }
    }

    /// The document's JSON.
    pub fn to_json(&self) -> Cow<'_, [u8]> {
        match self {
            Self::Json(json) => Cow::Borrowed(json),
            Self::Command(_, command) => {
                let mut out = Vec::with_capacity(new_schema::encoded_len_estimate(command));
                self.write_to(&mut out);
                Cow::Owned(out)
            }
        }
    }
}

/// Two sources are equal when they encode to the same JSON.
impl PartialEq for Source<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl Eq for Source<'_> {}

impl From<Vec<u8>> for Source<'_> {
    fn from(json: Vec<u8>) -> Self {
        Self::Json(json)
    }
}

/// One versioned write, ready for the bulk encoder. It borrows its id from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write<'a> {
    /// The document `_id`.
    pub id: Cow<'a, str>,
    /// The document's `_routing`, when the index routes by something other than the id.
    pub routing: Option<Cow<'a, str>>,
    /// The external version.
    pub version: u64,
    /// Index or delete.
    pub op: Op<'a>,
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

/// The checked document of an upsert in `schema`, encoded where it is written, or a delete.
pub fn encode(schema: Schema, command: Command<'_>) -> Result<Op<'_>, Rejection> {
    Ok(match command.kind {
        CommandKind::Delete => Op::Delete,
        CommandKind::Upsert => {
            new_schema::check(&command)?;
            Op::Index(Source::Command(schema, command))
        }
    })
}

/// Refuses a document id Elasticsearch would refuse.
pub fn check_id(id: &str) -> Result<(), Rejection> {
    if id.is_empty() {
        return Err(Rejection::Transform("the document id is empty".into()));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Rejection::Transform(format!(
            "the document id is {} bytes; Elasticsearch accepts at most {MAX_ID_BYTES}",
            id.len()
        )));
    }
    Ok(())
}

/// Refuses an external version Elasticsearch would refuse; `what` says where it came from.
pub fn check_version(value: u64, what: &str) -> Result<u64, Rejection> {
    // Elasticsearch stores external versions as a signed 64-bit number and refuses the whole
    // `_bulk` request, every other document with it, when one is larger.
    if value > MAX_EXTERNAL_VERSION {
        return Err(Rejection::Transform(format!(
            "{what} is {value}; Elasticsearch accepts external versions up to {MAX_EXTERNAL_VERSION}"
        )));
    }
    Ok(value)
}
