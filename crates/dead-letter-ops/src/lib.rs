//! Operating on dead letters, for the operator CLI and the producer API alike:
//! [`Store::list`] (metadata only, paged), [`Store::show`] (one letter, redacted) and
//! [`Store::replay`] (re-queue to `rendered-deliveries`, once per dead letter).
//!
//! Every call reads the `dead-letter` topic from the beginning of each partition up to
//! the high watermark taken when it starts ([`scan`]): there is no index, and the topic
//! is bounded by its retention.
//!
//! Architecture invariants:
//! - What leaves this crate is safe to print. [`Entry`] never holds a URL, header,
//!   body, response or raw payload; [`Shown`] holds the URL with query values
//!   redacted, sensitive header values as `[redacted]`, responses as `[sealed]` and a
//!   body only when it was not sealed. Errors carry codes and names, never values.
//! - A dead letter is re-queued at most once: the re-queued deliveries and a
//!   `dead-letter-replays` mark per letter are written in one Kafka transaction, under
//!   one `transactional.id` per pipeline, so two replays at once fence each other and
//!   one of them fails instead of both re-queuing ([`replay`]).

mod list;
mod replay;
mod requeue;
mod scan;
mod show;

use std::sync::Arc;

use kafka_io::{KafkaSettings, Topics};
use time::OffsetDateTime;
use wire::Registry;

pub use list::{AttemptInfo, Cursor, DEFAULT_LIMIT, Entry, ListFilter, ListPage, MAX_LIMIT, Page};
pub use replay::{LetterOutcome, Progress, ReplayFilter, ReplayRequest, ReplaySummary};
pub use requeue::{current_url, requeue};
pub use show::{BODY_PREVIEW_BYTES, Shown, ShownHeader, ShownRequest, redact_url};

/// Refusal codes of a replay, one per letter that is not re-queued.
pub mod codes {
    /// The letter's endpoint was deleted (or never existed).
    pub const ENDPOINT_DELETED: &str = "HL-REPLAY-ENDPOINT-DELETED";
    /// The letter's endpoint is inactive (`active: false`): activate it first.
    pub const ENDPOINT_INACTIVE: &str = "HL-REPLAY-ENDPOINT-INACTIVE";
    /// The letter holds no request (an unreadable record, a render failure).
    pub const NOT_REPLAYABLE: &str = "HL-REPLAY-NOT-REPLAYABLE";
    /// The request's body was dropped to fit the dead-letter topic.
    pub const BODY_DROPPED: &str = "HL-REPLAY-BODY-DROPPED";
    /// The endpoint's current URL cannot be used.
    pub const BAD_URL: &str = "HL-REPLAY-URL";
    /// A sealed part (of the request or the endpoint) does not open with this master key.
    pub const SEAL_OPEN: &str = "HL-SEAL-OPEN";
}

/// Why an operation failed as a whole. Messages name topics and settings, never values.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Kafka did not answer or refused.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A topic the operation reads does not exist.
    #[error("topic {0} does not exist (is HOOKLINE_TOPIC_PREFIX right?)")]
    NoTopic(String),
    /// Reading a topic made no progress for too long.
    #[error("reading {0} made no progress for 30 s")]
    Stalled(String),
    /// Another replay ran at the same time and fenced this one; nothing was written.
    #[error(
        "another replay ran at the same time and this one wrote nothing; run it again (what the other re-queued is skipped)"
    )]
    Conflict,
    /// A replay's transaction failed: it was aborted, or its outcome is unknown. Running
    /// the replay again is safe: letters it re-queued, if it did, are marked and skipped.
    #[error(
        "the replay did not complete (kafka: {0}); run it again: letters already re-queued are skipped"
    )]
    NotCommitted(rdkafka::error::KafkaError),
    /// A record could not be encoded.
    #[error("encoding: {0}")]
    Wire(#[from] wire::WireError),
    /// A cursor that this crate did not hand out.
    #[error("the cursor is not one a listing returned")]
    BadCursor,
    /// Creating the replay marks topic failed.
    #[error("topics: {0}")]
    Topics(#[from] kafka_io::TopicError),
}

impl OpsError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            OpsError::Kafka(_) | OpsError::Stalled(_) | OpsError::Topics(_) => {
                "HL-KAFKA-UNAVAILABLE"
            }
            OpsError::NoTopic(_) => "HL-DLQ-NO-TOPIC",
            OpsError::Conflict => "HL-REPLAY-CONFLICT",
            OpsError::NotCommitted(_) => "HL-REPLAY-NOT-COMMITTED",
            OpsError::Wire(e) => e.code(),
            OpsError::BadCursor => "HL-DLQ-BAD-CURSOR",
        }
    }
}

/// The dead letters of one pipeline (a broker and a topic prefix).
#[derive(Clone)]
pub struct Store {
    settings: KafkaSettings,
    topics: Topics,
    registry: Arc<Registry>,
}

impl Store {
    /// The store of the pipeline `settings` names.
    pub fn new(settings: KafkaSettings) -> Result<Store, OpsError> {
        let topics = Topics::new(&settings.topic_prefix);
        Ok(Store {
            settings,
            topics,
            registry: Arc::new(Registry::bundled()?),
        })
    }

    /// The topic names.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }
}

/// Why a time argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a time is RFC 3339 (2024-01-15T10:00:00Z) or a duration ago (24h, 30m, 7d)")]
pub struct BadTime;

/// A time given as RFC 3339, or as a duration before `now` (`24h`, `90m`, `7d`).
pub fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, BadTime> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(text).map_err(|_| BadTime)?;
    let ago = time::Duration::try_from(ago).map_err(|_| BadTime)?;
    now.checked_sub(ago).ok_or(BadTime)
}

/// A record's RFC 3339 time; `None` when it does not parse.
pub(crate) fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = parse_rfc3339("2024-01-15T10:00:00Z").unwrap();
        let table = [
            ("2024-01-14T10:00:00Z", Some("2024-01-14T10:00:00Z")),
            ("2024-01-15T12:00:00+02:00", Some("2024-01-15T10:00:00Z")),
            ("24h", Some("2024-01-14T10:00:00Z")),
            (" 90m ", Some("2024-01-15T08:30:00Z")),
            ("7d", Some("2024-01-08T10:00:00Z")),
            ("yesterday", None),
            ("", None),
            ("-5h", None),
        ];
        for (text, want) in table {
            assert_eq!(
                parse_time(text, now).ok(),
                want.map(|w| parse_rfc3339(w).unwrap()),
                "{text}"
            );
        }
    }
}
