//! dual-indexer: replay a Kafka command topic into a new Elasticsearch cluster in the flattened
//! `keyToValue` tag schema, beside the legacy indexer, with the tooling to prove the two clusters
//! agree and to cut over.
//!
//! The modules follow the data:
//! [`source`] (consume, track offsets, commit) → [`command`] (decode) → [`transform`] (new
//! document schema) → [`sink`] (batch, send, classify per item, retry) → [`dlq`] (dead letters),
//! tied together by [`pipeline`]. [`generate`] makes synthetic command streams; [`es`] prepares
//! clusters; [`cutover`] moves reads between indices; [`verify`] compares the clusters; [`backfill`] copies the history Kafka no longer holds; [`translate`] turns legacy searches into new-schema ones, for [`verify`] and the [`shadow`] proxy; [`telemetry`] sets up logs and metrics.

pub mod backfill;
pub mod backoff;
pub mod cli;
pub mod command;
pub mod commands;
pub mod config;
pub mod cutover;
pub mod dlq;
pub mod envelope;
pub mod es;
pub mod files;
pub mod generate;
pub mod json_text;
pub mod lag;
pub mod pipeline;
pub mod schemas;
pub mod secrets;
pub mod shadow;
pub mod sink;
pub mod source;
pub mod startup;
pub mod status;
pub mod telemetry;
pub mod transform;
pub mod translate;
pub mod verify;
