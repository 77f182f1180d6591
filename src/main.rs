//! The `dual-indexer` binary: parse the command line, set up telemetry, run one subcommand.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dual_indexer::cli::{Cli, Command, GenerateArgs, LagArgs, RunArgs};
use dual_indexer::lag::monitor::{self, LagMonitor};
use dual_indexer::lag::rule::Status;
use dual_indexer::pipeline::{Ending, Pipeline};
use dual_indexer::sink::BulkSink;
use dual_indexer::source::{group, topics};
use dual_indexer::status::{self, StatusBoard};
use dual_indexer::{es, generate, lag, telemetry};
use std::sync::Arc;

/// Exit code for errors of any kind.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.global.log_format, &cli.global.log_level);
    if let Some(address) = &cli.global.statsd {
        if let Err(e) = telemetry::init_statsd(address, &cli.global.metrics_prefix) {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    }
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
            Command::Run(args) => run(args).await,
            Command::Generate(args) => generate(args).await,
            Command::Lag(args) => lag(args).await,
            Command::Verify(_) => not_implemented("verify", 5),
            Command::Backfill(_) => not_implemented("backfill", 6),
            Command::Index(_) => not_implemented("index", 4),
            Command::Alias(_) => not_implemented("alias", 4),
            Command::Cutover(_) => not_implemented("cutover", 4),
            Command::Rollback(_) => not_implemented("rollback", 4),
            Command::Config(_) => not_implemented("config", 7),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn not_implemented(name: &str, issue: u32) -> anyhow::Result<ExitCode> {
    eprintln!("error: `dual-indexer {name}` is not implemented yet (tracked in issue {issue}); nothing was done");
    Ok(ExitCode::from(EXIT_ERROR))
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = args.settings().map_err(anyhow::Error::msg)?;
    let kafka = args.kafka.client_config();
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
    let client = es::client(&args.es_url, Duration::from_secs(args.request_timeout_secs))?;
    if args.create_index && es::ensure_index(&client, &args.index, es::NEW_INDEX_TEMPLATE).await? {
        tracing::info!(index = %args.index, "created index from schemas/new-index-template.json");
    }
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
    let lag_status = lag::spawn_monitor(&kafka, args.monitor_settings(), Arc::clone(&board))?;
    let pipeline = Pipeline::new(&kafka, sink, settings.clone(), board)?;
    tracing::info!(topic = %settings.topic, group = %settings.group, index = %args.index, dlq = %settings.dlq_topic, version_source = %settings.version_source, "replay starting");
    let started = Instant::now();
    let (ending, summary) = pipeline
        .run(
            shutdown_signal(),
            args.until_caught_up.then_some(lag_status),
        )
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

async fn lag(args: LagArgs) -> anyhow::Result<ExitCode> {
    let kafka = args.kafka.client_config();
    let rule = args.rule.rule();
    let mut monitor = LagMonitor::new(
        &kafka,
        &args.topic,
        &args.group,
        args.legacy_group.as_deref(),
        rule,
    )?;
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(args.rule.interval());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let report = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
        }
        let (returned, report) = tokio::task::spawn_blocking(move || {
            let report = monitor.sample();
            (monitor, report)
        })
        .await?;
        monitor = returned;
        let report = report?;
        if args.watch {
            print_report(&report, args.json)?;
            continue;
        }
        // A status needs a full window of samples.
        if started.elapsed() >= rule.window {
            break report;
        }
    };
    print_report(&report, args.json)?;
    let above = args
        .fail_if_lag_above
        .is_some_and(|n| report.total_lag > n as i64);
    let not_caught_up = args.fail_unless_caught_up && report.status() != Some(Status::CaughtUp);
    Ok(if above || not_caught_up {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(report: &monitor::LagReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", monitor::render_table(report));
    }
    Ok(())
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
    let kafka = args.kafka.client_config();
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

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the replay cleanly");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; draining");
}
