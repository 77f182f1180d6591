//! The envelope mapping as the operator writes it: where each part of a command is found.
//!
//! Each part is a small value parsed from one flag (or config-file key), so a mistake is reported
//! with the flag that holds it. [`Mapping::check`] then refuses combinations that cannot be
//! right, before any message is read.

use std::fmt;
use std::str::FromStr;

use super::pointer::Pointer;
use crate::command::CommandKind;

/// Where a text value (the document id, the routing) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// A JSON Pointer into the message value.
    Value(Pointer),
    /// The message key, as UTF-8.
    Key,
    /// A JSON Pointer into the message key, parsed as JSON.
    KeyPointer(Pointer),
    /// A message header, as UTF-8 (the last header of that name).
    Header(String),
}

impl TextSource {
    /// The accepted forms, for help texts and errors.
    pub const FORMS: &'static str = "a JSON Pointer into the value (`/payload/uid`), `key`, `key:/pointer` (into a JSON key) or `header:NAME`";
}

impl FromStr for TextSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "key" {
            return Ok(Self::Key);
        }
        if let Some(pointer) = s.strip_prefix("key:") {
            return Ok(Self::KeyPointer(Pointer::parse(pointer)?));
        }
        if let Some(name) = s.strip_prefix("header:") {
            if name.is_empty() {
                return Err("`header:` needs a header name, e.g. `header:tenant`".into());
            }
            return Ok(Self::Header(name.to_owned()));
        }
        if s.starts_with('/') {
            return Ok(Self::Value(Pointer::parse(s)?));
        }
        Err(format!("`{s}` is not a source; accepted: {}", Self::FORMS))
    }
}

impl fmt::Display for TextSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(p) => write!(f, "{p}"),
            Self::Key => f.write_str("key"),
            Self::KeyPointer(p) => write!(f, "key:{p}"),
            Self::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// Where a write's external version comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VersionSource {
    /// The Kafka offset of the command. Right when one document's commands share a partition,
    /// which keying the topic by document id guarantees.
    #[default]
    Offset,
    /// The Kafka record's timestamp (epoch milliseconds).
    RecordTimestamp,
    /// A message header holding a decimal number (as Kafka Connect's `external.version.header`).
    Header(String),
    /// A JSON Pointer into the value. `version` and `timestamp` name the built-in envelope's
    /// fields, `/version` and `/timestamp`.
    Value(Pointer),
}

impl VersionSource {
    /// The accepted spellings, for help texts and error messages.
    pub const NAMES: &'static str =
        "offset, version, timestamp, record-timestamp, header:NAME or a JSON Pointer (`/meta/seq`)";

    /// The built-in envelope's `version` field.
    pub fn version_field() -> Self {
        Self::Value(Pointer::parse("/version").expect("a valid pointer"))
    }

    /// The built-in envelope's `timestamp` field.
    pub fn timestamp_field() -> Self {
        Self::Value(Pointer::parse("/timestamp").expect("a valid pointer"))
    }
}

impl FromStr for VersionSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "offset" => Ok(Self::Offset),
            "version" => Ok(Self::version_field()),
            "timestamp" => Ok(Self::timestamp_field()),
            "record-timestamp" => Ok(Self::RecordTimestamp),
            _ if s.starts_with('/') => Ok(Self::Value(Pointer::parse(s)?)),
            _ => match s.strip_prefix("header:") {
                Some(name) if !name.is_empty() => Ok(Self::Header(name.to_owned())),
                _ => Err(format!(
                    "`{s}` is not a version source; accepted: {}",
                    Self::NAMES
                )),
            },
        }
    }
}

impl fmt::Display for VersionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Offset => f.write_str("offset"),
            Self::RecordTimestamp => f.write_str("record-timestamp"),
            Self::Header(name) => write!(f, "header:{name}"),
            _ if *self == Self::version_field() => f.write_str("version"),
            _ if *self == Self::timestamp_field() => f.write_str("timestamp"),
            Self::Value(p) => write!(f, "{p}"),
        }
    }
}

