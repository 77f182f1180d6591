//! The dead-letter topic: where a command that cannot be applied goes, with why and from where.
//!
//! An entry carries the original key and payload byte for byte, and these headers:
//!
//! | header | value |
//! |---|---|
//! | `dual-indexer.error.class` | `decode`, `transform`, `mapping`, `request_refused` or `retries_exhausted` |
//! | `dual-indexer.error.reason` | a sentence; Elasticsearch's error type and reason where there is one |
//! | `dual-indexer.error.es_type` | Elasticsearch's error type (only for `mapping` and `retries_exhausted`) |
//! | `dual-indexer.source.topic` / `.partition` / `.offset` | where the command was read |
//! | `dual-indexer.attempts` | bulk attempts made (0 if it never reached Elasticsearch) |
//! | `dual-indexer.payload.truncated` | only on a letter too large for the broker: the original payload's size in bytes |
//!
//! A message's offset is final only once its dead letter is acknowledged by the broker, so a
//! dead-letter topic that cannot be written holds its partition's commits back instead of losing
//! the message. Two refusals are not waited out, because they never pass:
//! - a letter larger than the producer's `message.max.bytes` or the topic's `max.message.bytes`
//!   is written again with its payload cut (halved until it fits), keeping every header and a
//!   `dual-indexer.payload.truncated` header, so the origin still points at the whole command;
//! - an authorisation failure stops the run with a message saying which permission is missing.
//!
//! The producer is made when the first letter is written, not before: librdkafka's producer
//! comes with a polling thread that costs about 1 % of a core while idle (see
//! [`DeadLetterQueue::new`]), and most runs write no dead letter at all.

use std::sync::Arc;
use std::time::Duration;

pub mod inspect;
pub mod letter;

pub use letter::{DeadLetter, ErrorClass};

use crate::backoff::backoff;
use crate::source::topics;

use futures::future::{BoxFuture, FutureExt, Shared};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::OnceCell;

/// How long the first letter waits for the dead-letter topic's creation (creating a topic took
/// the test broker 0.1 s).
const CREATION_WAIT: Duration = Duration::from_secs(2);

/// Headers longer than this are cut, so one huge reason cannot make the dead letter itself too large.
const MAX_REASON_BYTES: usize = 4096;

/// Header names, shared with the tests and docs/how-it-works.md.
pub mod headers {
    /// Error class.
    pub const CLASS: &str = "dual-indexer.error.class";
    /// Human-readable reason.
    pub const REASON: &str = "dual-indexer.error.reason";
    /// Elasticsearch error type.
    pub const ES_TYPE: &str = "dual-indexer.error.es_type";
    /// Source topic.
    pub const TOPIC: &str = "dual-indexer.source.topic";
    /// Source partition.
    pub const PARTITION: &str = "dual-indexer.source.partition";
    /// Source offset.
    pub const OFFSET: &str = "dual-indexer.source.offset";
    /// Bulk attempts made.
    pub const ATTEMPTS: &str = "dual-indexer.attempts";
    /// Set on a letter whose payload was cut to fit the broker: the original size in bytes.
    pub const TRUNCATED: &str = "dual-indexer.payload.truncated";
}

/// How the delivery of one dead letter ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The broker acknowledged it: its offset is final.
    Written(ErrorClass),
    /// Given up while waiting out a failure: the letter is no longer needed (its partition was
    /// revoked, and the next owner writes it).
    NotNeeded,
    /// The broker refuses this indexer the topic for good; the run must stop.
    Refused(String),
}

/// Why a dead letter was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Larger than the producer or the topic accepts.
    TooLarge(String),
    /// The broker refuses this client the topic.
    Unauthorized(String),
    /// Anything else: worth waiting out (the broker is down, the topic is being created).
    Other(String),
}

/// A producer bound to one dead-letter topic.
#[derive(Clone)]
pub struct DeadLetterQueue {
    config: ClientConfig,
    producer: Arc<OnceCell<FutureProducer>>,
    /// The creation of the topic, started beside the replay's start-up (see
    /// [`Self::created_by`]) and awaited before the first letter.
    creation: Option<Shared<BoxFuture<'static, ()>>>,
    topic: String,
    source_topic: String,
}

/// librdkafka properties that only consumers take.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "partition.assignment.strategy",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
];

/// The dead-letter producer's settings from the shared ones.
fn producer_settings(shared: &ClientConfig) -> ClientConfig {
    let mut config = shared.clone();
    // The shared `--kafka` settings may hold consumer-only properties; librdkafka warns about
    // each one a producer is given.
    for key in CONSUMER_ONLY {
        config.remove(key);
    }
    config.set("acks", "all");
    // A dead letter that takes longer is retried by the pipeline, loudly; `--dlq-kafka` may
    // choose another bound.
    if config.get("message.timeout.ms").is_none() {
        config.set("message.timeout.ms", "30000");
    }
    config
}

