//! A dead letter: a command that cannot be applied, with why and from where. No Kafka here, so
//! the sink and the transform can name their refusals without knowing where they are written.

use crate::transform::Rejection;

/// Why a command was dead-lettered: the `dual-indexer.error.class` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The payload is not a valid command envelope.
    Decode,
    /// The command breaks a rule of the document schema.
    Transform,
    /// Elasticsearch refused the document (a 4xx item), or it is too large for one request.
    Mapping,
    /// Elasticsearch refused a whole request with this document alone in it.
    RequestRefused,
    /// An item 5xx that lasted past `--item-retry-secs`.
    RetriesExhausted,
}

impl ErrorClass {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Transform => "transform",
            Self::Mapping => "mapping",
            Self::RequestRefused => "request_refused",
            Self::RetriesExhausted => "retries_exhausted",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&Rejection> for ErrorClass {
    fn from(rejection: &Rejection) -> Self {
        match rejection {
            Rejection::Decode(_) => Self::Decode,
            Rejection::Transform(_) => Self::Transform,
        }
    }
}

/// Why an item was refused for good, with the message it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `Mapping` for a 4xx refusal, `RequestRefused` for a document that alone makes
    /// Elasticsearch refuse a whole request, `RetriesExhausted` after the retry bound.
    pub class: ErrorClass,
    /// Elasticsearch's error type and reason, or the transport error.
    pub reason: String,
    /// Elasticsearch's error type, when there is one.
    pub es_type: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The message, byte for byte.
    pub original: Original,
}

/// The original message of an item, copied out of its batch for the dead-letter topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    /// The original message key.
    pub key: Option<Vec<u8>>,
    /// The original message payload.
    pub payload: Vec<u8>,
}

/// One command on its way to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original payload.
    pub payload: Vec<u8>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Error class.
    pub class: ErrorClass,
    /// Reason.
    pub reason: String,
    /// Elasticsearch error type.
    pub es_type: Option<String>,
    /// Bulk attempts made.
    pub attempts: u32,
    /// The original payload's size, once the payload was cut to fit the broker.
    pub truncated_from: Option<usize>,
}

impl DeadLetter {
    /// A command the transform refused, before it reached Elasticsearch.
    pub fn rejected(
        key: Option<&[u8]>,
        payload: &[u8],
        partition: i32,
        offset: i64,
        rejection: &Rejection,
    ) -> Self {
        Self {
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            partition,
            offset,
            class: rejection.into(),
            reason: rejection.to_string(),
            es_type: None,
            attempts: 0,
            truncated_from: None,
        }
    }

    /// A command Elasticsearch refused (see [`crate::sink::ItemOutcome::DeadLetter`]).
    pub fn refused(partition: i32, offset: i64, refusal: Refusal) -> Self {
        Self {
            key: refusal.original.key,
            payload: refusal.original.payload,
            partition,
            offset,
            class: refusal.class,
            reason: refusal.reason,
            es_type: refusal.es_type,
            attempts: refusal.attempts,
            truncated_from: None,
        }
    }

    /// Halves the payload (and, once it is empty, drops the key) after the broker refused the
    /// letter as too large. False when nothing is left to cut.
    pub fn truncate(&mut self) -> bool {
        if self.payload.is_empty() && self.key.is_none() {
            return false;
        }
        self.truncated_from.get_or_insert(self.payload.len());
        if self.payload.is_empty() {
            self.key = None;
        } else {
            let keep = self.payload.len() / 2;
            self.payload.truncate(keep);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_is_cut_in_halves_then_loses_its_key_and_remembers_its_size() {
        let mut letter = DeadLetter::rejected(
            Some(b"k"),
            &[b'x'; 10],
            0,
            1,
            &Rejection::Decode("not JSON".into()),
        );
        assert_eq!(letter.class, ErrorClass::Decode);
        let mut sizes = Vec::new();
        while letter.truncate() {
            sizes.push((letter.payload.len(), letter.key.is_some()));
        }
        assert_eq!(
            sizes,
            [(5, true), (2, true), (1, true), (0, true), (0, false)]
        );
        assert_eq!(letter.truncated_from, Some(10));
    }
}
