//! Query parity: the same user query in its legacy form against the legacy cluster and in its
//! translated form against the new one, compared by the ids they hit.
//!
//! The two query kinds the product offers, in their legacy form; [`crate::translate`] (the same
//! translator `translate` and `shadow` use, rules in docs/translate.md) makes the new form:
//!
//! | kind | legacy (analysed `text`) | new |
//! |---|---|---|
//! | by value | `query_string` over `actions.tags.*` | the same `query_string` over `tags.value.text` |
//! | by key and value | `match` on `actions.tags.<key>` | `term` on `tags.keyToValue` = `key_to_value::encode(key, value)` (and its ASCII lower case) |
//!
//! By value, the `tags.value.text` multi-field is analysed exactly like the legacy fields, and one
//! field holding every value answers "any term in any tag" just as `actions.tags.*` does: the hit
//! sets are equal. By key and value, the new schema matches the exact value (a keyword), where the
//! legacy `match` hit any document whose value for that key shares a word with the query, in any
//! case. That difference is the schema's purpose, not a bug: the translator marks it as narrowing,
//! and the check classifies it as `analysis` when the new hits are a subset of the legacy hits.

use std::collections::BTreeSet;

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::es;
use crate::translate::{self, Refusal, Translation};

/// One user query: by value, or by key and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserQuery {
    /// The tag key, for a search by key and value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value searched for.
    pub value: String,
}

impl UserQuery {
    /// `value` or `key_value`.
    pub fn kind(&self) -> &'static str {
        if self.key.is_some() {
            "key_value"
        } else {
            "value"
        }
    }
}

/// Escapes `query_string` syntax so that the text is searched as text.
pub fn escape_query_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            // `<` and `>` cannot be escaped in query_string; they are not word characters, so
            // the analyser would drop them anyway.
            '<' | '>' => out.push(' '),
            '+' | '-' | '=' | '&' | '|' | '!' | '(' | ')' | '{' | '}' | '[' | ']' | '^' | '"'
            | '~' | '*' | '?' | ':' | '\\' | '/' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The query as the legacy service sends it.
pub fn legacy_query(q: &UserQuery) -> Value {
    match &q.key {
        None => {
            json!({"query_string": {"fields": ["actions.tags.*"], "query": escape_query_string(&q.value)}})
        }
        Some(key) => json!({"match": {format!("actions.tags.{key}"): {"query": q.value}}}),
    }
}

/// The legacy query translated for the new schema by [`crate::translate`].
pub fn new_query(q: &UserQuery) -> Result<Translation, Refusal> {
    translate::query(&legacy_query(q))
}

