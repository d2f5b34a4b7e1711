//! What the aggregator does after a transactional call fails, in one place.
//!
//! librdkafka's rules (rdkafka.h, "Transactional producer API"):
//! - a call that timed out, or failed with another retriable error, goes on in the
//!   background, and then only the same call may follow: an abort would get
//!   "Conflicting commit_transaction API call is already in progress", for ever;
//! - an abortable error leaves a transaction that can only be aborted;
//! - a fatal error (fenced by another producer with this transactional id) leaves a
//!   producer that can do nothing more.
//!
//! rdkafka flushes before it commits, with the commit's timeout. A flush that timed out
//! started no commit, so the commit is called again as well (the flush resumes).
//!
//! The calls sit behind [`Transactions`] so this policy is tested against a producer
//! that fails on cue (`txn_policy_tests.rs`).

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

/// How a failed transactional call is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Call the same function again.
    Retriable,
    /// Abort the transaction and go back to the last commit.
    Abortable,
    /// Stop: this producer can do nothing more.
    Fatal,
}

/// The one classification of a transactional call's error.
pub(super) fn classify(e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(r) if r.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(r) if r.is_retriable() => Failure::Retriable,
        KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => Failure::Retriable,
        _ => Failure::Abortable,
    }
}

/// The transactional calls the aggregator makes after `begin`.
pub(super) trait Transactions {
    fn add_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> KafkaResult<()>;
    fn commit(&self) -> KafkaResult<()>;
    fn abort(&self) -> KafkaResult<()>;
}

/// The real producer, each call bounded by `CALL_TIMEOUT`.
impl<C: ProducerContext + 'static> Transactions for ThreadedProducer<C> {
    fn add_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> KafkaResult<()> {
        self.send_offsets_to_transaction(offsets, group, super::CALL_TIMEOUT)
    }

    fn commit(&self) -> KafkaResult<()> {
        self.commit_transaction(super::CALL_TIMEOUT)
    }

    fn abort(&self) -> KafkaResult<()> {
        self.abort_transaction(super::CALL_TIMEOUT)
    }
}

/// When to give up waiting, and how long to pause between attempts.
pub(super) struct Patience<'a> {
    pub stopping: &'a dyn Fn() -> bool,
    pub pause: Duration,
}

/// Adds the handled offsets (if any) and commits. Returns only abortable and fatal
/// errors, or a retriable one once the service is stopping.
pub(super) fn commit(
    t: &impl Transactions,
    offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    patience: &Patience<'_>,
) -> anyhow::Result<()> {
    if let Some((offsets, group)) = offsets {
        again_while_retriable("adding offsets to the transaction", patience, || {
            t.add_offsets(offsets, group)
        })?;
    }
    again_while_retriable("committing the transaction", patience, || t.commit())
}

/// Aborts the open transaction. "No transaction in progress" is success; other
/// non-fatal errors (the broker away) are waited out until the service stops.
pub(super) fn abort(t: &impl Transactions, patience: &Patience<'_>) -> anyhow::Result<()> {
    loop {
        let e = match t.abort() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if matches!(&e, KafkaError::Transaction(r) if r.code() == RDKafkaErrorCode::State) {
            return Ok(());
        }
        if classify(&e) == Failure::Fatal || (patience.stopping)() {
            return Err(anyhow::Error::from(e).context("aborting the transaction"));
        }
        tracing::warn!(error = %e, "cannot abort the transaction yet; retrying");
        std::thread::sleep(patience.pause);
    }
}

fn again_while_retriable(
    what: &'static str,
    patience: &Patience<'_>,
    call: impl Fn() -> KafkaResult<()>,
) -> anyhow::Result<()> {
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(e) if classify(&e) == Failure::Retriable && !(patience.stopping)() => {
                tracing::warn!(error = %e, "{what}: retrying the same call");
                std::thread::sleep(patience.pause);
            }
            Err(e) => return Err(anyhow::Error::from(e)).context(what),
        }
    }
}

/// Whether an error from this module (or any Kafka call) leaves the producer unusable.
pub(super) fn is_fatal(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<KafkaError>())
        .any(|k| classify(k) == Failure::Fatal)
}

#[cfg(test)]
#[path = "txn_policy_tests.rs"]
mod tests;
