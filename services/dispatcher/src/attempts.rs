//! A delivery's attempts: the circuit, the endpoint's turn, the attempt and what its
//! outcome calls for; disabling an endpoint that failed for too long.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_io::{Outcome, Record};
use service_kit::schedule::RetrySchedule;
use service_kit::telemetry;
use tracing::Instrument;
use wire::{Attempt, RenderedDelivery};

use crate::keys::{KEY_RETRY, KeyWait};
use crate::limits::{Admission, Disabled, EndpointState, Pace};
use crate::retry::{self, AttemptOutcome, Next, Policy, Route};
use crate::{
    Dispatcher, Halt, Requeue, deliver, limits, lock, parse_time, summary, trace, unix_ms,
};

impl Dispatcher {
    /// Attempts the delivery until it is delivered, re-queued to a retry tier or
    /// dead-lettered, and makes that outcome durable.
    pub(crate) async fn deliver(
        &self,
        record: &Record,
        mut delivery: RenderedDelivery,
    ) -> Result<Outcome, Halt> {
        let scheme =
            signing::Scheme::parse(&delivery.signing_scheme).unwrap_or(signing::Scheme::None);
        let policy = self.policy(&delivery);
        let endpoint = self.endpoints.get(
            &delivery.endpoint_id,
            delivery.max_in_flight,
            delivery.max_rps,
            &delivery.rendered_at,
        );
        // After a restart the circuit starts closed, but a retried delivery knows since
        // when its endpoint has been down (its attempts were all outages).
        let outages = delivery
            .attempts
            .iter()
            .all(|a| a.status.is_none_or(|s| s == 408 || (500..600).contains(&s)));
        if outages
            && let Some(first) = delivery
                .attempts
                .first()
                .and_then(|a| parse_time(&a.started_at))
        {
            lock(&endpoint.circuit).failing_at_least_since(first);
        }
        loop {
            if let Some(code) = Box::pin(self.disabled(&endpoint, &delivery)).await {
                return Ok(Box::pin(self.dead_letter(
                    record,
                    delivery,
                    code,
                    "the endpoint is disabled after failing for too long".to_owned(),
                ))
                .await);
            }
            // The circuit first: while it is open nothing waits for a turn.
            let admission =
                lock(&endpoint.circuit).admit(self.endpoints.circuit_settings(), Instant::now());
            let mut probe = match admission {
                Admission::Go => false,
                Admission::Probe => true,
                Admission::Wait(until) => {
                    let wait = until.saturating_duration_since(Instant::now());
                    return Ok(Box::pin(self.defer(record, delivery, wait)).await);
                }
            };
            let number = i32::try_from(delivery.attempts.len() + 1).unwrap_or(i32::MAX);
            // The signing key before the turn: waiting for the `keys` table is not the
            // endpoint's time, and an attempt's age while it holds a turn is its pace.
            let rsa = if scheme == signing::Scheme::PrequelRsa {
                // Every attempt is signed afresh, with the key current when it starts
                // (a rotation applies to the next attempt): a retry hours later passes
                // a receiver's window.
                let since = if number == 1 {
                    record.received_at
                } else {
                    Instant::now()
                };
                match Box::pin(self.signing_key(since)).await {
                    KeyWait::Key(key) => Some(key),
                    KeyWait::Shutdown => return Err(Halt::Shutdown),
                    // No key that opens (none written yet, or sealed under another
                    // master key): the delivery waits in a retry tier, not in memory,
                    // where it would hold a slot that other endpoints' deliveries need.
                    KeyWait::Unavailable => {
                        if probe {
                            lock(&endpoint.circuit).release_probe(Instant::now());
                        }
                        return Ok(Box::pin(self.defer(record, delivery, KEY_RETRY)).await);
                    }
                }
            } else {
                None
            };
            // Then the endpoint's turn; a slow endpoint's delivery, or one past its rate,
            // is deferred, not attempted, and keeps its attempts.
            let turn = match endpoint.turn().await {
                Ok(turn) => turn,
                Err(wait) => {
                    if probe {
                        lock(&endpoint.circuit).release_probe(Instant::now());
                    }
                    return Ok(Box::pin(self.defer(record, delivery, wait)).await);
                }
            };
            // Revoked while it waited (a turn can wait seconds, pacing up to one): the
            // partition's new owner sends it, under its own limiter. Sending here as
            // well would put two replicas' paced sends on the endpoint at once.
            if !record.still_owned() {
                drop(turn);
                if probe {
                    lock(&endpoint.circuit).release_probe(Instant::now());
                }
                return Ok(Outcome::Abandoned);
            }
            // The circuit may have opened while it waited: asked again before the attempt.
            if !probe {
                let now = Instant::now();
                let again = lock(&endpoint.circuit).admit(self.endpoints.circuit_settings(), now);
                match again {
                    Admission::Go => {}
                    Admission::Probe => probe = true,
                    Admission::Wait(until) => {
                        drop(turn);
                        let wait = until.saturating_duration_since(now);
                        return Ok(Box::pin(self.defer(record, delivery, wait)).await);
                    }
                }
            }
            // Opened only for its attempt: in a fan-out thousands of deliveries wait
            // for their turns, and none of them holds an opened copy (its secrets in
            // the clear) meanwhile.
            let opened = match deliver::Opened::open(&self.sealer, &delivery) {
                Ok(opened) => opened,
                Err(code) => {
                    drop(turn);
                    if probe {
                        lock(&endpoint.circuit).release_probe(Instant::now());
                    }
                    // No attempt can be made, and a retry would not open it either.
                    let reason = "the delivery's sealed parts do not open with this \
                                  HOOKLINE_MASTER_KEY";
                    return Ok(Box::pin(self.dead_letter(
                        record,
                        delivery,
                        code,
                        reason.to_owned(),
                    ))
                    .await);
                }
            };
            let span = trace::attempt_span(&record.headers, &delivery, number);
            let sent = Instant::now();
            let attempted = Box::pin(self.attempt(&opened, scheme, rsa, number))
                .instrument(span.clone())
                .await;
            drop(opened);
            let (outcome, mut attempt) = attempted?;
            trace::attempt_outcome(&span, &outcome);
            let seconds = f64::from(u32::try_from(attempt.duration_ms).unwrap_or(u32::MAX));
            self.metrics.attempt(&outcome, seconds / 1000.0);
            // Only an endpoint that does not answer in time, or cannot be reached, gets
            // fewer requests at once: statuses (5xx, 429) are the circuit breaker's and
            // the retry schedule's business, and halving on them would leave a flaky
            // but fast endpoint one request at a time.
            let pace = match outcome {
                AttemptOutcome::Timeout | AttemptOutcome::Connect => Pace::Slow,
                _ => Pace::Answered,
            };
            endpoint.observe(
                Duration::from_millis(u64::try_from(attempt.duration_ms).unwrap_or(0)),
                pace,
            );
            drop(turn);
            // Outages count against the circuit, answers close it; a probe that got
            // neither (a 4xx) leaves it open.
            let failed = matches!(
                outcome,
                AttemptOutcome::Timeout
                    | AttemptOutcome::Connect
                    | AttemptOutcome::Status {
                        code: 408 | 500..=599,
                        ..
                    }
            );
            let answered = matches!(
                outcome,
                AttemptOutcome::Status {
                    code: 200..=299,
                    ..
                }
            );
            if failed || answered || probe {
                let mut circuit = lock(&endpoint.circuit);
                let was_open = circuit.is_open();
                circuit.record(
                    self.endpoints.circuit_settings(),
                    !answered,
                    sent,
                    Instant::now(),
                    SystemTime::now(),
                );
                if circuit.is_open() != was_open {
                    self.metrics.circuit(!was_open);
                    if was_open {
                        tracing::info!(endpoint_id = %delivery.endpoint_id, "circuit closed");
                    } else {
                        tracing::info!(endpoint_id = %delivery.endpoint_id, consecutive_failures = circuit.consecutive_failures(), "circuit opened: deliveries deferred until a probe succeeds");
                    }
                }
            }
            // A receiver may echo what it got (an API key, a trace): every kept
            // response is sealed before it leaves memory.
            let context = signing::delivery_context(
                &delivery.delivery_id,
                &format!("response/{number}"),
                &delivery.method,
                &delivery.url,
            );
            attempt.response = attempt
                .response
                .map(|r| self.sealer.seal(r.as_bytes(), &context));
            delivery.attempts.push(attempt.clone());
            let jitter = rand::random::<f64>().mul_add(2.0, -1.0);
            match retry::next(&policy, delivery.attempts.len(), &outcome, jitter) {
                Next::Delivered => {
                    self.log(&delivery, &attempt, "delivered", None, None);
                    // From the event's time (ingest) when the record carries it, else
                    // from rendering (sensitive-trace requests, replays).
                    let since = telemetry::event_time_ms(&record.headers)
                        .and_then(|ms| u64::try_from(ms).ok())
                        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                        .or_else(|| parse_time(&delivery.rendered_at));
                    if let Some(since) = since {
                        let age = SystemTime::now().duration_since(since).unwrap_or_default();
                        self.metrics.delivered(age.as_secs_f64());
                    }
                    return Ok(Outcome::Done);
                }
                Next::DeadLetter(code) => {
                    self.log(&delivery, &attempt, "dead_lettered", Some(code), None);
                    let what = if code == "HL-DELIVERY-EXHAUSTED" || code == "HL-DELIVERY-FAILED" {
                        "retries exhausted"
                    } else {
                        "final outcome"
                    };
                    let reason = summary(what, &delivery.attempts);
                    return Ok(Box::pin(self.dead_letter(record, delivery, code, reason)).await);
                }
                Next::Retry { wait } => {
                    let due = SystemTime::now() + wait;
                    self.log(&delivery, &attempt, "retrying", None, Some(due));
                    match retry::route(wait, &self.tiers) {
                        Route::Now => {}
                        Route::Sleep(wait) => self.sleep(wait).await?,
                        Route::Tier(tier) => {
                            delivery.due_at_ms = Some(unix_ms(due));
                            return Ok(Box::pin(self.requeue(
                                record,
                                delivery,
                                tier,
                                Requeue::Retry,
                            ))
                            .await);
                        }
                    }
                }
            }
        }
    }

