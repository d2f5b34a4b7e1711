//! Per-endpoint isolation: a concurrency limit, a rate limit and a circuit breaker, so
//! one endpoint's failures or volume never take the capacity another one needs.
//!
//! The circuit breaker is a pure state machine on an injected clock (table-tested
//! below); the limits are a semaphore and a `governor` rate limiter per endpoint.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    Open { until: Instant },
    /// One probe is out; the others wait for its outcome.
    Probing { since: Instant },
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
        Circuit { state: State::Closed, consecutive: 0, cooldown: settings.cooldown, failing_since: None, succeeded: false }
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
            State::Probing { .. } => Admission::Wait(now + settings.cooldown.min(Duration::from_secs(1)).max(Duration::from_millis(100))),
        }
    }

    /// Records an attempt's outcome: `failed` for retryable failures (5xx, timeouts,
    /// connection errors); answers that say nothing about the endpoint's health are
    /// not recorded.
    pub fn record(&mut self, settings: &CircuitSettings, failed: bool, now: Instant, wall: SystemTime) {
        if !failed {
            *self = Circuit { succeeded: true, ..Circuit::new(settings) };
            return;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.failing_since.get_or_insert(wall);
        match self.state {
            State::Probing { .. } => {
                self.cooldown = (self.cooldown * 2).min(settings.max_cooldown);
                self.state = State::Open { until: now + self.cooldown };
            }
            State::Closed if self.consecutive >= settings.failures => self.state = State::Open { until: now + self.cooldown },
            _ => {}
        }
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

/// One endpoint's isolation state.
pub struct EndpointState {
    /// Its circuit breaker.
    pub circuit: Mutex<Circuit>,
    slots: Arc<Semaphore>,
    limit: usize,
    waiting: std::sync::atomic::AtomicUsize,
    rate: Option<(u32, DefaultDirectRateLimiter)>,
    /// Set once an `endpoint.disabled` event was emitted for it.
    pub disabled: std::sync::atomic::AtomicBool,
}

/// A delivery's turn at its endpoint: hold it for the attempt.
pub struct Turn {
    _slot: OwnedSemaphorePermit,
}

impl EndpointState {
    fn new(limit: usize, rps: Option<u32>, circuit: &CircuitSettings) -> Self {
        EndpointState {
            circuit: Mutex::new(Circuit::new(circuit)),
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            rate: rps.and_then(NonZeroU32::new).map(|r| (r.get(), RateLimiter::direct(Quota::per_second(r)))),
            disabled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Waits for a slot and the rate limit, or says how long to defer the delivery
    /// instead: at most `limit` deliveries wait here, so a slow endpoint's backlog
    /// goes back to a retry tier instead of taking the dispatcher's capacity.
    pub async fn turn(&self) -> Result<Turn, Duration> {
        use std::sync::atomic::Ordering;
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
                if waiting >= self.limit {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.backlog_wait(waiting));
                }
                let slot = self.slots.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                slot.map_err(|_| Duration::from_secs(1))?
            }
        };
        if let Some((_, limiter)) = &self.rate {
            limiter.until_ready().await;
        }
        Ok(Turn { _slot: slot })
    }

    /// How long a delivery beyond the waiting room is deferred: the backlog's share of
    /// the rate limit, or a second.
    fn backlog_wait(&self, waiting: usize) -> Duration {
        let backlog = u64::try_from(waiting + self.limit).unwrap_or(u64::MAX);
        match &self.rate {
            Some((rps, _)) => Duration::from_secs((backlog / u64::from(*rps)).max(1)),
            None => Duration::from_secs(1),
        }
    }
}

/// The isolation state of every endpoint this dispatcher delivered to.
pub struct Endpoints {
    default_limit: usize,
    circuit: CircuitSettings,
    states: Mutex<HashMap<String, (usize, Option<u32>, Arc<EndpointState>)>>,
}

impl Endpoints {
    /// Empty; `default_limit` applies to endpoints without `max_in_flight`.
    pub fn new(default_limit: usize, circuit: CircuitSettings) -> Self {
        Endpoints { default_limit, circuit, states: Mutex::new(HashMap::new()) }
    }

    /// The circuit settings.
    pub fn circuit_settings(&self) -> &CircuitSettings {
        &self.circuit
    }

    /// The endpoint's state, made anew (circuit kept) when its limits changed.
    pub fn get(&self, endpoint_id: &str, max_in_flight: Option<i32>, max_rps: Option<i32>) -> Arc<EndpointState> {
        let limit = max_in_flight.and_then(|n| usize::try_from(n).ok()).filter(|n| *n > 0).unwrap_or(self.default_limit);
        let rps = max_rps.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        match states.get(endpoint_id) {
            Some((l, r, state)) if *l == limit && *r == rps => state.clone(),
            previous => {
                let fresh = EndpointState::new(limit, rps, &self.circuit);
                if let Some((_, _, old)) = previous {
                    let circuit = old.circuit.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    *fresh.circuit.lock().unwrap_or_else(|p| p.into_inner()) = circuit;
                }
                let fresh = Arc::new(fresh);
                states.insert(endpoint_id.to_owned(), (limit, rps, fresh.clone()));
                fresh
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings { failures: 3, cooldown: Duration::from_secs(10), max_cooldown: Duration::from_secs(40) }
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
        assert_eq!(c.admit(&s, at(1)), Admission::Go, "two failures: still closed");
        c.record(&s, true, at(2), wall + Duration::from_secs(2));
        assert_eq!(c.admit(&s, at(3)), Admission::Wait(at(12)), "three: open for the cooldown");
        assert_eq!(c.failing_since(), Some(wall), "since the first failure of the streak");
        assert_eq!(c.admit(&s, at(12)), Admission::Probe, "half-open: one probe");
        assert!(matches!(c.admit(&s, at(12)), Admission::Wait(_)), "the others wait for it");
        c.record(&s, true, at(13), wall);
        assert_eq!(c.admit(&s, at(14)), Admission::Wait(at(33)), "failed probe: cooldown doubled");
        assert_eq!(c.admit(&s, at(33)), Admission::Probe);
        c.record(&s, true, at(33), wall);
        assert_eq!(c.admit(&s, at(34)), Admission::Wait(at(73)), "doubled again, capped at 40 s");
        assert_eq!(c.admit(&s, at(73)), Admission::Probe);
        c.record(&s, false, at(74), wall);
        assert_eq!(c.admit(&s, at(74)), Admission::Go, "a successful probe closes it");
        assert_eq!(c.failing_since(), None);
        c.record(&s, true, at(75), wall);
        assert_eq!(c.admit(&s, at(75)), Admission::Go, "and counting starts again");
        c.failing_at_least_since(wall - Duration::from_secs(600));
        assert_eq!(c.failing_since(), Some(wall), "a success was seen: old attempts do not count");
        let mut fresh = Circuit::new(&s);
        fresh.failing_at_least_since(wall);
        fresh.failing_at_least_since(wall - Duration::from_secs(600));
        assert_eq!(fresh.failing_since(), Some(wall - Duration::from_secs(600)), "after a restart, the oldest known failure");
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
        assert!(matches!(c.admit(&s, t0 + Duration::from_secs(49)), Admission::Wait(_)));
        assert_eq!(c.admit(&s, t0 + Duration::from_secs(50)), Admission::Probe, "after max_cooldown another probe goes");
    }

    #[tokio::test]
    async fn a_full_endpoint_defers_what_exceeds_its_waiting_room() {
        let endpoints = Endpoints::new(2, settings());
        let state = endpoints.get("ep", None, None);
        let a = state.turn().await.expect("slot 1");
        let _b = state.turn().await.expect("slot 2");
        let waiters: Vec<_> = (0..2).map(|_| tokio::spawn({ let s = state.clone(); async move { s.turn().await.is_ok() } })).collect();
        while state.waiting.load(std::sync::atomic::Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(state.turn().await.err(), Some(Duration::from_secs(1)), "the fifth is deferred");
        drop(a);
        drop(_b);
        for w in waiters {
            assert!(w.await.unwrap(), "the waiting ones get their turn");
        }
        let limited = endpoints.get("slow", Some(1), Some(2));
        let _turn = limited.turn().await.expect("slot");
        let waiter = tokio::spawn({ let s = limited.clone(); async move { s.turn().await.is_ok() } });
        while limited.waiting.load(std::sync::atomic::Ordering::Acquire) < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(limited.turn().await.err(), Some(Duration::from_secs(1)), "2 in line at 2/s: a second");
        drop(_turn);
        assert!(waiter.await.unwrap());
        assert!(Arc::ptr_eq(&endpoints.get("slow", Some(1), Some(2)), &limited), "same limits, same state");
        assert!(!Arc::ptr_eq(&endpoints.get("slow", Some(3), Some(2)), &limited), "changed limits, new state");
    }
}
