//! `hookline verify` says valid, or why not: bad signature, stale timestamp, digest mismatch.

use std::process::Command;

use signing::{Keys, Request, RsaKey, Scheme, sign};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("verify")
        .args(args)
        .output()
        .expect("run hookline");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn verify_says_valid_or_why_not() {
    let dir = std::env::temp_dir().join(format!("hl-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let body = br#"{"type":"transfer.error"}"#;
    std::fs::write(path("body"), body).unwrap();
    std::fs::write(path("tampered"), b"{\"type\":\"transfer.errorX\"}").unwrap();

    let key = RsaKey::generate(2048, "k").unwrap();
    std::fs::write(path("pub.pem"), key.public_key_pem().unwrap()).unwrap();
    let request = Request {
        method: "POST",
        url: "",
        body,
        id: "d-1",
    };
    let now = time::OffsetDateTime::now_utc();
    let headers = sign(
        Scheme::PrequelRsa,
        request,
        Keys {
            rsa: Some(&key),
            secrets: &[],
        },
        now,
    )
    .unwrap();
    let lines: String = headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    std::fs::write(path("headers.txt"), lines).unwrap();
    let base = ["--scheme", "prequel_rsa", "--public-key"];
    let (ok, out) = run(&[
        &base[..],
        &[
            &path("pub.pem"),
            "--headers",
            &path("headers.txt"),
            "--body",
            &path("body"),
        ],
    ]
    .concat());
    assert!(ok && out.contains("valid"), "{out}");
    let (ok, out) = run(&[
        &base[..],
        &[
            &path("pub.pem"),
            "--headers",
            &path("headers.txt"),
            "--body",
            &path("tampered"),
        ],
    ]
    .concat());
    assert!(!ok && out.contains("HL-SIGN-DIGEST"), "{out}");

    let secrets = vec![signing::new_standard_secret()];
    let old = now - time::Duration::minutes(10);
    let headers = sign(
        Scheme::StandardWebhooks,
        request,
        Keys {
            rsa: None,
            secrets: &secrets,
        },
        old,
    )
    .unwrap();
    let json: serde_json::Map<String, serde_json::Value> =
        headers.into_iter().map(|(k, v)| (k, v.into())).collect();
    std::fs::write(
        path("headers.json"),
        serde_json::Value::Object(json).to_string(),
    )
    .unwrap();
    let args = [
        "--scheme",
        "standard_webhooks",
        "--secret",
        &secrets[0],
        "--headers",
        &path("headers.json"),
        "--body",
        &path("body"),
    ];
    let (ok, out) = run(&args);
    assert!(!ok && out.contains("HL-SIGN-STALE"), "{out}");
    let (ok, out) = run(&[&args[..], &["--tolerance", "1h"]].concat());
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "--scheme",
        "standard_webhooks",
        "--secret",
        "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
        "--headers",
        &path("headers.json"),
        "--body",
        &path("body"),
        "--tolerance",
        "1h",
    ]);
    assert!(!ok && out.contains("HL-SIGN-BAD-SIGNATURE"), "{out}");
}
