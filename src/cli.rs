//! The command line: every subcommand, flag, environment variable and default.
//!
//! Each flag can also be set through the environment variable named in its help
//! (`DUAL_INDEXER_…`); a flag given on the command line wins.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rdkafka::ClientConfig;

use crate::pipeline::RunSettings;
use crate::sink::RetryPolicy;
use crate::telemetry::LogFormat;
use crate::transform::{Schema, VersionSource};

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

/// Options every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A TOML file of settings: flags and environment variables win over it, and it wins over the defaults (see docs/configuration.md).
    #[arg(long, global = true, env = "DUAL_INDEXER_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log level filter (`info`, `debug`, or a tracing directive such as `dual_indexer=debug`). RUST_LOG overrides it.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    /// Send metrics to this statsd agent (HOST:PORT). No metrics are sent when unset.
    #[arg(long, global = true, env = "DUAL_INDEXER_STATSD")]
    pub statsd: Option<String>,
    /// Prefix of every metric name.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_METRICS_PREFIX",
        default_value = "dual_indexer"
    )]
    pub metrics_prefix: String,
    /// User for the new cluster; its password comes from DUAL_INDEXER_ES_PASSWORD or DUAL_INDEXER_ES_PASSWORD_FILE (an API key from DUAL_INDEXER_ES_API_KEY[_FILE] instead).
    #[arg(long, global = true, env = "DUAL_INDEXER_ES_USERNAME")]
    pub es_username: Option<String>,
    /// PEM file of the CA that signed the new cluster's TLS certificate.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_ES_CA_CERT",
        value_name = "FILE"
    )]
    pub es_ca_cert: Option<std::path::PathBuf>,
    /// Do not validate the new cluster's TLS certificate (development only).
    #[arg(long, global = true, env = "DUAL_INDEXER_ES_INSECURE")]
    pub es_insecure: bool,
    /// User for the legacy cluster; its password comes from DUAL_INDEXER_LEGACY_ES_PASSWORD or DUAL_INDEXER_LEGACY_ES_PASSWORD_FILE (an API key from DUAL_INDEXER_LEGACY_ES_API_KEY[_FILE] instead).
    #[arg(long, global = true, env = "DUAL_INDEXER_LEGACY_ES_USERNAME")]
    pub legacy_es_username: Option<String>,
    /// PEM file of the CA that signed the legacy cluster's TLS certificate.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_LEGACY_ES_CA_CERT",
        value_name = "FILE"
    )]
    pub legacy_es_ca_cert: Option<std::path::PathBuf>,
    /// Do not validate the legacy cluster's TLS certificate (development only).
    #[arg(long, global = true, env = "DUAL_INDEXER_LEGACY_ES_INSECURE")]
    pub legacy_es_insecure: bool,
}

