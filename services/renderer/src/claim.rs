//! One live renderer per instance id. The id is the aggregator's transactional id and
//! its static group member id, so two live processes with one id fence each other in
//! turn. Before it starts, a renderer claims its id on `instance-claims` (partition 0,
//! keyed by id) and then repeats the claim every [`INTERVAL`] while it runs; at a clean
//! stop it writes the claim released. A renderer that finds its id claimed by another
//! live process refuses to start and says which one.
//!
//! "Live" is judged without trusting clocks more than needed: a claim older than
//! [`STALE`] is a dead holder's; a predecessor on this host whose process is gone is
//! dead (a restart after `kill -9` starts at once); any other holder is watched for
//! [`MISSED`] of its intervals, and is live if it repeats its claim meanwhile. Two
//! processes claiming at the same moment are ordered by their claims' offsets: the
//! earlier one keeps the id.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use kafka_io::{CancellationToken, KafkaSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use wire::{InstanceClaim, Registry};

/// How often a holder repeats its claim.
const INTERVAL: Duration = Duration::from_secs(2);
/// A claim older than this, by this host's clock, is a dead holder's (clocks of hosts
/// are taken to agree within it).
const STALE: Duration = Duration::from_secs(30);
/// A holder that misses this many of its intervals (and one second more) is dead.
const MISSED: u32 = 3;
/// Bound on one Kafka call.
const CALL: Duration = Duration::from_secs(10);
/// How long start-up retries reads that fail (a topic just created has no leader for
/// a moment).
const PATIENCE: Duration = Duration::from_secs(60);

/// This process, as its claims name it.
#[derive(Debug, Clone)]
struct Me {
    incarnation: String,
    host: String,
    pid: i64,
}

/// A claim as read, with its offset and timestamp.
#[derive(Debug, Clone)]
struct Seen {
    offset: i64,
    at_ms: i64,
    claim: InstanceClaim,
}

/// The other processes that may hold `id` after `seen`: each incarnation's latest
/// claim, unless released, stale at `now_ms`, or a predecessor on this host that is
/// gone (`alive` tells).
fn rivals<'a>(
    seen: &'a [Seen],
    id: &str,
    me: &Me,
    now_ms: i64,
    alive: impl Fn(i64) -> bool,
) -> Vec<&'a Seen> {
    let mut latest: HashMap<&str, &Seen> = HashMap::new();
    for s in seen.iter().filter(|s| s.claim.instance_id == id) {
        let entry = latest.entry(s.claim.incarnation.as_str()).or_insert(s);
        if s.offset > entry.offset {
            *entry = s;
        }
    }
    let stale_ms = i64::try_from(STALE.as_millis()).unwrap_or(i64::MAX);
    let mut rivals: Vec<&Seen> = latest
        .into_values()
        .filter(|s| s.claim.incarnation != me.incarnation)
        .filter(|s| !s.claim.released)
        .filter(|s| now_ms.saturating_sub(s.at_ms) <= stale_ms)
        .filter(|s| !(s.claim.host == me.host && (s.claim.pid == me.pid || !alive(s.claim.pid))))
        .collect();
    rivals.sort_by_key(|s| s.offset);
    rivals
}

/// Whether process `pid` of this host runs (a zombie does not).
fn alive(pid: i64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last parenthesis.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The host name: the default instance id (a StatefulSet's pod name, a container's
/// host name).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "renderer".to_owned())
}

/// This process's claim on its instance id; it repeats the claim until
/// [`Claim::release`].
pub(crate) struct Claim {
    stop: CancellationToken,
    beats: Option<tokio::task::JoinHandle<()>>,
    writer: Writer,
}

/// Writes this process's claim record.
#[derive(Clone)]
struct Writer {
    producer: FutureProducer,
    topic: String,
    record: InstanceClaim,
    registry: std::sync::Arc<Registry>,
}

impl Writer {
    /// Writes the claim (released or not) and returns its offset.
    async fn send(&self, released: bool) -> anyhow::Result<i64> {
        let record = InstanceClaim {
            released,
            ..self.record.clone()
        };
        let bytes = self.registry.encode(&record)?;
        let record = FutureRecord::to(&self.topic)
            .partition(0)
            .key(&record.instance_id)
            .payload(&bytes);
        match self.producer.send(record, CALL).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((e, _)) => Err(e).context("writing the instance id claim"),
        }
    }
}

