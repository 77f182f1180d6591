//! `dual-indexer generate`: a seeded, reproducible synthetic command stream.
//!
//! The stream looks like a real alerting service's command topic: upserts that replace whole
//! documents, deletes, exact duplicates (a producer retry), stale commands whose `version` is
//! older than one already sent (out-of-order delivery), and, every `poison_every` messages, one
//! poison message of each [`Poison`] kind in turn. Tag values mix case, multi-word text,
//! punctuation, unicode, numbers and booleans; a few keys contain `:`.
//!
//! The same [`GeneratorSpec`] always yields the same messages, so tests compute their oracle
//! from the spec, and a benchmark run can be repeated exactly.
//!
//! Versions: each document's normal commands carry even versions 2, 4, 6, …; a stale command
//! carries the odd version just below the newest, so no two different commands for one
//! document share a version and "the newest version wins" has exactly one answer.

pub mod nested;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Map, Value};

/// The kinds of poison message, planted in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Poison {
    /// A truncated JSON document.
    InvalidJson,
    /// `"type": "merge"`.
    UnknownType,
    /// A tag whose value is an array.
    NonScalarTag,
    /// A field the strict mapping does not know; refused by Elasticsearch itself.
    UnknownField,
    /// A tag value past the keyword limit.
    OversizedTag,
    /// A delete with neither an `id` nor a message key.
    MissingId,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
}

impl Poison {
    const ALL: [Poison; 7] = [
        Poison::InvalidJson,
        Poison::UnknownType,
        Poison::NonScalarTag,
        Poison::UnknownField,
        Poison::OversizedTag,
        Poison::MissingId,
        Poison::InvalidUtf8,
    ];

    /// The dead-letter class the indexer gives this poison.
    pub fn expected_class(self) -> &'static str {
        match self {
            Poison::InvalidJson
            | Poison::UnknownType
            | Poison::NonScalarTag
            | Poison::MissingId
            | Poison::InvalidUtf8 => "decode",
            Poison::OversizedTag => "transform",
            Poison::UnknownField => "mapping",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorSpec {
    /// Number of messages.
    pub count: usize,
    /// Number of distinct document ids.
    pub ids: usize,
    /// Tags per document.
    pub tags: usize,
    /// Seed of the pseudo-random sequence.
    pub seed: u64,
    /// One poison message every this many messages; 0 for none.
    pub poison_every: usize,
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        Self {
            count: 20_000,
            ids: 5_000,
            tags: 10,
            seed: 42,
            poison_every: 500,
        }
    }
}

/// One generated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedMessage {
    /// The message key (the document id), absent only for [`Poison::MissingId`].
    pub key: Option<String>,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Set for planted poison.
    pub poison: Option<Poison>,
}

/// SplitMix64: tiny, fast, and the same sequence on every platform and release.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TAG_KEYS: &[&str] = &[
    "host",
    "service",
    "env",
    "region",
    "team",
    "owner",
    "check",
    "cluster",
    "k8s:namespace",
    "app.kubernetes.io/name",
    "Priority",
    "customer",
    "datacenter",
    "rack",
    "os",
    "release",
    "note",
    "incident:type",
    "name",
    "lastName",
];

const TAG_VALUES: &[&str] = &[
    "John Smith",
    "john",
    "Dor",
    "Sever",
    "Alice",
    "White",
    "web-12.prod.example.com",
    "db-03",
    "Zürich",
    "São Paulo",
    "東京",
    "Ελλάδα",
    "eu-west-1",
    "us-east-1",
    "P1",
    "p2",
    "CPU: high",
    "disk /var is 95% full",
    "N/A",
    "o'brien",
    "checkout-api",
    "Payments Team",
    "on-call",
    "node_exporter",
    "kube-system",
    "a:b:c",
    "v1.2.3",
    "ERROR",
    "Error",
    "",
];

const TITLES: &[&str] = &[
    "CPU high on",
    "Disk almost full on",
    "Service down:",
    "Latency above SLO for",
    "Memory pressure on",
];
const STATUSES: &[&str] = &["open", "acknowledged", "resolved"];
const SEVERITIES: &[&str] = &["critical", "high", "medium", "low"];
const SOURCES: &[&str] = &["nagios", "datadog", "prometheus", "cloudwatch"];

