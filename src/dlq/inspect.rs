//! Reading the dead-letter topic back: each entry with its headers, a filter, and the counts
//! `dlq show` prints. Pure: the entries come from whatever read the topic.

use std::collections::BTreeMap;

use serde::Serialize;

use super::headers;
use crate::source::topics::Record;

/// One entry of the dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Where the entry is in the dead-letter topic.
    pub dlq_partition: i32,
    /// Its offset there.
    pub dlq_offset: i64,
    /// The error class (`decode`, `transform`, `mapping`, …).
    pub class: String,
    /// Elasticsearch's error type, when Elasticsearch refused the document.
    pub es_type: Option<String>,
    /// The reason, as written.
    pub reason: String,
    /// The command's topic.
    pub source_topic: String,
    /// The command's partition.
    pub source_partition: Option<i32>,
    /// The command's offset.
    pub source_offset: Option<i64>,
    /// Bulk attempts made.
    pub attempts: Option<u32>,
    /// The original payload's size, when the entry holds a cut payload.
    pub truncated_from: Option<u64>,
    /// The original key, as (lossy) UTF-8.
    pub key: Option<String>,
    /// The original payload, as (lossy) UTF-8.
    pub payload: String,
    /// When the entry was written (epoch milliseconds), if the broker said.
    pub written_at: Option<i64>,
}

impl Entry {
    /// Reads an entry from a record of the dead-letter topic.
    pub fn from_record(record: &Record) -> Self {
        let header = |name: &str| record.headers.get(name).cloned();
        Self {
            dlq_partition: record.partition,
            dlq_offset: record.offset,
            class: header(headers::CLASS).unwrap_or_else(|| "unknown".into()),
            es_type: header(headers::ES_TYPE),
            reason: header(headers::REASON).unwrap_or_default(),
            source_topic: header(headers::TOPIC).unwrap_or_default(),
            source_partition: number(record, headers::PARTITION),
            source_offset: number(record, headers::OFFSET),
            attempts: number(record, headers::ATTEMPTS),
            truncated_from: number(record, headers::TRUNCATED),
            key: record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: String::from_utf8_lossy(&record.payload).into_owned(),
            written_at: record.timestamp,
        }
    }

    /// What the entry is counted under: Elasticsearch's error type, or the class.
    pub fn reason_kind(&self) -> &str {
        self.es_type.as_deref().unwrap_or(&self.class)
    }
}

/// A header holding a number, if it is there and is one.
fn number<T: std::str::FromStr>(record: &Record, name: &str) -> Option<T> {
    record.headers.get(name).and_then(|v| v.parse().ok())
}

/// Which entries to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this class.
    pub class: Option<String>,
    /// Only this Elasticsearch error type.
    pub es_type: Option<String>,
    /// Only commands from this partition.
    pub source_partition: Option<i32>,
    /// Only commands at or after this offset.
    pub from_offset: Option<i64>,
    /// Only commands at or before this offset.
    pub to_offset: Option<i64>,
    /// Only entries written at or after this time (epoch milliseconds).
    pub since_ms: Option<i64>,
    /// Only entries written at or before this time (epoch milliseconds).
    pub until_ms: Option<i64>,
}

impl Filter {
    /// Whether `entry` passes.
    pub fn admits(&self, entry: &Entry) -> bool {
        let offset = entry.source_offset.unwrap_or(-1);
        self.class.as_ref().is_none_or(|c| *c == entry.class)
            && self
                .es_type
                .as_ref()
                .is_none_or(|t| entry.es_type.as_ref() == Some(t))
            && self
                .source_partition
                .is_none_or(|p| entry.source_partition == Some(p))
            && self.from_offset.is_none_or(|from| offset >= from)
            && self.to_offset.is_none_or(|to| offset <= to)
            && self
                .since_ms
                .is_none_or(|since| entry.written_at.is_some_and(|t| t >= since))
            && self
                .until_ms
                .is_none_or(|until| entry.written_at.is_some_and(|t| t <= until))
    }
}

/// The oldest and newest command of one source partition among the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Entries from this partition.
    pub count: usize,
    /// The lowest source offset.
    pub oldest: i64,
    /// The highest source offset.
    pub newest: i64,
}

/// The counts `dlq show` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Entries counted.
    pub total: usize,
    /// Entries per class.
    pub by_class: BTreeMap<String, usize>,
    /// Entries per reason: Elasticsearch's error type, or the class.
    pub by_reason: BTreeMap<String, usize>,
    /// Per source partition, the count and the oldest and newest origin.
    pub by_partition: BTreeMap<i32, Span>,
    /// Entries whose payload was cut to fit the broker (they can never be applied as they are).
    pub truncated: usize,
}

