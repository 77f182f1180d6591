//! Which legacy field a name (or pattern) denotes: one tag key, every tag, some tags, or a field
//! both schemas share (`title`, `status`, …, copied unchanged).

/// The legacy object holding one field per tag key.
const TAGS: &str = "actions.tags";

/// What a field name in a legacy query stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// `actions.tags.<key>`: one key's analysed value.
    Key(&'a str),
    /// Every tag field (`actions.tags.*`, `actions.*`, the `actions.tags` object).
    AllTags,
    /// A pattern that reaches some tag fields but not exactly all of them (`actions.tags.n*`, `*`).
    SomeTags,
    /// A field the two schemas share.
    Shared,
}

/// Classifies a field name or pattern.
pub fn classify(name: &str) -> Field<'_> {
    if covers_all_tags(name) {
        Field::AllTags
    } else if name.contains('*') {
        if touches_tags(name) {
            Field::SomeTags
        } else {
            Field::Shared
        }
    } else if let Some(key) = name.strip_prefix("actions.tags.") {
        Field::Key(key)
    } else if touches_tags(name) {
        Field::SomeTags
    } else {
        Field::Shared
    }
}

/// Whether a pattern names exactly the tag fields (the legacy `actions` object holds nothing else).
pub fn covers_all_tags(pattern: &str) -> bool {
    matches!(
        pattern,
        "actions.tags.*" | "actions.tags*" | "actions.*" | "actions*" | "actions" | "actions.tags"
    )
}

/// Whether a field name or pattern may reach a tag field. Conservative: a pattern whose literal
/// start could still lead to `actions.tags.` counts (so `*` does).
pub fn touches_tags(pattern: &str) -> bool {
    let literal = pattern.split('*').next().unwrap_or_default();
    let prefix = format!("{TAGS}.");
    if pattern.contains('*') {
        prefix.starts_with(literal) || literal.starts_with(&prefix)
    } else {
        pattern == "actions" || pattern == TAGS || pattern.starts_with(&prefix)
    }
}

/// Whether any member name or string anywhere in `value` names a tag field: the test for copying
/// a construct the translator does not know unchanged.
pub fn mentions_tags(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    let names = |s: &str| s.contains(TAGS) || s == "actions" || s.starts_with("actions.");
    match value {
        Value::String(s) => names(s),
        Value::Array(items) => items.iter().any(mentions_tags),
        Value::Object(o) => o.iter().any(|(k, v)| names(k) || mentions_tags(v)),
        _ => false,
    }
}

/// Splits a `query_string` field's boost: `actions.tags.*^2` → (`actions.tags.*`, `^2`).
pub fn split_boost(field: &str) -> (&str, &str) {
    match field.find('^') {
        Some(i) => field.split_at(i),
        None => (field, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_keys_all_tags_some_tags_or_shared() {
        assert_eq!(classify("actions.tags.name"), Field::Key("name"));
        assert_eq!(classify("actions.tags.k8s:ns"), Field::Key("k8s:ns"));
        assert_eq!(
            classify("actions.tags.app.kubernetes.io/name"),
            Field::Key("app.kubernetes.io/name")
        );
        assert_eq!(classify("actions.tags.*"), Field::AllTags);
        assert_eq!(classify("actions"), Field::AllTags);
        assert_eq!(classify("actions.tags.na*"), Field::SomeTags);
        assert_eq!(classify("*"), Field::SomeTags);
        assert_eq!(classify("act*"), Field::SomeTags);
        assert_eq!(classify("title"), Field::Shared);
        assert_eq!(classify("sev*"), Field::Shared);
    }

    #[test]
    fn a_tag_field_anywhere_is_found() {
        assert!(mentions_tags(
            &serde_json::json!({"a": [{"field": "actions.tags.x"}]})
        ));
        assert!(!mentions_tags(
            &serde_json::json!({"field": "status", "order": "desc"})
        ));
    }
}
