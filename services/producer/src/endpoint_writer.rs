//! The one writer of `endpoints`: every change to an endpoint, the API's and those
//! other services ask for on `endpoint-requests`, is a compare-and-set on the
//! endpoint's version, serialised across producer replicas by Kafka itself.
//!
//! Every replica writes with one transactional id (`<prefix>hookline-endpoints`). A
//! replica that initialises it fences the one that held it, and the broker completes
//! the fenced one's open transaction before it answers. So a write (begin, sync the
//! table, decide from the endpoint as it is, produce, commit) either commits with no
//! other write committed since its sync, or fails and is made again from a fresh read,
//! where `If-Match` is checked anew. Endpoint writes are rare (an operator's, an
//! endpoint disabled): a replica initialises again only after another one wrote.

use std::time::Duration;

use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use kafka_io::KafkaSettings;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use wire::Endpoint;

use crate::AppState;
use crate::error::ApiError;

/// Bound on one transactional call (init, commit, abort).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a replica that died mid-write holds back readers of `endpoints`.
const TRANSACTION_TIMEOUT_MS: &str = "10000";
/// Writes made again after a conflict or a transient failure, before a 503.
const ATTEMPTS: usize = 8;

/// What a change makes of the endpoint as it is now.
pub(crate) enum Change {
    /// Write this record; its version is set to the current one plus one.
    Put(Box<Endpoint>),
    /// Delete it: a tombstone.
    Delete,
    /// Write nothing.
    Keep,
}

/// What a change did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// This record was written.
    Put(Box<Endpoint>),
    /// The endpoint was deleted.
    Deleted,
    /// Nothing was written.
    Kept,
}

/// A record written in the same transaction as the change (and only with it).
pub(crate) struct Also {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Why an attempt did not commit.
enum Failed {
    /// `decide` refused (404, 412, 400): answered as it is.
    Refused(ApiError),
    /// Kafka failed, or another replica wrote first: made again.
    Kafka(KafkaError),
}

/// Serialises endpoint writes in this process and, through its transactional id,
/// across replicas.
pub(crate) struct EndpointWriter {
    config: ClientConfig,
    producer: tokio::sync::Mutex<Option<FutureProducer>>,
}

impl EndpointWriter {
    /// A writer for `settings`' cluster; it connects at the first write.
    pub(crate) fn new(settings: &KafkaSettings) -> Self {
        let mut config = kafka_io::producer_config(settings, "hookline-producer-endpoints");
        config
            .set(
                "transactional.id",
                format!("{}hookline-endpoints", settings.topic_prefix),
            )
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
            .set("message.timeout.ms", TRANSACTION_TIMEOUT_MS);
        EndpointWriter {
            config,
            producer: tokio::sync::Mutex::new(None),
        }
    }

