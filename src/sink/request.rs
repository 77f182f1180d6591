//! Building `_bulk` request bodies.
//!
//! A [`Batch`] is one NDJSON body plus, for every item, the byte range of its lines and what the
//! caller (its ticket) and the dead-letter path need to know about it. Retrying a subset of items
//! rebuilds a body from those ranges, so a retry never re-encodes a document. The original
//! message keys and payloads, kept for dead letters, live in one arena per batch rather than in
//! an allocation per message.

use std::ops::Range;

use bytes::Bytes;

use crate::dlq::letter::Original;
use crate::json_text::{write_str, write_u64};
use crate::transform::{Op, Write};

/// How an index action line starts, up to its quoted `_id`.
const INDEX_PREFIX: &[u8] = b"{\"index\":{\"_id\":";
/// How a delete action line starts, up to its quoted `_id`.
const DELETE_PREFIX: &[u8] = b"{\"delete\":{\"_id\":";
/// What follows the quoted `_id` in an action line.
const VERSION_KEY: &[u8] = b",\"version\":";

/// The kind of bulk operation, which decides how some statuses are read (a 404 on a delete is
/// the desired end state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `index` with an external version.
    Index,
    /// `delete` with an external version.
    Delete,
}

/// What the caller knows a write by. The sink hands it back with the write's outcome and knows
/// nothing else about it: a Kafka partition, offset and assignment epoch for the replay, a slice
/// and a hit for the backfill.
pub trait Tracked: Copy + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static {
    /// A stream (a partition, a slice) and a position in it, for the log lines that name where a
    /// batch's writes came from.
    fn position(&self) -> (i32, i64);
}

/// The message behind a write, as handed to [`Batch::push`].
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a, T> {
    /// The caller's ticket for the message.
    pub ticket: T,
    /// The original message key.
    pub key: Option<&'a [u8]>,
    /// The original message payload.
    pub payload: &'a [u8],
}

/// One item of a batch.
#[derive(Debug, Clone)]
pub struct BatchItem<T> {
    /// Index or delete.
    pub op: OpKind,
    /// Byte range of this item's lines in the batch body.
    pub lines: Range<usize>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The caller's ticket for the message behind the item.
    pub ticket: T,
    key: Option<Range<usize>>,
    payload: Range<usize>,
}

/// A `_bulk` body and its items, in body order.
#[derive(Debug)]
pub struct Batch<T> {
    /// NDJSON body, while it is built.
    body: Vec<u8>,
    /// The body once it was first sent: every resend hands out this buffer, never a copy.
    sent: Option<Bytes>,
    /// Items in body order.
    pub items: Vec<BatchItem<T>>,
    originals: Vec<u8>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self {
            body: Vec::new(),
            sent: None,
            items: Vec::new(),
            originals: Vec::new(),
        }
    }
}

impl<T: Tracked> Batch<T> {
    /// An empty batch with room for `bytes` of body and `docs` items.
    pub fn with_capacity(bytes: usize, docs: usize) -> Self {
        Self {
            body: Vec::with_capacity(bytes),
            sent: None,
            items: Vec::with_capacity(docs),
            originals: Vec::with_capacity(bytes / 2),
        }
    }

    /// The NDJSON body.
    pub fn body(&self) -> &[u8] {
        self.sent.as_deref().unwrap_or(&self.body)
    }

