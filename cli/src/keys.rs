//! `hookline keys`: master-key rotation through the producer's API
//! (`HOOKLINE_API_URL`, `HOOKLINE_API_TOKEN`). `status` shows which master keys the
//! producer holds and what its tables hold sealed under each; `reseal` seals them
//! again under the newest key (README, "Rotating the master key").

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// The master keys configured and the sealed values of endpoints and keys by key id.
    Status(ApiArgs),
    /// Seal every value of endpoints and keys again under the newest master key.
    Reseal(ApiArgs),
}

#[derive(Args)]
pub struct ApiArgs {
    /// The producer's API.
    #[arg(
        long,
        env = "HOOKLINE_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) api: String,
    /// The API's bearer token.
    #[arg(long, env = "HOOKLINE_API_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
}

/// Runs a `keys` command: prints the producer's JSON answer; exit 0 on 200, else 1.
pub async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let (args, method, path) = match &command {
        KeysCommand::Status(a) => (a, reqwest::Method::GET, "/keys/master"),
        KeysCommand::Reseal(a) => (a, reqwest::Method::POST, "/keys/master/reseal"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let url = format!("{}{path}", args.api.trim_end_matches('/'));
    let response = client
        .request(method, &url)
        .bearer_auth(&args.token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url} did not answer: {:#}", anyhow::Error::from(e)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let shown = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(body);
    println!("{shown}");
    if status == reqwest::StatusCode::OK {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("hookline: {url} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}
