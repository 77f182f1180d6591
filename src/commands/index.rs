//! `dual-indexer index …`: versioned indices (`tags-v2-000001`, …) with their aliases, and their
//! bulk-load settings.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cli::EsArgs;
use crate::cutover::index;
use crate::es::{self, ClusterSecurity};

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

/// Creates, shows, or changes the bulk-load settings of an index.
pub async fn run(command: IndexCommand, security: &ClusterSecurity) -> anyhow::Result<ExitCode> {
    match command {
        IndexCommand::Create(args) => {
            let client = args.es.client(security).await?;
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
            for s in index::load_settings(&args.es.client(security).await?, &args.index).await? {
                println!("{}", s.describe());
            }
        }
        IndexCommand::BulkLoad(args) => {
            let client = args.es.client(security).await?;
            for s in index::load_settings(&client, &args.index).await? {
                index::enter_bulk_load(&client, &s.index, args.replicas).await?;
                println!(
                    "index {}: bulk-load settings on (refresh_interval -1, replicas 0); `index restore` or `cutover` returns it to replicas {}",
                    s.index, args.replicas
                );
            }
        }
        IndexCommand::Restore(args) => {
            let client = args.es.client(security).await?;
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
