//! `dual-indexer dlq …`: the dead-letter topic read back. `show` counts and lists it; `redrive`
//! applies its entries again once their cause is fixed.

mod redrive;
mod show;

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::dlq::inspect::Filter;
use crate::es::ClusterSecurity;
pub use redrive::DlqRedriveArgs;
pub use show::DlqShowArgs;

/// `dual-indexer dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count the dead letters by class, reason (Elasticsearch's error type) and source partition,
    /// with the oldest and newest origin; or, with --entries, print them with their headers.
    #[command(
        after_help = "Exit codes: 0 the topic was read (whatever it holds), 2 error.\n\nExamples:\n  dual-indexer dlq show --topic commands\n  dual-indexer dlq show --topic commands --entries --class mapping --json\n  dual-indexer dlq show --dlq-topic commands.dlq --source-partition 2 --from-offset 1000 --entries"
    )]
    Show(Box<DlqShowArgs>),
    /// Apply dead letters again, in order, each with the external version it would have had, so
    /// that none overwrites a newer state written since; what is refused again moves to the next
    /// dead-letter topic.
    #[command(
        after_help = "Exit codes: 0 every entry read was applied or already applied, 1 some were refused again or had a cut payload, 2 error.\n\nExamples:\n  dual-indexer dlq redrive --topic commands --es-url http://127.0.0.1:9201 --index tags-v2 --dry-run\n  dual-indexer dlq redrive --topic commands --es-url http://127.0.0.1:9201 --index tags-v2 --class mapping"
    )]
    Redrive(Box<DlqRedriveArgs>),
}

/// Which dead-letter topic a `dlq` subcommand reads.
#[derive(Debug, Args, Clone)]
pub struct DlqTopicArgs {
    /// The command topic; the dead-letter topic is its name with `.dlq` appended.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands")]
    pub topic: String,
    /// The dead-letter topic, when it is not the command topic's name with `.dlq`.
    #[arg(long, env = "DUAL_INDEXER_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
}

impl DlqTopicArgs {
    /// The dead-letter topic's name.
    pub fn name(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}

/// Which entries a `dlq` subcommand takes.
#[derive(Debug, Args, Clone)]
pub struct FilterArgs {
    /// Only entries of this class (decode, transform, mapping, request_refused, retries_exhausted).
    #[arg(long)]
    pub class: Option<String>,
    /// Only entries Elasticsearch refused with this error type (strict_dynamic_mapping_exception, …).
    #[arg(long)]
    pub es_type: Option<String>,
    /// Only commands from this partition of the command topic.
    #[arg(long)]
    pub source_partition: Option<i32>,
    /// Only commands at or after this offset.
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Only commands at or before this offset.
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// Only entries written at or after this time: epoch milliseconds, or a time ago (`90s`,
    /// `30m`, `2h`, `7d`).
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<i64>,
    /// Only entries written at or before this time, as for --since.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<i64>,
}

/// Epoch milliseconds, or a time ago (`90s`, `30m`, `2h`, `7d`) as epoch milliseconds.
fn parse_when(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let refused =
        || format!("`{s}` is not epoch milliseconds or a time ago like 90s, 30m, 2h or 7d");
    let split = s.len().checked_sub(1).ok_or_else(refused)?;
    let (number, unit) = s.split_at(split);
    let number: i64 = number.parse().map_err(|_| refused())?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(refused()),
    };
    let now = crate::files::unix_now() as i64 * 1_000;
    Ok(now - number * unit_ms)
}

impl FilterArgs {
    /// The filter these flags describe.
    pub fn filter(&self) -> Filter {
        Filter {
            class: self.class.clone(),
            es_type: self.es_type.clone(),
            source_partition: self.source_partition,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
            since_ms: self.since,
            until_ms: self.until,
        }
    }

    /// Whether any filter is set.
    pub fn is_set(&self) -> bool {
        self.class.is_some()
            || self.es_type.is_some()
            || self.source_partition.is_some()
            || self.from_offset.is_some()
            || self.to_offset.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

/// Runs a `dlq` subcommand.
pub async fn run(command: DlqCommand, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::Show(args) => show::run(*args).await,
        DlqCommand::Redrive(args) => redrive::run(*args, security).await,
    }
}
