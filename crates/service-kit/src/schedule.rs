//! Retry schedules: the delays between a delivery's attempts, as operators write them
//! (`HOOKLINE_RETRY_SCHEDULE`, an endpoint's `retry_schedule`): `0s,5s,5m,30m,2h`.

use std::fmt;
use std::time::Duration;

/// The delays after the first attempt: one retry per entry.
#[derive(Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// The default: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 28 h).
pub const DEFAULT_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

/// At most this many retries.
pub const MAX_RETRIES: usize = 50;
/// No single delay longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

impl RetrySchedule {
    /// Parses comma-separated durations (`5s`, `5m`, `2h`, `1h 30m`, `0s`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let items: Vec<&str> = text.split(',').map(str::trim).collect();
        if items.len() > MAX_RETRIES {
            return Err(format!("at most {MAX_RETRIES} delays"));
        }
        let mut delays = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_empty() {
                return Err(format!(
                    "delay {} is empty; write delays such as 0s,5s,5m,2h",
                    i + 1
                ));
            }
            let delay = humantime::parse_duration(item)
                .map_err(|_| format!("delay {} is not a duration such as 5s, 5m or 2h", i + 1))?;
            if delay > MAX_DELAY {
                return Err(format!("delay {} is longer than 7 days", i + 1));
            }
            delays.push(delay);
        }
        Ok(RetrySchedule(delays))
    }

    /// The delays, first retry first.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::parse(DEFAULT_SCHEDULE).expect("the default schedule parses")
    }
}

/// `0s,5s,5m`: the form it parses from.
impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if d.is_zero() {
                f.write_str("0s")?;
            } else {
                write!(
                    f,
                    "{}",
                    humantime::format_duration(*d).to_string().replace(' ', "")
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetrySchedule({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_schedules() {
        let s = RetrySchedule::default();
        let secs: Vec<u64> = s.delays().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(s.to_string(), DEFAULT_SCHEDULE);
        assert_eq!(
            RetrySchedule::parse(" 1s , 90s,1h 30m")
                .unwrap()
                .to_string(),
            "1s,1m30s,1h30m"
        );
        assert_eq!(
            RetrySchedule::parse("0s").unwrap().delays(),
            [Duration::ZERO]
        );
    }

    #[test]
    fn refuses_bad_schedules_without_quoting_them() {
        for (text, error) in [
            ("", "delay 1 is empty"),
            ("5s,,5m", "delay 2 is empty"),
            ("5s,soon", "delay 2 is not a duration"),
            ("-5s", "delay 1 is not a duration"),
            ("8days", "delay 1 is longer than 7 days"),
        ] {
            let got = RetrySchedule::parse(text).unwrap_err();
            assert!(got.starts_with(error), "{text}: {got}");
        }
        assert!(
            RetrySchedule::parse(&vec!["1s"; 51].join(","))
                .unwrap_err()
                .contains("at most 50")
        );
    }
}
