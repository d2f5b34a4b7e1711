//! Topic names under the configured prefix, and their creation at start-up.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::client::KafkaSettings;

/// The topics of the pipeline, with the prefix applied.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Events from transfer engines and the producer API.
    pub events: String,
    /// Endpoint configuration (compacted), keyed by endpoint id.
    pub endpoints: String,
    /// Rendered HTTP requests, keyed by endpoint id.
    pub rendered_deliveries: String,
    /// What could not be delivered or read.
    pub dead_letter: String,
    /// Key material (compacted): the account's signing key, sealed.
    pub keys: String,
    /// The renderer's aggregation state (compacted): each open transfer's sensitive
    /// traces, sealed, in the partition of the transfer's events.
    pub sensitive_trace_changelog: String,
    /// Retry tiers: deliveries waiting for their next attempt, one topic per tier
    /// delay (see [`RETRY_TIERS`]), keyed by endpoint id.
    pub retry_tiers: Vec<String>,
    /// The attempt log: every attempt's outcome, keyed by endpoint id.
    pub delivery_attempts: String,
    /// Dead letters re-queued by a replay (compacted), keyed by dead-letter id.
    pub dead_letter_replays: String,
    /// Changes to endpoints other services ask the producer (their one writer) to
    /// make, keyed by endpoint id.
    pub endpoint_requests: String,
    /// The delivery listing (compacted): each listed delivery's summary, keyed by
    /// `<endpoint_id>/<delivery_id>`, in the partition its attempts have in
    /// `delivery_attempts`.
    pub delivery_index: String,
    /// Renderers' claims on their instance ids, repeated while they run (only
    /// partition 0 is used), keyed by instance id.
    pub instance_claims: String,
}

/// The retry tiers' delays, shortest first: a record in tier `i` is not read before
/// `RETRY_TIERS[i]` after it was written, so each tier topic is in due order.
pub const RETRY_TIERS: [(&str, Duration); 6] = [
    ("1s", Duration::from_secs(1)),
    ("5s", Duration::from_secs(5)),
    ("30s", Duration::from_secs(30)),
    ("5m", Duration::from_secs(5 * 60)),
    ("30m", Duration::from_secs(30 * 60)),
    ("2h", Duration::from_secs(2 * 60 * 60)),
];

impl Topics {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Topics {
            events: format!("{prefix}events"),
            endpoints: format!("{prefix}endpoints"),
            rendered_deliveries: format!("{prefix}rendered-deliveries"),
            dead_letter: format!("{prefix}dead-letter"),
            keys: format!("{prefix}keys"),
            sensitive_trace_changelog: format!("{prefix}sensitive-trace-changelog"),
            retry_tiers: RETRY_TIERS
                .iter()
                .map(|(name, _)| format!("{prefix}retry-{name}"))
                .collect(),
            delivery_attempts: format!("{prefix}delivery-attempts"),
            dead_letter_replays: format!("{prefix}dead-letter-replays"),
            endpoint_requests: format!("{prefix}endpoint-requests"),
            instance_claims: format!("{prefix}instance-claims"),
            delivery_index: format!("{prefix}delivery-index"),
        }
    }

    /// Every topic with the cleanup policy it needs.
    pub fn specs(&self) -> Vec<TopicSpec> {
        let mut specs = vec![
            TopicSpec {
                name: self.events.clone(),
                compacted: false,
                retention: None,
            },
            TopicSpec {
                name: self.endpoints.clone(),
                compacted: true,
                retention: None,
            },
            TopicSpec {
                name: self.rendered_deliveries.clone(),
                compacted: false,
                retention: None,
            },
            TopicSpec {
                name: self.dead_letter.clone(),
                compacted: false,
                retention: None,
            },
            TopicSpec {
                name: self.keys.clone(),
                compacted: true,
                retention: None,
            },
            TopicSpec {
                name: self.sensitive_trace_changelog.clone(),
                compacted: true,
                retention: None,
            },
            TopicSpec {
                name: self.delivery_attempts.clone(),
                compacted: false,
                retention: None,
            },
            TopicSpec {
                name: self.dead_letter_replays.clone(),
                compacted: true,
                retention: None,
            },
            TopicSpec {
                name: self.endpoint_requests.clone(),
                compacted: false,
                retention: None,
            },
            TopicSpec {
                name: self.delivery_index.clone(),
                compacted: true,
                retention: None,
            },
            // Only the last minute is ever read: an hour of heartbeats is plenty.
            TopicSpec {
                name: self.instance_claims.clone(),
                compacted: false,
                retention: Some(Duration::from_secs(3600)),
            },
        ];
        specs.extend(self.retry_tiers.iter().map(|name| TopicSpec {
            name: name.clone(),
            compacted: false,
            retention: None,
        }));
        specs
    }
}

