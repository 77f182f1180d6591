//! The backfill's plan and progress, kept in one JSON file.
//!
//! The legacy index is split into slices by `_id`: slice *i* holds the ids in `(after, until]`,
//! with boundaries taken from a random sample of ids, so slices are about equally large. A slice
//! is read in `_id` order and its cursor (`after`) moves on only once a page has been written
//! and its dead letters are on disk. The file is replaced atomically after every page, so after
//! a crash `--resume` continues each slice after its last written page, and skips finished
//! slices entirely.

use std::path::Path;

use super::VersionStrategy;
use serde::{Deserialize, Serialize};

/// The checkpoint format this build reads and writes.
pub const FORMAT: u32 = 1;

/// The whole checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// [`FORMAT`].
    pub format: u32,
    /// The legacy cluster (credentials removed).
    pub from_url: String,
    /// The legacy index or alias read.
    pub from_index: String,
    /// The new cluster (credentials removed).
    pub to_url: String,
    /// The new index or alias written.
    pub to_index: String,
    /// How backfilled documents are versioned.
    pub versions: VersionStrategy,
    /// Unix seconds when the backfill was planned.
    pub started_at: u64,
    /// Unix seconds when the last slice finished.
    pub finished_at: Option<u64>,
    /// Documents in the legacy index when the backfill was planned.
    pub total_at_start: u64,
    /// Target settings the backfill changed and must put back.
    pub changed_settings: ChangedSettings,
    /// The slices, in `_id` order.
    pub slices: Vec<SliceState>,
}

/// What the backfill changed on the target index, so that any later run can undo it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChangedSettings {
    /// The concrete target index whose settings were changed.
    pub index: Option<String>,
    /// Whether the backfill raised `index.gc_deletes`.
    pub gc_deletes_raised: bool,
    /// `index.gc_deletes` as it was before (`None`: the default).
    pub gc_deletes_before: Option<String>,
    /// Whether the backfill put the index into bulk-load settings.
    pub bulk_load: bool,
}

/// One slice: its id range and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SliceState {
    /// The slice number.
    pub slice: usize,
    /// The exclusive lower bound of the slice (`None`: from the first id).
    pub start_after: Option<String>,
    /// The inclusive upper bound of the slice (`None`: to the last id).
    pub until: Option<String>,
    /// The last id written; reading resumes after it.
    pub after: Option<String>,
    /// Whether every id of the slice has been read and written.
    pub done: bool,
    /// Documents read, over all runs (a page read again after a crash counts twice).
    pub read: u64,
    /// Documents written.
    pub written: u64,
    /// Documents not written because the new index already held a newer version or a delete.
    pub kept_newer: u64,
    /// Documents dead-lettered.
    pub dead_lettered: u64,
}

impl SliceState {
    /// Whether `id` sorts past this slice's upper bound.
    pub fn is_past(&self, id: &str) -> bool {
        self.until.as_deref().is_some_and(|until| id > until)
    }
}

/// Splits the id space into at most `slices` ranges of about equal size, judged by a random
/// `sample` of ids. Fewer slices come back when the sample has fewer distinct ids.
pub fn plan(mut sample: Vec<String>, slices: usize) -> Vec<SliceState> {
    sample.sort_unstable();
    sample.dedup();
    let slices = slices.max(1);
    let mut bounds: Vec<String> = (1..slices)
        .filter_map(|i| sample.get(i * sample.len() / slices).cloned())
        .collect();
    bounds.dedup();
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut lower: Option<String> = None;
    for upper in bounds.into_iter().map(Some).chain(std::iter::once(None)) {
        out.push(SliceState {
            slice: out.len(),
            start_after: lower.clone(),
            until: upper.clone(),
            after: lower,
            done: false,
            read: 0,
            written: 0,
            kept_newer: 0,
            dead_lettered: 0,
        });
        lower = upper;
    }
    out
}

