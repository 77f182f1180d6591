//! Logs and metrics: `tracing` to stderr (text or JSON), `metrics` to statsd.
//!
//! Metric names are relative; the statsd exporter adds the prefix (`dual_indexer` by default),
//! and labels become DogStatsD tags (`topic`, `partition`, `class`, `result`).

use std::fmt;
use std::str::FromStr;

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
    let recorder = StatsdBuilder::from(host, port)
        .with_queue_size(65_536)
        .with_buffer_size(1432)
        .histogram_is_timer()
        .build(Some(prefix))
        .map_err(|e| anyhow::anyhow!("statsd exporter for {address}: {e}"))?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    Ok(())
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
