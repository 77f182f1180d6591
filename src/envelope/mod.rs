//! Reading the command topic as its producers wrote it: from one Kafka message to one versioned
//! write.
//!
//! A team migrating a live service cannot change its producers, so the shape of a command is
//! configuration ([`Mapping`]): JSON Pointers into the message value, or the message key, a
//! header, the offset or the record timestamp, for the document id, the operation, the version,
//! the tags, the fields and the routing. [`Plan::compile`] checks a mapping and compiles it once;
//! [`Plan::prepare`] is then the whole per-message work, pure, shared by the live replay,
//! `envelope check`, the benchmarks and the property tests.
//!
//! The built-in envelope (`schemas/command.schema.json`) is the default mapping. It keeps a
//! decoder of its own ([`crate::command`]), because it also enforces that schema (unknown
//! members, a delete without tags); a unit test checks that it and the general path agree.

pub mod mapping;
pub mod pointer;

mod extract;

use std::borrow::Cow;

pub use mapping::{Mapping, TagsFormat, TextSource, Tombstones, VersionSource};
pub use pointer::Pointer;

use crate::command::{check_fields, json_kind, sorted_unique, Command, CommandKind, Text};
use crate::transform::{self, Rejection, Schema, Write};
use extract::{Found, Tree};
use serde_json::value::RawValue;

/// The headers of a message, looked up by name.
pub trait HeaderLookup {
    /// The value of the last header named `name`, if any.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl<const N: usize> HeaderLookup for [(&str, &[u8]); N] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// One Kafka record (a message), as the plan reads it.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    /// The value; `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The offset in its partition.
    pub offset: i64,
    /// The record timestamp (epoch milliseconds), if the broker gave one.
    pub timestamp: Option<i64>,
    /// The headers, if any.
    pub headers: Option<&'a dyn HeaderLookup>,
}

impl<'a> Record<'a> {
    /// A message with only a value, a key and an offset.
    pub fn new(payload: &'a [u8], key: Option<&'a [u8]>, offset: i64) -> Self {
        Self {
            payload: Some(payload),
            key,
            offset,
            timestamp: None,
            headers: None,
        }
    }

    fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.and_then(|h| h.header(name))
    }
}

/// A checked, compiled mapping.
#[derive(Debug)]
pub struct Plan {
    mapping: Mapping,
    /// The whole value, for messages about a part that has no pointer.
    root: Pointer,
    /// `None` when the value is the built-in envelope, read by its own decoder.
    tree: Option<Tree>,
    /// Whether the built-in envelope's versions come from its `version` field (else `timestamp`),
    /// decided once: comparing the mapping's pointer per message built a pointer each time.
    reads_version_field: bool,
}

/// The parts of a command read from the value, before the id, version and routing are resolved.
struct Parts<'a> {
    command: Command<'a>,
    id: Option<Cow<'a, str>>,
    version: Option<u64>,
    routing: Option<Cow<'a, str>>,
}

impl Plan {
    /// Checks and compiles a mapping. The error names the flag to change.
    pub fn compile(mapping: Mapping) -> Result<Self, String> {
        mapping.check()?;
        let tree = (!mapping.is_builtin_envelope()).then(|| Tree::compile(&mapping));
        Ok(Self::new(mapping, tree))
    }

    fn new(mapping: Mapping, tree: Option<Tree>) -> Self {
        Self {
            reads_version_field: mapping.version == VersionSource::version_field(),
            mapping,
            tree,
            root: Pointer::root(),
        }
    }

    /// The built-in envelope with versions from `version`.
    pub fn builtin(version: VersionSource) -> Self {
        Self::compile(Mapping {
            version,
            ..Mapping::default()
        })
        .expect("the built-in mapping passes its checks")
    }

    /// The general path even for the built-in envelope, to check the two agree.
    #[cfg(test)]
    fn general(mapping: Mapping) -> Self {
        let tree = Some(Tree::compile(&mapping));
        Self::new(mapping, tree)
    }

    /// The mapping this plan was compiled from.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Whether every write's version is its offset (what the partition-count check guards).
    pub fn versions_are_offsets(&self) -> bool {
        self.mapping.version == VersionSource::Offset
    }

