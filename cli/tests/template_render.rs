//! `hookline template render` prints exactly the rendered bytes, and fails clearly.

use std::process::Command;

fn run(template: &str, data: &str) -> std::process::Output {
    let dir =
        std::env::temp_dir().join(format!("hl-cli-{}-{}", std::process::id(), template.len()));
    std::fs::create_dir_all(&dir).expect("test setup");
    std::fs::write(dir.join("t.tmpl"), template).expect("test setup");
    std::fs::write(dir.join("d.json"), data).expect("test setup");
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["template", "render", "--template"])
        .arg(dir.join("t.tmpl"))
        .arg("--data")
        .arg(dir.join("d.json"))
        .output()
        .expect("run hookline")
}

#[test]
fn prints_exactly_the_rendered_bytes() {
    let out = run(
        "{{.DestinationId | printf \"%q\"}}\n{{range .L}}[{{.}}]{{end}}",
        r#"{"DestinationId": "d\u2028x", "L": [1, 2.5]}"#,
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "\"d\\u2028x\"\n[1][2.5]"
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn a_template_error_exits_non_zero_with_the_error_on_stderr() {
    let out = run("line one\n{{if .X}}never closed", "{}");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("HL-TEMPLATE-PARSE") && err.contains("line 2"),
        "{err}"
    );
    let out = run("{{call .F}}", "{}");
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("HL-TEMPLATE-UNSUPPORTED")
    );
}
