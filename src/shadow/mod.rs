//! `shadow`: an HTTP proxy the application points at instead of the legacy cluster, to prove the
//! new cluster answers the application's real searches the same before any user sees it.
//!
//! Every request goes to the legacy cluster ([`forward`]) and its answer goes back byte for byte.
//! A share (`--sample`) of the reads ([`route`]) is then, off the request path, translated
//! ([`crate::translate`]) and sent to the new cluster's read alias; the answers are compared
//! ([`compare`]), counted as metrics and written to the report ([`report`]). The shadow side has
//! its own concurrency limit and timeout: a sample that finds every slot taken, or whose answer is
//! late, is dropped and counted, never queued, so a slow or dead new cluster cannot slow the
//! legacy path. With `--serve-from new`, a share of the reads is answered by the new cluster
//! instead ([`canary`]).

pub mod canary;
pub mod compare;
pub mod forward;
pub mod report;
pub mod route;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use elasticsearch::http::headers::{HeaderMap as EsHeaders, HeaderValue, CONTENT_TYPE};
use elasticsearch::Elasticsearch;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics::{counter, histogram};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::es::Security;
use compare::Class;
use report::{capped, Entry, ReportFile};
use route::{Endpoint, NewRequest};

/// What the proxy is set up with.
#[derive(Debug, Clone)]
pub struct ShadowSettings {
    /// The legacy cluster every request goes to.
    pub legacy_url: String,
    /// The legacy index (or alias) whose reads are shadowed.
    pub legacy_index: String,
    /// The new cluster.
    pub new_url: String,
    /// The new cluster's read alias (or index) the translated reads go to.
    pub new_index: String,
    /// Share of reads shadowed, in `[0, 1]`.
    pub sample: f64,
    /// Shadow requests in flight at most.
    pub concurrency: usize,
    /// How long the new cluster has to answer a shadow request (or a canary read).
    pub timeout: Duration,
    /// How long the legacy cluster has to answer.
    pub legacy_timeout: Duration,
    /// The report file.
    pub report: PathBuf,
    /// Bytes kept of each query and answer in the report.
    pub answer_bytes: usize,
    /// With `--serve-from new`: the share of reads answered by the new cluster.
    pub canary: Option<f64>,
    /// Both clusters' TLS settings; the new cluster's credentials.
    pub security: Security,
    /// The proxy's own certificate and key (PEM), to listen with TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A share of a stream of requests, chosen by count so that any run of requests gets its share
/// within one: request n is taken when `floor(n·share)` grows.
#[derive(Debug)]
pub struct Share {
    per_million: u64,
    seen: AtomicU64,
}

impl Share {
    /// A share in `[0, 1]`.
    pub fn new(share: f64) -> Self {
        Self {
            per_million: (share.clamp(0.0, 1.0) * 1_000_000.0).round() as u64,
            seen: AtomicU64::new(0),
        }
    }

    /// Whether the next request is in the share.
    pub fn take(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.per_million / 1_000_000 > n * self.per_million / 1_000_000
    }
}

/// What the proxy did, for the summary it prints when it stops.
#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    sampled: AtomicU64,
    classes: [AtomicU64; 5],
    dropped_busy: AtomicU64,
    dropped_timeout: AtomicU64,
    forward_errors: AtomicU64,
    canary_served: AtomicU64,
}

const CLASSES: [Class; 5] = [
    Class::Equal,
    Class::Analysis,
    Class::Different,
    Class::Untranslatable,
    Class::Error,
];

