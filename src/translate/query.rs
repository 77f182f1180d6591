//! Query clauses. Compound clauses (`bool`, `constant_score`, `nested`) walk into their parts;
//! leaf clauses on a tag field follow the rules of docs/translate.md; clauses on the fields both
//! schemas share are copied unchanged.
//!
//! Per-key conditions: the new `tags` array is a plain object array, so "key K has a value
//! matching V" can only be asked of the one string that holds both, `tags.keyToValue` =
//! `encode(K, value)`. That answers exact values (and exact prefixes), never words inside a value:
//! where the legacy analysed field matched words, the translation matches the exact value, which
//! is a subset of the legacy hits ([`Walk::narrowed`]).

use serde_json::{json, Map, Value};

use super::fields::{self, split_boost, Field};
use super::{refuse, words, Refusal, Walk};
use crate::transform::key_to_value::encode;

/// The keyword holding `encode(key, value)` for every tag.
const KEY_TO_VALUE: &str = "tags.keyToValue";
/// The analysed multi-field of every tag value, analysed like the legacy tag fields.
const VALUE_TEXT: &str = "tags.value.text";

/// A leaf query's parameters (`{"query": …, "operator": …}`).
type Params = Map<String, Value>;

/// Parameters of a leaf query that change only scores or names, copied to the translation.
const KEPT: &[&str] = &["boost", "_name"];

/// Translates one clause found at `at` (a JSON pointer).
pub(super) fn clause(q: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let Some((kind, inner)) = single(q) else {
        return refuse(
            at,
            "a query clause is an object with one member, named for its type",
        );
    };
    let at = pointer(at, kind);
    match kind {
        "bool" => boolean(inner, &at, w),
        "constant_score" => constant_score(inner, &at, w),
        "nested" => nested(inner, &at, w),
        "term" | "match" | "match_phrase" | "prefix" | "wildcard" => on_field(kind, inner, &at, w),
        "terms" => terms(inner, &at, w),
        "exists" => exists(inner, &at, w),
        "query_string" | "simple_query_string" => text_search(kind, inner, &at),
        _ if fields::mentions_tags(inner) => refuse(
            &at,
            format!("`{kind}` is not translated, and it names a tag field"),
        ),
        _ => Ok(q.clone()),
    }
}

/// The one member of an object.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let object = v.as_object().filter(|o| o.len() == 1)?;
    object.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// `at` extended by one JSON pointer step.
fn pointer(at: &str, step: &str) -> String {
    format!("{at}/{}", step.replace('~', "~0").replace('/', "~1"))
}

fn boolean(inner: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let Some(parts) = inner.as_object() else {
        return refuse(at, "`bool` takes an object");
    };
    let mut out = Map::new();
    for (occur, value) in parts {
        let at = pointer(at, occur);
        let translated = match occur.as_str() {
            // `minimum_should_match` keeps the translation's direction: a document matching
            // fewer `should` clauses satisfies it less often, never more.
            "must" | "filter" | "should" => clauses(value, &at, w)?,
            "must_not" => w.negate(|w| clauses(value, &at, w))?,
            _ => value.clone(),
        };
        out.insert(occur.clone(), translated);
    }
    Ok(json!({ "bool": out }))
}

/// A clause or a list of clauses, as `bool` takes them.
fn clauses(value: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    match value {
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, q)| clause(q, &pointer(at, &i.to_string()), w))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => clause(value, at, w),
    }
}

fn constant_score(inner: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let Some(parts) = inner.as_object() else {
        return refuse(at, "`constant_score` takes an object");
    };
    let mut out = Map::new();
    for (name, value) in parts {
        let translated = match name.as_str() {
            "filter" => clause(value, &pointer(at, name), w)?,
            _ => value.clone(),
        };
        out.insert(name.clone(), translated);
    }
    Ok(json!({ "constant_score": out }))
}

fn nested(inner: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let Some(parts) = inner.as_object() else {
        return refuse(at, "`nested` takes an object");
    };
    if parts
        .get("path")
        .and_then(Value::as_str)
        .is_some_and(fields::touches_tags)
    {
        return refuse(
            at,
            "`nested` on the tags: the legacy tags are an object of text fields, not nested, and \
             the new `tags` is not nested either; query the tag fields without `nested`",
        );
    }
    let mut out = Map::new();
    for (name, value) in parts {
        let translated = match name.as_str() {
            "query" => clause(value, &pointer(at, name), w)?,
            _ => value.clone(),
        };
        out.insert(name.clone(), translated);
    }
    Ok(json!({ "nested": out }))
}