/// How the tags are laid out in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagsFormat {
    /// A JSON object of key → value (`{"name": "dor"}`).
    #[default]
    Object,
    /// An array of pairs (`[{"key": "name", "value": "dor"}]`), as many producers serialise a
    /// `Map[String, String]`.
    Pairs,
    /// Members of the fields object named `<prefix><key>` (`"tag.name": "dor"`).
    Prefix,
}

impl FromStr for TagsFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "object" => Ok(Self::Object),
            "pairs" => Ok(Self::Pairs),
            "prefix" => Ok(Self::Prefix),
            other => Err(format!(
                "`{other}` is not a tags format; accepted: object, pairs, prefix"
            )),
        }
    }
}

impl fmt::Display for TagsFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Object => "object",
            Self::Pairs => "pairs",
            Self::Prefix => "prefix",
        })
    }
}

/// What a Kafka tombstone (a message with a key and no value) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tombstones {
    /// It is not a command: dead-letter it.
    #[default]
    Reject,
    /// Delete the document the key names, as compacted topics express deletes.
    Delete,
}

impl FromStr for Tombstones {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(Self::Reject),
            "delete" => Ok(Self::Delete),
            other => Err(format!(
                "`{other}` is not a tombstone rule; accepted: reject, delete"
            )),
        }
    }
}

impl fmt::Display for Tombstones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reject => "reject",
            Self::Delete => "delete",
        })
    }
}

/// One operation value and what it does: `REMOVE=delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationValue {
    /// The value as the producer writes it (strings as they are, numbers as their JSON text).
    pub value: String,
    /// Upsert or delete.
    pub kind: CommandKind,
}

impl FromStr for OperationValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (value, kind) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("`{s}` is not VALUE=upsert or VALUE=delete"))?;
        Ok(Self {
            value: value.to_owned(),
            kind: parse_kind(kind)?,
        })
    }
}

/// Parses `upsert` or `delete`.
pub fn parse_kind(s: &str) -> Result<CommandKind, String> {
    match s {
        "upsert" => Ok(CommandKind::Upsert),
        "delete" => Ok(CommandKind::Delete),
        other => Err(format!(
            "`{other}` is not an operation; accepted: upsert, delete"
        )),
    }
}

/// A field renamed on its way into the document: `userName=user_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// The producer's name.
    pub from: String,
    /// The document's name.
    pub to: String,
}

impl FromStr for Rename {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => Ok(Self {
                from: from.to_owned(),
                to: to.to_owned(),
            }),
            _ => Err(format!("`{s}` is not FROM=TO with two non-empty names")),
        }
    }
}

/// The whole mapping from a producer's message to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Where the document id is, tried in order until one is present.
    pub id: Vec<TextSource>,
    /// Where the operation is.
    pub operation: Pointer,
    /// Operation values and what they do.
    pub operations: Vec<OperationValue>,
    /// The operation of a message without one; `None` refuses such messages.
    pub default_operation: Option<CommandKind>,
    /// Where the version is.
    pub version: VersionSource,
    /// Where the tags are (unused by the prefix format).
    pub tags: Pointer,
    /// How the tags are laid out.
    pub tags_format: TagsFormat,
    /// In the pairs format: the pointer, inside each pair, to its key.
    pub tag_key: Pointer,
    /// In the pairs format: the pointer, inside each pair, to its value.
    pub tag_value: Pointer,
    /// In the prefix format: the prefix of the member names that are tags.
    pub tag_prefix: String,
    /// The object whose members are the document's fields.
    pub fields: Pointer,
    /// Only these fields are kept (all others are when empty).
    pub only_fields: Vec<String>,
    /// Fields renamed on the way.
    pub renames: Vec<Rename>,
    /// Where the `_routing` is, if the index routes.
    pub routing: Option<TextSource>,
    /// What a tombstone means.
    pub tombstones: Tombstones,
}

