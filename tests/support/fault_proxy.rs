//! A fault-injecting HTTP proxy between the indexer and the ES stand-in, on loopback.
//!
//! It forwards HTTP/1.1 requests to the upstream server and, following a [`Plan`] driven by a
//! seeded generator, answers whole requests with 429 or 503, rejects chosen items of a `_bulk`
//! request with `429 es_rejected_execution_exception` (those items are taken out of the request
//! before it is forwarded, so they are really not applied), adds latency, resets connections,
//! or holds every request without an answer for a while (a blackhole). It counts what it did,
//! and records every `_bulk` write it answered as applied (2xx, or 404 for a delete) or already
//! applied (409), before the answer leaves: a commit can only be correct if every write below it is in that record.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use super::dialect::Dialect;
use super::dialect::{self, Step};

/// What to inject, per request or per item, as probabilities in `[0, 1]`.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Seed of the generator that decides each fault.
    pub seed: u64,
    /// Whole requests answered 429 without forwarding.
    pub request_429: f64,
    /// Whole requests answered 503 without forwarding.
    pub request_503: f64,
    /// On a schedule: every Nth request is answered 503 (0: never), so a short run is sure to
    /// see some.
    pub request_503_every: u64,
    /// `_bulk` items rejected with 429 (not forwarded).
    pub item_429: f64,
    /// Connections reset instead of forwarding the request.
    pub reset: f64,
    /// Added before every forwarded request.
    pub latency: Duration,
    /// A `_bulk` request whose body contains this text is refused whole with 400, as
    /// Elasticsearch refuses a request with a malformed line (`illegal_argument_exception`).
    pub refuse_bodies_containing: Option<String>,
    /// The next this many `_bulk` requests are answered `200 {}` without being forwarded: a
    /// gateway's answer with no items.
    pub answers_without_items: u64,
    /// A `_bulk` request whose body is larger than this many bytes is held for `slow_for`
    /// before it is forwarded (and so applied, late, as a slow cluster would).
    pub slow_bodies_over: Option<usize>,
    /// See `slow_bodies_over`.
    pub slow_for: Duration,
    /// `_bulk` items whose source line contains this text are answered 429 (not forwarded)
    /// until `reject_marked_until`.
    pub reject_marked: Option<String>,
    /// See `reject_marked`.
    pub reject_marked_until: Option<Instant>,
    /// Marked items are answered 503 `unavailable_shards_exception` instead of 429: a failure
    /// of that write's shard, which the indexer retries for a bounded time, rather than an
    /// overload of the cluster, which it holds for.
    pub marked_shard_failure: bool,
    /// A `_bulk` request with a marked item is forwarded (without it) at once, but answered
    /// only after this long: an answer that arrives after later requests were answered.
    pub slow_marked_for: Duration,
    /// Every `_bulk` request is held unanswered until then, and its connection dropped: a
    /// blackhole for writes only, so the indexer's start-up requests still pass.
    pub hold_bulk_until: Option<Instant>,
    /// Every search (a first page, a scroll page, a point-in-time page) is answered 400
    /// `search_phase_execution_exception`, as a cluster refuses a search it cannot run: an
    /// answer that asking again will not change.
    pub refuse_reads: bool,
    /// Speak as another version ([`Dialect`]): its `GET /`, its APIs and its refusals.
    pub dialect: Option<Dialect>,
}

/// A cluster condition answered to every `_bulk` item (not forwarded) while it lasts, as
/// Elasticsearch answers items while the condition holds:
/// - a flood-stage disk watermark or `index.blocks.write`: `cluster_block_exception`, 403 on
///   7.x before 7.16 and 429 since (Elasticsearch reference, "Disk-based shard allocation
///   settings", `cluster.routing.allocation.disk.watermark.flood_stage`; "Index blocks");
/// - a closed index: 400 `index_closed_exception` (reference, "Close index API");
/// - a write alias without a write index: 400 `illegal_argument_exception`, "no write index is
///   defined for alias" (reference, "Aliases", `is_write_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// 403 `cluster_block_exception`, read-only-allow-delete.
    ReadOnlyAllowDelete,
    /// 429 `cluster_block_exception`, flood-stage watermark.
    FloodStage,
    /// 400 `index_closed_exception`.
    IndexClosed,
    /// 400 `illegal_argument_exception`, no write index.
    NoWriteIndex,
}

