//! The command tree: the root ([`Cli`]), the subcommands ([`Command`]), and one module per
//! subcommand, as mini-redis keeps one file per command: each owns its flags and its body, the
//! `run` function the binary dispatches to. What several subcommands share (the global options,
//! the Kafka and cluster flags, the lag rule) is in [`crate::cli`]; the shutdown signal is here.

use clap::{Parser, Subcommand};

use crate::cli::GlobalArgs;
use alias::AliasCommand;
use backfill::BackfillArgs;
use config::ConfigCommand;
use cutover::CutoverArgs;
use dlq::DlqCommand;
use envelope::EnvelopeCommand;
use generate::GenerateArgs;
use index::IndexCommand;
use lag::LagArgs;
use rollback::RollbackArgs;
use run::RunArgs;
use shadow::ShadowArgs;
use translate::TranslateArgs;
use verify::VerifyArgs;

pub mod alias;
pub mod backfill;
pub mod config;
pub mod cutover;
pub mod dlq;
pub mod envelope;
pub mod generate;
pub mod index;
pub mod lag;
pub mod rollback;
pub mod run;
pub mod shadow;
pub mod translate;
pub mod verify;

/// `--version` output: the crate version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DUAL_INDEXER_GIT_COMMIT"),
    ")"
);

/// dual-indexer replays a Kafka command topic into a new Elasticsearch cluster in the flattened
/// keyToValue tag schema, as a sidecar beside the legacy indexer.
#[derive(Debug, Parser)]
#[command(name = "dual-indexer", version = VERSION, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Exit codes: 0 success; 1 a check answered no (differences, lag above a threshold, a refused gate); 2 an error (bad configuration, an unreachable service, a fatal indexing error); 130 a backfill stopped by a signal."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the command topic into the new cluster (the sidecar indexer).
    #[command(
        after_help = "Example:\n  dual-indexer run --brokers 127.0.0.1:9092 --topic commands --es-url http://127.0.0.1:9201 --index tags-v2 --create-index --until-caught-up"
    )]
    Run(Box<RunArgs>),
    /// Produce a seeded synthetic command stream (upserts, deletes, duplicates, stale versions, poison).
    #[command(
        after_help = "Example:\n  dual-indexer generate --brokers 127.0.0.1:9092 --topic commands --count 20000 --ids 5000 --seed 42"
    )]
    Generate(GenerateArgs),
    /// Per-partition lag of any consumer group, with its status judged over a window.
    #[command(
        after_help = "Status needs a full window of samples, so a one-shot `lag` samples for --window-secs before it answers.\n\nExamples:\n  dual-indexer lag --group dual-indexer --legacy-group legacy-indexer --topic commands\n  dual-indexer lag --group dual-indexer --fail-unless-caught-up --window-secs 60   # for cron and cutover scripts\n  dual-indexer lag --group dual-indexer --watch --json"
    )]
    Lag(LagArgs),
    /// Compare the legacy and new clusters, document by document and query by query.
    #[command(
        after_help = "While both indexers are live, --legacy-group makes verify settle: each difference is read again once both groups have committed past it; only different and unsettled ones fail the check. See docs/verify.md.\n\nExit codes: 0 clean, 1 differences found (different or unsettled), 2 error.\n\nExamples:\n  dual-indexer verify --legacy-url http://127.0.0.1:9200 --legacy-index tags-v1 --es-url http://127.0.0.1:9201 --index tags-v2 --report verify-report.json\n  dual-indexer verify … --brokers kafka:9092 --topic commands --group dual-indexer --legacy-group legacy-indexer\n  dual-indexer verify … --sample 1000 --queries queries.jsonl"
    )]
    Verify(VerifyArgs),
    /// Copy the history Kafka no longer holds from the legacy index into the new one, in parallel
    /// id slices, beside the live replay; resumable.
    #[command(
        after_help = "Versions: by default (--versions yield) every backfilled document carries external version 0, so whatever the live replay writes, including deletes, wins over it. See docs/backfill.md.\n\nProgress is checkpointed per slice after every page. After a crash or Ctrl-C, run the same command with --resume; finished slices are not read again. Running a finished backfill again does nothing and says so.\n\nExit codes: 0 complete (dead letters, if any, are in --dead-letter-file), 2 error, 130 interrupted.\n\nExamples:\n  dual-indexer backfill --from-url http://127.0.0.1:9200 --from-index tags-v1 --to-url http://127.0.0.1:9201 --to-index tags-v2 --slices 4\n  dual-indexer backfill … --max-docs-per-sec 2000 --bulk-load\n  dual-indexer backfill … --resume"
    )]
    Backfill(BackfillArgs),
    /// Versioned indices (`tags-v2-000001`, …) with their aliases and bulk-load settings.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Atomic alias changes.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Move the read alias to the new index, if the gate holds: the replay is CAUGHT_UP and the
    /// last verify report is clean.
    #[command(
        after_help = "The gate: the group's lag is judged over --window-secs and must be CAUGHT_UP, and --verify-report must be clean, at most --max-report-age-secs old, and about the index being cut over to. Bulk-load settings are restored before the alias moves. With --shadow-report, the shadow proxy's report must also hold --min-shadow-compared compared searches, some in the last --shadow-window-secs and none of those `different`. What changed is written to --record, which `rollback` reads.\n\nExample:\n  dual-indexer cutover --es-url http://127.0.0.1:9201 --alias tags --to tags-v2 --group dual-indexer --topic commands"
    )]
    Cutover(CutoverArgs),
    /// Translate a legacy search (stdin) into the new schema (stdout), or say why it cannot be.
    #[command(
        after_help = "The class (exact, or analysis: the new search finds a subset or a superset of the legacy hits) and notes go to stderr. Rules: docs/translate.md.\n\nExit codes: 0 translated, 1 untranslatable (the construct and the reason on stderr), 2 stdin is not JSON.\n\nExamples:\n  echo '{\"query\": {\"match\": {\"actions.tags.name\": \"dor\"}}}' | dual-indexer translate\n  dual-indexer translate --clause --json < clause.json"
    )]
    Translate(TranslateArgs),
    /// A proxy in front of the legacy cluster that shadows a share of the reads on the new cluster, translated, and compares the answers.
    #[command(
        after_help = "Every request is answered by the legacy cluster, byte for byte; the comparison runs after the answer is sent. See docs/shadow.md.\n\nExample:\n  dual-indexer shadow --listen 0.0.0.0:9210 --legacy-url http://legacy:9200 --es-url http://new:9200 --index tags --sample 0.05 --report shadow-report.jsonl"
    )]
    Shadow(Box<ShadowArgs>),
    /// Undo the last cutover (or `alias swap --record`): restore the alias exactly as it was.
    #[command(
        after_help = "Refuses when the alias has moved since the record was written, unless --force.\n\nExample:\n  dual-indexer rollback --es-url http://127.0.0.1:9201 --record cutover-record.json"
    )]
    Rollback(RollbackArgs),
    /// The effective configuration: where each setting comes from, and whether it works.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The producers' message format: see what the envelope mapping makes of real messages.
    #[command(subcommand)]
    Envelope(EnvelopeCommand),
    /// The dead-letter topic: what it holds, by class, reason and origin.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// The target of the subcommands' log lines: the binary's, where these bodies used to live, so
/// that log searches and `--log-level` directives written against it keep matching.
const LOG_TARGET: &str = "dual_indexer";

/// Listens for SIGTERM and SIGINT from the moment it is called, and resolves on the first one.
/// A signal that arrives before the future is first polled (during startup) is not lost, and no
/// longer kills the process outright: the replay then drains and exits 0 as soon as it starts.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let listening = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match listening {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(target: LOG_TARGET, error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the replay cleanly");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(target: LOG_TARGET, "shutdown requested; draining");
    }
}
