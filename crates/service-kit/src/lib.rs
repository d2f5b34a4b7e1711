//! What every hookline service needs at its edges: configuration loaded once
//! (defaults, then an optional TOML file, then `HOOKLINE_*` environment variables),
//! a shutdown token fired by SIGTERM/SIGINT, and structured logging.

mod admin;
pub mod schedule;
mod schema_registry;
pub mod telemetry;

pub use admin::start_admin;
pub use schema_registry::SchemaRegistryConfig;

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Loads a service's configuration: `T::default()`, overridden by the TOML file named
/// in `HOOKLINE_CONFIG` (if set), overridden by `HOOKLINE_<FIELD>` variables.
///
/// An environment value is read as the type of the field it sets: a token of digits
/// stays a string, a port is parsed as a number. Variables naming no field of `T` are
/// ignored: the services share one environment.
pub fn load_config<T: Serialize + DeserializeOwned + Default>() -> anyhow::Result<T> {
    let vars = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("HOOKLINE_")?.to_ascii_lowercase(), v)));
    let file = match std::env::var_os("HOOKLINE_CONFIG").map(PathBuf::from) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "HOOKLINE_CONFIG names {}, which cannot be read",
                    path.display()
                )
            })?;
            Some(
                toml::from_str::<Value>(&text)
                    .with_context(|| format!("{} is not valid TOML", path.display()))?,
            )
        }
        None => None,
    };
    config_from(file, vars)
}

/// [`load_config`] with its inputs given: the file's contents and the variables
/// (lower-case names without the prefix).
pub fn config_from<T: Serialize + DeserializeOwned + Default>(
    file: Option<Value>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<T> {
    let Value::Object(mut merged) = serde_json::to_value(T::default())? else {
        anyhow::bail!("configuration must be a struct");
    };
    let defaults = merged.clone();
    if let Some(file) = file {
        let Value::Object(file) = file else {
            anyhow::bail!("configuration file must be a table")
        };
        for (key, value) in file {
            let Some(default) = defaults.get(&key) else {
                anyhow::bail!("configuration file: unknown setting `{key}`");
            };
            // A number or boolean given for a text setting (a token of digits) is text.
            let value = match (default, value) {
                (Value::String(_), Value::Number(n)) => Value::String(n.to_string()),
                (Value::String(_), Value::Bool(b)) => Value::String(b.to_string()),
                (_, v) => v,
            };
            merged.insert(key, value);
        }
    }
    for (key, raw) in vars {
        let Some(default) = defaults.get(&key) else {
            continue;
        };
        let value = typed_like(default, &raw).with_context(|| {
            format!(
                "HOOKLINE_{}: cannot be read as {}",
                key.to_ascii_uppercase(),
                kind(default)
            )
        })?;
        merged.insert(key, value);
    }
    // An optional setting (unset by default) is read as text, or as a number when it
    // reads as one and the setting takes a number.
    let fits = |key: &str, value: Value| {
        let mut probe = defaults.clone();
        probe.insert(key.to_owned(), value);
        serde_json::from_value::<T>(Value::Object(probe)).is_ok()
    };
    for (key, default) in &defaults {
        if let (Value::Null, Some(Value::String(raw))) = (default, merged.get(key))
            && let Ok(number) = raw.trim().parse::<serde_json::Number>()
            && !fits(key, Value::String(raw.clone()))
            && fits(key, Value::Number(number.clone()))
        {
            merged.insert(key.clone(), Value::Number(number));
        }
    }
    // serde's message can quote the offending value, which may be a secret: name the
    // setting instead.
    serde_json::from_value(Value::Object(merged.clone())).map_err(|_| {
        let culprit = merged
            .iter()
            .find(|(k, v)| {
                let mut probe = defaults.clone();
                probe.insert((*k).clone(), (*v).clone());
                serde_json::from_value::<T>(Value::Object(probe)).is_err()
            })
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| "?".to_owned());
        anyhow::anyhow!("invalid configuration: setting `{culprit}` (HOOKLINE_{}) has a value of the wrong kind", culprit.to_ascii_uppercase())
    })
}

fn typed_like(default: &Value, raw: &str) -> anyhow::Result<Value> {
    Ok(match default {
        Value::Bool(_) => Value::Bool(match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => anyhow::bail!("not a boolean"),
        }),
        Value::Number(_) => Value::Number(raw.trim().parse::<serde_json::Number>()?),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        _ => Value::String(raw.to_owned()),
    })
}

