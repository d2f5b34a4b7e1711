//! The account's RSA signing key for `prequel_rsa` deliveries, read from `keys` and
//! opened with the master key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Dispatcher, lock};

/// How long an attempt waits for a signing key that opens before its delivery is
/// deferred: a moment's trouble reading `keys` passes within it.
pub(crate) const KEY_WAIT: Duration = Duration::from_secs(5);
/// When a delivery deferred for want of a signing key is looked at again.
pub(crate) const KEY_RETRY: Duration = Duration::from_secs(30);

/// What [`Dispatcher::signing_key`] found.
pub(crate) enum KeyWait {
    /// The key, opened.
    Key(Arc<signing::RsaKey>),
    /// None that opens within [`KEY_WAIT`]: not yet written, or sealed under another
    /// master key.
    Unavailable,
    /// Shutdown came first.
    Shutdown,
}

impl Dispatcher {
    /// The account's current signing key: keys written before this record was received
    /// are seen. Waits up to [`KEY_WAIT`] for one that opens.
    pub(crate) async fn signing_key(&self, received_at: std::time::Instant) -> KeyWait {
        let deadline = Instant::now() + KEY_WAIT;
        loop {
            if self.keys.sync_after(received_at).await.is_ok() {
                if let Some(record) = self.keys.get(service_kit::SIGNING_KEY) {
                    let cached = lock(&self.rsa).clone().filter(|k| k.kid == record.kid);
                    if let Some(key) = cached {
                        return KeyWait::Key(key);
                    }
                    match service_kit::open_signing_key(&self.sealer, &record) {
                        Ok(key) => {
                            let key = Arc::new(key);
                            *lock(&self.rsa) = Some(key.clone());
                            return KeyWait::Key(key);
                        }
                        Err(_) => {
                            let mut failed = lock(&self.failed_kid);
                            if failed.as_deref() != Some(record.kid.as_str()) {
                                tracing::error!(kid = %record.kid, code = "HL-SEAL-OPEN", "the signing key does not open with this HOOKLINE_MASTER_KEY; prequel_rsa deliveries wait in the retry tiers, operator action needed");
                                *failed = Some(record.kid.clone());
                            }
                        }
                    }
                } else {
                    tracing::warn!(
                        "no webhook signing key yet (the producer creates it on first start); prequel_rsa deliveries wait in the retry tiers"
                    );
                }
            }
            if Instant::now() >= deadline {
                return KeyWait::Unavailable;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return KeyWait::Shutdown,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
