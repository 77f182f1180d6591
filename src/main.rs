//! The `dual-indexer` binary: parse the command line, set up telemetry, run one subcommand.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dual_indexer::cli::{
    AliasCommand, BackfillArgs, Command, ConfigCheckArgs, ConfigCommand, CutoverArgs, GenerateArgs,
    IndexCommand, LagArgs, RollbackArgs, RunArgs, VerifyArgs,
};
use dual_indexer::config::{self, ParseError};
use dual_indexer::cutover::{self, gate, index, SwapRecord};
use dual_indexer::es::{ClusterSecurity, Security};
use dual_indexer::lag::monitor::{self, LagMonitor};
use dual_indexer::lag::rule::Status;
use dual_indexer::pipeline::{Ending, Pipeline, RunSettings};
use dual_indexer::sink::BulkSink;
use dual_indexer::source::{group, topics};
use dual_indexer::status::{self, StatusBoard};
use dual_indexer::transform::VersionSource;
use dual_indexer::{es, generate, lag, telemetry};
use std::sync::Arc;

/// Exit code for errors of any kind.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let (cli, provenance) = match config::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Config(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    telemetry::init_logging(cli.global.log_format, &cli.global.log_level);
    if let Some(address) = &cli.global.statsd {
        if let Err(e) = telemetry::init_statsd(address, &cli.global.metrics_prefix) {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let security = match cli.global.security(&dual_indexer::secrets::process_env) {
        Ok(security) => security,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args, &security.new).await,
            Command::Generate(args) => generate(args).await,
            Command::Lag(args) => lag(args, &security.new).await,
            Command::Verify(args) => verify(args, &security).await,
            Command::Backfill(args) => backfill(args, &security).await,
            Command::Index(command) => index_command(command, &security.new).await,
            Command::Alias(command) => alias_command(command, &security.new).await,
            Command::Cutover(args) => cutover(args, &security.new).await,
            Command::Rollback(args) => rollback(args, &security.new).await,
            Command::Config(ConfigCommand::Check(args)) => {
                config_check(*args, &provenance, &security).await
            }
            Command::Config(ConfigCommand::Reference) => {
                print!("{}", config::reference());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    // The command's work is done and its final commit made. A blocking task still running (a lag
    // sample waiting on a slow broker) has nothing left to contribute: do not let it hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            // librdkafka and HTTP errors can echo a property's value: scrub the known secrets.
            let message = dual_indexer::secrets::scrub(&format!("{e:#}"));
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn config_check(
    args: ConfigCheckArgs,
    provenance: &config::Provenance,
    security: &Security,
) -> anyhow::Result<ExitCode> {
    let findings = config::check::run_checks(&args, security).await;
    let report = config::check::report(provenance, security, &findings);
    print!("{}", dual_indexer::secrets::scrub(&report));
    let failed = findings.iter().filter(|f| f.outcome.is_err()).count();
    if failed > 0 {
        println!("{failed} check(s) failed");
        return Ok(ExitCode::from(1));
    }
    println!("all checks passed");
    Ok(ExitCode::SUCCESS)
}

async fn run(args: RunArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
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
    tracing::info!(topic = %settings.topic, group = %settings.group, index = %args.index, dlq = %settings.dlq_topic, version_source = %settings.version_source, schema = %settings.schema, "replay starting");
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
            tracing::info!(group = %settings.group, partition = p.partition, from = ?p.committed, to = p.low, "offset reset to earliest");
        }
    }
    let client = es::secure_client(
        &args.es_url,
        security,
        Duration::from_secs(args.request_timeout_secs),
    )?;
    if args.create_index && es::ensure_index(&client, &args.index, args.schema.template()).await? {
        tracing::info!(index = %args.index, schema = %args.schema, "created the index from its template in schemas/");
    }
    let mut settings = settings.clone();
    if settings.version_source == VersionSource::Offset {
        let (config, topic) = (kafka.clone(), settings.topic.clone());
        let partitions =
            tokio::task::spawn_blocking(move || topics::partition_count(&config, &topic)).await??;
        settings.partitions_recorded = Some(
            dual_indexer::sink::layout::check_partitions(
                &client,
                &args.index,
                &settings.topic,
                partitions,
            )
            .await?,
        );
    }
    check_gc_deletes(&client, args, &args.retry_policy()).await;
    if let Err(e) = topics::ensure_topic(&kafka, &settings.dlq_topic, 1).await {
        tracing::warn!(topic = %settings.dlq_topic, error = %e, "could not create the dead-letter topic; relying on the broker to create it");
    }
    let sink = BulkSink::new(
        client.clone(),
        &args.index,
        args.retry_policy(),
        Duration::from_secs(args.request_timeout_secs),
    );
    let board = Arc::new(StatusBoard::default());
    if let Some(addr) = args.status_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--status-addr {addr}: cannot listen there: {e}"))?;
        tracing::info!(%addr, "serving /healthz, /readyz and /status");
        tokio::spawn(status::serve(listener, Arc::clone(&board)));
    }
    let lag_status = lag::spawn_monitor(&kafka, args.monitor_settings())?;
    board.follow_lag(lag_status.clone());
    tokio::spawn(watch_index_settings(
        client.clone(),
        args.index.clone(),
        args.lag.interval(),
        Arc::clone(&board),
    ));
    let pipeline = Pipeline::new(&kafka, sink, settings, board)?;
    Ok((pipeline, client, lag_status))
}