fn refused(e: rdkafka::error::KafkaError) -> anyhow::Error {
    anyhow::anyhow!("creating the dead-letter producer: {e}")
}

impl DeadLetterQueue {
    /// A producer for `topic`, recording `source_topic` as every entry's origin. The settings are
    /// checked now, so a bad `--dlq-kafka` stops the start rather than the first dead letter.
    pub fn new(config: &ClientConfig, topic: &str, source_topic: &str) -> anyhow::Result<Self> {
        let config = producer_settings(config);
        // A plain producer has no polling thread to start and stop. (The threaded producer's
        // thread polls in 100 ms windows, and rdkafka 0.39 rounds the window's last millisecond
        // down to a zero timeout, so the thread spins through it: 10 ms of CPU a second,
        // measured with `perf` on an idle `run`.)
        config.create::<BaseProducer>().map_err(refused)?;
        Ok(Self::checked(config, topic, source_topic))
    }

    /// [`Self::new`], and creates `topic` with one partition unless it exists, in the
    /// background: the first letter waits for it (see [`CREATION_WAIT`]), the caller does not.
    /// One client made from the dead-letter settings both checks them and creates the topic, so
    /// the topic is made on the cluster its letters go to (`--dlq-kafka bootstrap.servers` may
    /// name another than the source's), and the start connects no client only to check
    /// settings. Needs a Tokio runtime.
    pub fn creating_topic(
        config: &ClientConfig,
        topic: &str,
        source_topic: &str,
    ) -> anyhow::Result<Self> {
        let config = producer_settings(config);
        // librdkafka's admin client is a producer: creating it checks the settings as a
        // producer would take them.
        let admin: AdminClient<DefaultClientContext> = config.create().map_err(refused)?;
        let name = topic.to_owned();
        let creation = tokio::spawn(async move {
            if let Err(e) = topics::create_topic(&admin, &name, 1).await {
                tracing::warn!(topic = %name, error = %e, "could not create the dead-letter topic; relying on the broker to create it");
            }
        });
        Ok(Self::checked(config, topic, source_topic).created_by(creation))
    }

    fn checked(config: ClientConfig, topic: &str, source_topic: &str) -> Self {
        Self {
            config,
            producer: Arc::new(OnceCell::new()),
            creation: None,
            topic: topic.to_owned(),
            source_topic: source_topic.to_owned(),
        }
    }

    /// Has the first letter wait for `creation`, the task creating the topic. The replay need
    /// not wait for it to start: creating a topic took the test broker 0.1 s, a tenth of a
    /// replay's start-up, and most runs write no dead letter at all.
    fn created_by(mut self, creation: tokio::task::JoinHandle<()>) -> Self {
        // Shared, so that every wait sees the same creation: a wait given up (its letter's
        // partition revoked) leaves it for the next.
        self.creation = Some(creation.map(|_| ()).boxed().shared());
        self
    }

    /// Waits for the topic's creation, if one was started, for at most [`CREATION_WAIT`]. Its
    /// failure was logged; the broker may still create the topic itself. A creation not answered
    /// by then (the dead-letter cluster is slow or unreachable) is left to finish on its own, and
    /// the letter is written without it, so that its own failures are reported as they happen.
    async fn topic_created(&self) {
        if let Some(creation) = self.creation.clone() {
            if tokio::time::timeout(CREATION_WAIT, creation).await.is_err() {
                tracing::warn!(
                    dlq_topic = %self.topic,
                    "the dead-letter topic's creation is not answered after {} s; writing the letter without waiting for it",
                    CREATION_WAIT.as_secs()
                );
            }
        }
    }

