//! The translation rules of docs/translate.md, one test per rule.

use serde_json::{json, Value};

use super::*;

fn ok(legacy: Value) -> Translation {
    query(&legacy).unwrap_or_else(|e| panic!("{legacy} was refused: {e}"))
}

fn refused(legacy: Value) -> Refusal {
    match query(&legacy) {
        Ok(t) => panic!("{legacy} was translated to {}", t.body),
        Err(e) => e,
    }
}

#[test]
fn a_search_by_value_over_every_tag_is_exact() {
    let t = ok(
        json!({"query_string": {"fields": ["actions.tags.*^2", "title"], "query": "john AND smith"}}),
    );
    assert_eq!(
        t.body,
        json!({"query_string": {"fields": ["tags.value.text^2", "title"], "query": "john AND smith"}})
    );
    assert_eq!(t.fidelity, Fidelity::Exact);
    let t = ok(json!({"query_string": {"default_field": "actions.tags.*", "query": "dor"}}));
    assert_eq!(
        t.body,
        json!({"query_string": {"default_field": "tags.value.text", "query": "dor"}})
    );
    let t = ok(json!({"simple_query_string": {"fields": ["actions.*"], "query": "dor"}}));
    assert_eq!(
        t.body,
        json!({"simple_query_string": {"fields": ["tags.value.text"], "query": "dor"}})
    );
}

#[test]
fn text_searches_over_one_key_or_no_field_are_refused() {
    let r = refused(json!({"query_string": {"fields": ["actions.tags.name"], "query": "dor"}}));
    assert_eq!(r.construct, "/query_string");
    assert!(r.reason.contains("words of one key's value"), "{r}");
    assert!(refused(json!({"query_string": {"query": "dor"}}))
        .reason
        .contains("default field"));
    assert!(refused(
        json!({"query_string": {"fields": ["title"], "query": "actions.tags.name:dor"}})
    )
    .reason
    .contains("inside the query text"));
    assert!(
        refused(json!({"query_string": {"fields": ["*"], "query": "x"}}))
            .reason
            .contains("pattern")
    );
}

#[test]
fn a_match_on_one_key_becomes_its_exact_values_and_narrows() {
    let t = ok(json!({"match": {"actions.tags.name": "John Smith"}}));
    assert_eq!(
        t.body,
        json!({"terms": {"tags.keyToValue": ["name:John Smith", "name:john smith"]}})
    );
    assert_eq!(
        (t.fidelity, t.fidelity.class()),
        (Fidelity::Narrower, "analysis")
    );
    let t = ok(json!({"match_phrase": {"actions.tags.k8s:ns": {"query": "prod", "boost": 2}}}));
    assert_eq!(
        t.body,
        json!({"term": {"tags.keyToValue": {"value": "k8s\\:ns:prod", "boost": 2}}})
    );
    assert_eq!(
        ok(json!({"match": {"actions.tags.n": {"query": 5, "operator": "and"}}})).body,
        json!({"term": {"tags.keyToValue": "n:5"}})
    );
}

#[test]
fn text_without_words_matches_nothing_on_both_sides() {
    let t = ok(json!({"match": {"actions.tags.note": "!!! -"}}));
    assert_eq!(
        (t.body, t.fidelity),
        (json!({"match_none": {}}), Fidelity::Exact)
    );
    let t = ok(json!({"match": {"actions.tags.note": {"query": "-", "zero_terms_query": "all"}}}));
    assert_eq!(t.body, json!({"match_all": {}}));
    assert!(refused(json!({"match": {"actions.tags.note": "€"}}))
        .reason
        .contains("cannot tell"));
}

#[test]
fn match_parameters_that_change_the_words_are_refused() {
    assert!(
        refused(json!({"match": {"actions.tags.n": {"query": "x", "analyzer": "keyword"}}}))
            .reason
            .contains("analyzer")
    );
    assert!(
        refused(json!({"match": {"actions.tags.n": {"query": "x", "synonyms": true}}}))
            .reason
            .contains("`synonyms`")
    );
}

