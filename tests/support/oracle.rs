//! The oracle: the documents a replay must leave, computed from the commands without the
//! indexer's code (it parses commands with `serde_json::Value` and has its own `key:value`
//! escaping), and the check of an index against them. The tests and the benchmarks
//! (`examples/`) share it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use dual_indexer::source::topics::Record;

/// How the expected end state is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// The newest offset per document wins.
    Offset,
    /// The highest `version` field per document wins.
    Field,
}

/// The test's own `key:value` escaping (independent of the indexer's).
pub fn expected_key_to_value(key: &str, value: &str) -> String {
    format!("{}:{value}", key.replace('\\', "\\\\").replace(':', "\\:"))
}

fn tag_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The expected `_source` of an upsert command.
pub fn expected_document(command: &Value) -> Value {
    let mut tags: Vec<(String, String)> = command["tags"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), tag_text(v))).collect())
        .unwrap_or_default();
    tags.sort();
    let mut doc = json!({
        "tags": tags.iter().map(|(k, v)| json!({"keyToValue": expected_key_to_value(k, v), "value": v})).collect::<Vec<_>>()
    });
    if let Some(fields) = command["fields"].as_object() {
        for (k, v) in fields {
            doc[k] = v.clone();
        }
    }
    doc
}

/// The expected documents after replaying `records` (in partition/offset order), skipping
/// the payloads in `poison`.
pub fn oracle(
    records: &[Record],
    poison: &HashSet<Vec<u8>>,
    versions: Versions,
) -> BTreeMap<String, Value> {
    let mut newest: HashMap<String, (u64, Option<Value>)> = HashMap::new();
    for r in records {
        if poison.contains(&r.payload) {
            continue;
        }
        let command: Value =
            serde_json::from_slice(&r.payload).expect("non-poison payloads are JSON");
        let id = command["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8(r.key.clone().unwrap()).unwrap());
        let version = match versions {
            Versions::Offset => r.offset as u64,
            Versions::Field => command["version"].as_u64().unwrap(),
        };
        let state = match command["type"].as_str() {
            Some("upsert") => Some(expected_document(&command)),
            Some("delete") => None,
            other => panic!("unexpected command type {other:?}"),
        };
        match newest.get(&id) {
            Some((v, _)) if *v >= version => {}
            _ => {
                newest.insert(id, (version, state));
            }
        }
    }
    newest
        .into_iter()
        .filter_map(|(id, (_, doc))| doc.map(|d| (id, d)))
        .collect()
}

/// A document as stored: its version and the raw text of its `_source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub version: u64,
    pub source: String,
}

/// Every document of `index`, read with a scroll (sorting by `_id` is not allowed on ES 8).
pub async fn dump_index(es_url: &str, index: &str) -> BTreeMap<String, Stored> {
    let client = dual_indexer::es::client(es_url, Duration::from_secs(60)).unwrap();
    dual_indexer::es::refresh(&client, index).await.unwrap();
    let mut out = BTreeMap::new();
    let (status, mut page) = dual_indexer::es::request(
        &client,
        elasticsearch::http::Method::Post,
        &format!("/{index}/_search?scroll=1m"),
        Some(&json!({"size": 1000, "version": true, "query": {"match_all": {}}})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "search {index}: {page}");
    loop {
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        for hit in hits {
            let id = hit["_id"].as_str().unwrap().to_owned();
            let stored = Stored {
                version: hit["_version"].as_u64().unwrap_or(0),
                source: hit["_source"].to_string(),
            };
            out.insert(id, stored);
        }
        let scroll_id = page["_scroll_id"].as_str().unwrap().to_owned();
        let (status, next) = dual_indexer::es::request(
            &client,
            elasticsearch::http::Method::Post,
            "/_search/scroll",
            Some(&json!({"scroll": "1m", "scroll_id": scroll_id})),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "scroll: {next}");
        page = next;
    }
    out
}

/// Asserts that `index` holds exactly the oracle's documents, and says which differ if not.
pub async fn assert_index_equals(es_url: &str, index: &str, expected: &BTreeMap<String, Value>) {
    let stored = dump_index(es_url, index).await;
    let missing: Vec<&String> = expected
        .keys()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    let extra: Vec<&String> = stored
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    let differing: Vec<(&String, String, &Value)> = expected
        .iter()
        .filter_map(|(id, doc)| {
            let s = stored.get(id)?;
            let actual: Value = serde_json::from_str(&s.source).unwrap();
            (actual != *doc).then(|| (id, s.source.clone(), doc))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "index {index} differs from the oracle: {} expected, {} stored; missing {:?}; extra {:?}; first differing: {:?}",
        expected.len(),
        stored.len(),
        &missing[..missing.len().min(5)],
        &extra[..extra.len().min(5)],
        differing.first()
    );
}

/// The oracle's documents for a set of upsert commands.
pub fn expected(commands: &[Value]) -> BTreeMap<String, Value> {
    commands
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), expected_document(c)))
        .collect()
}
