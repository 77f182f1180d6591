//! `dual-indexer rollback`: undo the last cutover (or `alias swap --record`), restoring the alias
//! exactly as the record says it was.

use std::process::ExitCode;

use clap::Args;

use crate::cli::EsArgs;
use crate::cutover::{self, SwapRecord};
use crate::es::ClusterSecurity;

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

/// Restores the alias recorded in `--record`.
pub async fn run(args: RollbackArgs, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    let client = args.es.client(security).await?;
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
