//! What the replay loop is told, and how it ended.

use std::sync::Arc;
use std::time::Duration;

use crate::envelope::Plan;
use crate::transform::Schema;

/// Everything `run` needs besides the Kafka and Elasticsearch connections.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The command topic.
    pub topic: String,
    /// This indexer's consumer group.
    pub group: String,
    /// Where unappliable commands go.
    pub dlq_topic: String,
    /// librdkafka settings for the dead-letter producer only, applied over the shared ones.
    pub dlq_kafka: Vec<(String, String)>,
    /// How a message becomes a write: the producer's envelope, the id, version and routing.
    pub plan: Arc<Plan>,
    /// The document shape written.
    pub schema: Schema,
    /// A batch is sent once it holds this many documents...
    pub batch_max_docs: usize,
    /// ...or this many bytes...
    pub batch_max_bytes: usize,
    /// ...or its first document has waited this long.
    pub linger: Duration,
    /// Bulk requests in flight at once.
    pub max_in_flight: usize,
    /// How often final offsets are committed.
    pub commit_interval: Duration,
    /// How long a shutdown waits for in-flight work before committing what is final.
    pub drain_timeout: Duration,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// With offset versions, the topic's partition count the target index was built from: a
    /// message from a partition at or past it means partitions were added, and offsets no
    /// longer order a document's commands.
    pub partitions_recorded: Option<i32>,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM, Ctrl-C or the caller's shutdown future.
    Signal,
    /// `--until-caught-up` saw the lag closed.
    CaughtUp,
}
