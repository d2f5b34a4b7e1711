//! Running the pipeline's binaries as child processes, so end-to-end tests can
//! `kill -9` them, restart them and stop them with SIGTERM.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{Value, json};

/// The API token the tests' producers use.
pub const TOKEN: &str = "e2e-token";

/// Where cargo put the binaries (`target/debug` next to this test's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`; ./ops/test does)",
        path.display()
    );
    path
}

/// One service process.
pub struct Service {
    name: &'static str,
    env: HashMap<String, String>,
    child: Option<Child>,
    log_dir: PathBuf,
    starts: u32,
}

impl Service {
    /// Starts `name` (a binary) with `env`; its output goes to `log_dir/<name>.<n>.log`.
    pub fn start(name: &'static str, env: &HashMap<String, String>, log_dir: &Path) -> Service {
        let mut service = Service {
            name,
            env: env.clone(),
            child: None,
            log_dir: log_dir.to_path_buf(),
            starts: 0,
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.log_dir).expect("log dir");
        self.starts += 1;
        let log = File::create(
            self.log_dir
                .join(format!("{}.{}.log", self.name, self.starts)),
        )
        .expect("log file");
        let child = Command::new(bin(self.name))
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn service");
        self.child = Some(child);
    }

    /// Starts again after [`Service::kill9`].
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// `kill -9`, then start again. True when the kill found the process running (it
    /// died of the SIGKILL), not already exited.
    pub fn kill9_and_restart(&mut self) -> bool {
        let killed = self.kill9();
        self.spawn();
        killed
    }

    /// `kill -9` and reap. True when the process died of the SIGKILL: it was running.
    pub fn kill9(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt as _;
        let Some(mut child) = self.child.take() else {
            return false;
        };
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        status.signal() == Some(9)
    }

