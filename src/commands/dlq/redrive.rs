//! `dual-indexer dlq redrive`: apply dead letters again once their cause is fixed (a field added
//! to the mapping, a producer bug understood).
//!
//! Each entry goes through today's decode → transform → bulk path with the version it would have
//! had: its origin offset, or the envelope's field under the configured `--version-source`. So a
//! redriven command can never overwrite a newer state written since: Elasticsearch answers 409,
//! reported as "already applied". What is refused again moves to the next dead-letter topic with
//! its origin headers and one more attempt (or stays, with `--keep`); an entry whose payload was
//! cut to fit the broker is reported and never applied. The topic is read in the redrive's own
//! consumer group, so a second run reads only what arrived since.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{DlqTopicArgs, FilterArgs};
use crate::cli::{heading, EnvelopeArgs, EsArgs, KafkaArgs};
use crate::dlq::inspect::Entry;
use crate::dlq::{DeadLetter, DeadLetterQueue, ErrorClass};
use crate::envelope::Record as Message;
use crate::es::ClusterSecurity;
use crate::sink::{Batch, BulkSink, ItemOutcome, Provenance, RetryPolicy};
use crate::source::offsets::Ticket;
use crate::source::topics::{self, Record};
use crate::transform::Schema;

/// Entries per bulk request.
const BATCH: usize = 500;

/// `dual-indexer dlq redrive`.
#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub kafka: KafkaArgs,
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub topics: DlqTopicArgs,
    /// Where entries refused again go. Default: the dead-letter topic's name with `.2` appended
    /// (`.3` after a `.2`, and so on).
    #[arg(long, help_heading = heading::KAFKA)]
    pub next_dlq_topic: Option<String>,
    /// The redrive's own consumer group: a second run reads only entries that arrived since.
    #[arg(long, default_value = "dual-indexer-redrive", help_heading = heading::KAFKA)]
    pub redrive_group: String,
    #[command(flatten, next_help_heading = heading::ES)]
    pub es: EsArgs,
    /// The index or write alias to write to.
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2", help_heading = heading::ES)]
    pub index: String,
    /// The document shape to write: `new` (keyToValue tags) or `legacy`.
    #[arg(long, env = "DUAL_INDEXER_SCHEMA", default_value = "new", help_heading = heading::ES)]
    pub schema: Schema,
    #[command(flatten, next_help_heading = heading::ENVELOPE)]
    pub envelope: EnvelopeArgs,
    #[command(flatten, next_help_heading = heading::REPORT)]
    pub filter: FilterArgs,
    /// Decode and transform only: write nothing, move nothing, commit nothing.
    #[arg(long, help_heading = heading::REPORT)]
    pub dry_run: bool,
    /// Leave entries refused again where they are instead of moving them (the group's offsets
    /// then stay too, so the next run sees them again).
    #[arg(long, help_heading = heading::REPORT)]
    pub keep: bool,
    /// One JSON object per entry, then the summary.
    #[arg(long, help_heading = heading::REPORT)]
    pub json: bool,
    /// Seconds to read the topic for before giving up.
    #[arg(long, default_value_t = 120, help_heading = heading::REPORT)]
    pub timeout_secs: u64,
}

/// What became of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Outcome {
    /// Written (or, with --dry-run, would be).
    Applied,
    /// A newer or equal version was there: the entry is older than the document's state.
    AlreadyApplied,
    /// Refused again, with why.
    RefusedAgain {
        class: ErrorClass,
        reason: String,
        es_type: Option<String>,
    },
    /// Its payload was cut to fit the broker: never applied.
    Truncated,
}

/// The counts of a redrive.
#[derive(Debug, Default, Serialize)]
struct Tally {
    read: usize,
    selected: usize,
    applied: usize,
    already_applied: usize,
    refused_again: usize,
    truncated: usize,
    moved_to: Option<String>,
    committed: bool,
    dry_run: bool,
}

impl Tally {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Applied => self.applied += 1,
            Outcome::AlreadyApplied => self.already_applied += 1,
            Outcome::RefusedAgain { .. } => self.refused_again += 1,
            Outcome::Truncated => self.truncated += 1,
        }
        let name = match outcome {
            Outcome::Applied => "applied",
            Outcome::AlreadyApplied => "already_applied",
            Outcome::RefusedAgain { .. } => "refused_again",
            Outcome::Truncated => "truncated",
        };
        metrics::counter!("dlq.redrive", "outcome" => name).increment(1);
    }
}

