//! The settle rule: when a difference between two live clusters may be only lag, what it waits
//! for before it is read again, and why it could not be judged.
//!
//! Both indexers apply the same commands at different moments, so a document read while a
//! command for it is between the two differs for a moment. Two things bound that moment:
//!
//! - **The high watermarks read with the document.** Whatever either side showed came from a
//!   command below them, so once both groups have committed past them, both sides hold at least
//!   that state and a fresh reading can be judged.
//! - **Offset versions, when both sides carry them.** A pair whose `_version`s differ is in flight
//!   by definition: only the side with the lower version waits, until its group has committed past
//!   the higher version. If that side still holds a lower version when read again, its indexer
//!   passed the command without applying it: a real difference. A pair with equal versions holds
//!   the same command on both sides, so a difference in content is real at once, however busy the
//!   topic. And the same version need not be read at the same moment: once the lagging side
//!   holds the version the other side held at the last reading, those two documents are the
//!   same command applied on both sides, and comparing them settles the pair even if the other
//!   side has moved on meanwhile (a hot document is rarely caught at one version on both sides).
//!
//! Pure: offsets in, decisions out. Reading Kafka and the clusters is `recheck`'s part.

use std::collections::BTreeMap;

use serde::Serialize;

/// Offsets of the command topic, per partition.
pub type Offsets = BTreeMap<i32, i64>;

/// One of the two indexers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Indexer {
    /// The legacy indexer (`--legacy-group`).
    Legacy,
    /// The dual-indexer (`--group`).
    New,
}

/// The `_version`s one reading found (`None`: absent on that side).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Versions {
    /// On the legacy side.
    pub legacy: Option<u64>,
    /// On the new side.
    pub new: Option<u64>,
}

/// What a difference waits for before it is read again: the offset each partition's committed
/// offset must reach, per indexer. An empty map waits for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wait {
    /// For the legacy group.
    pub legacy: Offsets,
    /// For the new group.
    pub new: Offsets,
}

/// What one reading of a differing pair means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Not lag: the same command on both sides gave different documents.
    Different,
    /// Possibly lag: read it again once the groups have passed these offsets.
    Wait(Wait),
}

/// Judges one reading of a pair that differs. `before`: the versions of the reading it waited
/// after, if any; `offset_versions`: both indices are built with offsets of this topic as their
/// external versions; `high`: the high watermarks read after the pair was.
pub fn judge(
    before: Option<Versions>,
    now: Versions,
    offset_versions: bool,
    high: &Offsets,
) -> Judgement {
    let (true, Some(l), Some(n)) = (offset_versions, now.legacy, now.new) else {
        return Judgement::Wait(Wait {
            legacy: high.clone(),
            new: high.clone(),
        });
    };
    if l == n || fell_short(before, now) {
        return Judgement::Different;
    }
    if l < n {
        Judgement::Wait(Wait {
            legacy: past(n, high),
            new: Offsets::new(),
        })
    } else {
        Judgement::Wait(Wait {
            legacy: Offsets::new(),
            new: past(l, high),
        })
    }
}

/// Whether the side that waited for the higher version of `before` still holds less: its group
/// committed past that version, so its indexer passed the command without applying it.
fn fell_short(before: Option<Versions>, now: Versions) -> bool {
    let Some(Versions {
        legacy: Some(bl),
        new: Some(bn),
    }) = before
    else {
        return false;
    };
    match (now.legacy, now.new) {
        (Some(l), _) if bl < bn => l < bn,
        (_, Some(n)) if bn < bl => n < bl,
        _ => false,
    }
}

/// Committed past offset `version`, in whichever partition holds it: the version is an offset
/// but not its partition, so every partition long enough to hold it is waited for.
fn past(version: u64, high: &Offsets) -> Offsets {
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    high.iter()
        .filter(|(_, h)| **h > version)
        .map(|(p, _)| (*p, version + 1))
        .collect()
}

/// Two readings of a pair, taken at different moments, that hold the same version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameCommand {
    /// The legacy side now, and the new side as read before.
    LegacyNowNewBefore,
    /// The legacy side as read before, and the new side now.
    LegacyBeforeNewNow,
}

/// Which earlier and later readings hold the same offset version, when the pair read now does
/// not: those two are the same command on both sides, whatever happened between the readings.
pub fn same_command(before: Versions, now: Versions) -> Option<SameCommand> {
    let same = |a: Option<u64>, b: Option<u64>| a.is_some() && a == b;
    if same(now.legacy, now.new) {
        None
    } else if same(now.legacy, before.new) {
        Some(SameCommand::LegacyNowNewBefore)
    } else if same(before.legacy, now.new) {
        Some(SameCommand::LegacyBeforeNewNow)
    } else {
        None
    }
}