impl GlobalArgs {
    /// Credentials and TLS settings of both clusters, with the secrets read from `env`.
    pub fn security(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::es::Security, String> {
        use crate::es::ClusterSecurity;
        Ok(crate::es::Security {
            new: ClusterSecurity::resolve(
                ClusterSecurity::NEW_PREFIX,
                "--es",
                self.es_username.clone(),
                self.es_ca_cert.clone(),
                self.es_insecure,
                env,
            )?,
            legacy: ClusterSecurity::resolve(
                ClusterSecurity::LEGACY_PREFIX,
                "--legacy-es",
                self.legacy_es_username.clone(),
                self.legacy_es_ca_cert.clone(),
                self.legacy_es_insecure,
                env,
            )?,
        })
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the command topic into the new cluster (the sidecar indexer).
    #[command(
        after_help = "Example:\n  dual-indexer run --brokers 127.0.0.1:9092 --topic commands --es-url http://127.0.0.1:9201 --index tags-v2 --create-index --until-caught-up"
    )]
    Run(RunArgs),
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
        after_help = "Exit codes: 0 clean, 1 differences found, 2 error.\n\nExamples:\n  dual-indexer verify --legacy-url http://127.0.0.1:9200 --legacy-index tags-v1 --es-url http://127.0.0.1:9201 --index tags-v2 --report verify-report.json\n  dual-indexer verify … --sample 1000 --queries queries.jsonl"
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
        after_help = "The gate: the group's lag is judged over --window-secs and must be CAUGHT_UP, and --verify-report must be clean, at most --max-report-age-secs old, and about the index being cut over to. Bulk-load settings are restored before the alias moves. What changed is written to --record, which `rollback` reads.\n\nExample:\n  dual-indexer cutover --es-url http://127.0.0.1:9201 --alias tags --to tags-v2 --group dual-indexer --topic commands"
    )]
    Cutover(CutoverArgs),
    /// Undo the last cutover (or `alias swap --record`): restore the alias exactly as it was.
    #[command(
        after_help = "Refuses when the alias has moved since the record was written, unless --force.\n\nExample:\n  dual-indexer rollback --es-url http://127.0.0.1:9201 --record cutover-record.json"
    )]
    Rollback(RollbackArgs),
    /// The effective configuration: where each setting comes from, and whether it works.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `dual-indexer config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the settings `run` would use, each with where it came from (secrets redacted), then
    /// check them: the broker, the topic, the clusters, the index, the groups.
    #[command(
        after_help = "Exit codes: 0 every check passed, 1 a check failed (each problem is named), 2 the configuration itself is invalid.\n\nExamples:\n  dual-indexer config check --config dual-indexer.toml\n  DUAL_INDEXER_ES_URL=https://new:9200 dual-indexer config check --legacy-es-url https://legacy:9200"
    )]
    Check(Box<ConfigCheckArgs>),
    /// Print the reference table of every setting (Markdown), as in docs/configuration.md.
    #[command(after_help = "Example:\n  dual-indexer config reference > settings.md")]
    Reference,
}

/// `dual-indexer config check`.
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Also check the legacy cluster at this URL.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_ES_URL")]
    pub legacy_es_url: Option<String>,
    /// The legacy index or alias to look for with --legacy-es-url.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_INDEX", default_value = "tags-v1")]
    pub legacy_index: String,
}

/// How to reach Kafka.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (comma-separated HOST:PORT).
    #[arg(long, env = "DUAL_INDEXER_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Any librdkafka setting, as KEY=VALUE (repeatable), e.g. `--kafka security.protocol=SSL`.
    #[arg(long = "kafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka: Vec<(String, String)>,
}

impl KafkaArgs {
    /// librdkafka secrets read from the environment (or `…_FILE`), and the property each sets.
    pub const SECRETS: &'static [(&'static str, &'static str)] = &[
        ("DUAL_INDEXER_KAFKA_SASL_PASSWORD", "sasl.password"),
        ("DUAL_INDEXER_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
    ];

    /// The librdkafka client configuration shared by consumers and producers.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        self.client_config_from(&crate::secrets::process_env)
            .map_err(anyhow::Error::msg)
    }

    /// [`Self::client_config`], with secrets read from `env`. A secret given with `--kafka` wins
    /// over the environment, as flags win over variables everywhere.
    pub fn client_config_from(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "dual-indexer");
        for (name, property) in Self::SECRETS {
            if let Some(secret) = crate::secrets::from_env(name, env)? {
                config.set(*property, secret.expose());
            }
        }
        for (key, value) in &self.kafka {
            config.set(key, value);
        }
        Ok(config)
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (for example `security.protocol=SSL`)"
        )),
    }
}

