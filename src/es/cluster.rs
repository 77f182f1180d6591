//! Which cluster is on the other end, and the one table of what that means for us.
//!
//! Every subcommand reads `GET /` once per cluster ([`connect`], or [`probe`] in a wait loop),
//! logs the distribution and version, and is refused at start when the version is outside the
//! supported range of its role, rather than discovering it mid-copy. Everything that differs
//! between the versions we support is decided here, from the [`Cluster`]:
//!
//! - how an index is read from start to end without sorting on `_id` ([`Reading`]): a point in
//!   time with `search_after` on `_shard_doc`, sliced, where the cluster has all three; sliced
//!   `scroll` elsewhere;
//! - the form of `hits.total` ([`total_hits`]);
//! - `_type` on Elasticsearch 6.x ([`Cluster::mget_path`]);
//! - the index template API an operator would use ([`Row::templates`]).
//!
//! docs/compatibility.md has the table with its sources.

use std::fmt;

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::Value;

/// Which product answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Elasticsearch (no `version.distribution` in `GET /`).
    Elasticsearch,
    /// OpenSearch (`version.distribution: "opensearch"`).
    OpenSearch,
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Elasticsearch => "Elasticsearch",
            Self::OpenSearch => "OpenSearch",
        })
    }
}

/// What a cluster is used for, which decides the versions accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The cluster the indexer writes: Elasticsearch 7.10–9.x, OpenSearch 1–3.
    New,
    /// The cluster `backfill` and `verify` read: Elasticsearch 6.8–9.x, OpenSearch 1–3.
    Legacy,
}

impl Role {
    /// The supported versions, for messages.
    pub fn range(self) -> &'static str {
        match self {
            Self::New => "Elasticsearch 7.10 to 9.x or OpenSearch 1.x to 3.x",
            Self::Legacy => "Elasticsearch 6.8 to 9.x or OpenSearch 1.x to 3.x",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Legacy => "legacy",
        }
    }
}

/// The point-in-time API of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PitApi {
    /// `POST /{index}/_pit` → `{"id"}`, `DELETE /_pit {"id"}` (Elasticsearch 7.10+).
    Elasticsearch,
    /// `POST /{index}/_search/point_in_time` → `{"pit_id"}`, `DELETE /_search/point_in_time
    /// {"pit_id": […]}` (OpenSearch 2.4+).
    OpenSearch,
}

/// How an index is read from start to end without an `_id` sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A point in time, `search_after` on `_shard_doc`, `slice` within the point in time
    /// (Elasticsearch 7.15+, OpenSearch 3.3+).
    Pit(PitApi),
    /// `scroll`, `sort: ["_doc"]`, `slice` by `_id` hash (every supported version).
    Scroll,
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pit(PitApi::Elasticsearch) => {
                "point in time (_pit) + search_after on _shard_doc, sliced"
            }
            Self::Pit(PitApi::OpenSearch) => {
                "point in time (_search/point_in_time) + search_after on _shard_doc, sliced"
            }
            Self::Scroll => "sliced scroll",
        })
    }
}

/// A cluster as its `GET /` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Elasticsearch or OpenSearch.
    pub distribution: Distribution,
    /// `version.number` as given.
    pub number: String,
    /// Its major and minor version.
    pub version: (u32, u32),
}

/// The table row of one cluster, as `config check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// How indices are read.
    pub reading: Reading,
    /// `number` (6.x) or `{"value", "relation"}` (7+).
    pub total_hits: &'static str,
    /// What `_type` needs.
    pub types: &'static str,
    /// The index template API.
    pub templates: &'static str,
}