impl Default for Mapping {
    /// The built-in envelope (`schemas/command.schema.json`).
    fn default() -> Self {
        let pointer = |p: &str| Pointer::parse(p).expect("a valid pointer");
        Self {
            id: vec![TextSource::Value(pointer("/id")), TextSource::Key],
            operation: pointer("/type"),
            operations: vec![
                OperationValue {
                    value: "upsert".into(),
                    kind: CommandKind::Upsert,
                },
                OperationValue {
                    value: "delete".into(),
                    kind: CommandKind::Delete,
                },
            ],
            default_operation: None,
            version: VersionSource::Offset,
            tags: pointer("/tags"),
            tags_format: TagsFormat::Object,
            tag_key: pointer("/key"),
            tag_value: pointer("/value"),
            tag_prefix: String::new(),
            fields: pointer("/fields"),
            only_fields: Vec::new(),
            renames: Vec::new(),
            routing: None,
            tombstones: Tombstones::Reject,
        }
    }
}

impl Mapping {
    /// Whether the value side of this mapping is exactly the built-in envelope, which has a
    /// decoder of its own that also enforces `schemas/command.schema.json` (unknown members, a
    /// delete without tags). The version, a key or header routing and tombstones may differ.
    pub fn is_builtin_envelope(&self) -> bool {
        let builtin = Self::default();
        let version_in_envelope = !matches!(self.version, VersionSource::Value(_))
            || self.version == VersionSource::version_field()
            || self.version == VersionSource::timestamp_field();
        self.id == builtin.id
            && self.operation == builtin.operation
            && self.operations == builtin.operations
            && self.default_operation.is_none()
            && version_in_envelope
            && self.tags == builtin.tags
            && self.tags_format == builtin.tags_format
            && self.fields == builtin.fields
            && self.only_fields.is_empty()
            && self.renames.is_empty()
            && !matches!(self.routing, Some(TextSource::Value(_)))
    }

