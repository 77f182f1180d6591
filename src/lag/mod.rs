//! Consumer lag you can alert on: per-partition offset lag, gap to the legacy group, rates, ETA
//! and a status judged over a sliding window.
//!
//! - [`rule`] is the pure judgement over samples.

pub mod monitor;
pub mod rule;

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use tokio::sync::watch;

use monitor::LagReport;
use rule::{LagRule, Status};

/// What the background monitor last saw, published after every sample.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    /// When it last sampled, whether or not sampling worked.
    pub at: Option<Instant>,
    /// The last report it produced.
    pub report: Option<LagReport>,
}

impl Sampled {
    /// The group's status in the last report.
    pub fn status(&self) -> Option<Status> {
        self.report.as_ref().and_then(LagReport::status)
    }
}

/// What the background lag monitor watches and how often.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// The command topic.
    pub topic: String,
    /// Our group.
    pub group: String,
    /// The legacy indexer's group, for the gap to legacy.
    pub legacy_group: Option<String>,
    /// The status rule.
    pub rule: LagRule,
    /// Time between samples.
    pub interval: Duration,
}

/// Takes one sample on the blocking pool (librdkafka's calls block) and hands the monitor back.
pub async fn sample(
    mut monitor: monitor::LagMonitor,
) -> anyhow::Result<(monitor::LagMonitor, anyhow::Result<monitor::LagReport>)> {
    let (monitor, result) = tokio::task::spawn_blocking(move || {
        let result = monitor.sample();
        (monitor, result)
    })
    .await?;
    Ok((monitor, result))
}

/// Samples every `interval` until a whole window has been judged, and returns the last report.
pub async fn judge_window(
    mut monitor: monitor::LagMonitor,
    window: Duration,
    interval: Duration,
) -> anyhow::Result<monitor::LagReport> {
    let mut first_done: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let began = std::time::Instant::now();
        let (returned, report) = sample(monitor).await?;
        monitor = returned;
        let report = report?;
        // The window is covered once a sample began a whole window after the first one ended
        // (and so after the first sample's own timestamp).
        match first_done {
            None => first_done = Some(std::time::Instant::now()),
            Some(first) if began >= first + window => return Ok(report),
            Some(_) => {}
        }
    }
}

/// Starts sampling in the background: exports the `lag.*` gauges and publishes what it saw on
/// the returned channel after every sample. Our group's offsets are read through `ours`.
pub fn spawn_monitor(
    ours: Box<dyn monitor::OffsetsClient>,
    config: &ClientConfig,
    settings: MonitorSettings,
) -> anyhow::Result<watch::Receiver<Sampled>> {
    let mut monitor = monitor::LagMonitor::sharing(
        ours,
        config,
        &settings.topic,
        &settings.group,
        settings.legacy_group.as_deref(),
        settings.rule,
    )?;
    let (tx, rx) = watch::channel(Sampled::default());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.interval);
        // A sample slower than the interval (a broker not answering, the consumer closing) is
        // followed by one more, not by a burst of the ticks it missed.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sampled = tokio::task::spawn_blocking(move || {
                let result = monitor.sample();
                (monitor, result)
            })
            .await;
            let Ok((returned, result)) = sampled else {
                tracing::error!("the lag monitor panicked; lag is no longer reported");
                return;
            };
            monitor = returned;
            match result {
                Ok(report) => {
                    monitor::export(&report);
                    tx.send_replace(Sampled {
                        at: Some(Instant::now()),
                        report: Some(report),
                    });
                }
                Err(e) if e.chain().any(|cause| cause.is::<monitor::ClientClosed>()) => {
                    tracing::debug!("the replay's consumer has closed; the lag monitor stops");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sampling the lag failed; will retry");
                    tx.send_modify(|sampled| sampled.at = Some(Instant::now()));
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A client whose every call fails with `error()`, counting the samples it was asked for.
    struct Failing {
        samples: Arc<AtomicUsize>,
        error: fn() -> anyhow::Error,
    }

    impl monitor::OffsetsClient for Failing {
        fn partitions(&self, _: &str) -> anyhow::Result<Vec<i32>> {
            self.samples.fetch_add(1, Ordering::SeqCst);
            Err((self.error)())
        }

        fn committed(&self, _: &str, _: &[i32]) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
            Err((self.error)())
        }

        fn watermarks(&self, _: &str, _: i32) -> anyhow::Result<(i64, i64)> {
            Err((self.error)())
        }
    }

    /// Runs a monitor on `error` for `run` and returns how many samples it took and whether
    /// it is still running.
    async fn monitor_failing_with(error: fn() -> anyhow::Error, run: Duration) -> (usize, bool) {
        let samples = Arc::new(AtomicUsize::new(0));
        let client = Failing {
            samples: Arc::clone(&samples),
            error,
        };
        let settings = MonitorSettings {
            topic: "commands".into(),
            group: "dual-indexer".into(),
            legacy_group: None,
            rule: rule::LagRule::default(),
            interval: Duration::from_millis(10),
        };
        let mut rx = spawn_monitor(Box::new(client), &ClientConfig::new(), settings).unwrap();
        let running = tokio::time::timeout(run, async { while rx.changed().await.is_ok() {} })
            .await
            .is_err();
        (samples.load(Ordering::SeqCst), running)
    }

    #[tokio::test]
    async fn the_monitor_stops_quietly_once_the_replays_consumer_has_closed() {
        let (samples, running) = monitor_failing_with(
            || anyhow::Error::new(monitor::ClientClosed).context("reading our offsets"),
            Duration::from_millis(300),
        )
        .await;
        assert!(!running, "the monitor ended");
        assert_eq!(samples, 1, "no sample after the close was seen");
    }

    #[tokio::test]
    async fn any_other_failure_is_retried() {
        let (samples, running) = monitor_failing_with(
            || anyhow::anyhow!("the broker did not answer"),
            Duration::from_millis(300),
        )
        .await;
        assert!(running, "the monitor keeps sampling");
        assert!(samples > 1, "sampled {samples} times");
    }
}
