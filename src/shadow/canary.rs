//! The read canary (`--serve-from new --share S`): a share of the reads is answered by the new
//! cluster, translated there and shaped back here, so the application sees its legacy document
//! shape: each hit's `tags` array becomes the `actions.tags` object it was made from.

use serde_json::{Map, Value};

use crate::transform::key_to_value;

/// Rewrites the hits of a search or `_msearch` answer from the new document shape to the legacy
/// one, in place. An entry whose `keyToValue` cannot be decoded keeps its `value` under the
/// undecodable string as key, so nothing is dropped silently.
pub fn to_legacy_shape(answer: &mut Value) {
    match answer.get_mut("responses").and_then(Value::as_array_mut) {
        Some(responses) => responses.iter_mut().for_each(hits_to_legacy),
        None => hits_to_legacy(answer),
    }
}

fn hits_to_legacy(answer: &mut Value) {
    let Some(hits) = answer
        .pointer_mut("/hits/hits")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for hit in hits {
        let Some(source) = hit.get_mut("_source").and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(tags) = source.remove("tags") else {
            continue;
        };
        let mut legacy = Map::new();
        for entry in tags.as_array().into_iter().flatten() {
            let Some(encoded) = entry["keyToValue"].as_str() else {
                continue;
            };
            let (key, value) = match key_to_value::decode(encoded) {
                Some((key, value)) => (key, value),
                None => (
                    encoded.to_owned(),
                    entry["value"].as_str().unwrap_or_default().to_owned(),
                ),
            };
            legacy.insert(key, Value::String(value));
        }
        let mut actions = Map::new();
        actions.insert("tags".into(), Value::Object(legacy));
        source.insert("actions".into(), Value::Object(actions));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_hits_come_back_in_the_legacy_shape() {
        let mut answer = json!({"hits": {"hits": [
            {"_id": "1", "_source": {"tags": [
                {"keyToValue": "name:dor", "value": "dor"},
                {"keyToValue": "k8s\\:ns:a:b", "value": "a:b"}
            ], "title": "t"}},
            {"_id": "2"}
        ]}});
        to_legacy_shape(&mut answer);
        assert_eq!(
            answer["hits"]["hits"][0]["_source"],
            json!({"actions": {"tags": {"name": "dor", "k8s:ns": "a:b"}}, "title": "t"})
        );
        assert_eq!(answer["hits"]["hits"][1], json!({"_id": "2"}));
        let mut many = json!({"responses": [{"hits": {"hits": [{"_source": {"tags": []}}]}}]});
        to_legacy_shape(&mut many);
        assert_eq!(
            many["responses"][0]["hits"]["hits"][0]["_source"],
            json!({"actions": {"tags": {}}})
        );
    }
}
