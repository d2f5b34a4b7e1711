//! hookline-dispatcher: consumes `rendered-deliveries` and the retry tiers, sends
//! each request with a timeout, and moves what must wait to a retry tier, what is
//! final or exhausted to `dead-letter` with every attempt, and every attempt's outcome
//! to the attempt log.
//!
//! A retry is a record in a retry tier topic with its due time (never a sleep that
//! holds a partition): tier `i` hands a record over [`kafka_io::RETRY_TIERS`]`[i]`
//! after it was written, and a record not due by then goes back to the tier its
//! remaining wait calls for. Deliveries run concurrently (up to a bound) and every
//! endpoint has its own concurrency limit, rate limit and circuit breaker, so one
//! endpoint's failures never hold up another's deliveries; a record's offset is stored
//! once its outcome is durable (delivered, re-queued or dead-lettered), and never past
//! a record still in flight.

pub mod circuit;
pub mod deliver;
pub mod guard;
pub mod limits;
mod metrics;
pub mod retry;
pub mod rsa_signer;
mod trace;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dead_letter::DeadLetters;
use kafka_io::{ConsumeOptions, KafkaSettings, Outcome, Record, Topics};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use service_kit::schedule::RetrySchedule;
use service_kit::telemetry;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wire::{Attempt, DeliveryAttempt, Registry, RenderedDelivery};

use crate::limits::{Admission, CircuitSettings, Disabled, EndpointState, Endpoints, Pace};
use crate::retry::{AttemptOutcome, Next, Policy, Route};

/// The dispatcher's configuration (`HOOKLINE_*` variables, see the README).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Kafka connection and topic layout.
    #[serde(flatten)]
    pub kafka: KafkaSettings,
    /// Consumer group of the dispatchers (`HOOKLINE_DISPATCHER_GROUP`); empty means
    /// `<topic prefix>hookline-dispatcher`, so each pipeline on a cluster has its own
    /// group. It reads `rendered-deliveries` and every retry tier (endpoint affinity).
    pub dispatcher_group: String,
    /// Deliveries in flight at once, attempted or waiting for their endpoint's turn, read
    /// from `rendered-deliveries`; each retry tier reads a quarter as many
    /// (`HOOKLINE_DISPATCHER_MAX_IN_FLIGHT`).
    pub dispatcher_max_in_flight: usize,
    /// MiB of deliveries in flight at once, read from `rendered-deliveries`; each retry
    /// tier reads a quarter as many (`HOOKLINE_DISPATCHER_MAX_IN_FLIGHT_MIB`).
    pub dispatcher_max_in_flight_mib: usize,
    /// Default timeout of one HTTP attempt (`HOOKLINE_DELIVERY_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Delays between attempts (`HOOKLINE_RETRY_SCHEDULE`), e.g. `0s,5s,5m,30m,2h,5h,10h,10h`.
    pub retry_schedule: String,
    /// Least wait after a 429 or a timeout (`HOOKLINE_RETRY_THROTTLE_MIN`).
    #[serde(with = "humantime_serde")]
    pub retry_throttle_min: Duration,
    /// Longest `Retry-After` honoured (`HOOKLINE_RETRY_AFTER_MAX`).
    #[serde(with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// Deliveries in flight per endpoint unless it sets `max_in_flight`
    /// (`HOOKLINE_ENDPOINT_MAX_IN_FLIGHT`).
    pub endpoint_max_in_flight: usize,
    /// Consecutive failed attempts that open an endpoint's circuit (`HOOKLINE_CIRCUIT_FAILURES`).
    pub circuit_failures: u32,
    /// First open period of a circuit (`HOOKLINE_CIRCUIT_COOLDOWN`).
    #[serde(with = "humantime_serde")]
    pub circuit_cooldown: Duration,
    /// Longest open period (`HOOKLINE_CIRCUIT_MAX_COOLDOWN`).
    #[serde(with = "humantime_serde")]
    pub circuit_max_cooldown: Duration,
    /// An endpoint failing this long without a success is disabled
    /// (`HOOKLINE_ENDPOINT_DISABLE_AFTER`; `0s`: never).
    #[serde(with = "humantime_serde")]
    pub endpoint_disable_after: Duration,
    /// Bound on the shutdown drain (`HOOKLINE_SHUTDOWN_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Opens what deliveries carry sealed (`HOOKLINE_MASTER_KEY`).
    pub master_key: service_kit::Secret,
    /// Earlier master keys, comma-separated: they open what they sealed, never seal
    /// (`HOOKLINE_MASTER_KEYS_PREVIOUS`).
    pub master_keys_previous: service_kit::Secret,
    /// Non-public networks deliveries may reach anyway (`HOOKLINE_ALLOWED_NETWORKS`,
    /// comma-separated, e.g. `127.0.0.0/8,10.20.0.0/16`); empty: public addresses only.
    pub allowed_networks: String,
    /// Health and metrics listener (`HOOKLINE_ADMIN_ADDR`; port 0: any free port).
    pub admin_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaSettings::default(),
            dispatcher_group: String::new(),
            dispatcher_max_in_flight: 10_000,
            dispatcher_max_in_flight_mib: 64,
            delivery_timeout: Duration::from_secs(15),
            retry_schedule: service_kit::schedule::DEFAULT_SCHEDULE.to_owned(),
            retry_throttle_min: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(24 * 60 * 60),
            endpoint_max_in_flight: 50,
            circuit_failures: 5,
            circuit_cooldown: Duration::from_secs(30),
            circuit_max_cooldown: Duration::from_secs(10 * 60),
            endpoint_disable_after: Duration::from_secs(5 * 24 * 60 * 60),
            shutdown_timeout: Duration::from_secs(30),
            master_key: service_kit::Secret::default(),
            master_keys_previous: service_kit::Secret::default(),
            allowed_networks: String::new(),
            admin_addr: "127.0.0.1:8083".to_owned(),
        }
    }
}

