//! Test helpers shared by the integration and end-to-end tests: the real local broker
//! (started through `ops/kafka/broker` when none answers), a random topic prefix per
//! test, a capturing HTTP receiver whose answers a test scripts, and topic readers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kafka_io::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The master key tests seal secrets with (test data only).
pub const MASTER_KEY: &str = "ziPT4SmMuMTwTwqeF6aldKiYNegAmm65VtVAqRVARKE=";

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Bootstrap address of the test broker: `HOOKLINE_KAFKA_BROKERS`, or 127.0.0.1 on
/// `HOOKLINE_KAFKA_PORT` (default 9092).
pub fn brokers() -> String {
    std::env::var("HOOKLINE_KAFKA_BROKERS").unwrap_or_else(|_| {
        let port = std::env::var("HOOKLINE_KAFKA_PORT").unwrap_or_else(|_| "9092".to_owned());
        format!("127.0.0.1:{port}")
    })
}

/// Makes sure a broker answers, starting the local one through `ops/kafka/broker` if not.
pub fn ensure_broker() -> String {
    let brokers = brokers();
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    if std::net::TcpStream::connect_timeout(
        &first.parse().expect("host:port"),
        Duration::from_secs(1),
    )
    .is_err()
    {
        let status = std::process::Command::new(repo_root().join("ops/kafka/broker"))
            .arg("start")
            .status()
            .expect("run ops/kafka/broker");
        assert!(status.success(), "ops/kafka/broker start failed");
    }
    brokers
}

/// A topic prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("test-{test}-{}-", &id[..8])
}

/// Kafka settings for a test: the real broker, a fresh prefix, 3 partitions.
pub fn kafka_settings(test: &str) -> KafkaSettings {
    KafkaSettings {
        kafka_brokers: ensure_broker(),
        topic_prefix: unique_prefix(test),
        topic_partitions: 3,
        topic_replication: 1,
        kafka_profile: kafka_io::KafkaProfile::Balanced,
        kafka_linger_ms: None,
        ..KafkaSettings::default()
    }
}

/// What a test against the broker starts from: logs on, settings on a fresh topic
/// prefix, every hookline topic created under it, and the bundled schemas.
pub async fn kafka_stack(test: &str) -> (KafkaSettings, kafka_io::Topics, wire::Registry) {
    init_logs();
    let kafka = kafka_settings(test);
    let topics = kafka_io::Topics::new(&kafka.topic_prefix);
    kafka_io::ensure_topics(&kafka, &topics.specs())
        .await
        .expect("test setup: the topics");
    let registry = wire::Registry::bundled().expect("test setup: the bundled schemas");
    (kafka, topics, registry)
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Captured {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers, names lower-case.
    pub headers: HashMap<String, String>,
    /// Raw body.
    pub body: Vec<u8>,
}

impl Captured {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
    /// `Retry-After` header to send.
    pub retry_after: Option<String>,
    /// Response body.
    pub body: &'static str,
}

impl Answer {
    /// Answer `status` at once.
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            delay: Duration::ZERO,
            retry_after: None,
            body: "",
        }
    }
}

type Script = dyn Fn(&Captured, usize) -> Answer + Send + Sync;

struct ReceiverState {
    captured: Mutex<Vec<Captured>>,
    /// Requests seen per path, to script "fail twice then succeed".
    per_path: Mutex<HashMap<String, usize>>,
    script: Box<Script>,
}

/// A real HTTP server on 127.0.0.1 that records every request and answers as scripted.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn ok() -> Self {
        Self::scripted(|_, _| Answer::status(200)).await
    }

    /// A receiver answering with `script(request, n)`, `n` counting requests to that
    /// path from 0 (requests are recorded before the answer is chosen).
    pub async fn scripted(
        script: impl Fn(&Captured, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(ReceiverState {
            captured: Mutex::new(Vec::new()),
            per_path: Mutex::new(HashMap::new()),
            script: Box::new(script),
        });
        let app = axum::Router::new()
            .fallback(capture)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, state }
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn captured(&self) -> Vec<Captured> {
        self.state.captured.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds for what was received, or `timeout` passes; returns it.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Captured]) -> bool,
    ) -> Vec<Captured> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.captured();
            if pred(&got) || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn capture(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let captured = Captured {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let n = {
        let mut per_path = state.per_path.lock().expect("lock");
        let n = per_path.entry(uri.path().to_owned()).or_insert(0);
        *n += 1;
        *n - 1
    };
    state.captured.lock().expect("lock").push(captured.clone());
    let answer = (state.script)(&captured, n);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        answer.body,
    )
        .into_response();
    if let Some(after) = answer.retry_after
        && let Ok(v) = after.parse()
    {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Key as text.
    pub key: Option<String>,
    /// Raw value.
    pub value: Option<Vec<u8>>,
    /// Partition.
    pub partition: i32,
}

/// Reads `topic` from the beginning (committed data only) until `want(records)` holds
/// or `timeout` passes, and returns what it read. Runs on the blocking pool, so the
/// code under test keeps running meanwhile.
pub async fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
    want: impl Fn(&[ReadRecord]) -> bool + Send + 'static,
) -> Vec<ReadRecord> {
    let settings = settings.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&settings, &topic, timeout, want))
        .await
        .expect("reader")
}

