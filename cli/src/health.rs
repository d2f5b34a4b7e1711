//! `hookline health`: asks a service's admin listener whether it is ready, for container
//! healthchecks (the runtime image has no curl) and for operators.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

#[derive(Args)]
pub struct HealthArgs {
    /// The route to ask: a service's `/health/ready` or `/health/live`.
    #[arg(default_value = "http://127.0.0.1:8081/health/ready")]
    url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s")]
    timeout: humantime::Duration,
}

/// Exit 0 when the route answers 2xx; otherwise 1, with the status and the service's
/// reason (readiness answers say which check failed, never a secret) on stderr.
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from(args.timeout))
        .build()?;
    match client.get(&args.url).send().await {
        Ok(response) if response.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(500).collect();
            eprintln!("hookline: {} answered {status}: {body}", args.url);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!(
                "hookline: {} did not answer: {:#}",
                args.url,
                anyhow::Error::from(e)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
