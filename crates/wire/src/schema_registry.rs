//! A client of the Confluent Schema Registry REST API (also served by Apicurio Registry
//! under `/apis/ccompat/v7`, and by Karapace and Redpanda): the five calls hookline
//! makes, with errors sorted by what the caller must do about them.
//!
//! - [`RegistryError::NotFound`]: the registry answered that the id or subject does not
//!   exist (a record's fault: its dead letter);
//! - [`RegistryError::Unavailable`] and [`RegistryError::Auth`]: not the record's
//!   fault (wait and retry; an operator fixes credentials);
//! - [`RegistryError::Refused`]: the registry judged the request (an incompatible
//!   schema is a 409).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

/// The media type of the registry's API.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How hookline reaches a registry.
#[derive(Clone, Default)]
pub struct RegistrySettings {
    /// Base URL, e.g. `http://registry:8081` or `http://apicurio:8080/apis/ccompat/v7`.
    pub url: String,
    /// HTTP basic auth user (with `password`).
    pub username: Option<String>,
    /// HTTP basic auth password.
    pub password: Option<String>,
    /// A bearer token, sent instead of basic auth.
    pub token: Option<String>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        f.debug_struct("RegistrySettings")
            .field("url", &self.url)
            .field("basic_auth", &self.username.is_some())
            .field("token", &self.token.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a registry call can end in besides success. Messages carry status codes and the
/// registry's own error text (about schemas and subjects), never a record's data or a
/// credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The id, subject or version does not exist (HTTP 404, with the registry's error
    /// code: 40403 for a schema id, 40401 for a subject; 0 when the answer had none,
    /// as from a URL that is not a registry).
    #[error("not found in the Schema Registry (error {0})")]
    NotFound(i64),
    /// The registry refused the credentials (HTTP 401 or 403).
    #[error("the Schema Registry refused hookline's credentials (HTTP {0})")]
    Auth(u16),
    /// No answer, a timeout, or a server error: try again later.
    #[error("the Schema Registry is unavailable: {0}")]
    Unavailable(String),
    /// The registry judged the request and said no (e.g. 409: incompatible schema).
    #[error("the Schema Registry refused the request (HTTP {status}, error {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The registry's error code, e.g. 409 or 42201.
        code: i64,
        /// The registry's message.
        message: String,
    },
    /// An answer hookline cannot read.
    #[error("unreadable answer from the Schema Registry: {0}")]
    Invalid(String),
}

impl RegistryError {
    /// The stable code logged and counted for this error.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "HL-REGISTRY-NOT-FOUND",
            RegistryError::Auth(_) => "HL-REGISTRY-AUTH",
            RegistryError::Unavailable(_) => "HL-REGISTRY-UNAVAILABLE",
            RegistryError::Refused { .. } => "HL-REGISTRY-REFUSED",
            RegistryError::Invalid(_) => "HL-REGISTRY-INVALID-ANSWER",
        }
    }
}

/// A registered schema as the registry returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The registry-wide schema id (what the wire format carries).
    pub id: u32,
    /// The subject's version number.
    pub version: u32,
}

/// The answer to a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    /// Whether the schema may be registered under the subject's compatibility rule.
    pub compatible: bool,
    /// The registry's reasons when it is not (empty when the registry gives none).
    pub messages: Vec<String>,
}

/// A Schema Registry client. Cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub struct SchemaRegistry {
    settings: RegistrySettings,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

