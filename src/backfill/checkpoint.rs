//! The backfill's plan and progress, kept in one JSON file.
//!
//! The legacy index is read in the cluster's own slices (`slice: {id, max}`, see
//! [`crate::es::read`]). The file records the point in time the slices read (when the cluster
//! reads by one) and, per slice, the sort values of its last written page (`after`), which move
//! on only once a page has been written and its dead letters are on disk. The file is replaced
//! atomically after every page. `--resume` skips finished slices entirely; an unfinished slice
//! continues after its last written page while the point in time lives, and starts over
//! otherwise (a scroll cannot be continued by another process). docs/backfill.md says how much
//! that re-reads.

use std::path::Path;

use super::VersionStrategy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The checkpoint format this build reads and writes.
pub const FORMAT: u32 = 2;

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
    /// The point in time the slices read, while one is open (`None` for a scroll).
    pub pit: Option<String>,
    /// Target settings the backfill changed and must put back.
    pub changed_settings: ChangedSettings,
    /// The slices.
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

/// One slice: its place in the reading and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SliceState {
    /// The slice number, `slice.id` of the reading.
    pub slice: usize,
    /// The sort values of the last document written, within the point in time; reading resumes
    /// after them (`None`: from the slice's start).
    pub after: Option<Value>,
    /// Whether every document of the slice has been read and written.
    pub done: bool,
    /// Documents read, over all runs (a page read again after a crash counts twice).
    pub read: u64,
    /// Documents written.
    pub written: u64,
    /// Documents not written because the new index already held a newer version or a delete.
    pub kept_newer: u64,
    /// Documents dead-lettered.
    pub dead_lettered: u64,
    /// Times the slice started over from its beginning after a first pass had begun.
    pub restarts: u64,
}

impl SliceState {
    /// Sends the slice back to its start, keeping its counts.
    pub fn restart(&mut self) {
        if self.read > 0 || self.after.is_some() {
            self.restarts += 1;
        }
        self.after = None;
        self.done = false;
    }
}

/// `slices` slices, none started.
pub fn plan(slices: usize) -> Vec<SliceState> {
    (0..slices.max(1))
        .map(|slice| SliceState {
            slice,
            after: None,
            done: false,
            read: 0,
            written: 0,
            kept_newer: 0,
            dead_lettered: 0,
            restarts: 0,
        })
        .collect()
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

    #[test]
    fn a_plan_has_the_slices_asked_for_and_a_restart_keeps_the_counts() {
        let plan = plan(4);
        assert_eq!(
            plan.iter().map(|s| s.slice).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(plan.iter().all(|s| !s.done && s.after.is_none()));
        assert_eq!(super::plan(0).len(), 1);
        let mut s = plan[1].clone();
        s.restart();
        assert_eq!(s.restarts, 0, "a slice never started is not restarted");
        s.read = 10;
        s.after = Some(serde_json::json!([42]));
        s.done = true;
        s.restart();
        assert_eq!((s.read, s.restarts, s.done, s.after), (10, 1, false, None));
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
            pit: Some("p".into()),
            changed_settings: ChangedSettings::default(),
            slices: plan(2),
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
