//! Live query parity: a query whose hits differed is run again once both groups have committed
//! past the watermarks read after it ran, until its hits are equal or the rounds run out.
//!
//! A query over hot documents is rarely equal at one instant while both indexers apply a steady
//! stream at different moments, so with offset versions a round also settles when every id the
//! two sides disagree on was in flight for the whole run ([`settle::in_flight_throughout`]): its
//! versions are read just before the searches and just after. Whether such a document ends up
//! the same on both sides is the document check's verdict; the query's hits differ only through
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::queries::{QueryOutcome, UserQuery};
use super::recheck::Settler;
use super::settle::{self, Offsets, Versions, Wait};
use super::Side;
use crate::es::read::mget;

/// A query whose hits differ, waiting to be run again.
pub struct PendingQuery {
    /// The query.
    pub query: UserQuery,
    /// How it compared last.
    pub outcome: QueryOutcome,
    /// The high watermarks read after it ran.
    pub high: Offsets,
    /// Every id only one side hit.
    pub ids: BTreeSet<String>,
}

impl PendingQuery {
    fn wait(&self) -> Wait {
        Wait {
            legacy: self.high.clone(),
            new: self.high.clone(),
        }
    }
}

/// The versions of `ids` on both sides, read by id.
async fn versions(
    legacy: &Side<'_>,
    new: &Side<'_>,
    ids: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, Versions>> {
    let mut out = BTreeMap::new();
    let ids: Vec<&String> = ids.iter().collect();
    for chunk in ids.chunks(1_000) {
        let keys: Vec<(&str, Option<&str>)> = chunk.iter().map(|id| (id.as_str(), None)).collect();
        let l = mget(legacy.client, legacy.cluster, legacy.index, &keys, false).await?;
        let n = mget(new.client, new.cluster, new.index, &keys, false).await?;
        for ((id, l), n) in chunk.iter().zip(l).zip(n) {
            let versions = Versions {
                legacy: l.and_then(|h| h.version),
                new: n.and_then(|h| h.version),
            };
            out.insert((*id).clone(), versions);
        }
    }
    Ok(out)
}

impl Settler {
    /// Runs each differing query again, up to the rounds and the timeout. Returns every outcome,
    /// settled ones with the class `equal`.
    pub async fn queries(
        &self,
        mut pending: Vec<PendingQuery>,
        legacy: &Side<'_>,
        new: &Side<'_>,
        max_hits: usize,
    ) -> anyhow::Result<Vec<QueryOutcome>> {
        let deadline = Instant::now() + self.timeout;
        let mut done = Vec::new();
        for round in 1..=self.rounds {
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            let waits: Vec<Wait> = pending.iter().map(PendingQuery::wait).collect();
            let committed = self.until_passed(waits.iter(), deadline).await?;
            let (ready, waiting): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .zip(waits)
                .partition(|(_, w)| w.short(&committed.legacy, &committed.new).is_none());
            pending = waiting.into_iter().map(|(p, _)| p).collect();
            if ready.is_empty() {
                break;
            }
            let suspects: BTreeSet<String> = ready
                .iter()
                .flat_map(|(p, _)| p.ids.iter().cloned())
                .collect();
            let before = versions(legacy, new, &suspects).await?;
            crate::es::refresh(legacy.client, legacy.index).await?;
            crate::es::refresh(new.client, new.index).await?;
            let mut ran = Vec::with_capacity(ready.len());
            for (p, _) in ready {
                let (outcome, ids) = super::run_query(legacy, new, &p.query, max_hits).await?;
                ran.push((p, outcome, ids));
            }
            let disputed: BTreeSet<String> = ran
                .iter()
                .flat_map(|(_, _, ids)| ids.iter().cloned())
                .collect();
            let after = versions(legacy, new, &disputed).await?;
            let high = self.positions.high_watermarks().await?;
            for (p, outcome, ids) in ran {
                let in_flight = |id: &String| match (before.get(id), after.get(id)) {
                    (Some(b), Some(a)) => settle::in_flight_throughout(*b, *a),
                    _ => false,
                };
                let lag = self.offset_versions && ids.iter().all(in_flight);
                if outcome.class == "equal" || lag {
                    done.push(QueryOutcome {
                        class: "equal",
                        ..outcome
                    });
                } else if round == self.rounds {
                    done.push(outcome);
                } else {
                    pending.push(PendingQuery {
                        query: p.query,
                        outcome,
                        high: high.clone(),
                        ids,
                    });
                }
            }
        }
        let committed = self.positions.committed().await?;
        let timeout = self.timeout.as_secs();
        for p in pending {
            let reason = match p.wait().short(&committed.legacy, &committed.new) {
                Some(short) => short.reason(self.group_of(short.indexer), timeout),
                None => {
                    format!("both groups got past it only as the {timeout}s settle timeout ran out")
                }
            };
            done.push(QueryOutcome {
                class: "unsettled",
                reason: Some(reason),
                ..p.outcome
            });
        }
        Ok(done)
    }
}
