//! `dual-indexer run`: the sidecar indexer. Replays the command topic into the new cluster until a
//! signal (or, with `--until-caught-up`, until the group has been CAUGHT_UP for a whole window).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::{shutdown_signal, LOG_TARGET};
use crate::cli::{heading, parse_key_value, EnvelopeArgs, KafkaArgs, LagRuleArgs};
use crate::cutover::index;
use crate::dlq::DeadLetterQueue;
use crate::es::cluster::Role;
use crate::es::{self, ClusterSecurity};
use crate::lag;
use crate::pipeline::{Ending, Pipeline, RunSettings};
use crate::secrets::redact_url;
use crate::sink::{BulkSink, RetryPolicy};
use crate::source::commands::CommandSource;
use crate::source::group;
use crate::startup;
use crate::status::{self, StatusBoard};
use crate::transform::Schema;

/// `dual-indexer run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub kafka: KafkaArgs,
    #[command(flatten, next_help_heading = heading::ENVELOPE)]
    pub envelope: EnvelopeArgs,
    /// The command topic.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands", help_heading = heading::KAFKA)]
    pub topic: String,
    /// This indexer's consumer group. Must differ from the legacy indexer's.
    #[arg(long, env = "DUAL_INDEXER_GROUP", default_value = "dual-indexer", help_heading = heading::KAFKA)]
    pub group: String,
    /// The legacy indexer's consumer group (only checked to differ from --group here).
    #[arg(
        long,
        env = "DUAL_INDEXER_LEGACY_GROUP",
        default_value = "legacy-indexer",
        help_heading = heading::KAFKA
    )]
    pub legacy_group: String,
    /// Dead-letter topic. Default: the command topic's name with `.dlq` appended.
    #[arg(long, env = "DUAL_INDEXER_DLQ_TOPIC", help_heading = heading::KAFKA)]
    pub dlq_topic: Option<String>,
    /// A librdkafka setting for the dead-letter producer only, over --kafka (repeatable), e.g. `--dlq-kafka bootstrap.servers=dlq-kafka:9092` for a dead-letter topic on another cluster.
    #[arg(long = "dlq-kafka", value_name = "KEY=VALUE", value_parser = parse_key_value, help_heading = heading::KAFKA)]
    pub dlq_kafka: Vec<(String, String)>,
    /// Milliseconds between offset commits.
    #[arg(long, env = "DUAL_INDEXER_COMMIT_INTERVAL_MS", default_value_t = 1000, help_heading = heading::KAFKA)]
    pub commit_interval_ms: u64,
    /// Before starting, reset the group's offsets to the earliest retained, for a deliberate re-run.
    /// Refused while the group may have active members.
    #[arg(long, help_heading = heading::KAFKA)]
    pub reset_to_earliest: bool,
    /// With --reset-to-earliest: reset even when the group's membership cannot be read.
    #[arg(long, requires = "reset_to_earliest", help_heading = heading::KAFKA)]
    pub force: bool,
    /// The new cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201",
        help_heading = heading::ES
    )]
    pub es_url: String,
    /// The index or write alias to write to.
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2", help_heading = heading::ES)]
    pub index: String,
    /// Create the index from the schema's template in schemas/ if it does not exist.
    #[arg(long, env = "DUAL_INDEXER_CREATE_INDEX", help_heading = heading::ES)]
    pub create_index: bool,
    /// The document shape to write: `new` (keyToValue tags) or `legacy` (dynamic
    /// `actions.tags.<key>` fields: the reference legacy indexer, run under the legacy group).
    #[arg(long, env = "DUAL_INDEXER_SCHEMA", default_value = "new", help_heading = heading::ES)]
    pub schema: Schema,
    /// Set the target's index.gc_deletes (how long a delete's version tombstone refuses older writes, e.g. 1h) at start; "keep" leaves it, and a value shorter than the retry window is warned about.
    #[arg(long, env = "DUAL_INDEXER_SET_GC_DELETES", default_value = "keep", help_heading = heading::ES)]
    pub set_gc_deletes: String,
    /// Documents per bulk request.
    #[arg(long, env = "DUAL_INDEXER_BATCH_MAX_DOCS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000), help_heading = heading::BATCHING)]
    pub batch_max_docs: u64,
    /// Bytes per bulk request (a batch is sent once it reaches this size).
    #[arg(long, env = "DUAL_INDEXER_BATCH_MAX_BYTES", default_value_t = 5 << 20, value_parser = clap::value_parser!(u64).range(1024..=(100 << 20)), help_heading = heading::BATCHING)]
    pub batch_max_bytes: u64,
    /// Milliseconds a partly filled batch waits for more documents.
    #[arg(long, env = "DUAL_INDEXER_LINGER_MS", default_value_t = 50, help_heading = heading::BATCHING)]
    pub linger_ms: u64,
    /// Bulk requests in flight at once.
    #[arg(long, env = "DUAL_INDEXER_MAX_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64), help_heading = heading::BATCHING)]
    pub max_in_flight: u64,
    /// Seconds a document's write may keep failing with an item-level 5xx before it is dead-lettered. Cluster conditions (write blocks, a closed index, 429 overload, no answer) are retried without limit instead.
    #[arg(long, env = "DUAL_INDEXER_ITEM_RETRY_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::BATCHING)]
    pub item_retry_secs: u64,
    /// First retry backoff in milliseconds (doubles per attempt, full jitter).
    #[arg(long, env = "DUAL_INDEXER_RETRY_BASE_MS", default_value_t = 100, help_heading = heading::BATCHING)]
    pub retry_base_ms: u64,
    /// Largest retry backoff in milliseconds.
    #[arg(long, env = "DUAL_INDEXER_RETRY_MAX_MS", default_value_t = 10_000, help_heading = heading::BATCHING)]
    pub retry_max_ms: u64,
    /// Timeout of one bulk request, in seconds.
    #[arg(long, env = "DUAL_INDEXER_REQUEST_TIMEOUT_SECS", default_value_t = 60, help_heading = heading::BATCHING)]
    pub request_timeout_secs: u64,
    /// Seconds a shutdown waits for in-flight work before committing what is final and exiting.
    #[arg(long, env = "DUAL_INDEXER_DRAIN_TIMEOUT_SECS", default_value_t = 30, help_heading = heading::BATCHING)]
    pub drain_timeout_secs: u64,
    /// Exit 0 once the group has been CAUGHT_UP for the whole lag window (--window-secs).
    #[arg(long, help_heading = heading::LAG)]
    pub until_caught_up: bool,
    #[command(flatten, next_help_heading = heading::LAG)]
    pub lag: LagRuleArgs,
    /// Serve /healthz, /readyz and /status on this address (e.g. 127.0.0.1:9464). Off when unset.
    #[arg(long, env = "DUAL_INDEXER_STATUS_ADDR", help_heading = heading::STATUS)]
    pub status_addr: Option<std::net::SocketAddr>,
    /// Seconds between progress log lines.
    #[arg(long, env = "DUAL_INDEXER_PROGRESS_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::LOGGING)]
    pub progress_secs: u64,
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
        if self.set_gc_deletes != "keep" && index::parse_time_value(&self.set_gc_deletes).is_none()
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
            plan: Arc::new(self.envelope.plan()?),
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
    pub fn monitor_settings(&self) -> lag::MonitorSettings {
        lag::MonitorSettings {
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

/// Replays the command topic until a signal, or until caught up with `--until-caught-up`.
pub async fn run(args: RunArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    // First of all: a signal during startup (connecting, creating the index, joining) ends the
    // startup and exits 0, instead of the default kill or a wait for a slow cluster.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let settings = args.settings().map_err(anyhow::Error::msg)?;
    let (pipeline, client, lag_status) = tokio::select! {
        biased;
        _ = &mut shutdown => {
            println!("stopped during startup, before the replay began: nothing was consumed or committed");
            return Ok(ExitCode::SUCCESS);
        }
        started = start_replay(&args, &settings, security) => started?,
    };
    tracing::info!(target: LOG_TARGET, topic = %settings.topic, group = %settings.group, index = %args.index, dlq = %settings.dlq_topic, envelope = %settings.plan.mapping(), schema = %settings.schema, "replay starting");
    let started = Instant::now();
    let (ending, summary) = pipeline
        .run(shutdown, args.until_caught_up.then_some(lag_status))
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let how = match ending {
        Ending::CaughtUp => "caught up",
        Ending::Signal => "stopped",
    };
    let documents = match es::refresh(&client, &args.index).await {
        Ok(()) => es::count(&client, &args.index)
            .await
            .map(|n| n.to_string())
            .unwrap_or_else(|e| format!("unknown ({e})")),
        Err(e) => format!("unknown ({e})"),
    };
    println!(
        "replay {how} after {elapsed:.1}s: {} consumed ({:.0}/s), {} indexed, {} deleted, {} already applied, {} dead-lettered to {}, {} unfinished; {documents} documents in {}",
        summary.consumed,
        summary.consumed as f64 / elapsed.max(1e-3),
        summary.indexed,
        summary.deleted,
        summary.already_applied,
        summary.dead_lettered,
        settings.dlq_topic,
        summary.unfinished,
        args.index,
    );
    Ok(ExitCode::SUCCESS)
}

/// Everything `run` does before the replay loop: the optional offset reset, the index, the
/// dead-letter topic, the status endpoint, the lag monitor, and the consumer's subscription.
async fn start_replay(
    args: &RunArgs,
    settings: &RunSettings,
    security: &ClusterSecurity,
) -> anyhow::Result<(
    Pipeline,
    elasticsearch::Elasticsearch,
    tokio::sync::watch::Receiver<lag::Sampled>,
)> {
    let kafka = args.kafka.client_config()?;
    let board = Arc::new(StatusBoard::default());
    if let Some(addr) = args.status_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--status-addr {addr}: cannot listen there: {e}"))?;
        tracing::info!(target: LOG_TARGET, %addr, "serving /healthz, /readyz and /status");
        tokio::spawn(status::serve(listener, Arc::clone(&board)));
    }
    // The replay's consumer, made first: the wait for the brokers asks through it.
    let mut source = CommandSource::connect(
        &kafka,
        &settings.group,
        &settings.topic,
        settings.commit_interval,
    )?;
    let brokers = kafka.get("bootstrap.servers").unwrap_or("?");
    let partitions =
        startup::wait_for_topic(source.monitor_handle(), brokers, &settings.topic, &board).await?;
    if partitions.is_none() {
        tracing::warn!(target: LOG_TARGET, topic = %settings.topic, "the topic has no partitions yet (does it exist?); its partitions are read once it has some");
    }
    if args.reset_to_earliest {
        let (config, group_id, topic, force) = (
            kafka.clone(),
            settings.group.clone(),
            settings.topic.clone(),
            args.force,
        );
        let before = tokio::task::spawn_blocking(move || {
            group::reset_to_earliest(&config, &group_id, &topic, force)
        })
        .await??;
        for p in before {
            tracing::info!(target: LOG_TARGET, group = %settings.group, partition = p.partition, from = ?p.committed, to = p.low, "offset reset to earliest");
        }
    }
    let client = es::secure_client(
        &args.es_url,
        security,
        Duration::from_secs(args.request_timeout_secs),
    )?;
    // The cluster `run` writes, whichever schema: it must take the new cluster's writes.
    startup::wait_for_cluster(&client, &redact_url(&args.es_url), Role::New, &board).await?;
    if args.create_index && es::ensure_index(&client, &args.index, args.schema.template()).await? {
        tracing::info!(target: LOG_TARGET, index = %args.index, schema = %args.schema, "created the index from its template in schemas/");
    }
    let mut settings = settings.clone();
    if settings.plan.versions_are_offsets() {
        let partitions = partitions.ok_or_else(|| {
            anyhow::anyhow!(
                "topic `{}` has no partitions (does it exist?); with --version-source offset the index records the partition count it is built from",
                settings.topic
            )
        })?;
        settings.partitions_recorded = Some(
            crate::sink::layout::check_partitions(
                &client,
                &args.index,
                &settings.topic,
                partitions,
            )
            .await?,
        );
    }
    check_gc_deletes(&client, args, &args.retry_policy()).await;
    let mut dlq_config = kafka.clone();
    for (key, value) in &settings.dlq_kafka {
        dlq_config.set(key, value);
    }
    let dlq = DeadLetterQueue::creating_topic(&dlq_config, &settings.dlq_topic, &settings.topic)?;
    let sink = BulkSink::new(
        client.clone(),
        &args.index,
        args.retry_policy(),
        Duration::from_secs(args.request_timeout_secs),
    );
    tokio::spawn(watch_index_settings(
        client.clone(),
        args.index.clone(),
        args.lag.interval(),
        Arc::clone(&board),
    ));
    source.subscribe(settings.partitions_recorded)?;
    let lag_status = lag::spawn_monitor(
        Box::new(source.monitor_handle()),
        &kafka,
        args.monitor_settings(),
    )?;
    board.follow_lag(lag_status.clone());
    let pipeline = Pipeline::new(source, sink, dlq, settings, board);
    Ok((pipeline, client, lag_status))
}

/// Sets `index.gc_deletes` when `--set-gc-deletes` asks, and says when the tombstone lifetime is
/// shorter than the longest a write may be retried: a delete's tombstone must outlive every
/// older write of the same document that can still arrive (a retry, a redriven dead letter), or
/// that write brings the deleted document back.
async fn check_gc_deletes(
    client: &elasticsearch::Elasticsearch,
    args: &RunArgs,
    policy: &RetryPolicy,
) {
    if args.set_gc_deletes != "keep" {
        match index::put_settings(
            client,
            &args.index,
            &serde_json::json!({"gc_deletes": args.set_gc_deletes}),
        )
        .await
        {
            Ok(()) => {
                tracing::info!(target: LOG_TARGET, index = %args.index, gc_deletes = %args.set_gc_deletes, "set index.gc_deletes")
            }
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, index = %args.index, error = %e, "could not set index.gc_deletes")
            }
        }
    }
    let current = match index::gc_deletes(client, &args.index).await {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, index = %args.index, error = %e, "could not read index.gc_deletes");
            return;
        }
    };
    let lifetime = current
        .as_deref()
        .and_then(index::parse_time_value)
        .unwrap_or(index::DEFAULT_GC_DELETES);
    let needed = policy.item_retry_for + Duration::from_secs(args.request_timeout_secs);
    if lifetime < needed {
        tracing::warn!(target: LOG_TARGET,
            index = %args.index,
            gc_deletes = current.as_deref().unwrap_or("60s (default)"),
            needed_secs = needed.as_secs(),
            "index.gc_deletes is shorter than a write may be retried (--item-retry-secs plus --request-timeout-secs): a delete's tombstone could expire before an older write of the same document arrives. Writes this indexer retries are dropped once a newer one of the same document is applied, but a redriven dead letter or another writer is not; run with --set-gc-deletes {}s or longer",
            needed.as_secs()
        );
    }
}