impl Claim {
    /// Claims `id`, or fails with a message naming the live process that holds it.
    pub(crate) async fn take(
        kafka: &KafkaSettings,
        topic: &str,
        id: &str,
        registry: std::sync::Arc<Registry>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Claim> {
        let me = Me {
            incarnation: uuid::Uuid::new_v4().to_string(),
            host: host_name(),
            pid: i64::from(std::process::id()),
        };
        let record = InstanceClaim {
            instance_id: id.to_owned(),
            incarnation: me.incarnation.clone(),
            host: me.host.clone(),
            pid: me.pid,
            interval_ms: i64::try_from(INTERVAL.as_millis()).unwrap_or(i64::MAX),
            released: false,
        };
        let producer =
            kafka_io::producer(kafka, "hookline-renderer-claim").context("creating producer")?;
        let mut reader = Reader::start(kafka, topic, registry.clone(), shutdown.clone()).await?;
        let claim = Claim {
            stop: CancellationToken::new(),
            beats: None,
            writer: Writer {
                producer,
                topic: topic.to_owned(),
                record,
                registry,
            },
        };
        // Who may hold the id: watch each for a few of its intervals.
        let mut seen = reader.read_to_end().await?;
        let watched: Vec<Seen> = rivals(&seen, id, &me, now_ms(), alive)
            .into_iter()
            .cloned()
            .collect();
        let mut dead = HashSet::new();
        if !watched.is_empty() {
            let longest = watched
                .iter()
                .map(|s| u64::try_from(s.claim.interval_ms).unwrap_or(0))
                .max()
                .unwrap_or(0)
                .min(10_000);
            let watch = Duration::from_millis(longest) * MISSED + Duration::from_secs(1);
            tracing::info!(instance_id = %id, ?watch, "instance id claimed recently: waiting to see whether its holder is alive");
            let last = watched.iter().map(|s| s.offset).max().unwrap_or(-1);
            seen.extend(reader.read_for(watch).await?);
            for rival in &watched {
                let beat = seen.iter().any(|s| {
                    s.offset > last
                        && s.claim.instance_id == id
                        && s.claim.incarnation == rival.claim.incarnation
                        && !s.claim.released
                });
                if beat {
                    bail!(held(
                        id,
                        &rival.claim,
                        "it repeated its claim while this one waited"
                    ));
                }
                dead.insert(rival.claim.incarnation.clone());
            }
        }
        // Claim, then look at everything written before the claim: an earlier claim by
        // another live process wins.
        let mine = claim.writer.send(false).await?;
        seen.extend(reader.read_through(mine).await?);
        seen.retain(|s| s.offset < mine);
        let earlier = rivals(&seen, id, &me, now_ms(), alive)
            .into_iter()
            .find(|s| !dead.contains(&s.claim.incarnation))
            .map(|s| s.claim.clone());
        if let Some(earlier) = earlier {
            let _ = claim.writer.send(true).await;
            bail!(held(id, &earlier, "it claimed the id just before this one"));
        }
        tracing::info!(instance_id = %id, topic = %topic, "instance id claimed");
        Ok(claim.beating())
    }

    /// Starts repeating the claim.
    fn beating(mut self) -> Claim {
        let (writer, stop) = (self.writer.clone(), self.stop.clone());
        self.beats = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(INTERVAL) => {}
                }
                if let Err(e) = writer.send(false).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot repeat the instance id claim");
                }
            }
        }));
        self
    }

    /// Stops repeating the claim and writes it released, so the next start with this
    /// id need not wait.
    pub(crate) async fn release(mut self) {
        self.stop.cancel();
        if let Some(beats) = self.beats.take() {
            let _ = beats.await;
        }
        if let Err(e) = self.writer.send(true).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot release the instance id");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn held(id: &str, holder: &InstanceClaim, why: &str) -> String {
    format!(
        "HOOKLINE_INSTANCE_ID {id} is held by another live renderer (host {}, pid {}): {why}. \
         Two renderers with one id fence each other; give each replica its own id, or leave \
         HOOKLINE_INSTANCE_ID unset to use the host name",
        holder.host, holder.pid
    )
}