/// `dual-indexer run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The command topic.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands")]
    pub topic: String,
    /// This indexer's consumer group. Must differ from the legacy indexer's.
    #[arg(long, env = "DUAL_INDEXER_GROUP", default_value = "dual-indexer")]
    pub group: String,
    /// The legacy indexer's consumer group (only checked to differ from --group here).
    #[arg(
        long,
        env = "DUAL_INDEXER_LEGACY_GROUP",
        default_value = "legacy-indexer"
    )]
    pub legacy_group: String,
    /// Dead-letter topic. Default: the command topic's name with `.dlq` appended.
    #[arg(long, env = "DUAL_INDEXER_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// A librdkafka setting for the dead-letter producer only, over --kafka (repeatable), e.g. `--dlq-kafka bootstrap.servers=dlq-kafka:9092` for a dead-letter topic on another cluster.
    #[arg(long = "dlq-kafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub dlq_kafka: Vec<(String, String)>,
    /// The new cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201"
    )]
    pub es_url: String,
    /// The index or write alias to write to.
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2")]
    pub index: String,
    /// Create the index from the schema's template in schemas/ if it does not exist.
    #[arg(long, env = "DUAL_INDEXER_CREATE_INDEX")]
    pub create_index: bool,
    /// The document shape to write: `new` (keyToValue tags) or `legacy` (dynamic
    /// `actions.tags.<key>` fields: the reference legacy indexer, run under the legacy group).
    #[arg(long, env = "DUAL_INDEXER_SCHEMA", default_value = "new")]
    pub schema: Schema,
    /// Where each write's external version comes from: offset, version or timestamp.
    #[arg(long, env = "DUAL_INDEXER_VERSION_SOURCE", default_value = "offset")]
    pub version_source: VersionSource,
    /// Documents per bulk request.
    #[arg(long, env = "DUAL_INDEXER_BATCH_MAX_DOCS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_max_docs: u64,
    /// Bytes per bulk request (a batch is sent once it reaches this size).
    #[arg(long, env = "DUAL_INDEXER_BATCH_MAX_BYTES", default_value_t = 5 << 20, value_parser = clap::value_parser!(u64).range(1024..=(100 << 20)))]
    pub batch_max_bytes: u64,
    /// Milliseconds a partly filled batch waits for more documents.
    #[arg(long, env = "DUAL_INDEXER_LINGER_MS", default_value_t = 50)]
    pub linger_ms: u64,
    /// Bulk requests in flight at once.
    #[arg(long, env = "DUAL_INDEXER_MAX_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_in_flight: u64,
    /// Seconds a document's write may keep failing with an item-level 5xx before it is dead-lettered. Cluster conditions (write blocks, a closed index, 429 overload, no answer) are retried without limit instead.
    #[arg(long, env = "DUAL_INDEXER_ITEM_RETRY_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub item_retry_secs: u64,
    /// Set the target's index.gc_deletes (how long a delete's version tombstone refuses older writes, e.g. 1h) at start; "keep" leaves it, and a value shorter than the retry window is warned about.
    #[arg(long, env = "DUAL_INDEXER_SET_GC_DELETES", default_value = "keep")]
    pub set_gc_deletes: String,
    /// First retry backoff in milliseconds (doubles per attempt, full jitter).
    #[arg(long, env = "DUAL_INDEXER_RETRY_BASE_MS", default_value_t = 100)]
    pub retry_base_ms: u64,
    /// Largest retry backoff in milliseconds.
    #[arg(long, env = "DUAL_INDEXER_RETRY_MAX_MS", default_value_t = 10_000)]
    pub retry_max_ms: u64,
    /// Timeout of one bulk request, in seconds.
    #[arg(long, env = "DUAL_INDEXER_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Milliseconds between offset commits.
    #[arg(long, env = "DUAL_INDEXER_COMMIT_INTERVAL_MS", default_value_t = 1000)]
    pub commit_interval_ms: u64,
    /// Exit 0 once the group has been CAUGHT_UP for the whole lag window (--window-secs).
    #[arg(long)]
    pub until_caught_up: bool,
    #[command(flatten)]
    pub lag: LagRuleArgs,
    /// Serve /healthz, /readyz and /status on this address (e.g. 127.0.0.1:9464). Off when unset.
    #[arg(long, env = "DUAL_INDEXER_STATUS_ADDR")]
    pub status_addr: Option<std::net::SocketAddr>,
    /// Seconds a shutdown waits for in-flight work before committing what is final and exiting.
    #[arg(long, env = "DUAL_INDEXER_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// Seconds between progress log lines.
    #[arg(long, env = "DUAL_INDEXER_PROGRESS_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_secs: u64,
    /// Before starting, reset the group's offsets to the earliest retained, for a deliberate re-run.
    /// Refused while the group may have active members.
    #[arg(long)]
    pub reset_to_earliest: bool,
    /// With --reset-to-earliest: reset even when the group's membership cannot be read.
    #[arg(long, requires = "reset_to_earliest")]
    pub force: bool,
}