#[test]
fn a_term_must_be_one_indexed_word() {
    let t = ok(json!({"term": {"actions.tags.env": {"value": "prod", "_name": "e"}}}));
    assert_eq!(
        t.body,
        json!({"term": {"tags.keyToValue": {"value": "env:prod", "_name": "e"}}})
    );
    assert_eq!(t.fidelity, Fidelity::Narrower);
    for word in ["Prod", "eu-west-1", "john smith"] {
        let r = refused(json!({"term": {"actions.tags.env": word}}));
        assert_eq!(r.construct, "/term/actions.tags.env");
        assert!(r.reason.contains("Use `match`"), "{r}");
    }
    assert!(refused(
        json!({"term": {"actions.tags.env": {"value": "prod", "case_insensitive": true}}})
    )
    .reason
    .contains("case_insensitive"));
    let t = ok(json!({"terms": {"actions.tags.env": ["prod", "dev"], "boost": 3}}));
    assert_eq!(
        t.body,
        json!({"terms": {"tags.keyToValue": ["env:prod", "env:dev"], "boost": 3}})
    );
    assert!(refused(
        json!({"terms": {"actions.tags.env": {"index": "i", "id": "1", "path": "p"}}})
    )
    .reason
    .contains("lookup"));
}

#[test]
fn prefixes_and_wildcards_apply_to_the_exact_value() {
    assert_eq!(
        ok(json!({"prefix": {"actions.tags.host": "web"}})).body,
        json!({"prefix": {"tags.keyToValue": "host:web"}})
    );
    assert_eq!(
        ok(json!({"wildcard": {"actions.tags.host": {"value": "web*"}}})).body,
        json!({"prefix": {"tags.keyToValue": "host:web"}})
    );
    let t = ok(json!({"wildcard": {"actions.tags.host": "*prod*"}}));
    assert_eq!(
        (t.body, t.fidelity),
        (
            json!({"wildcard": {"tags.keyToValue": "host:*prod*"}}),
            Fidelity::Narrower
        )
    );
    for pattern in ["w?b*", "Web*", "a*b", "*"] {
        refused(json!({"wildcard": {"actions.tags.host": pattern}}));
    }
    refused(json!({"wildcard": {"actions.tags.a*b": "*x"}}));
}

#[test]
fn exists_on_a_key_or_on_every_tag_is_exact() {
    let t = ok(json!({"exists": {"field": "actions.tags.a:b"}}));
    assert_eq!(
        (t.body, t.fidelity),
        (
            json!({"prefix": {"tags.keyToValue": "a\\:b:"}}),
            Fidelity::Exact
        )
    );
    assert_eq!(
        ok(json!({"exists": {"field": "actions.tags.*"}})).body,
        json!({"exists": {"field": "tags.keyToValue"}})
    );
    assert_eq!(
        ok(json!({"exists": {"field": "title"}})).body,
        json!({"exists": {"field": "title"}})
    );
}

#[test]
fn compound_clauses_translate_their_parts_and_keep_the_rest() {
    let legacy = json!({"bool": {
        "must": [{"match": {"actions.tags.env": "prod"}}],
        "filter": {"constant_score": {"filter": {"term": {"status": "open"}}, "boost": 1.5}},
        "should": [{"exists": {"field": "actions.tags.team"}}, {"match": {"title": "disk"}}],
        "minimum_should_match": 1,
        "boost": 2
    }});
    let t = ok(legacy);
    assert_eq!(
        t.body,
        json!({"bool": {
            "must": [{"term": {"tags.keyToValue": "env:prod"}}],
            "filter": {"constant_score": {"filter": {"term": {"status": "open"}}, "boost": 1.5}},
            "should": [{"prefix": {"tags.keyToValue": "team:"}}, {"match": {"title": "disk"}}],
            "minimum_should_match": 1,
            "boost": 2
        }})
    );
    assert_eq!(t.fidelity, Fidelity::Narrower);
    let t = ok(
        json!({"nested": {"path": "comments", "query": {"match": {"actions.tags.env": "prod"}}}}),
    );
    assert_eq!(
        t.body["nested"]["query"],
        json!({"term": {"tags.keyToValue": "env:prod"}})
    );
    assert!(
        refused(json!({"nested": {"path": "actions.tags", "query": {"match_all": {}}}}))
            .reason
            .contains("not nested")
    );
}

