//! What every hookline service needs at its edges: configuration loaded once
//! (defaults, then an optional TOML file, then `HOOKLINE_*` environment variables),
//! a shutdown token fired by SIGTERM/SIGINT, and structured logging.

mod admin;
pub mod schedule;
mod schema_registry;
mod sealing;
pub mod telemetry;

pub use admin::start_admin;
pub use schema_registry::SchemaRegistryConfig;
pub use sealing::*;

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
