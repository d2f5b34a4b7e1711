//! `hookline`: the operator CLI.
//!
//! `hookline events send` produces one JSON-described event, through the producer API
//! (`--api`) or straight to Kafka (`--kafka`), validated against the Avro schemas either way.
//! `hookline dlq list|show|replay` inspects and replays dead letters ([`dlq`]).
//! `hookline health [URL]` asks a service whether it is ready ([`health`]).
//! `hookline schemas register|check` publishes the event schema to a Schema Registry
//! ([`schemas`]).
//! `hookline webhooks list|show|create|update|delete|test` manages webhooks through the
//! producer API ([`webhooks`]).

mod dlq;
mod health;
mod keys;
mod schemas;
mod webhooks;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hookline",
    version,
    about = "Operate a hookline webhook pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Work with Go text/templates as hookline renders them.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Verify a signed request as a receiver would; exits 0 when valid, else says why.
    Verify(VerifyArgs),
    /// Inspect and replay dead letters (settings from the services' HOOKLINE_* variables).
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Ask a service's admin listener whether it is ready (exit 0) or not (exit 1).
    Health(health::HealthArgs),
    /// Rotate the master key: status and reseal, through the producer's API.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Publish hookline's event schema to a Schema Registry, or check it against one
    /// (HOOKLINE_SCHEMA_REGISTRY_URL and its credentials).
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// Manage webhooks through the producer's API (HOOKLINE_API_URL, HOOKLINE_API_TOKEN).
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

#[derive(Args)]
struct VerifyArgs {
    /// prequel_rsa, standard_webhooks, fivetran_hmac or dataprep_hmac.
    #[arg(long)]
    scheme: String,
    /// PEM file of the public key (prequel_rsa).
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// The shared secret (HMAC schemes).
    #[arg(long, env = "HOOKLINE_VERIFY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The request's headers: `Key: Value` lines, or a JSON object.
    #[arg(long)]
    headers: PathBuf,
    /// The raw request body.
    #[arg(long)]
    body: PathBuf,
    /// The request URL (dataprep_hmac signs it for GET and DELETE).
    #[arg(long, default_value = "")]
    url: String,
    /// The request method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// How old a timestamp may be.
    #[arg(long, default_value = "300s")]
    tolerance: humantime::Duration,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Render a template with a JSON object as its data; prints exactly the rendered
    /// bytes, nothing else.
    Render {
        /// The template file.
        #[arg(long)]
        template: PathBuf,
        /// A JSON object whose keys are the template's fields (`.DestinationId` ...).
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Send one event: `{"type": ..., "id"?: ..., "created_at"?: ..., "data": {...}}`.
    Send(SendArgs),
}

#[derive(Args)]
struct SendArgs {
    /// JSON file holding the event; `-` reads standard input.
    #[arg(long, short)]
    file: PathBuf,
    /// Producer API base URL (the default route).
    #[arg(
        long,
        env = "HOOKLINE_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// API bearer token.
    #[arg(long, env = "HOOKLINE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write straight to Kafka at these bootstrap servers instead of the API.
    #[arg(long)]
    kafka: Option<String>,
    /// Topic prefix, with --kafka.
    #[arg(long, env = "HOOKLINE_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookline: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Events(EventsCommand::Send(args)) => {
                send(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Template(TemplateCommand::Render { template, data }) => {
                render(&template, &data).map(|()| ExitCode::SUCCESS)
            }
            Command::Verify(args) => verify(&args).map(|()| ExitCode::SUCCESS),
            Command::Dlq(command) => dlq::run(command).await,
            Command::Health(args) => health::run(args).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Schemas(command) => schemas::run(command).await,
            Command::Webhooks(command) => webhooks::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn render(template: &std::path::Path, data: &std::path::Path) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(template)
        .with_context(|| format!("reading {}", template.display()))?;
    let data =
        std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
    let data: serde_json::Value =
        serde_json::from_str(&data).context("the data file is not valid JSON")?;
    anyhow::ensure!(data.is_object(), "the data file must hold a JSON object");
    let parsed = templates::Template::parse("template", &source, templates::Limits::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    let bytes = parsed
        .render(&templates::data_from_json(&data))
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let scheme = signing::Scheme::parse(&args.scheme)
        .with_context(|| format!("unknown scheme; one of {}", signing::SCHEMES.join(", ")))?;
    let text = std::fs::read_to_string(&args.headers)
        .with_context(|| format!("reading {}", args.headers.display()))?;
    let headers: Vec<(String, String)> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        _ => text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    };
    let body =
        std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?;
    let pem;
    let verifier = match (&args.public_key, &args.secret) {
        (Some(path), _) => {
            pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            signing::Verifier::PublicKeyPem(&pem)
        }
        (None, Some(secret)) => signing::Verifier::Secret(secret),
        (None, None) => bail!("give --public-key (prequel_rsa) or --secret (HMAC schemes)"),
    };
    let request = signing::Request {
        method: &args.method.to_ascii_uppercase(),
        url: &args.url,
        body: &body,
        id: "",
    };
    let tolerance = i64::try_from(args.tolerance.as_secs()).unwrap_or(i64::MAX);
    signing::verify(
        scheme,
        &headers,
        request,
        verifier,
        tolerance,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    println!("valid");
    Ok(())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let event: serde_json::Value =
        serde_json::from_str(&text).context("the event is not valid JSON")?;
    let id = match &args.kafka {
        Some(brokers) => send_to_kafka(brokers, &args.topic_prefix, &event).await?,
        None => send_to_api(&args.api, args.token.as_deref(), &event).await?,
    };
    println!("{id}");
    Ok(())
}

async fn send_to_api(
    api: &str,
    token: Option<&str>,
    event: &serde_json::Value,
) -> anyhow::Result<String> {
    let mut request = reqwest::Client::new()
        .post(format!("{}/events", api.trim_end_matches('/')))
        .json(event);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the producer API at {api}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        let error = &body["error"];
        match error["field"].as_str() {
            Some(field) => bail!(
                "{status}: {field}: {}",
                error["message"].as_str().unwrap_or("refused")
            ),
            None => bail!(
                "{status}: {}",
                error["message"].as_str().unwrap_or("refused")
            ),
        }
    }
    body["id"]
        .as_str()
        .map(str::to_owned)
        .context("the API answered without an id")
}

async fn send_to_kafka(
    brokers: &str,
    prefix: &str,
    event: &serde_json::Value,
) -> anyhow::Result<String> {
    let registry = wire::Registry::bundled()?;
    let (event, bytes) = registry
        .event_from_json(event)
        .map_err(|e| anyhow::anyhow!("invalid event: {e}"))?;
    let settings = kafka_io::KafkaSettings {
        kafka_brokers: brokers.to_owned(),
        topic_prefix: prefix.to_owned(),
        ..kafka_io::KafkaSettings::default()
    };
    let producer = kafka_io::producer(&settings, "hookline-cli")?;
    let topic = kafka_io::Topics::new(prefix).events;
    let never = tokio_util::sync::CancellationToken::new();
    let send = kafka_io::send_durably(
        &producer,
        &topic,
        event.key.as_bytes(),
        Some(&bytes),
        None,
        &never,
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), send)
        .await
        .with_context(|| format!("Kafka at {brokers} did not acknowledge within 30 s"))??;
    Ok(event.id)
}
