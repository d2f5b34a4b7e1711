//! What `/health/ready` reports: conditions a service sets as it starts and runs
//! (`started`, set last by start-up), and probes run on each request (Kafka answers
//! and the service's topics exist).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A check run on every readiness request: `Err` holds the reason, which must not carry
/// a secret (it is served without a token).
pub type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A probe that takes longer than this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Shared readiness state: clone it into whatever sets a condition.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    conditions: BTreeMap<&'static str, Result<(), String>>,
    probes: Vec<(&'static str, Probe)>,
}

/// The outcome of one readiness check.
#[derive(Debug)]
pub struct Report {
    /// Every condition holds and every probe answered.
    pub ready: bool,
    /// Each condition and probe by name: `Ok` or the reason.
    pub checks: BTreeMap<&'static str, Result<(), String>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready: the `started` condition says "starting" until [`Readiness::started`].
    pub fn new() -> Self {
        let mut conditions = BTreeMap::new();
        conditions.insert("started", Err("starting".to_owned()));
        Readiness {
            inner: Arc::new(Mutex::new(Inner {
                conditions,
                probes: Vec::new(),
            })),
        }
    }

    /// Start-up is complete (topics created, tables loaded, consumers subscribed).
    pub fn started(&self) {
        self.set("started", Ok(()));
    }

    /// Sets a named condition.
    pub fn set(&self, name: &'static str, state: Result<(), String>) {
        self.lock().conditions.insert(name, state);
    }

    /// Adds a probe run on every readiness request.
    pub fn probe(&self, name: &'static str, probe: Probe) {
        self.lock().probes.push((name, probe));
    }

    /// Runs the probes (concurrently, each bounded) and reads the conditions.
    pub async fn check(&self) -> Report {
        let (mut checks, probes) = {
            let inner = self.lock();
            (inner.conditions.clone(), inner.probes.clone())
        };
        let runs = probes.iter().map(|(name, probe)| async move {
            let result = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            };
            (*name, result)
        });
        for (name, result) in futures::future::join_all(runs).await {
            checks.insert(name, result);
        }
        Report {
            ready: checks.values().all(Result::is_ok),
            checks,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Report {
    /// `{"status": "ready" | "not_ready", "reason": first failure, "checks": {name: "ok" | reason}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: serde_json::Map<String, serde_json::Value> = self
            .checks
            .iter()
            .map(|(name, result)| {
                let state = match result {
                    Ok(()) => "ok".to_owned(),
                    Err(reason) => reason.clone(),
                };
                ((*name).to_owned(), serde_json::Value::String(state))
            })
            .collect();
        let mut out = serde_json::json!({
            "status": if self.ready { "ready" } else { "not_ready" },
            "checks": checks,
        });
        if let Some((name, Err(reason))) = self.checks.iter().find(|(_, r)| r.is_err()) {
            out["reason"] = format!("{name}: {reason}").into();
        }
        out
    }
}