    /// The delivery's retry policy: its endpoint's schedule, or this dispatcher's.
    pub(crate) fn policy(&self, delivery: &RenderedDelivery) -> Policy {
        let schedule = match delivery.retry_schedule.as_deref().map(RetrySchedule::parse) {
            Some(Ok(schedule)) => schedule,
            Some(Err(_)) => {
                tracing::warn!(endpoint_id = %delivery.endpoint_id, code = "HL-RETRY-SCHEDULE", "the endpoint's retry schedule does not parse; using HOOKLINE_RETRY_SCHEDULE");
                self.schedule.clone()
            }
            None => self.schedule.clone(),
        };
        Policy {
            schedule: schedule.delays().to_vec(),
            single_attempt: delivery.single_attempt,
            throttle_min: self.config.retry_throttle_min,
            retry_after_max: self.config.retry_after_max,
        }
    }

    /// One signed attempt.
    pub(crate) async fn attempt(
        &self,
        opened: &deliver::Opened<'_>,
        scheme: signing::Scheme,
        rsa: Option<Arc<signing::RsaKey>>,
        number: i32,
    ) -> Result<(AttemptOutcome, Attempt), Halt> {
        let delivery = opened.delivery;
        if self.shutdown.is_cancelled() {
            return Err(Halt::Shutdown);
        }
        let now = time::OffsetDateTime::now_utc();
        let signed = match rsa {
            Some(key) if scheme == signing::Scheme::PrequelRsa => {
                self.rsa_signer.headers(key, opened.body(), now).await
            }
            _ => {
                let request = signing::Request {
                    method: &delivery.method,
                    url: &delivery.url,
                    body: opened.body(),
                    id: &delivery.delivery_id,
                };
                let keys = signing::Keys {
                    rsa: None,
                    secrets: opened.signing_secrets(),
                };
                signing::sign(scheme, request, keys, now)
            }
        };
        let signature = match signed {
            Ok(headers) => headers,
            Err(e) => {
                // Cannot sign: final, without a request.
                let attempt = Attempt {
                    attempt: number,
                    started_at: wire::now_rfc3339(),
                    duration_ms: 0,
                    status: None,
                    error_code: Some(e.code().to_owned()),
                    response: None,
                };
                return Ok((AttemptOutcome::Invalid, attempt));
            }
        };
        let client = if delivery.insecure_tls {
            &self.insecure_client
        } else {
            &self.client
        };
        let timeout = delivery
            .timeout_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .filter(|ms| *ms > 0)
            .map_or(self.config.delivery_timeout, Duration::from_millis);
        let url = self.urls.parse(&delivery.url);
        Ok(deliver::attempt(
            client,
            &self.guard,
            opened,
            url,
            &signature,
            number,
            timeout,
        )
        .await)
    }

