//! Per-endpoint isolation: a concurrency limit, a rate limit and a circuit breaker, so
//! one endpoint's failures or volume never take the capacity another one needs.
//!
//! The circuit breaker is a pure state machine on an injected clock (table-tested
//! below); the limits are a semaphore and a reservation clock per endpoint (a send
//! time is reserved, so a backlog is spread over time instead of polled).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// One endpoint's isolation state: one per endpoint id, whatever limits its
/// deliveries carry (the newest rendered ones set them).
pub struct EndpointState {
    /// Its circuit breaker.
    pub circuit: Mutex<Circuit>,
    slots: Arc<Semaphore>,
    limits: Mutex<Limits>,
    /// The most deliveries it may hold, in flight and waiting together.
    share: usize,
    waiting: std::sync::atomic::AtomicUsize,
    /// Deferrals since a delivery last got its turn: the backlog beyond the waiting room.
    deferrals: std::sync::atomic::AtomicU32,
    /// Recent attempt duration (an exponential average), to size deferrals.
    latency: Mutex<Duration>,
    /// Disabling: set while `endpoint.disabled` is being written, then holds the
    /// `updated_at` of the inactive record written.
    pub disabled: Mutex<Option<Disabled>>,
}

/// An endpoint this dispatcher disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disabled {
    /// The inactive record is being written.
    Writing,
    /// Written, with this `updated_at`; a record with another one (a PATCH) may
    /// enable it again.
    Written(String),
}

struct Limits {
    /// `rendered_at` of the delivery that set them.
    set_by: String,
    limit: usize,
    /// Requests per second, and the next free send time (a reservation clock).
    rate: Option<(u32, Instant)>,
}

/// A delivery's turn at its endpoint: hold it for the attempt.
pub struct Turn {
    _slot: OwnedSemaphorePermit,
}

/// Assumed attempt duration of an endpoint not attempted yet.
const INITIAL_LATENCY: Duration = Duration::from_millis(250);
/// Longest deferral of a busy endpoint's delivery.
const MAX_DEFERRAL: Duration = Duration::from_secs(5 * 60);
/// A rate-limit wait up to this is slept out holding the slot; longer ones defer.
const MAX_PACING_SLEEP: Duration = Duration::from_secs(1);

impl EndpointState {
    fn new(
        limit: usize,
        share: usize,
        rps: Option<u32>,
        set_by: &str,
        circuit: &CircuitSettings,
    ) -> Self {
        EndpointState {
            share,
            circuit: Mutex::new(Circuit::new(circuit)),
            slots: Arc::new(Semaphore::new(limit)),
            limits: Mutex::new(Limits {
                set_by: set_by.to_owned(),
                limit,
                rate: rps.map(|r| (r, Instant::now())),
            }),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            deferrals: std::sync::atomic::AtomicU32::new(0),
            latency: Mutex::new(INITIAL_LATENCY),
            disabled: Mutex::new(None),
        }
    }

    /// Takes the limits of a delivery rendered later than the one that set them.
    fn update(&self, limit: usize, rps: Option<u32>, rendered_at: &str) {
        let mut limits = lock(&self.limits);
        if rendered_at <= limits.set_by.as_str() {
            return;
        }
        limits.set_by = rendered_at.to_owned();
        if limits.rate.map(|(r, _)| r) != rps {
            limits.rate = rps.map(|r| (r, Instant::now()));
        }
        if limit > limits.limit {
            self.slots.add_permits(limit - limits.limit);
        } else if limit < limits.limit {
            // Slots in use are taken out as they come back.
            let (slots, fewer) = (
                self.slots.clone(),
                u32::try_from(limits.limit - limit).unwrap_or(u32::MAX),
            );
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(fewer).await {
                    permits.forget();
                }
            });
        }
        limits.limit = limit;
    }

    /// Waits for a slot and the rate limit, or says how long to defer the delivery
    /// instead. At most the endpoint's share wait for a slot and a rate-limit wait longer
    /// than a second is not slept out, so a slow or rate-limited endpoint's backlog
    /// goes back to a retry tier instead of taking the dispatcher's capacity; each
    /// deferral in a row waits longer (up to 5 min), so a backlog is not rewritten
    /// every second.
    pub async fn turn(&self) -> Result<Turn, Duration> {
        use std::sync::atomic::Ordering;
        let limit = lock(&self.limits).limit;
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
                // The waiting room: what the endpoint's share leaves beyond its slots.
                if waiting >= self.share.saturating_sub(limit).max(1) {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.deferral());
                }
                let slot = self.slots.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                slot.map_err(|_| Duration::from_secs(1))?
            }
        };
        // Pacing: reserve the next send time.
        let pause = {
            let mut limits = lock(&self.limits);
            match &mut limits.rate {
                None => Duration::ZERO,
                Some((rps, next_free)) => {
                    let now = Instant::now();
                    let at = (*next_free).max(now);
                    let pause = at - now;
                    if pause > MAX_PACING_SLEEP {
                        // Deferred, not reserved: it comes back when the rate allows.
                        drop(slot);
                        return Err(pause);
                    }
                    *next_free = at + Duration::from_secs(1) / *rps;
                    pause
                }
            }
        };
        tokio::time::sleep(pause).await;
        self.deferrals.store(0, Ordering::Release);
        Ok(Turn { _slot: slot })
    }

    /// How long the backlog ahead of a deferred delivery takes to drain: deferrals
    /// since the last turn × recent attempt duration ÷ the concurrency limit, between
    /// 1 s and 5 min, ±20%. A fast endpoint's burst comes back in a second; a slow
    /// endpoint's large backlog is spread over minutes instead of rewritten every second.
    fn deferral(&self) -> Duration {
        let n = self
            .deferrals
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        let limit = u32::try_from(lock(&self.limits).limit)
            .unwrap_or(u32::MAX)
            .max(1);
        let drain = (*lock(&self.latency) * n / limit).clamp(Duration::from_secs(1), MAX_DEFERRAL);
        drain.mul_f64(rand::random::<f64>().mul_add(0.4, 0.8))
    }

    /// Records how long an attempt took.
    pub fn observe(&self, took: Duration) {
        let mut latency = lock(&self.latency);
        *latency = (*latency * 7 + took) / 8;
    }
}

