//! One pass over a producer's message, guided by the compiled mapping.
//!
//! The mapping's pointers are compiled once into a tree of the members that matter
//! ([`Tree`]). Each message is then parsed once: at every object the parser meets, a member is
//! either a branch of the tree (descended into), a part of the command (kept as raw JSON, or
//! read as tags in place), one of the fields (when the object is the fields object), or skipped
//! without being looked at. Nothing is copied: every text borrows from the payload unless it has
//! escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::mapping::{Mapping, Rename, TagsFormat, TextSource, VersionSource};
use super::pointer::Pointer;
use crate::command::{tag_value_text, Entries, Field, Tag, Text};

/// A scalar part of the command, kept as raw JSON for the plan to interpret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Id,
    Operation,
    Version,
    Routing,
}

/// What a node of the tree holds.
#[derive(Debug, Default)]
struct Node {
    /// The member name (unescaped), and its array index when it is a number.
    name: String,
    index: Option<usize>,
    /// The pointer to this node, for messages.
    pointer: String,
    children: Vec<Node>,
    parts: Vec<Part>,
    tags: Option<TagsFormat>,
    /// This node is the fields object.
    fields: bool,
}

/// How fields are kept.
#[derive(Debug, Default)]
struct FieldRules {
    /// Sorted; empty keeps every field.
    only: Vec<String>,
    renames: Vec<Rename>,
    /// Members starting with this are tags (the prefix format).
    tag_prefix: Option<String>,
    /// The pair member names (the pairs format).
    pair_key: String,
    pair_value: String,
}

/// The compiled mapping: the members that matter, as a tree.
#[derive(Debug)]
pub(super) struct Tree {
    root: Node,
    rules: FieldRules,
}

/// What one message holds, borrowed from its payload.
#[derive(Debug, Default)]
pub(super) struct Found<'a> {
    pub id: Option<&'a RawValue>,
    pub operation: Option<&'a RawValue>,
    pub version: Option<&'a RawValue>,
    pub routing: Option<&'a RawValue>,
    pub tags: Vec<Tag<'a>>,
    pub fields: Vec<Field<'a>>,
}

impl<'a> Found<'a> {
    fn set<E: de::Error>(&mut self, part: Part, raw: &'a RawValue, at: &str) -> Result<(), E> {
        let slot = match part {
            Part::Id => &mut self.id,
            Part::Operation => &mut self.operation,
            Part::Version => &mut self.version,
            Part::Routing => &mut self.routing,
        };
        if slot.replace(raw).is_some() {
            return Err(E::custom(format!("{at} appears more than once")));
        }
        Ok(())
    }
}

impl Tree {
    /// Compiles the value side of `mapping` (which [`Mapping::check`] accepted).
    pub fn compile(mapping: &Mapping) -> Self {
        let mut root = Node::default();
        for source in &mapping.id {
            if let TextSource::Value(p) = source {
                root.at(p).parts.push(Part::Id);
            }
        }
        root.at(&mapping.operation).parts.push(Part::Operation);
        if let VersionSource::Value(p) = &mapping.version {
            root.at(p).parts.push(Part::Version);
        }
        if let Some(TextSource::Value(p)) = &mapping.routing {
            root.at(p).parts.push(Part::Routing);
        }
        if mapping.tags_format != TagsFormat::Prefix {
            root.at(&mapping.tags).tags = Some(mapping.tags_format);
        }
        root.at(&mapping.fields).fields = true;
        let mut only = mapping.only_fields.clone();
        only.sort_unstable();
        let member = |p: &Pointer| p.segments().first().cloned().unwrap_or_default();
        let rules = FieldRules {
            only,
            renames: mapping.renames.clone(),
            tag_prefix: (mapping.tags_format == TagsFormat::Prefix)
                .then(|| mapping.tag_prefix.clone()),
            pair_key: member(&mapping.tag_key),
            pair_value: member(&mapping.tag_value),
        };
        Self { root, rules }
    }

    /// Parses one message value.
    pub fn extract<'a>(&self, text: &'a str) -> Result<Found<'a>, serde_json::Error> {
        let mut found = Found {
            fields: Vec::with_capacity(8),
            ..Found::default()
        };
        let mut de = serde_json::Deserializer::from_str(text);
        NodeSeed {
            node: &self.root,
            rules: &self.rules,
            found: &mut found,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(found)
    }
}

