//! How a service authenticates to Kafka and encrypts its connections: TLS and SASL
//! (PLAIN, SCRAM), handed to librdkafka by every client hookline creates.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// A configuration value that must never be printed: `Debug` and `Display` show
/// `[redacted]`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no value was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// librdkafka's `security.protocol` (`HOOKLINE_KAFKA_SECURITY_PROTOCOL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication (the default; a local or private broker).
    #[default]
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    /// TLS, optionally with a client certificate.
    #[serde(alias = "SSL")]
    Ssl,
    /// SASL without TLS.
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL over TLS (managed services).
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// librdkafka's `sasl.mechanism` (`HOOKLINE_KAFKA_SASL_MECHANISM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// User name and password in the clear (use it over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge and response, SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge and response, SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS and SASL settings; every field is a `HOOKLINE_KAFKA_*` variable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSecurity {
    /// `security.protocol`.
    pub kafka_security_protocol: SecurityProtocol,
    /// `sasl.mechanism`; required with a SASL protocol.
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
    /// `sasl.username`.
    pub kafka_sasl_username: String,
    /// `sasl.password`; never printed.
    pub kafka_sasl_password: Secret,
    /// `ssl.ca.location`: a PEM file of the CAs that sign the brokers' certificates;
    /// unset: the system's.
    pub kafka_ssl_ca_location: Option<String>,
    /// `ssl.certificate.location`: the client certificate (PEM), for brokers that
    /// authenticate clients by TLS.
    pub kafka_ssl_certificate_location: Option<String>,
    /// `ssl.key.location`: the client certificate's private key (PEM).
    pub kafka_ssl_key_location: Option<String>,
    /// `ssl.key.password`, when the key is encrypted; never printed.
    pub kafka_ssl_key_password: Secret,
}

impl KafkaSecurity {
    /// What is missing or contradictory, named by variable, without any value.
    pub fn check(&self) -> Result<(), String> {
        let protocol = self.kafka_security_protocol;
        if protocol.sasl() {
            if self.kafka_sasl_mechanism.is_none() {
                return Err(format!(
                    "HOOKLINE_KAFKA_SECURITY_PROTOCOL={} needs HOOKLINE_KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                    protocol.as_str()
                ));
            }
            if self.kafka_sasl_username.is_empty() || self.kafka_sasl_password.is_empty() {
                return Err(format!(
                    "HOOKLINE_KAFKA_SECURITY_PROTOCOL={} needs HOOKLINE_KAFKA_SASL_USERNAME and HOOKLINE_KAFKA_SASL_PASSWORD",
                    protocol.as_str()
                ));
            }
        } else if self.kafka_sasl_mechanism.is_some() {
            return Err(format!(
                "HOOKLINE_KAFKA_SASL_MECHANISM is set but HOOKLINE_KAFKA_SECURITY_PROTOCOL is {} (use sasl_ssl or sasl_plaintext)",
                protocol.as_str()
            ));
        }
        if self.kafka_ssl_certificate_location.is_some() != self.kafka_ssl_key_location.is_some() {
            return Err(
                "HOOKLINE_KAFKA_SSL_CERTIFICATE_LOCATION and HOOKLINE_KAFKA_SSL_KEY_LOCATION go together"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Sets these on a client's configuration.
    pub(crate) fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.kafka_security_protocol.as_str());
        if let Some(mechanism) = self.kafka_sasl_mechanism {
            config
                .set("sasl.mechanism", mechanism.as_str())
                .set("sasl.username", &self.kafka_sasl_username)
                .set("sasl.password", self.kafka_sasl_password.expose());
        }
        for (key, value) in [
            ("ssl.ca.location", &self.kafka_ssl_ca_location),
            (
                "ssl.certificate.location",
                &self.kafka_ssl_certificate_location,
            ),
            ("ssl.key.location", &self.kafka_ssl_key_location),
        ] {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
        if !self.kafka_ssl_key_password.is_empty() {
            config.set("ssl.key.password", self.kafka_ssl_key_password.expose());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> KafkaSecurity {
        serde_json::from_value(json).expect("parses")
    }

    #[test]
    fn sasl_needs_a_mechanism_and_credentials() {
        let table = [
            (serde_json::json!({}), None),
            (
                serde_json::json!({"kafka_security_protocol": "SASL_SSL"}),
                Some("needs HOOKLINE_KAFKA_SASL_MECHANISM"),
            ),
            (
                serde_json::json!({"kafka_security_protocol": "sasl_plaintext", "kafka_sasl_mechanism": "SCRAM-SHA-256", "kafka_sasl_username": "u"}),
                Some("needs HOOKLINE_KAFKA_SASL_USERNAME and HOOKLINE_KAFKA_SASL_PASSWORD"),
            ),
            (
                serde_json::json!({"kafka_security_protocol": "sasl_ssl", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u", "kafka_sasl_password": "p"}),
                None,
            ),
            (
                serde_json::json!({"kafka_sasl_mechanism": "PLAIN"}),
                Some("but HOOKLINE_KAFKA_SECURITY_PROTOCOL is plaintext"),
            ),
            (
                serde_json::json!({"kafka_security_protocol": "ssl", "kafka_ssl_certificate_location": "c.pem"}),
                Some("go together"),
            ),
        ];
        for (settings, error) in table {
            let got = parse(settings.clone()).check();
            match error {
                None => assert_eq!(got, Ok(()), "{settings}"),
                Some(e) => assert!(
                    got.as_ref().is_err_and(|g| g.contains(e)),
                    "{settings}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn passwords_are_never_printed() {
        let s = parse(
            serde_json::json!({"kafka_security_protocol": "sasl_ssl", "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "u", "kafka_sasl_password": "hunter2-sasl", "kafka_ssl_key_password": "hunter2-key"}),
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut config = ClientConfig::new();
        s.apply(&mut config);
        assert_eq!(config.get("sasl.password"), Some("hunter2-sasl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("ssl.key.password"), Some("hunter2-key"));
    }
}
