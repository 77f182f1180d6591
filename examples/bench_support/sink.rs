//! The bench sink: an HTTP server that answers `_bulk` at memory speed, so that an end-to-end
//! run measures the indexer and the broker rather than the Elasticsearch stand-in.
//!
//! It answers every `_bulk` request with one success item per action, the way Elasticsearch
//! does (`_index`, `_id`, `_version`, `result`, `status`), so the indexer still parses a
//! full-sized answer. Every other request (the cluster probe, the index creation, its mapping
//! and settings) is forwarded to a real server, `upstream`, so that start-up runs exactly as it
//! does against a cluster. It counts the actions it answered: a run that ends with every
//! command delivered once shows that nothing was skipped to look fast.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the sink answered so far.
#[derive(Default)]
pub struct Answered {
    /// `_bulk` requests.
    pub requests: AtomicU64,
    /// `index` actions.
    pub indexed: AtomicU64,
    /// `delete` actions.
    pub deleted: AtomicU64,
}

impl Answered {
    /// Actions of either kind.
    pub fn actions(&self) -> u64 {
        self.indexed.load(Ordering::Relaxed) + self.deleted.load(Ordering::Relaxed)
    }
}

/// A running sink.
pub struct BenchSink {
    /// Where it listens, as an `http://` URL.
    pub url: String,
    /// Its counts.
    pub answered: Arc<Answered>,
}

/// Starts a sink on a free loopback port that forwards everything but `_bulk` to `upstream`.
pub async fn start(upstream: &str) -> anyhow::Result<BenchSink> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let answered = Arc::new(Answered::default());
    let shared = Arc::new(Upstream {
        url: upstream.trim_end_matches('/').to_owned(),
        client: reqwest::Client::new(),
    });
    let counts = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (upstream, counts) = (Arc::clone(&shared), Arc::clone(&counts));
            tokio::spawn(async move {
                if let Err(e) = serve(stream, &upstream, &counts).await {
                    eprintln!("bench sink: connection ended: {e}");
                }
            });
        }
    });
    Ok(BenchSink {
        url: format!("http://{addr}"),
        answered,
    })
}

struct Upstream {
    url: String,
    client: reqwest::Client,
}

/// One request as read from the connection.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves one keep-alive connection until the client closes it.
async fn serve(
    mut stream: TcpStream,
    upstream: &Upstream,
    counts: &Answered,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut answer: Vec<u8> = Vec::with_capacity(1 << 16);
    while let Some(request) = read_request(&mut stream, &mut buffer).await? {
        answer.clear();
        if request.method == "POST"
            && request
                .path
                .split('?')
                .next()
                .unwrap_or("")
                .ends_with("/_bulk")
        {
            let body = bulk_answer(&request.body, counts);
            head(&mut answer, 200, "application/json", body.len());
            answer.extend_from_slice(&body);
        } else {
            let (status, content_type, body) = forward(upstream, &request).await?;
            head(&mut answer, status, &content_type, body.len());
            answer.extend_from_slice(&body);
        }
        stream.write_all(&answer).await?;
    }
    Ok(())
}

/// Reads the next request, or `None` when the client closed the connection between requests.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> anyhow::Result<Option<Request>> {
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if stream.read_buf(buffer).await? == 0 {
            anyhow::ensure!(
                buffer.is_empty(),
                "the client closed the connection mid-request"
            );
            return Ok(None);
        }
    };
    let text = std::str::from_utf8(&buffer[..head_end])?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    anyhow::ensure!(
        !headers.iter().any(|(k, _)| k == "transfer-encoding"),
        "the bench sink reads bodies by content-length only"
    );
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(Ok(0), |(_, v)| v.parse())?;
    while buffer.len() < head_end + length {
        anyhow::ensure!(stream.read_buf(buffer).await? > 0, "the body ended early");
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

fn head(out: &mut Vec<u8>, status: u16, content_type: &str, length: usize) {
    out.extend_from_slice(
        format!("HTTP/1.1 {status} OK\r\ncontent-type: {content_type}\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {length}\r\n\r\n")
            .as_bytes(),
    );
}

/// One success item per action of an NDJSON `_bulk` body.
fn bulk_answer(body: &[u8], counts: &Answered) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    out.extend_from_slice(b"{\"took\":1,\"errors\":false,\"items\":[");
    let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let (mut indexed, mut deleted) = (0, 0);
    while let Some(action) = lines.next() {
        let delete = action.starts_with(b"{\"delete\"");
        if delete {
            deleted += 1;
        } else {
            indexed += 1;
            lines.next();
        }
        if indexed + deleted > 1 {
            out.push(b',');
        }
        out.extend_from_slice(if delete {
            b"{\"delete\":{\"_index\":\"bench\",\"_id\":"
        } else {
            b"{\"index\":{\"_index\":\"bench\",\"_id\":"
        });
        out.extend_from_slice(quoted_id(action));
        out.extend_from_slice(if delete {
            b",\"_version\":1,\"result\":\"deleted\",\"status\":200}}"
        } else {
            b",\"_version\":1,\"result\":\"created\",\"status\":201}}"
        });
    }
    out.extend_from_slice(b"]}");
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.indexed.fetch_add(indexed, Ordering::Relaxed);
    counts.deleted.fetch_add(deleted, Ordering::Relaxed);
    out
}

/// The quoted `_id` of an action line, as it stands there.
fn quoted_id(action: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"_id\":";
    let Some(at) = action.windows(KEY.len()).position(|w| w == KEY) else {
        return b"null";
    };
    let rest = &action[at + KEY.len()..];
    let mut escaped = false;
    for (i, b) in rest.iter().enumerate().skip(1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return &rest[..=i],
            _ => {}
        }
    }
    b"null"
}

/// Sends `request` to the upstream server and returns its status, content type and body.
async fn forward(upstream: &Upstream, request: &Request) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
    let mut builder = upstream
        .client
        .request(method, format!("{}{}", upstream.url, request.path))
        .body(request.body.clone());
    for (name, value) in &request.headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            builder = builder.header(name, value);
        }
    }
    let response = builder.send().await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    Ok((status, content_type, response.bytes().await?.to_vec()))
}
