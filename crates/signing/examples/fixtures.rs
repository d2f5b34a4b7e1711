//! Prints signed sample requests of every profile as JSON, for the Python tests that
//! verify them with independent implementations (tests/python/test_signatures.py).
//! Not a tool: the secrets and keys are made up on each run.

use signing::{Keys, Request, RsaKey, Scheme, sign};

fn main() {
    let key = RsaKey::generate(2048, "current").expect("key");
    let rotated_out = RsaKey::generate(2048, "old").expect("key");
    let whsec = vec![
        signing::new_standard_secret(),
        signing::new_standard_secret(),
    ];
    let plain = vec!["fivetran-and-dataprep-secret".to_owned()];
    let now = time::OffsetDateTime::now_utc();
    let body = r#"{"type":"transfer.error","version":"2023-10-15","data":{"error":{"transfer_id":"t-1","note":"é \u2028"}}}"#;
    let url = "https://receiver.example/hook?task=42";
    let mut out = Vec::new();
    for (scheme, keys, method) in [
        (
            Scheme::PrequelRsa,
            Keys {
                rsa: Some(&key),
                secrets: &[],
            },
            "POST",
        ),
        (
            Scheme::StandardWebhooks,
            Keys {
                rsa: None,
                secrets: &whsec,
            },
            "POST",
        ),
        (
            Scheme::FivetranHmac,
            Keys {
                rsa: None,
                secrets: &plain,
            },
            "POST",
        ),
        (
            Scheme::DataprepHmac,
            Keys {
                rsa: None,
                secrets: &plain,
            },
            "POST",
        ),
        (
            Scheme::DataprepHmac,
            Keys {
                rsa: None,
                secrets: &plain,
            },
            "GET",
        ),
    ] {
        let body = if method == "GET" { "" } else { body };
        let request = Request {
            method,
            url,
            body: body.as_bytes(),
            id: "5b0c7f2e-delivery",
        };
        let headers = sign(scheme, request, keys, now).expect("sign");
        out.push(serde_json::json!({"scheme": scheme.name(), "method": method, "url": url, "body": body,
            "headers": headers.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect::<serde_json::Map<_, _>>()}));
    }
    let doc = serde_json::json!({
        "public_key_pem": key.public_key_pem().expect("pem"),
        "rotated_out_public_key_pem": rotated_out.public_key_pem().expect("pem"),
        "standard_secrets": whsec,
        "secret": plain[0],
        "requests": out,
    });
    println!("{doc}");
}
