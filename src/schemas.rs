//! The files under `schemas/`, compiled in: the index templates the indexer creates its indices
//! from. They are data, not code, so that operators can read and diff them (docs/how-it-works.md).

/// The new cluster's index template (`schemas/new-index-template.json`).
pub const NEW_INDEX_TEMPLATE: &str = include_str!("../schemas/new-index-template.json");

/// The legacy cluster's index template (`schemas/legacy-index-template.json`), for the reference
/// legacy indexer (`run --schema legacy`).
pub const LEGACY_INDEX_TEMPLATE: &str = include_str!("../schemas/legacy-index-template.json");