/// The proxy's state, shared by every connection and shadow task.
pub struct Proxy {
    legacy: forward::Legacy,
    legacy_index: String,
    new: Elasticsearch,
    index: String,
    sample: Share,
    canary: Option<Share>,
    permits: Arc<Semaphore>,
    concurrency: u32,
    timeout: Duration,
    report: ReportFile,
    answer_bytes: usize,
    tally: Tally,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A sampled request and the legacy answer to it, handed to the shadow task.
struct Sample {
    endpoint: Endpoint,
    path_and_query: String,
    query: Option<String>,
    body: Bytes,
    legacy_status: u16,
    legacy_body: Bytes,
    legacy_elapsed: Duration,
}

type Reply = Response<Full<Bytes>>;

impl Proxy {
    /// Builds the proxy: the legacy client, the new cluster's client, the report file.
    pub fn new(settings: &ShadowSettings) -> anyhow::Result<Self> {
        let concurrency = u32::try_from(settings.concurrency.max(1)).unwrap_or(u32::MAX);
        Ok(Self {
            legacy: forward::Legacy::new(
                &settings.legacy_url,
                &settings.security.legacy,
                settings.legacy_timeout,
            )?,
            // The shadow timeout is applied around each request, so that a late answer is
            // told apart from a failed one; the client's own is only a backstop.
            new: crate::es::secure_client(
                &settings.new_url,
                &settings.security.new,
                settings.timeout + Duration::from_secs(5),
            )?,
            legacy_index: settings.legacy_index.clone(),
            index: settings.new_index.clone(),
            sample: Share::new(settings.sample),
            canary: settings.canary.map(Share::new),
            permits: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
            timeout: settings.timeout,
            report: ReportFile::open(&settings.report)?,
            answer_bytes: settings.answer_bytes,
            tally: Tally::default(),
            tls: match &settings.tls {
                Some((cert, key)) => Some(tls::acceptor(cert, key)?),
                None => None,
            },
        })
    }