    /// Changes endpoint `id` as `decide` says from its current record (`None`: absent
    /// or deleted), with `also` in the same transaction when something is written.
    /// `decide` may run more than once: again from a fresh read after a conflict.
    pub(crate) async fn change(
        &self,
        state: &AppState,
        id: &str,
        mut decide: impl FnMut(Option<Endpoint>) -> Result<Change, ApiError>,
        also: Option<&Also>,
    ) -> Result<Outcome, ApiError> {
        let mut slot = self.producer.lock().await;
        for attempt in 1..=ATTEMPTS {
            if state.shutdown.is_cancelled() {
                break;
            }
            let producer = match slot.as_ref() {
                Some(p) => p.clone(),
                None => match self.init().await {
                    Ok(p) => {
                        *slot = Some(p.clone());
                        p
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "cannot start the endpoints writer");
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                },
            };
            match write(&producer, state, id, &mut decide, also).await {
                Ok(Outcome::Kept) => {
                    abort(&producer).await;
                    return Ok(Outcome::Kept);
                }
                Ok(written) => return Ok(written),
                Err(Failed::Refused(e)) => {
                    abort(&producer).await;
                    return Err(e);
                }
                Err(Failed::Kafka(e)) => {
                    // Fenced (another replica wrote) or failed for good: a new producer
                    // fences the other in turn. Anything else: abort and go again.
                    if producer.client().fatal_error().is_some() {
                        *slot = None;
                    } else {
                        abort(&producer).await;
                    }
                    tracing::info!(endpoint_id = id, error = %e, attempt, "endpoint write not committed; reading it again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(ApiError::unavailable_because(
            "HL-KAFKA-UNAVAILABLE",
            "the endpoint change was not committed; retry",
        ))
    }

    async fn init(&self) -> Result<FutureProducer, KafkaError> {
        let producer: FutureProducer = self.config.create()?;
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(CALL_TIMEOUT))
            .await
            .map_err(|_| KafkaError::Canceled)??;
        Ok(producer)
    }
}

/// One attempt: begin, read, decide, produce, commit.
async fn write(
    producer: &FutureProducer,
    state: &AppState,
    id: &str,
    decide: &mut impl FnMut(Option<Endpoint>) -> Result<Change, ApiError>,
    also: Option<&Also>,
) -> Result<Outcome, Failed> {
    producer.begin_transaction().map_err(Failed::Kafka)?;
    sync(state).await.map_err(Failed::Refused)?;
    let current = state.endpoints.get(id);
    let version = current.as_ref().map_or(0, |e| e.version);
    let record = match decide(current).map_err(Failed::Refused)? {
        Change::Keep => return Ok(Outcome::Kept),
        Change::Put(mut endpoint) => {
            endpoint.version = version + 1;
            Some(*endpoint)
        }
        Change::Delete => None,
    };
    let payload = match &record {
        Some(endpoint) => Some(state.registry.encode(endpoint).map_err(|e| {
            tracing::error!(code = e.code(), "cannot encode an endpoint");
            Failed::Refused(ApiError::internal(e.code()))
        })?),
        None => None,
    };
    let mut written = FutureRecord::to(&state.topics.endpoints).key(id);
    if let Some(p) = &payload {
        written = written.payload(p.as_slice());
    }
    let ack = producer
        .send_result(written)
        .map_err(|(e, _)| Failed::Kafka(e))?;
    let also_ack = match also {
        Some(a) => Some(
            producer
                .send_result(FutureRecord::to(&a.topic).key(&a.key).payload(&a.payload))
                .map_err(|(e, _)| Failed::Kafka(e))?,
        ),
        None => None,
    };
    let delivery = match ack.await {
        Ok(Ok(d)) => d,
        Ok(Err((e, _))) => return Err(Failed::Kafka(e)),
        Err(_) => return Err(Failed::Kafka(KafkaError::Canceled)),
    };
    if let Some(ack) = also_ack {
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(Failed::Kafka(e)),
            Err(_) => return Err(Failed::Kafka(KafkaError::Canceled)),
        }
    }
    commit(producer).await.map_err(Failed::Kafka)?;
    state
        .endpoints
        .apply(id, delivery.partition, delivery.offset, record.clone());
    Ok(record.map_or(Outcome::Deleted, |e| Outcome::Put(Box::new(e))))
}

/// Commits; a commit that timed out goes on in the background, and then only the same
/// call may follow (librdkafka's contract), so it is made again while retriable.
async fn commit(producer: &FutureProducer) -> Result<(), KafkaError> {
    for _ in 0..3 {
        let p = producer.clone();
        let result = tokio::task::spawn_blocking(move || p.commit_transaction(CALL_TIMEOUT))
            .await
            .map_err(|_| KafkaError::Canceled)?;
        match result {
            Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
            other => return other,
        }
    }
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.commit_transaction(CALL_TIMEOUT))
        .await
        .map_err(|_| KafkaError::Canceled)?
}

/// Aborts the open transaction, if any; a failure leaves it to the broker's timeout
/// or to the next writer's initialisation.
async fn abort(producer: &FutureProducer) {
    let p = producer.clone();
    let _ = tokio::task::spawn_blocking(move || p.abort_transaction(CALL_TIMEOUT)).await;
}

/// 100 ms doubling per attempt, jittered down by up to half, so two replicas that
/// fenced each other do not try again in step.
fn backoff(attempt: usize) -> Duration {
    let full = 50u64 << attempt.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_millis(full - nanos % (full / 2))
}

/// An `If-Match` precondition: the versions (ETags) a caller last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// No `If-Match`: the change applies to whatever the endpoint is now.
    Unconditional,
    /// `If-Match: *`: the endpoint exists.
    Exists,
    /// The endpoint still has one of these versions.
    Versions(Vec<i64>),
}

impl Precondition {
    /// From a request's `If-Match` header: `*`, or entity tags as the `ETag` header
    /// gives them (`"3"`; a bare `3` is taken too). A weak tag never matches, as
    /// RFC 9110 asks of `If-Match`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut versions = Vec::new();
        let mut any = false;
        for value in headers.get_all(IF_MATCH) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::invalid("If-Match", "must be visible ASCII"))?;
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    any = true;
                } else if tag.starts_with("W/") {
                    versions.push(-1);
                } else {
                    let bare = tag
                        .strip_prefix('"')
                        .and_then(|t| t.strip_suffix('"'))
                        .unwrap_or(tag);
                    let version = bare.parse::<i64>().map_err(|_| {
                        ApiError::invalid(
                            "If-Match",
                            "must be * or entity tags as the ETag header gives them (\"3\")",
                        )
                    })?;
                    versions.push(version);
                }
            }
        }
        Ok(match (any, versions.is_empty()) {
            (true, _) => Precondition::Exists,
            (false, true) => Precondition::Unconditional,
            (false, false) => Precondition::Versions(versions),
        })
    }

    /// 412 unless `endpoint` satisfies it.
    pub(crate) fn check(&self, endpoint: &Endpoint) -> Result<(), ApiError> {
        match self {
            Precondition::Versions(v) if !v.contains(&endpoint.version) => {
                Err(ApiError::precondition_failed())
            }
            _ => Ok(()),
        }
    }
}