impl Condition {
    fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            Self::ReadOnlyAllowDelete => (403, "cluster_block_exception", "index [tags] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)];"),
            Self::FloodStage => (429, "cluster_block_exception", "index [tags] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];"),
            Self::IndexClosed => (400, "index_closed_exception", "closed"),
            Self::NoWriteIndex => (400, "illegal_argument_exception", "no write index is defined for alias [tags]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index"),
        }
    }
}

/// What the proxy injected so far.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub requests_429: AtomicU64,
    pub requests_503: AtomicU64,
    pub items_429: AtomicU64,
    pub resets: AtomicU64,
    pub held: AtomicU64,
    /// `_bulk` items answered with a cluster condition.
    pub items_conditioned: AtomicU64,
    /// Whole `_bulk` requests refused with 400 for a marked body.
    pub requests_refused: AtomicU64,
    /// `_bulk` requests answered `{}`.
    pub answered_without_items: AtomicU64,
    /// Searches refused by `refuse_reads`.
    pub searches_refused: AtomicU64,
    /// `_bulk` requests held for being large.
    pub slowed: AtomicU64,
    /// Marked `_bulk` items answered 429.
    pub marked_rejected: AtomicU64,
}

struct State {
    upstream: String,
    plan: Mutex<Plan>,
    rng: Mutex<u64>,
    blackhole_until: Mutex<Option<Instant>>,
    condition: Mutex<Option<(Condition, Instant)>>,
    counts: Counts,
    requests: AtomicU64,
    client: reqwest::Client,
    /// (`_id`, external version) of every bulk write answered as applied to the indexer.
    acknowledged: Mutex<HashSet<(String, u64)>>,
    /// Every request the dialect layer refused: method, path and the answer.
    refusals: Mutex<Vec<String>>,
}

/// A running proxy; it stops with the test's runtime.
#[derive(Clone)]
pub struct FaultProxy {
    state: Arc<State>,
    /// `http://127.0.0.1:PORT`, for the indexer's `--es-url`.
    pub url: String,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` that holds every request for `latency` and injects nothing
    /// else: it paces a replay, so that a fault the test injects lands before the end.
    pub async fn delaying(upstream: &str, latency: Duration) -> Self {
        Self::start(
            upstream,
            Plan {
                latency,
                ..Plan::default()
            },
        )
        .await
    }

    /// Starts a proxy to `upstream` (`http://host:port`) with `plan`.
    pub async fn start(upstream: &str, plan: Plan) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            rng: Mutex::new(plan.seed),
            plan: Mutex::new(plan),
            blackhole_until: Mutex::new(None),
            condition: Mutex::new(None),
            counts: Counts::default(),
            requests: AtomicU64::new(0),
            client: reqwest::Client::new(),
            acknowledged: Mutex::new(HashSet::new()),
            refusals: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, Arc::clone(&accepting)));
            }
        });
        Self { state, url }
    }

    /// Replaces the plan.
    pub fn set_plan(&self, plan: Plan) {
        *self.state.plan.lock().unwrap() = plan;
    }

    /// Holds every request without an answer for `duration`, then drops its connection.
    pub fn blackhole_for(&self, duration: Duration) {
        *self.state.blackhole_until.lock().unwrap() = Some(Instant::now() + duration);
    }

    /// Answers every `_bulk` item with `condition` for `duration` (see [`Condition`]).
    pub fn condition_for(&self, condition: Condition, duration: Duration) {
        *self.state.condition.lock().unwrap() = Some((condition, Instant::now() + duration));
    }

    /// What was injected so far.
    pub fn counts(&self) -> &Counts {
        &self.state.counts
    }

    /// Every request the dialect layer refused so far, as "METHOD path: answer".
    pub fn refusals(&self) -> Vec<String> {
        self.state.refusals.lock().unwrap().clone()
    }

    /// The versions of `id` acknowledged so far, and how many writes were acknowledged in all.
    pub fn acknowledged_versions(&self, id: &str) -> (Vec<u64>, usize) {
        let acknowledged = self.state.acknowledged.lock().unwrap();
        let mut versions: Vec<u64> = acknowledged
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, v)| *v)
            .collect();
        versions.sort_unstable();
        (versions, acknowledged.len())
    }

    /// Whether the indexer was told that the write of `id` at external `version` is applied.
    pub fn acknowledged(&self, id: &str, version: u64) -> bool {
        self.state
            .acknowledged
            .lock()
            .unwrap()
            .contains(&(id.to_owned(), version))
    }
}

