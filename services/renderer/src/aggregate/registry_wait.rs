//! Events whose writer schema the Schema Registry has not given yet. The aggregator
//! reads in order on one thread, so it never waits for the registry there: the
//! partition goes back to the event and pauses, a task asks the registry (again, with
//! backoff, while it does not answer), and the partition resumes once it has. The
//! other partitions go on meanwhile.

use wire::Read;

use super::*;

/// A partition paused at `offset` while its event's writer schema is fetched.
pub(super) struct Waiting {
    offset: i64,
    /// Ends with the reason the event is unreadable, if it is.
    fetch: tokio::task::JoinHandle<Option<wire::WireError>>,
}

/// What reading an event's bytes came to.
pub(super) enum Readable {
    /// The event, or `None` when it is unreadable (the webhook path dead-letters it) or
    /// of a type the aggregator does not gather, told from its first bytes.
    Now(Option<Event>),
    /// Its writer schema is being fetched (or an earlier event's is): the partition is
    /// paused there and will read this event again.
    Later,
}

impl Core {
    /// Reads `bytes` (at `offset` of partition `p`), or pauses the partition there
    /// while the registry is asked for the writer schema.
    pub(super) fn read(
        &mut self,
        consumer: &GroupConsumer,
        p: i32,
        offset: i64,
        bytes: &[u8],
    ) -> anyhow::Result<Readable> {
        // Paused at an earlier event: a record fetched before the pause took effect is
        // read again after it, in order.
        if self.waiting.get(&p).is_some_and(|w| offset >= w.offset) {
            return Ok(Readable::Later);
        }
        if self.unreadable.get(&p) == Some(&offset) {
            self.unreadable.remove(&p);
            return Ok(Readable::Now(None));
        }
        // Most events are not the aggregator's: their type says so without a decode.
        if let Some(event_type) = self.shared.events.peek_type(&self.shared.registry, bytes)
            && !is_ours(event_type)
        {
            return Ok(Readable::Now(None));
        }
        let id = match self.shared.events.read_cached(&self.shared.registry, bytes) {
            Read::Done(result) => return Ok(Readable::Now(result.ok())),
            Read::Fetch(id) => id,
        };
        let tpl = self.one_partition(p, Offset::Offset(offset))?;
        consumer.seek_partitions(tpl.clone(), CALL_TIMEOUT)?;
        consumer.pause(&tpl)?;
        let events = self.shared.events.clone();
        let registry = self.shared.registry.clone();
        let metrics = self.shared.registry_metrics.clone();
        let shutdown = self.shutdown.clone();
        let fetch = self.runtime.spawn(async move {
            crate::schemas::fetch_patiently(
                &events,
                &registry,
                id,
                &metrics,
                &shutdown,
                (p, offset),
            )
            .await
            .and_then(Result::err)
        });
        self.waiting.insert(p, Waiting { offset, fetch });
        Ok(Readable::Later)
    }

    /// Resumes the partitions whose writer schema has been fetched (or found unknown).
    pub(super) fn resume_fetched(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        let done: Vec<i32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.fetch.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in done {
            let Some(waiting) = self.waiting.remove(&p) else {
                continue;
            };
            // Finished: this does not block.
            if let Ok(Some(_unreadable)) = self.runtime.block_on(waiting.fetch) {
                self.unreadable.insert(p, waiting.offset);
            }
            consumer.resume(&self.one_partition(p, Offset::Invalid)?)?;
        }
        Ok(())
    }

    /// Forgets the waits of partitions no longer assigned.
    pub(super) fn stop_waiting(&mut self, partition: i32) {
        if let Some(w) = self.waiting.remove(&partition) {
            w.fetch.abort();
        }
        self.unreadable.remove(&partition);
    }

    fn one_partition(&self, p: i32, offset: Offset) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.shared.topics.events, p, offset)?;
        Ok(tpl)
    }
}
