//! The retry policy, without I/O: what an attempt's outcome means for the delivery,
//! when the next attempt is due, and which retry tier holds it until then.
//!
//! 2xx is delivered. Connection errors, timeouts, 408, 429 and 5xx are retried on the
//! schedule (±20% jitter, `Retry-After` honoured up to a bound, 429 and timeouts
//! waiting at least a minimum); every other status, 410 in particular, is final, and
//! so is a retryable failure once the schedule is used up.

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
        AttemptOutcome::Status {
            code: 408 | 429,
            retry_after,
        } => Decision::Retry {
            not_before: *retry_after,
        },
        AttemptOutcome::Status { code, retry_after } if (500..600).contains(code) => {
            Decision::Retry {
                not_before: *retry_after,
            }
        }
        AttemptOutcome::Status { .. } => Decision::Final("HL-DELIVERY-REJECTED"),
        AttemptOutcome::Timeout | AttemptOutcome::Connect => Decision::Retry { not_before: None },
        AttemptOutcome::Invalid => Decision::Final("HL-DELIVERY-INVALID-REQUEST"),
        AttemptOutcome::Refused => Decision::Final("HL-DELIVERY-REFUSED"),
    }
}

/// Share of a scheduled delay the jitter may add or take away.
pub const JITTER: f64 = 0.2;

/// The delivery's retry policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Delays before the second, third, … attempt.
    pub schedule: Vec<Duration>,
    /// One attempt only (`retry_on_failure: false`).
    pub single_attempt: bool,
    /// Least wait after a 429 or a timeout.
    pub throttle_min: Duration,
    /// Longest `Retry-After` honoured; longer asks wait this long.
    pub retry_after_max: Duration,
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The receiver has it.
    Delivered,
    /// Attempt again after `wait` (zero: at once).
    Retry {
        /// From the end of this attempt.
        wait: Duration,
    },
    /// Dead-letter it with this code.
    DeadLetter(&'static str),
}

/// What follows attempt number `made` (1-based) that ended in `outcome`. `jitter` is
/// drawn uniformly from [-1, 1] by the caller, so this stays pure.
pub fn next(policy: &Policy, made: usize, outcome: &AttemptOutcome, jitter: f64) -> Next {
    match decide(outcome) {
        Decision::Delivered => Next::Delivered,
        Decision::Final(code) => Next::DeadLetter(code),
        Decision::Retry { not_before } => {
            if policy.single_attempt {
                return Next::DeadLetter("HL-DELIVERY-FAILED");
            }
            let Some(delay) = made.checked_sub(1).and_then(|i| policy.schedule.get(i)) else {
                return Next::DeadLetter("HL-DELIVERY-EXHAUSTED");
            };
            let mut wait = delay.mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0));
            if matches!(
                outcome,
                AttemptOutcome::Timeout | AttemptOutcome::Status { code: 429, .. }
            ) {
                wait = wait.max(policy.throttle_min);
            }
            if let Some(after) = not_before {
                wait = wait.max(after.min(policy.retry_after_max));
            }
            Next::Retry { wait }
        }
    }
}

/// Where a delivery goes that is due in `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Attempt now.
    Now,
    /// Wait here (at most the shortest tier's delay), then attempt.
    Sleep(Duration),
    /// Into this retry tier (an index of `tiers`).
    Tier(usize),
}

