//! `hookline dlq list|show|replay`: dead letters straight from Kafka, through
//! `dead_letter_ops` (the same code as the API's `/dead-letters` routes). Settings come
//! from the services' variables: `HOOKLINE_KAFKA_BROKERS`, `HOOKLINE_TOPIC_PREFIX`,
//! `HOOKLINE_MASTER_KEY` (replay only), ... and the `HOOKLINE_CONFIG` file.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dead_letter_ops::{
    Cursor, Entry, ListFilter, OpsError, Page, Progress, ReplayFilter, ReplayRequest,
    ReplaySummary, Shown, Store,
};
use kafka_io::{KafkaSettings, Table, Topics};
use serde::{Deserialize, Serialize};
use service_kit::Secret;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Exit status of a replay that ran but refused some letters (or missed some ids).
const SOME_REFUSED: u8 = 3;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first: metadata only (never URLs, headers or bodies).
    List(ListArgs),
    /// Show one dead letter, its secrets, sealed body and responses redacted.
    Show {
        /// The dead-letter id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue dead letters for delivery to their endpoint's current URL; each dead
    /// letter is replayed once. Exits 3 when some letters were refused.
    Replay(ReplayArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this endpoint's.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only those that failed since T: RFC 3339 or a duration ago (24h, 30m, 7d).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only those with this reason code (HL-DELIVERY-REJECTED ...).
    #[arg(long, value_name = "CODE")]
    reason: Option<String>,
    /// Entries per page (1 to 1000).
    #[arg(long, default_value_t = dead_letter_ops::DEFAULT_LIMIT)]
    limit: usize,
    /// The next page: the cursor the previous page printed.
    #[arg(long)]
    cursor: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Only this endpoint's.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only those that failed since T: RFC 3339 or a duration ago (24h).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only those that failed before T.
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// Only these dead letters.
    #[arg(long, num_args = 1.., value_name = "ID")]
    ids: Vec<String>,
    /// Every dead letter (when no other filter is given).
    #[arg(long)]
    all: bool,
    /// Say what would be re-queued; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// The settings `hookline dlq` reads, named as the services name them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    #[serde(flatten)]
    kafka: KafkaSettings,
    /// Opens and seals what a replayed delivery carries (`HOOKLINE_MASTER_KEY`).
    master_key: Secret,
    /// Earlier master keys (`HOOKLINE_MASTER_KEYS_PREVIOUS`).
    master_keys_previous: Secret,
}

/// Runs a `dlq` command.
pub async fn run(command: DlqCommand) -> anyhow::Result<ExitCode> {
    let config: Config = load_config()?;
    config.kafka.security.check().map_err(anyhow::Error::msg)?;
    let store = Store::new(config.kafka.clone())?;
    match command {
        DlqCommand::List(args) => list(&store, args).await,
        DlqCommand::Show { id, json } => show(&store, &id, json).await,
        DlqCommand::Replay(args) => replay(&store, &config, args).await,
    }
}

/// Defaults, then the `HOOKLINE_CONFIG` file (only the settings used here; the file
/// may be a service's), then `HOOKLINE_*` variables.
pub(crate) fn load_config<T>() -> anyhow::Result<T>
where
    T: Serialize + serde::de::DeserializeOwned + Default,
{
    let file = match std::env::var_os("HOOKLINE_CONFIG") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "HOOKLINE_CONFIG names {}, which cannot be read",
                    path.to_string_lossy()
                )
            })?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{} is not valid TOML", path.to_string_lossy()))?;
            let known = serde_json::to_value(T::default())?;
            let used: serde_json::Map<String, serde_json::Value> = table
                .into_iter()
                .filter(|(k, _)| known.get(k).is_some())
                .map(|(k, v)| Ok((k, serde_json::to_value(v)?)))
                .collect::<anyhow::Result<_>>()?;
            Some(serde_json::Value::Object(used))
        }
        None => None,
    };
    let vars = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("HOOKLINE_")?.to_ascii_lowercase(), v)));
    service_kit::config_from(file, vars)
}

