//! `hookline webhooks list|show|create|update|delete|test`: the producer's `/webhooks`
//! routes (`HOOKLINE_API_URL`, `HOOKLINE_API_TOKEN`). A webhook's fields come from a
//! JSON file (`{"webhook": {...}}` or the inner object), from flags, or both (flags
//! win). Answers print as a short summary, or as the API's JSON with `--json`; the exit
//! status is 0 on success (for `test`: the receiver answered 2xx), else 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::keys::ApiArgs;

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// List webhooks: id, name, vendor, active, events.
    List(ListArgs),
    /// Show one webhook.
    Show(IdArgs),
    /// Create a webhook.
    Create(CreateArgs),
    /// Change the fields given of a webhook.
    Update(UpdateArgs),
    /// Delete a webhook.
    Delete(DeleteArgs),
    /// Send a webhook one test request and show what happened.
    Test(TestArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct IdArgs {
    /// The webhook's id.
    id: String,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// A webhook's fields as flags; each one given overrides the file's.
#[derive(Args)]
pub struct Fields {
    /// JSON file: `{"webhook": {...}}` or the webhook object itself; `-` reads standard input.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Its name.
    #[arg(long)]
    name: Option<String>,
    /// generic_post, generic_get, slack, pagerduty, datadog, ...
    #[arg(long)]
    vendor: Option<String>,
    /// Where requests go.
    #[arg(long)]
    url: Option<String>,
    /// An event type, a prefix (`source.*`) or `*`; repeat for several.
    #[arg(long = "event")]
    events: Vec<String>,
    /// prequel_rsa, standard_webhooks, fivetran_hmac, dataprep_hmac or none.
    #[arg(long)]
    signing_scheme: Option<String>,
    /// The HMAC secret (standard_webhooks generates one when left out).
    #[arg(long, env = "HOOKLINE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The receiver's API key.
    #[arg(long, env = "HOOKLINE_WEBHOOK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Whether it receives events.
    #[arg(long)]
    active: Option<bool>,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    fields: Fields,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The webhook's id.
    id: String,
    #[command(flatten)]
    fields: Fields,
    /// Only if the webhook still has this version (its `version`, or the ETag).
    #[arg(long)]
    if_match: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// The webhook's id.
    id: String,
    /// Only if the webhook still has this version.
    #[arg(long)]
    if_match: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TestArgs {
    /// The webhook's id.
    id: String,
    /// Send a sample of this event type (default: the first type it subscribes to).
    #[arg(long)]
    event_type: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `webhooks` command.
pub async fn run(command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::List(a) => {
            let answer = call(&a.api, reqwest::Method::GET, "/webhooks", None, None).await?;
            Ok(show(&answer, a.json, |body| {
                for w in body["webhooks"].as_array().into_iter().flatten() {
                    println!("{}", line(w));
                }
            }))
        }
        WebhooksCommand::Show(a) => {
            let path = format!("/webhooks/{}", segment(&a.id));
            let answer = call(&a.api, reqwest::Method::GET, &path, None, None).await?;
            Ok(show(&answer, a.json, summary))
        }
        WebhooksCommand::Create(a) => {
            let body = json!({"webhook": fields(&a.fields)?});
            let answer = call(&a.api, reqwest::Method::POST, "/webhooks", Some(body), None).await?;
            Ok(show(&answer, a.json, summary))
        }
        WebhooksCommand::Update(a) => {
            let path = format!("/webhooks/{}", segment(&a.id));
            let body = json!({"webhook": fields(&a.fields)?});
            let answer = call(
                &a.api,
                reqwest::Method::PATCH,
                &path,
                Some(body),
                a.if_match.as_deref(),
            )
            .await?;
            Ok(show(&answer, a.json, summary))
        }
        WebhooksCommand::Delete(a) => {
            let path = format!("/webhooks/{}", segment(&a.id));
            let answer = call(
                &a.api,
                reqwest::Method::DELETE,
                &path,
                None,
                a.if_match.as_deref(),
            )
            .await?;
            Ok(show(&answer, a.json, |body| {
                println!("deleted {}", line(&body["webhook"]));
            }))
        }
        WebhooksCommand::Test(a) => {
            let path = format!("/webhooks/{}/test", segment(&a.id));
            let body = a.event_type.as_ref().map(|t| json!({"event_type": t}));
            let answer = call(&a.api, reqwest::Method::POST, &path, body, None).await?;
            let code = show(&answer, a.json, test_summary);
            let delivered = answer.body["test"]["delivered"].as_bool() == Some(true);
            Ok(if code == ExitCode::SUCCESS && !delivered {
                ExitCode::FAILURE
            } else {
                code
            })
        }
    }
}

/// What the API answered.
struct Answer {
    status: reqwest::StatusCode,
    body: Value,
    url: String,
}

async fn call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> anyhow::Result<Answer> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()?;
    let url = format!("{}{path}", api.api.trim_end_matches('/'));
    let mut request = client.request(method, &url).bearer_auth(&api.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(version) = if_match {
        let tag = if version.starts_with('"') || version == "*" {
            version.to_owned()
        } else {
            format!("\"{version}\"")
        };
        request = request.header(reqwest::header::IF_MATCH, tag);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url} did not answer: {:#}", anyhow::Error::from(e)))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { status, body, url })
}

/// Prints `answer`: its JSON with `--json`, else `human`; an error as the API's code
/// and message. Exit 0 on 2xx.
fn show(answer: &Answer, json: bool, human: impl Fn(&Value)) -> ExitCode {
    if !answer.status.is_success() {
        let error = &answer.body["error"];
        match (error["code"].as_str(), error["message"].as_str()) {
            (Some(code), Some(message)) => {
                let field = error["field"]
                    .as_str()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                eprintln!("hookline: {code}{field}: {message}");
            }
            _ => eprintln!("hookline: {} answered {}", answer.url, answer.status),
        }
        if json {
            println!("{}", pretty(&answer.body));
        }
        return ExitCode::FAILURE;
    }
    if json {
        println!("{}", pretty(&answer.body));
    } else {
        human(&answer.body);
    }
    ExitCode::SUCCESS
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// One webhook on a line: id, name, vendor, active, events.
fn line(w: &Value) -> String {
    let events: Vec<&str> = w["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{}  {}  {}  {}  {}",
        w["id"].as_str().unwrap_or_default(),
        w["name"].as_str().unwrap_or_default(),
        w["vendor"].as_str().unwrap_or_default(),
        if w["active"].as_bool() == Some(true) {
            "active"
        } else {
            "inactive"
        },
        events.join(",")
    )
}

/// A webhook answer: its line, its version, and a generated secret (shown this once).
fn summary(body: &Value) {
    let w = &body["webhook"];
    println!("{}", line(w));
    println!("url: {}", w["url"].as_str().unwrap_or_default());
    println!(
        "signing: {}  version: {}",
        w["signing_scheme"].as_str().unwrap_or_default(),
        w["version"]
    );
    if let Some(secret) = body["generated_secret"].as_str() {
        println!("generated secret (shown once): {secret}");
    }
}

/// A test's outcome in a few lines.
fn test_summary(body: &Value) {
    let t = &body["test"];
    let what = match (t["status"].as_i64(), t["error_code"].as_str()) {
        (Some(status), _) => format!("answered {status}"),
        (None, Some(code)) => code.to_owned(),
        (None, None) => "no answer".to_owned(),
    };
    let verdict = if t["delivered"].as_bool() == Some(true) {
        "delivered"
    } else if t["would_retry"].as_bool() == Some(true) {
        "failed (a real delivery would be retried)"
    } else {
        "failed (a real delivery would be dead-lettered)"
    };
    println!(
        "{verdict}: {what} in {} ms ({} {})",
        t["duration_ms"],
        t["event_type"].as_str().unwrap_or_default(),
        t["delivery_id"].as_str().unwrap_or_default()
    );
    if let Some(response) = t["response"].as_str() {
        println!("response: {response}");
    }
}

/// The fields of a create or update: the file's, then the flags'.
fn fields(f: &Fields) -> anyhow::Result<Map<String, Value>> {
    let mut out = match &f.file {
        None => Map::new(),
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            match serde_json::from_str::<Value>(&text).context("the file is not JSON")? {
                Value::Object(mut map) => match map.remove("webhook") {
                    Some(Value::Object(inner)) if map.is_empty() => inner,
                    Some(_) => bail!("`webhook` in the file must be the only key, an object"),
                    None => map,
                },
                _ => bail!("the file must hold a JSON object"),
            }
        }
    };
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(v) = value {
            out.insert(name.to_owned(), v);
        }
    };
    set("name", f.name.clone().map(Value::String));
    set("vendor", f.vendor.clone().map(Value::String));
    set("url", f.url.clone().map(Value::String));
    set(
        "signing_scheme",
        f.signing_scheme.clone().map(Value::String),
    );
    set("secret", f.secret.clone().map(Value::String));
    set("api_key", f.api_key.clone().map(Value::String));
    set("active", f.active.map(Value::Bool));
    if !f.events.is_empty() {
        set("events", Some(json!(f.events)));
    }
    Ok(out)
}

/// An id as one path segment.
fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}
