//! Building `_bulk` request bodies.
//!
//! A [`Batch`] is one NDJSON body plus, for every item, the byte range of its lines and what the
//! offset tracker and the dead-letter path need to know about it. Retrying a subset of items
//! rebuilds a body from those ranges, so a retry never re-encodes a document.

use std::ops::Range;

use serde::Serialize;

use crate::source::offsets::Ticket;
use crate::transform::{Op, Write};

/// The kind of bulk operation, which decides how some statuses are read (a 404 on a delete is
/// the desired end state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `index` with an external version.
    Index,
    /// `delete` with an external version.
    Delete,
}

/// Where a bulk item came from: enough to dead-letter it byte for byte.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The offset-tracker ticket (partition, offset, epoch).
    pub ticket: Ticket,
    /// The original message key.
    pub key: Option<Vec<u8>>,
    /// The original message payload.
    pub payload: Vec<u8>,
}

/// One item of a batch.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// Index or delete.
    pub op: OpKind,
    /// The document id, for logs and dead-letter reasons.
    pub id: String,
    /// Byte range of this item's lines in the batch body.
    pub lines: Range<usize>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The message behind the item.
    pub provenance: Provenance,
}

/// A `_bulk` body and its items, in body order.
#[derive(Debug, Default)]
pub struct Batch {
    /// NDJSON body.
    pub body: Vec<u8>,
    /// Items in body order.
    pub items: Vec<BatchItem>,
}

#[derive(Serialize)]
struct ActionMeta<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    version: u64,
    version_type: &'static str,
}

#[derive(Serialize)]
enum Action<'a> {
    #[serde(rename = "index")]
    Index(ActionMeta<'a>),
    #[serde(rename = "delete")]
    Delete(ActionMeta<'a>),
}

impl Batch {
    /// An empty batch with room for `bytes` of body.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            body: Vec::with_capacity(bytes),
            items: Vec::new(),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch has no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends one versioned write.
    pub fn push(&mut self, write: &Write, provenance: Provenance) {
        let start = self.body.len();
        let meta = ActionMeta {
            id: &write.id,
            version: write.version,
            version_type: "external",
        };
        let (action, op) = match write.op {
            Op::Index(_) => (Action::Index(meta), OpKind::Index),
            Op::Delete => (Action::Delete(meta), OpKind::Delete),
        };
        encode_action(&mut self.body, &action);
        if let Op::Index(source) = &write.op {
            self.body.extend_from_slice(source);
            self.body.push(b'\n');
        }
        self.items.push(BatchItem {
            op,
            id: write.id.clone(),
            lines: start..self.body.len(),
            attempts: 0,
            provenance,
        });
    }

    /// A new batch holding only `items`, whose ranges point into `self.body`.
    pub fn subset(&self, items: Vec<BatchItem>) -> Batch {
        let mut out = Batch::with_capacity(items.iter().map(|i| i.lines.len()).sum());
        for mut item in items {
            let start = out.body.len();
            out.body.extend_from_slice(&self.body[item.lines.clone()]);
            item.lines = start..out.body.len();
            out.items.push(item);
        }
        out
    }
}

fn encode_action(out: &mut Vec<u8>, action: &Action<'_>) {
    serde_json::to_writer(&mut *out, action).expect("serializing strings into memory cannot fail");
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance(offset: i64) -> Provenance {
        Provenance {
            ticket: Ticket {
                partition: 0,
                offset,
                epoch: 1,
            },
            key: None,
            payload: vec![],
        }
    }

    #[test]
    fn index_and_delete_lines_carry_external_versions() {
        let mut batch = Batch::default();
        batch.push(
            &Write {
                id: "a".into(),
                version: 3,
                op: Op::Index(br#"{"tags":[]}"#.to_vec()),
            },
            provenance(3),
        );
        batch.push(
            &Write {
                id: "b\"".into(),
                version: 4,
                op: Op::Delete,
            },
            provenance(4),
        );
        assert_eq!(
            String::from_utf8(batch.body.clone()).unwrap(),
            concat!(
                r#"{"index":{"_id":"a","version":3,"version_type":"external"}}"#,
                "\n",
                r#"{"tags":[]}"#,
                "\n",
                r#"{"delete":{"_id":"b\"","version":4,"version_type":"external"}}"#,
                "\n",
            )
        );
        assert_eq!(batch.items[1].op, OpKind::Delete);
    }

    #[test]
    fn a_subset_keeps_exactly_the_chosen_items_lines() {
        let mut batch = Batch::default();
        for i in 0..3 {
            batch.push(
                &Write {
                    id: format!("d{i}"),
                    version: i,
                    op: Op::Delete,
                },
                provenance(i as i64),
            );
        }
        let retry = batch.subset(vec![batch.items[1].clone()]);
        assert_eq!(
            String::from_utf8(retry.body).unwrap(),
            "{\"delete\":{\"_id\":\"d1\",\"version\":1,\"version_type\":\"external\"}}\n"
        );
        assert_eq!(retry.items[0].lines, 0..retry.items[0].lines.len());
    }
}