struct Dispatcher {
    config: Config,
    schedule: RetrySchedule,
    registry: Registry,
    topics: Topics,
    tiers: Vec<Duration>,
    client: reqwest::Client,
    /// For endpoints with `validate_tls: false` only.
    insecure_client: reqwest::Client,
    guard: Arc<guard::Guard>,
    producer: FutureProducer,
    dead_letters: DeadLetters,
    sealer: signing::Sealer,
    keys: kafka_io::Table<wire::SigningKey>,
    /// The endpoints as configured, to disable one and to see it enabled again.
    endpoint_table: kafka_io::Table<wire::Endpoint>,
    endpoints: Endpoints,
    /// The opened current signing key, by key id.
    rsa: Mutex<Option<Arc<signing::RsaKey>>>,
    /// Prequel RSA signatures, once per (key, second, body), off the async workers.
    rsa_signer: rsa_signer::RsaSigner,
    /// The key id that failed to open, logged once.
    failed_kid: Mutex<Option<String>>,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
}

/// Runs the dispatcher until `shutdown` is cancelled.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.kafka.security.check().map_err(anyhow::Error::msg)?;
    if config.dispatcher_group.is_empty() {
        config.dispatcher_group = format!("{}hookline-dispatcher", config.kafka.topic_prefix);
    }
    let schedule = RetrySchedule::parse(&config.retry_schedule)
        .map_err(|e| anyhow::anyhow!("HOOKLINE_RETRY_SCHEDULE: {e}"))?;
    anyhow::ensure!(
        config.endpoint_max_in_flight >= 1,
        "HOOKLINE_ENDPOINT_MAX_IN_FLIGHT must be at least 1"
    );
    anyhow::ensure!(
        config.circuit_failures >= 1,
        "HOOKLINE_CIRCUIT_FAILURES must be at least 1"
    );
    let guard =
        Arc::new(guard::Guard::parse(&config.allowed_networks).map_err(anyhow::Error::msg)?);
    let sealer = service_kit::sealer(&config.master_key, &config.master_keys_previous)?;
    let registry = Registry::bundled().context("loading schemas")?;
    let topics = Topics::new(&config.kafka.topic_prefix);
    let mut exported = admin::Registry::default();
    let metrics = metrics::Metrics::register(&mut exported);
    let lag = kafka_io::ConsumerStats::default();
    lag.register(&mut exported);
    let producer =
        kafka_io::producer(&config.kafka, "hookline-dispatcher").context("creating producer")?;
    let dead_letters = DeadLetters::new(producer.clone(), topics.dead_letter.clone(), "dispatcher");
    dead_letters.register(&mut exported);
    let mut used = vec![topics.rendered_deliveries.clone(), topics.endpoints.clone()];
    used.extend(topics.retry_tiers.iter().cloned());
    let (_, readiness) =
        service_kit::start_admin(&config.admin_addr, &config.kafka, used, exported, &shutdown)
            .await?;
    kafka_io::ensure_topics(&config.kafka, &topics.specs())
        .await
        .context("creating topics")?;
    // Deliveries go straight to receivers, through the SSRF guard's resolver.
    let client = |insecure_tls: bool| {
        deliver::client(guard.clone(), config.delivery_timeout, insecure_tls)
            .context("creating the HTTP client")
    };
    let (client, insecure_client) = (client(false)?, client(true)?);
    let keys = service_kit::check_master_key(&config.kafka, &topics, &sealer, &shutdown).await?;
    let endpoint_table = {
        let registry = Registry::bundled().context("loading schemas")?;
        kafka_io::Table::start(
            &config.kafka,
            &topics.endpoints,
            move |bytes| registry.decode::<wire::Endpoint>(bytes).ok(),
            shutdown.child_token(),
        )
        .await
        .context("reading endpoints")?
    };
    let circuit = CircuitSettings {
        failures: config.circuit_failures,
        cooldown: config.circuit_cooldown,
        max_cooldown: config.circuit_max_cooldown.max(config.circuit_cooldown),
    };
    let options = ConsumeOptions {
        max_in_flight: config.dispatcher_max_in_flight,
        max_in_flight_bytes: config
            .dispatcher_max_in_flight_mib
            .saturating_mul(1024 * 1024),
        drain_timeout: config.shutdown_timeout,
    };
    // Endpoint affinity: one consumer reads `rendered-deliveries` and every retry tier,
    // so the range assignor gives partition n of all seven to one replica, and with it
    // every delivery of the endpoints keyed there (ARCHITECTURE, "Endpoint affinity").
    let mut lanes = vec![kafka_io::Lane {
        topic: topics.rendered_deliveries.clone(),
        delay: None,
        max_in_flight: options.max_in_flight,
        max_in_flight_bytes: options.max_in_flight_bytes,
    }];
    for ((_, delay), topic) in kafka_io::RETRY_TIERS.iter().zip(&topics.retry_tiers) {
        // A tier holds retries and deferrals: a quarter of the bound each.
        lanes.push(kafka_io::Lane {
            topic: topic.clone(),
            delay: Some(*delay),
            max_in_flight: (options.max_in_flight / 4).max(1),
            max_in_flight_bytes: options.max_in_flight_bytes / 4,
        });
    }
    let lane_topics: Vec<String> = lanes.iter().map(|l| l.topic.clone()).collect();
    let partitions = kafka_io::co_partitioned(&config.kafka, &lane_topics)
        .await
        .context("checking the dispatcher's topics")?;
    // Earlier versions read each tier in a group of its own: take over where those
    // stopped, so nothing is sent again.
    let legacy: Vec<(String, String)> = kafka_io::RETRY_TIERS
        .iter()
        .zip(&topics.retry_tiers)
        .map(|((name, _), topic)| {
            (
                topic.clone(),
                format!("{}-retry-{name}", config.dispatcher_group),
            )
        })
        .collect();
    match kafka_io::adopt_offsets(&config.kafka, &config.dispatcher_group, &legacy, partitions)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            partitions = n,
            "retry tier offsets taken over from the per-tier groups"
        ),
        // Refused while the group has members: one of them took the offsets over. Any
        // other failure leaves those tier partitions to `auto.offset.reset`.
        Err(e) => {
            tracing::warn!(error = %e, "retry tier offsets of the per-tier groups not taken over")
        }
    }
    let subscribed: Vec<&str> = lane_topics.iter().map(String::as_str).collect();
    let (consumer, tracker) = kafka_io::group_consumer(
        &config.kafka,
        "hookline-dispatcher",
        &config.dispatcher_group,
        &subscribed,
        Some(&lag),
    )
    .context("creating consumer")?;
    tracing::info!(topic = %topics.rendered_deliveries, group = %config.dispatcher_group, schedule = %schedule, "dispatcher started");
    let dispatcher = Arc::new(Dispatcher {
        // No endpoint has more than a quarter of the slots in flight.
        endpoints: Endpoints::new(
            config.endpoint_max_in_flight,
            config.dispatcher_max_in_flight / 4,
            circuit,
        ),
        config,
        schedule,
        registry,
        tiers: kafka_io::RETRY_TIERS.iter().map(|(_, d)| *d).collect(),
        topics,
        client,
        insecure_client,
        guard,
        producer,
        dead_letters,
        sealer,
        keys,
        endpoint_table,
        rsa: Mutex::new(None),
        rsa_signer: rsa_signer::RsaSigner::default(),
        failed_kid: Mutex::new(None),
        metrics,
        shutdown: shutdown.clone(),
    });
    readiness.started();
    let handle = |record| {
        let dispatcher = dispatcher.clone();
        async move { dispatcher.handle(record).await }
    };
    kafka_io::consume_lanes(
        &consumer,
        &tracker,
        &lanes,
        options.drain_timeout,
        &shutdown,
        handle,
    )
    .await;
    Ok(())
}