    /// The body to send. The first call moves it into a shared buffer, without copying it; a
    /// retry of the same batch gets the same buffer.
    pub fn to_send(&mut self) -> Bytes {
        let body = &mut self.body;
        self.sent
            .get_or_insert_with(|| Bytes::from(std::mem::take(body)))
            .clone()
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
    pub fn push(&mut self, write: Write<'_>, provenance: Provenance<'_, T>) {
        debug_assert!(
            self.sent.is_none(),
            "a batch is not added to once it was sent"
        );
        let start = self.body.len();
        let op = match write.op {
            Op::Index(_) => OpKind::Index,
            Op::Delete => OpKind::Delete,
        };
        self.body.extend_from_slice(match op {
            OpKind::Index => INDEX_PREFIX,
            OpKind::Delete => DELETE_PREFIX,
        });
        write_str(&mut self.body, &write.id);
        self.body.extend_from_slice(VERSION_KEY);
        write_u64(&mut self.body, write.version);
        self.body
            .extend_from_slice(b",\"version_type\":\"external\"");
        if let Some(routing) = &write.routing {
            self.body.extend_from_slice(b",\"routing\":");
            write_str(&mut self.body, routing);
        }
        self.body.extend_from_slice(b"}}\n");
        if let Op::Index(source) = &write.op {
            source.write_to(&mut self.body);
            self.body.push(b'\n');
        }
        let key = provenance.key.map(|k| self.keep(k));
        let payload = self.keep(provenance.payload);
        self.items.push(BatchItem {
            op,
            lines: start..self.body.len(),
            attempts: 0,
            ticket: provenance.ticket,
            key,
            payload,
        });
    }

    fn keep(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.originals.len();
        self.originals.extend_from_slice(bytes);
        start..self.originals.len()
    }

    /// A copy of the message behind `item`.
    pub fn original(&self, item: &BatchItem<T>) -> Original {
        Original {
            key: item.key.clone().map(|k| self.originals[k].to_vec()),
            payload: self.originals[item.payload.clone()].to_vec(),
        }
    }

    /// The partitions and offset ranges of the items, `0:120-340 2:7-7`, for log correlation.
    pub fn origins(&self) -> String {
        let mut ranges: std::collections::BTreeMap<i32, (i64, i64)> =
            std::collections::BTreeMap::new();
        for item in &self.items {
            let (stream, position) = item.ticket.position();
            let range = ranges.entry(stream).or_insert((position, position));
            range.0 = range.0.min(position);
            range.1 = range.1.max(position);
        }
        ranges
            .iter()
            .map(|(p, (lo, hi))| format!("{p}:{lo}-{hi}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `_id` of `item` as it stands in its action line: a quoted, escaped JSON string. One id
    /// always encodes to the same bytes, so this serves as a key. Read back from the line rather
    /// than kept per item, because only the rare retry path needs it.
    pub fn quoted_id<'b>(&'b self, item: &BatchItem<T>) -> &'b [u8] {
        let line = &self.body()[item.lines.clone()];
        let start = match item.op {
            OpKind::Index => INDEX_PREFIX.len(),
            OpKind::Delete => DELETE_PREFIX.len(),
        };
        // Inside the quoted id every `"` is escaped, so `,"version":` first occurs right after it.
        let end =
            memchr::memmem::find(&line[start..], VERSION_KEY).map_or(line.len(), |at| start + at);
        &line[start..end]
    }

    /// The external version of `item`, read back from its action line (see [`Self::quoted_id`]).
    pub fn version(&self, item: &BatchItem<T>) -> u64 {
        let line = &self.body()[item.lines.clone()];
        let digits = memchr::memmem::find(line, VERSION_KEY)
            .map_or(&[][..], |at| &line[at + VERSION_KEY.len()..]);
        digits
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |n, b| {
                n.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
            })
    }

    /// The document id of `item`, for messages.
    pub fn document_id(&self, item: &BatchItem<T>) -> String {
        serde_json::from_slice::<String>(self.quoted_id(item)).unwrap_or_else(|_| "?".to_owned())
    }

    /// Drops the items `keep` refuses, returning how many were dropped. The body is rebuilt
    /// only when something was dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&BatchItem<T>) -> bool) -> usize {
        let kept: Vec<BatchItem<T>> = self.items.iter().filter(|i| keep(i)).cloned().collect();
        let dropped = self.items.len() - kept.len();
        if dropped > 0 {
            *self = self.subset(kept);
        }
        dropped
    }

    /// The memory this batch holds: its body and the original messages kept for dead letters.
    pub fn held_bytes(&self) -> usize {
        self.body().len() + self.originals.len()
    }

