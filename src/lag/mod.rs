//! Consumer lag you can alert on: per-partition offset lag, gap to the legacy group, rates, ETA
//! and a status judged over a sliding window.
//!
//! - [`rule`] is the pure judgement over samples.

pub mod rule;
