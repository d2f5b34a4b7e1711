//! Differential test: hookline's templates against real Go `text/template`.
//!
//! A corpus of (template, data) cases (the seed's examples verbatim, a case per
//! supported feature, Unicode and control characters inside `%q`, and a few thousand
//! generated cases) is rendered by Go (`tests/go/main.go`) and by hookline. Where Go
//! renders, hookline must give the same bytes; where Go fails, hookline must fail too.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use templates::{Limits, Template, data_from_json};

mod corpus;

#[derive(serde::Deserialize)]
struct GoResult {
    ok: bool,
    #[serde(default, deserialize_with = "base64_bytes")]
    output: Vec<u8>,
    #[serde(default)]
    error: String,
}

fn base64_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(s.map(|s| decode_base64(&s)).unwrap_or_default())
}

fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| {
            acc | (u32::from(value(*c)) << (18 - 6 * i))
        });
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

fn run_go(cases: &[(String, Value)]) -> Vec<GoResult> {
    let input: Vec<Value> = cases
        .iter()
        .map(|(t, d)| json!({"template": t, "data": d}))
        .collect();
    let main = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/main.go");
    let mut child = Command::new("go")
        .args(["run", main])
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GO111MODULE", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("Go must be installed to run the differential test");
    let payload = serde_json::to_vec(&input).expect("cases serialise");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let output = child.wait_with_output().expect("go run finishes");
    writer
        .join()
        .expect("the writer thread")
        .expect("cases written to go run");
    assert!(output.status.success(), "go run failed");
    serde_json::from_slice(&output.stdout).expect("Go results")
}

#[test]
fn hookline_renders_the_same_bytes_as_go() {
    let cases = corpus::all();
    let go = run_go(&cases);
    assert_eq!(go.len(), cases.len());
    let (mut same, mut both_fail, mut refused) = (0, 0, 0);
    let mut mismatches = Vec::new();
    for ((template, data), go) in cases.iter().zip(&go) {
        let ours = Template::parse("t", template, Limits::default())
            .map(|t| t.render(&data_from_json(data)));
        match (go.ok, ours) {
            (true, Ok(Ok(bytes))) if bytes == go.output => same += 1,
            (true, Ok(Ok(bytes))) => mismatches.push(format!(
                "template {template:?}\n data {data}\n   go {:?}\n ours {:?}",
                String::from_utf8_lossy(&go.output),
                String::from_utf8_lossy(&bytes)
            )),
            (true, Ok(Err(templates::TemplateError::Unsupported { .. })))
                if corpus::may_refuse(template) =>
            {
                refused += 1
            }
            (true, Ok(Err(e))) => mismatches.push(format!(
                "template {template:?}\n data {data}\n go rendered, ours failed: {e}"
            )),
            (true, Err(templates::TemplateError::Unsupported { .. }))
                if corpus::may_refuse(template) =>
            {
                refused += 1
            }
            (true, Err(e)) => mismatches.push(format!(
                "template {template:?}\n go rendered, ours refused: {e}"
            )),
            (false, Ok(Ok(bytes))) => mismatches.push(format!(
                "template {template:?}\n data {data}\n go failed ({}), ours rendered {:?}",
                go.error,
                String::from_utf8_lossy(&bytes)
            )),
            (false, _) => both_fail += 1,
        }
    }
    println!(
        "differential: {} cases; {same} identical, {both_fail} failed in both, {refused} refused as unsupported, {} mismatches",
        cases.len(),
        mismatches.len()
    );
    if let Ok(path) = std::env::var("HOOKLINE_DIFF_OUT") {
        std::fs::write(path, mismatches.join("\n\n")).unwrap();
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches; first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(8)].join("\n\n")
    );
    assert!(
        same > 3000,
        "the corpus must compare thousands of rendered cases"
    );
}
