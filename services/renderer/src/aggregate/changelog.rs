//! The changelog: reading a partition back (restores and flushes), and the floor
//! below which no record of this instance's transactions lies.

use super::*;

/// Reads changelog partitions to their end.
pub(super) type ChangelogReader = BaseConsumer<EndIsNoError>;

/// Reaching the end of a partition is how a read ends, not an error to log.
pub(super) struct EndIsNoError;

impl ClientContext for EndIsNoError {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!(error = %error, reason, "changelog reader");
        }
    }
}

impl ConsumerContext for EndIsNoError {}

/// Tracks, per changelog partition, an offset below every record written from now on.
pub(super) struct Deliveries {
    pub(super) floors: Arc<Mutex<HashMap<i32, i64>>>,
    pub(super) changelog: String,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) if m.topic() == self.changelog => {
                let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
                let floor = floors.entry(m.partition()).or_insert(0);
                *floor = (*floor).max(m.offset() + 1);
            }
            Ok(_) => {}
            // The transaction fails with it and is aborted.
            Err((e, m)) => {
                tracing::warn!(topic = m.topic(), error = %e, "transactional write failed")
            }
        }
    }
}

impl Core {
    /// Rebuilds the open transfers of `events` partition `p` from changelog partition `p`.
    /// A failure (each call is retried for a minute first) also replaces the changelog
    /// reader: librdkafka 2.12 can leave a client without brokers for minutes after
    /// a metadata response that lists none (issue 5301, ARCHITECTURE "Known gaps"),
    /// while a new client connects at once.
    pub(super) fn restore(&mut self, p: i32) -> anyhow::Result<()> {
        let restored = self.restore_partition(p);
        if restored.is_err() {
            match self
                .changelog_config
                .create_with_context::<_, ChangelogReader>(EndIsNoError)
            {
                Ok(fresh) => {
                    let old = std::mem::replace(&mut self.changelog, fresh);
                    // Destroying a librdkafka client can block while it winds down.
                    std::thread::spawn(move || drop(old));
                    tracing::warn!(
                        partition = p,
                        "the changelog reader is replaced after a failed restore"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot make a new changelog reader"),
            }
        }
        restored
    }

    fn restore_partition(&mut self, p: i32) -> anyhow::Result<()> {
        #[cfg(feature = "fault-injection")]
        if crate::fault::restore_fails() {
            anyhow::bail!("fault injection: changelog partition {p} cannot be read");
        }
        let mut transfers: HashMap<String, Transfer> = HashMap::new();
        let registry = &self.shared.registry;
        let topic = &self.shared.topics.sensitive_trace_changelog;
        // Everything written before now, once its transaction is decided: the last
        // commit of a previous owner may not have its markers yet.
        // Right after a broker restart the partition can be unknown for a moment
        // (stale metadata): that is retried, not a reason to stop the renderer.
        let (_, high) = patiently(
            "reading the changelog's high watermark",
            &self.shutdown,
            || self.changelog.fetch_watermarks(topic, p, CALL_TIMEOUT),
        )?;
        let end = read_changelog(
            &self.changelog,
            topic,
            p,
            Offset::Beginning,
            Until::Position(high),
            |m| {
                restore_record(&mut transfers, registry, p, m);
                false
            },
        )?;
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let floor = floors.entry(p).or_insert(0);
        *floor = (*floor).max(end);
        drop(floors);
        tracing::debug!(
            partition = p,
            open_transfers = transfers.len(),
            "aggregation state restored"
        );
        self.partitions.insert(p, transfers);
        Ok(())
    }

    pub(super) fn floor(&self, p: i32) -> i64 {
        self.floors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&p)
            .copied()
            .unwrap_or(0)
    }
}

/// Applies one changelog record to the open transfers being rebuilt.
pub(super) fn restore_record(
    transfers: &mut HashMap<String, Transfer>,
    registry: &Registry,
    p: i32,
    m: &BorrowedMessage<'_>,
) {
    let Some((transfer_id, _)) = m.key().and_then(parse_key) else {
        return;
    };
    let Some(bytes) = m.payload() else {
        // A flush's tombstones: the transfer was sent.
        transfers.remove(transfer_id);
        return;
    };
    let Ok(record) = registry.decode::<AggregatedTrace>(bytes) else {
        // Kept as a trace of its transfer: the flush dead-letters what it cannot read.
        tracing::warn!(
            partition = p,
            offset = m.offset(),
            code = "HL-TRACE-UNREADABLE",
            "unreadable changelog record"
        );
        return;
    };
    let transfer = transfers
        .entry(record.transfer_id.clone())
        .or_insert_with(|| Transfer {
            destination_id: record.destination_id.clone(),
            first_event_id: record.event_id.clone(),
            opened_at_ms: record.opened_at_ms,
            traces: 0,
            source_ids: Vec::new(),
            model_ids: Vec::new(),
            scan_from: m.offset(),
            links: Vec::new(),
        });
    transfer.traces = transfer.traces.max(record.seq + 1);
    transfer.add_ids(record.source_id.as_deref(), record.model_id.as_deref());
}

/// Where a read of a changelog partition ends.
pub(super) enum Until {
    /// Once the position reached this offset: a high watermark read before, so the
    /// read waits for every transaction written below it to be committed or aborted.
    Position(i64),
    /// Once the callback says so (it saw every record it expects).
    Done,
}

/// Reads changelog partition `p` from `from` (read_committed), calling `f` on each
/// record; `f` answers whether it has seen all it needs. Returns the position reached.
///
/// The end of the partition a read_committed consumer sees is the last stable offset,
/// and a commit's markers are written after `commit_transaction` returns: reaching
/// the end is not enough, the read goes on until `until`.
pub(super) fn read_changelog(
    reader: &ChangelogReader,
    topic: &str,
    p: i32,
    from: Offset,
    until: Until,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, from)?;
    reader.assign(&tpl)?;
    let deadline = Instant::now() + READ_PATIENCE;
    let start = match from {
        Offset::Offset(o) => o,
        _ => 0,
    };
    let position = || match reader
        .position()
        .ok()
        .and_then(|t| t.find_partition(topic, p).map(|e| e.offset()))
    {
        Some(Offset::Offset(o)) => o.max(start),
        _ => start,
    };
    let reached = |target: i64| position() >= target;
    let result = loop {
        if let Until::Position(target) = until
            && reached(target)
        {
            break Ok(());
        }
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if f(&m) {
                    break Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None if Instant::now() <= deadline => {}
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                break Err(anyhow::anyhow!(
                    "reading changelog partition {p} did not end within {READ_PATIENCE:?}"
                ));
            }
            Some(Err(e)) => break Err(anyhow::Error::from(e).context("reading the changelog")),
        }
    };
    let end = position();
    reader.unassign()?;
    result.map(|()| end)
}