impl SchemaRegistry {
    /// A client for `settings.url`; TLS certificates are verified against the
    /// platform's roots.
    pub fn new(settings: RegistrySettings) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RegistryError::Invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(SchemaRegistry { settings, http })
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        self.settings.url.trim_end_matches('/')
    }

    /// The schema text registered under `id` (Avro only).
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        #[derive(Deserialize)]
        struct Answer {
            schema: String,
            #[serde(rename = "schemaType")]
            schema_type: Option<String>,
        }
        let answer: Answer = self
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        match answer.schema_type.as_deref() {
            None | Some("AVRO") => Ok(answer.schema),
            Some(other) => Err(RegistryError::Refused {
                status: 200,
                code: 0,
                message: format!("schema {id} is {other}, not AVRO"),
            }),
        }
    }

    /// Registers `schema` under `subject` (idempotent: an identical schema keeps its id).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<Registered, RegistryError> {
        #[derive(Deserialize)]
        struct Answer {
            id: u32,
        }
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = json!({"schema": schema, "schemaType": "AVRO"});
        let Answer { id } = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        // The registration answer holds only the id; the version comes from a lookup.
        let found = self.lookup(subject, schema).await?;
        Ok(found.unwrap_or(Registered { id, version: 0 }))
    }

    /// The id and version of `schema` under `subject`, if it is registered there.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<Registered>, RegistryError> {
        #[derive(Deserialize)]
        struct Answer {
            id: u32,
            version: u32,
        }
        let path = format!("/subjects/{}", encode(subject));
        let body = json!({"schema": schema, "schemaType": "AVRO"});
        match self
            .call::<Answer>(reqwest::Method::POST, &path, Some(body))
            .await
        {
            Ok(a) => Ok(Some(Registered {
                id: a.id,
                version: a.version,
            })),
            Err(RegistryError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the compatibility rule of `subject` (`BACKWARD`, `FULL_TRANSITIVE`, …).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let path = format!("/config/{}", encode(subject));
        let _: serde_json::Value = self
            .call(
                reqwest::Method::PUT,
                &path,
                Some(json!({"compatibility": level})),
            )
            .await?;
        Ok(())
    }

    /// Whether `schema` is compatible with what `subject` holds, under the subject's
    /// rule. `None` when the subject has no version yet.
    pub async fn check(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<Compatibility>, RegistryError> {
        #[derive(Deserialize)]
        struct Answer {
            is_compatible: bool,
            #[serde(default)]
            messages: Vec<serde_json::Value>,
        }
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            encode(subject)
        );
        let body = json!({"schema": schema, "schemaType": "AVRO"});
        match self
            .call::<Answer>(reqwest::Method::POST, &path, Some(body))
            .await
        {
            Ok(a) => Ok(Some(Compatibility {
                compatible: a.is_compatible,
                messages: a
                    .messages
                    .into_iter()
                    .map(|m| match m {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect(),
            })),
            Err(RegistryError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, RegistryError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .header(reqwest::header::ACCEPT, MEDIA_TYPE);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE)
                .body(body.to_string());
        }
        request = match (&self.settings.token, &self.settings.username) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Some(user)) => request.basic_auth(user, self.settings.password.as_ref()),
            (None, None) => request,
        };
        // reqwest's error text names the URL, never the credentials.
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(without_url(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RegistryError::Unavailable(without_url(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::Invalid(format!("{path}: {e}")));
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let code = error.as_ref().and_then(|e| e.error_code).unwrap_or(0);
        let message = error
            .and_then(|e| e.message)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
        Err(match status.as_u16() {
            401 | 403 => RegistryError::Auth(status.as_u16()),
            404 => RegistryError::NotFound(code),
            408 | 429 => RegistryError::Unavailable(format!("HTTP {status}")),
            s if s >= 500 => RegistryError::Unavailable(format!("HTTP {status}")),
            s => RegistryError::Refused {
                status: s,
                code,
                message,
            },
        })
    }
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A subject as one path segment: `/`, `%`, spaces and the like escaped.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// What went wrong, without the URL (which may hold user info).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut reason = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = format!("{kind}: {s}");
        source = s.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_escaped_as_one_path_segment() {
        assert_eq!(encode("hl-events.value_1"), "hl-events.value_1");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn credentials_are_never_printed() {
        let settings = RegistrySettings {
            url: "https://registry.example".into(),
            username: Some("user".into()),
            password: Some("hunter2-password".into()),
            token: Some("token-secret".into()),
            timeout: Duration::from_secs(1),
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("token-secret"), "{printed}");
    }
}