impl RunArgs {
    /// The dead-letter topic's name.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }

    /// Validates what clap cannot and builds the pipeline settings.
    pub fn settings(&self) -> Result<RunSettings, String> {
        if self.schema == Schema::New && self.group == self.legacy_group {
            return Err(format!(
                "--group `{}` is the legacy indexer's group; the new indexer needs its own group so that both consume the whole topic",
                self.group
            ));
        }
        if self.dlq_topic() == self.topic {
            return Err("--dlq-topic must differ from --topic".into());
        }
        if self.set_gc_deletes != "keep"
            && crate::cutover::index::parse_time_value(&self.set_gc_deletes).is_none()
        {
            return Err(format!(
                "--set-gc-deletes `{}` is not a time value; accepted: `keep`, or a number with ms, s, m, h or d (e.g. 1h)",
                self.set_gc_deletes
            ));
        }
        if self.retry_base_ms > self.retry_max_ms {
            return Err(format!(
                "--retry-base-ms ({}) exceeds --retry-max-ms ({})",
                self.retry_base_ms, self.retry_max_ms
            ));
        }
        for (key, value) in &self.kafka.kafka {
            if key == "enable.auto.commit" && value != "false" {
                return Err("--kafka enable.auto.commit cannot be enabled: offsets are committed only once a command is final".into());
            }
            if key == "group.id" {
                return Err("set the consumer group with --group, not --kafka group.id".into());
            }
        }
        Ok(RunSettings {
            topic: self.topic.clone(),
            group: self.group.clone(),
            dlq_topic: self.dlq_topic(),
            dlq_kafka: self.dlq_kafka.clone(),
            version_source: self.version_source,
            schema: self.schema,
            batch_max_docs: self.batch_max_docs as usize,
            batch_max_bytes: self.batch_max_bytes as usize,
            linger: Duration::from_millis(self.linger_ms),
            max_in_flight: self.max_in_flight as usize,
            commit_interval: Duration::from_millis(self.commit_interval_ms.max(10)),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            progress_interval: Duration::from_secs(self.progress_secs),
            partitions_recorded: None,
        })
    }

    /// What the background lag monitor watches.
    pub fn monitor_settings(&self) -> crate::lag::MonitorSettings {
        crate::lag::MonitorSettings {
            topic: self.topic.clone(),
            group: self.group.clone(),
            legacy_group: (self.schema == Schema::New).then(|| self.legacy_group.clone()),
            rule: self.lag.rule(),
            interval: self.lag.interval(),
        }
    }

    /// The retry policy for bulk items and requests.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            item_retry_for: Duration::from_secs(self.item_retry_secs),
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms),
            ..RetryPolicy::default()
        }
    }
}

/// The lag rule's thresholds, shared by `run` and `lag`.
#[derive(Debug, Args, Clone)]
pub struct LagRuleArgs {
    /// Seconds between lag samples.
    #[arg(long, env = "DUAL_INDEXER_LAG_INTERVAL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_secs: u64,
    /// CAUGHT_UP needs the lag at or under --caught-up-threshold at every sample for this many seconds.
    #[arg(long, env = "DUAL_INDEXER_LAG_WINDOW_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub window_secs: u64,
    /// Lag (messages) that still counts as caught up.
    #[arg(long, env = "DUAL_INDEXER_CAUGHT_UP_THRESHOLD", default_value_t = 0)]
    pub caught_up_threshold: u64,
    /// STALLED: lag above zero and no commit progress for this many seconds.
    #[arg(long, env = "DUAL_INDEXER_STALL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_secs: u64,
}

