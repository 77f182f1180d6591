//! `dual-indexer verify`: compare the legacy and new clusters, document by document and query by
//! query, and write the report that `cutover` reads.

use std::process::ExitCode;

use clap::Args;

use crate::cli::{heading, KafkaArgs};
use crate::es::Security;
use crate::verify::positions::Groups;

/// `dual-indexer verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The legacy cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_LEGACY_ES_URL",
        default_value = "http://127.0.0.1:9200",
        help_heading = heading::ES
    )]
    pub legacy_url: String,
    /// The legacy index or alias.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_INDEX", default_value = "tags-v1", help_heading = heading::ES)]
    pub legacy_index: String,
    /// The new cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201",
        help_heading = heading::ES
    )]
    pub es_url: String,
    /// The new index or alias.
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2", help_heading = heading::ES)]
    pub index: String,
    /// Check N random legacy documents instead of all (ids only in the new index are then not looked for).
    #[arg(long, value_name = "N", help_heading = heading::COMPARISON)]
    pub sample: Option<usize>,
    /// Seed of --sample and of the sampled query corpus.
    #[arg(long, default_value_t = 42, help_heading = heading::COMPARISON)]
    pub seed: u64,
    /// Leave a field out of the comparison: a name (`updated_at`, `tags.owner`) or a prefix ending in `*` (repeatable).
    #[arg(long = "ignore-field", value_name = "FIELD", help_heading = heading::COMPARISON)]
    pub ignore_fields: Vec<String>,
    /// User queries, one JSON object per line: {"value": …} or {"key": …, "value": …}.
    #[arg(long, value_name = "FILE", help_heading = heading::COMPARISON)]
    pub queries: Option<std::path::PathBuf>,
    /// Without --queries: build the corpus from the tags of this many random legacy documents (0: no query check).
    #[arg(long, default_value_t = 100, help_heading = heading::COMPARISON)]
    pub sample_queries: usize,
    /// Hits compared per query.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000), help_heading = heading::COMPARISON)]
    pub max_hits: u64,
    /// Also fail when a search by key and value hits fewer documents only because the legacy text field was analysed.
    #[arg(long, help_heading = heading::COMPARISON)]
    pub strict_queries: bool,
    /// Documents per page.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000), help_heading = heading::ES)]
    pub page_size: u64,
    /// Ids and diffs kept in the report per kind of difference (the counts are always complete).
    #[arg(long, default_value_t = 1_000, help_heading = heading::REPORT)]
    pub max_examples: usize,
    /// Write the JSON report here (schemas/verify-report.schema.json); `cutover` reads it.
    #[arg(long, value_name = "FILE", help_heading = heading::REPORT)]
    pub report: Option<std::path::PathBuf>,
    /// Print the JSON report instead of the summary.
    #[arg(long, help_heading = heading::REPORT)]
    pub json: bool,
    #[command(flatten, next_help_heading = heading::SETTLE)]
    pub kafka: KafkaArgs,
    /// The command topic both indexers consume.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands", help_heading = heading::SETTLE)]
    pub topic: String,
    /// The dual-indexer's consumer group.
    #[arg(long, env = "DUAL_INDEXER_GROUP", default_value = "dual-indexer", help_heading = heading::SETTLE)]
    pub group: String,
    /// The legacy indexer's consumer group. Given, verify settles: each difference is read again once both groups have committed past it, and only those that persist (or that a stalled group kept from being judged) fail the check.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_GROUP", help_heading = heading::SETTLE)]
    pub legacy_group: Option<String>,
    /// At most this many settle rounds (0: judge every difference as first read).
    #[arg(long, env = "DUAL_INDEXER_SETTLE_ROUNDS", default_value_t = 5, help_heading = heading::SETTLE)]
    pub settle_rounds: u32,
    /// Seconds the groups have to get past the differences, for the documents and again for the queries; what they do not reach in time is unsettled.
    #[arg(long, env = "DUAL_INDEXER_SETTLE_TIMEOUT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::SETTLE)]
    pub settle_timeout_secs: u64,
}

impl VerifyArgs {
    /// How to settle, when `--legacy-group` is given and `--settle-rounds` is above 0.
    fn settle(&self) -> anyhow::Result<Option<crate::verify::SettleSettings>> {
        let Some(legacy_group) = &self.legacy_group else {
            return Ok(None);
        };
        if self.settle_rounds == 0 {
            return Ok(None);
        }
        anyhow::ensure!(
            *legacy_group != self.group,
            "--legacy-group and --group are both `{}`; settling compares the legacy indexer's group with the dual-indexer's",
            self.group
        );
        Ok(Some(crate::verify::SettleSettings {
            kafka: self.kafka.client_config()?,
            groups: Groups {
                topic: self.topic.clone(),
                group: self.group.clone(),
                legacy_group: legacy_group.clone(),
            },
            rounds: self.settle_rounds,
            timeout: std::time::Duration::from_secs(self.settle_timeout_secs),
        }))
    }

    /// The settings of the check.
    pub fn settings(&self, security: &Security) -> anyhow::Result<crate::verify::VerifySettings> {
        Ok(crate::verify::VerifySettings {
            security: security.clone(),
            legacy_url: self.legacy_url.clone(),
            legacy_index: self.legacy_index.clone(),
            new_url: self.es_url.clone(),
            new_index: self.index.clone(),
            sample: self.sample,
            seed: self.seed,
            ignore: self.ignore_fields.clone(),
            page_size: self.page_size as usize,
            max_examples: self.max_examples,
            queries: self.queries.clone(),
            sample_queries: self.sample_queries,
            max_hits: self.max_hits as usize,
            strict_queries: self.strict_queries,
            settle: self.settle()?,
        })
    }
}

/// Compares the clusters, writes and prints the report; exits 1 if they differ.
pub async fn run(args: VerifyArgs, security: &Security) -> anyhow::Result<ExitCode> {
    let report = crate::verify::run(&args.settings(security)?).await?;
    if let Some(path) = &args.report {
        crate::files::write_json_atomically(path, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::verify::summary(&report));
    }
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
