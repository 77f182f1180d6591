//! `dual-indexer alias …`: atomic alias changes, without the gate of `cutover`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cli::EsArgs;
use crate::cutover;
use crate::es::ClusterSecurity;

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

/// Swaps an alias to one index, or shows which indices hold it.
pub async fn run(command: AliasCommand, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    match command {
        AliasCommand::Swap(args) => {
            let client = args.es.client(security).await?;
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
            let state = cutover::alias::read(&args.es.client(security).await?, &args.alias).await?;
            println!("alias {}: {}", state.alias, state.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}
