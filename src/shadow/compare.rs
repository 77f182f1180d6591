//! The comparison of the legacy answer and the new cluster's answer to the translated request:
//! total hits, hit ids (in order when the search sorts on a field), aggregation buckets and the
//! `_count`. A difference in the direction the translation approximates is `analysis`; any other
//! is `different`. Pure, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::route::Endpoint;
use crate::translate::Fidelity;

/// What a shadowed request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The same answer.
    Equal,
    /// Differences only in the direction the translation approximates.
    Analysis,
    /// Any other difference.
    Different,
    /// The translator refused the request.
    Untranslatable,
    /// The new cluster failed to answer (not a timeout: those are dropped samples).
    Error,
}

impl Class {
    /// The name metrics and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Equal => "equal",
            Self::Analysis => "analysis",
            Self::Different => "different",
            Self::Untranslatable => "untranslatable",
            Self::Error => "error",
        }
    }

    /// Severity, for the class of several searches (`_msearch`): the worst wins.
    fn rank(self) -> u8 {
        match self {
            Self::Equal => 0,
            Self::Analysis => 1,
            Self::Untranslatable => 2,
            Self::Error => 3,
            Self::Different => 4,
        }
    }
}

/// The class and what differed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The class.
    pub class: Class,
    /// One line per difference (at most [`MAX_DIFFERENCES`]).
    pub differences: Vec<String>,
}

/// Differences kept per outcome.
pub const MAX_DIFFERENCES: usize = 10;

/// An answer: HTTP status and parsed body.
pub type Answer<'a> = (u16, &'a Value);

/// Compares the two answers to one shadowed request.
pub fn compare(
    endpoint: Endpoint,
    legacy_searches: &[Value],
    fidelities: &[Fidelity],
    legacy: Answer<'_>,
    new: Answer<'_>,
) -> Outcome {
    let mut judge = Judge::default();
    match endpoint {
        Endpoint::Msearch => {
            let items = |v: &Value| v["responses"].as_array().cloned().unwrap_or_default();
            let (l, n) = (items(legacy.1), items(new.1));
            if !judge.statuses("", legacy.0, new.0, legacy.1, new.1) {
                return judge.outcome();
            }
            if l.len() != n.len() || l.len() != legacy_searches.len() {
                judge.differ(
                    false,
                    format!("responses: legacy {}, new {}", l.len(), n.len()),
                );
                return judge.outcome();
            }
            for (i, ((l, n), (body, fidelity))) in l
                .iter()
                .zip(&n)
                .zip(legacy_searches.iter().zip(fidelities))
                .enumerate()
            {
                judge.fidelity = *fidelity;
                let at = format!("[{i}] ");
                if judge.statuses(&at, item_status(l), item_status(n), l, n) {
                    judge.search(&at, body, l, n);
                }
            }
        }
        Endpoint::Search | Endpoint::Count => {
            judge.fidelity = fidelities.first().copied().unwrap_or(Fidelity::Exact);
            if judge.statuses("", legacy.0, new.0, legacy.1, new.1) {
                if endpoint == Endpoint::Count {
                    judge.number(
                        "count",
                        legacy.1["count"].as_f64(),
                        new.1["count"].as_f64(),
                        true,
                    );
                } else {
                    let body = legacy_searches.first().unwrap_or(&Value::Null);
                    judge.search("", body, legacy.1, new.1);
                }
            }
        }
    }
    judge.outcome()
}

/// An `_msearch` item's status: its own `status`, else 200 unless it is an error.
fn item_status(item: &Value) -> u16 {
    match item["status"].as_u64() {
        Some(s) => u16::try_from(s).unwrap_or(500),
        None if item.get("error").is_some() => 500,
        None => 200,
    }
}

#[derive(Debug)]
struct Judge {
    fidelity: Fidelity,
    class: Class,
    differences: Vec<String>,
}

impl Default for Judge {
    fn default() -> Self {
        Self {
            fidelity: Fidelity::Exact,
            class: Class::Equal,
            differences: Vec::new(),
        }
    }
}

impl Judge {
    fn outcome(self) -> Outcome {
        Outcome {
            class: self.class,
            differences: self.differences,
        }
    }