/// Generates the whole stream for `spec`.
pub fn messages(spec: &GeneratorSpec) -> Vec<GeneratedMessage> {
    let mut rng = SplitMix64(spec.seed);
    let mut versions: HashMap<usize, u64> = HashMap::new();
    let mut stale_used: HashMap<usize, u64> = HashMap::new();
    let mut last: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(spec.count);
    let mut poison_turn = 0;
    for n in 0..spec.count {
        let doc = rng.below(spec.ids);
        let id = doc_id(doc);
        if spec.poison_every > 0 && n % spec.poison_every == spec.poison_every - 1 {
            let kind = Poison::ALL[poison_turn % Poison::ALL.len()];
            poison_turn += 1;
            out.push(poison(kind, &id, &mut rng, spec.tags));
            continue;
        }
        let roll = rng.below(100);
        let payload = if roll < 8 && last.contains_key(&doc) {
            last[&doc].clone()
        } else if roll < 14
            && versions
                .get(&doc)
                .is_some_and(|v| *v >= 2 && stale_used.get(&doc) != Some(v))
        {
            let newest = versions[&doc];
            stale_used.insert(doc, newest);
            upsert(&id, newest - 1, &mut rng, spec.tags)
        } else {
            let version = versions.entry(doc).or_insert(0);
            *version += 2;
            let version = *version;
            if roll < 26 {
                command_bytes(
                    &json!({"type": "delete", "id": id, "version": version, "timestamp": timestamp(version)}),
                )
            } else {
                upsert(&id, version, &mut rng, spec.tags)
            }
        };
        last.insert(doc, payload.clone());
        out.push(GeneratedMessage {
            key: Some(id),
            payload,
            poison: None,
        });
    }
    out
}

/// The id of document number `n`.
pub fn doc_id(n: usize) -> String {
    format!("doc-{n:06}")
}

fn timestamp(version: u64) -> u64 {
    1_767_225_600_000 + version * 1000
}

fn upsert(id: &str, version: u64, rng: &mut SplitMix64, tag_count: usize) -> Vec<u8> {
    command_bytes(&upsert_value(id, version, rng, tag_count))
}

fn upsert_value(id: &str, version: u64, rng: &mut SplitMix64, tag_count: usize) -> Value {
    let mut tags = Map::new();
    while tags.len() < tag_count {
        // The built-in keys first, in random order; past them, numbered variants of them.
        let key = if tags.len() < TAG_KEYS.len() {
            (*rng.pick(TAG_KEYS)).to_owned()
        } else {
            format!("{}.{}", rng.pick(TAG_KEYS), tags.len())
        };
        let value = match rng.below(20) {
            0 => json!(rng.below(1000)),
            1 => json!(rng.below(2) == 0),
            _ => json!(rng.pick(TAG_VALUES)),
        };
        tags.insert(key, value);
    }
    let host = format!("web-{:02}", rng.below(40));
    json!({
        "type": "upsert",
        "id": id,
        "version": version,
        "timestamp": timestamp(version),
        "tags": tags,
        "fields": {
            "title": format!("{} {host}", rng.pick(TITLES)),
            "status": rng.pick(STATUSES),
            "severity": rng.pick(SEVERITIES),
            "source": rng.pick(SOURCES),
            "updated_at": format!("2026-01-{:02}T{:02}:{:02}:00Z", 1 + version % 28, version % 24, version % 60),
        }
    })
}

fn poison(kind: Poison, id: &str, rng: &mut SplitMix64, tag_count: usize) -> GeneratedMessage {
    let key = Some(id.to_owned());
    let payload = match kind {
        Poison::InvalidJson => {
            let mut bytes = upsert(id, 1, rng, tag_count);
            bytes.truncate(bytes.len() / 2);
            bytes
        }
        Poison::UnknownType => command_bytes(&json!({"type": "merge", "id": id})),
        Poison::NonScalarTag => {
            command_bytes(&json!({"type": "upsert", "id": id, "tags": {"host": ["a", "b"]}}))
        }
        Poison::UnknownField => {
            let mut value = upsert_value(id, 1 << 40, rng, tag_count);
            value["fields"]["colour"] = json!("red");
            command_bytes(&value)
        }
        Poison::OversizedTag => command_bytes(
            &json!({"type": "upsert", "id": id, "tags": {"note": "x".repeat(33_000)}}),
        ),
        Poison::MissingId => {
            return GeneratedMessage {
                key: None,
                payload: command_bytes(&json!({"type": "delete"})),
                poison: Some(kind),
            }
        }
        Poison::InvalidUtf8 => {
            let mut bytes =
                format!(r#"{{"type":"upsert","id":"{id}","tags":{{"name":""#).into_bytes();
            bytes.extend_from_slice(&[0xff, 0xfe, b'"', b'}', b'}']);
            bytes
        }
    };
    GeneratedMessage {
        key,
        payload,
        poison: Some(kind),
    }
}

fn command_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value always serializes")
}

