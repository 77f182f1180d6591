//! Reading a whole index, a page at a time, in slices, without sorting on `_id`.
//!
//! Elasticsearch 8 and later refuse to sort on `_id` unless an operator flips a deprecated
//! cluster setting, so nothing here does. A [`Snapshot`] is one reading of an index, as the
//! cluster's [`Reading`] allows:
//!
//! - **Point in time** (Elasticsearch 7.15+, OpenSearch 3.3+): one point in time is opened for the
//!   whole reading and shared by every slice, because a PIT slice is a slice of that point in
//!   time's Lucene documents: the same slice of another point in time holds other documents.
//!   Each slice pages with `search_after` on `_shard_doc`, so a slice can continue after any page
//!   for as long as the point in time lives (`keep_alive` past the last request).
//! - **Sliced scroll** (everywhere else): each slice opens its own scroll; `slice` splits by a
//!   hash of `_id`, so slice *i* holds the same documents in every scroll. A scroll only moves
//!   forward, and a failed request may have moved it, so a failure sends the slice back to its
//!   start rather than risk a skipped page.
//!
//! Either way every document that exists for the whole reading is read, once per pass of its
//! slice.

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};

use super::cluster::{Cluster, PitApi, Reading};
use super::{is_final, request, Refused};

/// How long a scroll context lives between two pages.
const SCROLL_KEEP_ALIVE: &str = "5m";

/// One document read.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The document `_id`.
    pub id: String,
    /// The document's `_version`, when it was asked for.
    pub version: Option<u64>,
    /// The document's custom `_routing`, when it has one.
    pub routing: Option<String>,
    /// The document `_source` (`Null` when it was not asked for).
    pub source: Value,
}

impl Hit {
    /// A hit of a search answer; `None` without an `_id`.
    pub fn from_json(mut hit: Value) -> Option<Self> {
        Some(Self {
            id: hit["_id"].as_str()?.to_owned(),
            version: hit["_version"].as_u64(),
            routing: hit["_routing"].as_str().map(str::to_owned),
            source: hit["_source"].take(),
        })
    }
}

/// What each page of a reading carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSpec {
    /// Documents per page.
    pub size: usize,
    /// Ask for `_version`.
    pub version: bool,
    /// Ask for `_source`.
    pub source: bool,
}

/// One reading of an index, split into `slices`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    client: Elasticsearch,
    index: String,
    reading: Reading,
    pit: Option<String>,
    keep_alive: String,
    slices: usize,
}

impl Snapshot {
    /// Starts a reading of `index` in `slices` slices: opens its point in time, if the cluster
    /// reads by one. `keep_alive` is how long the point in time outlives the last request.
    pub async fn open(
        client: &Elasticsearch,
        cluster: &Cluster,
        index: &str,
        slices: usize,
        keep_alive: &str,
    ) -> anyhow::Result<Self> {
        let reading = cluster.reading();
        let pit = match reading {
            Reading::Pit(api) => Some(open_pit(client, api, index, keep_alive).await?),
            Reading::Scroll => None,
        };
        Ok(Self {
            client: client.clone(),
            index: index.to_owned(),
            reading,
            pit,
            keep_alive: keep_alive.to_owned(),
            slices: slices.max(1),
        })
    }

    /// Continues a reading whose point in time (if any) is `pit`.
    pub fn resume(
        client: &Elasticsearch,
        cluster: &Cluster,
        index: &str,
        slices: usize,
        pit: Option<String>,
        keep_alive: &str,
    ) -> Self {
        Self {
            client: client.clone(),
            index: index.to_owned(),
            reading: cluster.reading(),
            pit,
            keep_alive: keep_alive.to_owned(),
            slices: slices.max(1),
        }
    }

    /// The point in time's id, to record for a later [`Snapshot::resume`].
    pub fn pit(&self) -> Option<&str> {
        self.pit.as_deref()
    }

    /// How this snapshot reads.
    pub fn reading(&self) -> Reading {
        self.reading
    }

    /// Whether the point in time still answers: `Ok(false)` once the cluster has let it go.
    pub async fn alive(&self) -> anyhow::Result<bool> {
        let Some(pit) = &self.pit else {
            return Ok(true);
        };
        let body = json!({"size": 0, "pit": {"id": pit, "keep_alive": self.keep_alive}, "track_total_hits": false});
        let (status, reply) = request(&self.client, Method::Post, "/_search", Some(&body)).await?;
        match status {
            200..=299 => Ok(true),
            _ if is_final(status) => {
                tracing::info!(index = %self.index, status, reply = %reply, "the recorded point in time is gone");
                Ok(false)
            }
            _ => anyhow::bail!(
                "asking whether the point in time of `{}` lives failed with HTTP {status}: {reply}",
                self.index
            ),
        }
    }