/// Sets `index.gc_deletes` when `--set-gc-deletes` asks, and says when the tombstone lifetime is
/// shorter than the longest a write may be retried: a delete's tombstone must outlive every
/// older write of the same document that can still arrive (a retry, a redriven dead letter), or
/// that write brings the deleted document back.
async fn check_gc_deletes(
    client: &elasticsearch::Elasticsearch,
    args: &RunArgs,
    policy: &dual_indexer::sink::RetryPolicy,
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
                tracing::info!(index = %args.index, gc_deletes = %args.set_gc_deletes, "set index.gc_deletes")
            }
            Err(e) => {
                tracing::warn!(index = %args.index, error = %e, "could not set index.gc_deletes")
            }
        }
    }
    let current = match index::gc_deletes(client, &args.index).await {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(index = %args.index, error = %e, "could not read index.gc_deletes");
            return;
        }
    };
    let lifetime = current
        .as_deref()
        .and_then(index::parse_time_value)
        .unwrap_or(index::DEFAULT_GC_DELETES);
    let needed = policy.item_retry_for + Duration::from_secs(args.request_timeout_secs);
    if lifetime < needed {
        tracing::warn!(
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
                        tracing::info!(index = %s.index, refresh_interval = ?s.refresh_interval, replicas = ?s.replicas, "the index is in bulk-load settings; `cutover` (or `index restore`) restores them");
                    }
                }
                board.index_settings(serde_json::to_value(&settings).unwrap_or_default());
                last = Some(settings);
            }
            Err(e) => tracing::debug!(error = %e, "reading the index settings failed; will retry"),
        }
    }
}

