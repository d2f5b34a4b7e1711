//! hookline's Kafka I/O: client settings chosen on purpose, topic names and creation,
//! offset tracking for concurrent work, durable sends, and compacted topics read as tables.
//!
//! Architecture invariant: offsets follow effects. A consumer stores an offset only once
//! every effect of the records before it is durable, via [`OffsetTracker`].

/// The largest record hookline writes (topics are created to accept it): 8 MiB.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

mod client;
mod consume;
mod offsets;
mod send;
mod table;
mod topics;

pub use client::{commit_stored, CommitOnRevoke, GroupConsumer, KafkaSettings, consumer_config, group_consumer, producer, producer_config};
pub use tokio_util::sync::CancellationToken;
pub use consume::{consume_concurrently, consume_delayed, ConsumeOptions, Outcome, Owner, Record};
pub use offsets::{OffsetTracker, Ticket};
pub use send::{send_durably, SendError};
pub use table::{Table, TableEntry};
pub use topics::{ensure_topics, TopicError, TopicSpec, Topics, RETRY_TIERS};