impl LagRuleArgs {
    /// The rule these flags describe.
    pub fn rule(&self) -> crate::lag::rule::LagRule {
        crate::lag::rule::LagRule {
            caught_up_threshold: self.caught_up_threshold as i64,
            window: Duration::from_secs(self.window_secs),
            stall_after: Duration::from_secs(self.stall_secs),
            ..crate::lag::rule::LagRule::default()
        }
    }

    /// Time between samples.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// `dual-indexer lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The group to report on (ours, the legacy one, or any other).
    #[arg(long, env = "DUAL_INDEXER_GROUP")]
    pub group: String,
    /// Also report each partition's gap to this group's committed offsets.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_GROUP")]
    pub legacy_group: Option<String>,
    /// The topic.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands")]
    pub topic: String,
    #[command(flatten)]
    pub rule: LagRuleArgs,
    /// Keep sampling and print a report every --interval-secs, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON (one object per report) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 if the total lag is above N messages.
    #[arg(long, value_name = "N")]
    pub fail_if_lag_above: Option<u64>,
    /// Exit 1 unless the group is CAUGHT_UP.
    #[arg(long)]
    pub fail_unless_caught_up: bool,
    /// Also show whether this index (or alias) on --es-url is in bulk-load settings.
    #[arg(long, env = "DUAL_INDEXER_INDEX", requires = "es_url")]
    pub index: Option<String>,
    /// The new cluster, for --index.
    #[arg(long, env = "DUAL_INDEXER_ES_URL")]
    pub es_url: Option<String>,
}

/// Which Elasticsearch cluster an admin subcommand talks to.
#[derive(Debug, Args, Clone)]
pub struct EsArgs {
    /// The cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201"
    )]
    pub es_url: String,
}

impl EsArgs {
    /// A client for the cluster.
    pub fn client(
        &self,
        security: &crate::es::ClusterSecurity,
    ) -> anyhow::Result<elasticsearch::Elasticsearch> {
        crate::es::secure_client(&self.es_url, security, Duration::from_secs(60))
    }
}

/// `dual-indexer index …`.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Create the next generation `<prefix>-NNNNNN` from schemas/new-index-template.json, move the
    /// write alias to it, and add the read alias if no index holds it yet.
    #[command(
        after_help = "Example:\n  dual-indexer index create --es-url http://127.0.0.1:9201 --prefix tags-v2 --bulk-load\n  # creates tags-v2-000001, write alias tags-v2 (what `run --index` writes to), read alias tags-v2-read"
    )]
    Create(IndexCreateArgs),
    /// Print an index's bulk-load settings (refresh interval, replicas, what a restore returns to).
    #[command(
        after_help = "Example:\n  dual-indexer index show --es-url http://127.0.0.1:9201 --index tags-v2"
    )]
    Show(IndexTargetArgs),
    /// Put an index into bulk-load settings: refresh_interval -1, no replicas.
    #[command(
        after_help = "Example:\n  dual-indexer index bulk-load --es-url http://127.0.0.1:9201 --index tags-v2 --replicas 1   # 1: what a restore returns to"
    )]
    BulkLoad(IndexTargetArgs),
    /// Return an index from bulk-load settings to the recorded ones (`cutover` does this itself).
    #[command(
        after_help = "Example:\n  dual-indexer index restore --es-url http://127.0.0.1:9201 --index tags-v2"
    )]
    Restore(IndexTargetArgs),
}

/// `dual-indexer index create`.
#[derive(Debug, Args)]
pub struct IndexCreateArgs {
    #[command(flatten)]
    pub es: EsArgs,
    /// Index name prefix; the index is `<prefix>-NNNNNN`, one more than the newest generation.
    #[arg(long, default_value = "tags-v2")]
    pub prefix: String,
    /// The write alias (moved to the new index). Default: the prefix.
    #[arg(long)]
    pub write_alias: Option<String>,
    /// The read alias (added only if unheld; `cutover` moves it). Default: `<prefix>-read`.
    #[arg(long)]
    pub read_alias: Option<String>,
    /// Create the index in bulk-load settings (refresh_interval -1, no replicas).
    #[arg(long)]
    pub bulk_load: bool,
    /// Replicas once in service (restored after a bulk load).
    #[arg(long, default_value_t = 1)]
    pub replicas: u64,
}