/// `term`, `match`, `match_phrase`, `prefix`, `wildcard`: `{kind: {field: spec}}`.
fn on_field(kind: &str, inner: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let Some((field, spec)) = single(inner) else {
        return refuse(at, format!("`{kind}` names one field"));
    };
    match fields::classify(field) {
        Field::Shared => Ok(json!({ kind: inner })),
        Field::Key(key) => per_key(kind, key, spec, &pointer(at, field), w),
        Field::AllTags | Field::SomeTags => refuse(
            at,
            format!(
                "`{kind}` on the pattern `{field}`: only `exists`, `query_string` and \
                 `simple_query_string` take a pattern of tag fields"
            ),
        ),
    }
}

/// A leaf query on the analysed field `actions.tags.<key>`.
fn per_key(kind: &str, key: &str, spec: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let field = format!("actions.tags.{key}");
    match kind {
        "term" => {
            let (value, params) = leaf_spec(kind, spec, &["value"], &["case_insensitive"], at)?;
            if !words::is_one_indexed_word(&value) {
                return refuse(
                    at,
                    format!(
                        "`term` `{value}` on the analysed text field `{field}` matches one word as \
                         the analyser indexed it (lower case, no punctuation); `{value}` is not \
                         such a word, so what the legacy search finds depends on the analyser. \
                         Use `match`, which translates"
                    ),
                );
            }
            w.narrowed(at, exact_value_note(kind, &field))?;
            Ok(exact_values(vec![encode(key, &value)], kept(params)))
        }
        "match" | "match_phrase" => {
            let allowed: &[&str] = if kind == "match" {
                &[
                    "operator",
                    "minimum_should_match",
                    "fuzziness",
                    "prefix_length",
                    "max_expansions",
                    "fuzzy_transpositions",
                    "fuzzy_rewrite",
                    "lenient",
                    "auto_generate_synonyms_phrase_query",
                    "zero_terms_query",
                ]
            } else {
                &["slop", "zero_terms_query"]
            };
            let (text, params) = leaf_spec(kind, spec, &["query"], allowed, at)?;
            analysed_text(kind, key, &field, text, params, at, w)
        }
        "prefix" | "wildcard" => {
            let names: &[&str] = if kind == "wildcard" {
                &["value", "wildcard"]
            } else {
                &["value"]
            };
            let (pattern, params) =
                leaf_spec(kind, spec, names, &["case_insensitive", "rewrite"], at)?;
            let prefix = if kind == "prefix" {
                Some(pattern.as_str())
            } else {
                pattern.strip_suffix('*')
            };
            if let Some(start) = prefix.filter(|p| words::is_one_indexed_word(p)) {
                w.narrowed(at, exact_prefix_note(kind, &field))?;
                return Ok(with_value(
                    "prefix",
                    Value::String(encode(key, start)),
                    kept(params),
                ));
            }
            let inside = pattern
                .strip_prefix('*')
                .map(|rest| rest.strip_suffix('*').unwrap_or(rest));
            let encoded_key = encode(key, "");
            let key_is_literal = !encoded_key.contains(['*', '?', '\\']);
            match inside {
                Some(word) if kind == "wildcard" && key_is_literal && words::is_one_indexed_word(word) => {
                    w.narrowed(at, exact_prefix_note(kind, &field))?;
                    Ok(with_value(
                        "wildcard",
                        Value::String(format!("{encoded_key}{pattern}")),
                        kept(params),
                    ))
                }
                _ => refuse(
                    at,
                    format!(
                        "`{kind}` `{pattern}` on `{field}`: only `word*`{} with one lower-case ASCII \
                         word (letters and digits) translate: the legacy pattern is matched against \
                         each analysed word, the new one against the whole exact value",
                        if kind == "wildcard" { ", `*word` and `*word*`" } else { "" }
                    ),
                ),
            }
        }
        _ => refuse(at, format!("`{kind}` on a tag field is not translated")),
    }
}