/// Whether a document was in flight for the whole time between two readings of its versions:
/// then a query that ran between them may hit it on one side only. Either the lagging side,
/// read after, is still below the version the other side held before (versions only grow), or
/// the document was absent on the same one side at both readings while the other side kept
/// one version.
pub fn in_flight_throughout(before: Versions, after: Versions) -> bool {
    match (before.legacy, before.new, after.legacy, after.new) {
        (Some(lb), Some(nb), Some(la), Some(na)) => (lb < nb && la < nb) || (nb < lb && na < lb),
        (Some(lb), None, Some(la), None) | (None, Some(lb), None, Some(la)) => lb == la,
        _ => false,
    }
}

/// A group that has not yet reached what a difference waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// Which indexer's group.
    pub indexer: Indexer,
    /// The partition.
    pub partition: i32,
    /// What the group has committed there (`None`: nothing).
    pub committed: Option<i64>,
    /// What it must reach.
    pub needed: i64,
}

impl Wait {
    /// The first partition where a group is short of this wait, the legacy group first; `None`
    /// once both have passed it.
    pub fn short(&self, legacy: &Offsets, new: &Offsets) -> Option<Short> {
        let first = |indexer: Indexer, needed: &Offsets, committed: &Offsets| {
            needed.iter().find_map(|(p, n)| {
                let c = committed.get(p).copied();
                // A partition that never held a message needs nothing committed.
                (*n > 0 && c.is_none_or(|c| c < *n)).then_some(Short {
                    indexer,
                    partition: *p,
                    committed: c,
                    needed: *n,
                })
            })
        };
        first(Indexer::Legacy, &self.legacy, legacy).or_else(|| first(Indexer::New, &self.new, new))
    }
}

impl Short {
    /// Why a difference stayed unsettled, naming the group that did not get there.
    pub fn reason(&self, group: &str, timeout_secs: u64) -> String {
        let indexer = match self.indexer {
            Indexer::Legacy => "the legacy indexer's",
            Indexer::New => "the dual-indexer's",
        };
        let committed = self
            .committed
            .map_or("nothing".to_owned(), |c| format!("offset {c}"));
        format!(
            "group `{group}` ({indexer}) had committed {committed} on partition {} and needed {} when the {timeout_secs}s settle timeout ran out: is it stalled?",
            self.partition, self.needed
        )
    }
}

