//! The transaction: writes queued in it, offsets advanced, commit, and the recovery
//! after a failure: abort, rewind, restore. Which failure leads where is decided in
//! `txn_policy.rs`.

use super::txn_policy;
use super::*;

/// Transactional calls are retried every half second until the service stops.
fn patience<'a>(stopping: &'a dyn Fn() -> bool) -> txn_policy::Patience<'a> {
    txn_policy::Patience {
        stopping,
        pause: Duration::from_millis(500),
    }
}

impl Core {
    /// Queues a write in the transaction.
    pub(super) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        self.send_with(topic, partition, key, value, None)
    }

    pub(super) fn send_with(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<&OwnedHeaders>,
    ) -> anyhow::Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    pub(super) fn begin(&mut self) -> anyhow::Result<()> {
        if self.txn.is_none() {
            self.producer
                .begin_transaction()
                .context("beginning a transaction")?;
            self.txn = Some(Txn {
                started: Instant::now(),
                positions: HashMap::new(),
            });
        }
        Ok(())
    }

    /// Marks `offset` of partition `p` handled in this transaction.
    pub(super) fn advance(&mut self, p: i32, offset: i64) -> anyhow::Result<()> {
        self.begin()?;
        if let Some(txn) = &mut self.txn {
            txn.positions.insert(p, offset + 1);
        }
        Ok(())
    }

    /// Commits the open transaction with the offsets it handled.
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> anyhow::Result<()> {
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        let mut offsets = TopicPartitionList::new();
        for (p, next) in &txn.positions {
            offsets.add_partition_offset(&self.shared.topics.events, *p, Offset::Offset(*next))?;
        }
        let metadata = if txn.positions.is_empty() {
            None
        } else {
            Some(
                consumer
                    .group_metadata()
                    .context("no consumer group metadata")?,
            )
        };
        let started = Instant::now();
        let stopping = || self.shutdown.is_cancelled();
        txn_policy::commit(
            &self.producer,
            metadata.as_ref().map(|m| (&offsets, m)),
            &patience(&stopping),
        )?;
        self.committed.extend(txn.positions);
        let metrics = &self.shared.metrics;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics.last_commit.set(now.as_secs_f64());
        let open: usize = self.partitions.values().map(HashMap::len).sum();
        metrics
            .open_transfers
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        Ok(())
    }

    pub(super) fn commit_or_rewind(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        match self.commit(consumer) {
            Ok(()) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    /// After a failed step: abort, and go back to the last commit: state and positions.
    /// Transient failures (the broker restarting) are waited out; fatal producer errors
    /// (fenced by another instance with this id) end the aggregator.
    pub(super) fn recover(
        &mut self,
        consumer: &GroupConsumer,
        e: anyhow::Error,
    ) -> anyhow::Result<()> {
        if is_fatal(&e) {
            return Err(e.context(
                "fatal transactional error (another renderer with the same HOOKLINE_INSTANCE_ID?)",
            ));
        }
        tracing::warn!(error = %format!("{e:#}"), "aggregator transaction failed; rewinding to the last commit");
        loop {
            let attempt = self.abort().and_then(|()| self.rewind(consumer));
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) if self.shutdown.is_cancelled() => {
                    tracing::warn!(error = %format!("{e:#}"), "stopping before the aggregator could rewind");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot rewind yet; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Aborts the open transaction, if any (retrying while the broker is away).
    pub(super) fn abort(&mut self) -> anyhow::Result<()> {
        self.txn = None;
        let stopping = || self.shutdown.is_cancelled();
        txn_policy::abort(&self.producer, &patience(&stopping))
    }

    /// Positions back to the committed offsets, state rebuilt from the changelog. The
    /// offsets are the ones this aggregator committed or started from (`committed`),
    /// not fetched: after a broker stall an offset fetch can time out again and again.
    pub(super) fn rewind(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        let assignment = consumer.assignment()?;
        let topic = self.shared.topics.events.clone();
        let mut seek = TopicPartitionList::new();
        self.partitions.clear();
        for e in assignment.elements_for_topic(&topic) {
            let p = e.partition();
            if let Some(offset) = self.committed.get(&p) {
                seek.add_partition_offset(&topic, p, Offset::Offset(*offset))?;
            }
            self.restore(p)?;
        }
        if seek.count() > 0 {
            let result = consumer.seek_partitions(seek, CALL_TIMEOUT)?;
            for e in result.elements() {
                if let Err(err) = e.error() {
                    anyhow::bail!("cannot seek partition {} back: {err}", e.partition());
                }
            }
        }
        Ok(())
    }
}