impl Counts {
    /// One line for test output.
    pub fn describe(&self) -> String {
        format!(
            "{} requests forwarded, {} answered 429, {} answered 503, {} bulk items rejected with 429, {} connections reset, {} requests held",
            self.forwarded.load(Ordering::Relaxed),
            self.requests_429.load(Ordering::Relaxed),
            self.requests_503.load(Ordering::Relaxed),
            self.items_429.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
        )
    }
}

/// SplitMix64 over the shared state: a number in `[0, 1)`.
fn roll(state: &State) -> f64 {
    let mut s = state.rng.lock().unwrap();
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Reads one request from the connection; `None` at its end.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let mut length = 0usize;
    let mut content_type = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().ok()?,
                "content-type" => content_type = Some(value.trim().to_owned()),
                "transfer-encoding" => panic!("the fault proxy reads Content-Length bodies only"),
                _ => {}
            }
        }
    }
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 64 * 1024];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    Some(Request {
        method,
        path,
        content_type,
        body,
    })
}

async fn respond(socket: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        reason(status),
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn serve(mut socket: TcpStream, state: Arc<State>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buffer).await {
        let blackhole = *state.blackhole_until.lock().unwrap();
        if let Some(until) = blackhole.filter(|u| *u > Instant::now()) {
            state.counts.held.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        let plan = state.plan.lock().unwrap().clone();
        if roll(&state) < plan.reset {
            state.counts.resets.fetch_add(1, Ordering::Relaxed);
            // Linger 0: closing sends a TCP reset, not an orderly end. (The deprecation warns that
            // a non-zero linger blocks the dropping thread; a zero one returns at once.)
            #[allow(deprecated)]
            let _ = socket.set_linger(Some(Duration::ZERO));
            return;
        }
        let busy = json!({"error": {"type": "es_rejected_execution_exception", "reason": "injected by the test proxy"}, "status": 429});
        if roll(&state) < plan.request_429 {
            state.counts.requests_429.fetch_add(1, Ordering::Relaxed);
            if respond(&mut socket, 429, busy.to_string().as_bytes())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let scheduled = plan.request_503_every > 0 && n % plan.request_503_every == 0;
        if roll(&state) < plan.request_503 || scheduled {
            state.counts.requests_503.fetch_add(1, Ordering::Relaxed);
            let unavailable = json!({"error": {"type": "unavailable_shards_exception", "reason": "injected by the test proxy"}, "status": 503});
            if respond(&mut socket, 503, unavailable.to_string().as_bytes())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        if let Some(dialect) = plan.dialect {
            let step = dialect.route(&dialect::Request {
                method: &request.method,
                path: &request.path,
                body: &request.body,
            });
            let answer = match step {
                Step::Pass => None,
                Step::Answer(status, body) => {
                    if status >= 400 {
                        state.refusals.lock().unwrap().push(format!(
                            "{} {}: {status} {body}",
                            request.method, request.path
                        ));
                    }
                    Some((status, body.to_string().into_bytes()))
                }
                Step::Forward {
                    method,
                    path,
                    body,
                    then,
                } => {
                    let (status, reply) = send(
                        &state,
                        &method,
                        &path,
                        request.content_type.as_deref(),
                        &body,
                    )
                    .await;
                    Some(dialect::finish(then, status, reply))
                }
            };
            if let Some((status, body)) = answer {
                if respond(&mut socket, status, &body).await.is_err() {
                    return;
                }
                continue;
            }
        }
        let is_bulk = request.method == "POST"
            && request
                .path
                .split('?')
                .next()
                .unwrap_or_default()
                .ends_with("/_bulk");
        if let Some(until) = plan
            .hold_bulk_until
            .filter(|u| is_bulk && *u > Instant::now())
        {
            state.counts.held.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        let condition = *state.condition.lock().unwrap();
        let condition = condition.filter(|(_, until)| *until > Instant::now());
        let marked = plan
            .reject_marked
            .clone()
            .filter(|_| plan.reject_marked_until.is_some_and(|u| u > Instant::now()));
        let (status, body) = if plan.refuse_reads && is_search(&request) {
            state
                .counts
                .searches_refused
                .fetch_add(1, Ordering::Relaxed);
            (400, search_refusal().to_string().into_bytes())
        } else if !is_bulk {
            forward(&state, &request, &request.body).await
        } else if let Some((condition, _)) = condition {
            answer_items(
                &state,
                &request,
                |_| Some(condition.answer()),
                &state.counts.items_conditioned,
            )
        } else if plan
            .refuse_bodies_containing
            .as_ref()
            .is_some_and(|m| contains(&request.body, m.as_bytes()))
        {
            state
                .counts
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            let refused = json!({"error": {"type": "illegal_argument_exception", "reason": "Malformed action/metadata line [3], expected START_OBJECT but found [VALUE_STRING] (injected by the test proxy)"}, "status": 400});
            (400, refused.to_string().into_bytes())
        } else if take_one(&state.plan, |p| &mut p.answers_without_items) {
            state
                .counts
                .answered_without_items
                .fetch_add(1, Ordering::Relaxed);
            (200, b"{}".to_vec())
        } else if let Some(marker) = marked.filter(|m| contains(&request.body, m.as_bytes())) {
            let answer = bulk_with_marked_rejections(&state, &request, marker.as_bytes()).await;
            tokio::time::sleep(plan.slow_marked_for).await;
            answer
        } else {
            if plan
                .slow_bodies_over
                .is_some_and(|n| request.body.len() > n)
            {
                state.counts.slowed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(plan.slow_for).await;
            }
            if plan.item_429 > 0.0 {
                bulk_with_rejections(&state, &request, plan.item_429).await
            } else {
                forward(&state, &request, &request.body).await
            }
        };
        if is_bulk && status == 200 {
            record_acknowledged(&state, &request.body, &body);
        }
        if respond(&mut socket, status, &body).await.is_err() {
            return;
        }
    }
}

async fn forward(state: &State, request: &Request, body: &[u8]) -> (u16, Vec<u8>) {
    send(
        state,
        &request.method,
        &request.path,
        request.content_type.as_deref(),
        body,
    )
    .await
}

/// Sends one request upstream and returns its status and body.
async fn send(
    state: &State,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    state.counts.forwarded.fetch_add(1, Ordering::Relaxed);
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut outgoing = state
        .client
        .request(method, format!("{}{}", state.upstream, path))
        .body(body.to_vec());
    if let Some(content_type) = content_type {
        outgoing = outgoing.header("content-type", content_type);
    }
    match outgoing.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (
                status,
                response
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default(),
            )
        }
        Err(e) => (
            502,
            json!({"error": {"type": "proxy", "reason": e.to_string()}})
                .to_string()
                .into_bytes(),
        ),
    }
}

/// Adds the writes of a `_bulk` request that its response answers as applied to the record.
fn record_acknowledged(state: &State, request: &[u8], response: &[u8]) {
    let Ok(reply) = serde_json::from_slice::<Value>(response) else {
        return;
    };
    let results = reply["items"].as_array().cloned().unwrap_or_default();

    let mut acknowledged = state.acknowledged.lock().unwrap();
    for (item, result) in split_bulk(request).iter().zip(results) {
        let status = result
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|r| r["status"].as_u64())
            .unwrap_or(0);
        if let (Some(id), Some(version)) = (item.id.as_str(), item.version) {
            // A delete of a missing document answers 404 and still records its version.
            let missing = item.op == "delete" && status == 404;
            if (200..300).contains(&status) || status == 409 || missing {
                acknowledged.insert((id.to_owned(), version));
            }
        }
    }
}

/// One `_bulk` item: its action line, its source line if any, its operation name, `_id` and
/// external version.
struct Item<'a> {
    lines: Vec<&'a [u8]>,
    op: String,
    id: Value,
    version: Option<u64>,
}

