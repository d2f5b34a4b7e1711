//! Replaying dead letters: each matching letter that holds its request is re-queued to
//! `rendered-deliveries` ([`crate::requeue`]) and marked on `dead-letter-replays`, both
//! in one Kafka transaction.
//!
//! Exactly one re-queue per dead letter:
//! - a letter with a mark is skipped (`already_replayed`); a replay that fails again
//!   is a new dead letter with a new id, replayable in turn;
//! - every replay uses the transactional id `<prefix>hookline-dead-letter-replay`, and
//!   reads the marks only after `init_transactions`: a second replay fences the first
//!   (which fails with [`OpsError::Conflict`], nothing written) or, started after the
//!   first committed, reads its marks;
//! - letters of one run that carry the same delivery id (a delivery dead-lettered twice
//!   after a crash) are re-queued once and all marked (`duplicates`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use kafka_io::{Table, TopicSpec};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;
use service_kit::telemetry;
use signing::Sealer;
use time::OffsetDateTime;
use wire::{DeadLetter, Endpoint, RenderedDelivery};

use crate::scan::{Missing, scan};
use crate::{OpsError, Store, codes, parse_rfc3339};

mod plan;

pub(crate) use self::plan::plan;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a replay's transaction may stay open; also how long librdkafka retries a send.
const TRANSACTION_TIMEOUT: &str = "60000";

/// Which dead letters to replay; every field given must match.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only those that failed at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only those that failed before this time.
    pub until: Option<OffsetDateTime>,
    /// Only these dead letters (empty: any).
    pub ids: Vec<String>,
}

impl ReplayFilter {
    /// True when nothing narrows it: every dead letter matches.
    pub fn is_everything(&self) -> bool {
        self.endpoint_id.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.ids.is_empty()
    }

    /// True when `letter` passes.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let endpoint = letter
            .endpoint_id
            .as_deref()
            .or(letter.delivery.as_ref().map(|d| d.endpoint_id.as_str()));
        let failed_at = parse_rfc3339(&letter.failed_at);
        self.endpoint_id
            .as_deref()
            .is_none_or(|e| endpoint == Some(e))
            && self
                .since
                .is_none_or(|since| failed_at.is_some_and(|t| t >= since))
            && self
                .until
                .is_none_or(|until| failed_at.is_some_and(|t| t < until))
            && (self.ids.is_empty() || self.ids.contains(&letter.id))
    }
}

/// A replay to run.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The letters.
    pub filter: ReplayFilter,
    /// Report what would happen; write nothing.
    pub dry_run: bool,
    /// Who asked (`cli`, `api`), kept in each mark.
    pub requested_by: String,
}

/// What happened to one matching letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LetterOutcome {
    /// The dead letter.
    pub id: String,
    /// Its delivery.
    pub delivery_id: Option<String>,
    /// Its endpoint.
    pub endpoint_id: Option<String>,
    /// `requeued` (in a dry run: would be), `already_replayed`, `duplicate` or `refused`.
    pub outcome: &'static str,
    /// Why it was refused.
    pub code: Option<&'static str>,
}

/// What a replay did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReplaySummary {
    /// Nothing was written.
    pub dry_run: bool,
    /// Dead letters the filter selected.
    pub matched: usize,
    /// Re-queued for delivery.
    pub requeued: usize,
    /// Skipped: replayed before.
    pub already_replayed: usize,
    /// Marked without a re-queue: another letter of this run carries the same delivery.
    pub duplicates: usize,
    /// Not re-queued, by code (`HL-REPLAY-ENDPOINT-DELETED` ...).
    pub refused: BTreeMap<String, usize>,
    /// Ids asked for that no dead letter has.
    pub not_found: Vec<String>,
    /// Each matching letter, oldest first.
    pub letters: Vec<LetterOutcome>,
}

/// How a replay is getting on, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This many deliveries are about to be written.
    Writing(usize),
    /// One more was acknowledged (in the open transaction).
    Written,
    /// The transaction is being committed.
    Committing,
}