    fn raise(&mut self, class: Class, what: String) {
        if class.rank() > self.class.rank() {
            self.class = class;
        }
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(what);
        }
    }

    /// A difference; `explained` when the translation's approximation allows it.
    fn differ(&mut self, explained: bool, what: String) {
        let class = if explained {
            Class::Analysis
        } else {
            Class::Different
        };
        self.raise(class, what);
    }

    /// Judges the statuses; true when both answered and the bodies are to be compared.
    fn statuses(&mut self, at: &str, legacy: u16, new: u16, l: &Value, n: &Value) -> bool {
        let ok = |s: u16| (200..300).contains(&s);
        match (ok(legacy), ok(new)) {
            (true, true) => true,
            (true, false) => {
                self.raise(
                    Class::Error,
                    format!("{at}the new cluster answered {new}: {}", error_text(n)),
                );
                false
            }
            (false, _) if legacy == new => false,
            (false, _) => {
                self.differ(
                    false,
                    format!(
                        "{at}the legacy cluster answered {legacy} ({}), the new one {new}",
                        error_text(l)
                    ),
                );
                false
            }
        }
    }

    /// Two numbers that count documents (`direction`) or measure them (a metric).
    fn number(&mut self, what: &str, legacy: Option<f64>, new: Option<f64>, direction: bool) {
        if legacy == new {
            return;
        }
        let (l, n) = (legacy.unwrap_or(0.0), new.unwrap_or(0.0));
        let explained = if direction {
            self.fidelity.explains(l > n, n > l)
        } else {
            // A metric over a narrower set can move either way: only an exact translation
            // promises the same value.
            self.fidelity != Fidelity::Exact
        };
        let show = |v: Option<f64>| v.map_or("none".to_owned(), |v| v.to_string());
        self.differ(
            explained,
            format!("{what}: legacy {}, new {}", show(legacy), show(new)),
        );
    }

    fn search(&mut self, at: &str, body: &Value, legacy: &Value, new: &Value) {
        let (lt, nt) = (total(legacy), total(new));
        if let (Some((l, true)), Some((n, true))) = (lt, nt) {
            self.number(&format!("{at}total"), Some(l as f64), Some(n as f64), true);
        }
        let (lh, nh) = (hits(legacy), hits(new));
        let complete = |t: Option<(u64, bool)>, h: &[(String, Value)]| matches!(t, Some((n, true)) if n == h.len() as u64);
        if complete(lt, &lh) && complete(nt, &nh) {
            let l: BTreeSet<&str> = lh.iter().map(|(id, _)| id.as_str()).collect();
            let n: BTreeSet<&str> = nh.iter().map(|(id, _)| id.as_str()).collect();
            let only_l: Vec<&&str> = l.difference(&n).collect();
            let only_n: Vec<&&str> = n.difference(&l).collect();
            if !only_l.is_empty() || !only_n.is_empty() {
                let explained = self
                    .fidelity
                    .explains(!only_l.is_empty(), !only_n.is_empty());
                self.differ(
                    explained,
                    format!("{at}ids only in legacy {only_l:?}, only in new {only_n:?}"),
                );
            }
        }
        // Order only means something when the search sorts on a field both sides share, and
        // only an exact translation promises the same page.
        if sorts_on_a_field(body) && self.fidelity == Fidelity::Exact {
            let full = |t: Option<(u64, bool)>, h: &[(String, Value)]| !matches!(t, Some((n, _)) if n <= h.len() as u64);
            let (mut lg, mut ng) = (groups(&lh), groups(&nh));
            // A page that stops inside a run of equal sort values may hold any of its members.
            if full(lt, &lh) {
                lg.pop();
            }
            if full(nt, &nh) {
                ng.pop();
            }
            // With `from`, the page may also start inside such a run.
            if body["from"].as_u64().is_some_and(|from| from > 0) {
                for groups in [&mut lg, &mut ng] {
                    if !groups.is_empty() {
                        groups.remove(0);
                    }
                }
            }
            let common = lg.len().min(ng.len());
            if let Some(i) = (0..common).find(|i| lg[*i] != ng[*i]) {
                self.differ(false, format!("{at}sorted hits differ from position {i}"));
            }
        }
        let (la, na) = (aggregations(legacy), aggregations(new));
        for key in la.keys().chain(na.keys()).collect::<BTreeSet<_>>() {
            let (l, n) = (la.get(key), na.get(key));
            let metric = l.or(n).is_some_and(|(_, metric)| *metric);
            let value = |v: Option<&(f64, bool)>| match v {
                Some((v, _)) => Some(*v),
                None if metric => None,
                None => Some(0.0),
            };
            self.number(
                &format!("{at}aggregation {key}"),
                value(l),
                value(n),
                !metric,
            );
        }
    }
}

