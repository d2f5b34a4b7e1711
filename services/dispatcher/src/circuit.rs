//! An endpoint's circuit breaker: a pure state machine on an injected clock, table-tested
//! below. It opens after consecutive outages, lets one probe through when it half-opens,
//! and doubles its cooldown after a failed probe.

use std::time::{Duration, Instant, SystemTime};

/// When a circuit opens and for how long.
#[derive(Debug, Clone)]
pub struct CircuitSettings {
    /// Consecutive failed attempts that open it.
    pub failures: u32,
    /// First open period; each failed probe doubles it, up to `max_cooldown`.
    pub cooldown: Duration,
    /// Longest open period.
    pub max_cooldown: Duration,
}

/// Whether an attempt may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes (closed circuit).
    Go,
    /// Yes, as the one probe of a half-open circuit.
    Probe,
    /// No: open (or a probe is out) until then.
    Wait(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is out; the others wait for its outcome.
    Probing {
        since: Instant,
    },
}

/// One endpoint's circuit breaker.
#[derive(Debug, Clone)]
pub struct Circuit {
    state: State,
    consecutive: u32,
    cooldown: Duration,
    /// Wall-clock time of the first failure of the current failing streak.
    failing_since: Option<SystemTime>,
    /// A success was seen since this process started.
    succeeded: bool,
}

impl Circuit {
    /// A closed circuit.
    pub fn new(settings: &CircuitSettings) -> Self {
        Circuit {
            state: State::Closed,
            consecutive: 0,
            cooldown: settings.cooldown,
            failing_since: None,
            succeeded: false,
        }
    }

    /// May an attempt start at `now`?
    pub fn admit(&mut self, settings: &CircuitSettings, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Go,
            State::Open { until } if now < until => Admission::Wait(until),
            State::Open { .. } => {
                self.state = State::Probing { since: now };
                Admission::Probe
            }
            // A probe lost (its process crashed, or it is abandoned at shutdown) must
            // not keep the circuit shut: after a cooldown another one goes.
            State::Probing { since } if now >= since + settings.max_cooldown => {
                self.state = State::Probing { since: now };
                Admission::Probe
            }
            // The others come back after a cooldown, by when the probe has its answer.
            State::Probing { .. } => Admission::Wait(now + settings.cooldown),
        }
    }

    /// Gives back a probe that was not sent (its delivery was deferred): the next
    /// delivery probes instead.
    pub fn release_probe(&mut self, now: Instant) {
        if matches!(self.state, State::Probing { .. }) {
            self.state = State::Open { until: now };
        }
    }

    /// Records an attempt's outcome: `failed` for retryable failures (5xx, timeouts,
    /// connection errors); answers that say nothing about the endpoint's health are
    /// not recorded.
    pub fn record(
        &mut self,
        settings: &CircuitSettings,
        failed: bool,
        now: Instant,
        wall: SystemTime,
    ) {
        if !failed {
            *self = Circuit {
                succeeded: true,
                ..Circuit::new(settings)
            };
            return;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.failing_since.get_or_insert(wall);
        match self.state {
            State::Probing { .. } => {
                self.cooldown = (self.cooldown * 2).min(settings.max_cooldown);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            State::Closed if self.consecutive >= settings.failures => {
                self.state = State::Open {
                    until: now + self.cooldown,
                }
            }
            _ => {}
        }
    }

    /// Failed attempts in a row seen by this process.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// Since when the endpoint has failed without a success in between.
    pub fn failing_since(&self) -> Option<SystemTime> {
        self.failing_since
    }

    /// A failing streak known from a delivery's own failed attempts: after a restart
    /// the circuit starts closed, but a retried delivery remembers since when its
    /// endpoint failed. Ignored once this process saw the endpoint succeed.
    pub fn failing_at_least_since(&mut self, since: SystemTime) {
        if !self.succeeded {
            self.failing_since = Some(self.failing_since.map_or(since, |s| s.min(since)));
        }
    }

    /// Whether it is open or probing.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(40),
        }
    }

    #[test]
    fn the_circuit_opens_probes_and_closes() {
        let s = settings();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut c = Circuit::new(&s);
        assert_eq!(c.admit(&s, at(0)), Admission::Go);
        c.record(&s, true, at(0), wall);
        c.record(&s, true, at(1), wall + Duration::from_secs(1));
        assert_eq!(
            c.admit(&s, at(1)),
            Admission::Go,
            "two failures: still closed"
        );
        c.record(&s, true, at(2), wall + Duration::from_secs(2));
        assert_eq!(
            c.admit(&s, at(3)),
            Admission::Wait(at(12)),
            "three: open for the cooldown"
        );
        assert_eq!(
            c.failing_since(),
            Some(wall),
            "since the first failure of the streak"
        );
        assert_eq!(
            c.admit(&s, at(12)),
            Admission::Probe,
            "half-open: one probe"
        );
        assert_eq!(
            c.admit(&s, at(12)),
            Admission::Wait(at(22)),
            "the others wait a cooldown for it"
        );
        c.release_probe(at(12));
        assert_eq!(
            c.admit(&s, at(12)),
            Admission::Probe,
            "a probe given back goes to the next delivery"
        );
        c.record(&s, true, at(13), wall);
        assert_eq!(
            c.admit(&s, at(14)),
            Admission::Wait(at(33)),
            "failed probe: cooldown doubled"
        );
        assert_eq!(c.admit(&s, at(33)), Admission::Probe);
        c.record(&s, true, at(33), wall);
        assert_eq!(
            c.admit(&s, at(34)),
            Admission::Wait(at(73)),
            "doubled again, capped at 40 s"
        );
        assert_eq!(c.admit(&s, at(73)), Admission::Probe);
        c.record(&s, false, at(74), wall);
        assert_eq!(
            c.admit(&s, at(74)),
            Admission::Go,
            "a successful probe closes it"
        );
        assert_eq!(c.failing_since(), None);
        c.record(&s, true, at(75), wall);
        assert_eq!(
            c.admit(&s, at(75)),
            Admission::Go,
            "and counting starts again"
        );
        c.failing_at_least_since(wall - Duration::from_secs(600));
        assert_eq!(
            c.failing_since(),
            Some(wall),
            "a success was seen: old attempts do not count"
        );
        let mut fresh = Circuit::new(&s);
        fresh.failing_at_least_since(wall);
        fresh.failing_at_least_since(wall - Duration::from_secs(600));
        assert_eq!(
            fresh.failing_since(),
            Some(wall - Duration::from_secs(600)),
            "after a restart, the oldest known failure"
        );
    }

    #[test]
    fn a_lost_probe_does_not_keep_the_circuit_shut() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new(&s);
        for _ in 0..3 {
            c.record(&s, true, t0, SystemTime::now());
        }
        assert_eq!(c.admit(&s, t0 + Duration::from_secs(10)), Admission::Probe);
        assert!(matches!(
            c.admit(&s, t0 + Duration::from_secs(49)),
            Admission::Wait(_)
        ));
        assert_eq!(
            c.admit(&s, t0 + Duration::from_secs(50)),
            Admission::Probe,
            "after max_cooldown another probe goes"
        );
    }
}
