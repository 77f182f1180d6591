//! The target index's settings for the copy (`index.gc_deletes`, bulk-load), and putting them
//! back afterwards.

use elasticsearch::Elasticsearch;
use serde_json::json;

use super::checkpoint::Checkpoint;
use super::{lock, BackfillSettings, Copy};
use crate::cutover::index;

/// Raises `index.gc_deletes` and enters bulk-load settings as asked, recording in the checkpoint
/// (before changing anything) what to put back.
pub(super) async fn prepare_target(
    settings: &BackfillSettings,
    client: &Elasticsearch,
    target: &str,
    checkpoint: &mut Checkpoint,
) -> anyhow::Result<()> {
    let changed = &mut checkpoint.changed_settings;
    changed.index = Some(target.to_owned());
    if let Some(gc_deletes) = &settings.gc_deletes {
        if !changed.gc_deletes_raised {
            changed.gc_deletes_before = index::gc_deletes(client, target).await?;
            changed.gc_deletes_raised = true;
            checkpoint.write(&settings.checkpoint)?;
        }
        index::put_settings(client, target, &json!({"gc_deletes": gc_deletes})).await?;
        tracing::info!(
            index = target,
            gc_deletes,
            "delete tombstones kept longer for the backfill"
        );
    }
    let changed = &mut checkpoint.changed_settings;
    if settings.bulk_load && !changed.bulk_load {
        let current = index::load_settings(client, target).await?;
        match current.first() {
            Some(s) if s.bulk_load => {
                tracing::info!(index = target, "the target is already in bulk-load settings; the backfill leaves them as they are");
            }
            current => {
                let replicas = current.and_then(|s| s.replicas).unwrap_or(1);
                changed.bulk_load = true;
                checkpoint.write(&settings.checkpoint)?;
                index::enter_bulk_load(client, target, replicas).await?;
                tracing::info!(
                    index = target,
                    replicas,
                    "bulk-load settings on for the backfill"
                );
            }
        }
    }
    Ok(())
}

/// Puts back what [`prepare_target`] changed, and records that it did.
pub(super) async fn restore_target(copy: &Copy, client: &Elasticsearch) -> anyhow::Result<()> {
    let mut changed = lock(&copy.state).changed_settings.clone();
    let Some(target) = changed.index.clone() else {
        return Ok(());
    };
    if changed.bulk_load {
        for current in index::load_settings(client, &target).await? {
            if let Some(values) = index::restore(client, &current, 1).await? {
                tracing::info!(index = %current.index, settings = %values, "bulk-load settings restored");
            }
        }
        changed.bulk_load = false;
    }
    if changed.gc_deletes_raised {
        index::put_settings(
            client,
            &target,
            &json!({"gc_deletes": changed.gc_deletes_before}),
        )
        .await?;
        tracing::info!(index = %target, gc_deletes = ?changed.gc_deletes_before, "index.gc_deletes restored");
        changed.gc_deletes_raised = false;
        changed.gc_deletes_before = None;
    }
    let mut state = lock(&copy.state);
    state.changed_settings = changed;
    state.write(&copy.settings.checkpoint)
}
