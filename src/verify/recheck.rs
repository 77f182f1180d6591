//! Settle rounds: every difference the first reading found is read again once both indexers'
//! groups have committed past what it waits for ([`super::settle`]), for at most
//! `--settle-rounds` rounds and `--settle-timeout-secs`. A difference that disappears was lag
//! (`settled`); one that persists is real (`different`); one whose wait a group never reached is
//! `unsettled`, with the reason naming that group.
//!
//! Documents are read again by id (`_mget` on both sides, real-time, with their versions);
//! queries are run again in [`super::requery`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pair::{self, Reading};
use super::positions::{Committed, Positions};
use super::settle::{self, Judgement, Offsets, SameCommand, Versions, Wait};
use super::Side;
use crate::es::read::mget;

/// How often the groups' commits are read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// How settling runs.
pub struct Settler {
    /// The topic's and the groups' positions.
    pub positions: Positions,
    /// At most this many rounds.
    pub rounds: u32,
    /// The time allowed, for the documents and again for the queries.
    pub timeout: Duration,
    /// Both indices carry offsets as versions (the version rule applies).
    pub offset_versions: bool,
}

/// A difference waiting to be read again.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The document's routing, for the lookups.
    pub routing: Option<String>,
    /// What it waits for.
    pub wait: Wait,
    /// Its versions when last read.
    pub versions: Versions,
    /// The legacy document last read (`None`: absent, or not read).
    pub legacy: Option<Value>,
    /// The new document last read (`None`: absent, or only its id was read).
    pub new: Option<Value>,
}

/// What became of one difference.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Equal once read again: it was lag.
    Settled,
    /// Still different: real. What it showed last, with its versions.
    Different(Reading, Versions),
    /// Not judged in time: why, and its versions when last read.
    Unsettled(String, Versions),
}

/// What a reading after a wait leads to.
enum Next {
    /// A verdict.
    Judged(Verdict),
    /// Another wait, and the reading it follows.
    Again(Pending),
}

/// The documents' verdicts and what they were judged on.
pub struct Settled {
    /// Each difference's verdict.
    pub verdicts: Vec<(String, Verdict)>,
    /// Rounds run.
    pub rounds: u32,
    /// The groups' committed offsets last read.
    pub committed: Committed,
}