fn kind(default: &Value) -> &'static str {
    match default {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Array(_) => "a comma-separated list",
        _ => "a string",
    }
}

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Structured logs to stderr: `RUST_LOG` filters (default `info`), and
/// `HOOKLINE_LOG_FORMAT=json` switches to one JSON object per line.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("HOOKLINE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs a service's `run(config, shutdown)` under the usual edges: logging, config,
/// signals, and an exit code.
pub fn main<C, F, Fut>(name: &str, run: F) -> std::process::ExitCode
where
    C: Serialize + DeserializeOwned + Default,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let telemetry = telemetry::init(name);
    log_panics_without_messages();
    let code = run_service(name, run);
    telemetry.shutdown();
    code
}

/// Replaces the default panic hook, which prints the panic's message to stderr: a
/// message may quote what was being handled (an event's trace text, a secret). The log
/// line keeps where it happened; the record, if any, is dead-lettered
/// (`dead_letter::DeadLetters::unless_panic`).
fn log_panics_without_messages() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            location,
            thread = thread.name().unwrap_or("unnamed"),
            "panicked (the message is not logged: it may quote the data being handled)"
        );
    }));
}

fn run_service<C, F, Fut>(name: &str, run: F) -> std::process::ExitCode
where
    C: Serialize + DeserializeOwned + Default,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match load_config::<C>() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(service = name, error = format!("{e:#}"), "cannot start");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(service = name, error = %e, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_on_signals();
        run(config, shutdown).await
    });
    // Blocking calls still running (a Kafka query) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => {
            tracing::info!(service = name, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(service = name, error = format!("{e:#}"), "failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A configuration value that must never be printed (kept in `kafka_io`, which
/// needs it for Kafka credentials).
pub use kafka_io::Secret;

/// The sealer of the master key and the earlier ones (comma-separated), or a start-up
/// error that says what to do.
pub fn sealer(master_key: &Secret, previous: &Secret) -> anyhow::Result<signing::Sealer> {
    anyhow::ensure!(
        !master_key.is_empty(),
        "HOOKLINE_MASTER_KEY is not set: secrets are sealed with it before they reach Kafka (generate one with `openssl rand -base64 32`)"
    );
    let previous: Vec<&str> = previous
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    let sealer = signing::Sealer::from_keys(master_key.expose(), &previous)?;
    tracing::info!(sealing_key = sealer.key_id(), opening_keys = ?sealer.key_ids(), "master keys loaded");
    Ok(sealer)
}

/// Reads the `keys` topic and checks that the master key opens the account's signing
/// key (when there is one yet): a wrong `HOOKLINE_MASTER_KEY` is a start-up error,
/// not secrets that fail to open later. Returns the table for services that sign.
pub async fn check_master_key(
    kafka: &kafka_io::KafkaSettings,
    topics: &kafka_io::Topics,
    sealer: &signing::Sealer,
    shutdown: &CancellationToken,
) -> anyhow::Result<kafka_io::Table<wire::SigningKey>> {
    let registry = std::sync::Arc::new(wire::Registry::bundled()?);
    let keys = kafka_io::Table::start(
        kafka,
        &topics.keys,
        move |bytes| registry.decode::<wire::SigningKey>(bytes).ok(),
        shutdown.child_token(),
    )
    .await
    .context("reading keys")?;
    const WRONG: &str = "HOOKLINE_MASTER_KEY does not open this cluster's secrets: it is not the master key they were sealed with";
    if let Some(key) = keys.get(SIGNING_KEY) {
        open_signing_key(sealer, &key).context(WRONG)?;
    }
    // A sealed check value, written by whichever service starts first, catches a wrong
    // master key before any secret exists.
    match keys.get(MASTER_CHECK) {
        Some(check) => {
            sealer
                .open(
                    &check.private_key_sealed,
                    &signing::key_context(MASTER_CHECK),
                )
                .map_err(|_| anyhow::anyhow!(WRONG))?;
        }
        None => {
            let record = wire::SigningKey {
                kid: MASTER_CHECK.to_owned(),
                algorithm: "none".to_owned(),
                public_key_pem: String::new(),
                private_key_sealed: sealer.seal(
                    b"hookline master key check",
                    &signing::key_context(MASTER_CHECK),
                ),
                created_at: wire::now_rfc3339(),
                previous_keys: Vec::new(),
            };
            let registry = wire::Registry::bundled()?;
            let bytes = registry.encode(&record)?;
            let producer = kafka_io::producer(kafka, "hookline-master-check")?;
            let written = kafka_io::send_durably(
                &producer,
                &topics.keys,
                MASTER_CHECK.as_bytes(),
                Some(&bytes),
                None,
                shutdown,
            )
            .await
            .context("writing the master key check")?;
            keys.apply(
                MASTER_CHECK,
                written.partition,
                written.offset,
                Some(record),
            );
        }
    }
    Ok(keys)
}

/// The record key of the master key check in the `keys` topic.
pub const MASTER_CHECK: &str = "master-key-check";

/// The record key of the account's signing key in the `keys` topic.
pub const SIGNING_KEY: &str = "webhook-signing";

/// Opens a sealed signing key.
pub fn open_signing_key(
    sealer: &signing::Sealer,
    key: &wire::SigningKey,
) -> anyhow::Result<signing::RsaKey> {
    use base64::Engine as _;
    let b64 = sealer.open(&key.private_key_sealed, &signing::key_context(&key.kid))?;
    let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(signing::RsaKey::from_pkcs8(&der, key.kid.clone())?)
}

/// The seal context of one part of a delivery (`body`, `signing-secret`,
/// `header/<lower-case name>`): bound to its id, method and URL.
fn delivery_part(d: &wire::RenderedDelivery, part: &str) -> String {
    signing::delivery_context(&d.delivery_id, part, &d.method, &d.url)
}

fn header_part(name: &str) -> String {
    format!("header/{}", name.to_ascii_lowercase())
}

/// Seals what a delivery carries of secrets before it is written to Kafka: the values
/// of its sensitive headers, its signing secrets, and its body when it holds a secret
/// (`body_sealed`). The dispatcher opens them at send time ([`open_delivery`]).
pub fn seal_delivery(
    sealer: &signing::Sealer,
    mut d: wire::RenderedDelivery,
) -> wire::RenderedDelivery {
    let headers: Vec<String> = d
        .sensitive_headers
        .iter()
        .map(|h| {
            sealer.seal(
                h.value.as_bytes(),
                &delivery_part(&d, &header_part(&h.name)),
            )
        })
        .collect();
    let secrets: Vec<String> = d
        .signing_secrets
        .iter()
        .map(|s| sealer.seal(s.as_bytes(), &delivery_part(&d, "signing-secret")))
        .collect();
    let body = d.body_sealed.then(|| {
        sealer
            .seal(&d.body, &delivery_part(&d, "body"))
            .into_bytes()
    });
    for (h, sealed) in d.sensitive_headers.iter_mut().zip(headers) {
        h.value = sealed;
    }
    d.signing_secrets = secrets;
    if let Some(body) = body {
        d.body = body;
    }
    d
}

/// The delivery with its sealed parts opened, for memory only. Values that are not
/// sealed (written before sealing existed) pass as they are. Errors with
/// `HL-SEAL-OPEN` when a part does not open with this key and context.
pub fn open_delivery(
    sealer: &signing::Sealer,
    d: &wire::RenderedDelivery,
) -> Result<wire::RenderedDelivery, &'static str> {
    const CODE: &str = "HL-SEAL-OPEN";
    let open = |v: &str, part: &str| -> Result<String, &'static str> {
        if !signing::Sealer::is_sealed(v) {
            return Ok(v.to_owned());
        }
        let plain = sealer.open(v, &delivery_part(d, part)).map_err(|_| CODE)?;
        String::from_utf8(plain).map_err(|_| CODE)
    };
    let mut opened = d.clone();
    for h in &mut opened.sensitive_headers {
        h.value = open(&h.value, &header_part(&h.name))?;
    }
    for s in &mut opened.signing_secrets {
        *s = open(s, "signing-secret")?;
    }
    if d.body_sealed {
        let text = std::str::from_utf8(&d.body).map_err(|_| CODE)?;
        opened.body = sealer
            .open(text, &delivery_part(d, "body"))
            .map_err(|_| CODE)?;
    }
    Ok(opened)
}