/// An index (or alias) to inspect or change.
#[derive(Debug, Args)]
pub struct IndexTargetArgs {
    #[command(flatten)]
    pub es: EsArgs,
    /// The index, or an alias of it.
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2")]
    pub index: String,
    /// Replicas to record (bulk-load) or to restore when none were recorded (restore).
    #[arg(long, default_value_t = 1)]
    pub replicas: u64,
}

/// `dual-indexer alias …`.
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Make INDEX the only holder of the alias, in one atomic `_aliases` call, and print what changed.
    #[command(
        after_help = "Without the gate of `cutover`: use it for aliases other than the read alias, or deliberately.\n\nExample:\n  dual-indexer alias swap --es-url http://127.0.0.1:9201 --alias tags --to tags-v2-000002 --record swap-record.json"
    )]
    Swap(AliasSwapArgs),
    /// Print which indices hold an alias.
    #[command(
        after_help = "Example:\n  dual-indexer alias show --es-url http://127.0.0.1:9201 --alias tags"
    )]
    Show(AliasShowArgs),
}

/// `dual-indexer alias swap`.
#[derive(Debug, Args)]
pub struct AliasSwapArgs {
    #[command(flatten)]
    pub es: EsArgs,
    /// The alias.
    #[arg(long)]
    pub alias: String,
    /// The index to point it at (an alias of exactly one index is resolved to that index).
    #[arg(long)]
    pub to: String,
    /// Also write what changed to this file, for `rollback --record`.
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
}

/// `dual-indexer alias show`.
#[derive(Debug, Args)]
pub struct AliasShowArgs {
    #[command(flatten)]
    pub es: EsArgs,
    /// The alias.
    #[arg(long)]
    pub alias: String,
}

/// `dual-indexer cutover`.
#[derive(Debug, Args)]
pub struct CutoverArgs {
    #[command(flatten)]
    pub es: EsArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The read alias that users query.
    #[arg(long)]
    pub alias: String,
    /// The new index (or its write alias, resolved to the one index behind it).
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2")]
    pub to: String,
    /// The new indexer's consumer group, which must be CAUGHT_UP.
    #[arg(long, env = "DUAL_INDEXER_GROUP", default_value = "dual-indexer")]
    pub group: String,
    /// The command topic.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands")]
    pub topic: String,
    #[command(flatten)]
    pub rule: LagRuleArgs,
    /// The report of the last `verify --report`.
    #[arg(long, default_value = "verify-report.json")]
    pub verify_report: std::path::PathBuf,
    /// The oldest verify report accepted, in seconds.
    #[arg(long, default_value_t = 3_600)]
    pub max_report_age_secs: u64,
    /// Where to write what changed, for `rollback`.
    #[arg(long, default_value = "cutover-record.json")]
    pub record: std::path::PathBuf,
    /// Replicas to restore when the index recorded none.
    #[arg(long, default_value_t = 1)]
    pub replicas: u64,
    /// Cut over even though the gate refuses. Logged loudly and written to the record.
    #[arg(long)]
    pub force: bool,
}

/// `dual-indexer rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub es: EsArgs,
    /// The record written by `cutover` (or `alias swap --record`).
    #[arg(long, default_value = "cutover-record.json")]
    pub record: std::path::PathBuf,
    /// Restore even though the alias moved again since the swap.
    #[arg(long)]
    pub force: bool,
}

