//! hookline-dispatcher: consumes `rendered-deliveries`, sends each request with a
//! timeout, retries transient failures with jittered backoff, and writes what is
//! exhausted or final to `dead-letter` with every attempt.
//!
//! Deliveries run concurrently (up to a bound), so one slow endpoint does not hold
//! up the others; a record's offset is stored once its outcome is final (delivered or
//! dead-lettered), and never past a record still in flight.
//!
//! Retries here are in memory and short (seconds). Durable multi-day retry tiers are
//! a later step: they replace [`Dispatcher::deliver`]'s backoff with a re-queue.

pub mod deliver;
pub mod guard;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable, Sleeper};
use dead_letter::DeadLetters;
use kafka_io::{ConsumeOptions, KafkaSettings, Outcome, Record, Topics};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use wire::{Attempt, Registry, RenderedDelivery};

use crate::retry::Decision;

/// The dispatcher's configuration (`HOOKLINE_*` variables, see the README).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Kafka connection and topic layout.
    #[serde(flatten)]
    pub kafka: KafkaSettings,
    /// Consumer group of the dispatchers (`HOOKLINE_DISPATCHER_GROUP`); empty means
    /// `<topic prefix>hookline-dispatcher`, so each pipeline on a cluster has its own group.
    pub dispatcher_group: String,
    /// Deliveries in flight at once (`HOOKLINE_DISPATCHER_MAX_IN_FLIGHT`).
    pub dispatcher_max_in_flight: usize,
    /// Timeout of one HTTP attempt (`HOOKLINE_DELIVERY_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Attempts per delivery, the first included (`HOOKLINE_DELIVERY_ATTEMPTS`).
    pub delivery_attempts: usize,
    /// First retry delay; later ones double, with jitter (`HOOKLINE_RETRY_MIN_DELAY`).
    #[serde(with = "humantime_serde")]
    pub retry_min_delay: Duration,
    /// Longest retry delay, `Retry-After` included (`HOOKLINE_RETRY_MAX_DELAY`).
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Bound on the shutdown drain (`HOOKLINE_SHUTDOWN_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Opens what deliveries carry sealed (`HOOKLINE_MASTER_KEY`).
    pub master_key: service_kit::Secret,
    /// Non-public networks deliveries may reach anyway (`HOOKLINE_ALLOWED_NETWORKS`,
    /// comma-separated, e.g. `127.0.0.0/8,10.20.0.0/16`); empty: public addresses only.
    pub allowed_networks: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaSettings::default(),
            dispatcher_group: String::new(),
            dispatcher_max_in_flight: 1000,
            delivery_timeout: Duration::from_secs(15),
            delivery_attempts: 4,
            retry_min_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            master_key: service_kit::Secret::default(),
            allowed_networks: String::new(),
        }
    }
}

struct Dispatcher {
    config: Config,
    registry: Registry,
    client: reqwest::Client,
    /// For endpoints with `validate_tls: false` only.
    insecure_client: reqwest::Client,
    guard: Arc<guard::Guard>,
    dead_letters: DeadLetters,
    sealer: signing::Sealer,
    keys: kafka_io::Table<wire::SigningKey>,
    /// The opened current signing key, by key id.
    rsa: Mutex<Option<Arc<signing::RsaKey>>>,
    /// The key id that failed to open, logged once.
    failed_kid: Mutex<Option<String>>,
    shutdown: CancellationToken,
}

/// Runs the dispatcher until `shutdown` is cancelled.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.dispatcher_group.is_empty() {
        config.dispatcher_group = format!("{}hookline-dispatcher", config.kafka.topic_prefix);
    }
    anyhow::ensure!(config.delivery_attempts >= 1, "HOOKLINE_DELIVERY_ATTEMPTS must be at least 1");
    let guard = Arc::new(guard::Guard::parse(&config.allowed_networks).map_err(anyhow::Error::msg)?);
    let sealer = service_kit::sealer(&config.master_key)?;
    let registry = Registry::bundled().context("loading schemas")?;
    let topics = Topics::new(&config.kafka.topic_prefix);
    kafka_io::ensure_topics(&config.kafka, &topics.specs()).await.context("creating topics")?;
    let client = |insecure_tls: bool| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .connect_timeout(config.delivery_timeout)
            // Deliveries go straight to receivers, through the SSRF guard's resolver.
            .no_proxy()
            .dns_resolver(guard::GuardedResolver(guard.clone()))
            // Only for endpoints created with `validate_tls: false`.
            .tls_danger_accept_invalid_certs(insecure_tls)
            .build()
            .context("creating the HTTP client")
    };
    let (client, insecure_client) = (client(false)?, client(true)?);
    let producer = kafka_io::producer(&config.kafka, "hookline-dispatcher").context("creating producer")?;
    let (consumer, tracker) = kafka_io::group_consumer(
        &config.kafka,
        "hookline-dispatcher",
        &config.dispatcher_group,
        &topics.rendered_deliveries,
    )
    .context("creating consumer")?;
    tracing::info!(topic = %topics.rendered_deliveries, group = %config.dispatcher_group, "dispatcher started");
    let options =
        ConsumeOptions { max_in_flight: config.dispatcher_max_in_flight, drain_timeout: config.shutdown_timeout };
    let dead_letters = DeadLetters::new(producer, topics.dead_letter.clone(), "dispatcher");
    let keys = service_kit::check_master_key(&config.kafka, &topics, &sealer, &shutdown).await?;
    let dispatcher = Arc::new(Dispatcher {
        config,
        registry,
        client,
        insecure_client,
        guard,
        dead_letters,
        sealer,
        keys,
        rsa: Mutex::new(None),
        failed_kid: Mutex::new(None),
        shutdown: shutdown.clone(),
    });
    kafka_io::consume_concurrently(&consumer, &tracker, &options, &shutdown, |record| {
        let dispatcher = dispatcher.clone();
        async move { dispatcher.handle(record).await }
    })
    .await;
    Ok(())
}

/// Why a delivery stopped retrying.
#[derive(Debug)]
enum Stop {
    /// Retryable failure (kept for backon's `when`).
    Transient(Option<Duration>),
    /// Final: the reason code.
    Final(&'static str),
    /// Shutdown between attempts.
    Shutdown,
}

impl Dispatcher {
    async fn handle(&self, record: Record) -> Outcome {
        let payload = record.payload.as_deref().unwrap_or_default();
        let delivery = match self.registry.decode::<RenderedDelivery>(payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(partition = record.partition, offset = record.offset, code = e.code(), "unreadable delivery; dead-lettered");
                let mut letter = self.dead_letters.letter(&record, e.code(), &e.to_string());
                letter.payload = record.payload.clone();
                return self.dead_letters.write(&self.registry, letter, &self.shutdown).await;
            }
        };
        let opened = match self.open(&delivery) {
            Ok(d) => d,
            Err(code) => {
                tracing::warn!(delivery_id = %delivery.delivery_id, code, "cannot open the delivery's sealed parts; dead-lettered");
                let mut letter = self.dead_letters.letter(&record, code, "the delivery's sealed parts do not open with this HOOKLINE_MASTER_KEY");
                letter.delivery_id = Some(delivery.delivery_id.clone());
                letter.endpoint_id = Some(delivery.endpoint_id.clone());
                letter.delivery = Some(delivery);
                return self.dead_letters.write(&self.registry, letter, &self.shutdown).await;
            }
        };
        let scheme = signing::Scheme::parse(&delivery.signing_scheme).unwrap_or(signing::Scheme::None);
        let (result, attempts) = self.deliver(&opened, scheme, record.received_at).await;
        match result {
            Ok(()) => Outcome::Done,
            Err(Stop::Shutdown) => Outcome::Abandoned,
            Err(stop) => {
                let (code, reason) = match stop {
                    Stop::Final(code) => (code, summary("final outcome", &attempts)),
                    _ => ("HL-DELIVERY-EXHAUSTED", summary("retries exhausted", &attempts)),
                };
                tracing::warn!(delivery_id = %delivery.delivery_id, endpoint_id = %delivery.endpoint_id, code, attempts = attempts.len(), "delivery failed; dead-lettered");
                let mut letter = self.dead_letters.letter(&record, code, &reason);
                letter.event_id = Some(delivery.event_id.clone());
                letter.endpoint_id = Some(delivery.endpoint_id.clone());
                letter.delivery_id = Some(delivery.delivery_id.clone());
                // A receiver may echo what it got (an API key, a trace): every kept
                // response is sealed.
                let attempts = attempts
                    .into_iter()
                    .map(|mut a| {
                        let context = signing::delivery_context(&delivery.delivery_id, &format!("response/{}", a.attempt), &delivery.method, &delivery.url);
                        a.response = a.response.map(|r| self.sealer.seal(r.as_bytes(), &context));
                        a
                    })
                    .collect();
                letter.delivery = Some(delivery);
                letter.attempts = attempts;
                self.dead_letters.write(&self.registry, letter, &self.shutdown).await
            }
        }
    }

    /// The delivery with its sealed parts opened (kept in memory only).
    fn open(&self, delivery: &RenderedDelivery) -> Result<RenderedDelivery, &'static str> {
        let context = |part: &str| signing::delivery_context(&delivery.delivery_id, part, &delivery.method, &delivery.url);
        let open = |v: &str, part: &str| -> Result<String, &'static str> {
            if !signing::Sealer::is_sealed(v) {
                return Ok(v.to_owned());
            }
            self.sealer.open(v, &context(part)).map(|p| String::from_utf8_lossy(&p).into_owned()).map_err(|_| "HL-SEAL-OPEN")
        };
        let mut d = delivery.clone();
        for h in &mut d.sensitive_headers {
            h.value = open(&h.value, &format!("header/{}", h.name.to_ascii_lowercase()))?;
        }
        for s in &mut d.signing_secrets {
            *s = open(s, "signing-secret")?;
        }
        if d.body_sealed {
            let text = String::from_utf8(std::mem::take(&mut d.body)).map_err(|_| "HL-SEAL-OPEN")?;
            d.body = self.sealer.open(&text, &context("body")).map_err(|_| "HL-SEAL-OPEN")?;
        }
        Ok(d)
    }

    /// The account's current signing key: keys written before this record was received
    /// are seen. Waits (until shutdown) when none exists yet.
    async fn signing_key(&self, received_at: std::time::Instant) -> Option<Arc<signing::RsaKey>> {
        loop {
            if self.keys.sync_after(received_at).await.is_ok() {
                if let Some(record) = self.keys.get(service_kit::SIGNING_KEY) {
                    let cached = lock(&self.rsa).clone().filter(|k| k.kid == record.kid);
                    if let Some(key) = cached {
                        return Some(key);
                    }
                    match service_kit::open_signing_key(&self.sealer, &record) {
                        Ok(key) => {
                            let key = Arc::new(key);
                            *lock(&self.rsa) = Some(key.clone());
                            return Some(key);
                        }
                        Err(_) => {
                            let mut failed = lock(&self.failed_kid);
                            if failed.as_deref() != Some(record.kid.as_str()) {
                                tracing::error!(kid = %record.kid, code = "HL-SEAL-OPEN", "the signing key does not open with this HOOKLINE_MASTER_KEY; deliveries wait, operator action needed");
                                *failed = Some(record.kid.clone());
                            }
                        }
                    }
                } else {
                    tracing::warn!("no webhook signing key yet (the producer creates it on first start); waiting");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Attempts the delivery until it is delivered, final, exhausted or shut down.
    async fn deliver(&self, delivery: &RenderedDelivery, scheme: signing::Scheme, received_at: std::time::Instant) -> (Result<(), Stop>, Vec<Attempt>) {
        let attempts = Mutex::new(Vec::new());
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_max_times(self.config.delivery_attempts - 1);
        let max_delay = self.config.retry_max_delay;
        let once = || async {
            if self.shutdown.is_cancelled() {
                return Err(Stop::Shutdown);
            }
            let number = i32::try_from(lock(&attempts).len() + 1).unwrap_or(i32::MAX);
            // Every attempt is signed afresh, with the key current when it starts (a
            // rotation applies to the next attempt): a retry hours later passes a
            // receiver's window.
            let rsa = if scheme == signing::Scheme::PrequelRsa {
                let since = if number == 1 { received_at } else { std::time::Instant::now() };
                Some(self.signing_key(since).await.ok_or(Stop::Shutdown)?)
            } else {
                None
            };
            let request = signing::Request { method: &delivery.method, url: &delivery.url, body: &delivery.body, id: &delivery.delivery_id };
            let keys = signing::Keys { rsa: rsa.as_deref(), secrets: &delivery.signing_secrets };
            let signature = match signing::sign(scheme, request, keys, time::OffsetDateTime::now_utc()) {
                Ok(headers) => headers,
                Err(e) => return Err(Stop::Final(e.code())),
            };
            let client = if delivery.insecure_tls { &self.insecure_client } else { &self.client };
            let timeout = delivery.timeout_ms.and_then(|ms| u64::try_from(ms).ok()).filter(|ms| *ms > 0).map_or(self.config.delivery_timeout, Duration::from_millis);
            let (outcome, record) = deliver::attempt(client, &self.guard, delivery, &signature, number, timeout).await;
            lock(&attempts).push(record);
            match retry::decide(&outcome) {
                Decision::Delivered => Ok(()),
                Decision::Retry { not_before } => Err(Stop::Transient(not_before)),
                Decision::Final(code) => Err(Stop::Final(code)),
            }
        };
        let result = once
            .retry(backoff)
            .sleep(ShutdownSleeper(self.shutdown.clone()))
            .when(|stop| matches!(stop, Stop::Transient(_)))
            .adjust(move |stop, delay| match (stop, delay) {
                // Honour Retry-After within bounds: never sooner than asked, never past the cap.
                (Stop::Transient(Some(after)), Some(delay)) => Some(delay.max(*after).min(max_delay)),
                (_, delay) => delay,
            })
            .await;
        let result = match result {
            Err(Stop::Transient(_)) if self.shutdown.is_cancelled() => Err(Stop::Shutdown),
            other => other,
        };
        (result, attempts.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

/// "retries exhausted after 4 attempts; last: HTTP 503"
fn summary(what: &str, attempts: &[Attempt]) -> String {
    let last = attempts.last().map(|a| match (&a.status, &a.error_code) {
        (Some(s), _) => format!("HTTP {s}"),
        (None, Some(code)) => code.clone(),
        (None, None) => "no outcome".to_owned(),
    });
    format!("{what} after {} attempt(s); last: {}", attempts.len(), last.unwrap_or_else(|| "none".to_owned()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sleeps between attempts, cut short by shutdown.
struct ShutdownSleeper(CancellationToken);

impl Sleeper for ShutdownSleeper {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        let token = self.0.clone();
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(dur) => {}
                _ = token.cancelled() => {}
            }
        })
    }
}
