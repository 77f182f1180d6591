//! The lag rule: from a series of samples of one partition to a status, rates and an ETA.
//!
//! Pure and clock-free: every sample carries its own time, so the rule is tested with synthetic
//! series and behaves the same under any scheduler.
//!
//! Why not Burrow's rule: Burrow calls a consumer OK if the lag touched the allowed value once in
//! its window. A replay that blips to zero and then falls behind again is not caught up, so here
//! CAUGHT_UP needs the lag at or under the threshold at *every* sample of a *full* window. And
//! the ETA comes from measured rates (consume rate minus produce rate), not from timestamps
//! interpolated over a log that is years old, which is what makes other exporters report an
//! "astronomical" time lag for a replay from offset zero.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// One observation of one partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since an arbitrary epoch (monotonic).
    pub at: f64,
    /// High watermark: the next offset the producer will write.
    pub high: i64,
    /// Our group's committed offset (the low watermark while nothing is committed).
    pub committed: i64,
    /// The legacy group's committed offset, when a legacy group is configured and has one.
    pub legacy_committed: Option<i64>,
}

impl Sample {
    /// Messages not yet committed by our group.
    pub fn lag(&self) -> i64 {
        (self.high - self.committed).max(0)
    }
}

/// A partition's or a group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Lag at or under the threshold at every sample of a full window.
    CaughtUp,
    /// Lag shrinking (or not yet judged: the window is not full).
    CatchingUp,
    /// Lag growing over the window while commits advance: the producer outpaces us.
    FallingBehind,
    /// Lag above zero and no commit progress for the stall time.
    Stalled,
    /// The group has no members.
    Stopped,
}

impl Status {
    /// The numeric code exported as a gauge (0 is healthy; larger is worse).
    pub fn code(self) -> u8 {
        match self {
            Status::CaughtUp => 0,
            Status::CatchingUp => 1,
            Status::FallingBehind => 2,
            Status::Stalled => 3,
            Status::Stopped => 4,
        }
    }

    /// The worst of several statuses: a group is as bad as its worst partition.
    pub fn worst(statuses: impl IntoIterator<Item = Status>) -> Option<Status> {
        statuses.into_iter().max_by_key(|s| s.code())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::CaughtUp => "CAUGHT_UP",
            Status::CatchingUp => "CATCHING_UP",
            Status::FallingBehind => "FALLING_BEHIND",
            Status::Stalled => "STALLED",
            Status::Stopped => "STOPPED",
        })
    }
}

fn status_text<S: serde::Serializer>(status: &Status, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(status)
}

/// The rule's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagRule {
    /// Lag at or under this counts as caught up.
    pub caught_up_threshold: i64,
    /// How much history a judgement needs.
    pub window: Duration,
    /// Lag above zero with no commit progress for this long is a stall.
    pub stall_after: Duration,
    /// Smoothing of the EWMA rates, per second (`rate += (x - rate) * (1 - e^(-dt·alpha))`).
    pub rate_alpha: f64,
}

impl Default for LagRule {
    fn default() -> Self {
        Self {
            caught_up_threshold: 0,
            window: Duration::from_secs(30),
            stall_after: Duration::from_secs(60),
            rate_alpha: 0.1,
        }
    }
}

/// What the rule says about a partition now.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Judgement {
    /// The status.
    #[serde(serialize_with = "status_text")]
    pub status: Status,
    /// The current offset lag.
    pub lag: i64,
    /// The legacy group's committed offset minus ours (positive: we are behind the legacy indexer).
    pub gap_to_legacy: Option<i64>,
    /// Messages committed per second (EWMA).
    pub consume_rate: f64,
    /// Messages produced per second (EWMA).
    pub produce_rate: f64,
    /// Seconds until the lag closes at the current rates; `None` if it is not closing.
    pub eta_secs: Option<f64>,
    /// Seconds since our committed offset last moved.
    pub commit_age_secs: f64,
}

/// The sliding window of one partition, with its rates.
#[derive(Debug, Clone)]
pub struct PartitionWindow {
    samples: VecDeque<Sample>,
    consume_rate: f64,
    produce_rate: f64,
    last_commit_change: Option<f64>,
}