/// The ids a query hits (at most `max`), and whether there were more.
pub async fn hit_ids(
    client: &Elasticsearch,
    index: &str,
    query: &Value,
    max: usize,
) -> anyhow::Result<(BTreeSet<String>, bool)> {
    // Sorted by index order, not `_id`: Elasticsearch 8 refuses an `_id` sort.
    let body = json!({"query": query, "size": max, "_source": false, "track_total_hits": true, "sort": ["_doc"]});
    let reply = es::request_ok(
        client,
        Method::Post,
        &format!("/{index}/_search"),
        Some(&body),
        &format!("searching `{index}`"),
    )
    .await?;
    let ids: BTreeSet<String> = reply["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["_id"].as_str().map(str::to_owned))
        .collect();
    let total = es::cluster::total_hits(&reply).unwrap_or(ids.len() as u64);
    Ok((ids, total > max as u64))
}

/// How one query's results compare.
#[derive(Debug, Clone, Serialize)]
pub struct QueryOutcome {
    /// The query.
    #[serde(flatten)]
    pub query: UserQuery,
    /// `value` or `key_value`.
    pub kind: &'static str,
    /// Hits on each side.
    pub legacy_hits: usize,
    /// Hits on each side.
    pub new_hits: usize,
    /// `equal`, `analysis` (the hits differ only in the direction the translation approximates:
    /// by key and value, a subset, because the legacy field's analysis matched more),
    /// `different`, or `unsettled` (they differed, and could not be run again once both
    /// indexers had caught up with them).
    pub class: &'static str,
    /// Some ids only the legacy query hit.
    pub only_legacy: Vec<String>,
    /// Some ids only the new query hit.
    pub only_new: Vec<String>,
    /// Whether either side had more hits than were compared.
    pub truncated: bool,
    /// Why it is `unsettled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Classifies two hit sets.
pub fn compare(
    query: UserQuery,
    legacy: &BTreeSet<String>,
    new: &BTreeSet<String>,
    truncated: bool,
    examples: usize,
) -> QueryOutcome {
    let only_legacy: Vec<String> = legacy.difference(new).cloned().collect();
    let only_new: Vec<String> = new.difference(legacy).cloned().collect();
    let fidelity = new_query(&query).map_or(translate::Fidelity::Exact, |t| t.fidelity);
    let class = if only_legacy.is_empty() && only_new.is_empty() {
        "equal"
    } else if fidelity.explains(!only_legacy.is_empty(), !only_new.is_empty()) {
        "analysis"
    } else {
        "different"
    };
    QueryOutcome {
        kind: query.kind(),
        query,
        legacy_hits: legacy.len(),
        new_hits: new.len(),
        class,
        only_legacy: only_legacy.into_iter().take(examples).collect(),
        only_new: only_new.into_iter().take(examples).collect(),
        truncated,
        reason: None,
    }
}

/// Builds a corpus from sampled legacy tags: for each `(key, value)`, a search by value, a search
/// by key and value, the value in lower case, and its first word when it has several. Empty
/// values are skipped. The result is sorted and without duplicates.
pub fn corpus_from_tags(tags: &[(String, String)]) -> Vec<UserQuery> {
    let mut out = BTreeSet::new();
    for (key, value) in tags {
        if value.trim().is_empty() {
            continue;
        }
        out.insert(UserQuery {
            key: None,
            value: value.clone(),
        });
        out.insert(UserQuery {
            key: Some(key.clone()),
            value: value.clone(),
        });
        out.insert(UserQuery {
            key: None,
            value: value.to_lowercase(),
        });
        if let Some(first) = value.split_whitespace().next().filter(|w| *w != value) {
            out.insert(UserQuery {
                key: None,
                value: first.to_owned(),
            });
            out.insert(UserQuery {
                key: Some(key.clone()),
                value: first.to_owned(),
            });
        }
    }
    out.into_iter().collect()
}

/// Reads a corpus file: one JSON object per line, `{"value": …}` or `{"key": …, "value": …}`.
pub fn read_corpus(path: &std::path::Path) -> anyhow::Result<Vec<UserQuery>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the query corpus {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!(
                    "{} line {}: {e} (each line is {{\"value\": …}} or {{\"key\": …, \"value\": …}})",
                    path.display(),
                    n + 1
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn query_string_syntax_is_escaped() {
        assert_eq!(escape_query_string("CPU: high"), "CPU\\: high");
        assert_eq!(escape_query_string("a/b (c)"), "a\\/b \\(c\\)");
        assert_eq!(escape_query_string("<x>"), " x ");
    }

    #[test]
    fn translations_use_the_indexers_encoding() {
        let q = UserQuery {
            key: Some("k8s:ns".into()),
            value: "prod".into(),
        };
        assert_eq!(
            new_query(&q).unwrap().body,
            json!({"term": {"tags.keyToValue": "k8s\\:ns:prod"}})
        );
        assert_eq!(
            legacy_query(&q),
            json!({"match": {"actions.tags.k8s:ns": {"query": "prod"}}})
        );
    }

    #[test]
    fn outcomes_are_classified() {
        let v = UserQuery {
            key: None,
            value: "x".into(),
        };
        let kv = UserQuery {
            key: Some("k".into()),
            value: "x".into(),
        };
        assert_eq!(
            compare(v.clone(), &ids(&["1"]), &ids(&["1"]), false, 5).class,
            "equal"
        );
        assert_eq!(
            compare(kv.clone(), &ids(&["1", "2"]), &ids(&["1"]), false, 5).class,
            "analysis"
        );
        assert_eq!(
            compare(v, &ids(&["1", "2"]), &ids(&["1"]), false, 5).class,
            "different"
        );
        let o = compare(kv, &ids(&["1"]), &ids(&["1", "3"]), false, 5);
        assert_eq!(
            (o.class, o.only_new.clone()),
            ("different", vec!["3".to_owned()])
        );
    }

    #[test]
    fn a_sampled_corpus_exercises_case_and_words() {
        let corpus = corpus_from_tags(&[
            ("name".into(), "John Smith".into()),
            ("e".into(), "".into()),
        ]);
        let values: Vec<(Option<&str>, &str)> = corpus
            .iter()
            .map(|q| (q.key.as_deref(), q.value.as_str()))
            .collect();
        assert_eq!(
            values,
            vec![
                (None, "John"),
                (None, "John Smith"),
                (None, "john smith"),
                (Some("name"), "John"),
                (Some("name"), "John Smith"),
            ]
        );
    }
}