/// The isolation state of every endpoint this dispatcher delivered to.
pub struct Endpoints {
    default_limit: usize,
    share: usize,
    circuit: CircuitSettings,
    states: Mutex<HashMap<String, Arc<EndpointState>>>,
}

impl Endpoints {
    /// Empty; `default_limit` applies to endpoints without `max_in_flight`. No
    /// endpoint holds more than `share` deliveries (in flight and waiting), nor has
    /// more than half of that in flight: the rest of the dispatcher's capacity stays
    /// for the others. A burst to a healthy endpoint waits its turn within the share
    /// instead of being deferred.
    pub fn new(default_limit: usize, share: usize, circuit: CircuitSettings) -> Self {
        Endpoints {
            default_limit,
            share: share.max(2),
            circuit,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// The circuit settings.
    pub fn circuit_settings(&self) -> &CircuitSettings {
        &self.circuit
    }

    /// The endpoint's state, its limits updated when `rendered_at` is newer than the
    /// delivery's that set them.
    pub fn get(
        &self,
        endpoint_id: &str,
        max_in_flight: Option<i32>,
        max_rps: Option<i32>,
        rendered_at: &str,
    ) -> Arc<EndpointState> {
        let limit = max_in_flight
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(self.default_limit)
            .min(self.share / 2);
        let rps = max_rps
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0);
        let state = lock(&self.states)
            .entry(endpoint_id.to_owned())
            .or_insert_with(|| {
                Arc::new(EndpointState::new(
                    limit,
                    self.share,
                    rps,
                    rendered_at,
                    &self.circuit,
                ))
            })
            .clone();
        state.update(limit, rps, rendered_at);
        state
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    #[tokio::test]
    async fn a_full_endpoint_defers_what_exceeds_its_waiting_room() {
        // 2 slots, 2 more may wait.
        let endpoints = Endpoints::new(2, 4, settings());
        let state = endpoints.get("ep", None, None, "t1");
        let a = state.turn().await.expect("slot 1");
        let b = state.turn().await.expect("slot 2");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = state.clone();
                tokio::spawn(async move { s.turn().await.is_ok() })
            })
            .collect();
        while state.waiting.load(std::sync::atomic::Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let deferred = state.turn().await.err().expect("the fifth is deferred");
        assert!(
            (800..=1200).contains(&deferred.as_millis()),
            "about a second: {deferred:?}"
        );
        // A slow endpoint (10 s an attempt) with 40 deferred, 2 at a time: about 200 s.
        for _ in 0..16 {
            state.observe(Duration::from_secs(10));
        }
        let mut later = Duration::ZERO;
        for _ in 0..39 {
            later = state.turn().await.err().expect("deferred");
        }
        assert!(
            later >= Duration::from_secs(100) && later <= MAX_DEFERRAL,
            "the backlog's drain time: {later:?}"
        );
        drop((a, b));
        for w in waiters {
            assert!(w.await.unwrap(), "the waiting ones get their turn");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_endpoint_spreads_its_sends_and_defers_past_a_second() {
        let endpoints = Endpoints::new(10, 100, settings());
        let state = endpoints.get("ep", None, Some(1), "t1");
        let _first = state.turn().await.expect("at once");
        let _second = state.turn().await.expect("a second later, slept out");
        let third = state.turn().await.err().expect("two seconds out: deferred");
        assert!(third > Duration::from_millis(1500), "{third:?}");
    }

    #[tokio::test]
    async fn one_state_per_endpoint_whose_newest_deliveries_set_the_limits() {
        let endpoints = Endpoints::new(10, 8, settings());
        let state = endpoints.get("ep", Some(1), None, "2026-01-01T00:00:01Z");
        let _one = state.turn().await.expect("the one slot");
        let newer = endpoints.get("ep", Some(3), None, "2026-01-01T00:00:02Z");
        assert!(
            Arc::ptr_eq(&state, &newer),
            "the same state: circuit and slots are shared"
        );
        let older = endpoints.get("ep", Some(1), None, "2026-01-01T00:00:01Z");
        assert!(Arc::ptr_eq(&state, &older));
        let _two = state
            .turn()
            .await
            .expect("raised to 3 by the newer delivery");
        let _three = state
            .turn()
            .await
            .expect("an older delivery does not lower it");
        assert_eq!(state.slots.available_permits(), 0);
        let capped = endpoints.get("big", Some(1000), None, "t");
        let turns: Vec<_> = futures::future::join_all((0..4).map(|_| capped.turn())).await;
        assert!(turns.iter().all(Result::is_ok));
        assert_eq!(
            capped.slots.available_permits(),
            0,
            "capped at the dispatcher's share (4)"
        );
    }
}