/// Why a delivery goes to a retry tier.
#[derive(Clone, Copy)]
enum Requeue {
    /// After a failed attempt.
    Retry,
    /// Without an attempt: its endpoint is slow, busy or its circuit open.
    Defer,
    /// Not due yet: handed on to the tier its wait calls for.
    Onward,
}

/// How handling a delivery ended, short of its outcome being durable.
enum Halt {
    /// Shutdown: the record is read again.
    Shutdown,
}

impl Dispatcher {
    async fn handle(&self, record: Record) -> Outcome {
        let _in_flight = admin::InFlight::count(&self.metrics.in_flight);
        let headers = telemetry::carried(&record.headers);
        self.dead_letters
            .unless_panic(
                &self.registry,
                &record,
                headers.as_ref(),
                &self.shutdown,
                self.handle_record(&record),
            )
            .await
    }

    async fn handle_record(&self, record: &Record) -> Outcome {
        let payload = record.payload.as_deref().unwrap_or_default();
        let delivery = match self.registry.decode::<RenderedDelivery>(payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    code = e.code(),
                    "unreadable delivery; dead-lettered"
                );
                let mut letter = self.dead_letters.letter(record, e.code(), &e.to_string());
                letter.payload = record.payload.clone();
                return self
                    .dead_letters
                    .write(
                        &self.registry,
                        letter,
                        telemetry::carried(&record.headers).as_ref(),
                        &self.shutdown,
                    )
                    .await;
            }
        };
        // Not due yet: a tier shorter than the wait handed it over, so it moves on.
        if let Some(due) = delivery.due_at_ms {
            match retry::route(until_ms(due), &self.tiers) {
                Route::Now => {}
                Route::Sleep(wait) => {
                    if self.sleep(wait).await.is_err() {
                        return Outcome::Abandoned;
                    }
                }
                Route::Tier(tier) => {
                    return Box::pin(self.requeue(record, delivery, tier, Requeue::Onward)).await;
                }
            }
        }
        let opened = match self.open(&delivery) {
            Ok(d) => d,
            Err(code) => {
                tracing::warn!(delivery_id = %delivery.delivery_id, code, "cannot open the delivery's sealed parts; dead-lettered");
                let mut letter = self.dead_letters.letter(
                    record,
                    code,
                    "the delivery's sealed parts do not open with this HOOKLINE_MASTER_KEY",
                );
                letter.delivery_id = Some(delivery.delivery_id.clone());
                letter.endpoint_id = Some(delivery.endpoint_id.clone());
                letter.delivery = Some(delivery);
                return self
                    .dead_letters
                    .write(
                        &self.registry,
                        letter,
                        telemetry::carried(&record.headers).as_ref(),
                        &self.shutdown,
                    )
                    .await;
            }
        };
        match self.deliver(record, delivery, &opened).await {
            Ok(outcome) => outcome,
            Err(Halt::Shutdown) => Outcome::Abandoned,
        }
    }

    /// Attempts the delivery until it is delivered, re-queued to a retry tier or
    /// dead-lettered, and makes that outcome durable.
    async fn deliver(
        &self,
        record: &Record,
        mut delivery: RenderedDelivery,
        opened: &RenderedDelivery,
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
            let span = trace::attempt_span(&record.headers, opened, number);
            let sent = Instant::now();
            let (outcome, mut attempt) = Box::pin(self.attempt(opened, scheme, rsa, number))
                .instrument(span.clone())
                .await?;
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
    fn policy(&self, delivery: &RenderedDelivery) -> Policy {
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
    async fn attempt(
        &self,
        delivery: &RenderedDelivery,
        scheme: signing::Scheme,
        rsa: Option<Arc<signing::RsaKey>>,
        number: i32,
    ) -> Result<(AttemptOutcome, Attempt), Halt> {
        if self.shutdown.is_cancelled() {
            return Err(Halt::Shutdown);
        }
        let now = time::OffsetDateTime::now_utc();
        let signed = match rsa {
            Some(key) if scheme == signing::Scheme::PrequelRsa => {
                self.rsa_signer.headers(key, &delivery.body, now).await
            }
            _ => {
                let request = signing::Request {
                    method: &delivery.method,
                    url: &delivery.url,
                    body: &delivery.body,
                    id: &delivery.delivery_id,
                };
                let keys = signing::Keys {
                    rsa: None,
                    secrets: &delivery.signing_secrets,
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
        Ok(deliver::attempt(client, &self.guard, delivery, &signature, number, timeout).await)
    }

    /// Whether deliveries to this endpoint stop: it failed for longer than
    /// `HOOKLINE_ENDPOINT_DISABLE_AFTER`. The first time, the producer is asked to
    /// mark it inactive and emit `endpoint.disabled`; once it is enabled again (through
    /// the API), its circuit starts afresh.
    async fn disabled(
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
    async fn disable(&self, endpoint_id: &str, since: SystemTime) -> i64 {
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

    /// Defers a delivery without an attempt (circuit open, endpoint busy): back to the
    /// tier its wait calls for, its attempts unchanged.
    async fn defer(
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
    async fn requeue(
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

    async fn dead_letter(
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
    fn log(
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

    /// Sleeps, cut short by shutdown.
    async fn sleep(&self, wait: Duration) -> Result<(), Halt> {
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = self.shutdown.cancelled() => Err(Halt::Shutdown),
        }
    }

    /// The delivery with its sealed parts opened (kept in memory only).
    fn open(&self, delivery: &RenderedDelivery) -> Result<RenderedDelivery, &'static str> {
        let mut opened = service_kit::open_delivery(&self.sealer, delivery)?;
        opened.attempts = Vec::new();
        Ok(opened)
    }

    /// The account's current signing key: keys written before this record was received
    /// are seen. Waits up to [`KEY_WAIT`] for one that opens.
    async fn signing_key(&self, received_at: std::time::Instant) -> KeyWait {
        let deadline = Instant::now() + KEY_WAIT;
        loop {
            if self.keys.sync_after(received_at).await.is_ok() {
                if let Some(record) = self.keys.get(service_kit::SIGNING_KEY) {
                    let cached = lock(&self.rsa).clone().filter(|k| k.kid == record.kid);
                    if let Some(key) = cached {
                        return KeyWait::Key(key);
                    }
                    match service_kit::open_signing_key(&self.sealer, &record) {
                        Ok(key) => {
                            let key = Arc::new(key);
                            *lock(&self.rsa) = Some(key.clone());
                            return KeyWait::Key(key);
                        }
                        Err(_) => {
                            let mut failed = lock(&self.failed_kid);
                            if failed.as_deref() != Some(record.kid.as_str()) {
                                tracing::error!(kid = %record.kid, code = "HL-SEAL-OPEN", "the signing key does not open with this HOOKLINE_MASTER_KEY; prequel_rsa deliveries wait in the retry tiers, operator action needed");
                                *failed = Some(record.kid.clone());
                            }
                        }
                    }
                } else {
                    tracing::warn!(
                        "no webhook signing key yet (the producer creates it on first start); prequel_rsa deliveries wait in the retry tiers"
                    );
                }
            }
            if Instant::now() >= deadline {
                return KeyWait::Unavailable;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return KeyWait::Shutdown,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// How long an attempt waits for a signing key that opens before its delivery is
/// deferred: a moment's trouble reading `keys` passes within it.
const KEY_WAIT: Duration = Duration::from_secs(5);
/// When a delivery deferred for want of a signing key is looked at again.
const KEY_RETRY: Duration = Duration::from_secs(30);

/// What [`Dispatcher::signing_key`] found.
enum KeyWait {
    /// The key, opened.
    Key(Arc<signing::RsaKey>),
    /// None that opens within [`KEY_WAIT`]: not yet written, or sealed under another
    /// master key.
    Unavailable,
    /// Shutdown came first.
    Shutdown,
}

/// Unix ms of `t`.
fn unix_ms(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(i64::MAX)
}

/// How long until unix ms `due` (zero when past).
fn until_ms(due: i64) -> Duration {
    let now = unix_ms(SystemTime::now());
    Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0))
}

fn parse_time(rfc3339: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// "retries exhausted after 4 attempts; last: HTTP 503"
fn summary(what: &str, attempts: &[Attempt]) -> String {
    let last = attempts.last().map(|a| match (&a.status, &a.error_code) {
        (Some(s), _) => format!("HTTP {s}"),
        (None, Some(code)) => code.clone(),
        (None, None) => "no outcome".to_owned(),
    });
    format!(
        "{what} after {} attempt(s); last: {}",
        attempts.len(),
        last.unwrap_or_else(|| "none".to_owned())
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod future_size {
    use super::*;

    fn size<F: std::future::Future>(_: fn(Arc<Dispatcher>, Record) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every delivery in flight is a task, and up to `HOOKLINE_DISPATCHER_MAX_IN_FLIGHT`
    /// of them mostly wait for their endpoint's turn: the attempt, re-queue and
    /// dead-letter futures are boxed when they start, so a waiting task stays small.
    #[test]
    fn a_waiting_delivery_holds_a_small_task() {
        let bytes = size(|d, r| async move { d.handle(r).await });
        eprintln!("handle future: {bytes} bytes");
        // 8,880 bytes before the boxing, 3,424 after (Rust 1.95, x86_64).
        assert!(bytes <= 4096, "the handle future is {bytes} bytes");
    }
}