/// Produces `messages` to `topic` in order and waits for every acknowledgement.
pub async fn produce(
    config: &ClientConfig,
    topic: &str,
    messages: &[GeneratedMessage],
) -> anyhow::Result<()> {
    let producer: FutureProducer = config
        .clone()
        .set("acks", "all")
        // One request in flight per connection keeps each partition's order exactly as generated,
        // which the tests' oracles rely on.
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "20")
        .set("batch.num.messages", "2000")
        .create()?;
    let window = 5_000;
    for chunk in messages.chunks(window) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for m in chunk {
            let mut record = FutureRecord::to(topic).payload(&m.payload);
            if let Some(key) = &m.key {
                record = record.key(key);
            }
            deliveries.push(producer.send(record, Duration::from_secs(30)));
        }
        for (i, delivery) in futures::future::join_all(deliveries)
            .await
            .into_iter()
            .enumerate()
        {
            delivery.map_err(|(e, _)| {
                anyhow::anyhow!("producing generated message {i} to `{topic}`: {e}")
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Plan, Record, VersionSource};
    use crate::transform::Schema;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let spec = GeneratorSpec {
            count: 2_000,
            ..GeneratorSpec::default()
        };
        assert_eq!(messages(&spec), messages(&spec));
        let other = GeneratorSpec {
            seed: 7,
            ..spec.clone()
        };
        assert_ne!(messages(&spec), messages(&other));
    }

    #[test]
    fn every_message_is_either_planted_poison_or_prepares_cleanly() {
        let spec = GeneratorSpec {
            count: 5_000,
            ids: 300,
            ..GeneratorSpec::default()
        };
        let mut poison = HashMap::new();
        let plan = Plan::builtin(VersionSource::version_field());
        for (offset, m) in messages(&spec).iter().enumerate() {
            let record = Record::new(
                &m.payload,
                m.key.as_deref().map(str::as_bytes),
                offset as i64,
            );
            let result = plan.prepare(Schema::New, &record);
            match m.poison {
                // Refused by Elasticsearch's strict mapping, not by the transform.
                Some(Poison::UnknownField) | None => assert!(result.is_ok(), "{:?}", result),
                Some(kind) => {
                    let rejection = result.expect_err("poison must be rejected");
                    assert_eq!(
                        rejection.class(),
                        kind.expected_class(),
                        "{kind:?}: {rejection}"
                    );
                }
            }
            if let Some(kind) = m.poison {
                *poison.entry(kind).or_insert(0) += 1;
            }
        }
        assert_eq!(
            poison.len(),
            Poison::ALL.len(),
            "every poison kind is planted: {poison:?}"
        );
    }

    #[test]
    fn every_upsert_carries_exactly_the_asked_number_of_tags() {
        for tags in [0, 3, 18, 100] {
            let spec = GeneratorSpec {
                count: 300,
                ids: 50,
                tags,
                poison_every: 0,
                ..GeneratorSpec::default()
            };
            for m in messages(&spec) {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if v["type"] == "upsert" {
                    assert_eq!(v["tags"].as_object().unwrap().len(), tags, "{v}");
                }
            }
        }
    }

    #[test]
    fn no_two_different_commands_for_one_document_share_a_version() {
        let spec = GeneratorSpec {
            count: 10_000,
            ids: 200,
            poison_every: 0,
            ..GeneratorSpec::default()
        };
        let mut seen: HashMap<(String, u64), Vec<u8>> = HashMap::new();
        let mut stale = 0;
        let mut newest: HashMap<String, u64> = HashMap::new();
        for m in messages(&spec) {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let id = v["id"].as_str().unwrap().to_owned();
            let version = v["version"].as_u64().unwrap();
            if let Some(previous) = seen.insert((id.clone(), version), m.payload.clone()) {
                assert_eq!(
                    previous, m.payload,
                    "version {version} of {id} reused by a different command"
                );
            }
            let top = newest.entry(id).or_insert(0);
            if version < *top {
                stale += 1;
            }
            *top = (*top).max(version);
        }
        assert!(
            stale > 100,
            "the stream has out-of-order commands ({stale})"
        );
    }
}