    /// Refuses a mapping that cannot be right, naming the flag to change.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("--id-from: give at least one source of the document id".into());
        }
        if self.operations.is_empty() && self.default_operation.is_none() {
            return Err(
                "--operation: no operation value is mapped and there is no --default-operation, so no message could be applied".into(),
            );
        }
        if let Some(twice) = self
            .operations
            .iter()
            .enumerate()
            .find(|(i, a)| self.operations[..*i].iter().any(|b| b.value == a.value))
        {
            return Err(format!(
                "--operation: `{}` is mapped more than once",
                twice.1.value
            ));
        }
        self.check_tombstones()?;
        self.check_tags()?;
        self.check_fields()?;
        self.check_places()
    }

    fn check_tombstones(&self) -> Result<(), String> {
        if self.tombstones != Tombstones::Delete {
            return Ok(());
        }
        if !self.id.iter().any(|s| !matches!(s, TextSource::Value(_))) {
            return Err("--tombstones delete: a tombstone has no value, so --id-from needs `key`, `key:/pointer` or `header:NAME` among its sources".into());
        }
        if let VersionSource::Value(p) = &self.version {
            return Err(format!(
                "--tombstones delete with --version-source {p}: a tombstone has no value to read a version from; use offset, record-timestamp or header:NAME"
            ));
        }
        if let Some(TextSource::Value(p)) = &self.routing {
            return Err(format!(
                "--tombstones delete with --routing-from {p}: a tombstone has no value to read its routing from; use key, key:/pointer or header:NAME"
            ));
        }
        Ok(())
    }

    fn check_tags(&self) -> Result<(), String> {
        match self.tags_format {
            TagsFormat::Prefix if self.tag_prefix.is_empty() => Err(
                "--tags-format prefix needs --tag-prefix (e.g. `tag.`), the start of the field names that are tags".into(),
            ),
            TagsFormat::Pairs => {
                for (flag, p) in [("--tag-key", &self.tag_key), ("--tag-value", &self.tag_value)] {
                    if p.segments().len() != 1 {
                        return Err(format!(
                            "{flag} {p}: inside a pair, name one member (`/k`), not a nested path"
                        ));
                    }
                }
                if self.tag_key == self.tag_value {
                    return Err(format!(
                        "--tag-key and --tag-value are both {}",
                        self.tag_key
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_fields(&self) -> Result<(), String> {
        for rename in &self.renames {
            if rename.to == "tags" {
                return Err(format!(
                    "--rename-field {}=tags: `tags` belongs to the document schema",
                    rename.from
                ));
            }
            if !self.only_fields.is_empty() && !self.only_fields.contains(&rename.from) {
                return Err(format!(
                    "--rename-field {}={}: `{}` is not among the --field names kept",
                    rename.from, rename.to, rename.from
                ));
            }
        }
        let mut targets: Vec<&str> = self.renames.iter().map(|r| r.to.as_str()).collect();
        targets.sort_unstable();
        if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "--rename-field: two fields are renamed to `{}`",
                w[0]
            ));
        }
        Ok(())
    }

    /// Refuses pointers that overlap in ways a message cannot satisfy: a part inside a scalar
    /// part, or inside the tags.
    fn check_places(&self) -> Result<(), String> {
        let mut scalars: Vec<(&str, &Pointer)> = Vec::new();
        for source in &self.id {
            if let TextSource::Value(p) = source {
                scalars.push(("--id-from", p));
            }
        }
        scalars.push(("--operation-from", &self.operation));
        if let VersionSource::Value(p) = &self.version {
            scalars.push(("--version-source", p));
        }
        if let Some(TextSource::Value(p)) = &self.routing {
            scalars.push(("--routing-from", p));
        }
        let mut places = scalars.clone();
        if self.tags_format != TagsFormat::Prefix {
            places.push(("--tags-from", &self.tags));
        }
        for (flag, p) in &scalars {
            if p.segments().is_empty() {
                return Err(format!(
                    "{flag} {p}: a part of the command cannot be the whole value"
                ));
            }
            if self.fields.is_within(p) {
                return Err(format!(
                    "--fields-from {} lies inside {flag} {p}, which holds a single value",
                    self.fields
                ));
            }
        }
        if self
            .id
            .iter()
            .filter(|s| matches!(s, TextSource::Value(_)))
            .count()
            > 1
        {
            return Err("--id-from: give at most one pointer into the value (the others may be `key`, `key:/pointer` or `header:NAME`)".into());
        }
        for (outer_flag, outer) in &places {
            for (inner_flag, inner) in &places {
                if inner != outer && inner.is_within(outer) {
                    return Err(format!(
                        "{inner_flag} {inner} lies inside {outer_flag} {outer}, which holds a single value"
                    ));
                }
            }
        }
        if self.tags_format != TagsFormat::Prefix && self.fields.is_within(&self.tags) {
            return Err(format!(
                "--fields-from {} lies inside --tags-from {}",
                self.fields, self.tags
            ));
        }
        Ok(())
    }
}

/// One line for `config check` and the start-up log: the built-in envelope, or every part.
impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: Vec<String>| items.join(", ");
        if self.is_builtin_envelope() {
            write!(f, "the built-in envelope; version from {}", self.version)?;
        } else {
            write!(
                f,
                "id from {}; operation at {} ({}{}); version from {}; ",
                list(self.id.iter().map(ToString::to_string).collect()),
                self.operation,
                list(
                    self.operations
                        .iter()
                        .map(|o| format!("{}={}", o.value, kind_name(o.kind)))
                        .collect()
                ),
                self.default_operation
                    .map(|k| format!("; default {}", kind_name(k)))
                    .unwrap_or_default(),
                self.version
            )?;
            match self.tags_format {
                TagsFormat::Object => write!(f, "tags: object at {}; ", self.tags)?,
                TagsFormat::Pairs => write!(
                    f,
                    "tags: pairs at {} (key {}, value {}); ",
                    self.tags, self.tag_key, self.tag_value
                )?,
                TagsFormat::Prefix => write!(f, "tags: fields named `{}<key>`; ", self.tag_prefix)?,
            }
            write!(f, "fields: members of {}", self.fields)?;
            if !self.only_fields.is_empty() {
                write!(f, " (only {})", self.only_fields.join(", "))?;
            }
            if !self.renames.is_empty() {
                let renames = self.renames.iter().map(|r| format!("{}→{}", r.from, r.to));
                write!(f, " (renamed {})", list(renames.collect()))?;
            }
        }
        if let Some(routing) = &self.routing {
            write!(f, "; routing from {routing}")?;
        }
        write!(f, "; tombstones: {}", self.tombstones)
    }
}

