//! Where a delivery goes when it is not delivered now: a retry tier (deferred or
//! retried) or `dead-letter`; and the attempt log.

use std::time::{Duration, SystemTime};

use kafka_io::{Outcome, Record};
use rdkafka::producer::FutureRecord;
use service_kit::telemetry;
use wire::{Attempt, DeliveryAttempt, RenderedDelivery};

use crate::retry::{self, Route};
use crate::{Dispatcher, Requeue, unix_ms};

impl Dispatcher {
    /// Defers a delivery without an attempt (circuit open, endpoint busy): back to the
    /// tier its wait calls for, its attempts unchanged.
    pub(crate) async fn defer(
        &self,
        record: &Record,
        mut delivery: RenderedDelivery,
        wait: Duration,
    ) -> Outcome {
        let wait = wait.max(self.tiers[0]);
        delivery.due_at_ms = Some(unix_ms(SystemTime::now() + wait));
        tracing::debug!(delivery_id = %delivery.delivery_id, endpoint_id = %delivery.endpoint_id, wait = ?wait, "deferred");
        let tier = match retry::route(wait, &self.tiers) {
            Route::Tier(tier) => tier,
            Route::Now | Route::Sleep(_) => 0,
        };
        self.requeue(record, delivery, tier, Requeue::Defer).await
    }

    /// Writes the delivery to a retry tier; its offset may move once Kafka has it.
    pub(crate) async fn requeue(
        &self,
        record: &Record,
        delivery: RenderedDelivery,
        tier: usize,
        why: Requeue,
    ) -> Outcome {
        // Revoked meanwhile: the partition's new owner carries the delivery on, and a
        // second copy here would fork its retries.
        if !record.still_owned() {
            return Outcome::Abandoned;
        }
        let bytes = match self.registry.encode(&delivery) {
            Ok(bytes) => bytes,
            Err(e) => {
                return self
                    .dead_letter(
                        record,
                        delivery,
                        e.code(),
                        "the delivery cannot be encoded for a retry tier".to_owned(),
                    )
                    .await;
            }
        };
        // The delivery keeps its trace context through the tiers: attempt 1 and attempt
        // 3, hours apart, are in one trace.
        match kafka_io::send_durably(
            &self.producer,
            &self.topics.retry_tiers[tier],
            delivery.endpoint_id.as_bytes(),
            Some(&bytes),
            telemetry::carried(&record.headers).as_ref(),
            &self.shutdown,
        )
        .await
        {
            Ok(_) => {
                let tier = kafka_io::RETRY_TIERS[tier].0;
                match why {
                    Requeue::Retry => self.metrics.requeued(tier, true),
                    Requeue::Defer => self.metrics.requeued(tier, false),
                    Requeue::Onward => {}
                }
                Outcome::Done
            }
            Err(kafka_io::SendError::Cancelled) => Outcome::Abandoned,
            Err(e) => {
                let reason = format!("the retry tier refused the delivery ({})", e.code());
                self.dead_letter(record, delivery, e.code(), reason).await
            }
        }
    }

    pub(crate) async fn dead_letter(
        &self,
        record: &Record,
        mut delivery: RenderedDelivery,
        code: &str,
        reason: String,
    ) -> Outcome {
        if !record.still_owned() {
            return Outcome::Abandoned;
        }
        tracing::warn!(delivery_id = %delivery.delivery_id, endpoint_id = %delivery.endpoint_id, code, attempts = delivery.attempts.len(), "delivery failed; dead-lettered");
        let mut letter = self.dead_letters.letter(record, code, &reason);
        letter.event_id = Some(delivery.event_id.clone());
        letter.endpoint_id = Some(delivery.endpoint_id.clone());
        letter.delivery_id = Some(delivery.delivery_id.clone());
        letter.attempts = std::mem::take(&mut delivery.attempts);
        delivery.due_at_ms = None;
        letter.delivery = Some(delivery);
        self.dead_letters
            .write(
                &self.registry,
                letter,
                telemetry::carried(&record.headers).as_ref(),
                &self.shutdown,
            )
            .await
    }

    /// Records an attempt's outcome in the attempt log. Not waited for: the log is for
    /// people, and a record lost in a crash costs no delivery.
    pub(crate) fn log(
        &self,
        delivery: &RenderedDelivery,
        attempt: &Attempt,
        outcome: &str,
        reason_code: Option<&str>,
        next_at: Option<SystemTime>,
    ) {
        let entry = DeliveryAttempt {
            reason_code: reason_code.map(str::to_owned),
            next_attempt_at: next_at.and_then(|t| {
                time::OffsetDateTime::from(t)
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }),
            ..DeliveryAttempt::of(delivery, attempt, outcome)
        };
        let Ok(bytes) = self.registry.encode(&entry) else {
            return;
        };
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topics.delivery_attempts)
            .key(delivery.endpoint_id.as_bytes())
            .payload(&bytes);
        if let Err((e, _)) = self.producer.send_result(record) {
            tracing::debug!(error = %e, "attempt not logged");
        }
    }
}