    /// Serves connections from `listener` until `shutdown` resolves, then waits (at most the
    /// shadow timeout) for the comparisons in flight to write their report lines.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Answers are small and latency is the point: no Nagle delay.
                        let _ = stream.set_nodelay(true);
                        let proxy = Arc::clone(&self);
                        match self.tls.clone() {
                            None => {
                                tokio::spawn(proxy.connection(stream));
                            }
                            Some(acceptor) => {
                                tokio::spawn(async move {
                                    match acceptor.accept(stream).await {
                                        Ok(stream) => proxy.connection(stream).await,
                                        Err(e) => tracing::debug!(error = %e, "shadow: a TLS handshake failed"),
                                    }
                                });
                            }
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather than spin.
                        tracing::warn!(error = %e, "shadow: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let all = self.permits.acquire_many(self.concurrency);
        let _ = tokio::time::timeout(self.timeout + Duration::from_secs(1), all).await;
    }

    async fn connection<S>(self: Arc<Self>, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |request| {
            let proxy = Arc::clone(&self);
            async move { Ok::<_, Infallible>(proxy.handle(request).await) }
        });
        if let Err(e) = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(error = %e, "shadow: a client connection ended with an error");
        }
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Reply {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                )
            }
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let endpoint = route::endpoint(parts.method.as_str(), parts.uri.path(), &self.legacy_index);
        counter!("shadow.requests", "endpoint" => endpoint.map_or("other", Endpoint::name))
            .increment(1);
        self.tally.requests.fetch_add(1, Ordering::Relaxed);
        if let (Some(endpoint), Some(canary)) = (endpoint, &self.canary) {
            if canary.take() {
                if let Some(reply) = self
                    .answer_from_new(endpoint, parts.uri.query(), &body)
                    .await
                {
                    return reply;
                }
            }
        }
        let answer = match self
            .legacy
            .forward(
                parts.method.clone(),
                &path_and_query,
                &parts.headers,
                body.clone(),
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                counter!("shadow.forward_errors").increment(1);
                self.tally.forward_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, path = %path_and_query, "shadow: the legacy cluster did not answer");
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("the legacy cluster did not answer: {e}"),
                );
            }
        };
        histogram!("shadow.legacy_latency_ms").record(millis(answer.elapsed));
        if let Some(endpoint) = endpoint.filter(|_| self.sample.take()) {
            self.tally.sampled.fetch_add(1, Ordering::Relaxed);
            let sample = Sample {
                endpoint,
                path_and_query,
                query: parts.uri.query().map(str::to_owned),
                body,
                legacy_status: answer.status.as_u16(),
                legacy_body: answer.body.clone(),
                legacy_elapsed: answer.elapsed,
            };
            Arc::clone(&self).spawn_shadow(sample);
        }
        let mut reply = Response::new(Full::new(answer.body));
        *reply.status_mut() = answer.status;
        *reply.headers_mut() = answer.headers;
        if parts.method != Method::HEAD {
            // The body is whole here; hyper sets its length.
            reply.headers_mut().remove(hyper::header::CONTENT_LENGTH);
        }
        reply
    }

    /// Starts the comparison of one sample, unless every shadow slot is taken.
    fn spawn_shadow(self: Arc<Self>, sample: Sample) {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.dropped("busy");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            self.shadow(sample).await;
        });
    }

    fn dropped(&self, reason: &'static str) {
        counter!("shadow.dropped", "reason" => reason).increment(1);
        let tally = match reason {
            "busy" => &self.tally.dropped_busy,
            _ => &self.tally.dropped_timeout,
        };
        tally.fetch_add(1, Ordering::Relaxed);
    }

    async fn shadow(&self, sample: Sample) {
        let request = match route::translate(
            sample.endpoint,
            sample.query.as_deref(),
            &sample.body,
            &self.index,
        ) {
            Ok(request) => request,
            Err(refusal) => {
                let outcome = compare::Outcome {
                    class: Class::Untranslatable,
                    differences: vec![refusal.to_string()],
                };
                return self.record(&sample, outcome, None, None);
            }
        };
        let started = Instant::now();
        let answer = match tokio::time::timeout(self.timeout, self.send_new(&request)).await {
            Err(_) => return self.dropped("timeout"),
            Ok(Err(e)) => {
                let outcome = compare::Outcome {
                    class: Class::Error,
                    differences: vec![format!("the new cluster did not answer: {e}")],
                };
                return self.record(&sample, outcome, Some(&request), None);
            }
            Ok(Ok(answer)) => answer,
        };
        let new_elapsed = started.elapsed();
        histogram!("shadow.new_latency_ms").record(millis(new_elapsed));
        let parsed = (
            serde_json::from_slice(&sample.legacy_body),
            serde_json::from_slice(&answer.1),
        );
        let outcome = match parsed {
            (Ok(legacy), Ok(new)) => compare::compare(
                sample.endpoint,
                &request.legacy_searches,
                &request.fidelities,
                (sample.legacy_status, &legacy),
                (answer.0, &new),
            ),
            (Err(e), _) => compare::Outcome {
                class: Class::Error,
                differences: vec![format!(
                    "the legacy answer is not JSON (a compressed answer is not compared): {e}"
                )],
            },
            (_, Err(e)) => compare::Outcome {
                class: Class::Error,
                differences: vec![format!("the new answer is not JSON: {e}")],
            },
        };
        self.record(
            &sample,
            outcome,
            Some(&request),
            Some((new_elapsed, &answer.1)),
        );
    }

    /// Sends a translated read to the new cluster: its status and body.
    async fn send_new(&self, request: &NewRequest) -> Result<(u16, Bytes), elasticsearch::Error> {
        let mut headers = EsHeaders::new();
        let ndjson = request.path_and_query.contains("/_msearch");
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if ndjson {
                "application/x-ndjson"
            } else {
                "application/json"
            }),
        );
        let response = self
            .new
            .send(
                elasticsearch::http::Method::Post,
                &request.path_and_query,
                headers,
                None::<&()>,
                Some(request.body.as_slice()),
                None,
            )
            .await?;
        let status = response.status_code().as_u16();
        Ok((status, response.bytes().await?))
    }

    /// Answers a read from the new cluster, in the legacy document shape, when its translation
    /// is exact and the new cluster answers in time; otherwise `None`, and the legacy cluster
    /// answers.
    async fn answer_from_new(
        &self,
        endpoint: Endpoint,
        query: Option<&str>,
        body: &[u8],
    ) -> Option<Reply> {
        let outcome = |o: &'static str| counter!("shadow.canary", "outcome" => o).increment(1);
        let request = match route::translate(endpoint, query, body, &self.index) {
            Ok(r)
                if r.fidelities
                    .iter()
                    .all(|f| *f == crate::translate::Fidelity::Exact) =>
            {
                r
            }
            _ => {
                outcome("untranslatable");
                return None;
            }
        };
        let started = Instant::now();
        let answered = tokio::time::timeout(self.timeout, self.send_new(&request)).await;
        let Ok(Ok((status @ 200..=299, bytes))) = answered else {
            outcome("fallback");
            return None;
        };
        let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            outcome("fallback");
            return None;
        };
        histogram!("shadow.new_latency_ms").record(millis(started.elapsed()));
        canary::to_legacy_shape(&mut answer);
        outcome("served");
        self.tally.canary_served.fetch_add(1, Ordering::Relaxed);
        let mut reply = Response::new(Full::new(Bytes::from(answer.to_string())));
        *reply.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        reply.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Some(reply)
    }

    fn record(
        &self,
        sample: &Sample,
        outcome: compare::Outcome,
        request: Option<&NewRequest>,
        new: Option<(Duration, &Bytes)>,
    ) {
        let class = outcome.class;
        counter!("shadow.samples", "class" => class.name()).increment(1);
        if let Some(i) = CLASSES.iter().position(|c| *c == class) {
            self.tally.classes[i].fetch_add(1, Ordering::Relaxed);
        }
        let text = |bytes: &[u8]| capped(&String::from_utf8_lossy(bytes), self.answer_bytes);
        let answers = class != Class::Equal;
        self.report.append(&Entry {
            at_ms: unix_millis(),
            endpoint: sample.endpoint.name().to_owned(),
            path: sample.path_and_query.clone(),
            class: class.name().to_owned(),
            differences: outcome.differences,
            legacy_ms: millis(sample.legacy_elapsed),
            new_ms: new.map(|(elapsed, _)| millis(elapsed)),
            query: text(&sample.body),
            translated: request.map(|r| text(&r.body)),
            legacy_answer: answers.then(|| text(&sample.legacy_body)),
            new_answer: new.filter(|_| answers).map(|(_, body)| text(body)),
        });
    }

    /// One line on what the proxy did, for its exit.
    pub fn summary(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let classes: Vec<String> = CLASSES
            .iter()
            .zip(&self.tally.classes)
            .map(|(c, n)| format!("{} {}", get(n), c.name()))
            .collect();
        format!(
            "shadow: {} requests, {} legacy errors, {} sampled: {}; dropped {} busy, {} timeout; {} served from new",
            get(&self.tally.requests),
            get(&self.tally.forward_errors),
            get(&self.tally.sampled),
            classes.join(", "),
            get(&self.tally.dropped_busy),
            get(&self.tally.dropped_timeout),
            get(&self.tally.canary_served),
        )
    }
}

fn plain(status: StatusCode, text: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    *reply.status_mut() = status;
    reply
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::Share;

    #[test]
    fn a_share_takes_its_part_of_any_run_of_requests() {
        let taken = |share: f64, n: usize| {
            let s = Share::new(share);
            (0..n).filter(|_| s.take()).count()
        };
        assert_eq!(taken(0.05, 100), 5);
        assert_eq!(taken(0.05, 19), 0);
        assert_eq!(taken(0.05, 20), 1);
        assert_eq!(taken(1.0, 7), 7);
        assert_eq!(taken(0.0, 1000), 0);
    }
}
