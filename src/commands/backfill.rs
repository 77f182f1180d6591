//! `dual-indexer backfill`: copy the history Kafka no longer holds from the legacy index into the
//! new one, in parallel slices beside the live replay; resumable after a crash or a signal.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{shutdown_signal, LOG_TARGET};
use crate::cli::heading;
use crate::es::Security;

/// `dual-indexer backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The legacy cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_LEGACY_ES_URL",
        default_value = "http://127.0.0.1:9200",
        help_heading = heading::ES
    )]
    pub from_url: String,
    /// The legacy index or alias to copy from.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_INDEX", default_value = "tags-v1", help_heading = heading::ES)]
    pub from_index: String,
    /// The new cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201",
        help_heading = heading::ES
    )]
    pub to_url: String,
    /// The new index or write alias to copy into (it must exist).
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2", help_heading = heading::ES)]
    pub to_index: String,
    /// Slices to read the legacy index in (the cluster's own `slice`, not ranges of ids).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256), help_heading = heading::SLICES)]
    pub slices: u64,
    /// How long the legacy index's point in time outlives the last read, where the cluster reads by one: a --resume within it continues each unfinished slice after its last page; after it, every slice is read again.
    #[arg(long, default_value = "1h", help_heading = heading::SLICES)]
    pub keep_alive: String,
    /// Slices copied at the same time (default: all of them).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64), help_heading = heading::SLICES)]
    pub concurrency: Option<u64>,
    /// Documents per page read, which is also the bulk size.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000), help_heading = heading::BATCHING)]
    pub batch_size: u64,
    /// Throttle: documents per second over all slices (0: no limit).
    #[arg(long, default_value_t = 0, help_heading = heading::BATCHING)]
    pub max_docs_per_sec: u64,
    /// How backfilled documents are versioned: yield (external version 0; the live replay always wins) or legacy-version (the legacy document's _version).
    #[arg(long, default_value = "yield", help_heading = heading::ES)]
    pub versions: crate::backfill::VersionStrategy,
    /// The checkpoint file.
    #[arg(long, default_value = "backfill-checkpoint.json", help_heading = heading::SLICES)]
    pub checkpoint: std::path::PathBuf,
    /// Continue the backfill recorded in --checkpoint.
    #[arg(long, help_heading = heading::SLICES)]
    pub resume: bool,
    /// Where documents that cannot be copied go, one JSON object per line, appended.
    #[arg(long, default_value = "backfill-dead-letters.ndjson", help_heading = heading::BATCHING)]
    pub dead_letter_file: std::path::PathBuf,
    /// Put the target index into bulk-load settings (no refresh, no replicas) for the copy and restore them afterwards, also on Ctrl-C.
    #[arg(long, help_heading = heading::ES)]
    pub bulk_load: bool,
    /// index.gc_deletes on the target during the copy: how long delete tombstones refuse older backfilled copies ("keep": leave the setting alone).
    #[arg(long, default_value = "12h", help_heading = heading::ES)]
    pub gc_deletes: String,
    /// Attempts per page read from the legacy cluster. Bulk writes are retried by time instead: an item-level 5xx for 600 s, a cluster condition (write block, overload, no answer) for as long as it lasts.
    #[arg(long, env = "DUAL_INDEXER_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), help_heading = heading::BATCHING)]
    pub max_attempts: u32,
    /// Timeout of one request to either cluster.
    #[arg(long, env = "DUAL_INDEXER_REQUEST_TIMEOUT_SECS", default_value_t = 60, help_heading = heading::BATCHING)]
    pub request_timeout_secs: u64,
    /// Seconds between progress log lines.
    #[arg(long, env = "DUAL_INDEXER_PROGRESS_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::LOGGING)]
    pub progress_secs: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl BackfillArgs {
    /// The settings of the copy.
    pub fn settings(&self, security: &Security) -> crate::backfill::BackfillSettings {
        crate::backfill::BackfillSettings {
            security: security.clone(),
            from_url: self.from_url.clone(),
            from_index: self.from_index.clone(),
            to_url: self.to_url.clone(),
            to_index: self.to_index.clone(),
            slices: self.slices as usize,
            keep_alive: self.keep_alive.clone(),
            concurrency: self.concurrency.unwrap_or(self.slices).min(64) as usize,
            page_size: self.batch_size as usize,
            max_docs_per_sec: Some(self.max_docs_per_sec).filter(|r| *r > 0),
            versions: self.versions,
            checkpoint: self.checkpoint.clone(),
            resume: self.resume,
            dead_letters: self.dead_letter_file.clone(),
            bulk_load: self.bulk_load,
            gc_deletes: Some(self.gc_deletes.clone()).filter(|g| g != "keep"),
            retry: crate::sink::RetryPolicy {
                max_attempts: self.max_attempts,
                ..Default::default()
            },
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            progress_every: Duration::from_secs(self.progress_secs),
        }
    }
}

/// Copies until done or stopped: the first signal stops cleanly (exit 130), a second at once.
pub async fn run(args: BackfillArgs, security: &Security) -> anyhow::Result<ExitCode> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::warn!(target: LOG_TARGET, "stopping: finishing the pages in flight, restoring index settings and saving the checkpoint (a second signal exits at once)");
        let _ = stop.send(true);
        shutdown_signal().await;
        std::process::exit(130);
    });
    let summary = crate::backfill::run(args.settings(security), stopped).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", crate::backfill::describe(&summary));
    }
    Ok(match summary.ending {
        crate::backfill::Ending::Interrupted => ExitCode::from(130),
        _ => ExitCode::SUCCESS,
    })
}
