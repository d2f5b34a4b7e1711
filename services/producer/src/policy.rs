//! An endpoint's delivery policy as the API takes it: `retry_on_failure`,
//! `retry_schedule`, `max_in_flight` and `max_rps`, the same on webhooks and
//! sensitive-trace endpoints. The dispatcher applies them (they travel in each
//! rendered delivery); the producer only validates and stores them.

use std::ops::RangeInclusive;

use serde_json::{Map, Value};
use service_kit::schedule::RetrySchedule;
use wire::Endpoint;

use crate::error::ApiError;

/// Bounds of `max_in_flight` (requests in flight per dispatcher).
const MAX_IN_FLIGHT: RangeInclusive<i64> = 1..=1000;
/// Bounds of `max_rps` (requests per second per dispatcher).
const MAX_RPS: RangeInclusive<i64> = 1..=10_000;

/// Validates the policy fields given in `input` and sets them on `endpoint`; errors
/// name `<wrapper>.<field>`. A field left out keeps its value; `null` restores the
/// dispatcher's default (`retry_on_failure` takes only booleans).
pub(crate) fn apply(
    endpoint: &mut Endpoint,
    input: &Map<String, Value>,
    wrapper: &str,
) -> Result<(), ApiError> {
    let path = |field: &str| format!("{wrapper}.{field}");
    if let Some(v) = input.get("retry_on_failure") {
        // Stored inverted, so that an endpoint written before the field existed retries.
        endpoint.single_attempt = !v
            .as_bool()
            .ok_or_else(|| ApiError::invalid(path("retry_on_failure"), "must be a boolean"))?;
    }
    if let Some(v) = input.get("retry_schedule") {
        endpoint.retry_schedule = schedule(v, &path("retry_schedule"))?;
    }
    if let Some(v) = input.get("max_in_flight") {
        endpoint.max_in_flight = bounded(
            v,
            &MAX_IN_FLIGHT,
            &path("max_in_flight"),
            "for the dispatcher's default",
        )?;
    }
    if let Some(v) = input.get("max_rps") {
        endpoint.max_rps = bounded(v, &MAX_RPS, &path("max_rps"), "for no limit")?;
    }
    Ok(())
}

/// A schedule as text (`"0s,5s,5m"`) or a list of such texts (`["0s", "5s", "5m"]`),
/// stored in the canonical form `RetrySchedule` prints; `null`: the dispatcher's.
fn schedule(v: &Value, path: &str) -> Result<Option<String>, ApiError> {
    let text = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::invalid(
                path,
                "must list at least one delay (retry_on_failure: false turns retries off)",
            ));
        }
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}[{i}]");
                let part = item.as_str().ok_or_else(|| {
                    ApiError::invalid(&at, "must be a string of delays such as 5m")
                })?;
                RetrySchedule::parse(part).map_err(|why| ApiError::invalid(&at, why))?;
                parts.push(part);
            }
            parts.join(",")
        }
        _ => {
            return Err(ApiError::invalid(
                path,
                "must be delays such as \"0s,5s,5m\", a list of them, or null for the dispatcher's schedule",
            ));
        }
    };
    // The whole is checked again: the bound on the number of retries is over all parts.
    let parsed = RetrySchedule::parse(&text).map_err(|why| ApiError::invalid(path, why))?;
    Ok(Some(parsed.to_string()))
}

/// An integer within `range`, or `null` (`None`, whose meaning `null_means` names).
fn bounded(
    v: &Value,
    range: &RangeInclusive<i64>,
    path: &str,
    null_means: &str,
) -> Result<Option<i32>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    v.as_i64()
        .filter(|n| range.contains(n))
        .and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                path,
                format!(
                    "must be an integer from {} to {}, or null {null_means}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The endpoint `input` makes of a default one, or the `Debug` of the refusal.
    fn applied(input: Value) -> Result<Endpoint, String> {
        let mut endpoint = Endpoint::default();
        let Value::Object(map) = input else {
            unreachable!("tests pass objects")
        };
        apply(&mut endpoint, &map, "webhook")
            .map(|()| endpoint)
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn accepted_values_are_stored_canonical() {
        let e = applied(json!({"retry_on_failure": false, "retry_schedule": " 0s, 90s,1h 30m", "max_in_flight": 1000, "max_rps": 1})).unwrap();
        assert!(e.single_attempt);
        assert_eq!(e.retry_schedule.as_deref(), Some("0s,1m30s,1h30m"));
        assert_eq!((e.max_in_flight, e.max_rps), (Some(1000), Some(1)));
        let list = applied(json!({"retry_schedule": ["0s", "5s,5m", "2h"]})).unwrap();
        assert_eq!(list.retry_schedule.as_deref(), Some("0s,5s,5m,2h"));
        let defaults = applied(json!({"retry_on_failure": true, "retry_schedule": null, "max_in_flight": null, "max_rps": null})).unwrap();
        assert_eq!(defaults, Endpoint::default());
        assert_eq!(
            applied(json!({"max_rps": 10_000})).unwrap().max_rps,
            Some(10_000)
        );
    }

    #[test]
    fn refused_values_name_the_field() {
        let fifty_one: Vec<&str> = vec!["1s"; 51];
        let table = [
            (
                json!({"retry_on_failure": "no"}),
                "webhook.retry_on_failure",
            ),
            (
                json!({"retry_on_failure": null}),
                "webhook.retry_on_failure",
            ),
            (json!({"retry_schedule": ""}), "webhook.retry_schedule"),
            (
                json!({"retry_schedule": "5s,soon"}),
                "webhook.retry_schedule",
            ),
            (json!({"retry_schedule": "8days"}), "webhook.retry_schedule"),
            (json!({"retry_schedule": 5}), "webhook.retry_schedule"),
            (json!({"retry_schedule": []}), "webhook.retry_schedule"),
            (
                json!({"retry_schedule": ["5s", 5]}),
                "webhook.retry_schedule[1]",
            ),
            (
                json!({"retry_schedule": ["5s", "-1s"]}),
                "webhook.retry_schedule[1]",
            ),
            (
                json!({"retry_schedule": fifty_one}),
                "webhook.retry_schedule",
            ),
            (json!({"max_in_flight": 0}), "webhook.max_in_flight"),
            (json!({"max_in_flight": 1001}), "webhook.max_in_flight"),
            (json!({"max_in_flight": 2.5}), "webhook.max_in_flight"),
            (json!({"max_in_flight": "10"}), "webhook.max_in_flight"),
            (json!({"max_rps": 10_001}), "webhook.max_rps"),
            (json!({"max_rps": -1}), "webhook.max_rps"),
            (json!({"max_rps": true}), "webhook.max_rps"),
        ];
        for (input, field) in table {
            let refusal = applied(input.clone()).unwrap_err();
            assert!(
                refusal.contains(&format!("field: Some({field:?})")),
                "{input}: {refusal}"
            );
        }
    }
}