impl Cluster {
    /// Reads a `GET /` answer.
    pub fn parse(reply: &Value) -> Result<Self, String> {
        let version = &reply["version"];
        let number = version["number"]
            .as_str()
            .ok_or_else(|| format!("`GET /` answered without version.number: {reply}"))?;
        let distribution = match version["distribution"].as_str() {
            Some("opensearch") => Distribution::OpenSearch,
            _ => Distribution::Elasticsearch,
        };
        let mut parts = number.split(['.', '-']).map(str::parse::<u32>);
        let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
            return Err(format!(
                "`GET /` answered an unreadable version.number `{number}`"
            ));
        };
        Ok(Self {
            distribution,
            number: number.to_owned(),
            version: (major, minor),
        })
    }

    /// Whether this version is supported in `role`; the error names the supported range.
    pub fn check(&self, role: Role) -> Result<(), String> {
        let (major, minor) = self.version;
        let supported = match (self.distribution, role) {
            (Distribution::OpenSearch, _) => (1..=3).contains(&major),
            (Distribution::Elasticsearch, Role::New) => (7, 10) <= (major, minor) && major <= 9,
            (Distribution::Elasticsearch, Role::Legacy) => (6, 8) <= (major, minor) && major <= 9,
        };
        if supported {
            return Ok(());
        }
        let hint = match (self.distribution, major) {
            (Distribution::Elasticsearch, 0..=5) => "; Elasticsearch 5.x and older are not supported (docs/compatibility.md says what they would need)",
            _ => "",
        };
        Err(format!(
            "{} {} is not supported as the {} cluster: supported are {}{hint}",
            self.distribution,
            self.number,
            role.name(),
            role.range()
        ))
    }

    /// How indices of this cluster are read.
    pub fn reading(&self) -> Reading {
        match (self.distribution, self.version) {
            (Distribution::Elasticsearch, v) if v >= (7, 15) => Reading::Pit(PitApi::Elasticsearch),
            (Distribution::OpenSearch, v) if v >= (3, 3) => Reading::Pit(PitApi::OpenSearch),
            _ => Reading::Scroll,
        }
    }

    /// Whether documents have a mapping type in requests (Elasticsearch 6.x: `_doc`).
    pub fn typed(&self) -> bool {
        self.distribution == Distribution::Elasticsearch && self.version.0 < 7
    }

    /// The `_mget` path of `index`: typed on 6.x.
    pub fn mget_path(&self, index: &str) -> String {
        if self.typed() {
            format!("/{index}/_doc/_mget")
        } else {
            format!("/{index}/_mget")
        }
    }

    /// This cluster's row of the compatibility table.
    pub fn row(&self) -> Row {
        let typed = self.typed();
        let legacy_templates_only =
            self.distribution == Distribution::Elasticsearch && self.version < (7, 8);
        Row {
            reading: self.reading(),
            total_hits: if typed {
                "a number"
            } else {
                "an object {value, relation}"
            },
            types: if typed {
                "_doc in hits, bulk actions, _mget and mappings"
            } else {
                "none"
            },
            templates: if legacy_templates_only {
                "_template"
            } else {
                "_index_template (and the legacy _template)"
            },
        }
    }
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.distribution, self.number)
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reads by {}; hits.total is {}; types: {}; templates: {}",
            self.reading, self.total_hits, self.types, self.templates
        )
    }
}

/// `hits.total` of a search answer in either form: a number (6.x) or `{"value": n}` (7+).
pub fn total_hits(reply: &Value) -> Option<u64> {
    let total = &reply["hits"]["total"];
    total.as_u64().or_else(|| total["value"].as_u64())
}

/// Why `GET /` did not give a usable cluster.
#[derive(Debug)]
pub enum ProbeError {
    /// Not reachable, or an answer that may change: worth asking again.
    Unreachable(String),
    /// An answer that asking again will not change: credentials refused, a version outside
    /// the supported range.
    Refused(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) | Self::Refused(why) => f.write_str(why),
        }
    }
}

/// Reads `GET /` of the cluster at `shown_url` (its address without credentials) and checks it
/// against `role`.
pub async fn probe(
    client: &Elasticsearch,
    shown_url: &str,
    role: Role,
) -> Result<Cluster, ProbeError> {
    let (status, reply) = crate::es::request(client, Method::Get, "/", None)
        .await
        .map_err(|e| {
            ProbeError::Unreachable(format!(
                "{shown_url} is not reachable: {}",
                crate::secrets::scrub(&format!("{e:#}"))
            ))
        })?;
    match status {
        200..=299 => {
            let cluster = Cluster::parse(&reply)
                .map_err(|e| ProbeError::Refused(format!("{shown_url}: {e}")))?;
            cluster
                .check(role)
                .map_err(|e| ProbeError::Refused(format!("{shown_url}: {e}")))?;
            Ok(cluster)
        }
        401 | 403 => Err(ProbeError::Refused(format!(
            "{shown_url} refused the credentials (HTTP {status}); check the username, password or API key"
        ))),
        _ => Err(ProbeError::Unreachable(format!(
            "{shown_url} answered HTTP {status}: {}",
            crate::secrets::scrub(&reply.to_string())
        ))),
    }
}