/// Opens, in memory, the sealed secrets of an endpoint read from Kafka (`api_key`,
/// `secret`, `previous_secret`); values written before sealing existed pass as they
/// are. On failure, names the field that did not open (it stays sealed).
pub fn open_endpoint_secrets(
    sealer: &signing::Sealer,
    endpoint: &mut wire::Endpoint,
) -> Result<(), &'static str> {
    let id = endpoint.id.clone();
    for (field, value) in [
        ("api_key", &mut endpoint.api_key),
        ("secret", &mut endpoint.secret),
        ("previous_secret", &mut endpoint.previous_secret),
    ] {
        if let Some(sealed) = value.as_deref().filter(|v| signing::Sealer::is_sealed(v)) {
            let plain = sealer
                .open(sealed, &signing::endpoint_context(&id, field))
                .map_err(|_| field)?;
            *value = Some(String::from_utf8_lossy(&plain).into_owned());
        }
    }
    Ok(())
}

/// Seals the sensitive fields of an event (trace text, transfer logs) before it is
/// written to Kafka. Values already sealed, empty or absent are left alone.
pub fn seal_event(sealer: &signing::Sealer, registry: &wire::Registry, event: &mut wire::Event) {
    for path in registry.sensitive_fields(&event.event_type) {
        if let Some(serde_json::Value::String(value)) = field_mut(&mut event.data, path)
            && !value.is_empty()
            && !signing::Sealer::is_sealed(value)
        {
            *value = sealer.seal(value.as_bytes(), &signing::event_context(&event.id, path));
        }
    }
}