async fn lag(args: LagArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
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
        (Some(url), Some(index)) => Some((
            es::secure_client(url, security, Duration::from_secs(30))?,
            index,
        )),
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

async fn index_command(
    command: IndexCommand,
    security: &ClusterSecurity,
) -> anyhow::Result<ExitCode> {
    match command {
        IndexCommand::Create(args) => {
            let client = args.es.client(security)?;
            let write_alias = args
                .write_alias
                .clone()
                .unwrap_or_else(|| args.prefix.clone());
            let read_alias = args
                .read_alias
                .clone()
                .unwrap_or_else(|| format!("{}-read", args.prefix));
            let created = index::create(
                &client,
                &index::CreateOptions {
                    prefix: &args.prefix,
                    template: es::NEW_INDEX_TEMPLATE,
                    write_alias: &write_alias,
                    read_alias: &read_alias,
                    bulk_load: args.bulk_load,
                    replicas: args.replicas,
                },
            )
            .await?;
            println!("created {}", created.index);
            for action in &created.alias_actions {
                println!("  {action}");
            }
            for s in index::load_settings(&client, &created.index).await? {
                println!("{}", s.describe());
            }
        }
        IndexCommand::Show(args) => {
            for s in index::load_settings(&args.es.client(security)?, &args.index).await? {
                println!("{}", s.describe());
            }
        }
        IndexCommand::BulkLoad(args) => {
            let client = args.es.client(security)?;
            for s in index::load_settings(&client, &args.index).await? {
                index::enter_bulk_load(&client, &s.index, args.replicas).await?;
                println!(
                    "index {}: bulk-load settings on (refresh_interval -1, replicas 0); `index restore` or `cutover` returns it to replicas {}",
                    s.index, args.replicas
                );
            }
        }
        IndexCommand::Restore(args) => {
            let client = args.es.client(security)?;
            for s in index::load_settings(&client, &args.index).await? {
                match index::restore(&client, &s, args.replicas).await? {
                    Some(values) => println!("index {}: restored {values}", s.index),
                    None => println!(
                        "index {}: not in bulk-load settings; nothing to do",
                        s.index
                    ),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn alias_command(
    command: AliasCommand,
    security: &ClusterSecurity,
) -> anyhow::Result<ExitCode> {
    match command {
        AliasCommand::Swap(args) => {
            let client = args.es.client(security)?;
            let to = cutover::alias::resolve_index(&client, &args.to).await?;
            let record = cutover::swap(&client, &args.es.es_url, &args.alias, &to).await?;
            if record.actions.is_empty() {
                println!(
                    "alias {} is already on {to} alone; nothing changed",
                    args.alias
                );
            } else {
                println!("{}", record.describe());
            }
            if let Some(path) = &args.record {
                record.write(path)?;
                println!("recorded in {} (for `rollback --record`)", path.display());
            }
        }
        AliasCommand::Show(args) => {
            let state = cutover::alias::read(&args.es.client(security)?, &args.alias).await?;
            println!("alias {}: {}", state.alias, state.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn cutover(args: CutoverArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    let client = args.es.client(security)?;
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
        now: cutover::unix_now(),
        max_report_age: args.max_report_age_secs,
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
            tracing::warn!(reason = %r, "FORCED CUTOVER: the gate refused, overridden by --force");
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

async fn verify(args: VerifyArgs, security: &Security) -> anyhow::Result<ExitCode> {
    let report = dual_indexer::verify::run(&args.settings(security)).await?;
    if let Some(path) = &args.report {
        dual_indexer::files::write_json_atomically(path, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", dual_indexer::verify::summary(&report));
    }
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn backfill(args: BackfillArgs, security: &Security) -> anyhow::Result<ExitCode> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::warn!("stopping: finishing the pages in flight, restoring index settings and saving the checkpoint (a second signal exits at once)");
        let _ = stop.send(true);
        shutdown_signal().await;
        std::process::exit(130);
    });
    let summary = dual_indexer::backfill::run(args.settings(security), stopped).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", dual_indexer::backfill::describe(&summary));
    }
    Ok(match summary.ending {
        dual_indexer::backfill::Ending::Interrupted => ExitCode::from(130),
        _ => ExitCode::SUCCESS,
    })
}

async fn rollback(args: RollbackArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    let client = args.es.client(security)?;
    let record = SwapRecord::read(&args.record)?;
    let (was, actions) = cutover::rollback(&client, &record, args.force).await?;
    if actions.is_empty() {
        println!(
            "alias {} is already on {}; nothing changed",
            was.alias,
            record.before.describe()
        );
    } else {
        println!(
            "alias {}: {} → {} (rolled back)",
            was.alias,
            was.describe(),
            record.before.describe()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let spec = generate::GeneratorSpec {
        count: args.count,
        ids: args.ids as usize,
        tags: args.tags as usize,
        seed: args.seed,
        poison_every: args.poison_every,
    };
    let messages = generate::messages(&spec);
    let poison = messages.iter().filter(|m| m.poison.is_some()).count();
    if args.stdout {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for m in &messages {
            out.write_all(m.key.as_deref().unwrap_or("").as_bytes())?;
            out.write_all(b"\t")?;
            out.write_all(&m.payload)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let kafka = args.kafka.client_config()?;
    if topics::ensure_topic(&kafka, &args.topic, args.partitions).await? {
        tracing::info!(topic = %args.topic, partitions = args.partitions, "created topic");
    }
    let started = Instant::now();
    generate::produce(&kafka, &args.topic, &messages).await?;
    println!(
        "produced {} messages ({poison} poison) for {} ids to `{}` in {:.1}s (seed {})",
        messages.len(),
        spec.ids,
        args.topic,
        started.elapsed().as_secs_f64(),
        spec.seed
    );
    Ok(ExitCode::SUCCESS)
}

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
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the replay cleanly");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; draining");
    }
}
