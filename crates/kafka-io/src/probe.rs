//! Whether a service's Kafka is usable, for its readiness: the cluster answers a
//! metadata request and every topic the service uses exists, with a leader for each
//! partition.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::client::KafkaSettings;

/// How long a probe waits for the cluster's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A probe on its own connection (not behind a consumer's fetch long-poll).
#[derive(Clone)]
pub struct KafkaProbe {
    client: Arc<BaseConsumer>,
    topics: Arc<Vec<String>>,
}

impl KafkaProbe {
    /// A probe for `topics`; creating it does not contact the cluster.
    pub fn new(settings: &KafkaSettings, topics: Vec<String>) -> rdkafka::error::KafkaResult<Self> {
        let config =
            crate::client::consumer_config(settings, "hookline-probe", "hookline-probe-unused");
        Ok(KafkaProbe {
            client: Arc::new(config.create()?),
            topics: Arc::new(topics),
        })
    }

    /// `Err` says what is wrong, in words fit for an unauthenticated response.
    pub async fn check(&self) -> Result<(), String> {
        let (client, topics) = (self.client.clone(), self.topics.clone());
        tokio::task::spawn_blocking(move || check(&client, &topics))
            .await
            .unwrap_or_else(|_| Err("the probe stopped".to_owned()))
    }
}

fn check(client: &BaseConsumer, topics: &[String]) -> Result<(), String> {
    let metadata = client
        .fetch_metadata(None, PROBE_TIMEOUT)
        .map_err(|e| format!("Kafka does not answer ({e})"))?;
    for topic in topics {
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(format!("topic {topic} does not exist"));
        };
        if let Some(e) = found.error() {
            let code = rdkafka::types::RDKafkaErrorCode::from(e);
            return Err(format!("topic {topic}: {code}"));
        }
        if found.partitions().is_empty() {
            return Err(format!("topic {topic} has no partitions"));
        }
        if let Some(p) = found.partitions().iter().find(|p| p.leader() < 0) {
            return Err(format!("topic {topic} partition {} has no leader", p.id()));
        }
    }
    Ok(())
}
