//! `hookline schemas register|check`: hookline's event schema in a Schema Registry
//! (`HOOKLINE_SCHEMA_REGISTRY_*`), under the subject `<topic prefix>events-value`
//! (TopicNameStrategy) unless `HOOKLINE_SCHEMA_REGISTRY_SUBJECT` or `--subject` says
//! otherwise.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kafka_io::KafkaSettings;
use serde::{Deserialize, Serialize};
use service_kit::SchemaRegistryConfig;

/// The event schema's record name in `schemas/`.
const EVENT: &str = "event";

#[derive(Subcommand)]
pub enum SchemasCommand {
    /// Register every version of the event schema (oldest first) and set the subject's
    /// compatibility rule; prints the ids.
    Register(RegisterArgs),
    /// Whether the newest event schema is registered, or compatible with what the
    /// subject holds: exit 0 when it is, 1 when the registry refuses it.
    Check(SubjectArgs),
}

#[derive(Args)]
pub struct SubjectArgs {
    /// The subject (default: HOOKLINE_SCHEMA_REGISTRY_SUBJECT, else `<prefix>events-value`).
    #[arg(long)]
    subject: Option<String>,
}

#[derive(Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    subject: SubjectArgs,
    /// The subject's compatibility rule: BACKWARD, BACKWARD_TRANSITIVE, FORWARD,
    /// FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE.
    #[arg(long, default_value = "BACKWARD")]
    compatibility: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    #[serde(flatten)]
    kafka: KafkaSettings,
    #[serde(flatten)]
    schema_registry: SchemaRegistryConfig,
}

const RULES: [&str; 7] = [
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
];

/// Runs a `schemas` command.
pub async fn run(command: SchemasCommand) -> anyhow::Result<ExitCode> {
    let config: Config = crate::dlq::load_config()?;
    config.kafka.security.check().map_err(anyhow::Error::msg)?;
    let Some(client) = config.schema_registry.client()? else {
        anyhow::bail!("HOOKLINE_SCHEMA_REGISTRY_URL is not set");
    };
    let subject = |args: &SubjectArgs| {
        args.subject
            .clone()
            .unwrap_or_else(|| config.schema_registry.subject(&config.kafka.topic_prefix))
    };
    let versions = event_schemas();
    match command {
        SchemasCommand::Register(args) => {
            let subject = subject(&args.subject);
            let rule = args.compatibility.to_ascii_uppercase();
            anyhow::ensure!(
                RULES.contains(&rule.as_str()),
                "--compatibility must be one of {}",
                RULES.join(", ")
            );
            client.set_compatibility(&subject, &rule).await?;
            println!("subject {subject}: compatibility {rule}");
            for (file, text) in versions {
                let registered = client.register(&subject, text).await?;
                println!(
                    "subject {subject}: schemas/{file} registered as version {}, schema id {}",
                    registered.version, registered.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::Check(args) => {
            let subject = subject(&args);
            let Some((file, text)) = versions.last() else {
                anyhow::bail!("no event schema is bundled");
            };
            if let Some(found) = client.lookup(&subject, text).await? {
                println!(
                    "subject {subject}: schemas/{file} is registered as version {}, schema id {}",
                    found.version, found.id
                );
                return Ok(ExitCode::SUCCESS);
            }
            match client.check(&subject, text).await? {
                None => {
                    println!(
                        "subject {subject} holds no schema yet: schemas/{file} can be registered (hookline schemas register)"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(c) if c.compatible => {
                    println!(
                        "subject {subject}: schemas/{file} is compatible with the latest version (not registered yet)"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(c) => {
                    println!(
                        "subject {subject}: schemas/{file} is NOT compatible with what the subject holds"
                    );
                    for m in c.messages {
                        println!("  {m}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// Every bundled version of the event schema, oldest first: `(file name, text)`.
fn event_schemas() -> Vec<(&'static str, &'static str)> {
    wire::schema_files(EVENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_schema_versions_are_found_oldest_first() {
        let files: Vec<&str> = event_schemas().into_iter().map(|(f, _)| f).collect();
        assert_eq!(files.first(), Some(&"event.v1.avsc"));
        assert!(files.iter().all(|f| f.starts_with("event.v")));
    }
}
