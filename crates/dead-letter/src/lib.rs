//! Dead letters, written so that nothing is lost: a record's offset may be stored only
//! once its dead letter is acknowledged, so [`DeadLetters::write`] answers
//! [`Outcome::Done`] only then. What Kafka refuses as too large is shrunk (raw payload
//! first, then the request body, then the request) and tried again; other failures are
//! retried until shutdown, when the record is handed back ([`Outcome::Abandoned`]).

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use kafka_io::{CancellationToken, Outcome, Record, SendError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry as Metrics;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureProducer;
use wire::{DeadLetter, Registry};

/// Appended to a letter's reason when its raw record was dropped to fit the topic.
pub const PAYLOAD_DROPPED: &str = " [raw record dropped: too large for the dead-letter topic]";
/// Appended to a letter's reason when its request body was dropped to fit the topic:
/// the request it keeps is no longer the one that was rendered, and is not replayed.
pub const BODY_DROPPED: &str = " [request body dropped: too large for the dead-letter topic]";
/// Appended to a letter's reason when its whole request was dropped to fit the topic.
pub const REQUEST_DROPPED: &str = " [request dropped: too large for the dead-letter topic]";

/// The code of a record whose handling panicked ([`DeadLetters::unless_panic`]).
pub const PANIC_CODE: &str = "HL-PANIC";

/// Writes dead letters of one stage to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    stage: &'static str,
    written: Family<Labels, Counter>,
}

/// `hookline_dead_letters_total` labels: the stage and hookline's stable `HL-` code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    stage: &'static str,
    code: String,
}

impl DeadLetters {
    /// Dead letters of `stage` (`renderer`, `dispatcher`) to `topic`.
    pub fn new(producer: FutureProducer, topic: String, stage: &'static str) -> Self {
        DeadLetters {
            producer,
            topic,
            stage,
            written: Family::default(),
        }
    }

    /// Counts the letters written, by stage and code, in `metrics`.
    pub fn register(&self, metrics: &mut Metrics) {
        metrics.register(
            "hookline_dead_letters",
            "Records written to the dead-letter topic, by stage and code",
            self.written.clone(),
        );
    }