fn split_bulk(body: &[u8]) -> Vec<Item<'_>> {
    let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut items = Vec::new();
    while let Some(action) = lines.next() {
        let parsed: Value = serde_json::from_slice(action).expect("a bulk action line");
        let (op, meta) = parsed
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("an action");
        let mut item = Item {
            lines: vec![action],
            op: op.clone(),
            id: meta["_id"].clone(),
            version: meta["version"].as_u64(),
        };
        if op != "delete" {
            item.lines.push(lines.next().expect("a source line"));
        }
        items.push(item);
    }
    items
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Takes one from a counter of the plan, if it is not zero.
fn take_one(plan: &Mutex<Plan>, counter: impl Fn(&mut Plan) -> &mut u64) -> bool {
    let mut plan = plan.lock().unwrap();
    let n = counter(&mut plan);
    if *n == 0 {
        return false;
    }
    *n -= 1;
    true
}

/// Answers every item of a `_bulk` request without forwarding it: with `answer`'s status, error
/// type and reason where it gives one.
fn answer_items(
    state: &State,
    request: &Request,
    answer: impl Fn(&Item<'_>) -> Option<(u16, &'static str, &'static str)>,
    count: &AtomicU64,
) -> (u16, Vec<u8>) {
    let items: Vec<Value> = split_bulk(&request.body)
        .iter()
        .map(|item| {
            let (status, kind, reason) = answer(item).expect("an answer for every item");
            count.fetch_add(1, Ordering::Relaxed);
            json!({ item.op.as_str(): {"_id": item.id, "status": status, "error": {"type": kind, "reason": reason}}})
        })
        .collect();
    let _ = state;
    (
        200,
        json!({"took": 1, "errors": true, "items": items})
            .to_string()
            .into_bytes(),
    )
}

/// Forwards a `_bulk` request without the items whose source line contains `marker`, and
/// answers those with 429.
async fn bulk_with_marked_rejections(
    state: &State,
    request: &Request,
    marker: &[u8],
) -> (u16, Vec<u8>) {
    let items = split_bulk(&request.body);
    let rejected: Vec<bool> = items
        .iter()
        .map(|i| i.lines.iter().any(|l| contains(l, marker)))
        .collect();
    let answer = if state.plan.lock().unwrap().marked_shard_failure {
        (503, "unavailable_shards_exception")
    } else {
        (429, "es_rejected_execution_exception")
    };
    merge_rejections(
        state,
        request,
        items,
        rejected,
        answer,
        &state.counts.marked_rejected,
    )
    .await
}

/// Forwards a `_bulk` request without the items the plan rejects, and answers with the upstream's
/// item results and a 429 in each rejected item's place.
async fn bulk_with_rejections(state: &State, request: &Request, p: f64) -> (u16, Vec<u8>) {
    let items = split_bulk(&request.body);
    let rejected: Vec<bool> = items.iter().map(|_| roll(state) < p).collect();
    let answer = (429, "es_rejected_execution_exception");
    merge_rejections(
        state,
        request,
        items,
        rejected,
        answer,
        &state.counts.items_429,
    )
    .await
}

/// Forwards the items not `rejected` and answers with the upstream's results, and `answer` (a
/// status and an error type) in each rejected item's place.
async fn merge_rejections(
    state: &State,
    request: &Request,
    items: Vec<Item<'_>>,
    rejected: Vec<bool>,
    (status, error_type): (u16, &str),
    count: &AtomicU64,
) -> (u16, Vec<u8>) {
    let mut kept = Vec::new();
    for (item, _) in items.iter().zip(&rejected).filter(|(_, r)| !**r) {
        for line in &item.lines {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    let mut upstream_items = Vec::new();
    if !kept.is_empty() {
        let (status, body) = forward(state, request, &kept).await;
        if status != 200 {
            return (status, body);
        }
        let reply: Value = serde_json::from_slice(&body).expect("a bulk response");
        upstream_items = reply["items"].as_array().cloned().unwrap_or_default();
    }
    let mut upstream_items = upstream_items.into_iter();
    let mut out = Vec::with_capacity(items.len());
    let mut errors = false;
    for (item, rejected) in items.iter().zip(rejected) {
        if rejected {
            count.fetch_add(1, Ordering::Relaxed);
            errors = true;
            out.push(json!({ item.op.as_str(): {
                "_id": item.id, "status": status,
                "error": {"type": error_type, "reason": "injected by the test proxy"}
            }}));
        } else {
            let result = upstream_items
                .next()
                .expect("one upstream result per kept item");
            errors |= result
                .as_object()
                .and_then(|o| o.values().next())
                .is_some_and(|r| r.get("error").is_some());
            out.push(result);
        }
    }
    let reply = json!({"took": 1, "errors": errors, "items": out});
    (200, reply.to_string().into_bytes())
}

/// Whether `request` reads documents: a `_search`, or a scroll page.
fn is_search(request: &Request) -> bool {
    let path = request.path.split('?').next().unwrap_or_default();
    path.ends_with("/_search") || path.ends_with("/_search/scroll")
}

/// A search refused for good: the shard failure's cause, wrapped in a
/// `search_phase_execution_exception`, with status 400.
fn search_refusal() -> Value {
    let cause =
        json!({"type": "illegal_argument_exception", "reason": "refused by the test proxy"});
    json!({"error": {"root_cause": [cause], "type": "search_phase_execution_exception", "reason": "all shards failed", "phase": "query", "grouped": true, "caused_by": cause}, "status": 400})
}
