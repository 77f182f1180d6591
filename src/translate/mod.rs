//! The query translator: a search written against the legacy mapping (one analysed `text` field per
//! tag key, `actions.tags.<key>`) becomes the same search against the new schema (`tags.keyToValue`,
//! a keyword holding `key_to_value::encode(key, value)`, and `tags.value` with its analysed
//! `tags.value.text` multi-field). `tags` is a plain object array, not `nested`: a condition on one
//! tag entry can only be expressed through the single string `keyToValue`, which is why per-key
//! conditions become exact-value conditions.
//!
//! Pure: JSON in, JSON out. `translate`, `verify`'s query parity and `shadow` all call it, and its
//! rules are the table in docs/translate.md. Each translation is
//! - exact: the same documents match;
//! - approximate in a known direction ([`Fidelity::Narrower`]: the new query matches a subset, as a
//!   per-key `match` becomes an exact-value term; [`Fidelity::Wider`]: a superset, which is what a
//!   narrowed clause becomes under `must_not`). Both are `verify`'s `analysis` class;
//! - or refused with the construct (a JSON pointer into the input) and the reason.

mod fields;
mod query;
pub mod words;

use serde::Serialize;
use serde_json::{Map, Value};

/// How the translated search's hits relate to the legacy search's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fidelity {
    /// The same documents.
    Exact,
    /// A subset of the legacy hits (exact values where the legacy field was analysed).
    Narrower,
    /// A superset of the legacy hits (a narrowed clause under an odd number of `must_not`).
    Wider,
}

impl Fidelity {
    /// `exact`, or `analysis` (the class `verify` reports) for either approximation.
    pub fn class(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Narrower | Self::Wider => "analysis",
        }
    }

    /// Whether hits found only by the legacy search (`legacy_only`) and only by the new one
    /// (`new_only`) are what this approximation allows.
    pub fn explains(self, legacy_only: bool, new_only: bool) -> bool {
        match self {
            Self::Exact => !legacy_only && !new_only,
            Self::Narrower => !new_only,
            Self::Wider => !legacy_only,
        }
    }

    /// The other direction: what a clause's approximation becomes under `must_not`.
    fn negated(self) -> Self {
        match self {
            Self::Exact => Self::Exact,
            Self::Narrower => Self::Wider,
            Self::Wider => Self::Narrower,
        }
    }
}

/// A translated search body (or query clause).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Translation {
    /// The new-schema JSON.
    pub body: Value,
    /// How its hits relate to the legacy ones.
    pub fidelity: Fidelity,
    /// What an approximation or a rewrite changes, one sentence each.
    pub notes: Vec<String>,
}

/// Why a search cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot translate {construct}: {reason}")]
pub struct Refusal {
    /// Where in the input: a JSON pointer such as `/query/bool/must/0/term`.
    pub construct: String,
    /// Why, and what to do instead when there is something.
    pub reason: String,
}

/// A refusal of the construct at `at`.
pub fn refuse<T>(at: &str, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        construct: if at.is_empty() { "/".into() } else { at.into() },
        reason: reason.into(),
    })
}

/// The state of one translation: the fidelity so far, whether the walk is under `must_not`, notes.
#[derive(Debug)]
pub(crate) struct Walk {
    fidelity: Fidelity,
    negated: bool,
    notes: Vec<String>,
}

impl Walk {
    fn new() -> Self {
        Self {
            fidelity: Fidelity::Exact,
            negated: false,
            notes: Vec::new(),
        }
    }

    /// A clause at `at` matches a subset of what its legacy form matched.
    pub(crate) fn narrowed(&mut self, at: &str, note: String) -> Result<(), Refusal> {
        let here = if self.negated {
            Fidelity::Narrower.negated()
        } else {
            Fidelity::Narrower
        };
        self.fidelity = match (self.fidelity, here) {
            (Fidelity::Exact, f) => f,
            (a, b) if a == b => a,
            _ => return refuse(
                at,
                "approximations in opposite directions (an exact-value clause narrows the hits, \
                     the same under `must_not` widens them), so the new answer could differ either \
                     way; split the search or make the per-key clauses exact-value on both sides",
            ),
        };
        self.note(note);
        Ok(())
    }

    pub(crate) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Runs `f` with the polarity flipped (inside `must_not`).
    pub(crate) fn negate<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.negated = !self.negated;
        let out = f(self);
        self.negated = !self.negated;
        out
    }

    fn finish(self, body: Value) -> Translation {
        Translation {
            body,
            fidelity: self.fidelity,
            notes: self.notes,
        }
    }
}

/// Whether any member name or string in `value` names a legacy tag field.
pub fn names_a_tag(value: &Value) -> bool {
    fields::mentions_tags(value)
}

/// Translates one query clause (`{"term": …}`, `{"bool": …}`, …).
pub fn query(clause: &Value) -> Result<Translation, Refusal> {
    let mut walk = Walk::new();
    let body = query::clause(clause, "", &mut walk)?;
    Ok(walk.finish(body))
}

