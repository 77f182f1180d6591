//! The status endpoint of `run --status-addr`: `/healthz`, `/readyz` and `/status`.
//!
//! - `/healthz` is 200 while the replay loop and the lag monitor both ticked recently; a stuck
//!   loop turns it 503, which is what a liveness probe should restart.
//! - `/readyz` is 200 only while the lag status is CAUGHT_UP and no write is held by a condition
//!   of the cluster (a write block, a closed index, an overload): a readiness probe, and the gate
//!   a cutover script can poll. While writes are held it says why in `holding`.
//! - `/status` is the latest lag report as JSON, plus the replay's counters and the target
//!   index's bulk-load settings.
//!
//! A probe endpoint needs nothing of a web framework, so this is a minimal HTTP/1.1 responder
//! (GET only, one request per connection).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use tokio::sync::watch;

use crate::lag::rule::Status;
use crate::lag::Sampled;

/// How recent a tick must be for `/healthz`.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// Shared state the loops write and the endpoint reads.
#[derive(Default)]
pub struct StatusBoard {
    inner: Mutex<Board>,
}

#[derive(Default)]
struct Board {
    pipeline_tick: Option<Instant>,
    lag: Option<watch::Receiver<Sampled>>,
    counters: serde_json::Value,
    index: serde_json::Value,
    holding: Option<String>,
    /// What the start-up waits for, and when it last tried.
    waiting_for: Option<(String, Instant)>,
}

impl StatusBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replay loop is alive; `counters` is its running summary.
    pub fn pipeline_tick(&self, counters: serde_json::Value) {
        let mut b = self.lock();
        b.pipeline_tick = Some(Instant::now());
        b.counters = counters;
    }

    /// Reads the lag monitor's samples from now on.
    pub fn follow_lag(&self, samples: watch::Receiver<Sampled>) {
        self.lock().lag = Some(samples);
    }

    fn lag(&self) -> Sampled {
        self.lock()
            .lag
            .as_ref()
            .map(|rx| rx.borrow().clone())
            .unwrap_or_default()
    }

    /// Why the sink holds writes now (a condition of the cluster), if it does.
    pub fn holding(&self, reason: Option<String>) {
        self.lock().holding = reason;
    }

    /// What the start-up waits for now (a broker, a cluster), or `None` once it has it.
    pub fn waiting_for(&self, what: Option<String>) {
        self.lock().waiting_for = what.map(|w| (w, Instant::now()));
    }

    fn waiting(&self) -> Option<String> {
        self.lock().waiting_for.as_ref().map(|(w, _)| w.clone())
    }

    /// The target index's bulk-load settings, as last read.
    pub fn index_settings(&self, settings: serde_json::Value) {
        self.lock().index = settings;
    }

    /// Whether both loops ticked recently or, before the replay starts, whether the start-up
    /// is waiting and still trying.
    pub fn healthy(&self) -> bool {
        let monitor_tick = self.lag().at;
        let fresh = |t: Option<Instant>| t.is_some_and(|t| t.elapsed() < HEALTHY_WITHIN);
        let b = self.lock();
        let starting = b.pipeline_tick.is_none() && fresh(b.waiting_for.as_ref().map(|w| w.1));
        starting || (fresh(b.pipeline_tick) && fresh(monitor_tick))
    }

    /// Whether the latest lag status is CAUGHT_UP and no write is held.
    pub fn ready(&self) -> bool {
        let caught_up = self.lag().status() == Some(Status::CaughtUp);
        caught_up && self.lock().holding.is_none()
    }

    fn status_json(&self) -> serde_json::Value {
        let report = self.lag().report;
        let b = self.lock();
        let waiting_for = b.waiting_for.as_ref().map(|w| &w.0);
        json!({"lag": report, "replay": b.counters, "index": b.index, "holding": b.holding, "waiting_for": waiting_for})
    }
}

/// Serves the endpoint until the task is dropped.
pub async fn serve(listener: TcpListener, board: Arc<StatusBoard>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let board = Arc::clone(&board);
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            let mut read = 0;
            while read < buffer.len() && !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer[read..]))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => read += n,
                }
            }
            let request = String::from_utf8_lossy(&buffer[..read]);
            let (status, body) = respond(request.lines().next().unwrap_or_default(), &board);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

fn respond(request_line: &str, board: &StatusBoard) -> (&'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != "GET" {
        return (
            "405 Method Not Allowed",
            json!({"error": "only GET is served"}).to_string(),
        );
    }
    let ok = |good: bool| {
        if good {
            "200 OK"
        } else {
            "503 Service Unavailable"
        }
    };
    match path.split('?').next().unwrap_or_default() {
        "/healthz" => {
            let healthy = board.healthy();
            let waiting_for = board.waiting();
            (
                ok(healthy),
                json!({"healthy": healthy, "waiting_for": waiting_for}).to_string(),
            )
        }
        "/readyz" => {
            let ready = board.ready();
            let holding = board.lock().holding.clone();
            let waiting_for = board.waiting();
            (
                ok(ready),
                json!({"ready": ready, "requires": "CAUGHT_UP and no write held", "holding": holding, "waiting_for": waiting_for})
                    .to_string(),
            )
        }
        "/status" => ("200 OK", board.status_json().to_string()),
        _ => (
            "404 Not Found",
            json!({"error": "not found", "paths": ["/healthz", "/readyz", "/status"]}).to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_nobody_ticked_is_neither_healthy_nor_ready() {
        let board = StatusBoard::default();
        assert_eq!(
            respond("GET /healthz HTTP/1.1", &board).0,
            "503 Service Unavailable"
        );
        assert_eq!(
            respond("GET /readyz HTTP/1.1", &board).0,
            "503 Service Unavailable"
        );
        assert_eq!(respond("GET /status HTTP/1.1", &board).0, "200 OK");
        assert_eq!(
            respond("POST /status HTTP/1.1", &board).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("GET /nope HTTP/1.1", &board).0, "404 Not Found");
    }

    #[test]
    fn healthy_needs_both_loops_to_tick() {
        let board = StatusBoard::default();
        board.pipeline_tick(json!({}));
        assert!(!board.healthy());
        let (tx, rx) = watch::channel(Sampled::default());
        board.follow_lag(rx);
        assert!(!board.healthy(), "the monitor has not sampled yet");
        tx.send_modify(|sampled| sampled.at = Some(Instant::now()));
        assert!(board.healthy());
        assert!(!board.ready(), "no report yet");
    }

    #[test]
    fn a_start_up_that_waits_is_alive_not_ready_and_says_for_what() {
        let board = StatusBoard::default();
        board.waiting_for(Some("the Kafka brokers at 127.0.0.1:1: no metadata".into()));
        let (status, body) = respond("GET /healthz HTTP/1.1", &board);
        assert_eq!(status, "200 OK");
        assert!(body.contains("the Kafka brokers at 127.0.0.1:1"), "{body}");
        let (status, body) = respond("GET /readyz HTTP/1.1", &board);
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("the Kafka brokers at 127.0.0.1:1"), "{body}");
        assert!(respond("GET /status HTTP/1.1", &board)
            .1
            .contains("the Kafka brokers at 127.0.0.1:1"));
        board.waiting_for(None);
        assert!(
            !board.healthy(),
            "no longer waiting, and the replay has not ticked"
        );
    }
}
