//! A hostile template cannot exhaust the renderer, unsupported features are refused
//! at parse time with their position, and errors never carry data values.

use std::process::Command;

use serde_json::json;
use templates::{Limits, Template, TemplateError, data_from_json};

fn parse(src: &str) -> Result<Template, TemplateError> {
    Template::parse("t", src, Limits::default())
}

fn render(src: &str, data: serde_json::Value) -> Result<Vec<u8>, TemplateError> {
    parse(src)?.render(&data_from_json(&data))
}

#[test]
fn the_template_size_is_capped() {
    let big = "x".repeat(Limits::default().max_template_bytes + 1);
    assert!(matches!(parse(&big), Err(TemplateError::TooLarge { .. })));
    assert_eq!(parse(&big).unwrap_err().code(), "HL-TEMPLATE-TOO-LARGE");
}

#[test]
fn the_output_is_capped() {
    let err = render(
        "{{range .L}}{{$.S}}{{end}}",
        json!({"L": vec![0; 5000], "S": "x".repeat(1000)}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TemplateError::OutputLimit(Limits::default().max_output_bytes)
    );
    assert_eq!(err.code(), "HL-TEMPLATE-OUTPUT-LIMIT");
}

#[test]
fn range_iterations_are_capped() {
    let err = render("{{range 1000000}}{{end}}", json!({})).unwrap_err();
    assert_eq!(err.code(), "HL-TEMPLATE-RANGE-LIMIT");
    let err = render(
        "{{range .L}}{{range $.L}}{{end}}{{end}}",
        json!({"L": vec![0; 200]}),
    )
    .unwrap_err();
    assert_eq!(err.code(), "HL-TEMPLATE-RANGE-LIMIT");
}

#[test]
fn doubling_a_string_runs_into_the_work_budget_not_out_of_memory() {
    let src =
        "{{$x := \"aaaaaaaaaaaaaaaa\"}}{{range 64}}{{$x = printf \"%s%s\" $x $x}}{{end}}{{len $x}}";
    let err = render(src, json!({})).unwrap_err();
    assert_eq!(err.code(), "HL-TEMPLATE-WORK-LIMIT");
}

#[test]
fn unsupported_features_are_refused_with_their_position() {
    let table = [
        ("{{define \"x\"}}X{{end}}", "named templates"),
        ("a\n  {{template \"x\"}}", "{{template}}"),
        ("{{call .F}}", "`call`"),
        ("{{printf \"%*d\" 3 1}}", "`*` width"),
        ("{{printf \"%2000d\" 1}}", "over 1000"),
        ("{{printf \"%#v\" .}}", "%#v"),
        ("{{printf \"%T\" .}}", "%T"),
    ];
    for (src, feature) in table {
        match parse(src) {
            Err(TemplateError::Unsupported {
                feature: f,
                line,
                col,
            }) => {
                assert!(f.contains(feature), "{src}: {f}");
                assert!(line >= 1 && col >= 1, "{src}: {line}:{col}");
            }
            other => panic!("{src}: expected Unsupported, got {other:?}"),
        }
    }
    match parse("a\n  {{template \"x\"}}") {
        Err(TemplateError::Unsupported { line, col, .. }) => {
            assert_eq!((line, col), (2, 5), "the column of `template`")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_string_cut_inside_a_character_is_refused() {
    // Go slices strings by bytes: byte 8 falls inside "ü", and Go writes half of it.
    let data = serde_json::json!({"S": "text «ü»"});
    match render("{{slice .S 0 8}}", data.clone()) {
        Err(TemplateError::Unsupported { feature, .. }) => {
            assert!(feature.contains("inside a UTF-8 character"), "{feature}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // On character boundaries it cuts as Go does.
    assert_eq!(
        render("{{slice .S 0 9}}", data).expect("renders"),
        "text «ü".as_bytes()
    );
}

#[test]
fn parse_errors_carry_line_and_column() {
    match parse("ok\n{{if .X}}unclosed") {
        Err(TemplateError::Parse { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    match parse("{{.X") {
        Err(e @ TemplateError::Parse { .. }) => assert_eq!(e.code(), "HL-TEMPLATE-PARSE"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn execution_errors_never_quote_data() {
    let secret = "sk-live-DO-NOT-LEAK";
    let cases = [
        "{{index .S 99}}",
        "{{.S.x}}",
        "{{lt .S 1}}",
        "{{len .N}}",
        "{{printf .N}}",
    ];
    for src in cases {
        let err = render(src, json!({"S": secret, "N": 5})).unwrap_err();
        assert!(!err.to_string().contains(secret), "{src}: {err}");
    }
}

#[test]
fn the_seed_slack_example_renders() {
    let src = "{\"attachments\": [{\"text\": {{printf \"*Prequel Sensitive Trace | Destination:* %s\\n\\n*Traces:*\\n```json\\n%s\\n```\" .DestinationId .SensitiveTraces | printf \"%q\"}}, \"color\": \"danger\"}]}";
    let out = render(
        src,
        json!({"DestinationId": "d-1", "SensitiveTraces": "[{\"trace\":\"boom \\u2028\"}]"}),
    )
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out).expect("the Slack body is JSON");
    assert!(
        body["attachments"][0]["text"]
            .as_str()
            .unwrap()
            .contains("d-1")
    );
}

/// The IsPrint table is Go's: regenerate it with the Go on this machine and compare.
#[test]
fn the_isprint_table_matches_go() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("go")
        .args(["run", &format!("{root}/tools/isprint/main.go")])
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "off")
        .output()
        .expect("Go is installed");
    assert!(out.status.success());
    let committed = std::fs::read_to_string(format!("{root}/src/isprint_table.rs")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "regenerate src/isprint_table.rs"
    );
}
