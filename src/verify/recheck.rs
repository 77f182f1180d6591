//! Settle rounds: every difference the first reading found is read again once both indexers'
//! groups have committed past what it waits for ([`super::settle`]), for at most
//! `--settle-rounds` rounds and `--settle-timeout-secs`. A difference that disappears was lag
//! (`settled`); one that persists is real (`different`); one whose wait a group never reached is
//! `unsettled`, with the reason naming that group.
//!
//! Documents are read again by id (`_mget` on both sides, real-time, with their versions), and a
//! query whose hits differed is run again after a refresh of both indices.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::pair::{self, Reading};
use super::positions::{Committed, Positions};
use super::queries::{QueryOutcome, UserQuery};
use super::settle::{self, Judgement, Offsets, Versions, Wait};
use super::Side;
use crate::es::read::mget;

/// How often the groups' commits are read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// How settling runs.
#[derive(Clone)]
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
    async fn until_passed<'w>(
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
                    let before = pending.get(id).map(|p| p.versions);
                    let versions = Versions {
                        legacy: l.as_ref().and_then(|h| h.version),
                        new: n.as_ref().and_then(|h| h.version),
                    };
                    let reading = pair::read(
                        l.as_ref().map(|h| &h.source),
                        n.as_ref().map(|h| &h.source),
                        ignore,
                    );
                    let verdict = self.judge_again(before, reading, versions, &high, last);
                    match verdict {
                        Ok(verdict) => {
                            pending.remove(id);
                            verdicts.push((id.clone(), verdict));
                        }
                        Err(next) => {
                            if let Some(p) = pending.get_mut(id) {
                                *p = Pending {
                                    routing: p.routing.take(),
                                    ..next
                                };
                            }
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

    /// A verdict on a reading taken after a wait, or what it waits for next.
    fn judge_again(
        &self,
        before: Option<Versions>,
        reading: Reading,
        versions: Versions,
        high: &Offsets,
        last: bool,
    ) -> Result<Verdict, Pending> {
        if reading == Reading::Equal {
            return Ok(Verdict::Settled);
        }
        if !reading.may_be_lag() {
            return Ok(Verdict::Different(reading, versions));
        }
        match settle::judge(before, versions, self.offset_versions, high) {
            Judgement::Different => Ok(Verdict::Different(reading, versions)),
            Judgement::Wait(_) if last => {
                match settle::after_last_round(versions, self.offset_versions) {
                    Some(reason) => Ok(Verdict::Unsettled(reason, versions)),
                    None => Ok(Verdict::Different(reading, versions)),
                }
            }
            Judgement::Wait(wait) => Err(Pending {
                routing: None,
                wait,
                versions,
            }),
        }
    }

    fn group_of(&self, indexer: settle::Indexer) -> &str {
        let groups = self.positions.groups();
        match indexer {
            settle::Indexer::Legacy => &groups.legacy_group,
            settle::Indexer::New => &groups.group,
        }
    }

    /// Runs each differing query again once both groups have passed the watermarks read after
    /// it ran, until its hits are equal or the rounds run out. Returns every outcome, settled
    /// ones with the class `equal`.
    pub async fn queries(
        &self,
        mut pending: Vec<(UserQuery, QueryOutcome, Offsets)>,
        legacy: &Side<'_>,
        new: &Side<'_>,
        max_hits: usize,
    ) -> anyhow::Result<Vec<QueryOutcome>> {
        let deadline = Instant::now() + self.timeout;
        let mut done = Vec::new();
        let waits = |p: &[(UserQuery, QueryOutcome, Offsets)]| -> Vec<Wait> {
            p.iter()
                .map(|(_, _, high)| Wait {
                    legacy: high.clone(),
                    new: high.clone(),
                })
                .collect()
        };
        for round in 1..=self.rounds {
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            let all = waits(&pending);
            let committed = self.until_passed(all.iter(), deadline).await?;
            let (ready, waiting): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .zip(all)
                .partition(|(_, w)| w.short(&committed.legacy, &committed.new).is_none());
            pending = waiting.into_iter().map(|(p, _)| p).collect();
            if ready.is_empty() {
                break;
            }
            crate::es::refresh(legacy.client, legacy.index).await?;
            crate::es::refresh(new.client, new.index).await?;
            for ((query, _, _), _) in ready {
                let outcome = super::run_query(legacy, new, &query, max_hits).await?;
                // Equal, or still differing at the last round: judged.
                if outcome.class == "equal" || round == self.rounds {
                    done.push(outcome);
                } else {
                    let high = self.positions.high_watermarks().await?;
                    pending.push((query, outcome, high));
                }
            }
        }
        let committed = self.positions.committed().await?;
        let timeout = self.timeout.as_secs();
        for (_, mut outcome, high) in pending {
            let wait = Wait {
                legacy: high.clone(),
                new: high,
            };
            outcome.class = "unsettled";
            outcome.reason = Some(match wait.short(&committed.legacy, &committed.new) {
                Some(short) => short.reason(self.group_of(short.indexer), timeout),
                None => {
                    format!("both groups got past it only as the {timeout}s settle timeout ran out")
                }
            });
            done.push(outcome);
        }
        Ok(done)
    }
}