impl Checkpoint {
    /// Reads a checkpoint file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the checkpoint {}: {e}", path.display()))?;
        let checkpoint: Self = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a backfill checkpoint: {e}", path.display()))?;
        anyhow::ensure!(
            checkpoint.format == FORMAT,
            "{} has checkpoint format {}; this build reads format {FORMAT}",
            path.display(),
            checkpoint.format
        );
        Ok(checkpoint)
    }

    /// Writes the checkpoint, replacing the file atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        crate::files::write_json_atomically(path, self)
    }

    /// Whether every slice is done.
    pub fn complete(&self) -> bool {
        self.slices.iter().all(|s| s.done)
    }

    /// Why this checkpoint cannot continue a backfill from `from_index` to `to_index`, if it
    /// cannot.
    pub fn mismatch(&self, from_index: &str, to_index: &str) -> Option<String> {
        (self.from_index != from_index || self.to_index != to_index).then(|| {
            format!(
                "the checkpoint is of a backfill from `{}` to `{}`, not from `{from_index}` to `{to_index}`",
                self.from_index, self.to_index
            )
        })
    }

    /// Documents read so far, over all slices and runs.
    pub fn documents_read(&self) -> u64 {
        self.slices.iter().map(|s| s.read).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("doc-{i:06}")).collect()
    }

    /// Which slice of `plan` holds `id`, checked to be exactly one.
    fn owner(plan: &[SliceState], id: &str) -> usize {
        let owners: Vec<_> = plan
            .iter()
            .filter(|s| s.start_after.as_deref().is_none_or(|a| id > a) && !s.is_past(id))
            .map(|s| s.slice)
            .collect();
        assert_eq!(owners.len(), 1, "{id} is in slices {owners:?}");
        owners[0]
    }

    #[test]
    fn slices_cover_every_id_once_and_are_about_equal() {
        let all = ids(10_000);
        let sample: Vec<String> = all.iter().step_by(37).cloned().collect();
        let plan = plan(sample, 4);
        assert_eq!(plan.len(), 4);
        assert_eq!(plan[0].start_after, None);
        assert_eq!(plan[3].until, None);
        let mut sizes = [0usize; 4];
        for id in &all {
            sizes[owner(&plan, id)] += 1;
        }
        for size in sizes {
            assert!((2_300..=2_700).contains(&size), "{sizes:?}");
        }
        // Ids outside the sample's range still have a slice.
        owner(&plan, "");
        owner(&plan, "zzz");
        for s in &plan {
            assert_eq!(s.after, s.start_after, "a slice starts at its lower bound");
        }
    }

    #[test]
    fn small_or_empty_samples_give_fewer_slices() {
        assert_eq!(plan(vec![], 4).len(), 1);
        let one = plan(vec!["a".into(), "a".into()], 4);
        assert_eq!(one.len(), 2, "{one:?}");
        assert_eq!(one[0].until.as_deref(), Some("a"));
        let plan = plan(ids(3), 8);
        let all = ids(3);
        for id in &all {
            owner(&plan, id);
        }
        assert!(plan.len() <= 4);
    }

    #[test]
    fn a_checkpoint_round_trips_and_names_a_mismatch() {
        let dir = std::env::temp_dir().join(format!("checkpoint-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.json");
        let checkpoint = Checkpoint {
            format: FORMAT,
            from_url: "http://legacy:9200".into(),
            from_index: "tags-v1".into(),
            to_url: "http://new:9200".into(),
            to_index: "tags-v2".into(),
            versions: VersionStrategy::Yield,
            started_at: 1,
            finished_at: None,
            total_at_start: 3,
            changed_settings: ChangedSettings::default(),
            slices: plan(ids(3), 2),
        };
        checkpoint.write(&path).unwrap();
        let back = Checkpoint::read(&path).unwrap();
        assert_eq!(back, checkpoint);
        assert!(!back.complete());
        assert_eq!(back.mismatch("tags-v1", "tags-v2"), None);
        assert!(back
            .mismatch("tags-v1", "other")
            .unwrap()
            .contains("not from `tags-v1` to `other`"));
        std::fs::write(&path, "{\"format\": 1}").unwrap();
        assert!(Checkpoint::read(&path)
            .unwrap_err()
            .to_string()
            .contains("is not a backfill checkpoint"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
