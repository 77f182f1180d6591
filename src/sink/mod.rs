//! The bulk sink: send batches, classify every item, retry, and hand back final outcomes.
//!
//! - [`request`] builds `_bulk` bodies;
//! - [`retry`] is the decision table (status → applied / already applied / retry / dead-letter / fatal);
//! - [`service`] sends one batch until every item has a final outcome, with `hold` (why writes
//!   are held) and `waiting` (documents with a write waiting for its retry);
//! - [`transport`] is the one thing asked of the network: send a body, bring back the answer,
//!   and `answer` reads that answer into item results;
//! - [`layout`] records and checks the topic's partition count that offset versions rely on.

mod answer;
#[cfg(test)]
mod deliver_tests;
mod hold;
pub mod layout;
pub mod request;
pub mod retry;
pub mod service;
pub mod transport;
mod waiting;

pub use crate::dlq::letter::{Original, Refusal};
pub use request::{Batch, BatchItem, OpKind, Provenance, Tracked};
pub use service::{BulkSink, Early, Fatal, ItemOutcome, Report, RetryPolicy, Wanted};