/// `match` and `match_phrase` on one key: the exact value, or nothing when the analyser finds no
/// word in the text (then the legacy search finds nothing either).
fn analysed_text(
    kind: &str,
    key: &str,
    field: &str,
    text: String,
    params: Option<&Map<String, Value>>,
    at: &str,
    w: &mut Walk,
) -> Result<Value, Refusal> {
    let zero_terms_all = params
        .and_then(|p| p.get("zero_terms_query"))
        .and_then(Value::as_str)
        == Some("all");
    if words::has_no_words(&text) {
        w.note(format!(
            "`{kind}` `{text}` on `{field}`: the analyser finds no word in it, so the legacy search \
             matches {}",
            if zero_terms_all { "every document" } else { "nothing" }
        ));
        return Ok(if zero_terms_all {
            json!({"match_all": {}})
        } else {
            json!({"match_none": {}})
        });
    }
    if !words::has_a_word(&text) {
        return refuse(
            at,
            format!("cannot tell whether the analyser finds a word in `{text}`"),
        );
    }
    // A value equal to the text, or to its ASCII lower case, analyses to the very same words, so
    // the legacy search matched it too: both stay within the legacy hits.
    let mut values = vec![encode(key, &text)];
    let lower = text.to_ascii_lowercase();
    if lower != text {
        values.push(encode(key, &lower));
    }
    w.narrowed(at, exact_value_note(kind, field))?;
    Ok(exact_values(values, kept(params)))
}

fn exact_value_note(kind: &str, field: &str) -> String {
    format!(
        "`{kind}` on `{field}` matches the exact value in the new schema (tags.keyToValue); the \
         legacy analysed field also matched values that only share words with it"
    )
}

fn exact_prefix_note(kind: &str, field: &str) -> String {
    format!(
        "`{kind}` on `{field}` is applied to the whole exact value in the new schema; the legacy \
         one to each analysed word"
    )
}

/// The value of a leaf query (`"v"` or `{"value": "v", …}`) and its parameters, refusing any
/// parameter outside `allowed` and [`KEPT`].
fn leaf_spec<'a>(
    kind: &str,
    spec: &'a Value,
    value_names: &[&str],
    allowed: &[&str],
    at: &str,
) -> Result<(String, Option<&'a Params>), Refusal> {
    let Value::Object(params) = spec else {
        return Ok((scalar_text(spec, at)?, None));
    };
    let Some(value) = value_names.iter().find_map(|n| params.get(*n)) else {
        return refuse(at, format!("`{kind}` needs `{}`", value_names[0]));
    };
    for (name, setting) in params {
        let name = name.as_str();
        if name == "case_insensitive" && setting == &Value::Bool(true) {
            return refuse(
                at,
                "`case_insensitive` on a tag field: the new keyword would fold the key's case too",
            );
        }
        if name == "analyzer" {
            return refuse(
                at,
                "a search `analyzer` on a tag field: the translation relies on the text being \
                 analysed as it was indexed",
            );
        }
        if !(value_names.contains(&name) || allowed.contains(&name) || KEPT.contains(&name)) {
            return refuse(
                at,
                format!("`{name}` of `{kind}` on a tag field is not translated"),
            );
        }
    }
    Ok((scalar_text(value, at)?, Some(params)))
}

/// A tag value as text: the command decoder indexes numbers and booleans as their JSON text.
fn scalar_text(value: &Value, at: &str) -> Result<String, Refusal> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        _ => refuse(at, "the value is a string, a number or a boolean"),
    }
}