    /// A new batch holding only `items`, whose ranges point into `self.body`.
    pub fn subset(&self, items: Vec<BatchItem<T>>) -> Self {
        let mut out = Batch::with_capacity(items.iter().map(|i| i.lines.len()).sum(), items.len());
        for mut item in items {
            let start = out.body.len();
            out.body.extend_from_slice(&self.body()[item.lines.clone()]);
            item.lines = start..out.body.len();
            item.key = item.key.map(|k| out.keep(&self.originals[k]));
            item.payload = out.keep(&self.originals[item.payload.clone()]);
            out.items.push(item);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOADS: [&[u8]; 3] = [b"zero", b"one", b"two"];

    /// A partition and an offset.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(crate) struct At(pub i32, pub i64);

    impl Tracked for At {
        fn position(&self) -> (i32, i64) {
            (self.0, self.1)
        }
    }

    fn provenance(offset: i64) -> Provenance<'static, At> {
        Provenance {
            ticket: At(0, offset),
            key: (offset % 2 == 0).then_some(b"key".as_slice()),
            payload: PAYLOADS[offset as usize % 3],
        }
    }

    #[test]
    fn index_and_delete_lines_carry_external_versions_and_routing() {
        let mut batch = Batch::default();
        batch.push(
            Write {
                id: "a".into(),
                routing: None,
                version: 3,
                op: Op::Index(br#"{"tags":[]}"#.to_vec().into()),
            },
            provenance(3),
        );
        batch.push(
            Write {
                id: "b\"".into(),
                routing: Some("tenant-1".into()),
                version: 4,
                op: Op::Delete,
            },
            provenance(4),
        );
        assert_eq!(
            String::from_utf8(batch.body().to_vec()).unwrap(),
            concat!(
                r#"{"index":{"_id":"a","version":3,"version_type":"external"}}"#,
                "\n",
                r#"{"tags":[]}"#,
                "\n",
                r#"{"delete":{"_id":"b\"","version":4,"version_type":"external","routing":"tenant-1"}}"#,
                "\n",
            )
        );
        assert_eq!(batch.items[1].op, OpKind::Delete);
        assert_eq!(batch.document_id(&batch.items[1]), "b\"");
    }

    #[test]
    fn ids_and_versions_read_back_from_action_lines_whatever_the_id_holds() {
        let mut batch = Batch::default();
        for (id, version) in [(r#"a","version":1"#, 7), ("\\", 8), ("é\n", u64::MAX)] {
            batch.push(
                Write {
                    id: id.into(),
                    routing: None,
                    version,
                    op: Op::Index(b"{}".to_vec().into()),
                },
                provenance(1),
            );
        }
        let read: Vec<(String, u64)> = batch
            .items
            .iter()
            .map(|i| (batch.document_id(i), batch.version(i)))
            .collect();
        assert_eq!(
            read,
            [
                (r#"a","version":1"#.to_owned(), 7),
                ("\\".to_owned(), 8),
                ("é\n".to_owned(), u64::MAX)
            ]
        );
    }

    #[test]
    fn origins_name_each_partitions_offset_range() {
        let mut batch = Batch::default();
        for (partition, offset) in [(2, 9), (0, 5), (2, 7), (0, 6)] {
            let mut p = provenance(offset);
            p.ticket.0 = partition;
            batch.push(
                Write {
                    id: "a".into(),
                    routing: None,
                    version: 1,
                    op: Op::Delete,
                },
                p,
            );
        }
        assert_eq!(batch.origins(), "0:5-6 2:7-9");
        assert_eq!(Batch::<At>::default().origins(), "");
    }

    #[test]
    fn retain_drops_the_refused_items_and_their_lines() {
        let mut batch = Batch::default();
        for (i, partition) in [0, 1, 0].into_iter().enumerate() {
            let mut p = provenance(i as i64);
            p.ticket.0 = partition;
            batch.push(
                Write {
                    id: format!("d{i}").into(),
                    routing: None,
                    version: i as u64,
                    op: Op::Delete,
                },
                p,
            );
        }
        assert_eq!(batch.retain(|item| item.ticket.0 == 0), 1);
        assert_eq!(
            String::from_utf8(batch.body().to_vec()).unwrap(),
            concat!(
                "{\"delete\":{\"_id\":\"d0\",\"version\":0,\"version_type\":\"external\"}}\n",
                "{\"delete\":{\"_id\":\"d2\",\"version\":2,\"version_type\":\"external\"}}\n",
            )
        );
        assert_eq!(batch.document_id(&batch.items[1]), "d2");
        assert_eq!(batch.quoted_id(&batch.items[1]), b"\"d2\"");
        assert_eq!(batch.version(&batch.items[1]), 2);
        assert_eq!(batch.retain(|_| true), 0);
    }

    #[test]
    fn a_subset_keeps_exactly_the_chosen_items_lines() {
        let mut batch = Batch::default();
        for i in 0..3 {
            batch.push(
                Write {
                    id: format!("d{i}").into(),
                    routing: None,
                    version: i,
                    op: Op::Delete,
                },
                provenance(i as i64),
            );
        }
        let retry = batch.subset(vec![batch.items[1].clone()]);
        assert_eq!(
            String::from_utf8(retry.body().to_vec()).unwrap(),
            "{\"delete\":{\"_id\":\"d1\",\"version\":1,\"version_type\":\"external\"}}\n"
        );
        assert_eq!(retry.items[0].lines, 0..retry.items[0].lines.len());
        assert_eq!(
            retry.original(&retry.items[0]),
            Original {
                key: None,
                payload: b"one".to_vec()
            },
            "the original message moves with the item"
        );
        assert_eq!(
            batch.original(&batch.items[2]).key.as_deref(),
            Some(b"key".as_slice())
        );
    }
}