impl Settler {
    /// Reads the groups' commits until every wait of `waits` is passed or `deadline` is reached;
    /// returns the last commits read.
    pub(super) async fn until_passed<'w>(
        &self,
        waits: impl Iterator<Item = &'w Wait> + Clone,
        deadline: Instant,
    ) -> anyhow::Result<Committed> {
        loop {
            let committed = self.positions.committed().await?;
            let all = waits
                .clone()
                .all(|w| w.short(&committed.legacy, &committed.new).is_none());
            if all || Instant::now() >= deadline {
                return Ok(committed);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Settles the documents' differences.
    pub async fn documents(
        &self,
        mut pending: BTreeMap<String, Pending>,
        legacy: &Side<'_>,
        new: &Side<'_>,
        ignore: &super::diff::Ignore,
        page_size: usize,
    ) -> anyhow::Result<Settled> {
        let deadline = Instant::now() + self.timeout;
        let mut verdicts = Vec::new();
        let mut committed = Committed::default();
        let mut rounds = 0;
        while rounds < self.rounds && !pending.is_empty() && Instant::now() < deadline {
            committed = self
                .until_passed(pending.values().map(|p| &p.wait), deadline)
                .await?;
            let ready: Vec<(String, Option<String>)> = pending
                .iter()
                .filter(|(_, p)| p.wait.short(&committed.legacy, &committed.new).is_none())
                .map(|(id, p)| (id.clone(), p.routing.clone()))
                .collect();
            if ready.is_empty() {
                break;
            }
            rounds += 1;
            let last = rounds == self.rounds;
            tracing::info!(
                round = rounds,
                ready = ready.len(),
                waiting = pending.len() - ready.len(),
                "verify: reading differences again"
            );
            for chunk in ready.chunks(page_size.max(1)) {
                let ids: Vec<(&str, Option<&str>)> = chunk
                    .iter()
                    .map(|(id, r)| (id.as_str(), r.as_deref()))
                    .collect();
                let l = mget(legacy.client, legacy.cluster, legacy.index, &ids, true).await?;
                let n = mget(new.client, new.cluster, new.index, &ids, true).await?;
                let high = self.positions.high_watermarks().await?;
                for (((id, _), l), n) in chunk.iter().zip(l).zip(n) {
                    let Some(before) = pending.remove(id) else {
                        continue;
                    };
                    let now = Pending {
                        routing: before.routing.clone(),
                        wait: Wait::default(),
                        versions: Versions {
                            legacy: l.as_ref().and_then(|h| h.version),
                            new: n.as_ref().and_then(|h| h.version),
                        },
                        legacy: l.map(|h| h.source),
                        new: n.map(|h| h.source),
                    };
                    match self.judge_again(&before, now, ignore, &high, last) {
                        Next::Judged(verdict) => verdicts.push((id.clone(), verdict)),
                        Next::Again(next) => {
                            pending.insert(id.clone(), next);
                        }
                    }
                }
            }
        }
        if !pending.is_empty() {
            committed = self.positions.committed().await?;
        }
        let timeout = self.timeout.as_secs();
        for (id, p) in pending {
            let reason = match p.wait.short(&committed.legacy, &committed.new) {
                Some(short) => short.reason(self.group_of(short.indexer), timeout),
                None => format!(
                    "both groups got past it only as the {timeout}s settle timeout ran out; run verify again, or raise --settle-timeout-secs"
                ),
            };
            verdicts.push((id, Verdict::Unsettled(reason, p.versions)));
        }
        Ok(Settled {
            verdicts,
            rounds,
            committed,
        })
    }

    /// A verdict on the reading `now`, taken after `before`'s wait, or what it waits for next.
    fn judge_again(
        &self,
        before: &Pending,
        now: Pending,
        ignore: &super::diff::Ignore,
        high: &Offsets,
        last: bool,
    ) -> Next {
        let reading = pair::read(now.legacy.as_ref(), now.new.as_ref(), ignore);
        if reading == Reading::Equal {
            return Next::Judged(Verdict::Settled);
        }
        if !reading.may_be_lag() {
            return Next::Judged(Verdict::Different(reading, now.versions));
        }
        if self.offset_versions {
            if let Some(verdict) = same_command(before, &now, ignore) {
                return Next::Judged(verdict);
            }
        }
        match settle::judge(
            Some(before.versions),
            now.versions,
            self.offset_versions,
            high,
        ) {
            Judgement::Different => Next::Judged(Verdict::Different(reading, now.versions)),
            Judgement::Wait(_) if last => {
                match settle::after_last_round(now.versions, self.offset_versions) {
                    Some(reason) => Next::Judged(Verdict::Unsettled(reason, now.versions)),
                    None => Next::Judged(Verdict::Different(reading, now.versions)),
                }
            }
            Judgement::Wait(wait) => Next::Again(Pending { wait, ..now }),
        }
    }

    /// The name of `indexer`'s group.
    pub(super) fn group_of(&self, indexer: settle::Indexer) -> &str {
        let groups = self.positions.groups();
        match indexer {
            settle::Indexer::Legacy => &groups.legacy_group,
            settle::Indexer::New => &groups.group,
        }
    }
}

/// The verdict of comparing the two documents, one read before and one now, that hold the same
/// offset version ([`settle::same_command`]), when both were read whole.
fn same_command(before: &Pending, now: &Pending, ignore: &super::diff::Ignore) -> Option<Verdict> {
    let (legacy, new, versions) = match settle::same_command(before.versions, now.versions)? {
        SameCommand::LegacyNowNewBefore => (
            now.legacy.as_ref()?,
            before.new.as_ref()?,
            Versions {
                legacy: now.versions.legacy,
                new: before.versions.new,
            },
        ),
        SameCommand::LegacyBeforeNewNow => (
            before.legacy.as_ref()?,
            now.new.as_ref()?,
            Versions {
                legacy: before.versions.legacy,
                new: now.versions.new,
            },
        ),
    };
    Some(match pair::read(Some(legacy), Some(new), ignore) {
        Reading::Equal => Verdict::Settled,
        reading => Verdict::Different(reading, versions),
    })
}
