//! The `dual-indexer` binary: parse the command line, set up telemetry, run one subcommand.
//!
//! Each subcommand's body lives in [`dual_indexer::commands`]; this file only gets the process
//! ready for it and turns its result into an exit code.

use std::process::ExitCode;
use std::time::Duration;

use dual_indexer::commands;
use dual_indexer::commands::{Cli, Command};
use dual_indexer::config::{self, ParseError};
use dual_indexer::telemetry;

/// Exit code for errors of any kind.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let (cli, provenance) = match config::parse::<Cli>(std::env::args_os().collect()) {
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
            Command::Run(args) => commands::run::run(*args, &security.new).await,
            Command::Generate(args) => commands::generate::run(args).await,
            Command::Lag(args) => commands::lag::run(args, &security.new).await,
            Command::Verify(args) => commands::verify::run(args, &security).await,
            Command::Backfill(args) => commands::backfill::run(args, &security).await,
            Command::Index(command) => commands::index::run(command, &security.new).await,
            Command::Alias(command) => commands::alias::run(command, &security.new).await,
            Command::Cutover(args) => commands::cutover::run(args, &security.new).await,
            Command::Rollback(args) => commands::rollback::run(args, &security.new).await,
            Command::Translate(args) => commands::translate::run(args),
            Command::Shadow(args) => commands::shadow::run(*args, &security).await,
            Command::Envelope(command) => commands::envelope::run(command).await,
            Command::Dlq(command) => commands::dlq::run(command, &security.new).await,
            Command::Config(command) => {
                commands::config::run(command, &provenance, &security).await
            }
        }
    });
    // The command's work is done and its final commit made. A blocking task still running (a lag
    // sample waiting on a slow broker) has nothing left to contribute: do not let it hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    telemetry::flush_statsd(Duration::from_secs(1));
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