/// `dual-indexer verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The legacy cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_LEGACY_ES_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    pub legacy_url: String,
    /// The legacy index or alias.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_INDEX", default_value = "tags-v1")]
    pub legacy_index: String,
    /// The new cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201"
    )]
    pub es_url: String,
    /// The new index or alias.
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2")]
    pub index: String,
    /// Check N random legacy documents instead of all (ids only in the new index are then not looked for).
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Seed of --sample and of the sampled query corpus.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Leave a field out of the comparison: a name (`updated_at`, `tags.owner`) or a prefix ending in `*` (repeatable).
    #[arg(long = "ignore-field", value_name = "FIELD")]
    pub ignore_fields: Vec<String>,
    /// User queries, one JSON object per line: {"value": …} or {"key": …, "value": …}.
    #[arg(long, value_name = "FILE")]
    pub queries: Option<std::path::PathBuf>,
    /// Without --queries: build the corpus from the tags of this many random legacy documents (0: no query check).
    #[arg(long, default_value_t = 100)]
    pub sample_queries: usize,
    /// Hits compared per query.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_hits: u64,
    /// Also fail when a search by key and value hits fewer documents only because the legacy text field was analysed.
    #[arg(long)]
    pub strict_queries: bool,
    /// Documents per page.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub page_size: u64,
    /// Ids and diffs kept in the report per kind of difference (the counts are always complete).
    #[arg(long, default_value_t = 1_000)]
    pub max_examples: usize,
    /// Write the JSON report here (schemas/verify-report.schema.json); `cutover` reads it.
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
}

impl VerifyArgs {
    /// The settings of the check.
    pub fn settings(&self, security: &crate::es::Security) -> crate::verify::VerifySettings {
        crate::verify::VerifySettings {
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
        }
    }
}

