//! Signature verification, as a receiver runs it (`hookline verify`), on arbitrary
//! headers, bodies, secrets and keys (the input's parts, separated by NUL): it answers
//! valid or why not, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signing::{Request, Scheme, Verifier, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{0}');
    let (Some(head), Some(secret), Some(headers), body) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next().unwrap_or(""),
    ) else {
        return;
    };
    let scheme = match head.bytes().next().unwrap_or(0) % 4 {
        0 => Scheme::PrequelRsa,
        1 => Scheme::StandardWebhooks,
        2 => Scheme::FivetranHmac,
        _ => Scheme::DataprepHmac,
    };
    let headers: Vec<(String, String)> = headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let method = if head.len() % 2 == 0 { "POST" } else { "GET" };
    let request = Request {
        method,
        url: "https://example.com/hook?x=1",
        body: body.as_bytes(),
        id: "msg_1",
    };
    let verifier = match scheme {
        Scheme::PrequelRsa => Verifier::PublicKeyPem(secret),
        _ => Verifier::Secret(secret),
    };
    let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a time");
    let _ = verify(scheme, &headers, request, verifier, 300, now);
});