#[test]
fn must_not_turns_a_narrowed_clause_wider_and_mixing_both_is_refused() {
    let t = ok(json!({"bool": {"must_not": {"match": {"actions.tags.env": "prod"}}}}));
    assert_eq!(t.fidelity, Fidelity::Wider);
    let t = ok(
        json!({"bool": {"must_not": {"bool": {"must_not": {"match": {"actions.tags.env": "prod"}}}}}}),
    );
    assert_eq!(t.fidelity, Fidelity::Narrower);
    let r = refused(json!({"bool": {
        "must": {"match": {"actions.tags.env": "prod"}},
        "must_not": {"match": {"actions.tags.team": "ops"}}
    }}));
    assert_eq!(r.construct, "/bool/must_not/match/actions.tags.team");
    assert!(r.reason.contains("opposite directions"), "{r}");
}

#[test]
fn unknown_clauses_are_copied_unless_they_name_a_tag() {
    let q = json!({"range": {"updated_at": {"gte": "now-1d"}}});
    assert_eq!(ok(q.clone()).body, q);
    let r = refused(json!({"fuzzy": {"actions.tags.name": "jon"}}));
    assert_eq!(r.construct, "/fuzzy");
    assert!(refused(json!({"range": {"actions.tags.n": {"gte": 1}}}))
        .reason
        .contains("not translated"));
    assert!(refused(json!({"match": {"actions.tags.*": "x"}}))
        .reason
        .contains("pattern"));
    assert!(refused(json!({"term": {"a": 1}, "match": {"b": 2}}))
        .reason
        .contains("one member"));
}

#[test]
fn a_search_body_translates_its_query_aggs_and_source() {
    let legacy = json!({
        "query": {"match": {"actions.tags.env": "prod"}},
        "post_filter": {"term": {"status": "open"}},
        "sort": [{"updated_at": "desc"}, "_score"],
        "from": 10, "size": 5, "track_total_hits": true,
        "_source": {"includes": ["title", "actions.tags.*"], "excludes": ["actions"]},
        "aggs": {
            "by_status": {"terms": {"field": "status"}, "aggs": {
                "prod": {"filter": {"match": {"actions.tags.env": "prod"}}}
            }},
            "teams": {"filters": {"filters": {"ops": {"term": {"actions.tags.team": "ops"}}}}}
        }
    });
    let t = search_body(&legacy).unwrap();
    assert_eq!(
        t.body,
        json!({
            "query": {"term": {"tags.keyToValue": "env:prod"}},
            "post_filter": {"term": {"status": "open"}},
            "sort": [{"updated_at": "desc"}, "_score"],
            "from": 10, "size": 5, "track_total_hits": true,
            "_source": {"includes": ["title", "tags"], "excludes": ["tags"]},
            "aggs": {
                "by_status": {"terms": {"field": "status"}, "aggs": {
                    "prod": {"filter": {"term": {"tags.keyToValue": "env:prod"}}}
                }},
                "teams": {"filters": {"filters": {"ops": {"term": {"tags.keyToValue": "team:ops"}}}}}
            }
        })
    );
    assert_eq!(t.fidelity, Fidelity::Narrower);
    assert_eq!(search_body(&Value::Null).unwrap().body, Value::Null);
}

#[test]
fn a_search_body_refuses_what_names_a_tag_without_a_rule() {
    let r = search_body(&json!({"sort": [{"actions.tags.name": "asc"}]})).unwrap_err();
    assert_eq!(r.construct, "/sort");
    assert!(r.reason.contains("fielddata"));
    let r = search_body(&json!({"aggs": {"names": {"terms": {"field": "actions.tags.name"}}}}))
        .unwrap_err();
    assert_eq!(r.construct, "/aggs/names/terms");
    let r = search_body(&json!({"_source": {"excludes": ["actions.tags.secret"]}})).unwrap_err();
    assert!(r.reason.contains("cannot leave out one key"));
    let r = search_body(&json!({"highlight": {"fields": {"actions.tags.*": {}}}})).unwrap_err();
    assert_eq!(r.construct, "/highlight");
    assert_eq!(
        r.to_string(),
        format!("cannot translate /highlight: {}", r.reason)
    );
}
