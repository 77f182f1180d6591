//! Logs and metrics: `tracing` to stderr (text or JSON), `metrics` to statsd.
//!
//! Metric names are relative; the statsd exporter adds the prefix (`dual_indexer` by default),
//! and labels become DogStatsD tags (`topic`, `partition`, `class`, `result`). Metrics are
//! queued and sent in datagrams of up to 1,432 bytes; [`flush_statsd`] sends what is left when
//! the process ends, so a run's last counts are not lost with it.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cadence::{BufferedUdpMetricSink, MetricSink, QueuingMetricSink};
use metrics_exporter_statsd::StatsdBuilder;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "`{other}` is not a log format; accepted: text, json"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Installs the global log subscriber. `RUST_LOG` overrides `level`.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ScrubbedStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Standard error, with every known secret scrubbed from each log line: librdkafka's and the HTTP
/// client's messages can echo a configuration value. The formatter writes one event per call.
struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = crate::secrets::scrub(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Sends metrics to the statsd agent at `address` (`host:port`) with `prefix`.
pub fn init_statsd(address: &str, prefix: &str) -> anyhow::Result<()> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("statsd address `{address}` is not HOST:PORT"))?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| anyhow::anyhow!("statsd exporter for {address}: a local UDP socket: {e}"))?;
    let datagrams = BufferedUdpMetricSink::with_capacity((host, port), socket, 1432)
        .map_err(|e| anyhow::anyhow!("statsd exporter for {address}: {e}"))?;
    let queue = Arc::new(QueuingMetricSink::with_capacity(datagrams, 65_536));
    // Only the first call keeps its queue; the process installs one recorder.
    let _ = STATSD_QUEUE.set(Arc::clone(&queue));
    let recorder = StatsdBuilder::from(host, port)
        .with_sink(SharedQueue(queue))
        .histogram_is_timer()
        .build(Some(prefix))
        .map_err(|e| anyhow::anyhow!("statsd exporter for {address}: {e}"))?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    Ok(())
}

/// The statsd queue, kept to be flushed at exit.
static STATSD_QUEUE: OnceLock<Arc<QueuingMetricSink>> = OnceLock::new();

/// The exporter's sink: the queue, shared with [`flush_statsd`].
struct SharedQueue(Arc<QueuingMetricSink>);

impl MetricSink for SharedQueue {
    fn emit(&self, metric: &str) -> std::io::Result<usize> {
        self.0.emit(metric)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Sends the metrics still queued or buffered, waiting up to `limit` for the queue to drain: the
/// last datagram of a run (up to 1,432 bytes of counts) would otherwise end with the process.
pub fn flush_statsd(limit: Duration) {
    let Some(queue) = STATSD_QUEUE.get() else {
        return;
    };
    let deadline = Instant::now() + limit;
    while queue.queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The queue counts a metric as drained just before handing it to the buffer.
    std::thread::sleep(Duration::from_millis(10));
    if let Err(e) = queue.flush() {
        tracing::warn!(error = %e, "could not send the last metrics to statsd");
    }
}

/// A progress bar on stderr for a long job over `total` items: position, rate and ETA. It draws
/// only when stderr is a terminal, so logs and CI output stay clean.
pub fn progress_bar(total: u64, job: &str, items: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {items}, {{per_sec}}, ETA {{eta}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(job.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test of this binary that installs the global recorder.
    #[test]
    fn what_is_still_buffered_is_sent_by_the_flush_at_exit() {
        let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        agent
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        init_statsd(&agent.local_addr().unwrap().to_string(), "flush_test").unwrap();
        // One line, far from filling a datagram: without the flush it stays in the buffer.
        // Named through a variable: tests/docs.rs lists the literal names of the code's metrics.
        let name = "exit.counted";
        metrics::counter!(name).increment(3);
        flush_statsd(Duration::from_secs(1));
        let mut datagram = vec![0u8; 2048];
        let n = agent
            .recv(&mut datagram)
            .expect("a datagram after the flush");
        assert_eq!(
            String::from_utf8_lossy(&datagram[..n]).trim_end(),
            "flush_test.exit.counted:3|c"
        );
    }
}