impl Default for PartitionWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl PartitionWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            samples: VecDeque::new(),
            consume_rate: 0.0,
            produce_rate: 0.0,
            last_commit_change: None,
        }
    }

    /// Adds a sample (samples must come in time order) and judges the partition.
    /// `has_members`: `Some(false)` when the group is known to have no members.
    pub fn observe(
        &mut self,
        sample: Sample,
        rule: &LagRule,
        has_members: Option<bool>,
    ) -> Judgement {
        if let Some(previous) = self.samples.back().copied() {
            let dt = sample.at - previous.at;
            if dt > 0.0 {
                let weight = 1.0 - (-dt * rule.rate_alpha).exp();
                let consumed = (sample.committed - previous.committed).max(0) as f64 / dt;
                let produced = (sample.high - previous.high).max(0) as f64 / dt;
                self.consume_rate += (consumed - self.consume_rate) * weight;
                self.produce_rate += (produced - self.produce_rate) * weight;
            }
            if sample.committed != previous.committed {
                self.last_commit_change = Some(sample.at);
            }
        } else {
            self.last_commit_change = Some(sample.at);
        }
        self.samples.push_back(sample);
        // Keep one sample at or before the window's start, so a full window can be recognised.
        let horizon = sample.at - rule.window.as_secs_f64();
        while self.samples.len() > 2 && self.samples[1].at <= horizon {
            self.samples.pop_front();
        }
        self.judge(sample, rule, has_members)
    }

    fn judge(&self, now: Sample, rule: &LagRule, has_members: Option<bool>) -> Judgement {
        let lag = now.lag();
        let commit_age_secs = now.at - self.last_commit_change.unwrap_or(now.at);
        let closing = self.consume_rate - self.produce_rate;
        let eta_secs = match lag {
            0 => Some(0.0),
            _ if closing > 1e-9 => Some(lag as f64 / closing),
            _ => None,
        };
        let first = self.samples.front().copied().unwrap_or(now);
        let window_full = now.at - first.at >= rule.window.as_secs_f64();
        let status = if has_members == Some(false) {
            Status::Stopped
        } else if lag > 0 && commit_age_secs >= rule.stall_after.as_secs_f64() {
            Status::Stalled
        } else if window_full
            && self
                .samples
                .iter()
                .all(|s| s.lag() <= rule.caught_up_threshold)
        {
            Status::CaughtUp
        } else if window_full && now.lag() > first.lag() && now.committed > first.committed {
            Status::FallingBehind
        } else {
            Status::CatchingUp
        };
        Judgement {
            status,
            lag,
            gap_to_legacy: now.legacy_committed.map(|legacy| legacy - now.committed),
            consume_rate: self.consume_rate,
            produce_rate: self.produce_rate,
            eta_secs,
            commit_age_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> LagRule {
        LagRule {
            caught_up_threshold: 0,
            window: Duration::from_secs(10),
            stall_after: Duration::from_secs(20),
            rate_alpha: 0.5,
        }
    }

    /// Feeds `(high, committed)` pairs one second apart and returns every judgement.
    fn feed(series: &[(i64, i64)]) -> Vec<Judgement> {
        let mut w = PartitionWindow::new();
        series
            .iter()
            .enumerate()
            .map(|(t, (high, committed))| {
                w.observe(
                    Sample {
                        at: t as f64,
                        high: *high,
                        committed: *committed,
                        legacy_committed: None,
                    },
                    &rule(),
                    None,
                )
            })
            .collect()
    }

    #[test]
    fn a_replay_from_zero_shrinking_steadily_is_catching_up_with_a_finite_eta() {
        let series: Vec<_> = (0..30).map(|t| (100_000, t * 3_000)).collect();
        let judgements = feed(&series);
        let last = judgements.last().unwrap();
        assert_eq!(last.status, Status::CatchingUp);
        let eta = last.eta_secs.unwrap();
        assert!(
            (eta - 13_000.0 / 3_000.0).abs() < 1.0,
            "about 4.3 s left at 3k/s, got {eta}"
        );
        assert!(last.consume_rate > 2_500.0, "{}", last.consume_rate);
    }

    #[test]
    fn a_producer_outpacing_the_consumer_is_falling_behind_with_no_eta() {
        let series: Vec<_> = (0..30).map(|t| (1_000 + t * 200, t * 100)).collect();
        let last = *feed(&series).last().unwrap();
        assert_eq!(last.status, Status::FallingBehind);
        assert_eq!(last.eta_secs, None);
    }

    #[test]
    fn no_commit_progress_with_lag_is_a_stall() {
        let mut series: Vec<_> = (0..5).map(|t| (1_000, t * 100)).collect();
        series.extend((0..25).map(|_| (1_000, 400)));
        let judgements = feed(&series);
        assert_eq!(
            judgements[10].status,
            Status::CatchingUp,
            "not yet stalled after 6 s"
        );
        assert_eq!(judgements.last().unwrap().status, Status::Stalled);
    }

    #[test]
    fn a_blip_to_zero_followed_by_growth_is_not_caught_up() {
        let mut series: Vec<_> = (0..10).map(|t| (1_000, 1_000 - 100 * (9 - t))).collect();
        series.extend((1..=15).map(|t| (1_000 + t * 50, 1_000 + t * 10)));
        let judgements = feed(&series);
        assert!(
            judgements.iter().all(|j| j.status != Status::CaughtUp),
            "{:?}",
            judgements.iter().map(|j| j.status).collect::<Vec<_>>()
        );
        assert_eq!(judgements.last().unwrap().status, Status::FallingBehind);
    }

    #[test]
    fn a_steady_state_at_zero_is_caught_up_once_the_window_is_full() {
        let series: Vec<_> = (0..15).map(|t| (500 + t * 10, 500 + t * 10)).collect();
        let judgements = feed(&series);
        assert_eq!(
            judgements[5].status,
            Status::CatchingUp,
            "half a window is not enough"
        );
        assert_eq!(judgements.last().unwrap().status, Status::CaughtUp);
        assert_eq!(judgements.last().unwrap().eta_secs, Some(0.0));
    }

    #[test]
    fn a_group_without_members_is_stopped() {
        let mut w = PartitionWindow::new();
        let j = w.observe(
            Sample {
                at: 0.0,
                high: 10,
                committed: 5,
                legacy_committed: Some(9),
            },
            &rule(),
            Some(false),
        );
        assert_eq!(j.status, Status::Stopped);
        assert_eq!(j.gap_to_legacy, Some(4));
    }

    #[test]
    fn the_worst_partition_decides_the_group() {
        assert_eq!(
            Status::worst([Status::CaughtUp, Status::Stalled, Status::CatchingUp]),
            Some(Status::Stalled)
        );
        assert_eq!(Status::worst([]), None);
    }
}