    /// A cursor over slice `slice`, starting after the sort values `after` (a point in time
    /// only; `None`: from the slice's start).
    pub fn slice(&self, slice: usize, after: Option<Value>, spec: PageSpec) -> SliceCursor {
        let position = match &self.pit {
            Some(pit) => Position::Pit {
                pit: pit.clone(),
                after,
            },
            None => Position::ScrollStart,
        };
        SliceCursor {
            snapshot: self.clone(),
            slice,
            spec,
            position,
        }
    }

    /// Ends the reading: closes the point in time. A failure is logged, not returned: the
    /// cluster lets it go after `keep_alive` anyway.
    pub async fn close(self) {
        let (Some(pit), Reading::Pit(api)) = (&self.pit, self.reading) else {
            return;
        };
        let (path, body) = match api {
            PitApi::Elasticsearch => ("/_pit", json!({ "id": pit })),
            PitApi::OpenSearch => ("/_search/point_in_time", json!({ "pit_id": [pit] })),
        };
        match request(&self.client, Method::Delete, path, Some(&body)).await {
            Ok((200..=299, _)) => {}
            Ok((status, reply)) => {
                tracing::warn!(index = %self.index, status, reply = %reply, "closing the point in time failed; the cluster lets it go after its keep_alive")
            }
            Err(e) => {
                tracing::warn!(index = %self.index, error = %e, "closing the point in time failed; the cluster lets it go after its keep_alive")
            }
        }
    }
}

async fn open_pit(
    client: &Elasticsearch,
    api: PitApi,
    index: &str,
    keep_alive: &str,
) -> anyhow::Result<String> {
    let (path, field) = match api {
        PitApi::Elasticsearch => (format!("/{index}/_pit?keep_alive={keep_alive}"), "id"),
        PitApi::OpenSearch => (
            format!("/{index}/_search/point_in_time?keep_alive={keep_alive}"),
            "pit_id",
        ),
    };
    let (status, reply) = request(client, Method::Post, &path, None).await?;
    let message =
        || format!("opening a point in time on `{index}` failed with HTTP {status}: {reply}");
    if !(200..300).contains(&status) {
        return Err(if is_final(status) {
            Refused(message()).into()
        } else {
            anyhow::anyhow!(message())
        });
    }
    reply[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{path} answered without `{field}`: {reply}"))
}

#[derive(Debug, Clone)]
enum Position {
    Pit { pit: String, after: Option<Value> },
    ScrollStart,
    Scroll(String),
    Done,
}

/// One slice of a [`Snapshot`], read a page at a time.
#[derive(Debug)]
pub struct SliceCursor {
    snapshot: Snapshot,
    slice: usize,
    spec: PageSpec,
    position: Position,
}

impl SliceCursor {
    /// The next page; empty once the slice is read to its end.
    pub async fn next_page(&mut self) -> anyhow::Result<Vec<Hit>> {
        let snapshot = self.snapshot.clone();
        let mut body = json!({
            "size": self.spec.size,
            "version": self.spec.version,
            "_source": self.spec.source,
        });
        if snapshot.slices > 1 {
            body["slice"] = json!({"id": self.slice, "max": snapshot.slices});
        }
        let (method, path) = match &self.position {
            Position::Done => return Ok(Vec::new()),
            Position::Pit { pit, after } => {
                body["pit"] = json!({"id": pit, "keep_alive": snapshot.keep_alive});
                body["sort"] = json!([{"_shard_doc": "asc"}]);
                body["track_total_hits"] = json!(false);
                if let Some(after) = after {
                    body["search_after"] = after.clone();
                }
                (Method::Post, "/_search".to_owned())
            }
            Position::ScrollStart => {
                body["sort"] = json!(["_doc"]);
                let path = format!("/{}/_search?scroll={SCROLL_KEEP_ALIVE}", snapshot.index);
                (Method::Post, path)
            }
            Position::Scroll(id) => {
                body = json!({"scroll": SCROLL_KEEP_ALIVE, "scroll_id": id});
                (Method::Post, "/_search/scroll".to_owned())
            }
        };
        let answer = request(&snapshot.client, method, &path, Some(&body)).await;
        let (status, mut reply) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                self.back_to_start_if_scrolling().await;
                return Err(e);
            }
        };
        if !(200..300).contains(&status) {
            self.back_to_start_if_scrolling().await;
            let message = format!(
                "reading slice {} of `{}` failed with HTTP {status}: {reply}",
                self.slice, snapshot.index
            );
            return Err(if is_final(status) {
                Refused(message).into()
            } else {
                anyhow::anyhow!(message)
            });
        }
        let Value::Array(raw) = reply["hits"]["hits"].take() else {
            anyhow::bail!("`{path}` answered without hits: {reply}");
        };
        let last_sort = raw.last().map(|h| h["sort"].clone());
        let hits: Vec<Hit> = raw.into_iter().filter_map(Hit::from_json).collect();
        // A search_after page shorter than asked is the last; a scroll ends with an empty page.
        let more = match &self.position {
            Position::Pit { .. } => hits.len() >= self.spec.size,
            _ => !hits.is_empty(),
        };
        self.position = match (&self.position, more) {
            (Position::Pit { pit, .. }, true) => Position::Pit {
                // Each answer may carry a newer id of the same point in time.
                pit: reply["pit_id"].as_str().unwrap_or(pit).to_owned(),
                after: last_sort,
            },
            (_, true) => match reply["_scroll_id"].as_str() {
                Some(id) => Position::Scroll(id.to_owned()),
                None => anyhow::bail!("`{path}` answered without a _scroll_id"),
            },
            (_, false) => {
                if let Some(id) = reply["_scroll_id"].as_str() {
                    clear_scroll(&snapshot.client, id).await;
                }
                Position::Done
            }
        };
        Ok(hits)
    }

    /// The sort values of the last hit read (a point in time only): a later cursor continues
    /// after them.
    pub fn after(&self) -> Option<&Value> {
        match &self.position {
            Position::Pit { after, .. } => after.as_ref(),
            _ => None,
        }
    }

    /// Whether the slice is read to its end.
    pub fn finished(&self) -> bool {
        matches!(self.position, Position::Done)
    }

    /// Frees the slice's scroll context, if it holds one.
    pub async fn close(self) {
        if let Position::Scroll(id) = &self.position {
            clear_scroll(&self.snapshot.client, id).await;
        }
    }

    async fn back_to_start_if_scrolling(&mut self) {
        if let Position::Scroll(id) = &self.position {
            clear_scroll(&self.snapshot.client, id).await;
            tracing::warn!(slice = self.slice, index = %self.snapshot.index, "a scroll cannot be asked for the same page again: the slice starts over");
            self.position = Position::ScrollStart;
        }
    }
}