/// What a run writes: a delivery per re-queued letter, a mark per re-queued or duplicate letter.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    pub deliveries: Vec<RenderedDelivery>,
    pub marks: Vec<wire::Replay>,
}

/// The span of one replayed delivery: a new trace, linked to the original's context when
/// its dead letter carried one; `Span::none()` when tracing is off.
fn replay_span(d: &RenderedDelivery, original: Option<&[(String, Vec<u8>)]>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        parent: None,
        "replay dead-letter",
        otel.kind = "producer",
        hookline.delivery.id = %d.delivery_id,
        hookline.endpoint.id = %d.endpoint_id,
        hookline.dead_letter.id = %d.replay_of.as_deref().unwrap_or_default(),
    );
    if let Some(cx) = original.and_then(telemetry::record_context) {
        use opentelemetry::trace::TraceContextExt as _;
        span.add_link(cx.span().span_context().clone());
    }
    span
}

impl Store {
    /// Replays the letters `request` selects (see the module documentation). `endpoints`
    /// is the live `endpoints` table (synced here), `sealer` the master key's.
    pub async fn replay(
        &self,
        request: &ReplayRequest,
        endpoints: &Table<Endpoint>,
        sealer: &Sealer,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ReplaySummary, OpsError> {
        let registry = self.registry.clone();
        let filter = request.filter.clone();
        // The letters, and the trace context each was written with (by letter id).
        let (letters, traces) = scan(
            &self.settings,
            &self.topics.dead_letter,
            request.filter.endpoint_id.as_deref(),
            Missing::Error,
            (Vec::new(), HashMap::new()),
            move |(letters, traces): &mut (Vec<DeadLetter>, HashMap<String, Vec<u8>>), r| {
                if let Some(letter) = r
                    .payload
                    .and_then(|p| registry.decode::<DeadLetter>(p).ok())
                    .filter(|l| filter.matches(l))
                {
                    if let Some(traceparent) = r.traceparent {
                        traces.insert(letter.id.clone(), traceparent.to_vec());
                    }
                    letters.push(letter);
                }
            },
        )
        .await?;
        // Fence any replay still open before reading the marks (see the module documentation).
        let producer = if request.dry_run {
            None
        } else {
            Some(self.transactional_producer().await?)
        };
        let marks: HashSet<String> = self.marks().await?.into_keys().collect();
        endpoints.sync().await?;
        let lookup = |id: &str| {
            endpoints.get(id).map(|mut e| {
                service_kit::open_endpoint_secrets(sealer, &mut e)
                    .map(|()| e)
                    .map_err(|_| ())
            })
        };
        let (summary, writes) = plan(
            letters,
            request,
            &marks,
            lookup,
            sealer,
            OffsetDateTime::now_utc(),
        );
        let Some(producer) = producer else {
            return Ok(summary);
        };
        if writes.marks.is_empty() {
            return Ok(summary);
        }
        progress(Progress::Writing(writes.deliveries.len()));
        match self.write(&producer, &writes, &traces, progress).await {
            Ok(()) => {
                tracing::info!(requeued = summary.requeued, duplicates = summary.duplicates, requested_by = %request.requested_by, "dead letters replayed");
                Ok(summary)
            }
            Err(e) => {
                // Fenced by another replay, the producer failed for good and purged what
                // it held: whatever error surfaced first, the cause is the conflict.
                let fenced = producer
                    .client()
                    .fatal_error()
                    .is_some_and(|(code, _)| is_fenced(code));
                let abort = producer.clone();
                let _ = tokio::task::spawn_blocking(move || abort.abort_transaction(CALL_TIMEOUT))
                    .await;
                Err(match e {
                    _ if fenced => OpsError::Conflict,
                    OpsError::Kafka(k) => OpsError::NotCommitted(k),
                    other => other,
                })
            }
        }
    }

    async fn transactional_producer(&self) -> Result<FutureProducer, OpsError> {
        let spec = TopicSpec {
            name: self.topics.dead_letter_replays.clone(),
            compacted: true,
            retention: None,
        };
        kafka_io::ensure_topics(&self.settings, &[spec]).await?;
        let mut config = kafka_io::producer_config(&self.settings, "hookline-dead-letter-replay");
        config
            .set(
                "transactional.id",
                format!("{}hookline-dead-letter-replay", self.settings.topic_prefix),
            )
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT)
            .set("message.timeout.ms", TRANSACTION_TIMEOUT);
        let producer: FutureProducer = config.create()?;
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(CALL_TIMEOUT))
            .await
            .map_err(|_| OpsError::Kafka(KafkaError::Canceled))?
            .map_err(conflict)?;
        Ok(producer)
    }

    /// Writes the deliveries and marks in one transaction and commits it.
    /// A replayed delivery starts a trace of its own, linked to the one its dead letter
    /// was written in (`traces`, by letter id): its record carries the new context.
    async fn write(
        &self,
        producer: &FutureProducer,
        writes: &Writes,
        traces: &HashMap<String, Vec<u8>>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(), OpsError> {
        producer.begin_transaction().map_err(conflict)?;
        type Out<'w> = (&'w str, &'w str, Vec<u8>, bool, Option<OwnedHeaders>);
        let mut records: Vec<Out<'_>> =
            Vec::with_capacity(writes.deliveries.len() + writes.marks.len());
        for d in &writes.deliveries {
            let original = d
                .replay_of
                .as_ref()
                .and_then(|id| traces.get(id))
                .map(|t| vec![(telemetry::TRACEPARENT.to_owned(), t.clone())]);
            let span = replay_span(d, original.as_deref());
            records.push((
                &self.topics.rendered_deliveries,
                &d.endpoint_id,
                self.registry.encode(d)?,
                true,
                telemetry::span_kafka_headers(&span),
            ));
        }
        for m in &writes.marks {
            records.push((
                &self.topics.dead_letter_replays,
                &m.dead_letter_id,
                self.registry.encode(m)?,
                false,
                None,
            ));
        }
        let mut pending = std::collections::VecDeque::new();
        for (topic, key, bytes, is_delivery, headers) in &records {
            loop {
                let mut record = FutureRecord::to(topic).key(*key).payload(bytes);
                if let Some(h) = headers {
                    record = record.headers(h.clone());
                }
                match producer.send_result(record) {
                    Ok(ack) => {
                        pending.push_back((ack, *is_delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // Room comes back as earlier records are acknowledged.
                        let Some((ack, is_delivery)) = pending.pop_front() else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        acknowledged(ack.await, is_delivery, progress)?;
                    }
                    Err((e, _)) => return Err(conflict(e)),
                }
            }
        }
        while let Some((ack, is_delivery)) = pending.pop_front() {
            acknowledged(ack.await, is_delivery, progress)?;
        }
        progress(Progress::Committing);
        let mut tries = 0;
        loop {
            let commit = producer.clone();
            let result =
                tokio::task::spawn_blocking(move || commit.commit_transaction(CALL_TIMEOUT))
                    .await
                    .map_err(|_| OpsError::Kafka(KafkaError::Canceled))?;
            match result {
                Ok(()) => return Ok(()),
                // A commit that timed out may be asked again: it completes the same one.
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 3 => tries += 1,
                Err(e) => return Err(conflict(e)),
            }
        }
    }
}

fn acknowledged<E>(
    ack: Result<OwnedDeliveryResult, E>,
    is_delivery: bool,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), OpsError> {
    match ack {
        Ok(Ok(_)) => {
            if is_delivery {
                progress(Progress::Written);
            }
            Ok(())
        }
        Ok(Err((e, _))) => Err(conflict(e)),
        Err(_) => Err(OpsError::Kafka(KafkaError::Canceled)),
    }
}

/// A Kafka error, as [`OpsError::Conflict`] when another replay fenced this one.
fn conflict(e: KafkaError) -> OpsError {
    let code = match &e {
        KafkaError::Transaction(r) => Some(r.code()),
        other => other.rdkafka_error_code(),
    };
    if code.is_some_and(is_fenced) {
        OpsError::Conflict
    } else {
        OpsError::Kafka(e)
    }
}

fn is_fenced(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

#[cfg(test)]
mod tests;
