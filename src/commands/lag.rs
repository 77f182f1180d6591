//! `dual-indexer lag`: per-partition lag of any consumer group, its status judged over a window,
//! once or (with `--watch`) until a signal.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::shutdown_signal;
use crate::cli::{heading, KafkaArgs, LagRuleArgs};
use crate::cutover::index;
use crate::es::{self, ClusterSecurity};
use crate::lag;
use crate::lag::monitor::{self, LagMonitor};
use crate::lag::rule::Status;

/// `dual-indexer lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub kafka: KafkaArgs,
    /// The group to report on (ours, the legacy one, or any other).
    #[arg(long, env = "DUAL_INDEXER_GROUP", help_heading = heading::KAFKA)]
    pub group: String,
    /// Also report each partition's gap to this group's committed offsets.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_GROUP", help_heading = heading::KAFKA)]
    pub legacy_group: Option<String>,
    /// The topic.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands", help_heading = heading::KAFKA)]
    pub topic: String,
    #[command(flatten, next_help_heading = heading::LAG)]
    pub rule: LagRuleArgs,
    /// Keep sampling and print a report every --interval-secs, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON (one object per report) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 if the total lag is above N messages.
    #[arg(long, value_name = "N", help_heading = heading::LAG)]
    pub fail_if_lag_above: Option<u64>,
    /// Exit 1 unless the group is CAUGHT_UP.
    #[arg(long, help_heading = heading::LAG)]
    pub fail_unless_caught_up: bool,
    /// Also show whether this index (or alias) on --es-url is in bulk-load settings.
    #[arg(long, env = "DUAL_INDEXER_INDEX", requires = "es_url", help_heading = heading::ES)]
    pub index: Option<String>,
    /// The new cluster, for --index.
    #[arg(long, env = "DUAL_INDEXER_ES_URL", help_heading = heading::ES)]
    pub es_url: Option<String>,
}

/// Prints one report after a full window, or (with `--watch`) one per interval until a signal.
pub async fn run(args: LagArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    let kafka = args.kafka.client_config()?;
    let rule = args.rule.rule();
    let mut monitor = LagMonitor::new(
        &kafka,
        &args.topic,
        &args.group,
        args.legacy_group.as_deref(),
        rule,
    )?;
    let es = match (&args.es_url, &args.index) {
        (Some(url), Some(index)) => {
            let client = es::secure_client(url, security, Duration::from_secs(30))?;
            es::cluster::connect(&client, url, es::cluster::Role::New).await?;
            Some((client, index))
        }
        _ => None,
    };
    let settings = || async {
        match &es {
            Some((client, index)) => index::load_settings(client, index).await.map(Some),
            None => Ok(None),
        }
    };
    if !args.watch {
        let report = tokio::select! {
            report = lag::judge_window(monitor, rule.window, args.rule.interval()) => report?,
            _ = shutdown_signal() => return Ok(ExitCode::SUCCESS),
        };
        print_report(&report, settings().await?.as_deref(), args.json)?;
        let above = args
            .fail_if_lag_above
            .is_some_and(|n| report.total_lag > n as i64);
        let not_caught_up = args.fail_unless_caught_up && report.status() != Some(Status::CaughtUp);
        return Ok(if above || not_caught_up {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    let mut tick = tokio::time::interval(args.rule.interval());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
        }
        let (returned, report) = lag::sample(monitor).await?;
        monitor = returned;
        print_report(&report?, settings().await?.as_deref(), args.json)?;
    }
}

/// Prints a report as a table, or as one JSON object, with the index's bulk-load settings if asked.
fn print_report(
    report: &monitor::LagReport,
    settings: Option<&[index::LoadSettings]>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(report)?;
        if let Some(settings) = settings {
            value["index"] = serde_json::to_value(settings)?;
        }
        println!("{value}");
    } else {
        print!("{}", monitor::render_table(report));
        for s in settings.unwrap_or_default() {
            println!("{}", s.describe());
        }
        println!();
    }
    Ok(())
}