    /// A dead letter for `record` with a stable `code` and a `reason` that must hold no
    /// secret or trace text. Callers fill in what else they know.
    pub fn letter(&self, record: &Record, code: &str, reason: &str) -> DeadLetter {
        DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            reason_code: code.to_owned(),
            reason: reason.to_owned(),
            failed_at: wire::now_rfc3339(),
            stage: self.stage.to_owned(),
            source_topic: record.topic.clone(),
            source_partition: record.partition,
            source_offset: record.offset,
            event_id: None,
            endpoint_id: None,
            delivery_id: None,
            delivery: None,
            payload: None,
            attempts: Vec::new(),
        }
    }

    /// Runs `work`, a service's handling of `record`. A panic inside it, in hookline's
    /// code or a dependency's (the template engine, Avro), becomes a dead letter coded
    /// [`PANIC_CODE`] that keeps the raw record, so the record's offset is stored like any
    /// other's. Otherwise the offset would stay pending, the partition's later records
    /// would never be committed, and after a restart the record would panic again. The
    /// panic's message may quote the record, so it is neither logged nor kept.
    ///
    /// Built from combinators rather than as an `async fn`, which would hold `work`
    /// twice (as its argument and as its awaited future) in every task.
    pub fn unless_panic<'a, Fut>(
        &'a self,
        registry: &'a Registry,
        record: &'a Record,
        headers: Option<&'a OwnedHeaders>,
        shutdown: &'a CancellationToken,
        work: Fut,
    ) -> impl Future<Output = Outcome> + 'a
    where
        Fut: Future<Output = Outcome> + 'a,
    {
        AssertUnwindSafe(work)
            .catch_unwind()
            .then(move |handled| match handled {
                Ok(outcome) => Either::Left(std::future::ready(outcome)),
                Err(_) => {
                    tracing::error!(
                        stage = self.stage,
                        partition = record.partition,
                        offset = record.offset,
                        code = PANIC_CODE,
                        "the record's handling panicked; dead-lettered"
                    );
                    let mut letter = self.letter(
                        record,
                        PANIC_CODE,
                        "handling the record panicked (the panic's message is not kept: it may quote the record)",
                    );
                    letter.payload = record.payload.clone();
                    Either::Right(self.write(registry, letter, headers, shutdown))
                }
            })
    }

    /// Writes `letter` and waits for Kafka's acknowledgement. `headers`: the failed
    /// record's trace context, so the dead letter stays in its trace.
    ///
    /// Boxed: a service's task per record embeds every future it may await, and this
    /// rare one (about 2 KB) would otherwise be allocated for every record in flight.
    pub fn write<'a>(
        &'a self,
        registry: &'a Registry,
        letter: DeadLetter,
        headers: Option<&'a OwnedHeaders>,
        shutdown: &'a CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(self.write_unboxed(registry, letter, headers, shutdown))
    }

    async fn write_unboxed(
        &self,
        registry: &Registry,
        mut letter: DeadLetter,
        headers: Option<&OwnedHeaders>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match registry.encode(&letter) {
                Ok(bytes) => {
                    let key = letter
                        .endpoint_id
                        .as_deref()
                        .unwrap_or(&letter.id)
                        .as_bytes()
                        .to_vec();
                    match kafka_io::send_durably(
                        &self.producer,
                        &self.topic,
                        &key,
                        Some(&bytes),
                        headers,
                        shutdown,
                    )
                    .await
                    {
                        Ok(_) => {
                            let labels = Labels {
                                stage: self.stage,
                                code: letter.reason_code,
                            };
                            self.written.get_or_create(&labels).inc();
                            return Outcome::Done;
                        }
                        Err(SendError::Cancelled) => return Outcome::Abandoned,
                        Err(e) => e.code(),
                    }
                }
                Err(e) => e.code(),
            };
            if shrink(&mut letter) {
                tracing::warn!(code = error, dead_letter = %letter.id, "dead letter refused; writing it smaller");
                continue;
            }
            tracing::error!(code = error, dead_letter = %letter.id, retry_in = ?backoff, "cannot write a dead letter; the record is held until it can be, operator action needed");
            tokio::select! {
                _ = shutdown.cancelled() => return Outcome::Abandoned,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// Drops the largest part still there; false when nothing is left to drop.
fn shrink(letter: &mut DeadLetter) -> bool {
    if letter.payload.take().is_some() {
        letter.reason.push_str(PAYLOAD_DROPPED);
        return true;
    }
    if let Some(delivery) = letter.delivery.as_mut()
        && !delivery.body.is_empty()
    {
        delivery.body.clear();
        letter.reason.push_str(BODY_DROPPED);
        return true;
    }
    if letter.delivery.take().is_some() {
        letter.reason.push_str(REQUEST_DROPPED);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter() -> DeadLetter {
        DeadLetter {
            id: "x".into(),
            reason_code: "HL-X".into(),
            reason: "r".into(),
            failed_at: String::new(),
            stage: "dispatcher".into(),
            source_topic: "t".into(),
            source_partition: 0,
            source_offset: 0,
            event_id: None,
            endpoint_id: None,
            delivery_id: None,
            delivery: Some(wire::RenderedDelivery {
                delivery_id: "d".into(),
                event_id: "e".into(),
                event_type: "transfer.error".into(),
                endpoint_id: "ep".into(),
                rendered_at: String::new(),
                method: "POST".into(),
                url: "https://x".into(),
                headers: vec![],
                sensitive_headers: vec![],
                body: vec![1; 10],
                ..wire::RenderedDelivery::default()
            }),
            payload: Some(vec![2; 10]),
            attempts: vec![],
        }
    }

    #[test]
    fn shrinking_drops_payload_then_body_then_request() {
        let mut l = letter();
        assert!(shrink(&mut l));
        assert!(l.payload.is_none() && l.delivery.as_ref().is_some_and(|d| !d.body.is_empty()));
        assert!(shrink(&mut l));
        assert!(
            l.delivery
                .as_ref()
                .is_some_and(|d| d.body.is_empty() && d.url == "https://x")
        );
        assert!(shrink(&mut l));
        assert!(l.delivery.is_none());
        assert!(!shrink(&mut l));
        assert!(l.reason.starts_with("r ["));
    }
}