fn read_topic_blocking(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
    want: impl Fn(&[ReadRecord]) -> bool,
) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka_brokers)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline && !want(&out) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(ReadRecord {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
                partition: m.partition(),
            });
        }
    }
    out
}

/// Produces raw records (`(key, value)`) to `topic` and waits for each acknowledgement.
pub async fn produce(settings: &KafkaSettings, topic: &str, records: &[(&str, Vec<u8>)]) {
    use rdkafka::producer::FutureRecord;
    let producer = kafka_io::producer(settings, "test").expect("producer");
    // Queued in order without waiting for each acknowledgement (order is kept per
    // partition by the idempotent producer); all acknowledged on return.
    let mut pending = Vec::with_capacity(records.len());
    for (key, value) in records {
        let record = FutureRecord::to(topic).key(*key).payload(value);
        match producer.send_result(record) {
            Ok(delivery) => pending.push(delivery),
            Err((e, _)) => panic!("cannot queue a record: {e}"),
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery report").expect("produced");
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Decodes the dead letters of `topic`.
pub fn dead_letters(records: &[ReadRecord]) -> Vec<wire::DeadLetter> {
    let registry = wire::Registry::bundled().expect("schemas");
    records
        .iter()
        .filter_map(|r| r.value.as_ref())
        .map(|v| registry.decode::<wire::DeadLetter>(v).expect("dead letter"))
        .collect()
}

/// Sends the code under test's logs to the test output (`RUST_LOG` filters; default warn).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The test broker's topic data folder: its `log.dirs`, asked of the broker itself
/// (so it is right whichever checkout started the broker).
pub async fn broker_log_dir() -> PathBuf {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let broker = metadata.brokers().first().expect("a broker").id();
    let results = admin
        .describe_configs(&[ResourceSpecifier::Broker(broker)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let config = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("broker config");
    let dirs = config
        .get("log.dirs")
        .or_else(|| config.get("log.dir"))
        .and_then(|e| e.value.clone())
        .expect("log.dirs");
    PathBuf::from(dirs.split(',').next().expect("a log dir"))
}

/// The segment files (`*.log`) of the topics named `<prefix>…` under `dir` whose
/// bytes contain `needle`.
pub fn segments_containing(dir: &std::path::Path, prefix: &str, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(topics) = std::fs::read_dir(dir) else {
        return found;
    };
    for topic in topics
        .flatten()
        .filter(|t| t.file_name().to_string_lossy().starts_with(prefix))
    {
        for file in std::fs::read_dir(topic.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "log")
                && std::fs::read(&path).is_ok_and(|b| contains(&b, needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Records of `topic` that `group` has not committed yet and a read_committed reader
/// would see: past a partition's committed offset there may be only transaction
/// markers, which no consumer ever handles, so such a partition counts as caught up
/// when nothing can be read from its committed offset. An error is the broker not
/// answering in time (seen under CI's load): the caller asks again within its bound.
pub fn group_behind(
    kafka: &kafka_io::KafkaSettings,
    group: &str,
    topic: &str,
) -> rdkafka::error::KafkaResult<i64> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let timeout = Duration::from_secs(10);
    let config = |group: &str| {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.kafka_brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        config
    };
    let consumer: BaseConsumer = config(group).create().expect("a consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..kafka.topic_partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, timeout)?;
    let mut behind = 0;
    for e in committed.elements() {
        let (_, high) = consumer.fetch_watermarks(topic, e.partition(), timeout)?;
        let at = match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        };
        if at >= high {
            continue;
        }
        // A reader of its own (another group id, so the group's offsets stay untouched).
        let reader: BaseConsumer = config("hookline-tests-drain-check")
            .create()
            .expect("a reader");
        let mut from = rdkafka::TopicPartitionList::new();
        from.add_partition_offset(topic, e.partition(), rdkafka::Offset::Offset(at))
            .expect("an offset");
        reader.assign(&from).expect("assign");
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(100))
                && m.offset() >= at
            {
                behind += high - at;
                break;
            }
        }
    }
    Ok(behind)
}