    /// Whether deliveries to this endpoint stop: it failed for longer than
    /// `HOOKLINE_ENDPOINT_DISABLE_AFTER`. The first time, the producer is asked to
    /// mark it inactive and emit `endpoint.disabled`; once it is enabled again (through
    /// the API), its circuit starts afresh.
    pub(crate) async fn disabled(
        &self,
        endpoint: &EndpointState,
        delivery: &RenderedDelivery,
    ) -> Option<&'static str> {
        if self.config.endpoint_disable_after.is_zero() {
            return None;
        }
        let state = lock(&endpoint.disabled).clone();
        match state {
            Some(Disabled::Writing) => return Some("HL-ENDPOINT-DISABLED"),
            Some(Disabled::Written(judged)) => {
                // Enabled again: a version newer than the one judged (a PATCH, or the
                // request outdated by one) says active.
                let enabled = self.endpoint_table.sync().await.is_ok()
                    && self
                        .endpoint_table
                        .get(&delivery.endpoint_id)
                        .is_some_and(|e| e.active && e.version > judged);
                if !enabled {
                    return Some("HL-ENDPOINT-DISABLED");
                }
                *lock(&endpoint.disabled) = None;
                *lock(&endpoint.circuit) = limits::Circuit::new(self.endpoints.circuit_settings());
                tracing::info!(endpoint_id = %delivery.endpoint_id, "endpoint enabled again");
                return None;
            }
            None => {}
        }
        let since = {
            let circuit = lock(&endpoint.circuit);
            // Only an endpoint this dispatcher saw fail (not only old attempts) is disabled.
            if circuit.consecutive_failures() < self.endpoints.circuit_settings().failures {
                return None;
            }
            circuit.failing_since()?
        };
        if SystemTime::now().duration_since(since).unwrap_or_default()
            < self.config.endpoint_disable_after
        {
            return None;
        }
        {
            let mut disabled = lock(&endpoint.disabled);
            if disabled.is_some() {
                return Some("HL-ENDPOINT-DISABLED");
            }
            *disabled = Some(Disabled::Writing);
        }
        let written = self.disable(&delivery.endpoint_id, since).await;
        *lock(&endpoint.disabled) = Some(Disabled::Written(written));
        Some("HL-ENDPOINT-DISABLED")
    }

    /// Asks the producer, the one writer of `endpoints`, to mark the endpoint inactive
    /// and emit `endpoint.disabled` (a record on `endpoint-requests` naming the version
    /// judged, so an operator's change made meanwhile wins); returns that version.
    pub(crate) async fn disable(&self, endpoint_id: &str, since: SystemTime) -> i64 {
        let since = time::OffsetDateTime::from(since)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        tracing::warn!(endpoint_id, failing_since = %since, code = "HL-ENDPOINT-DISABLED", "endpoint disabled; asking the producer to mark it inactive");
        // Judged on the endpoint as it is now, after a sync.
        let version = match self.endpoint_table.sync().await {
            Ok(()) => self.endpoint_table.get(endpoint_id).map(|e| e.version),
            Err(_) => None,
        };
        let Some(version) = version else {
            return -1;
        };
        let request = wire::EndpointRequest {
            endpoint_id: endpoint_id.to_owned(),
            action: "disable".to_owned(),
            version,
            reason: format!("failing since {since} without a success"),
            failing_since: Some(since),
            requested_at: wire::now_rfc3339(),
        };
        match self.registry.encode(&request) {
            Ok(bytes) => {
                if let Err(e) = kafka_io::send_durably(
                    &self.producer,
                    &self.topics.endpoint_requests,
                    endpoint_id.as_bytes(),
                    Some(&bytes),
                    None,
                    &self.shutdown,
                )
                .await
                {
                    tracing::error!(
                        endpoint_id,
                        code = e.code(),
                        "cannot ask for the endpoint to be disabled"
                    );
                }
            }
            Err(e) => tracing::error!(
                endpoint_id,
                code = e.code(),
                "cannot encode the disable request"
            ),
        }
        version
    }
}
