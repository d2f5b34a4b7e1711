//! `hookline dlq` refuses unclear requests before it touches Kafka, with a clear
//! message and a non-zero exit. (Against the broker it is tested end to end, in
//! `tests/dead_letters.rs`.)

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("dlq")
        .args(args)
        // Nothing answers here: a test that reached Kafka would fail, not hang.
        .env("HOOKLINE_KAFKA_BROKERS", "127.0.0.1:1")
        .env(
            "HOOKLINE_MASTER_KEY",
            "ziPT4SmMuMTwTwqeF6aldKiYNegAmm65VtVAqRVARKE=",
        )
        .env_remove("HOOKLINE_CONFIG")
        .output()
        .expect("run hookline");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unclear_requests_are_refused_with_a_message() {
    let table: [(&[&str], &str); 6] = [
        (
            &["replay"],
            "give --endpoint, --since, --until or --ids (or --all",
        ),
        (
            &["replay", "--all", "--endpoint", "e"],
            "--all replays every dead letter",
        ),
        (
            &["replay", "--since", "yesterday"],
            "--since: a time is RFC 3339",
        ),
        (
            &["replay", "--endpoint", "e", "--until", "2024-13-01"],
            "--until: a time is RFC 3339",
        ),
        (&["list", "--limit", "0"], "--limit: from 1 to 1000"),
        (
            &["list", "--cursor", "not-a-cursor!"],
            "--cursor: not a cursor a listing printed",
        ),
    ];
    for (args, message) in table {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn an_unreachable_broker_is_a_coded_error() {
    let (code, _, stderr) = run(&["list"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("HL-KAFKA-UNAVAILABLE"), "{stderr}");
}