    /// SIGTERM, and the exit status once it exited, or `None` if it is still running
    /// after `bound` (then it is killed).
    pub fn terminate(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The exit status once the process exited by itself within `bound`, else `None`
    /// (it still runs).
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Waits until the current run printed `needle`; panics after `bound`.
    pub async fn wait_for_output(&self, needle: &str, bound: Duration) {
        let deadline = Instant::now() + bound;
        while !self.output().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{} did not print {needle:?} within {bound:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the current run printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(
            self.log_dir
                .join(format!("{}.{}.log", self.name, self.starts)),
        )
        .unwrap_or_default()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// A broker of a test's own (free ports, a data folder in the temp dir), driven by
/// `ops/kafka/broker`; stopped and removed when dropped.
pub struct Broker {
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its SASL_PLAINTEXT port, when started with one (user `hookline`, password
    /// `hookline-secret`, see `ops/kafka/broker`).
    pub sasl_port: Option<u16>,
    controller_port: u16,
    data: PathBuf,
}

impl Broker {
    /// Starts a new broker.
    pub fn start() -> Broker {
        Broker::start_with(None)
    }

    /// Starts a new broker with a SASL listener too.
    pub fn start_with_sasl() -> Broker {
        Broker::start_with(Some(test_kit::free_port()))
    }

    fn start_with(sasl_port: Option<u16>) -> Broker {
        let port = test_kit::free_port();
        let broker = Broker {
            port,
            sasl_port,
            controller_port: test_kit::free_port(),
            data: std::env::temp_dir().join(format!("hookline-e2e-broker-{port}")),
        };
        broker.run("start");
        broker
    }

    /// `ops/kafka/broker COMMAND` for this broker.
    pub fn run(&self, command: &str) {
        let status = Command::new(test_kit::repo_root().join("ops/kafka/broker"))
            .arg(command)
            .env("HOOKLINE_KAFKA_PORT", self.port.to_string())
            .env(
                "HOOKLINE_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env("HOOKLINE_KAFKA_DATA_DIR", &self.data)
            .env(
                "HOOKLINE_KAFKA_SASL_PORT",
                self.sasl_port.map(|p| p.to_string()).unwrap_or_default(),
            )
            .status()
            .expect("ops/kafka/broker");
        assert!(status.success(), "broker {command} failed");
    }

    /// Keeps a copy of the broker's `server.log` as `target/e2e-logs/<name>` (the data
    /// folder goes when the broker is dropped), for a test that failed.
    pub fn keep_log(&self, name: &str) {
        let to = test_kit::repo_root().join("target/e2e-logs").join(name);
        let _ = std::fs::create_dir_all(to.parent().unwrap_or(&to));
        let _ = std::fs::copy(self.data.join("logs/server.log"), &to);
    }

    /// Sends `signal` (`STOP`, `CONT`) to the broker's process: a broker that stops
    /// answering without closing its connections.
    pub fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.data.join("broker.pid")).expect("broker.pid");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.trim())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(
                std::fs::read_to_string(self.data.join("broker.pid"))
                    .unwrap_or_default()
                    .trim(),
            )
            .status();
        self.run("stop");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The environment of one pipeline: its broker, topic prefix and API address.
pub fn pipeline_env(kafka: &kafka_io::KafkaSettings, api_port: u16) -> HashMap<String, String> {
    let mut env = HashMap::new();
    env.insert("HOOKLINE_KAFKA_BROKERS".into(), kafka.kafka_brokers.clone());
    env.insert("HOOKLINE_TOPIC_PREFIX".into(), kafka.topic_prefix.clone());
    env.insert(
        "HOOKLINE_TOPIC_PARTITIONS".into(),
        kafka.topic_partitions.to_string(),
    );
    env.insert("HOOKLINE_API_ADDR".into(), format!("127.0.0.1:{api_port}"));
    env.insert("HOOKLINE_API_TOKEN".into(), TOKEN.into());
    env.insert("HOOKLINE_MASTER_KEY".into(), test_kit::MASTER_KEY.into());
    env.insert("HOOKLINE_DELIVERY_TIMEOUT".into(), "5s".into());
    // The receivers are local: loopback is not reachable by default (SSRF guard).
    env.insert("HOOKLINE_ALLOWED_NETWORKS".into(), "127.0.0.0/8".into());
    env.insert("HOOKLINE_SHUTDOWN_TIMEOUT".into(), "20s".into());
    // Tests run stacks side by side: each service's admin listener on a free port.
    env.insert("HOOKLINE_ADMIN_ADDR".into(), "127.0.0.1:0".into());
    env.insert("RUST_LOG".into(), "info".into());
    env
}

/// Waits until the producer API answers `/health`.
pub async fn wait_healthy(client: &reqwest::Client, base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the producer API at {base} did not come up within {within:?}");
}

/// Creates a generic_post webhook for `events` and returns its id.
pub async fn create_webhook(
    client: &reqwest::Client,
    base: &str,
    url: &str,
    events: &[&str],
) -> String {
    let body =
        json!({"webhook": {"name": "e2e", "vendor": "generic_post", "url": url, "events": events}});
    let resp = client
        .post(format!("{base}/webhooks"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("create webhook");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let created: Value = resp.json().await.expect("json");
    created["webhook"]["id"].as_str().expect("id").to_owned()
}

/// A `transfer.started` event for transfer `n`.
pub fn event(n: usize) -> Value {
    json!({"type": "transfer.started", "data": {"transfer_id": format!("tr-{n}"), "destination_id": "d-1",
        "source_ids": ["s-1"], "model_ids": ["m-1"], "is_full_refresh": false, "started_at": "2023-10-15T16:19:08+00:00"}})
}

/// Posts events `range` through the API, `concurrency` at a time, retrying an event
/// until it is accepted (a 202 means Kafka has it). Calls `progress(accepted)` as it goes.
/// Returns `(transfer number, event id)` pairs.
pub async fn send_events(
    client: &reqwest::Client,
    base: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
    progress: impl Fn(usize) + Sync,
) -> Vec<(usize, String)> {
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    stream::iter(range)
        .map(|n| {
            let accepted = &accepted;
            let progress = &progress;
            async move {
                loop {
                    let sent = client
                        .post(format!("{base}/events"))
                        .bearer_auth(TOKEN)
                        .json(&event(n))
                        .send()
                        .await;
                    if let Ok(resp) = sent {
                        if resp.status() == reqwest::StatusCode::ACCEPTED {
                            let body: Value = resp.json().await.expect("json");
                            let done =
                                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            progress(done);
                            return (n, body["id"].as_str().expect("id").to_owned());
                        }
                        assert!(
                            resp.status().is_server_error(),
                            "event {n} refused: {}",
                            resp.status()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// A whole pipeline (producer, renderer, dispatcher) as child processes on a fresh
/// topic prefix, with its API client.
pub struct Pipeline {
    /// Broker and topics.
    pub kafka: kafka_io::KafkaSettings,
    /// The services' environment.
    pub env: HashMap<String, String>,
    /// `http://127.0.0.1:<port>` of the producer API.
    pub base: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// Where the services' output goes.
    pub logs: PathBuf,
    /// The producer.
    pub producer: Service,
    /// The renderer.
    pub renderer: Service,
    /// The dispatcher.
    pub dispatcher: Service,
}

impl Pipeline {
    /// Starts the three services for `test`, with `extra` environment on top of
    /// [`pipeline_env`], and waits until the API answers.
    pub async fn start(test: &str, extra: &[(&str, &str)]) -> Pipeline {
        Pipeline::start_on(test_kit::kafka_settings(test), extra).await
    }

    /// As [`Pipeline::start`], on the broker and topic prefix of `kafka`.
    pub async fn start_on(kafka: kafka_io::KafkaSettings, extra: &[(&str, &str)]) -> Pipeline {
        let port = test_kit::free_port();
        let mut env = pipeline_env(&kafka, port);
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let logs = test_kit::repo_root()
            .join("target/e2e-logs")
            .join(kafka.topic_prefix.trim_end_matches('-'));
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let producer = Service::start("hookline-producer", &env, &logs);
        let renderer = Service::start("hookline-renderer", &env, &logs);
        let dispatcher = Service::start("hookline-dispatcher", &env, &logs);
        wait_healthy(&client, &base, Duration::from_secs(60)).await;
        Pipeline {
            kafka,
            env,
            base,
            client,
            logs,
            producer,
            renderer,
            dispatcher,
        }
    }

    /// Waits until the renderer, the aggregator and the dispatcher have committed every
    /// record on their input topics: every effect of what was written so far is then in
    /// Kafka, and every delivery was answered. A check that something did *not* happen
    /// (a second request) is made after this, not after a fixed sleep.
    pub async fn wait_drained(&self, bound: Duration) {
        let prefix = &self.kafka.topic_prefix;
        let pairs = [
            (
                format!("{prefix}hookline-renderer"),
                format!("{prefix}events"),
            ),
            (
                format!("{prefix}hookline-aggregator"),
                format!("{prefix}events"),
            ),
            (
                format!("{prefix}hookline-dispatcher"),
                format!("{prefix}rendered-deliveries"),
            ),
        ];
        let deadline = Instant::now() + bound;
        for (group, topic) in pairs {
            loop {
                let (kafka, g, t) = (self.kafka.clone(), group.clone(), topic.clone());
                let behind =
                    tokio::task::spawn_blocking(move || test_kit::group_behind(&kafka, &g, &t))
                        .await
                        .expect("lag check");
                if matches!(behind, Ok(0)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{group} is not caught up on {topic}: {behind:?} records behind"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// POSTs `body` to `path` with the token; panics unless it succeeds.
    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status}: {body}");
        body
    }

    /// Creates a sensitive-trace endpoint and returns its id.
    pub async fn create_trace_endpoint(&self, endpoint: Value) -> String {
        let created = self
            .post(
                "/sensitive-trace-endpoints",
                &json!({ "sensitive_trace_endpoint": endpoint }),
            )
            .await;
        created["sensitive_trace_endpoint"]["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Everything the services printed so far.
    pub fn output(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
        {
            all.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
        all
    }
}

/// The trace texts of one sensitive-trace request, in order.
pub fn trace_texts(request: &test_kit::Captured) -> Vec<String> {
    request.json()["sensitive_traces"]
        .as_array()
        .expect("a sensitive-trace request")
        .iter()
        .filter_map(|t| t["trace"].as_str().map(str::to_owned))
        .collect()
}

/// The most arrivals within any one-second window.
pub fn busiest_second(at: Vec<Instant>) -> usize {
    busiest_window(at).map_or(0, |(count, _)| count)
}

/// The most arrivals within any one-second window, and when that window starts.
pub fn busiest_window(mut at: Vec<Instant>) -> Option<(usize, Instant)> {
    at.sort_unstable();
    let mut busiest: Option<(usize, Instant)> = None;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end] - at[start] >= Duration::from_secs(1) {
            start += 1;
        }
        let count = end - start + 1;
        if busiest.is_none_or(|(most, _)| count > most) {
            busiest = Some((count, at[start]));
        }
    }
    busiest
}

/// The `fields` of every JSON log line whose message is `message`.
pub fn messages(log: &str, message: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .map(|v| v["fields"].clone())
        .collect()
}

/// Waits until each dispatcher's last assignment (in `outputs`, their logs) is its equal
/// share of the seven topics' `partitions` each: the group settled.
pub async fn wait_dispatchers_settled(
    outputs: impl Fn() -> Vec<String>,
    partitions: i32,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let logs = outputs();
        let share = 7 * usize::try_from(partitions).expect("partitions") / logs.len();
        let last: Vec<Option<u64>> = logs
            .iter()
            .map(|log| {
                messages(log, "partitions assigned")
                    .last()
                    .and_then(|f| f["partitions"].as_u64())
            })
            .collect();
        if last.iter().all(|p| *p == Some(share as u64)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the dispatchers never shared the partitions: last assignments {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts `event` to the producer at `base` once: whether it was accepted. A refusal
/// other than a server error (the producer stopping or its broker away) fails the test;
/// no answer at all (the producer gone) is `false`.
pub async fn offer_event(client: &reqwest::Client, base: &str, event: &Value) -> bool {
    let sent = client
        .post(format!("{base}/events"))
        .bearer_auth(TOKEN)
        .json(event)
        .send()
        .await;
    match sent {
        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => true,
        Ok(r) => {
            assert!(
                r.status().is_server_error(),
                "event refused: {}",
                r.status()
            );
            false
        }
        Err(_) => false,
    }
}
