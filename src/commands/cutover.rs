//! `dual-indexer cutover`: move the read alias to the new index, if the gate holds (the replay is
//! CAUGHT_UP and the last verify report is clean), and record what changed for `rollback`.

use std::process::ExitCode;

use clap::Args;

use super::LOG_TARGET;
use crate::cli::{heading, EsArgs, KafkaArgs, LagRuleArgs};
use crate::cutover::{self, gate, index};
use crate::es::{self, ClusterSecurity};
use crate::lag::{self, monitor::LagMonitor};

/// `dual-indexer cutover`.
#[derive(Debug, Args)]
pub struct CutoverArgs {
    #[command(flatten, next_help_heading = heading::ES)]
    pub es: EsArgs,
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub kafka: KafkaArgs,
    /// The read alias that users query.
    #[arg(long, help_heading = heading::ES)]
    pub alias: String,
    /// The new index (or its write alias, resolved to the one index behind it).
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2", help_heading = heading::ES)]
    pub to: String,
    /// The new indexer's consumer group, which must be CAUGHT_UP.
    #[arg(long, env = "DUAL_INDEXER_GROUP", default_value = "dual-indexer", help_heading = heading::KAFKA)]
    pub group: String,
    /// The command topic.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands", help_heading = heading::KAFKA)]
    pub topic: String,
    #[command(flatten, next_help_heading = heading::LAG)]
    pub rule: LagRuleArgs,
    /// The report of the last `verify --report`.
    #[arg(long, default_value = "verify-report.json", help_heading = heading::LAG)]
    pub verify_report: std::path::PathBuf,
    /// The oldest verify report accepted, in seconds.
    #[arg(long, default_value_t = 3_600, help_heading = heading::LAG)]
    pub max_report_age_secs: u64,
    /// Also require the `shadow` proxy's report to hold enough comparisons and no `different` answer in the last window.
    #[arg(long, env = "DUAL_INDEXER_SHADOW_REPORT", value_name = "FILE", help_heading = heading::LAG)]
    pub shadow_report: Option<std::path::PathBuf>,
    /// With --shadow-report: the compared searches the report must hold.
    #[arg(long, default_value_t = 1_000, help_heading = heading::LAG)]
    pub min_shadow_compared: u64,
    /// With --shadow-report: the last window, in seconds, that must hold comparisons and no `different` one.
    #[arg(long, default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::LAG)]
    pub shadow_window_secs: u64,
    /// Where to write what changed, for `rollback`.
    #[arg(long, default_value = "cutover-record.json")]
    pub record: std::path::PathBuf,
    /// Replicas to restore when the index recorded none.
    #[arg(long, default_value_t = 1, help_heading = heading::ES)]
    pub replicas: u64,
    /// Cut over even though the gate refuses. Logged loudly and written to the record.
    #[arg(long, help_heading = heading::LAG)]
    pub force: bool,
}

/// Judges the gate, restores bulk-load settings, swaps the alias and writes the record.
pub async fn run(args: CutoverArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    let client = args.es.client(security).await?;
    let target = cutover::alias::resolve_index(&client, &args.to).await?;
    let monitor = LagMonitor::new(
        &args.kafka.client_config()?,
        &args.topic,
        &args.group,
        None,
        args.rule.rule(),
    )?;
    println!(
        "judging the lag of group {} over {}s…",
        args.group, args.rule.window_secs
    );
    let lag_report =
        lag::judge_window(monitor, args.rule.rule().window, args.rule.interval()).await?;
    let facts = gate::GateFacts {
        lag: lag_report.status(),
        report: gate::read_report(&args.verify_report),
        target: target.clone(),
        now: crate::files::unix_now(),
        max_report_age: args.max_report_age_secs,
        shadow: args.shadow_report.as_ref().map(|path| {
            let now_ms = crate::files::unix_now().saturating_mul(1_000);
            let window_ms = args.shadow_window_secs.saturating_mul(1_000);
            gate::ShadowFacts {
                summary: crate::shadow::report::summarize(path, now_ms.saturating_sub(window_ms)),
                min_compared: args.min_shadow_compared,
                window_secs: args.shadow_window_secs,
            }
        }),
    };
    let refusals = gate::refusals(&facts);
    if !refusals.is_empty() {
        if !args.force {
            println!("cutover refused; nothing changed:");
            for r in &refusals {
                println!("  - {r}");
            }
            return Ok(ExitCode::from(1));
        }
        for r in &refusals {
            tracing::warn!(target: LOG_TARGET, reason = %r, "FORCED CUTOVER: the gate refused, overridden by --force");
            eprintln!("WARNING: FORCED CUTOVER despite: {r}");
        }
    }
    for s in index::load_settings(&client, &target).await? {
        if let Some(values) = index::restore(&client, &s, args.replicas).await? {
            println!("index {}: bulk-load settings restored to {values}", s.index);
        }
    }
    es::refresh(&client, &target).await?;
    let mut record = cutover::swap(&client, &args.es.es_url, &args.alias, &target).await?;
    record.forced = !refusals.is_empty();
    record.overridden = refusals;
    record.write(&args.record)?;
    println!(
        "{}{}; recorded in {} for `rollback`",
        record.describe(),
        if record.forced { " (FORCED)" } else { "" },
        args.record.display()
    );
    Ok(ExitCode::SUCCESS)
}