    /// Turns one message into one write for `schema`, or says why it cannot become one.
    pub fn prepare<'a>(
        &self,
        schema: Schema,
        message: &Record<'a>,
    ) -> Result<Write<'a>, Rejection> {
        let Some(payload) = message.payload else {
            return self.tombstone(message);
        };
        let mut parts = self.decode(payload)?;
        let id = self.id(parts.id.take(), message)?;
        let version = self.version(parts.version, message)?;
        let routing = match &self.mapping.routing {
            None => None,
            Some(TextSource::Value(p)) => Some(parts.routing.take().ok_or_else(|| {
                Rejection::Decode(format!(
                    "no routing at {p}: a write without the routing would land on another shard than the document's other writes"
                ))
            })?),
            Some(source) => Some(self.text_from(source, message)?.ok_or_else(|| {
                Rejection::Decode(format!("no routing: the message has no {source}"))
            })?),
        };
        let op = transform::encode(schema, parts.command)?;
        Ok(Write {
            id,
            routing,
            version,
            op,
        })
    }

    /// A message without a value: a delete by key, or a rejection.
    fn tombstone<'a>(&self, message: &Record<'a>) -> Result<Write<'a>, Rejection> {
        if self.mapping.tombstones == Tombstones::Reject {
            return Err(Rejection::Decode(
                "the message has no value (a tombstone is not a command unless --tombstones delete)".into(),
            ));
        }
        let id = self.id(None, message)?;
        let version = self.version(None, message)?;
        let routing = match &self.mapping.routing {
            Some(source) => Some(self.text_from(source, message)?.ok_or_else(|| {
                Rejection::Decode(format!("no routing: the tombstone has no {source}"))
            })?),
            None => None,
        };
        Ok(Write {
            id,
            routing,
            version,
            op: transform::Op::Delete,
        })
    }

    fn decode<'a>(&self, payload: &'a [u8]) -> Result<Parts<'a>, Rejection> {
        let Some(tree) = &self.tree else {
            let mut command = Command::decode(payload).map_err(|e| Rejection::Decode(e.0))?;
            let version = if self.reads_version_field {
                command.version
            } else {
                command.timestamp
            };
            return Ok(Parts {
                id: command.id.take(),
                version,
                routing: None,
                command,
            });
        };
        let text = crate::json_text::utf8(payload)
            .map_err(|e| Rejection::Decode(format!("the message value is not UTF-8 ({e})")))?;
        let found = tree.extract(text).map_err(|e| {
            Rejection::Decode(format!(
                "the message value does not fit the envelope mapping: {e}"
            ))
        })?;
        self.assemble(found)
    }

    /// Interprets what the tree found.
    fn assemble<'a, 'p>(&'p self, found: Found<'a>) -> Result<Parts<'a>, Rejection> {
        let m = &self.mapping;
        let kind = match found.operation {
            None => m.default_operation.ok_or_else(|| {
                Rejection::Decode(format!(
                    "no operation at {}, and no --default-operation",
                    m.operation
                ))
            })?,
            Some(raw) => {
                let value = scalar_text(raw, &m.operation)?;
                m.operations
                    .iter()
                    .find(|o| o.value == value)
                    .map(|o| o.kind)
                    .ok_or_else(|| {
                        Rejection::Decode(format!(
                            "operation `{value}` at {} is not mapped; mapped: {}",
                            m.operation,
                            m.operations
                                .iter()
                                .map(|o| o.value.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?
            }
        };
        let pointer_of = |source: Option<&'p TextSource>| match source {
            Some(TextSource::Value(p)) => p,
            _ => &self.root,
        };
        let id_pointer = m.id.iter().find(|s| matches!(s, TextSource::Value(_)));
        let id = found
            .id
            .map(|raw| scalar_text(raw, pointer_of(id_pointer)))
            .transpose()?;
        let routing = found
            .routing
            .map(|raw| scalar_text(raw, pointer_of(m.routing.as_ref())))
            .transpose()?;
        let version = match (&m.version, found.version) {
            (VersionSource::Value(p), Some(raw)) => Some(version_number(raw, p)?),
            _ => None,
        };
        let (tags, fields) = match kind {
            // A delete needs no document: whatever else the producer sent with it is ignored.
            CommandKind::Delete => (Vec::new(), Vec::new()),
            CommandKind::Upsert => {
                let tags = sorted_unique(found.tags, "tags").map_err(|e| Rejection::Decode(e.0))?;
                let fields =
                    sorted_unique(found.fields, "fields").map_err(|e| Rejection::Decode(e.0))?;
                check_fields(
                    &fields,
                    &format!(
                        "the fields at {} include `tags`, which the document schema owns; drop it with --field or rename it with --rename-field",
                        m.fields
                    ),
                )
                .map_err(|e| Rejection::Decode(e.0))?;
                (tags, fields)
            }
        };
        Ok(Parts {
            command: Command {
                kind,
                id: None,
                version: None,
                timestamp: None,
                tags,
                fields,
            },
            id,
            version,
            routing,
        })
    }

    /// The document id from the first of its sources that the message has.
    fn id<'a>(
        &self,
        from_value: Option<Cow<'a, str>>,
        message: &Record<'a>,
    ) -> Result<Cow<'a, str>, Rejection> {
        let mut from_value = from_value;
        for source in &self.mapping.id {
            let id = match source {
                TextSource::Value(_) => from_value.take(),
                other => self.text_from(other, message)?,
            };
            if let Some(id) = id {
                transform::check_id(&id)?;
                return Ok(id);
            }
        }
        let tried: Vec<String> = self.mapping.id.iter().map(ToString::to_string).collect();
        Err(Rejection::Decode(format!(
            "no document id: the message has none of {}",
            tried.join(", ")
        )))
    }

    /// A text from the key or a header (`None` when the message has none); value pointers are
    /// read by the tree.
    fn text_from<'a>(
        &self,
        source: &TextSource,
        message: &Record<'a>,
    ) -> Result<Option<Cow<'a, str>>, Rejection> {
        let utf8 = |bytes: &'a [u8], what: &str| {
            std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| Rejection::Decode(format!("the {what} is not UTF-8")))
        };
        match source {
            TextSource::Value(_) => Ok(None),
            TextSource::Key => message.key.map(|k| utf8(k, "message key")).transpose(),
            TextSource::Header(name) => message
                .header(name)
                .map(|h| utf8(h, &format!("header `{name}`")))
                .transpose(),
            TextSource::KeyPointer(p) => {
                let Some(key) = message.key else {
                    return Ok(None);
                };
                let value: serde_json::Value = serde_json::from_slice(key).map_err(|e| {
                    Rejection::Decode(format!(
                        "the message key is not JSON, so key:{p} cannot be read ({e})"
                    ))
                })?;
                let at = p.segments().iter().try_fold(&value, |v, s| match v {
                    serde_json::Value::Object(m) => m.get(s),
                    serde_json::Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
                match at {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(Cow::Owned(s.clone()))),
                    Some(serde_json::Value::Number(n)) => Ok(Some(Cow::Owned(n.to_string()))),
                    Some(_) => Err(Rejection::Decode(format!(
                        "key:{p} must be a string or a number"
                    ))),
                }
            }
        }
    }

    /// The external version from its source.
    fn version(&self, from_value: Option<u64>, message: &Record<'_>) -> Result<u64, Rejection> {
        let source = &self.mapping.version;
        let value = match source {
            VersionSource::Offset => {
                return u64::try_from(message.offset).map_err(|_| {
                    Rejection::Transform(format!("negative offset {}", message.offset))
                })
            }
            VersionSource::RecordTimestamp => {
                let ts = message.timestamp.ok_or_else(|| {
                    Rejection::Transform(
                        "version source is record-timestamp but the record has no timestamp".into(),
                    )
                })?;
                u64::try_from(ts).map_err(|_| {
                    Rejection::Transform(format!("the record timestamp {ts} is negative"))
                })?
            }
            VersionSource::Header(name) => {
                let bytes = message.header(name).ok_or_else(|| {
                    Rejection::Transform(format!(
                        "version source is header:{name} but the message has no `{name}` header"
                    ))
                })?;
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        Rejection::Transform(format!(
                            "header `{name}` must hold a non-negative decimal version, got {:?}",
                            String::from_utf8_lossy(bytes)
                        ))
                    })?
            }
            VersionSource::Value(p) => from_value.ok_or_else(|| {
                Rejection::Transform(format!(
                    "version source is {source} but the command has no {}",
                    if *source == VersionSource::version_field()
                        || *source == VersionSource::timestamp_field()
                    {
                        format!("`{}` field", &p.segments()[0])
                    } else {
                        format!("value at {p}")
                    }
                ))
            })?,
        };
        transform::check_version(value, &format!("the version ({source})"))
    }
}

/// A string as it is, a number as its JSON text; `at` names the pointer for the error.
fn scalar_text<'a>(raw: &'a RawValue, at: &Pointer) -> Result<Cow<'a, str>, Rejection> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') if !crate::command::has_escape(text) => {
            Ok(Cow::Borrowed(&text[1..text.len() - 1]))
        }
        Some(b'"') => serde_json::from_str::<Text<'a>>(text)
            .map(|t| t.0)
            .map_err(|e| Rejection::Decode(format!("{at}: {e}"))),
        Some(b'-' | b'0'..=b'9') => Ok(Cow::Borrowed(text)),
        _ => Err(Rejection::Decode(format!(
            "{at} must be a string or a number, got {}",
            json_kind(text)
        ))),
    }
}

/// A version: a non-negative integer, or a string holding one.
fn version_number(raw: &RawValue, at: &Pointer) -> Result<u64, Rejection> {
    let text = raw.get();
    let digits = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    digits.parse::<u64>().map_err(|_| {
        Rejection::Transform(format!(
            "the version at {at} must be a non-negative integer, got {text}"
        ))
    })
}

#[cfg(test)]
mod tests;