/// Assigns `consumer` partition 0 of `topic` from the first claim written within
/// twice [`STALE`], or from the end; returns that offset.
fn start_at(consumer: &BaseConsumer, topic: &str) -> KafkaResult<i64> {
    let since = now_ms() - 2 * i64::try_from(STALE.as_millis()).unwrap_or(0);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition_offset(topic, 0, Offset::Offset(since))?;
    let found = consumer.offsets_for_times(wanted, CALL)?;
    let from = match found.find_partition(topic, 0).map(|p| p.offset()) {
        Some(Offset::Offset(o)) => o,
        // Nothing that recent: from the end.
        _ => consumer.fetch_watermarks(topic, 0, CALL)?.1,
    };
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    Ok(from)
}

/// Reads partition 0 of the claims topic from [`STALE`] (twice over) ago.
struct Reader {
    consumer: std::sync::Arc<BaseConsumer>,
    topic: String,
    registry: std::sync::Arc<Registry>,
    shutdown: CancellationToken,
    /// The offset of the next record to read.
    next: i64,
}

impl Reader {
    async fn start(
        kafka: &KafkaSettings,
        topic: &str,
        registry: std::sync::Arc<Registry>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Reader> {
        let mut config =
            kafka_io::consumer_config(kafka, "hookline-renderer-claim", "hookline-claims-unused");
        config
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50");
        let consumer: BaseConsumer = config.create().context("creating the claims reader")?;
        let consumer = std::sync::Arc::new(consumer);
        let next = kafka_io::retry_for(PATIENCE, "reading instance claims", &shutdown, || {
            let (c, t) = (consumer.clone(), topic.to_owned());
            async move {
                tokio::task::spawn_blocking(move || start_at(&c, &t))
                    .await
                    .map_err(|_| KafkaError::Canceled)?
            }
        })
        .await
        .context("reading instance claims")?;
        Ok(Reader {
            consumer,
            topic: topic.to_owned(),
            registry,
            shutdown,
            next,
        })
    }

    /// Everything up to the partition's end now.
    async fn read_to_end(&mut self) -> anyhow::Result<Vec<Seen>> {
        let (_, high) =
            kafka_io::retry_for(PATIENCE, "reading instance claims", &self.shutdown, || {
                let (c, t) = (self.consumer.clone(), self.topic.clone());
                async move {
                    tokio::task::spawn_blocking(move || c.fetch_watermarks(&t, 0, CALL))
                        .await
                        .map_err(|_| KafkaError::Canceled)?
                }
            })
            .await
            .context("reading the end of instance claims")?;
        self.read_through(high - 1).await
    }

    /// Everything up to and including `offset`.
    async fn read_through(&mut self, offset: i64) -> anyhow::Result<Vec<Seen>> {
        let deadline = Instant::now() + CALL * 3;
        let mut seen = Vec::new();
        loop {
            if self.next > offset {
                return Ok(seen);
            }
            if Instant::now() > deadline {
                bail!(
                    "instance claims could not be read up to offset {offset} (at {})",
                    self.next
                );
            }
            seen.extend(self.poll(Duration::from_millis(200)).await?);
        }
    }

    /// Whatever arrives within `watch`.
    async fn read_for(&mut self, watch: Duration) -> anyhow::Result<Vec<Seen>> {
        let deadline = Instant::now() + watch;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            seen.extend(self.poll(Duration::from_millis(200)).await?);
        }
        Ok(seen)
    }

    async fn poll(&mut self, wait: Duration) -> anyhow::Result<Vec<Seen>> {
        if self.shutdown.is_cancelled() {
            bail!("stopped while claiming the instance id");
        }
        let (c, registry) = (self.consumer.clone(), self.registry.clone());
        let (seen, next) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<Seen>, i64)> {
                let (mut seen, mut next) = (Vec::new(), 0);
                let mut wait = wait;
                while let Some(message) = c.poll(wait) {
                    wait = Duration::ZERO;
                    // Transient (the broker away a moment): the caller's bound decides.
                    let message = match message {
                        Ok(message) => message,
                        Err(e) => {
                            tracing::info!(error = %e, "reading instance claims");
                            break;
                        }
                    };
                    next = message.offset() + 1;
                    // A record this version cannot read is no claim it can judge.
                    let Some(claim) = message
                        .payload()
                        .and_then(|p| registry.decode::<InstanceClaim>(p).ok())
                    else {
                        continue;
                    };
                    seen.push(Seen {
                        offset: message.offset(),
                        at_ms: message.timestamp().to_millis().unwrap_or(0),
                        claim,
                    });
                }
                Ok((seen, next))
            })
            .await??;
        self.next = self.next.max(next);
        Ok(seen)
    }
}

#[cfg(test)]
mod tests;