fn time_arg(
    flag: &str,
    text: Option<&str>,
    now: OffsetDateTime,
) -> anyhow::Result<Option<OffsetDateTime>> {
    text.map(|t| dead_letter_ops::parse_time(t, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

fn coded(e: OpsError) -> anyhow::Error {
    anyhow::anyhow!("{}: {e}", e.code())
}

async fn list(store: &Store, args: ListArgs) -> anyhow::Result<ExitCode> {
    if !(1..=dead_letter_ops::MAX_LIMIT).contains(&args.limit) {
        bail!("--limit: from 1 to {}", dead_letter_ops::MAX_LIMIT);
    }
    let filter = ListFilter {
        endpoint_id: args.endpoint,
        since: time_arg("since", args.since.as_deref(), OffsetDateTime::now_utc())?,
        reason_code: args.reason,
    };
    let cursor = args
        .cursor
        .as_deref()
        .map(Cursor::parse)
        .transpose()
        .map_err(|_| anyhow::anyhow!("--cursor: not a cursor a listing printed"))?;
    let page = store
        .list(
            &filter,
            &Page {
                limit: args.limit,
                cursor,
            },
        )
        .await
        .map_err(coded)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    if page.dead_letters.is_empty() {
        println!("no dead letters");
    } else {
        println!(
            "{:<36}  {:<29}  {:<10}  {:<26}  {:<36}  {:<22}  {:<12}  REPLAYED",
            "ID", "FAILED AT", "STAGE", "CODE", "ENDPOINT", "EVENT TYPE", "ATTEMPTS"
        );
        for e in &page.dead_letters {
            println!(
                "{:<36}  {:<29}  {:<10}  {:<26}  {:<36}  {:<22}  {:<12}  {}",
                e.id,
                e.failed_at,
                e.stage,
                e.reason_code,
                e.endpoint_id.as_deref().unwrap_or("-"),
                e.event_type.as_deref().unwrap_or("-"),
                attempts(e),
                e.replayed_at.as_deref().unwrap_or(if e.replayable {
                    "no"
                } else {
                    "not replayable"
                }),
            );
        }
    }
    if page.unreadable > 0 {
        println!(
            "({} record(s) of the topic are not readable dead letters)",
            page.unreadable
        );
    }
    if let Some(next) = page.next_cursor {
        println!("more: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `3 (last 410)`, `1 (last HL-DELIVERY-TIMEOUT)`, `0`.
fn attempts(e: &Entry) -> String {
    match e.attempts.last() {
        Some(a) => match (a.status, &a.error_code) {
            (Some(s), _) => format!("{} (last {s})", e.attempt_count),
            (None, Some(code)) => format!("{} (last {code})", e.attempt_count),
            (None, None) => e.attempt_count.to_string(),
        },
        None => "0".to_owned(),
    }
}

async fn show(store: &Store, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Some(shown) = store.show(id).await.map_err(coded)? else {
        bail!("HL-DLQ-NOT-FOUND: no dead letter has the id {id}");
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "dead_letter": shown }))?
        );
    } else {
        print_shown(&shown);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_shown(s: &Shown) {
    let e = &s.entry;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    for (k, v) in [
        ("id", e.id.clone()),
        ("failed at", e.failed_at.clone()),
        ("stage", e.stage.clone()),
        ("reason", format!("{}: {}", e.reason_code, e.reason)),
        ("endpoint", or_dash(&e.endpoint_id)),
        (
            "event",
            format!("{} ({})", or_dash(&e.event_id), or_dash(&e.event_type)),
        ),
        ("delivery", or_dash(&e.delivery_id)),
        ("transfer", or_dash(&e.transfer_id)),
        ("source", s.source.clone()),
        ("replay of", or_dash(&e.replay_of)),
        (
            "replayed at",
            e.replayed_at.clone().unwrap_or_else(|| {
                if e.replayable {
                    "not yet".to_owned()
                } else {
                    "not replayable".to_owned()
                }
            }),
        ),
    ] {
        println!("{k:<12} {v}");
    }
    if let Some(n) = s.payload_bytes {
        println!("{:<12} {n} bytes [redacted]", "raw record");
    }
    for a in &e.attempts {
        let outcome = a
            .status
            .map(|s| format!("HTTP {s}"))
            .or_else(|| a.error_code.clone())
            .unwrap_or_else(|| "no outcome".to_owned());
        println!(
            "attempt {:<4} {}  {} ms  {}{}",
            a.number,
            a.started_at,
            a.duration_ms,
            outcome,
            a.response
                .map(|r| format!("  response {r}"))
                .unwrap_or_default()
        );
    }
    let Some(r) = &s.request else { return };
    println!("\n{} {}", r.method, r.url);
    for h in &r.headers {
        println!("{}: {}", h.name, h.value);
    }
    println!(
        "(signing: {}; rendered at {})",
        r.signing_scheme, r.rendered_at
    );
    match (&r.body, r.body_sealed) {
        (_, true) => println!("\n[body sealed: {} bytes]", r.body_bytes),
        (Some(body), false) => {
            println!("\n{body}");
            if r.body_truncated {
                println!("[... {} bytes in all]", r.body_bytes);
            }
        }
        (None, false) => {}
    }
}

async fn replay(store: &Store, config: &Config, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let filter = ReplayFilter {
        endpoint_id: args.endpoint,
        since: time_arg("since", args.since.as_deref(), now)?,
        until: time_arg("until", args.until.as_deref(), now)?,
        ids: args.ids,
    };
    if filter.is_everything() && !args.all {
        bail!("give --endpoint, --since, --until or --ids (or --all to replay every dead letter)");
    }
    if !filter.is_everything() && args.all {
        bail!("--all replays every dead letter: leave out the other filters");
    }
    let sealer = service_kit::sealer(&config.master_key, &config.master_keys_previous)?;
    let shutdown = CancellationToken::new();
    let _stop_tables = shutdown.clone().drop_guard();
    let topics = Topics::new(&config.kafka.topic_prefix);
    service_kit::check_master_key(&config.kafka, &topics, &sealer, &shutdown).await?;
    let registry = std::sync::Arc::new(wire::Registry::bundled()?);
    let endpoints = Table::start(
        &config.kafka,
        &topics.endpoints,
        move |b| registry.decode::<wire::Endpoint>(b).ok(),
        shutdown.child_token(),
    )
    .await
    .with_context(|| format!("reading {}", topics.endpoints))?;
    let bar = indicatif::ProgressBar::new_spinner().with_message("reading dead letters");
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let progress = {
        let bar = bar.clone();
        move |p: Progress| match p {
            Progress::Writing(n) => {
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} re-queued {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_length(n as u64);
                bar.set_message("");
            }
            Progress::Written => bar.inc(1),
            Progress::Committing => bar.set_message("committing"),
        }
    };
    let request = ReplayRequest {
        filter,
        dry_run: args.dry_run,
        requested_by: "cli".to_owned(),
    };
    let result = store.replay(&request, &endpoints, &sealer, &progress).await;
    bar.finish_and_clear();
    let summary = result.map_err(coded)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    let refused = !summary.refused.is_empty() || !summary.not_found.is_empty();
    Ok(if refused {
        ExitCode::from(SOME_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(s: &ReplaySummary) {
    if s.dry_run {
        println!("dry run: nothing was written");
    }
    let requeued = if s.dry_run {
        "would re-queue"
    } else {
        "re-queued"
    };
    println!("{:<17} {}", "matched", s.matched);
    println!("{requeued:<17} {}", s.requeued);
    println!("{:<17} {}", "already replayed", s.already_replayed);
    if s.duplicates > 0 {
        println!(
            "{:<17} {} (same delivery as a letter re-queued now; marked)",
            "duplicates", s.duplicates
        );
    }
    println!("{:<17} {}", "refused", s.refused.values().sum::<usize>());
    for (code, n) in &s.refused {
        println!("  {code:<32} {n}");
    }
    for l in s.letters.iter().filter(|l| l.outcome == "refused") {
        println!(
            "refused {} (endpoint {}): {}",
            l.id,
            l.endpoint_id.as_deref().unwrap_or("-"),
            l.code.unwrap_or("-")
        );
    }
    for id in &s.not_found {
        println!("not found: {id}");
    }
}