impl Summary {
    /// Counts `entries`.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut s = Self::default();
        for e in entries {
            s.total += 1;
            *s.by_class.entry(e.class.clone()).or_default() += 1;
            *s.by_reason.entry(e.reason_kind().to_owned()).or_default() += 1;
            if e.truncated_from.is_some() {
                s.truncated += 1;
            }
            if let (Some(p), Some(o)) = (e.source_partition, e.source_offset) {
                let span = s.by_partition.entry(p).or_insert(Span {
                    count: 0,
                    oldest: o,
                    newest: o,
                });
                span.count += 1;
                span.oldest = span.oldest.min(o);
                span.newest = span.newest.max(o);
            }
        }
        s
    }

    /// The summary for people.
    pub fn render(&self, topic: &str) -> String {
        let mut out = format!("{topic}: {} dead letter(s)", self.total);
        if self.truncated > 0 {
            out += &format!(", {} with a cut payload", self.truncated);
        }
        out.push('\n');
        let table = |title: &str, rows: Vec<(String, String)>| {
            let mut t = format!("\n{title}\n");
            for (k, v) in rows {
                t += &format!("  {k:<40} {v}\n");
            }
            t
        };
        out += &table(
            "by class",
            self.by_class
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        );
        out += &table(
            "by reason",
            self.by_reason
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        );
        out += &table(
            "by source partition (count, oldest and newest offset)",
            self.by_partition
                .iter()
                .map(|(p, s)| {
                    (
                        p.to_string(),
                        format!("{} ({}–{})", s.count, s.oldest, s.newest),
                    )
                })
                .collect(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn record(offset: i64, class: &str, es_type: Option<&str>, source: (i32, i64)) -> Record {
        let mut headers = HashMap::from([
            (headers::CLASS.to_owned(), class.to_owned()),
            (headers::REASON.to_owned(), format!("{class} reason")),
            (headers::TOPIC.to_owned(), "commands".to_owned()),
            (headers::PARTITION.to_owned(), source.0.to_string()),
            (headers::OFFSET.to_owned(), source.1.to_string()),
        ]);
        if let Some(t) = es_type {
            headers.insert(headers::ES_TYPE.to_owned(), t.to_owned());
        }
        Record {
            partition: 0,
            offset,
            key: Some(b"k".to_vec()),
            payload: b"{}".to_vec(),
            headers,
            timestamp: Some(1_000 * offset),
        }
    }

    fn entries() -> Vec<Entry> {
        [
            record(0, "decode", None, (0, 10)),
            record(
                1,
                "mapping",
                Some("strict_dynamic_mapping_exception"),
                (1, 5),
            ),
            record(2, "decode", None, (0, 3)),
            record(
                3,
                "mapping",
                Some("strict_dynamic_mapping_exception"),
                (1, 90),
            ),
        ]
        .iter()
        .map(Entry::from_record)
        .collect()
    }

    #[test]
    fn counts_by_class_reason_and_partition_with_the_oldest_and_newest_origin() {
        let s = Summary::of(&entries());
        assert_eq!(s.total, 4);
        assert_eq!(s.by_class["decode"], 2);
        assert_eq!(s.by_reason["strict_dynamic_mapping_exception"], 2);
        assert_eq!(s.by_reason["decode"], 2);
        assert_eq!(
            s.by_partition[&1],
            Span {
                count: 2,
                oldest: 5,
                newest: 90
            }
        );
        let text = s.render("commands.dlq");
        assert!(
            text.starts_with("commands.dlq: 4 dead letter(s)\n"),
            "{text}"
        );
        assert!(text.contains("2 (3–10)"), "{text}");
    }

    #[test]
    fn filters_combine() {
        let all = entries();
        let pick = |f: Filter| -> Vec<i64> {
            all.iter()
                .filter(|e| f.admits(e))
                .map(|e| e.dlq_offset)
                .collect()
        };
        assert_eq!(pick(Filter::default()), [0, 1, 2, 3]);
        let decode = Filter {
            class: Some("decode".into()),
            ..Filter::default()
        };
        assert_eq!(pick(decode), [0, 2]);
        let late_mapping = Filter {
            es_type: Some("strict_dynamic_mapping_exception".into()),
            from_offset: Some(50),
            ..Filter::default()
        };
        assert_eq!(pick(late_mapping), [3]);
        let partition_0_early = Filter {
            source_partition: Some(0),
            to_offset: Some(5),
            ..Filter::default()
        };
        assert_eq!(pick(partition_0_early), [2]);
        let written_late = Filter {
            since_ms: Some(2_000),
            until_ms: Some(2_500),
            ..Filter::default()
        };
        assert_eq!(pick(written_late), [2]);
    }
}