    /// The dead-letter topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `letter` until the broker acknowledges it: its offset is not final before. A letter
    /// too large for the broker is cut down (see [`DeadLetter::truncate`]); other failures are
    /// waited out with a backoff, asking `still_needed` after each, so a letter of a revoked
    /// partition is given up.
    pub async fn deliver(
        &self,
        mut letter: DeadLetter,
        still_needed: impl Fn() -> bool,
    ) -> Delivered {
        let mut failures = 0u32;
        loop {
            match self.send(&letter).await {
                Ok(()) => return Delivered::Written(letter.class),
                Err(SendError::TooLarge(e)) if letter.truncate() => {
                    metrics::counter!("dlq.truncated").increment(1);
                    tracing::warn!(
                        dlq_topic = %self.topic, partition = letter.partition, offset = letter.offset, error = %e,
                        payload_bytes = letter.payload.len(),
                        "the dead letter is too large for the broker; writing it with a truncated payload and a `{}` header",
                        headers::TRUNCATED
                    );
                }
                Err(SendError::Unauthorized(e)) => {
                    return Delivered::Refused(format!(
                        "the broker refuses this indexer's writes to the dead-letter topic `{}`: {e}. Grant it Write (and Describe) on that topic, or name another with --dlq-topic",
                        self.topic
                    ))
                }
                Err(SendError::TooLarge(e) | SendError::Other(e)) => {
                    metrics::counter!("dlq.write_failures").increment(1);
                    tracing::error!(
                        dlq_topic = %self.topic, partition = letter.partition, offset = letter.offset, error = %e,
                        "cannot write to the dead-letter topic; partition {} cannot commit past offset {} until it can",
                        letter.partition, letter.offset
                    );
                    let wait = backoff(failures, Duration::from_millis(500), Duration::from_secs(30), 1.0);
                    tokio::time::sleep(wait).await;
                    failures = failures.saturating_add(1);
                    if !still_needed() {
                        return Delivered::NotNeeded;
                    }
                }
            }
        }
    }

    /// Writes one entry and waits for the broker's acknowledgement.
    pub async fn send(&self, letter: &DeadLetter) -> Result<(), SendError> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let attempts = letter.attempts.to_string();
        let reason = cut(&letter.reason, MAX_REASON_BYTES);
        let mut headers = OwnedHeaders::new_with_capacity(7)
            .insert(Header {
                key: headers::CLASS,
                value: Some(letter.class.as_str()),
            })
            .insert(Header {
                key: headers::REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: headers::TOPIC,
                value: Some(self.source_topic.as_str()),
            })
            .insert(Header {
                key: headers::PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: headers::OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: headers::ATTEMPTS,
                value: Some(attempts.as_str()),
            });
        if let Some(es_type) = &letter.es_type {
            headers = headers.insert(Header {
                key: headers::ES_TYPE,
                value: Some(es_type.as_str()),
            });
        }
        let original_size = letter.truncated_from.map(|n| n.to_string());
        if let Some(size) = &original_size {
            headers = headers.insert(Header {
                key: headers::TRUNCATED,
                value: Some(size.as_str()),
            });
        }
        let mut record = FutureRecord::to(&self.topic)
            .payload(&letter.payload)
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        let producer = self
            .producer
            .get_or_try_init(|| async {
                self.topic_created().await;
                self.config.create::<FutureProducer>()
            })
            .await
            .map_err(|e| SendError::Other(format!("creating the dead-letter producer: {e}")))?;
        producer
            .send(record, Duration::from_secs(0))
            .await
            .map(|_| ())
            .map_err(|(e, _)| classify(&e))
    }
}

fn classify(error: &rdkafka::error::KafkaError) -> SendError {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let text = error.to_string();
    match error.rdkafka_error_code() {
        Some(Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::MessageBatchTooLarge) => {
            SendError::TooLarge(text)
        }
        Some(
            Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::TransactionalIdAuthorizationFailed
            | Code::SaslAuthenticationFailed,
        ) => SendError::Unauthorized(text),
        _ => SendError::Other(text),
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_for_the_topic_given_up_leaves_the_creation_for_the_next_letter() {
        let (create, created) = tokio::sync::oneshot::channel::<()>();
        let creation = tokio::spawn(async move {
            let _ = created.await;
        });
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:9");
        let dlq = DeadLetterQueue::new(&config, "commands.dlq", "commands")
            .expect("a producer config")
            .created_by(creation);
        let short = Duration::from_millis(20);
        // The first letter gives up waiting (its partition was revoked, say)...
        assert!(tokio::time::timeout(short, dlq.topic_created())
            .await
            .is_err());
        // ...and the next one still waits for the same creation, not past it.
        assert!(tokio::time::timeout(short, dlq.topic_created())
            .await
            .is_err());
        create.send(()).expect("the creation task is waiting");
        tokio::time::timeout(Duration::from_secs(5), dlq.clone().topic_created())
            .await
            .expect("every wait ends once the topic is created");
    }

    /// A creation that is never answered (a dead-letter cluster that does not answer) holds the
    /// first letter for [`CREATION_WAIT`], not for librdkafka's whole request timeout.
    #[tokio::test]
    async fn an_unanswered_creation_holds_the_first_letter_only_so_long() {
        let creation = tokio::spawn(futures::future::pending::<()>());
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:9");
        let dlq = DeadLetterQueue::new(&config, "commands.dlq", "commands")
            .expect("a producer config")
            .created_by(creation);
        let started = std::time::Instant::now();
        tokio::time::timeout(CREATION_WAIT * 3, dlq.topic_created())
            .await
            .expect("the wait for the creation ends by itself");
        assert!(started.elapsed() >= CREATION_WAIT);
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("aé", 2), "a");
    }
}
