//! Which requests the proxy shadows, and the request the new cluster gets for each: the same
//! endpoint on the new index, with the body translated by [`crate::translate`].
//!
//! Only reads are shadowed: `_search`, `_count` and `_msearch` by GET or POST. Scrolls, templates,
//! point-in-time searches, writes and admin calls pass through to the legacy cluster only.

use serde_json::Value;

use crate::translate::{self, Fidelity, Refusal};

/// A shadowed endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `…/_search`.
    Search,
    /// `…/_count`.
    Count,
    /// `…/_msearch`: NDJSON header and body lines.
    Msearch,
}

impl Endpoint {
    /// The endpoint's name, as metrics label it and its path ends.
    pub fn name(self) -> &'static str {
        match self {
            Self::Search => "_search",
            Self::Count => "_count",
            Self::Msearch => "_msearch",
        }
    }
}

/// The shadowed endpoint a request is for, if it is one: a read of exactly `legacy_index`
/// (`/{legacy_index}/_search`). Reads of other indices, of several, or of every index are the
/// application's business with other data, and the new index could only answer them differently.
pub fn endpoint(method: &str, path: &str, legacy_index: &str) -> Option<Endpoint> {
    if method != "GET" && method != "POST" {
        return None;
    }
    let mut segments = path.trim_matches('/').split('/');
    let (Some(index), Some(name), None) = (segments.next(), segments.next(), segments.next())
    else {
        return None;
    };
    if index != legacy_index {
        return None;
    }
    match name {
        "_search" => Some(Endpoint::Search),
        "_count" => Some(Endpoint::Count),
        "_msearch" => Some(Endpoint::Msearch),
        _ => None,
    }
}

/// The new cluster's request for a shadowed one.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRequest {
    /// `/{index}/{endpoint}?{parameters}`.
    pub path_and_query: String,
    /// The translated body (NDJSON for `_msearch`).
    pub body: Vec<u8>,
    /// Each search's legacy body (one, or one per `_msearch` pair), for the comparison.
    pub legacy_searches: Vec<Value>,
    /// Each search's translation fidelity.
    pub fidelities: Vec<Fidelity>,
}

/// URL parameters that name fields or carry a query, translated like the body would be.
const FIELD_PARAMETERS: &[&str] = &[
    "sort",
    "_source",
    "_source_includes",
    "_source_excludes",
    "stored_fields",
    "docvalue_fields",
];

/// Translates a shadowed request for the new cluster's `index`.
pub fn translate(
    endpoint: Endpoint,
    query: Option<&str>,
    body: &[u8],
    index: &str,
) -> Result<NewRequest, Refusal> {
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name == "q" || name == "df" {
            return translate::refuse(
                &format!("?{name}"),
                "a URI search (`q=`) is Lucene syntax over the legacy default field; send the query in the body",
            );
        }
        if FIELD_PARAMETERS.contains(&name.as_ref())
            && crate::translate::names_a_tag(&Value::String(value.to_string()))
        {
            return translate::refuse(&format!("?{name}"), "a URL parameter names a tag field");
        }
        kept.append_pair(&name, &value);
    }
    let parameters = kept.finish();
    let mut path_and_query = format!("/{index}/{}", endpoint.name());
    if !parameters.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&parameters);
    }
    let (body, legacy_searches, fidelities) = match endpoint {
        Endpoint::Search | Endpoint::Count => {
            let legacy = parse(body, "")?;
            let t = translate::search_body(&legacy)?;
            let bytes = if t.body.is_null() {
                Vec::new()
            } else {
                t.body.to_string().into_bytes()
            };
            (bytes, vec![legacy], vec![t.fidelity])
        }
        Endpoint::Msearch => msearch(body)?,
    };
    Ok(NewRequest {
        path_and_query,
        body,
        legacy_searches,
        fidelities,
    })
}

type Translated = (Vec<u8>, Vec<Value>, Vec<Fidelity>);