/// The longest tier not longer than `wait`; waits shorter than the shortest tier are
/// slept out in place (they hold a record for at most that long).
pub fn route(wait: Duration, tiers: &[Duration]) -> Route {
    match tiers.first() {
        _ if wait.is_zero() => Route::Now,
        None => Route::Sleep(wait),
        Some(shortest) if wait <= *shortest => Route::Sleep(wait),
        Some(_) => Route::Tier(tiers.iter().rposition(|t| *t <= wait).unwrap_or(0)),
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
        AttemptOutcome::Status {
            code,
            retry_after: None,
        }
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
            (
                AttemptOutcome::Invalid,
                Decision::Final("HL-DELIVERY-INVALID-REQUEST"),
            ),
            (
                AttemptOutcome::Refused,
                Decision::Final("HL-DELIVERY-REFUSED"),
            ),
            (
                AttemptOutcome::Status {
                    code: 429,
                    retry_after: Some(Duration::from_secs(3)),
                },
                Decision::Retry {
                    not_before: Some(Duration::from_secs(3)),
                },
            ),
        ];
        for (outcome, expected) in table {
            assert_eq!(decide(&outcome), expected, "{outcome:?}");
        }
    }

    fn policy(schedule: &str) -> Policy {
        Policy {
            schedule: service_kit::schedule::RetrySchedule::parse(schedule)
                .unwrap()
                .delays()
                .to_vec(),
            single_attempt: false,
            throttle_min: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(3600),
        }
    }

    #[test]
    fn next_attempt_table() {
        let p = policy("0s,5s,5m");
        let s = Duration::from_secs;
        let after = |code, secs| AttemptOutcome::Status {
            code,
            retry_after: Some(s(secs)),
        };
        let retry = |wait| Next::Retry { wait };
        // (attempts made, outcome, jitter, expected)
        let table = [
            (1, status(200), 0.0, Next::Delivered),
            (1, status(500), 0.0, retry(s(0))),
            (2, status(500), 0.0, retry(s(5))),
            (2, status(500), 1.0, retry(s(6))),
            (2, status(500), -1.0, retry(s(4))),
            (2, status(500), 7.0, retry(s(6))),
            (3, status(500), -0.5, retry(s(270))),
            (
                4,
                status(500),
                0.0,
                Next::DeadLetter("HL-DELIVERY-EXHAUSTED"),
            ),
            (
                9,
                AttemptOutcome::Connect,
                0.0,
                Next::DeadLetter("HL-DELIVERY-EXHAUSTED"),
            ),
            (
                1,
                status(410),
                0.0,
                Next::DeadLetter("HL-DELIVERY-REJECTED"),
            ),
            (
                3,
                status(404),
                0.0,
                Next::DeadLetter("HL-DELIVERY-REJECTED"),
            ),
            (
                1,
                AttemptOutcome::Refused,
                0.0,
                Next::DeadLetter("HL-DELIVERY-REFUSED"),
            ),
            // 429 and timeouts wait at least the minimum, even when the schedule says now.
            (1, status(429), 0.0, retry(s(30))),
            (1, AttemptOutcome::Timeout, 0.0, retry(s(30))),
            (3, AttemptOutcome::Timeout, 0.0, retry(s(300))),
            (1, status(408), 0.0, retry(s(0))),
            // Retry-After: never sooner than asked, never past the bound.
            (2, after(503, 60), 0.0, retry(s(60))),
            (2, after(503, 1), 0.0, retry(s(5))),
            (1, after(429, 86_400), 0.0, retry(s(3600))),
        ];
        for (made, outcome, jitter, expected) in table {
            assert_eq!(
                next(&p, made, &outcome, jitter),
                expected,
                "attempt {made}: {outcome:?}, jitter {jitter}"
            );
        }
        let single = Policy {
            single_attempt: true,
            ..p
        };
        assert_eq!(
            next(&single, 1, &status(503), 0.0),
            Next::DeadLetter("HL-DELIVERY-FAILED")
        );
        assert_eq!(next(&single, 1, &status(200), 0.0), Next::Delivered);
        assert_eq!(
            next(&single, 1, &status(410), 0.0),
            Next::DeadLetter("HL-DELIVERY-REJECTED")
        );
    }

    #[test]
    fn routes_table() {
        let tiers: Vec<Duration> = kafka_io::RETRY_TIERS.iter().map(|(_, d)| *d).collect();
        let s = Duration::from_secs;
        let table = [
            (s(0), Route::Now),
            (
                Duration::from_millis(300),
                Route::Sleep(Duration::from_millis(300)),
            ),
            (s(1), Route::Sleep(s(1))),
            (Duration::from_millis(1500), Route::Tier(0)),
            (s(5), Route::Tier(1)),
            (s(29), Route::Tier(1)),
            (s(300), Route::Tier(3)),
            (s(36_000), Route::Tier(5)),
        ];
        for (wait, expected) in table {
            assert_eq!(route(wait, &tiers), expected, "{wait:?}");
        }
    }

    /// Walks a delivery whose receiver always answers 503 through the default schedule
    /// on a simulated clock, through the tiers as the tier consumers hold records: a
    /// tier hands a record over its delay after it was written, and the record goes
    /// back to the tier its remaining wait calls for until it is due.
    #[test]
    fn a_delivery_walks_the_whole_default_schedule_on_a_simulated_clock() {
        let p = Policy {
            schedule: service_kit::schedule::RetrySchedule::default()
                .delays()
                .to_vec(),
            ..policy("0s")
        };
        let tiers: Vec<Duration> = kafka_io::RETRY_TIERS.iter().map(|(_, d)| *d).collect();
        let mut now = Duration::ZERO;
        let mut attempts_at = vec![now];
        let mut hops = 0;
        let mut jitters = [1.0, -1.0, 0.5, -0.5, 0.0, 1.0, -1.0, 0.25].into_iter();
        loop {
            let made = attempts_at.len();
            let wait = match next(&p, made, &status(503), jitters.next().unwrap_or(0.0)) {
                Next::Retry { wait } => wait,
                Next::DeadLetter(code) => {
                    assert_eq!(code, "HL-DELIVERY-EXHAUSTED");
                    break;
                }
                Next::Delivered => unreachable!(),
            };
            let due = now + wait;
            loop {
                let left = due.saturating_sub(now);
                match route(left, &tiers) {
                    Route::Now => break,
                    Route::Sleep(d) => {
                        assert!(
                            d <= tiers[0] && d <= left,
                            "only short waits are slept out in place: {d:?} of {left:?}"
                        );
                        now += d;
                    }
                    Route::Tier(i) => {
                        assert!(
                            tiers[i] <= left,
                            "a tier never hands a record over after its due time: {:?} for {left:?}",
                            tiers[i]
                        );
                        assert!(
                            tiers.get(i + 1).is_none_or(|longer| *longer > left),
                            "the longest tier that fits"
                        );
                        hops += 1;
                        now += tiers[i];
                    }
                }
            }
            attempts_at.push(now);
        }
        assert_eq!(attempts_at.len(), 9, "the first attempt and 8 retries");
        let gaps: Vec<u64> = attempts_at
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs())
            .collect();
        assert_eq!(
            gaps,
            [0, 4, 330, 1_620, 7_200, 21_600, 28_800, 37_800],
            "the schedule with its drawn jitter"
        );
        let total = attempts_at.last().unwrap().as_secs_f64() / 3600.0;
        assert!(
            (27.0..28.0).contains(&total),
            "about 28 h from first to last attempt: {total}"
        );
        assert!(hops <= 40, "{hops} tier hops");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        let table = [
            ("120", Some(Duration::from_secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            (
                "Wed, 21 Oct 2015 07:28:30 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
            ("-5", None),
        ];
        for (value, expected) in table {
            assert_eq!(parse_retry_after(value, now), expected, "{value}");
        }
    }
}
