//! Field-level comparison of an expected new document (a legacy document passed through the
//! legacy → new transform) with the document the new cluster holds. Pure, so unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::transform::key_to_value;

/// One field that differs: `tags.<key>` for a tag, else the field's name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDiff {
    /// The field.
    pub field: String,
    /// Its value on the legacy side, after the transform (`null`: absent).
    pub legacy: Value,
    /// Its value in the new cluster (`null`: absent).
    pub new: Value,
}

/// Which fields to leave out of the comparison: exact names, or prefixes ending in `*`
/// (`tags.*`, `updated_*`).
#[derive(Debug, Clone, Default)]
pub struct Ignore(Vec<String>);

impl Ignore {
    /// From the `--ignore-field` patterns.
    pub fn new(patterns: Vec<String>) -> Self {
        Self(patterns)
    }

    fn ignores(&self, field: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => field.starts_with(prefix),
            None => field == p,
        })
    }
}

/// The fields in which `actual` differs from `expected`, sorted by field name.
pub fn diff(expected: &Value, actual: &Value, ignore: &Ignore) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let (want, have) = (tags(expected), tags(actual));
    let keys: BTreeSet<&String> = want.keys().chain(have.keys()).collect();
    for key in keys {
        let field = format!("tags.{key}");
        if ignore.ignores(&field) {
            continue;
        }
        let (w, h) = (want.get(key), have.get(key));
        if w != h {
            out.push(FieldDiff {
                field,
                legacy: w.cloned().unwrap_or(Value::Null),
                new: h.cloned().unwrap_or(Value::Null),
            });
        }
    }
    let empty = serde_json::Map::new();
    let (e, a) = (
        expected.as_object().unwrap_or(&empty),
        actual.as_object().unwrap_or(&empty),
    );
    let names: BTreeSet<&String> = e.keys().chain(a.keys()).filter(|k| *k != "tags").collect();
    for name in names {
        if ignore.ignores(name) {
            continue;
        }
        let (w, h) = (e.get(name), a.get(name));
        if w != h {
            out.push(FieldDiff {
                field: name.clone(),
                legacy: w.cloned().unwrap_or(Value::Null),
                new: h.cloned().unwrap_or(Value::Null),
            });
        }
    }
    out.sort_by(|x, y| x.field.cmp(&y.field));
    out
}

/// A document's tags as `key → value`. An entry whose `keyToValue` does not decode, or disagrees
/// with its `value`, is kept under its raw `keyToValue` with both halves, so it shows as a diff.
fn tags(doc: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for tag in doc["tags"].as_array().into_iter().flatten() {
        let raw = tag["keyToValue"].as_str().unwrap_or_default();
        match key_to_value::decode(raw) {
            Some((key, value)) if tag["value"].as_str() == Some(value.as_str()) => {
                out.insert(key, Value::String(value));
            }
            _ => {
                out.insert(raw.to_owned(), tag.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(tags: &[(&str, &str)], fields: Value) -> Value {
        let mut d = fields;
        d["tags"] = tags
            .iter()
            .map(|(k, v)| json!({"keyToValue": key_to_value::encode(k, v), "value": v}))
            .collect();
        d
    }

    #[test]
    fn equal_documents_have_no_diffs() {
        let d = doc(&[("name", "dor"), ("a:b", "c")], json!({"title": "t"}));
        assert!(diff(&d, &d, &Ignore::default()).is_empty());
    }

    #[test]
    fn each_changed_missing_or_extra_field_is_named_with_both_values() {
        let want = doc(
            &[("name", "dor"), ("env", "prod")],
            json!({"title": "t", "status": "open"}),
        );
        let have = doc(
            &[("name", "Dor"), ("team", "x")],
            json!({"title": "t", "severity": "low"}),
        );
        assert_eq!(
            diff(&want, &have, &Ignore::default()),
            vec![
                FieldDiff {
                    field: "severity".into(),
                    legacy: Value::Null,
                    new: json!("low")
                },
                FieldDiff {
                    field: "status".into(),
                    legacy: json!("open"),
                    new: Value::Null
                },
                FieldDiff {
                    field: "tags.env".into(),
                    legacy: json!("prod"),
                    new: Value::Null
                },
                FieldDiff {
                    field: "tags.name".into(),
                    legacy: json!("dor"),
                    new: json!("Dor")
                },
                FieldDiff {
                    field: "tags.team".into(),
                    legacy: Value::Null,
                    new: json!("x")
                },
            ]
        );
    }

    #[test]
    fn a_key_to_value_that_disagrees_with_its_value_is_a_diff() {
        let want = doc(&[("name", "dor")], json!({}));
        let have = json!({"tags": [{"keyToValue": "name:dor", "value": "sever"}]});
        let diffs = diff(&want, &have, &Ignore::default());
        assert_eq!(diffs.len(), 2, "{diffs:?}");
    }

    #[test]
    fn ignored_fields_are_left_out() {
        let want = doc(&[("name", "dor")], json!({"updated_at": "1"}));
        let have = doc(&[("name", "x")], json!({"updated_at": "2"}));
        let ignore = Ignore::new(vec!["updated_at".into(), "tags.*".into()]);
        assert!(diff(&want, &have, &ignore).is_empty());
    }
}
