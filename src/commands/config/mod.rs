//! `dual-indexer config …`: the effective configuration, where each setting comes from, and
//! whether it works.

mod check;

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::run::RunArgs;
use crate::cli::heading;
use crate::config::{self, Provenance};
use crate::es::Security;

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
    #[arg(long, env = "DUAL_INDEXER_LEGACY_ES_URL", help_heading = heading::ES)]
    pub legacy_es_url: Option<String>,
    /// The legacy index or alias to look for with --legacy-es-url.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_INDEX", default_value = "tags-v1", help_heading = heading::ES)]
    pub legacy_index: String,
}

/// Checks the configuration (exit 1 if a check fails), or prints the settings reference.
pub async fn run(
    command: ConfigCommand,
    provenance: &Provenance,
    security: &Security,
) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check(args) => check(*args, provenance, security).await,
        ConfigCommand::Reference => {
            print!(
                "{}",
                config::reference(&<super::Cli as clap::CommandFactory>::command())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints the settings with where each came from, then runs every check and says which failed.
async fn check(
    args: ConfigCheckArgs,
    provenance: &Provenance,
    security: &Security,
) -> anyhow::Result<ExitCode> {
    let findings = check::run_checks(&args, security).await;
    let report = check::report(provenance, security, &findings);
    print!("{}", crate::secrets::scrub(&report));
    let failed = findings.iter().filter(|f| f.outcome.is_err()).count();
    if failed > 0 {
        println!("{failed} check(s) failed");
        return Ok(ExitCode::from(1));
    }
    println!("all checks passed");
    Ok(ExitCode::SUCCESS)
}
