//! The retry policy, without I/O: what an attempt's outcome means for the delivery.
//!
//! 2xx is delivered. Connection errors, timeouts, 408, 429 and 5xx are retried
//! (honouring `Retry-After`); every other status, 410 in particular, is final.

use std::time::{Duration, SystemTime};

/// What one HTTP attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered.
    Status {
        /// HTTP status code.
        code: u16,
        /// Parsed `Retry-After`, if the receiver sent one.
        retry_after: Option<Duration>,
    },
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connect,
    /// The request could not even be built (bad URL or header).
    Invalid,
    /// The SSRF guard refused the address (`HOOKLINE_ALLOWED_NETWORKS`).
    Refused,
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Done: the receiver has it.
    Delivered,
    /// Try again, no sooner than `not_before` if given.
    Retry {
        /// The receiver's `Retry-After`.
        not_before: Option<Duration>,
    },
    /// Give up now: the dead-letter reason code.
    Final(&'static str),
}

/// The policy: pure, table-tested.
pub fn decide(outcome: &AttemptOutcome) -> Decision {
    match outcome {
        AttemptOutcome::Status { code, .. } if (200..300).contains(code) => Decision::Delivered,
        AttemptOutcome::Status { code: 408 | 429, retry_after } => Decision::Retry { not_before: *retry_after },
        AttemptOutcome::Status { code, retry_after } if (500..600).contains(code) => {
            Decision::Retry { not_before: *retry_after }
        }
        AttemptOutcome::Status { .. } => Decision::Final("HL-DELIVERY-REJECTED"),
        AttemptOutcome::Timeout | AttemptOutcome::Connect => Decision::Retry { not_before: None },
        AttemptOutcome::Invalid => Decision::Final("HL-DELIVERY-INVALID-REQUEST"),
        AttemptOutcome::Refused => Decision::Final("HL-DELIVERY-REFUSED"),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> AttemptOutcome {
        AttemptOutcome::Status { code, retry_after: None }
    }

    #[test]
    fn decision_table() {
        let rejected = Decision::Final("HL-DELIVERY-REJECTED");
        let retry = Decision::Retry { not_before: None };
        let table = [
            (status(200), Decision::Delivered),
            (status(201), Decision::Delivered),
            (status(204), Decision::Delivered),
            (status(299), Decision::Delivered),
            (status(301), rejected.clone()),
            (status(400), rejected.clone()),
            (status(401), rejected.clone()),
            (status(404), rejected.clone()),
            (status(408), retry.clone()),
            (status(410), rejected.clone()),
            (status(429), retry.clone()),
            (status(500), retry.clone()),
            (status(502), retry.clone()),
            (status(503), retry.clone()),
            (status(599), retry.clone()),
            (AttemptOutcome::Timeout, retry.clone()),
            (AttemptOutcome::Connect, retry.clone()),
            (AttemptOutcome::Invalid, Decision::Final("HL-DELIVERY-INVALID-REQUEST")),
            (AttemptOutcome::Refused, Decision::Final("HL-DELIVERY-REFUSED")),
            (
                AttemptOutcome::Status { code: 429, retry_after: Some(Duration::from_secs(3)) },
                Decision::Retry { not_before: Some(Duration::from_secs(3)) },
            ),
        ];
        for (outcome, expected) in table {
            assert_eq!(decide(&outcome), expected, "{outcome:?}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        let table = [
            ("120", Some(Duration::from_secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            ("Wed, 21 Oct 2015 07:28:30 GMT", Some(Duration::from_secs(30))),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
            ("-5", None),
        ];
        for (value, expected) in table {
            assert_eq!(parse_retry_after(value, now), expected, "{value}");
        }
    }
}
