//! The Kafka side: consuming the command topic and deciding what may be committed.
//!
//! - [`commands`] is the command topic as the replay loop sees it: messages with their tickets
//!   in, final offsets committed out;
//! - [`offsets`] is the pure contiguous-offset tracker;
//! - [`kafka`] builds the consumer and keeps the tracker in step with rebalances;
//! - [`group`] reads and resets a consumer group's committed offsets.
//! - [`topics`] creates missing topics.

pub mod commands;
pub mod group;
pub mod kafka;
pub mod offsets;
pub mod topics;
