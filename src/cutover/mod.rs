//! Moving reads to the new index, and back: versioned indices, atomic alias swaps, the cutover
//! gate and the record that makes a rollback exact.
//!
//! - [`index`] creates `<prefix>-NNNNNN` generations and manages their bulk-load settings.
//! - [`alias`] plans and applies alias changes as single atomic `_aliases` calls.
//! - [`gate`] decides whether a cutover may go ahead.
//!
//! A swap writes a [`SwapRecord`]: the alias's holders before and after. `rollback` reads it and
//! restores the "before" state exactly, refusing if the alias moved again since.

pub mod alias;
pub mod gate;
pub mod index;

use std::path::Path;

use elasticsearch::Elasticsearch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::files::unix_now;
use crate::secrets::redact_url;
use alias::AliasState;

/// What an alias swap changed, kept so that a rollback can undo exactly that.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwapRecord {
    /// The cluster, as given (credentials removed).
    pub cluster: String,
    /// The alias's holders before the swap.
    pub before: AliasState,
    /// The alias's holders right after it.
    pub after: AliasState,
    /// The `_aliases` actions applied.
    pub actions: Vec<Value>,
    /// When, in Unix seconds.
    pub at: u64,
    /// Whether the gate was overridden with `--force`, and what it had refused for.
    pub forced: bool,
    /// The gate's refusals, when forced.
    #[serde(default)]
    pub overridden: Vec<String>,
}

impl SwapRecord {
    /// Reads a record written by `cutover` or `alias swap --record`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("reading the swap record {}: {e} (it is written by `cutover` and `alias swap --record`)", path.display())
        })?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a swap record: {e}", path.display()))
    }

    /// Writes the record, replacing the file atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        crate::files::write_json_atomically(path, self)
    }

    /// One line for people: `alias tags: tags-v1 → tags-v2-000001`.
    pub fn describe(&self) -> String {
        format!(
            "alias {}: {} → {}",
            self.before.alias,
            self.before.describe(),
            self.after.describe()
        )
    }
}

/// Makes `to` the only holder of `alias` in one atomic call and says what changed.
pub async fn swap(
    client: &Elasticsearch,
    cluster: &str,
    alias_name: &str,
    to: &str,
) -> anyhow::Result<SwapRecord> {
    let before = alias::read(client, alias_name).await?;
    let actions = alias::plan_swap(&before, to);
    alias::apply(client, &actions).await?;
    let after = alias::read(client, alias_name).await?;
    Ok(SwapRecord {
        cluster: redact_url(cluster),
        before,
        after,
        actions,
        at: unix_now(),
        forced: false,
        overridden: Vec::new(),
    })
}

/// Restores the alias to the record's "before" state. Refuses, unless `force`, when the alias no
/// longer looks as the swap left it: someone else moved it since, and undoing blindly would undo
/// their change too.
pub async fn rollback(
    client: &Elasticsearch,
    record: &SwapRecord,
    force: bool,
) -> anyhow::Result<(AliasState, Vec<Value>)> {
    let current = alias::read(client, &record.before.alias).await?;
    if current != record.after && !force {
        anyhow::bail!(
            "alias {} changed since the swap: it is on {} now, the swap left it on {}; pass --force to restore {} anyway",
            current.alias,
            current.describe(),
            record.after.describe(),
            record.before.describe()
        );
    }
    let actions = alias::plan_restore(&current, &record.before);
    alias::apply(client, &actions).await?;
    Ok((current, actions))
}