/// Translates a `_search` or `_count` request body. `null` (no body) is a match-all search.
pub fn search_body(body: &Value) -> Result<Translation, Refusal> {
    let mut walk = Walk::new();
    let object = match body {
        Value::Null => return Ok(walk.finish(Value::Null)),
        Value::Object(o) => o,
        _ => return refuse("", "a search body is a JSON object"),
    };
    let mut out = Map::new();
    for (key, value) in object {
        let at = format!("/{key}");
        let translated = match key.as_str() {
            "query" | "post_filter" => query::clause(value, &at, &mut walk)?,
            "aggs" | "aggregations" => aggregations(value, &at, &mut walk)?,
            "_source" => source(value, &at, &mut walk)?,
            "sort" if fields::mentions_tags(value) => {
                return refuse(
                    &at,
                    "sorting on a tag: the legacy tag fields are analysed text (Elasticsearch \
                     refuses to sort on them without fielddata), and the new schema keeps no \
                     per-key value to sort by",
                )
            }
            _ if fields::mentions_tags(value) => {
                return refuse(
                    &at,
                    format!("`{key}` is not translated, and it names a tag field"),
                )
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), translated);
    }
    Ok(walk.finish(Value::Object(out)))
}

/// `_source` filtering: the new document keeps every tag in one `tags` array, so a tag pattern
/// becomes `tags`. Hits are unaffected; only the returned documents' shape differs.
fn source(value: &Value, at: &str, walk: &mut Walk) -> Result<Value, Refusal> {
    let patterns = |list: &Value, excluding: bool| -> Result<Value, Refusal> {
        let items: Vec<&Value> = match list {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut out: Vec<Value> = Vec::new();
        for item in items {
            let Some(pattern) = item.as_str() else {
                return refuse(at, "`_source` patterns are strings");
            };
            let mapped = if fields::touches_tags(pattern) {
                if excluding && !fields::covers_all_tags(pattern) {
                    return refuse(
                        at,
                        format!(
                            "`_source` excludes `{pattern}`: the new schema keeps every tag in one \
                             `tags` array and cannot leave out one key"
                        ),
                    );
                }
                "tags"
            } else {
                pattern
            };
            if !out.iter().any(|v| v == mapped) {
                out.push(Value::String(mapped.to_owned()));
            }
        }
        Ok(Value::Array(out))
    };
    match value {
        Value::Bool(_) => Ok(value.clone()),
        Value::String(_) | Value::Array(_) => patterns(value, false),
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                let excluding = k == "excludes" || k == "exclude";
                let mapped = patterns(v, excluding)?;
                out.insert(k.clone(), mapped);
            }
            if fields::mentions_tags(value) {
                walk.note(
                    "`_source` returns every tag as the `tags` array of the new schema".into(),
                );
            }
            Ok(Value::Object(out))
        }
        _ => refuse(at, "`_source` is a boolean, a pattern, a list or an object"),
    }
}

/// `aggs`: a `filter` or `filters` aggregation translates its queries; an aggregation over a tag
/// field's values has no translation (the legacy fields are text without fielddata, and the new
/// schema keeps no per-key value); anything else is copied.
fn aggregations(value: &Value, at: &str, walk: &mut Walk) -> Result<Value, Refusal> {
    let Some(named) = value.as_object() else {
        return refuse(at, "`aggs` is an object of named aggregations");
    };
    let mut out = Map::new();
    for (name, definition) in named {
        let at = format!("{at}/{name}");
        let Some(parts) = definition.as_object() else {
            return refuse(&at, "an aggregation is an object");
        };
        let mut translated = Map::new();
        for (kind, body) in parts {
            let at = format!("{at}/{kind}");
            let part = match kind.as_str() {
                "aggs" | "aggregations" => aggregations(body, &at, walk)?,
                "filter" => query::clause(body, &at, walk)?,
                "filters" => filters(body, &at, walk)?,
                "meta" => body.clone(),
                _ if fields::mentions_tags(body) => {
                    return refuse(
                        &at,
                        format!(
                            "a `{kind}` aggregation over a tag field: the legacy tag fields are \
                             analysed text without fielddata, and the new schema keeps no per-key \
                             value; a `filter` or `filters` aggregation per value translates"
                        ),
                    )
                }
                _ => body.clone(),
            };
            translated.insert(kind.clone(), part);
        }
        out.insert(name.clone(), Value::Object(translated));
    }
    Ok(Value::Object(out))
}

fn filters(body: &Value, at: &str, walk: &mut Walk) -> Result<Value, Refusal> {
    let Some(parts) = body.as_object() else {
        return refuse(at, "`filters` takes an object");
    };
    let mut out = Map::new();
    for (key, value) in parts {
        let at = format!("{at}/{key}");
        let translated = match (key.as_str(), value) {
            ("filters", Value::Array(list)) => Value::Array(
                list.iter()
                    .enumerate()
                    .map(|(i, q)| query::clause(q, &format!("{at}/{i}"), walk))
                    .collect::<Result<_, _>>()?,
            ),
            ("filters", Value::Object(named)) => {
                let mut each = Map::new();
                for (name, q) in named {
                    each.insert(
                        name.clone(),
                        query::clause(q, &format!("{at}/{name}"), walk)?,
                    );
                }
                Value::Object(each)
            }
            ("filters", _) => return refuse(&at, "`filters` is a list or an object of queries"),
            _ => value.clone(),
        };
        out.insert(key.clone(), translated);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests;