fn kept(params: Option<&Map<String, Value>>) -> Map<String, Value> {
    params
        .into_iter()
        .flatten()
        .filter(|(k, _)| KEPT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `{kind: {"tags.keyToValue": value}}`, in the long form when parameters are kept.
fn with_value(kind: &str, value: Value, mut params: Map<String, Value>) -> Value {
    if params.is_empty() {
        json!({ kind: { KEY_TO_VALUE: value } })
    } else {
        params.insert("value".into(), value);
        json!({ kind: { KEY_TO_VALUE: params } })
    }
}

/// A `term` for one exact `keyToValue`, a `terms` for several.
fn exact_values(mut values: Vec<String>, mut params: Map<String, Value>) -> Value {
    values.dedup();
    if values.len() == 1 {
        let value = values.remove(0);
        return with_value("term", Value::String(value), params);
    }
    params.insert(KEY_TO_VALUE.into(), json!(values));
    json!({ "terms": params })
}

fn terms(inner: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let Some(parts) = inner.as_object() else {
        return refuse(at, "`terms` takes an object");
    };
    let mut field = None;
    let mut params = Map::new();
    for (name, value) in parts {
        if KEPT.contains(&name.as_str()) {
            params.insert(name.clone(), value.clone());
        } else if field.replace((name.as_str(), value)).is_some() {
            return refuse(at, "`terms` names one field");
        }
    }
    let Some((name, list)) = field else {
        return refuse(at, "`terms` names a field");
    };
    let key = match fields::classify(name) {
        Field::Shared => return Ok(json!({ "terms": inner })),
        Field::Key(key) => key,
        Field::AllTags | Field::SomeTags => {
            return refuse(
                at,
                format!("`terms` on the pattern `{name}` is not translated"),
            )
        }
    };
    let at = pointer(at, name);
    let Value::Array(items) = list else {
        return refuse(&at, "a terms lookup on a tag field is not translated");
    };
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        let value = scalar_text(item, &at)?;
        if !words::is_one_indexed_word(&value) {
            return refuse(
                &at,
                format!(
                    "`terms` value `{value}` on the analysed text field `{name}` is not one word as \
                     the analyser indexed it (lower case, no punctuation); use `match` per value"
                ),
            );
        }
        values.push(encode(key, &value));
    }
    if !values.is_empty() {
        w.narrowed(&at, exact_value_note("terms", name))?;
    }
    params.insert(KEY_TO_VALUE.into(), json!(values));
    Ok(json!({ "terms": params }))
}

fn exists(inner: &Value, at: &str, w: &mut Walk) -> Result<Value, Refusal> {
    let Some(field) = inner.get("field").and_then(Value::as_str) else {
        return refuse(at, "`exists` needs `field`");
    };
    let params = inner.as_object();
    match fields::classify(field) {
        Field::Shared => Ok(json!({ "exists": inner })),
        Field::AllTags => {
            let mut out = params.cloned().unwrap_or_default();
            out.insert("field".into(), json!(KEY_TO_VALUE));
            Ok(json!({ "exists": out }))
        }
        Field::Key(key) => {
            // An empty value is present on both sides: Elasticsearch counts `""` as a value of a
            // text field, and the new schema indexes it as `key:`.
            w.note(format!(
                "`exists` on `{field}` becomes a prefix query for the key's entries in tags.keyToValue"
            ));
            Ok(with_value(
                "prefix",
                Value::String(encode(key, "")),
                kept(params),
            ))
        }
        Field::SomeTags => refuse(
            at,
            format!("`exists` on `{field}`, a pattern of some tag fields, is not translated"),
        ),
    }
}

/// `query_string` and `simple_query_string`: the pattern of every tag field becomes the one
/// analysed field of every tag value, which answers "this text in any tag" exactly.
fn text_search(kind: &str, inner: &Value, at: &str) -> Result<Value, Refusal> {
    let Some(parts) = inner.as_object() else {
        return refuse(at, format!("`{kind}` takes an object"));
    };
    if parts
        .get("query")
        .and_then(Value::as_str)
        .is_some_and(|q| q.contains("actions"))
    {
        return refuse(
            at,
            "field names inside the query text (`actions.tags.<key>:…`) are not rewritten; name the \
             fields in `fields` instead",
        );
    }
    if !parts.contains_key("fields") && !parts.contains_key("default_field") {
        return refuse(
            at,
            format!(
                "`{kind}` without `fields` or `default_field` searches the index's default field \
                 (`*`: every tag field and every shared one); name the fields (`actions.tags.*` \
                 translates)"
            ),
        );
    }
    let mut out = parts.clone();
    for (name, value) in parts {
        let translated = match (name.as_str(), value) {
            ("fields", Value::Array(list)) => {
                let mut mapped = Vec::with_capacity(list.len());
                for item in list {
                    let Some(field) = item.as_str() else {
                        return refuse(at, "`fields` are strings");
                    };
                    mapped.push(Value::String(text_field(kind, field, at)?));
                }
                Value::Array(mapped)
            }
            ("default_field", Value::String(field)) => Value::String(text_field(kind, field, at)?),
            ("fields" | "default_field", _) => {
                return refuse(at, format!("`{name}` of `{kind}` has an unexpected shape"))
            }
            _ => continue,
        };
        out.insert(name.clone(), translated);
    }
    Ok(json!({ kind: out }))
}

fn text_field(kind: &str, field: &str, at: &str) -> Result<String, Refusal> {
    let (name, boost) = split_boost(field);
    match fields::classify(name) {
        Field::Shared => Ok(field.to_owned()),
        Field::AllTags => Ok(format!("{VALUE_TEXT}{boost}")),
        Field::Key(_) => refuse(
            at,
            format!(
                "`{kind}` over the one key `{name}`: the new schema has one text field for all \
                 values (tags.value.text) and keeps keys only with exact values \
                 (tags.keyToValue), so words of one key's value cannot be searched; search \
                 `actions.tags.*`, or the exact value with `match`"
            ),
        ),
        Field::SomeTags => refuse(
            at,
            format!("`{kind}` over `{name}`, a pattern of some tag fields, is not translated"),
        ),
    }
}