/// `_msearch`: every header loses its `index` (the path names the new one), every body is
/// translated.
fn msearch(body: &[u8]) -> Result<Translated, Refusal> {
    let text = std::str::from_utf8(body)
        .or_else(|_| translate::refuse("", "the `_msearch` body is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() % 2 != 0 {
        return translate::refuse("", "an `_msearch` body is pairs of header and body lines");
    }
    let mut out = Vec::with_capacity(body.len());
    let mut searches = Vec::new();
    let mut fidelities = Vec::new();
    for (n, pair) in lines.chunks(2).enumerate() {
        let at = format!("/{n}");
        let mut header = parse(pair[0].as_bytes(), &at)?;
        if let Some(h) = header.as_object_mut() {
            h.remove("index");
        }
        let legacy = parse(pair[1].as_bytes(), &at)?;
        let t = translate::search_body(&legacy).map_err(|r| Refusal {
            construct: format!("{at}{}", r.construct),
            reason: r.reason,
        })?;
        out.extend_from_slice(header.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(t.body.to_string().as_bytes());
        out.push(b'\n');
        searches.push(legacy);
        fidelities.push(t.fidelity);
    }
    Ok((out, searches, fidelities))
}

fn parse(bytes: &[u8], at: &str) -> Result<Value, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes)
        .or_else(|e| translate::refuse(at, format!("the body is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_reads_of_the_legacy_index_are_shadowed() {
        let shadowed = |method: &str, path: &str| endpoint(method, path, "tags-v1");
        assert_eq!(shadowed("GET", "/tags-v1/_search"), Some(Endpoint::Search));
        assert_eq!(
            shadowed("POST", "/tags-v1/_search/"),
            Some(Endpoint::Search)
        );
        assert_eq!(shadowed("POST", "/tags-v1/_count"), Some(Endpoint::Count));
        assert_eq!(
            shadowed("POST", "/tags-v1/_msearch"),
            Some(Endpoint::Msearch)
        );
        for (method, path) in [
            ("POST", "/_search"),
            ("POST", "/_msearch"),
            ("POST", "/tags-v1,other/_search"),
            ("POST", "/other/_search"),
            ("POST", "/_search/scroll"),
            ("POST", "/tags-v1/_search/template"),
            ("PUT", "/tags-v1/_search"),
            ("POST", "/tags-v1/_bulk"),
        ] {
            assert_eq!(shadowed(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn a_search_goes_to_the_new_index_translated_with_its_parameters() {
        let body = br#"{"query": {"match": {"actions.tags.env": "prod"}}}"#;
        let r = translate(
            Endpoint::Search,
            Some("size=3&track_total_hits=true"),
            body,
            "tags",
        )
        .unwrap();
        assert_eq!(
            r.path_and_query,
            "/tags/_search?size=3&track_total_hits=true"
        );
        let sent: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            sent,
            json!({"query": {"term": {"tags.keyToValue": "env:prod"}}})
        );
        assert_eq!(r.fidelities, vec![Fidelity::Narrower]);
        let r = translate(Endpoint::Count, None, b"", "tags").unwrap();
        assert_eq!(
            (r.path_and_query.as_str(), r.body.len()),
            ("/tags/_count", 0)
        );
    }

    #[test]
    fn uri_searches_and_tag_parameters_are_refused() {
        let r = translate(Endpoint::Search, Some("q=dor"), b"", "t").unwrap_err();
        assert_eq!(r.construct, "?q");
        let r = translate(
            Endpoint::Search,
            Some("sort=actions.tags.name:asc"),
            b"",
            "t",
        )
        .unwrap_err();
        assert_eq!(r.construct, "?sort");
        let r = translate(Endpoint::Search, None, b"{", "t").unwrap_err();
        assert!(r.reason.contains("not JSON"));
    }

    #[test]
    fn an_msearch_translates_every_body_and_drops_the_indices() {
        let body = b"{\"index\":\"tags-v1\"}\n{\"query\":{\"match_all\":{}}}\n{}\n{\"query\":{\"term\":{\"actions.tags.env\":\"prod\"}}}\n";
        let r = translate(Endpoint::Msearch, None, body, "tags").unwrap();
        assert_eq!(r.path_and_query, "/tags/_msearch");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "{}\n{\"query\":{\"match_all\":{}}}\n{}\n{\"query\":{\"term\":{\"tags.keyToValue\":\"env:prod\"}}}\n"
        );
        assert_eq!(r.fidelities, vec![Fidelity::Exact, Fidelity::Narrower]);
        let bad = b"{}\n{\"query\":{\"term\":{\"actions.tags.env\":\"Prod\"}}}\n";
        let r = translate(Endpoint::Msearch, None, bad, "tags").unwrap_err();
        assert_eq!(r.construct, "/0/query/term/actions.tags.env");
    }
}