/// Whether `topic` (prefixed or not) is a retry tier, whose records wait on purpose.
pub fn is_retry_tier(topic: &str) -> bool {
    RETRY_TIERS.iter().any(|(name, _)| {
        topic
            .strip_suffix(name)
            .is_some_and(|t| t.ends_with("retry-"))
    })
}

/// `segment.ms` of compacted topics: one hour.
const COMPACTED_SEGMENT_MS: &str = "3600000";

/// A topic to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Full name.
    pub name: String,
    /// `cleanup.policy=compact` when true.
    pub compacted: bool,
    /// `retention.ms` (and `segment.ms`, a sixth of it, so old segments go) instead of
    /// the broker's default.
    pub retention: Option<Duration>,
}

/// Creates the topics that do not exist yet; existing topics are left as they are.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::client::producer_config(settings, "hookline-admin").create()?;
    let max_bytes = crate::MAX_RECORD_BYTES.to_string();
    // `NewTopic` borrows its settings.
    let retentions: Vec<Option<(String, String)>> = specs
        .iter()
        .map(|s| {
            s.retention.map(|r| {
                let ms = r.as_millis();
                (ms.to_string(), (ms / 6).max(1).to_string())
            })
        })
        .collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retentions)
        .map(|(s, retention)| {
            let mut topic = NewTopic::new(
                &s.name,
                settings.topic_partitions,
                TopicReplication::Fixed(settings.topic_replication),
            )
            .set("max.message.bytes", &max_bytes);
            if s.compacted {
                // Every compacted topic is read from its start by whoever follows it:
                // segments roll hourly, so the cleaner reaches records within hours,
                // not when a 1 GiB segment fills.
                topic = topic
                    .set("cleanup.policy", "compact")
                    .set("segment.ms", COMPACTED_SEGMENT_MS);
            }
            if let Some((retention, segment)) = retention {
                topic = topic
                    .set("retention.ms", retention)
                    .set("segment.ms", segment);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = settings.topic_partitions, "topic created")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(TopicError::Topic(name, code)),
        }
    }
    // A topic just created has no partition leaders for a moment: wait until every
    // partition has one, so the first read or write does not fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = {
            // Blocking, but only at start-up and answered locally by the broker.
            let metadata = admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(10))?;
            specs.iter().all(|spec| {
                metadata.topics().iter().any(|t| {
                    t.name() == spec.name
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                })
            })
        };
        if ready {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(TopicError::NotReady);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Why topics could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client failed.
    #[error("kafka admin: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Topics exist but their partitions got no leader in time.
    #[error("topics have no partition leaders after 30 s")]
    NotReady,
    /// A topic was refused.
    #[error("cannot create topic {0}: {1}")]
    Topic(String, RDKafkaErrorCode),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_tiers_are_told_by_name_with_any_prefix() {
        let topics = Topics::new("prod.");
        for tier in &topics.retry_tiers {
            assert!(is_retry_tier(tier), "{tier}");
        }
        assert!(is_retry_tier("retry-5m"));
        for other in [
            topics.rendered_deliveries.as_str(),
            "prod.events",
            "retry-7s",
            "xretry",
        ] {
            assert!(!is_retry_tier(other), "{other}");
        }
    }
}
