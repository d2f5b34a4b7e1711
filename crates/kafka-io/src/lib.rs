//! hookline's Kafka I/O: client settings chosen on purpose, topic names and creation,
//! offset tracking for concurrent work, durable sends, and compacted topics read as tables.
//!
//! Architecture invariant: offsets follow effects. A consumer stores an offset only once
//! every effect of the records before it is durable, via [`OffsetTracker`].

/// The largest record hookline writes (topics are created to accept it): 8 MiB.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

mod affinity;
mod client;
mod consume;
mod group;
mod offsets;
mod pause;
mod probe;
mod security;
mod send;
mod stats;
mod table;
mod topics;

pub use affinity::{AffinityError, adopt_offsets, co_partitioned, partition_for_key};
pub use client::{
    CommitOnRevoke, GroupConsumer, KafkaProfile, KafkaSettings, commit_stored, consumer_config,
    group_consumer, producer, producer_config,
};
pub use consume::{
    ConsumeOptions, Ended, Lane, Outcome, Owner, Record, consume_concurrently, consume_lanes,
};
pub use group::{GroupHealth, STUCK_AFTER, Stuck, consume_group};
pub use offsets::{OffsetTracker, Ticket};
pub use probe::KafkaProbe;
pub use security::{KafkaSecurity, SaslMechanism, Secret, SecurityProtocol};
pub use send::{SendError, send_durably};
pub use stats::{ConsumerStats, STATS_INTERVAL_MS};
pub use table::{Table, TableEntry, retry_for};
pub use tokio_util::sync::CancellationToken;
pub use topics::{RETRY_TIERS, TopicError, TopicSpec, Topics, ensure_topics};