/// [`probe`] once, as every subcommand but `run` does at its start, and logs what answered.
pub async fn connect(client: &Elasticsearch, url: &str, role: Role) -> anyhow::Result<Cluster> {
    let shown = crate::secrets::redact_url(url);
    let cluster = probe(client, &shown, role)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    log(&shown, role, &cluster);
    Ok(cluster)
}

/// The log line that says which cluster answered and how it will be read.
pub fn log(shown_url: &str, role: Role, cluster: &Cluster) {
    tracing::info!(
        url = shown_url,
        role = role.name(),
        distribution = %cluster.distribution,
        version = %cluster.number,
        reading = %cluster.reading(),
        "cluster"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn es(number: &str) -> Cluster {
        Cluster::parse(&json!({"version": {"number": number, "build_flavor": "default"}})).unwrap()
    }

    fn os(number: &str) -> Cluster {
        Cluster::parse(&json!({"version": {"number": number, "distribution": "opensearch"}}))
            .unwrap()
    }

    #[test]
    fn get_root_names_the_distribution_and_version() {
        assert_eq!(es("8.15.0").distribution, Distribution::Elasticsearch);
        assert_eq!(es("8.15.0").version, (8, 15));
        assert_eq!(es("9.0.0-beta1").version, (9, 0));
        assert_eq!(os("2.11.1").distribution, Distribution::OpenSearch);
        assert!(Cluster::parse(&json!({"tagline": "x"})).is_err());
        assert!(Cluster::parse(&json!({"version": {"number": "eight"}})).is_err());
    }

    #[test]
    fn each_role_accepts_its_range_and_names_it_when_refusing() {
        for ok in ["7.10.2", "7.17.0", "8.15.0", "9.1.0"] {
            assert!(es(ok).check(Role::New).is_ok(), "{ok}");
        }
        for ok in ["6.8.23", "7.9.0", "8.0.0", "9.3.0"] {
            assert!(es(ok).check(Role::Legacy).is_ok(), "{ok}");
        }
        for ok in ["1.3.0", "2.11.1", "3.8.0"] {
            assert!(os(ok).check(Role::New).is_ok() && os(ok).check(Role::Legacy).is_ok());
        }
        let old = es("6.8.23").check(Role::New).unwrap_err();
        assert!(old.contains("Elasticsearch 7.10 to 9.x"), "{old}");
        let five = es("5.6.16").check(Role::Legacy).unwrap_err();
        assert!(
            five.contains("Elasticsearch 6.8 to 9.x") && five.contains("5.x and older"),
            "{five}"
        );
        assert!(es("6.7.0").check(Role::Legacy).is_err());
        assert!(es("10.0.0").check(Role::New).is_err());
        assert!(os("4.0.0").check(Role::Legacy).is_err());
    }

    #[test]
    fn reading_uses_a_point_in_time_only_where_it_can_be_sliced_and_tie_broken() {
        assert_eq!(es("6.8.23").reading(), Reading::Scroll);
        assert_eq!(es("7.14.2").reading(), Reading::Scroll);
        assert_eq!(es("7.15.0").reading(), Reading::Pit(PitApi::Elasticsearch));
        assert_eq!(es("9.1.0").reading(), Reading::Pit(PitApi::Elasticsearch));
        assert_eq!(os("2.11.1").reading(), Reading::Scroll);
        assert_eq!(os("3.2.0").reading(), Reading::Scroll);
        assert_eq!(os("3.8.0").reading(), Reading::Pit(PitApi::OpenSearch));
    }

    #[test]
    fn types_and_totals_differ_on_six() {
        assert!(es("6.8.23").typed() && !es("7.10.2").typed() && !os("1.3.0").typed());
        assert_eq!(es("6.8.23").mget_path("t"), "/t/_doc/_mget");
        assert_eq!(es("8.15.0").mget_path("t"), "/t/_mget");
        assert_eq!(total_hits(&json!({"hits": {"total": 7}})), Some(7));
        assert_eq!(
            total_hits(&json!({"hits": {"total": {"value": 7, "relation": "eq"}}})),
            Some(7)
        );
        assert_eq!(es("6.8.23").row().templates, "_template");
        assert!(es("7.10.2").row().templates.starts_with("_index_template"));
    }
}