/// What becomes of a pair still differing at the last round: in flight by its versions (a group
/// that never caught up with it within the rounds), or a difference that persisted.
pub fn after_last_round(versions: Versions, offset_versions: bool) -> Option<String> {
    match (offset_versions, versions.legacy, versions.new) {
        (true, Some(l), Some(n)) if l != n => Some(format!(
            "still in flight after the last settle round (legacy version {l}, new version {n}): raise --settle-rounds"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(i32, i64)]) -> Offsets {
        pairs.iter().copied().collect()
    }

    fn versions(legacy: u64, new: u64) -> Versions {
        Versions {
            legacy: Some(legacy),
            new: Some(new),
        }
    }

    #[test]
    fn without_versions_both_groups_wait_for_the_watermarks_read_with_the_document() {
        let high = offsets(&[(0, 120), (1, 80)]);
        let both = Judgement::Wait(Wait {
            legacy: high.clone(),
            new: high.clone(),
        });
        assert_eq!(judge(None, Versions::default(), true, &high), both);
        assert_eq!(judge(None, versions(5, 9), false, &high), both);
        let one_side = Versions {
            legacy: Some(5),
            new: None,
        };
        assert_eq!(judge(None, one_side, true, &high), both);
    }

    #[test]
    fn equal_offset_versions_with_different_content_are_a_real_difference() {
        let high = offsets(&[(0, 120)]);
        assert_eq!(
            judge(None, versions(42, 42), true, &high),
            Judgement::Different
        );
    }

    #[test]
    fn the_lower_version_waits_for_its_group_to_pass_the_higher_one() {
        let high = offsets(&[(0, 120), (1, 80), (2, 30)]);
        // Offset 50 can only be in partitions 0 or 1.
        let legacy_behind = Judgement::Wait(Wait {
            legacy: offsets(&[(0, 51), (1, 51)]),
            new: Offsets::new(),
        });
        assert_eq!(judge(None, versions(10, 50), true, &high), legacy_behind);
        let new_behind = Judgement::Wait(Wait {
            legacy: Offsets::new(),
            new: offsets(&[(0, 101)]),
        });
        assert_eq!(judge(None, versions(100, 7), true, &high), new_behind);
    }

    #[test]
    fn a_side_still_below_the_version_its_group_passed_is_a_real_difference() {
        let high = offsets(&[(0, 500)]);
        // The legacy side waited for 50 and holds 10 still: its indexer skipped the command.
        assert_eq!(
            judge(Some(versions(10, 50)), versions(10, 50), true, &high),
            Judgement::Different
        );
        // It applied 50, and the new side has moved on to 70 meanwhile: in flight again.
        assert_eq!(
            judge(Some(versions(10, 50)), versions(50, 70), true, &high),
            Judgement::Wait(Wait {
                legacy: offsets(&[(0, 71)]),
                new: Offsets::new(),
            })
        );
        // The new side waited for 100 and holds 90: real.
        assert_eq!(
            judge(Some(versions(100, 7)), versions(100, 90), true, &high),
            Judgement::Different
        );
    }

    #[test]
    fn the_lagging_sides_new_reading_pairs_with_the_other_sides_earlier_one() {
        // Legacy caught up with 50 while the new side moved on to 70.
        assert_eq!(
            same_command(versions(10, 50), versions(50, 70)),
            Some(SameCommand::LegacyNowNewBefore)
        );
        assert_eq!(
            same_command(versions(90, 40), versions(95, 90)),
            Some(SameCommand::LegacyBeforeNewNow)
        );
        // Equal now: the pair read now is the one to compare.
        assert_eq!(same_command(versions(10, 50), versions(50, 50)), None);
        // Jumped past: no reading holds the other's version.
        assert_eq!(same_command(versions(10, 50), versions(60, 70)), None);
        let absent = Versions {
            legacy: None,
            new: Some(5),
        };
        assert_eq!(same_command(absent, absent), None);
    }

    #[test]
    fn a_document_is_in_flight_throughout_only_if_the_lagging_side_never_caught_up() {
        // Legacy at 10, new at 50 before; legacy at 40 after: below 50 the whole time.
        assert!(in_flight_throughout(versions(10, 50), versions(40, 60)));
        assert!(in_flight_throughout(versions(90, 20), versions(95, 80)));
        // Legacy reached 50 by the second reading: they may have agreed in between.
        assert!(!in_flight_throughout(versions(10, 50), versions(50, 60)));
        assert!(!in_flight_throughout(versions(50, 50), versions(50, 50)));
        // Deleted on the new side at both readings, the legacy side unchanged.
        let deleted = Versions {
            legacy: Some(7),
            new: None,
        };
        assert!(in_flight_throughout(deleted, deleted));
        let moved = Versions {
            legacy: Some(8),
            new: None,
        };
        assert!(!in_flight_throughout(deleted, moved));
        assert!(!in_flight_throughout(
            Versions::default(),
            Versions::default()
        ));
    }

    #[test]
    fn a_wait_passes_once_every_needed_offset_is_committed() {
        let wait = Wait {
            legacy: offsets(&[(0, 10), (1, 5)]),
            new: offsets(&[(0, 10), (1, 5)]),
        };
        let done = offsets(&[(0, 10), (1, 7)]);
        assert_eq!(wait.short(&done, &done), None);
        assert_eq!(
            wait.short(&offsets(&[(0, 10), (1, 4)]), &done),
            Some(Short {
                indexer: Indexer::Legacy,
                partition: 1,
                committed: Some(4),
                needed: 5
            })
        );
        assert_eq!(
            wait.short(&done, &offsets(&[(1, 5)])),
            Some(Short {
                indexer: Indexer::New,
                partition: 0,
                committed: None,
                needed: 10
            })
        );
    }

    #[test]
    fn an_empty_partition_needs_no_commit() {
        let wait = Wait {
            legacy: offsets(&[(0, 0)]),
            new: offsets(&[(0, 0)]),
        };
        assert_eq!(wait.short(&Offsets::new(), &Offsets::new()), None);
    }

    #[test]
    fn the_reason_names_the_group_and_where_it_stopped() {
        let short = Short {
            indexer: Indexer::Legacy,
            partition: 2,
            committed: Some(300),
            needed: 412,
        };
        let reason = short.reason("legacy-indexer", 30);
        assert!(reason.contains("group `legacy-indexer`"), "{reason}");
        assert!(
            reason.contains("offset 300 on partition 2 and needed 412"),
            "{reason}"
        );
        assert!(reason.contains("30s settle timeout"), "{reason}");
    }

    #[test]
    fn only_a_pair_in_flight_by_its_versions_is_unsettled_after_the_last_round() {
        assert!(after_last_round(versions(3, 9), true)
            .unwrap()
            .contains("legacy version 3, new version 9"));
        assert_eq!(after_last_round(versions(3, 9), false), None);
        assert_eq!(after_last_round(Versions::default(), true), None);
    }
}
