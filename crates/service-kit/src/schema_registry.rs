//! The Schema Registry settings the renderer, the producer and the CLI share
//! (`HOOKLINE_SCHEMA_REGISTRY_*`), and the client they make.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Where the Schema Registry is and how to sign in; flattened into a service's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchemaRegistryConfig {
    /// Base URL of a Confluent-compatible registry API (`HOOKLINE_SCHEMA_REGISTRY_URL`;
    /// Apicurio: `…/apis/ccompat/v7`). Empty: no registry.
    pub schema_registry_url: String,
    /// Basic auth user (`HOOKLINE_SCHEMA_REGISTRY_USERNAME`).
    pub schema_registry_username: String,
    /// Basic auth password (`HOOKLINE_SCHEMA_REGISTRY_PASSWORD`).
    pub schema_registry_password: Secret,
    /// Bearer token, used instead of basic auth (`HOOKLINE_SCHEMA_REGISTRY_TOKEN`).
    pub schema_registry_token: Secret,
    /// Bound on one registry request (`HOOKLINE_SCHEMA_REGISTRY_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub schema_registry_timeout: Duration,
    /// The subject hookline's event schema is registered under
    /// (`HOOKLINE_SCHEMA_REGISTRY_SUBJECT`). Empty: `<topic prefix>events-value`
    /// (TopicNameStrategy).
    pub schema_registry_subject: String,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        SchemaRegistryConfig {
            schema_registry_url: String::new(),
            schema_registry_username: String::new(),
            schema_registry_password: Secret::default(),
            schema_registry_token: Secret::default(),
            schema_registry_timeout: Duration::from_secs(10),
            schema_registry_subject: String::new(),
        }
    }
}

impl SchemaRegistryConfig {
    /// The client, or `None` when no URL is set.
    pub fn client(&self) -> anyhow::Result<Option<wire::SchemaRegistry>> {
        if self.schema_registry_url.is_empty() {
            return Ok(None);
        }
        let url = url::Url::parse(&self.schema_registry_url)
            .map_err(|e| anyhow::anyhow!("HOOKLINE_SCHEMA_REGISTRY_URL is not a URL: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "HOOKLINE_SCHEMA_REGISTRY_URL must be http or https"
        );
        anyhow::ensure!(
            url.username().is_empty() && url.password().is_none(),
            "HOOKLINE_SCHEMA_REGISTRY_URL must not hold credentials: set HOOKLINE_SCHEMA_REGISTRY_USERNAME and _PASSWORD, or _TOKEN"
        );
        anyhow::ensure!(
            self.schema_registry_password.is_empty() || !self.schema_registry_username.is_empty(),
            "HOOKLINE_SCHEMA_REGISTRY_PASSWORD is set without HOOKLINE_SCHEMA_REGISTRY_USERNAME"
        );
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let client = wire::SchemaRegistry::new(wire::RegistrySettings {
            url: self.schema_registry_url.clone(),
            username: some(&self.schema_registry_username),
            password: some(self.schema_registry_password.expose()),
            token: some(self.schema_registry_token.expose()),
            timeout: self.schema_registry_timeout,
        })?;
        Ok(Some(client))
    }

    /// The subject of hookline's event schema under `topic_prefix`.
    pub fn subject(&self, topic_prefix: &str) -> String {
        if self.schema_registry_subject.is_empty() {
            format!("{topic_prefix}events-value")
        } else {
            self.schema_registry_subject.clone()
        }
    }
}