/// The next generation's topic: `x.dlq` → `x.dlq.2`, `x.dlq.2` → `x.dlq.3`.
fn next_generation(topic: &str) -> String {
    match topic.rsplit_once('.') {
        Some((base, n)) if n.parse::<u32>().is_ok_and(|n| n >= 2) => {
            format!("{base}.{}", n.parse::<u32>().unwrap_or(1) + 1)
        }
        _ => format!("{topic}.2"),
    }
}

/// Runs `dlq redrive`.
pub async fn run(args: DlqRedriveArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    let plan = args
        .envelope
        .plan()
        .map_err(|e| anyhow::anyhow!("the envelope mapping: {e}"))?;
    let topic = args.topics.name();
    let next_topic = args
        .next_dlq_topic
        .clone()
        .unwrap_or_else(|| next_generation(&topic));
    anyhow::ensure!(
        next_topic != topic,
        "--next-dlq-topic must differ from the dead-letter topic being redriven"
    );
    let config = args.kafka.client_config()?;
    let client = args.es.client(security).await?;
    tracing::info!(topic = %topic, group = %args.redrive_group, "reading the dead-letter topic from the redrive group's offsets to its end");
    let (records, ends) = {
        let (config, group, read) = (config.clone(), args.redrive_group.clone(), topic.clone());
        let timeout = Duration::from_secs(args.timeout_secs);
        tokio::task::spawn_blocking(move || {
            topics::read_tail(&config, &group, true, &read, timeout)
        })
        .await??
    };
    let filter = args.filter.filter();
    let chosen: Vec<(Entry, &Record)> = records
        .iter()
        .map(|r| (Entry::from_record(r), r))
        .filter(|(e, _)| filter.admits(e))
        .collect();
    let mut tally = Tally {
        read: records.len(),
        selected: chosen.len(),
        dry_run: args.dry_run,
        ..Tally::default()
    };
    let mut outcomes: Vec<Option<Outcome>> = vec![None; chosen.len()];
    let sink: BulkSink<Ticket> = BulkSink::new(
        client,
        &args.index,
        RetryPolicy::default(),
        Duration::from_secs(60),
    );
    for (first, group) in chosen
        .chunks(BATCH)
        .enumerate()
        .map(|(i, g)| (i * BATCH, g))
    {
        let mut batch = Batch::with_capacity(1 << 20, group.len());
        for (i, (entry, record)) in group.iter().enumerate() {
            let n = first + i;
            if entry.truncated_from.is_some() {
                outcomes[n] = Some(Outcome::Truncated);
                continue;
            }
            let message = Message {
                payload: Some(&record.payload),
                key: record.key.as_deref(),
                offset: entry.source_offset.unwrap_or(-1),
                timestamp: None,
                headers: None,
            };
            match plan.prepare(args.schema, &message) {
                Err(rejection) => {
                    outcomes[n] = Some(Outcome::RefusedAgain {
                        class: ErrorClass::from(&rejection),
                        reason: rejection.to_string(),
                        es_type: None,
                    })
                }
                Ok(_) if args.dry_run => outcomes[n] = Some(Outcome::Applied),
                Ok(write) => {
                    let ticket = Ticket {
                        partition: 0,
                        offset: n as i64,
                        epoch: 0,
                    };
                    let provenance = Provenance {
                        ticket,
                        key: record.key.as_deref(),
                        payload: &record.payload,
                    };
                    batch.push(write, provenance);
                }
            }
        }
        tracing::info!(
            done = (first + group.len()).min(chosen.len()),
            of = chosen.len(),
            "redrive progress"
        );
        if batch.is_empty() {
            continue;
        }
        let delivered = sink
            .deliver(batch)
            .await
            .map_err(|e| anyhow::anyhow!("redriving to `{}`: {e}", args.index))?;
        for (ticket, outcome) in delivered {
            outcomes[ticket.offset as usize] = Some(match outcome {
                ItemOutcome::Applied(_) => Outcome::Applied,
                ItemOutcome::AlreadyApplied | ItemOutcome::Revoked => Outcome::AlreadyApplied,
                ItemOutcome::DeadLetter(refusal) => Outcome::RefusedAgain {
                    class: refusal.class,
                    reason: refusal.reason,
                    es_type: refusal.es_type,
                },
            });
        }
    }

    let mut queues: HashMap<String, DeadLetterQueue> = HashMap::new();
    for ((entry, record), outcome) in chosen.iter().zip(&outcomes) {
        let outcome = outcome.clone().unwrap_or(Outcome::AlreadyApplied);
        tally.count(&outcome);
        report(args.json, entry, &outcome);
        let Outcome::RefusedAgain {
            class,
            reason,
            es_type,
        } = &outcome
        else {
            continue;
        };
        if args.dry_run || args.keep {
            continue;
        }
        if queues.is_empty() {
            topics::ensure_topic(&config, &next_topic, 1).await?;
        }
        let queue = match queues.entry(entry.source_topic.clone()) {
            std::collections::hash_map::Entry::Occupied(q) => q.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(DeadLetterQueue::new(
                &config,
                &next_topic,
                &entry.source_topic,
            )?),
        };
        let letter = DeadLetter {
            key: record.key.clone(),
            payload: record.payload.clone(),
            partition: entry.source_partition.unwrap_or(-1),
            offset: entry.source_offset.unwrap_or(-1),
            class: *class,
            reason: reason.clone(),
            es_type: es_type.clone(),
            attempts: entry.attempts.unwrap_or(0) + 1,
            truncated_from: None,
        };
        queue
            .send(&letter)
            .await
            .map_err(|e| anyhow::anyhow!("writing to `{next_topic}`: {e:?}"))?;
        tally.moved_to = Some(next_topic.clone());
    }
    // Commit only what this run dealt with as a whole: not a dry run, not a filtered selection
    // (the others are still to redrive), not entries kept in place.
    let kept = args.keep && tally.refused_again > 0;
    if !(args.dry_run || args.filter.is_set() || kept) {
        let (config, group, read) = (config.clone(), args.redrive_group.clone(), topic.clone());
        tokio::task::spawn_blocking(move || topics::commit_ends(&config, &group, &read, &ends))
            .await??;
        tally.committed = true;
    }
    if args.json {
        println!("{}", serde_json::to_string(&tally)?);
    } else {
        println!(
            "{topic}: {} read, {} selected; {} applied{}, {} already applied, {} refused again{}, {} with a cut payload (not applied); group `{}` {}",
            tally.read,
            tally.selected,
            tally.applied,
            if args.dry_run { " (dry run: would be)" } else { "" },
            tally.already_applied,
            tally.refused_again,
            tally
                .moved_to
                .as_deref()
                .map(|t| format!(" (moved to {t})"))
                .unwrap_or_default(),
            tally.truncated,
            args.redrive_group,
            if tally.committed { "committed to the end" } else { "not committed" }
        );
    }
    Ok(if tally.refused_again > 0 || tally.truncated > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One line per entry: its origin and outcome.
fn report(json: bool, entry: &Entry, outcome: &Outcome) {
    if json {
        let line = serde_json::json!({
            "source_topic": entry.source_topic,
            "source_partition": entry.source_partition,
            "source_offset": entry.source_offset,
            "result": outcome,
        });
        println!("{line}");
        return;
    }
    let origin = format!(
        "{} {}/{}",
        entry.source_topic,
        entry.source_partition.map_or("?".into(), |p| p.to_string()),
        entry.source_offset.map_or("?".into(), |o| o.to_string())
    );
    match outcome {
        Outcome::Applied => println!("{origin}  applied"),
        Outcome::AlreadyApplied => println!("{origin}  already applied (a newer version is there)"),
        Outcome::RefusedAgain { class, reason, .. } => {
            println!("{origin}  refused again ({class}): {reason}")
        }
        Outcome::Truncated => {
            println!("{origin}  not applied: its payload was cut to fit the broker")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_again_goes_to_the_next_generation() {
        assert_eq!(next_generation("commands.dlq"), "commands.dlq.2");
        assert_eq!(next_generation("commands.dlq.2"), "commands.dlq.3");
        assert_eq!(next_generation("v1.2"), "v1.3");
        assert_eq!(next_generation("commands.dlq.x"), "commands.dlq.x.2");
    }
}