/// Keeps the status board's view of the target index's bulk-load settings fresh, and says once
/// (and again on every change) when the index is in bulk-load settings.
async fn watch_index_settings(
    client: elasticsearch::Elasticsearch,
    index_name: String,
    interval: Duration,
    board: Arc<StatusBoard>,
) {
    let mut last: Option<Vec<index::LoadSettings>> = None;
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(5)));
    loop {
        tick.tick().await;
        match index::load_settings(&client, &index_name).await {
            Ok(settings) => {
                if last.as_ref() != Some(&settings) {
                    for s in settings.iter().filter(|s| s.bulk_load) {
                        tracing::info!(target: LOG_TARGET, index = %s.index, refresh_interval = ?s.refresh_interval, replicas = ?s.replicas, "the index is in bulk-load settings; `cutover` (or `index restore`) restores them");
                    }
                }
                board.index_settings(serde_json::to_value(&settings).unwrap_or_default());
                last = Some(settings);
            }
            Err(e) => {
                tracing::debug!(target: LOG_TARGET, error = %e, "reading the index settings failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Cli, Command};
    use clap::Parser;

    fn run_args(argv: &[&str]) -> super::RunArgs {
        let cli = Cli::try_parse_from(["dual-indexer", "run"].iter().chain(argv)).unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        *args
    }

    #[test]
    fn run_refuses_the_legacy_group() {
        let err = run_args(&["--group", "legacy-indexer"])
            .settings()
            .unwrap_err();
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
        let args = run_args(&["--kafka", "enable.auto.commit=true"]);
        assert!(args.settings().unwrap_err().contains("enable.auto.commit"));
    }
}
