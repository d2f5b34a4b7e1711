//! Templates, differential against real Go: the input is a template (its first line
//! may instead be JSON data, after a `#data ` prefix), rendered by hookline and by Go's
//! text/template (`crates/templates/tests/go`, run with `-lines`; its path in
//! `HOOKLINE_GORENDER`). Where Go renders, hookline must give the same bytes; where Go
//! fails, hookline must fail too. hookline may refuse what it does not support, and
//! stop at its limits. Nothing may panic.
#![no_main]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use templates::{Limits, Template, TemplateError, data_from_json};

struct Go {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn go() -> &'static Mutex<Go> {
    static GO: OnceLock<Mutex<Go>> = OnceLock::new();
    GO.get_or_init(|| {
        let path = std::env::var("HOOKLINE_GORENDER")
            .expect("HOOKLINE_GORENDER: the Go renderer built by ops/fuzz");
        let mut child = Command::new(path)
            .arg("-lines")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the Go renderer starts");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Mutex::new(Go {
            _child: child,
            stdin,
            stdout,
        })
    })
}

/// Data with every kind of value the data model has, nulls included.
fn default_data() -> Value {
    json!({
        "S": "text «ü» \u{1F600}", "E": "", "I": 42, "Neg": -7, "F": 1.5, "Big": 1e21,
        "B": true, "N": null, "L": [1, "two", null, 3.25, {"k": "v"}], "Empty": [],
        "M": {"a": 1, "b": "x", "n": null, "m": {"deep": [true]}},
        "Data": {"transfer_id": "t-1", "models": ["users"], "error": null}
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let (data, template) = match text.strip_prefix("#data ") {
        Some(rest) => {
            let (line, template) = rest.split_once('\n').unwrap_or((rest, ""));
            match serde_json::from_str::<Value>(line) {
                Ok(v @ Value::Object(_)) => (v, template),
                _ => return,
            }
        }
        None => (default_data(), text),
    };
    if template.len() > 4096 {
        return;
    }
    let ours =
        Template::parse("t", template, Limits::default()).map(|t| t.render(&data_from_json(&data)));
    let ours = match ours {
        Err(TemplateError::Unsupported { .. } | TemplateError::TooLarge { .. }) => return,
        Ok(Err(
            TemplateError::Unsupported { .. }
            | TemplateError::OutputLimit(_)
            | TemplateError::RangeLimit(_)
            | TemplateError::WorkLimit(_),
        )) => return,
        Err(e) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(bytes)) => Ok(bytes),
    };
    let mut go = go().lock().unwrap_or_else(|p| p.into_inner());
    let case = json!({"template": template, "data": data});
    writeln!(go.stdin, "{case}").expect("a case to Go");
    go.stdin.flush().expect("flushed to Go");
    let mut line = String::new();
    go.stdout.read_line(&mut line).expect("Go answers");
    let answer: Value = serde_json::from_str(&line).expect("Go's answer is JSON");
    let go_ok = answer["ok"].as_bool().unwrap_or(false);
    match (&ours, go_ok) {
        (Ok(bytes), true) => {
            let go_bytes = answer["output"]
                .as_str()
                .map(decode_base64)
                .unwrap_or_default();
            assert!(
                *bytes == go_bytes,
                "different output\ntemplate {template:?}\n data {data}\n   go {:?}\n ours {:?}",
                String::from_utf8_lossy(&go_bytes),
                String::from_utf8_lossy(bytes)
            );
        }
        (Ok(bytes), false) => panic!(
            "Go failed ({}), hookline rendered {:?}\ntemplate {template:?}\n data {data}",
            answer["error"],
            String::from_utf8_lossy(bytes)
        ),
        (Err(e), true) => {
            panic!("Go rendered, hookline failed: {e}\ntemplate {template:?}\n data {data}")
        }
        (Err(_), false) => {}
    }
});

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