/// `dual-indexer backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The legacy cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_LEGACY_ES_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    pub from_url: String,
    /// The legacy index or alias to copy from.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_INDEX", default_value = "tags-v1")]
    pub from_index: String,
    /// The new cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201"
    )]
    pub to_url: String,
    /// The new index or write alias to copy into (it must exist).
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2")]
    pub to_index: String,
    /// Id ranges to split the legacy index into.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub slices: u64,
    /// Slices copied at the same time (default: all of them).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub concurrency: Option<u64>,
    /// Documents per page read, which is also the bulk size.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
    /// Throttle: documents per second over all slices (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_docs_per_sec: u64,
    /// How backfilled documents are versioned: yield (external version 0; the live replay always wins) or legacy-version (the legacy document's _version).
    #[arg(long, default_value = "yield")]
    pub versions: crate::backfill::VersionStrategy,
    /// The checkpoint file.
    #[arg(long, default_value = "backfill-checkpoint.json")]
    pub checkpoint: std::path::PathBuf,
    /// Continue the backfill recorded in --checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Where documents that cannot be copied go, one JSON object per line, appended.
    #[arg(long, default_value = "backfill-dead-letters.ndjson")]
    pub dead_letter_file: std::path::PathBuf,
    /// Put the target index into bulk-load settings (no refresh, no replicas) for the copy and restore them afterwards, also on Ctrl-C.
    #[arg(long)]
    pub bulk_load: bool,
    /// index.gc_deletes on the target during the copy: how long delete tombstones refuse older backfilled copies ("keep": leave the setting alone).
    #[arg(long, default_value = "12h")]
    pub gc_deletes: String,
    /// Attempts per page read from the legacy cluster. Bulk writes are retried by time instead: an item-level 5xx for 600 s, a cluster condition (write block, overload, no answer) for as long as it lasts.
    #[arg(long, env = "DUAL_INDEXER_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Timeout of one request to either cluster.
    #[arg(long, env = "DUAL_INDEXER_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Seconds between progress log lines.
    #[arg(long, env = "DUAL_INDEXER_PROGRESS_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_secs: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl BackfillArgs {
    /// The settings of the copy.
    pub fn settings(&self, security: &crate::es::Security) -> crate::backfill::BackfillSettings {
        crate::backfill::BackfillSettings {
            security: security.clone(),
            from_url: self.from_url.clone(),
            from_index: self.from_index.clone(),
            to_url: self.to_url.clone(),
            to_index: self.to_index.clone(),
            slices: self.slices as usize,
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

/// `dual-indexer generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic to produce to; created with --partitions if missing.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands")]
    pub topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Number of messages.
    #[arg(long, default_value_t = 20_000)]
    pub count: usize,
    /// Number of distinct document ids.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ids: u64,
    /// Tags per document (at most 1000; past the 18 built-in keys, the keys are numbered).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub tags: u64,
    /// Seed; the same seed gives the same stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Plant one poison message every N messages (0: none).
    #[arg(long, default_value_t = 500)]
    pub poison_every: usize,
    /// Print the messages as `key<TAB>payload` lines instead of producing them.
    #[arg(long)]
    pub stdout: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kafka_secrets_come_from_the_environment_and_flags_win() {
        let cli = Cli::try_parse_from(["dual-indexer", "run", "--kafka", "ssl.key.password=flag"])
            .unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        let env = |name: &str| match name {
            "DUAL_INDEXER_KAFKA_SASL_PASSWORD" => Some("from-env".to_owned()),
            "DUAL_INDEXER_KAFKA_SSL_KEY_PASSWORD" => Some("also-env".to_owned()),
            _ => None,
        };
        let config = args.kafka.client_config_from(&env).unwrap();
        assert_eq!(config.get("sasl.password"), Some("from-env"));
        assert_eq!(config.get("ssl.key.password"), Some("flag"));
        let clash = |name: &str| {
            name.starts_with("DUAL_INDEXER_KAFKA_SASL_PASSWORD")
                .then(|| "x".to_owned())
        };
        let err = args.kafka.client_config_from(&clash).unwrap_err();
        assert!(err.contains("DUAL_INDEXER_KAFKA_SASL_PASSWORD and DUAL_INDEXER_KAFKA_SASL_PASSWORD_FILE are both set"), "{err}");
    }

    #[test]
    fn cluster_credentials_are_separate_for_legacy_and_new() {
        let cli = Cli::try_parse_from([
            "dual-indexer",
            "verify",
            "--es-username",
            "new-user",
            "--legacy-es-insecure",
        ])
        .unwrap();
        let env = |name: &str| match name {
            "DUAL_INDEXER_ES_PASSWORD" => Some("new-pw".to_owned()),
            "DUAL_INDEXER_LEGACY_ES_API_KEY" => Some("bGVnYWN5".to_owned()),
            _ => None,
        };
        let security = cli.global.security(&env).unwrap();
        assert_eq!(
            security.new.auth,
            Some(crate::es::Auth::Basic {
                username: "new-user".into(),
                password: crate::secrets::Secret::new("new-pw")
            })
        );
        assert!(!security.new.insecure);
        assert_eq!(
            security.legacy.auth,
            Some(crate::es::Auth::ApiKey(crate::secrets::Secret::new(
                "bGVnYWN5"
            )))
        );
        assert!(security.legacy.insecure);
        let shown = format!("{security:?}");
        assert!(
            !shown.contains("new-pw") && !shown.contains("bGVnYWN5"),
            "{shown}"
        );
    }

    #[test]
    fn run_refuses_the_legacy_group() {
        let cli =
            Cli::try_parse_from(["dual-indexer", "run", "--group", "legacy-indexer"]).unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        let err = args.settings().unwrap_err();
        assert!(err.contains("legacy indexer's group"), "{err}");
    }

    #[test]
    fn bad_values_name_the_flag_and_what_it_accepts() {
        let err = Cli::try_parse_from(["dual-indexer", "run", "--version-source", "seq"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--version-source")
                && err.contains("accepted: offset, version, timestamp"),
            "{err}"
        );
        let err = Cli::try_parse_from(["dual-indexer", "run", "--kafka", "nonsense"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not KEY=VALUE"), "{err}");
    }

    #[test]
    fn auto_commit_cannot_be_switched_on() {
        let cli =
            Cli::try_parse_from(["dual-indexer", "run", "--kafka", "enable.auto.commit=true"])
                .unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        assert!(args.settings().unwrap_err().contains("enable.auto.commit"));
    }
}
