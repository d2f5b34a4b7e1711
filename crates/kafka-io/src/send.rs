//! Producing a record until Kafka has it: the effect an offset may follow.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, future_producer::Delivery};
use tokio_util::sync::CancellationToken;

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Kafka refuses this record for good (too large, topic gone, not authorised).
    #[error("kafka refused the record: {0}")]
    Refused(RDKafkaErrorCode),
    /// Shutdown was asked for before Kafka acknowledged the record.
    #[error("shutting down before the record was acknowledged")]
    Cancelled,
}

impl SendError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::Refused(RDKafkaErrorCode::MessageSizeTooLarge) => "HL-KAFKA-TOO-LARGE",
            SendError::Refused(_) => "HL-KAFKA-REFUSED",
            SendError::Cancelled => "HL-SHUTDOWN",
        }
    }
}

/// Produces one record (a tombstone when `payload` is `None`) and waits for Kafka's acknowledgement, retrying transient
/// failures (full queue, broker down past librdkafka's own retries) until it lands or
/// shutdown is asked for. Errors that no retry can fix are returned.
pub async fn send_durably(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: Option<&[u8]>,
    headers: Option<&OwnedHeaders>,
    shutdown: &CancellationToken,
) -> Result<Delivery, SendError> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        let error = match producer.send_result(record) {
            Ok(future) => match future.await {
                Ok(Ok(delivery)) => return Ok(delivery),
                Ok(Err((e, _))) => e,
                Err(_cancelled) => KafkaError::Canceled,
            },
            Err((e, _)) => e,
        };
        if let Some(code) = permanent(&error) {
            return Err(SendError::Refused(code));
        }
        if !matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
        ) {
            tracing::warn!(topic, error = %error, retry_in = ?backoff, "kafka send failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(SendError::Cancelled),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn permanent(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    let code = error.rdkafka_error_code()?;
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord
    )
    .then_some(code)
}