impl Node {
    /// The node at `pointer`, made on the way.
    fn at(&mut self, pointer: &Pointer) -> &mut Node {
        let mut node = self;
        let mut path = String::new();
        for segment in pointer.segments() {
            path.push('/');
            path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
            let i = match node.children.iter().position(|c| c.name == *segment) {
                Some(i) => i,
                None => {
                    node.children.push(Node {
                        name: segment.clone(),
                        index: segment.parse().ok(),
                        pointer: path.clone(),
                        ..Node::default()
                    });
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i];
        }
        node
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn where_(&self) -> &str {
        if self.pointer.is_empty() {
            "the message value"
        } else {
            &self.pointer
        }
    }
}

struct NodeSeed<'n, 'f, 'a> {
    node: &'n Node,
    rules: &'n FieldRules,
    found: &'f mut Found<'a>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let node = self.node;
        if !node.parts.is_empty() {
            // A JSON null counts as absent, as a missing member does.
            let raw: Option<&'de RawValue> = Deserialize::deserialize(d)?;
            if let Some(raw) = raw.filter(|r| r.get() != "null") {
                for part in &node.parts {
                    self.found.set(*part, raw, &node.pointer)?;
                }
            }
            return Ok(());
        }
        match node.tags {
            Some(TagsFormat::Pairs) => d.deserialize_any(PairsVisitor {
                node,
                rules: self.rules,
                found: self.found,
            }),
            Some(_) => {
                let entries: Option<Entries<'de, Cow<'de, str>>> = Deserialize::deserialize(d)
                    .map_err(|e| de::Error::custom(format!("{}: {e}", node.pointer)))?;
                if let Some(Entries(mut tags)) = entries {
                    // Usually the only tags: take the vector rather than copy it.
                    if self.found.tags.is_empty() {
                        self.found.tags = tags;
                    } else {
                        self.found.tags.append(&mut tags);
                    }
                }
                Ok(())
            }
            None => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object at {}", self.node.where_())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let (node, rules) = (self.node, self.rules);
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            if let Some(child) = node.child(&name) {
                map.next_value_seed(NodeSeed {
                    node: child,
                    rules,
                    found: self.found,
                })?;
            } else if node.fields {
                let raw: &'de RawValue = map.next_value()?;
                rules.keep(name, raw, self.found)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let (node, rules) = (self.node, self.rules);
        for index in 0.. {
            let more = match node.children.iter().find(|c| c.index == Some(index)) {
                Some(child) => seq
                    .next_element_seed(NodeSeed {
                        node: child,
                        rules,
                        found: self.found,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                break;
            }
        }
        Ok(())
    }
}

impl FieldRules {
    /// Keeps one member of the fields object as a field, or as a tag in the prefix format.
    fn keep<'a, E: de::Error>(
        &self,
        name: Cow<'a, str>,
        raw: &'a RawValue,
        found: &mut Found<'a>,
    ) -> Result<(), E> {
        if let Some(prefix) = &self.tag_prefix {
            if let Some(key) = name.strip_prefix(prefix.as_str()) {
                if key.is_empty() {
                    return Err(E::custom(format!("field `{name}` names an empty tag key")));
                }
                let key = match &name {
                    Cow::Borrowed(b) => Cow::Borrowed(&b[prefix.len()..]),
                    Cow::Owned(_) => Cow::Owned(key.to_owned()),
                };
                let value = tag_value_text(&key, raw).map_err(|e| E::custom(e.0))?;
                found.tags.push((key, value));
                return Ok(());
            }
        }
        if !self.only.is_empty()
            && self
                .only
                .binary_search_by(|o| o.as_str().cmp(&name))
                .is_err()
        {
            return Ok(());
        }
        let name = match self.renames.iter().find(|r| r.from == *name) {
            Some(rename) => Cow::Owned(rename.to.clone()),
            None => name,
        };
        found.fields.push((name, raw.get()));
        Ok(())
    }
}

/// Tags as an array of `{key, value}` pairs.
struct PairsVisitor<'n, 'f, 'a> {
    node: &'n Node,
    rules: &'n FieldRules,
    found: &'f mut Found<'a>,
}

impl<'de> Visitor<'de> for PairsVisitor<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an array of {{\"{}\": …, \"{}\": …}} pairs at {}",
            self.rules.pair_key,
            self.rules.pair_value,
            self.node.where_()
        )
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        self.found.tags.reserve(seq.size_hint().unwrap_or(12));
        let mut n = 0;
        while let Some(pair) = seq.next_element_seed(PairSeed {
            rules: self.rules,
            at: &self.node.pointer,
            n,
        })? {
            self.found.tags.push(pair);
            n += 1;
        }
        Ok(())
    }
}

/// One `{key, value}` pair.
struct PairSeed<'n> {
    rules: &'n FieldRules,
    at: &'n str,
    n: usize,
}

impl<'de> DeserializeSeed<'de> for PairSeed<'_> {
    type Value = Tag<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Tag<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PairSeed<'_> {
    type Value = Tag<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object (pair {} of {})", self.n, self.at)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Tag<'de>, M::Error> {
        let (mut key, mut value): (Option<Cow<'de, str>>, Option<&'de RawValue>) = (None, None);
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            if name == self.rules.pair_key {
                let Text(k) = map.next_value().map_err(|e| {
                    de::Error::custom(format!(
                        "pair {} of {}: `{}` must be a string ({e})",
                        self.n, self.at, self.rules.pair_key
                    ))
                })?;
                key = Some(k);
            } else if name == self.rules.pair_value {
                value = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        let missing = |member: &str| {
            de::Error::custom(format!("pair {} of {} has no `{member}`", self.n, self.at))
        };
        let key = key.ok_or_else(|| missing(&self.rules.pair_key))?;
        let value = value.ok_or_else(|| missing(&self.rules.pair_value))?;
        if key.is_empty() {
            return Err(de::Error::custom(format!(
                "pair {} of {}: tag keys must not be empty",
                self.n, self.at
            )));
        }
        let value = tag_value_text(&key, value)
            .map_err(|e| de::Error::custom(format!("pair {} of {}: {}", self.n, self.at, e.0)))?;
        Ok((key, value))
    }
}