fn error_text(body: &Value) -> String {
    let error = &body["error"];
    match (error["type"].as_str(), error["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        _ => body.to_string().chars().take(200).collect(),
    }
}

/// `hits.total` as (value, exact): a number (6.x, `rest_total_hits_as_int`) or
/// `{"value", "relation"}`.
fn total(answer: &Value) -> Option<(u64, bool)> {
    let t = &answer["hits"]["total"];
    match t.as_u64() {
        Some(n) => Some((n, true)),
        None => Some((t["value"].as_u64()?, t["relation"].as_str() == Some("eq"))),
    }
}

/// The hits as (id, sort values).
fn hits(answer: &Value) -> Vec<(String, Value)> {
    answer["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| Some((h["_id"].as_str()?.to_owned(), h["sort"].clone())))
        .collect()
}

/// Runs of hits with the same sort values, as (sort values, ids).
fn groups(hits: &[(String, Value)]) -> Vec<(Value, BTreeSet<String>)> {
    let mut out: Vec<(Value, BTreeSet<String>)> = Vec::new();
    for (id, sort) in hits {
        match out.last_mut() {
            Some((s, ids)) if s == sort => {
                ids.insert(id.clone());
            }
            _ => out.push((sort.clone(), BTreeSet::from([id.clone()]))),
        }
    }
    out
}

/// Whether a search body sorts on a field (not only on `_score` or `_doc`).
fn sorts_on_a_field(body: &Value) -> bool {
    fn field(s: &Value) -> Option<&str> {
        match s {
            Value::String(name) => Some(name.as_str()),
            Value::Object(o) => o.keys().next().map(String::as_str),
            _ => None,
        }
    }
    let sorts: Vec<&Value> = match &body["sort"] {
        Value::Array(list) => list.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    sorts
        .into_iter()
        .filter_map(field)
        .any(|f| f != "_score" && f != "_doc")
}

/// Every bucket's `doc_count` and every metric's `value`, by path (`by_status[open].prod`), with
/// whether it is a metric.
fn aggregations(answer: &Value) -> BTreeMap<String, (f64, bool)> {
    let mut out = BTreeMap::new();
    if let Some(aggs) = answer["aggregations"].as_object() {
        walk_aggs("", aggs, &mut out);
    }
    out
}

fn walk_aggs(
    prefix: &str,
    members: &serde_json::Map<String, Value>,
    out: &mut BTreeMap<String, (f64, bool)>,
) {
    for (name, agg) in members {
        let Some(agg) = agg.as_object() else { continue };
        let path = format!("{prefix}{name}");
        let bucket = |key: String, b: &Value, out: &mut BTreeMap<String, (f64, bool)>| {
            let path = format!("{path}[{key}]");
            if let Some(count) = b["doc_count"].as_f64() {
                out.insert(path.clone(), (count, false));
            }
            if let Some(sub) = b.as_object() {
                walk_aggs(&format!("{path}."), sub, out);
            }
        };
        match agg.get("buckets") {
            Some(Value::Array(list)) => {
                for b in list {
                    let key = b["key_as_string"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| b["key"].to_string());
                    bucket(key, b, out);
                }
            }
            Some(Value::Object(keyed)) => {
                for (key, b) in keyed {
                    bucket(key.clone(), b, out);
                }
            }
            _ => {
                if let Some(count) = agg.get("doc_count").and_then(Value::as_f64) {
                    out.insert(path.clone(), (count, false));
                    walk_aggs(&format!("{path}."), agg, out);
                } else if let Some(value) = agg.get("value").and_then(Value::as_f64) {
                    out.insert(path, (value, true));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(total: u64, ids: &[&str]) -> Value {
        json!({"hits": {"total": {"value": total, "relation": "eq"},
            "hits": ids.iter().map(|id| json!({"_id": id})).collect::<Vec<_>>()}})
    }

    fn search(fidelity: Fidelity, body: Value, l: &Value, n: &Value) -> Outcome {
        compare(Endpoint::Search, &[body], &[fidelity], (200, l), (200, n))
    }

    #[test]
    fn the_same_hits_are_equal_and_a_narrower_subset_is_analysis() {
        let all = answer(2, &["a", "b"]);
        let q = json!({});
        assert_eq!(
            search(Fidelity::Exact, q.clone(), &all, &all).class,
            Class::Equal
        );
        let fewer = answer(1, &["a"]);
        assert_eq!(
            search(Fidelity::Narrower, q.clone(), &all, &fewer).class,
            Class::Analysis
        );
        let o = search(Fidelity::Exact, q.clone(), &all, &fewer);
        assert_eq!(o.class, Class::Different);
        assert_eq!(o.differences[0], "total: legacy 2, new 1");
        // A narrowed translation that finds a document the legacy search did not is wrong.
        let other = answer(2, &["a", "c"]);
        assert_eq!(
            search(Fidelity::Narrower, q.clone(), &all, &other).class,
            Class::Different
        );
        assert_eq!(
            search(Fidelity::Wider, q, &fewer, &all).class,
            Class::Analysis
        );
    }

    #[test]
    fn a_partial_page_of_scored_hits_compares_totals_only() {
        let l = answer(5, &["a", "b"]);
        let n = answer(5, &["c", "d"]);
        assert_eq!(
            search(Fidelity::Exact, json!({"size": 2}), &l, &n).class,
            Class::Equal
        );
    }

    #[test]
    fn sorted_hits_compare_in_order_up_to_ties_at_the_page_end() {
        let hit = |id: &str, s: u64| json!({"_id": id, "sort": [s]});
        let page = |hits: Vec<Value>| json!({"hits": {"total": {"value": 9, "relation": "eq"}, "hits": hits}});
        let sorted = json!({"sort": [{"updated_at": "desc"}], "size": 3});
        let l = page(vec![hit("a", 3), hit("b", 2), hit("c", 1)]);
        let tie_at_end = page(vec![hit("a", 3), hit("b", 2), hit("z", 1)]);
        assert_eq!(
            search(Fidelity::Exact, sorted.clone(), &l, &tie_at_end).class,
            Class::Equal
        );
        let paged = json!({"sort": [{"updated_at": "desc"}], "from": 3, "size": 3});
        let tie_at_start = page(vec![hit("y", 3), hit("b", 2), hit("z", 1)]);
        assert_eq!(
            search(Fidelity::Exact, paged.clone(), &l, &tie_at_start).class,
            Class::Equal
        );
        let other_middle = page(vec![hit("a", 3), hit("x", 2), hit("c", 1)]);
        assert_eq!(
            search(Fidelity::Exact, paged, &l, &other_middle).class,
            Class::Different
        );
        let swapped = page(vec![hit("b", 3), hit("a", 2), hit("c", 1)]);
        let o = search(Fidelity::Exact, sorted, &l, &swapped);
        assert_eq!(o.class, Class::Different);
        assert_eq!(o.differences, vec!["sorted hits differ from position 0"]);
    }

    #[test]
    fn aggregation_buckets_are_compared_by_key() {
        let aggs = |open: u64, prod: u64| {
            json!({"hits": {"total": {"value": 0, "relation": "eq"}, "hits": []},
            "aggregations": {"by_status": {"buckets": [{"key": "open", "doc_count": open,
                "prod": {"doc_count": prod}}]}, "avg": {"value": null}}})
        };
        let q = json!({});
        assert_eq!(
            search(Fidelity::Exact, q.clone(), &aggs(3, 2), &aggs(3, 2)).class,
            Class::Equal
        );
        let o = search(Fidelity::Exact, q.clone(), &aggs(3, 2), &aggs(3, 1));
        assert_eq!(
            o.differences,
            vec!["aggregation by_status[\"open\"].prod: legacy 2, new 1"]
        );
        assert_eq!(
            search(Fidelity::Narrower, q, &aggs(3, 2), &aggs(3, 1)).class,
            Class::Analysis
        );
    }

    #[test]
    fn counts_statuses_and_msearch_items_are_judged() {
        let q = [json!({})];
        let c = |n: u64| json!({"count": n});
        let count = |l: &Value, n: &Value| {
            compare(Endpoint::Count, &q, &[Fidelity::Exact], (200, l), (200, n)).class
        };
        assert_eq!(count(&c(4), &c(4)), Class::Equal);
        assert_eq!(count(&c(4), &c(3)), Class::Different);
        let err = json!({"error": {"type": "index_not_found_exception", "reason": "no such index [tags]"}});
        let o = compare(
            Endpoint::Count,
            &q,
            &[Fidelity::Exact],
            (200, &c(1)),
            (404, &err),
        );
        assert_eq!(o.class, Class::Error);
        assert!(
            o.differences[0].contains("index_not_found_exception"),
            "{o:?}"
        );
        assert_eq!(
            compare(
                Endpoint::Count,
                &q,
                &[Fidelity::Exact],
                (400, &err),
                (400, &err)
            )
            .class,
            Class::Equal
        );
        assert_eq!(
            compare(
                Endpoint::Count,
                &q,
                &[Fidelity::Exact],
                (400, &err),
                (200, &c(1))
            )
            .class,
            Class::Different
        );
        let two = [json!({}), json!({})];
        let responses = |a: Value, b: Value| json!({"responses": [a, b]});
        let l = responses(answer(1, &["a"]), answer(2, &["a", "b"]));
        let n = responses(answer(1, &["a"]), answer(1, &["a"]));
        let o = compare(
            Endpoint::Msearch,
            &two,
            &[Fidelity::Exact, Fidelity::Narrower],
            (200, &l),
            (200, &n),
        );
        assert_eq!(
            (o.class, o.differences[0].as_str()),
            (Class::Analysis, "[1] total: legacy 2, new 1")
        );
    }
}
