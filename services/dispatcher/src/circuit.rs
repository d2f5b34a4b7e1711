//! An endpoint's circuit breaker: a pure state machine on an injected clock, table-tested
//! below. It opens after consecutive outages, lets one probe through when it half-opens,
//! and doubles its cooldown after a failed probe.
//!
//! Outcomes count in the order their requests were sent, not the order they complete. A
//! request that hangs completes (as a timeout) seconds after the requests sent with it;
//! counted on completion, the few timeouts of a busy endpoint that answers nearly
//! everything land back to back and open its circuit (measured in `ops/soak`:
//! docs/BENCHMARKS.md). A failure sent before a success that was sent later says
//! nothing about the endpoint now: it answered after it.

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
    /// When the failures of the current streak were sent: those sent after the newest
    /// success sent, at most `failures` of them (the latest sent).
    streak: Vec<Instant>,
    /// When the newest success (by send time) was sent.
    newest_success: Option<Instant>,
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
            streak: Vec::new(),
            newest_success: None,
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

    /// Records the outcome of an attempt sent at `sent`: `failed` for retryable
    /// failures (5xx, timeouts, connection errors); answers that say nothing about the
    /// endpoint's health are not recorded.
    ///
    /// - A failure sent before the newest success is stale and ignored; so is one sent
    ///   before the probe, landing while the probe is out.
    /// - A success closes the circuit unless failures sent after it remain (a slow
    ///   success sent before the outage does not end it).
    pub fn record(
        &mut self,
        settings: &CircuitSettings,
        failed: bool,
        sent: Instant,
        now: Instant,
        wall: SystemTime,
    ) {
        if !failed {
            self.newest_success = Some(self.newest_success.map_or(sent, |s| s.max(sent)));
            self.streak.retain(|&failure| failure > sent);
            self.succeeded = true;
            if self.streak.is_empty() {
                self.state = State::Closed;
                self.cooldown = settings.cooldown;
                self.failing_since = None;
            }
            return;
        }
        if self.newest_success.is_some_and(|success| sent < success) {
            return;
        }
        if let State::Probing { since } = self.state
            && sent < since
        {
            return;
        }
        self.streak.push(sent);
        let cap = usize::try_from(settings.failures.max(1)).unwrap_or(usize::MAX);
        if self.streak.len() > cap {
            // Only the latest sent matter: a success sent after the earliest of them
            // removes that one first.
            let earliest = (0..self.streak.len())
                .min_by_key(|&i| self.streak[i])
                .unwrap_or(0);
            self.streak.swap_remove(earliest);
        }
        self.failing_since.get_or_insert(wall);
        match self.state {
            State::Probing { .. } => {
                self.cooldown = (self.cooldown * 2).min(settings.max_cooldown);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            State::Closed if self.streak.len() >= cap => {
                self.state = State::Open {
                    until: now + self.cooldown,
                }
            }
            _ => {}
        }
    }

    /// Failed attempts in a row (by send time) seen by this process, counted up to
    /// the number that opens the circuit.
    pub fn consecutive_failures(&self) -> u32 {
        u32::try_from(self.streak.len()).unwrap_or(u32::MAX)
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
        c.record(&s, true, at(0), at(0), wall);
        c.record(&s, true, at(1), at(1), wall + Duration::from_secs(1));
        assert_eq!(
            c.admit(&s, at(1)),
            Admission::Go,
            "two failures: still closed"
        );
        c.record(&s, true, at(2), at(2), wall + Duration::from_secs(2));
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
        c.record(&s, true, at(13), at(13), wall);
        assert_eq!(
            c.admit(&s, at(14)),
            Admission::Wait(at(33)),
            "failed probe: cooldown doubled"
        );
        assert_eq!(c.admit(&s, at(33)), Admission::Probe);
        c.record(&s, true, at(33), at(33), wall);
        assert_eq!(
            c.admit(&s, at(34)),
            Admission::Wait(at(73)),
            "doubled again, capped at 40 s"
        );
        assert_eq!(c.admit(&s, at(73)), Admission::Probe);
        c.record(&s, false, at(74), at(74), wall);
        assert_eq!(
            c.admit(&s, at(74)),
            Admission::Go,
            "a successful probe closes it"
        );
        assert_eq!(c.failing_since(), None);
        c.record(&s, true, at(75), at(75), wall);
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
            c.record(&s, true, t0, t0, SystemTime::now());
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

    #[test]
    fn failures_count_in_the_order_their_requests_were_sent() {
        let s = settings();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = Circuit::new(&s);
        // Ten requests go out at 0..9 ms: the odd ones hang, the even ones answer at
        // once; the hung ones complete as timeouts 2 s later, back to back.
        for sent in (0..10).step_by(2) {
            c.record(&s, false, ms(sent), ms(sent + 1), wall);
        }
        for sent in (1..9).step_by(2) {
            c.record(&s, true, ms(sent), ms(2_000 + sent), wall);
        }
        assert_eq!(
            c.admit(&s, ms(2_010)),
            Admission::Go,
            "four timeouts, each sent before a later-sent success: the endpoint answered after them"
        );
        assert_eq!(c.failing_since(), None);
        // Counted on completion they were four in a row; sent after the last success
        // (8 ms) they count.
        for sent in [9, 10, 11] {
            c.record(&s, true, ms(sent), ms(2_020 + sent), wall);
        }
        assert_eq!(
            c.admit(&s, ms(2_040)),
            Admission::Wait(ms(2_031) + Duration::from_secs(10)),
            "three failures sent after the newest success open it"
        );
        assert_eq!(c.consecutive_failures(), 3);
        assert_eq!(c.failing_since(), Some(wall));
    }

    #[test]
    fn stale_outcomes_neither_close_nor_fail_the_probe() {
        let s = settings();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut c = Circuit::new(&s);
        for sent in 1..=3 {
            c.record(&s, true, at(sent), at(sent), wall);
        }
        // A slow success sent before the outage lands while the circuit is open.
        c.record(&s, false, at(0), at(5), wall);
        assert_eq!(
            c.admit(&s, at(5)),
            Admission::Wait(at(13)),
            "a success sent before the failures does not end the outage"
        );
        assert_eq!(c.admit(&s, at(13)), Admission::Probe);
        // A request sent before the probe times out while the probe is out.
        c.record(&s, true, at(4), at(14), wall);
        assert_eq!(
            c.admit(&s, at(14)),
            Admission::Wait(at(24)),
            "still probing: the others wait a cooldown, and the cooldown is not doubled"
        );
        c.record(&s, false, at(13), at(15), wall);
        assert_eq!(
            c.admit(&s, at(15)),
            Admission::Go,
            "the probe's own success closes it"
        );
        assert_eq!(c.failing_since(), None);
        assert_eq!(c.consecutive_failures(), 0);
    }

    #[test]
    fn an_endpoint_that_fails_fast_still_opens() {
        // 500s answered at once complete in the order they were sent: the breaker
        // counts them as it always did.
        let s = settings();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = Circuit::new(&s);
        c.record(&s, false, ms(0), ms(1), wall);
        for sent in 1..=3 {
            c.record(&s, true, ms(sent * 10), ms(sent * 10 + 1), wall);
        }
        assert!(c.is_open());
    }
}