/// The `ETag` of an endpoint: its version, quoted.
pub(crate) fn etag(endpoint: &Endpoint) -> String {
    format!("\"{}\"", endpoint.version)
}

/// `response` with the endpoint's `ETag`.
pub(crate) fn with_etag(mut response: Response, endpoint: &Endpoint) -> Response {
    if let Ok(value) = HeaderValue::from_str(&etag(endpoint)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// Brings the `endpoints` table up to date, so a read sees every acknowledged write.
pub(crate) async fn sync(state: &AppState) -> Result<(), ApiError> {
    state
        .endpoints
        .sync()
        .await
        .map_err(|_| ApiError::unavailable("HL-KAFKA-UNAVAILABLE"))
}

/// The endpoint `id` if it is of `kind`; 404 naming `what` otherwise, so each route
/// sees only its own kind of endpoint.
pub(crate) async fn find_kind(
    state: &AppState,
    id: &str,
    kind: &str,
    what: &str,
) -> Result<Endpoint, ApiError> {
    sync(state).await?;
    state
        .endpoints
        .get(id)
        .filter(|e| e.kind == kind)
        .ok_or_else(|| ApiError::not_found(what))
}

/// Writes a new endpoint (its id is new): version 1.
pub(crate) async fn create(state: &AppState, endpoint: Endpoint) -> Result<Endpoint, ApiError> {
    let id = endpoint.id.clone();
    let outcome = state
        .endpoint_writer
        .change(
            state,
            &id,
            |current| match current {
                Some(_) => Err(ApiError::conflict(
                    "HL-API-CONFLICT",
                    "an endpoint with this id exists",
                )),
                None => Ok(Change::Put(Box::new(endpoint.clone()))),
            },
            None,
        )
        .await?;
    written(outcome, "created")
}

/// Changes endpoint `id` of `kind` with `modify`, if it satisfies `precondition`;
/// `modify` runs on the endpoint as it is when the change is committed.
pub(crate) async fn update(
    state: &AppState,
    (id, kind, what): (&str, &str, &str),
    precondition: &Precondition,
    mut modify: impl FnMut(&mut Endpoint) -> Result<(), ApiError>,
) -> Result<Endpoint, ApiError> {
    let outcome = state
        .endpoint_writer
        .change(
            state,
            id,
            |current| {
                let mut endpoint = current
                    .filter(|e| e.kind == kind)
                    .ok_or_else(|| ApiError::not_found(what))?;
                precondition.check(&endpoint)?;
                modify(&mut endpoint)?;
                endpoint.updated_at = wire::now_rfc3339();
                Ok(Change::Put(Box::new(endpoint)))
            },
            None,
        )
        .await?;
    written(outcome, "updated")
}

/// Deletes endpoint `id` of `kind` (a tombstone) if it satisfies `precondition`;
/// returns it as it was.
pub(crate) async fn delete(
    state: &AppState,
    (id, kind, what): (&str, &str, &str),
    precondition: &Precondition,
) -> Result<Endpoint, ApiError> {
    let mut deleted = None;
    let outcome = state
        .endpoint_writer
        .change(
            state,
            id,
            |current| {
                let endpoint = current
                    .filter(|e| e.kind == kind)
                    .ok_or_else(|| ApiError::not_found(what))?;
                precondition.check(&endpoint)?;
                deleted = Some(endpoint);
                Ok(Change::Delete)
            },
            None,
        )
        .await?;
    match (outcome, deleted) {
        (Outcome::Deleted, Some(endpoint)) => {
            tracing::info!(endpoint_id = %endpoint.id, kind = %endpoint.kind, "endpoint deleted");
            Ok(endpoint)
        }
        _ => Err(ApiError::internal("HL-API-INTERNAL")),
    }
}

fn written(outcome: Outcome, what: &str) -> Result<Endpoint, ApiError> {
    match outcome {
        Outcome::Put(endpoint) => {
            tracing::info!(endpoint_id = %endpoint.id, kind = %endpoint.kind, vendor = %endpoint.vendor, version = endpoint.version, "endpoint {what}");
            Ok(*endpoint)
        }
        Outcome::Deleted | Outcome::Kept => Err(ApiError::internal("HL-API-INTERNAL")),
    }
}