/// Opens the sealed sensitive fields of an event read from Kafka. Fields written in
/// clear (by an engine that writes Avro itself) pass as they are.
pub fn open_event(
    sealer: &signing::Sealer,
    registry: &wire::Registry,
    event: &mut wire::Event,
) -> Result<(), signing::SealError> {
    for path in registry.sensitive_fields(&event.event_type) {
        if let Some(serde_json::Value::String(value)) = field_mut(&mut event.data, path)
            && signing::Sealer::is_sealed(value)
        {
            let plain = sealer.open(value, &signing::event_context(&event.id, path))?;
            *value = String::from_utf8(plain).map_err(|_| signing::SealError::CannotOpen)?;
        }
    }
    Ok(())
}

/// The non-empty values of an event's sensitive fields, e.g. to check that a URL
/// does not carry one.
pub fn sensitive_values<'a>(registry: &wire::Registry, event: &'a wire::Event) -> Vec<&'a str> {
    registry
        .sensitive_fields(&event.event_type)
        .iter()
        .filter_map(|path| {
            path.split('.')
                .try_fold(&event.data, |v, k| v.get(k))
                .and_then(serde_json::Value::as_str)
        })
        .filter(|v| !v.is_empty())
        .collect()
}

fn field_mut<'a>(data: &'a mut serde_json::Value, path: &str) -> Option<&'a mut serde_json::Value> {
    path.split('.').try_fold(data, |v, k| v.get_mut(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ziPT4SmMuMTwTwqeF6aldKiYNegAmm65VtVAqRVARKE=";

    fn trace_event(registry: &wire::Registry, trace: &str) -> wire::Event {
        let json = serde_json::json!({"id": "ev-1", "type": "transfer.sensitive_trace", "data": {
            "transfer_id": "t-1", "destination_id": "d-1", "execution_context": "write_destination", "trace": trace}});
        registry.event_from_json(&json).expect("valid").0
    }

    #[test]
    fn sensitive_fields_are_sealed_for_kafka_and_open_only_in_their_event() {
        let registry = wire::Registry::bundled().expect("schemas");
        let sealer = signing::Sealer::from_base64(KEY).expect("key");
        let mut event = trace_event(&registry, "ERROR: secret row 42");
        seal_event(&sealer, &registry, &mut event);
        let bytes = registry.encode_event(&event).expect("encodes");
        assert!(
            !bytes.windows(10).any(|w| w == b"secret row"),
            "the trace reached the record in clear"
        );
        let mut read = registry.decode_event(&bytes).expect("decodes");
        assert!(signing::Sealer::is_sealed(
            read.data["trace"].as_str().expect("trace")
        ));
        let mut moved = read.clone();
        open_event(&sealer, &registry, &mut read).expect("opens");
        assert_eq!(read.data["trace"], "ERROR: secret row 42");
        // Sealed for event ev-1, the value does not open in another event.
        moved.id = "ev-2".to_owned();
        assert!(open_event(&sealer, &registry, &mut moved).is_err());
        // A trace written in clear by an engine passes as it is.
        let mut clear = trace_event(&registry, "plain");
        open_event(&sealer, &registry, &mut clear).expect("clear passes");
        assert_eq!(clear.data["trace"], "plain");
        assert_eq!(sensitive_values(&registry, &clear), ["plain"]);
    }
}