fn kind_name(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Upsert => "upsert",
        CommandKind::Delete => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        Mapping::default()
    }

    #[test]
    fn sources_parse_and_print_back() {
        for s in ["key", "key:/uid", "header:doc-id", "/payload/uid"] {
            assert_eq!(s.parse::<TextSource>().unwrap().to_string(), s);
        }
        for s in [
            "offset",
            "version",
            "timestamp",
            "record-timestamp",
            "header:v",
            "/meta/seq",
        ] {
            assert_eq!(s.parse::<VersionSource>().unwrap().to_string(), s);
        }
        assert!("uid"
            .parse::<TextSource>()
            .unwrap_err()
            .contains("accepted"));
        assert!("seq"
            .parse::<VersionSource>()
            .unwrap_err()
            .contains("accepted: offset"));
        assert!("header:".parse::<VersionSource>().is_err());
        assert_eq!(
            "REMOVE=delete".parse::<OperationValue>().unwrap(),
            OperationValue {
                value: "REMOVE".into(),
                kind: CommandKind::Delete
            }
        );
        assert!("REMOVE=drop"
            .parse::<OperationValue>()
            .unwrap_err()
            .contains("accepted: upsert, delete"));
    }

    #[test]
    fn the_default_is_the_builtin_envelope_and_passes_its_checks() {
        let m = mapping();
        assert!(m.is_builtin_envelope());
        m.check().unwrap();
        let with_pointer_version = Mapping {
            version: "/meta/seq".parse().unwrap(),
            ..mapping()
        };
        assert!(!with_pointer_version.is_builtin_envelope());
        let with_key_routing = Mapping {
            routing: Some(TextSource::Key),
            ..mapping()
        };
        assert!(with_key_routing.is_builtin_envelope());
    }

    #[test]
    fn mappings_that_cannot_be_right_are_refused_naming_the_flag() {
        let cases = [
            (
                Mapping {
                    tombstones: Tombstones::Delete,
                    version: "/meta/seq".parse().unwrap(),
                    ..mapping()
                },
                "--tombstones delete with --version-source /meta/seq",
            ),
            (
                Mapping {
                    tombstones: Tombstones::Delete,
                    id: vec!["/uid".parse().unwrap()],
                    ..mapping()
                },
                "--id-from needs `key`",
            ),
            (
                Mapping {
                    tombstones: Tombstones::Delete,
                    routing: Some("/tenant".parse().unwrap()),
                    ..mapping()
                },
                "--routing-from /tenant",
            ),
            (
                Mapping {
                    version: "/tags/seq".parse().unwrap(),
                    ..mapping()
                },
                "--version-source /tags/seq lies inside --tags-from /tags",
            ),
            (
                Mapping {
                    operation: Pointer::parse("/meta").unwrap(),
                    version: "/meta/seq".parse().unwrap(),
                    ..mapping()
                },
                "lies inside --operation-from /meta",
            ),
            (
                Mapping {
                    tags_format: TagsFormat::Prefix,
                    ..mapping()
                },
                "needs --tag-prefix",
            ),
            (
                Mapping {
                    tags_format: TagsFormat::Pairs,
                    tag_key: Pointer::parse("/a/b").unwrap(),
                    ..mapping()
                },
                "--tag-key /a/b",
            ),
            (
                Mapping {
                    renames: vec!["labels=tags".parse().unwrap()],
                    ..mapping()
                },
                "`tags` belongs to the document schema",
            ),
            (
                Mapping {
                    renames: vec!["a=x".parse().unwrap(), "b=x".parse().unwrap()],
                    ..mapping()
                },
                "two fields are renamed to `x`",
            ),
            (
                Mapping {
                    operations: vec![],
                    ..mapping()
                },
                "no operation value is mapped",
            ),
            (
                Mapping {
                    operations: vec!["X=upsert".parse().unwrap(), "X=delete".parse().unwrap()],
                    ..mapping()
                },
                "`X` is mapped more than once",
            ),
        ];
        for (m, expected) in cases {
            let err = m.check().expect_err(expected);
            assert!(err.contains(expected), "{err}\n  expected: {expected}");
        }
    }
}
