//! Planning a new backfill, or picking up the reading of an interrupted one.

use elasticsearch::Elasticsearch;

use super::checkpoint::{self, ChangedSettings, Checkpoint};
use super::BackfillSettings;
use crate::es::cluster::{Cluster, Reading};
use crate::es::read::Snapshot;
use crate::es::{self};
use crate::files::unix_now;
use crate::secrets::redact_url;

/// Counts the legacy index, opens its reading in slices and writes the first checkpoint.
pub(super) async fn plan(
    settings: &BackfillSettings,
    legacy: &Elasticsearch,
    cluster: &Cluster,
) -> anyhow::Result<(Checkpoint, Snapshot)> {
    let total = es::count(legacy, &settings.from_index).await?;
    let snapshot = Snapshot::open(
        legacy,
        cluster,
        &settings.from_index,
        settings.slices,
        &settings.keep_alive,
    )
    .await?;
    let checkpoint = Checkpoint {
        format: checkpoint::FORMAT,
        from_url: redact_url(&settings.from_url),
        from_index: settings.from_index.clone(),
        to_url: redact_url(&settings.to_url),
        to_index: settings.to_index.clone(),
        versions: settings.versions,
        started_at: unix_now(),
        finished_at: None,
        total_at_start: total,
        pit: snapshot.pit().map(str::to_owned),
        changed_settings: ChangedSettings::default(),
        slices: checkpoint::plan(settings.slices),
    };
    checkpoint.write(&settings.checkpoint)?;
    tracing::info!(total, slices = checkpoint.slices.len(), reading = %snapshot.reading(), checkpoint = %settings.checkpoint.display(), "backfill planned");
    Ok((checkpoint, snapshot))
}

/// The reading an interrupted backfill continues. Finished slices stay finished while the
/// slicing is the same; otherwise every slice starts over:
/// - a point in time that still lives: each unfinished slice continues after its last page;
/// - a scroll: each unfinished slice starts over (its documents are the same: a scroll slice
///   is a hash of `_id`);
/// - a point in time that is gone, or a reading of another kind than recorded (the cluster was
///   upgraded): a new point in time slices the documents differently, so every slice, finished
///   or not, starts over.
pub(super) async fn resume(
    settings: &BackfillSettings,
    legacy: &Elasticsearch,
    cluster: &Cluster,
    checkpoint: &mut Checkpoint,
) -> anyhow::Result<Snapshot> {
    let slices = checkpoint.slices.len();
    let recorded = Snapshot::resume(
        legacy,
        cluster,
        &settings.from_index,
        slices,
        checkpoint.pit.clone(),
        &settings.keep_alive,
    );
    let same_kind = checkpoint.pit.is_some() == matches!(cluster.reading(), Reading::Pit(_));
    if same_kind && recorded.alive().await? {
        for slice in checkpoint.slices.iter_mut().filter(|s| !s.done) {
            if checkpoint.pit.is_none() {
                slice.restart();
            }
        }
        checkpoint.write(&settings.checkpoint)?;
        return Ok(recorded);
    }
    tracing::warn!(
        slices,
        "the point in time of the interrupted backfill is gone (or the cluster now reads otherwise): a new reading slices the documents differently, so every slice is read again"
    );
    let snapshot = Snapshot::open(
        legacy,
        cluster,
        &settings.from_index,
        slices,
        &settings.keep_alive,
    )
    .await?;
    checkpoint.pit = snapshot.pit().map(str::to_owned);
    checkpoint.slices.iter_mut().for_each(|s| s.restart());
    checkpoint.write(&settings.checkpoint)?;
    Ok(snapshot)
}
