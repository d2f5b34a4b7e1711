//! Prequel RSA signatures, made once per (key, timestamp second, body) and off the async
//! workers.
//!
//! A Prequel RSA signature covers `timestamp.body` with the timestamp in whole seconds,
//! so every delivery of one body signed with one key in one second carries the same
//! signature: an event fanned out to many endpoints needs one RSA operation, not one per
//! endpoint. Concurrent attempts that want the same signature wait for the first one's
//! operation. The operation itself (0.25–0.3 ms for 2048 bits on the benchmark machine)
//! runs on tokio's blocking pool, so it never holds an async worker. The pool gives each
//! waiting signature a thread; bounding them to the cores was measured slower or no
//! faster (docs/benchmarks/issue-11-steps-2.md).
//!
//! Memory: signatures are kept for the current and the previous second only, and at most
//! [`MEMO_CAP`] of them; past the cap an attempt signs without memoising.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use signing::{RsaKey, SignError};
use tokio::sync::OnceCell;

/// Signatures kept at most (current and previous second together).
pub const MEMO_CAP: usize = 8192;

type Signature = Result<Arc<[u8]>, SignError>;

/// What decides a signature: the second, the key and the body.
#[derive(Hash, PartialEq, Eq)]
struct Slot {
    second: i64,
    kid: String,
    body_sha256: [u8; 32],
}

/// Memoised Prequel RSA signing.
#[derive(Default)]
pub struct RsaSigner {
    memo: Mutex<Memo>,
    operations: AtomicU64,
}

#[derive(Default)]
struct Memo {
    /// The latest second seen: older seconds are dropped when it advances.
    newest: i64,
    cells: HashMap<Slot, Arc<OnceCell<Signature>>>,
}

impl RsaSigner {
    /// The Prequel RSA headers for `body` signed with `key` at `now`.
    pub async fn headers(
        &self,
        key: Arc<RsaKey>,
        body: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<Vec<(String, String)>, SignError> {
        let timestamp = signing::prequel_timestamp(now);
        let body_sha256 = signing::sha256(body);
        let cell = self.cell(Slot {
            second: now.unix_timestamp(),
            kid: key.kid.clone(),
            body_sha256,
        });
        let message = signing::prequel_message(&timestamp, body);
        let kid = key.kid.clone();
        let signature = cell
            .get_or_init(|| async {
                self.operations.fetch_add(1, Ordering::Relaxed);
                match tokio::task::spawn_blocking(move || key.sign(&message)).await {
                    Ok(signed) => signed.map(Arc::from),
                    Err(_) => Err(SignError::BadKey("RSA signing did not finish")),
                }
            })
            .await
            .clone()?;
        Ok(signing::prequel_headers(
            timestamp,
            &signature,
            &body_sha256,
            &kid,
        ))
    }

    /// RSA operations made so far.
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    /// The slot's cell, shared with every attempt that wants the same signature; a
    /// fresh cell nobody shares when the memo is full.
    fn cell(&self, slot: Slot) -> Arc<OnceCell<Signature>> {
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = memo.cells.get(&slot) {
            return Arc::clone(cell);
        }
        if slot.second > memo.newest {
            let keep_from = slot.second - 1;
            memo.newest = slot.second;
            memo.cells.retain(|s, _| s.second >= keep_from);
        }
        if memo.cells.len() >= MEMO_CAP || slot.second < memo.newest - 1 {
            return Arc::new(OnceCell::new());
        }
        Arc::clone(memo.cells.entry(slot).or_default())
    }

    /// Signatures held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.memo.lock().map(|m| m.cells.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, LazyLock};

    use signing::{Request, RsaKey, Scheme, Verifier};

    use super::{MEMO_CAP, RsaSigner};

    static KEY: LazyLock<Arc<RsaKey>> = LazyLock::new(|| {
        Arc::new(RsaKey::generate(2048, "k1").expect("a 2048-bit key is generated"))
    });

    fn at(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).expect("a valid unix time")
    }

    fn verify(headers: &[(String, String)], body: &[u8], now: time::OffsetDateTime) {
        let pem = KEY.public_key_pem().expect("the public key encodes");
        let request = Request {
            method: "POST",
            url: "https://example.com/hook",
            body,
            id: "d1",
        };
        signing::verify(
            Scheme::PrequelRsa,
            headers,
            request,
            Verifier::PublicKeyPem(&pem),
            300,
            now,
        )
        .expect("the memoised signature verifies");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fan_out_of_one_body_in_one_second_costs_one_rsa_operation() {
        let signer = Arc::new(RsaSigner::default());
        let now = at(1_800_000_000);
        let body = br#"{"type":"transfer.error"}"#;
        let signing = (0..10).map(|_| {
            let signer = Arc::clone(&signer);
            tokio::spawn(async move { signer.headers(Arc::clone(&KEY), body, now).await })
        });
        let all = futures::future::join_all(signing).await;
        for headers in all {
            let headers = headers.expect("the task ends").expect("signed");
            verify(&headers, body, now);
        }
        assert_eq!(
            signer.operations(),
            1,
            "ten endpoints, one body, one second"
        );

        // Another body, another second, another key: each a new signature.
        let other = signer.headers(Arc::clone(&KEY), b"{}", now).await;
        verify(&other.expect("signed"), b"{}", now);
        assert_eq!(signer.operations(), 2);
        let later = at(1_800_000_001);
        let next = signer.headers(Arc::clone(&KEY), body, later).await;
        verify(&next.expect("signed"), body, later);
        assert_eq!(signer.operations(), 3);
        let key2 = Arc::new(RsaKey::generate(2048, "k2").expect("a key"));
        let rotated = signer.headers(key2, body, later).await.expect("signed");
        assert!(
            rotated
                .iter()
                .any(|(k, v)| k.ends_with("Key-Id") && v == "k2")
        );
        assert_eq!(signer.operations(), 4);
    }

    #[tokio::test]
    async fn only_the_current_and_previous_second_are_kept_and_never_more_than_the_cap() {
        let signer = RsaSigner::default();
        for second in 0..3 {
            signer
                .headers(Arc::clone(&KEY), b"x", at(1_800_000_000 + second))
                .await
                .expect("signed");
        }
        assert_eq!(signer.held(), 2, "the oldest second is dropped");
        for n in 0..MEMO_CAP + 5 {
            let _ = signer.cell(super::Slot {
                second: 1_800_000_002,
                kid: "k1".to_owned(),
                body_sha256: signing::sha256(n.to_string().as_bytes()),
            });
        }
        assert_eq!(signer.held(), MEMO_CAP);
    }
}