async fn clear_scroll(client: &Elasticsearch, id: &str) {
    let body = json!({ "scroll_id": [id] });
    if let Err(e) = request(client, Method::Delete, "/_search/scroll", Some(&body)).await {
        tracing::debug!(error = %e, "clearing a scroll failed; it expires on its own");
    }
}

/// Looks `ids` up in `index` (each with its routing, if any) and returns, in the same order,
/// each document (its `_source` is `Null` when `source` is false; its `_version` is there) or
/// `None` when it is missing. A lookup by id is real-time: it sees writes not yet refreshed.
pub async fn mget(
    client: &Elasticsearch,
    cluster: &Cluster,
    index: &str,
    ids: &[(&str, Option<&str>)],
    source: bool,
) -> anyhow::Result<Vec<Option<Hit>>> {
    if ids.is_empty() {
        // Elasticsearch refuses an `_mget` of nothing.
        return Ok(Vec::new());
    }
    let docs: Vec<Value> = ids
        .iter()
        .map(|(id, routing)| match routing {
            Some(r) => json!({"_id": id, "routing": r}),
            None => json!({ "_id": id }),
        })
        .collect();
    // `_source` is a query parameter: the body takes only `docs` or `ids`.
    let body = json!({ "docs": docs });
    let mut path = cluster.mget_path(index);
    if !source {
        path.push_str("?_source=false");
    }
    let (status, mut reply) = request(client, Method::Post, &path, Some(&body)).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "_mget on `{index}` failed with HTTP {status}: {reply}"
    );
    let Value::Array(found) = reply["docs"].take() else {
        anyhow::bail!("_mget on `{index}` answered without docs: {reply}");
    };
    anyhow::ensure!(
        found.len() == ids.len(),
        "_mget on `{index}` answered {} docs for {} ids",
        found.len(),
        ids.len()
    );
    Ok(found
        .into_iter()
        .map(|doc| {
            if doc["found"] == json!(true) {
                Hit::from_json(doc)
            } else {
                None
            }
        })
        .collect())
}
