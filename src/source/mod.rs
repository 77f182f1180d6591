//! The Kafka side: consuming the command topic and deciding what may be committed.
//!
//! - [`offsets`] is the pure contiguous-offset tracker;
//! - [`kafka`] builds the consumer and keeps the tracker in step with rebalances;
//! - [`group`] reads and resets a consumer group's committed offsets.
//! - [`topics`] creates missing topics.

pub mod group;
pub mod kafka;
pub mod offsets;
pub mod topics;
