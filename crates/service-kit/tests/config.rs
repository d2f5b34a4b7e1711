//! Configuration precedence (defaults, then file, then environment) and its errors.

use serde::{Deserialize, Serialize};
use serde_json::json;
use service_kit::config_from;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Sample {
    api_token: String,
    port: u16,
    name: String,
    insecure: bool,
    networks: Vec<String>,
    optional: Option<String>,
    limit: Option<u32>,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            api_token: String::new(),
            port: 1,
            name: "default".into(),
            insecure: false,
            networks: vec![],
            optional: None,
            limit: None,
        }
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn environment_overrides_file_overrides_defaults() {
    let file = json!({"port": 7, "name": "file"});
    let env = vars(&[
        ("api_token", "12345"),
        ("port", "9"),
        ("insecure", "1"),
        ("networks", "127.0.0.0/8, ::1/128"),
        ("optional", "x"),
        ("other_service_setting", "ignored"),
    ]);
    let c: Sample = config_from(Some(file), env).unwrap();
    assert_eq!(
        c,
        Sample {
            api_token: "12345".into(),
            port: 9,
            name: "file".into(),
            insecure: true,
            networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            optional: Some("x".into()),
            limit: None,
        }
    );
    let c: Sample = config_from(None, vars(&[])).unwrap();
    assert_eq!(c, Sample::default());
}

#[test]
fn bad_values_name_the_variable() {
    let table = [
        (vars(&[("port", "eighty")]), "HOOKLINE_PORT"),
        (vars(&[("port", "70000")]), "setting `port` (HOOKLINE_PORT)"),
        (vars(&[("insecure", "perhaps")]), "HOOKLINE_INSECURE"),
    ];
    for (env, expected) in table {
        let err = format!("{:#}", config_from::<Sample>(None, env).unwrap_err());
        assert!(err.contains(expected), "{err}");
    }
    let err = format!(
        "{:#}",
        config_from::<Sample>(Some(json!({"prot": 1})), vars(&[])).unwrap_err()
    );
    assert!(err.contains("unknown setting `prot`"), "{err}");
}

#[test]
fn errors_never_quote_values_and_numbers_in_the_file_are_text_for_text_settings() {
    let c: Sample = config_from(Some(json!({"api_token": 987654321})), vars(&[])).unwrap();
    assert_eq!(c.api_token, "987654321");
    let err = format!(
        "{:#}",
        config_from::<Sample>(Some(json!({"port": "secret-ish"})), vars(&[])).unwrap_err()
    );
    assert!(!err.contains("secret-ish"), "{err}");
    assert!(err.contains("`port`"), "{err}");
}

#[test]
fn optional_settings_take_text_or_numbers_as_their_type_says() {
    let c: Sample = config_from(None, vars(&[("optional", "12"), ("limit", " 5 ")])).unwrap();
    assert_eq!(
        c.optional.as_deref(),
        Some("12"),
        "digits stay text for a text setting"
    );
    assert_eq!(c.limit, Some(5));
    let e = config_from::<Sample>(None, vars(&[("limit", "five")])).unwrap_err();
    assert!(e.to_string().contains("HOOKLINE_LIMIT"), "{e}");
    assert!(!e.to_string().contains("five"), "{e}");
}
