//! Per-endpoint admission: when a delivery may be attempted, and when it should go back
//! to a retry tier instead. One state per endpoint id, in one place, so a dispatcher
//! that owns an endpoint owns all of its limits.
//!
//! - **Concurrency** adapts: an endpoint starts at [`INITIAL_LIMIT`] requests at once,
//!   gains one per answered attempt up to its `max_in_flight`, and halves on a timeout
//!   or a connection error. A black hole therefore holds a handful of requests, not its
//!   maximum.
//! - **Waiting** is in memory, first come first served. The endpoint's pace is its
//!   recent attempt duration (an average over time: see [`PACE_WINDOW`]), or the age of
//!   its oldest attempt still out when that is longer and nothing was answered since it
//!   started, so a hanging endpoint is seen as slow before any of its attempts ends,
//!   while one attempt of an endpoint that keeps answering (held up in a busy
//!   dispatcher, say) does not make it slow; it is slow at [`SLOW_PACE`]. A healthy
//!   endpoint's backlog waits its turn however long it is (a busy dispatcher slows
//!   attempts too, and deferring would only add work),
//!   and is never rewritten to a retry tier for being long. Until its pace is known
//!   (its first attempt ended), only a few of an endpoint's deliveries may wait.
//! - **Deferral** (back to a retry tier, without an attempt) is for a slow endpoint
//!   whose queue would take longer than [`MAX_QUEUE_WAIT`], a waiter of a slow endpoint
//!   not served within twice its estimate (1 s to [`QUEUE_DEADLINE`]), a rate limit
//!   holding a delivery back more than a second, and an open circuit (see `circuit`):
//!   what waits for a bad endpoint never holds the dispatcher's capacity for long.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
// tokio's clock, so tests run the queue on a paused one.
use tokio::time::Instant;

pub use crate::circuit::{Admission, Circuit, CircuitSettings};

/// Requests at once of an endpoint not attempted yet (or capped lower by its limit).
pub const INITIAL_LIMIT: usize = 10;
/// The longest a delivery waits in memory for its endpoint's turn, by the estimate.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// A waiter of a slow endpoint that has not had its turn by then (the estimate was
/// wrong: the endpoint slowed down) is deferred.
pub const QUEUE_DEADLINE: Duration = Duration::from_secs(10);
/// An endpoint whose attempts take this long (or one attempt out for this long) is slow.
pub const SLOW_PACE: Duration = Duration::from_secs(1);
/// The pace averages attempt durations over time, not over attempts: one weighs
/// `1 - e^(-gap / PACE_WINDOW)`, `gap` being the time since the previous one ended.
/// Attempts held up together by one moment's hiccup (new connections waiting for a
/// lost SYN) count about once, so an endpoint that kept answering is not made slow by
/// them (an average per attempt was, and deferred its deliveries for 10 to 15 s).
pub const PACE_WINDOW: Duration = Duration::from_secs(1);
/// Longest deferral of a busy endpoint's delivery.
pub const MAX_DEFERRAL: Duration = Duration::from_secs(5 * 60);
/// A rate-limit wait up to this is slept out holding the turn; longer ones defer.
const MAX_PACING_SLEEP: Duration = Duration::from_secs(1);

/// An endpoint this dispatcher disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disabled {
    /// The inactive record is being written.
    Writing,
    /// Asked for, judged on this endpoint version; an active record with a newer
    /// one (a PATCH) enables it again.
    Written(i64),
}

/// How an attempt went, as far as the endpoint's pace is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// It answered (any status): one more request at once may go.
    Answered,
    /// No answer in time, or no connection: half as many.
    Slow,
}

/// One endpoint's admission state: one per endpoint id, whatever limits its deliveries
/// carry (the newest rendered ones set them).
pub struct EndpointState {
    /// Its circuit breaker.
    pub circuit: Mutex<Circuit>,
    /// Disabling: set while `endpoint.disabled` is being written, then holds the
    /// `updated_at` of the inactive record written.
    pub disabled: Mutex<Option<Disabled>>,
    queue: Mutex<Queue>,
}

struct Queue {
    /// `rendered_at` of the delivery that set the limits.
    set_by: String,
    /// `max_in_flight`: the most the adaptive limit reaches.
    max: usize,
    /// Requests at once now (adaptive, 1 to `max`).
    limit: usize,
    /// Requests per second, and the next free send time (a reservation clock).
    rate: Option<(u32, Instant)>,
    /// When the last paced request actually went.
    last_send: Option<Instant>,
    /// Attempts out, by turn number, with their start: the first is the oldest.
    out: BTreeMap<u64, Instant>,
    next_turn: u64,
    /// Deliveries waiting for a turn, in arrival order.
    waiters: VecDeque<oneshot::Sender<()>>,
    /// The most that may wait before the endpoint's pace is known (its first attempt
    /// ended): a black hole is not known for a while, and must not fill the dispatcher
    /// meanwhile.
    unknown_waiting: usize,
    /// Turns granted to waiters that have not started yet.
    granted: usize,
    /// Recent attempt duration (an average over time, see [`PACE_WINDOW`]), once one
    /// was seen.
    latency: Option<Duration>,
    /// When an attempt last ended.
    ended_at: Option<Instant>,
    /// When an attempt was last answered.
    answered_at: Option<Instant>,
    /// Deferrals since a delivery last got its turn: the backlog gone to the tiers.
    deferrals: u32,
}

impl Queue {
    fn busy(&self) -> usize {
        self.out.len() + self.granted
    }

    /// The endpoint's pace: the recent attempt duration, or the age of the oldest
    /// attempt still out when that is longer and nothing was answered since it started
    /// (an endpoint that keeps answering is alive: that attempt is the tail). An
    /// endpoint not attempted yet is assumed fast until its first attempts take long.
    fn pace(&self, now: Instant) -> Duration {
        let oldest = self
            .out
            .values()
            .next()
            .filter(|start| self.answered_at.is_none_or(|at| at < **start))
            .map_or(Duration::ZERO, |start| {
                now.saturating_duration_since(*start)
            });
        self.latency.unwrap_or_default().max(oldest)
    }

    /// Whether the endpoint itself is slow: its attempts take a second or more (a
    /// dispatcher short of CPU makes attempts slower too, but not that slow).
    fn slow(&self, now: Instant) -> bool {
        self.pace(now) >= SLOW_PACE
    }

    /// How long the `position`-th delivery in line waits for a turn at the endpoint's
    /// pace and concurrency.
    fn by_concurrency(&self, now: Instant, position: u32) -> Duration {
        let limit = u32::try_from(self.limit).unwrap_or(u32::MAX).max(1);
        self.pace(now) * position / limit
    }

    /// How long the `position`-th delivery in line waits for its rate limit.
    fn by_rate(&self, now: Instant, position: u32) -> Duration {
        self.rate.map_or(Duration::ZERO, |(rps, next_free)| {
            next_free.saturating_duration_since(now) + Duration::from_secs(1) * position / rps
        })
    }

    /// Whether the `position`-th delivery in line should be deferred rather than wait:
    /// the endpoint is slow and its queue would take longer than [`MAX_QUEUE_WAIT`], or
    /// its rate limit alone holds it back longer.
    fn too_long(&self, now: Instant, position: u32) -> bool {
        (self.slow(now) && self.by_concurrency(now, position) > MAX_QUEUE_WAIT)
            || self.by_rate(now, position) > MAX_QUEUE_WAIT
    }

    /// How long the `position`-th delivery in line waits, by the endpoint's pace and
    /// its rate limit.
    fn estimate(&self, now: Instant, position: u32) -> Duration {
        self.by_concurrency(now, position)
            .max(self.by_rate(now, position))
    }

    /// Claims the send of a paced turn at `now`, or says how long to wait first: sends
    /// go at least `1/rps` apart whenever their tasks run, and reservations made after
    /// one start after it.
    fn claim_send(&mut self, now: Instant) -> Duration {
        let Some((rps, next_free)) = &mut self.rate else {
            return Duration::ZERO;
        };
        let gap = Duration::from_secs(1) / *rps;
        if let Some(earliest) = self.last_send.map(|last| last + gap)
            && earliest > now
        {
            return earliest - now;
        }
        self.last_send = Some(now);
        *next_free = (*next_free).max(now + gap);
        Duration::ZERO
    }

    /// Forgets the waiters at the head of the line that gave up (deferred at their
    /// deadline, or cancelled): being the oldest, they are found there.
    fn prune(&mut self) {
        while self.waiters.front().is_some_and(oneshot::Sender::is_closed) {
            self.waiters.pop_front();
        }
    }

    /// Hands freed turns to the waiters, first come first served.
    fn hand_over(&mut self) {
        while self.busy() < self.limit {
            let Some(waiter) = self.waiters.pop_front() else {
                return;
            };
            // A waiter that gave up (deferred at its deadline) is skipped.
            if waiter.send(()).is_ok() {
                self.granted += 1;
            }
        }
    }

    /// How long a delivery deferred now stays away: the drain time of what is ahead of
    /// it (the queue and the deliveries deferred since the last turn), between 1 s and
    /// 5 min, ±20%.
    fn deferral(&mut self, now: Instant) -> Duration {
        self.deferrals = self.deferrals.saturating_add(1);
        let ahead = u32::try_from(self.waiters.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.deferrals);
        let drain = self
            .estimate(now, ahead)
            .clamp(Duration::from_secs(1), MAX_DEFERRAL);
        drain.mul_f64(rand::random::<f64>().mul_add(0.4, 0.8))
    }
}

/// A delivery's turn at its endpoint: hold it for the attempt.
pub struct Turn {
    state: Arc<EndpointState>,
    number: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut queue = lock(&self.state.queue);
        queue.out.remove(&self.number);
        queue.hand_over();
    }
}

/// A delivery in line for a turn. Dropped before it is done (its handler was cancelled),
/// it gives back a turn handed to it meanwhile.
struct Waiting {
    rx: oneshot::Receiver<()>,
    state: Arc<EndpointState>,
    done: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            let mut queue = lock(&self.state.queue);
            queue.granted -= 1;
            queue.hand_over();
        }
    }
}

impl EndpointState {
    fn new(
        max: usize,
        unknown_waiting: usize,
        rps: Option<u32>,
        set_by: &str,
        circuit: &CircuitSettings,
    ) -> Self {
        EndpointState {
            circuit: Mutex::new(Circuit::new(circuit)),
            disabled: Mutex::new(None),
            queue: Mutex::new(Queue {
                set_by: set_by.to_owned(),
                max,
                limit: INITIAL_LIMIT.min(max),
                rate: rps.map(|r| (r, Instant::now())),
                last_send: None,
                out: BTreeMap::new(),
                next_turn: 0,
                waiters: VecDeque::new(),
                unknown_waiting,
                granted: 0,
                latency: None,
                ended_at: None,
                answered_at: None,
                deferrals: 0,
            }),
        }
    }

    /// Takes the limits of a delivery rendered later than the one that set them.
    fn update(&self, max: usize, rps: Option<u32>, rendered_at: &str) {
        let mut queue = lock(&self.queue);
        if rendered_at <= queue.set_by.as_str() {
            return;
        }
        queue.set_by = rendered_at.to_owned();
        if queue.rate.map(|(r, _)| r) != rps {
            queue.rate = rps.map(|r| (r, Instant::now()));
        }
        queue.max = max;
        queue.limit = queue.limit.min(max);
        queue.hand_over();
    }

    /// Waits for the endpoint's turn, or says how long to defer the delivery instead:
    /// when its queue would take longer than [`MAX_QUEUE_WAIT`] at the endpoint's pace,
    /// when the turn does not come within [`QUEUE_DEADLINE`], or when the rate limit
    /// holds it back more than a second.
    pub async fn turn(self: &Arc<Self>) -> Result<Turn, Duration> {
        let waiting = {
            let mut queue = lock(&self.queue);
            let now = Instant::now();
            queue.prune();
            if queue.busy() < queue.limit && queue.waiters.is_empty() {
                queue.granted += 1;
                None
            } else {
                let position = u32::try_from(queue.waiters.len() + 1).unwrap_or(u32::MAX);
                let unknown = queue.latency.is_none();
                if queue.too_long(now, position)
                    || (unknown && queue.waiters.len() >= queue.unknown_waiting)
                {
                    return Err(queue.deferral(now));
                }
                let (tx, rx) = oneshot::channel();
                queue.waiters.push_back(tx);
                // Looked at again after twice its estimated wait (1 to 10 s).
                let deadline = (queue.estimate(now, position) * 2)
                    .clamp(Duration::from_secs(1), QUEUE_DEADLINE);
                Some((rx, deadline))
            }
        };
        if let Some((rx, mut deadline)) = waiting {
            let mut waiting = Waiting {
                rx,
                state: self.clone(),
                done: false,
            };
            let granted = loop {
                tokio::select! {
                    r = &mut waiting.rx => break r.is_ok(),
                    () = tokio::time::sleep(deadline) => {
                        // A healthy endpoint's turn comes, however busy the dispatcher.
                        if !lock(&self.queue).slow(Instant::now()) {
                            deadline = QUEUE_DEADLINE;
                            continue;
                        }
                        // Closed first, so a turn handed over meanwhile is seen, not lost.
                        waiting.rx.close();
                        break waiting.rx.try_recv().is_ok();
                    }
                }
            };
            waiting.done = true;
            if !granted {
                return Err(lock(&self.queue).deferral(Instant::now()));
            }
        }
        // The turn is ours; pacing reserves its send time.
        let (turn, pause) = {
            let mut queue = lock(&self.queue);
            let now = Instant::now();
            queue.granted -= 1;
            let pause = match &mut queue.rate {
                None => Duration::ZERO,
                Some((rps, next_free)) => {
                    let at = (*next_free).max(now);
                    if at - now > MAX_PACING_SLEEP {
                        // Deferred, not reserved: it comes back when the rate allows.
                        let wait = at - now;
                        queue.hand_over();
                        queue.deferrals = queue.deferrals.saturating_add(1);
                        return Err(wait);
                    }
                    *next_free = at + Duration::from_secs(1) / *rps;
                    at - now
                }
            };
            let number = queue.next_turn;
            queue.next_turn += 1;
            queue.out.insert(number, now + pause);
            queue.deferrals = 0;
            (
                Turn {
                    state: self.clone(),
                    number,
                },
                pause,
            )
        };
        // Only a paced turn sleeps: the timer rounds up to its next 1 ms tick, even a
        // sleep of zero. An unpaced one yields once: run after what the I/O driver has
        // ready, sends under load still leave together (sent at once, a saturated
        // fan-out lost 4-7%). docs/benchmarks/issue-11-steps-2.md
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
        // The reservation is a plan; the send is when this task runs. Turns that woke
        // late (the runtime was busy) would go together and crowd the next second.
        loop {
            let wait = lock(&self.queue).claim_send(Instant::now());
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Ok(turn)
    }

    /// Records how an attempt went: its duration moves the pace (by the time since the
    /// previous attempt ended, see [`PACE_WINDOW`]), and its outcome the number of
    /// requests at once (one more after an answer, half after a timeout or a
    /// connection error).
    pub fn observe(&self, took: Duration, pace: Pace) {
        let mut queue = lock(&self.queue);
        let now = Instant::now();
        queue.latency = Some(match (queue.latency, queue.ended_at) {
            (Some(latency), Some(ended)) => {
                let gap = now.saturating_duration_since(ended).as_secs_f64();
                let weight = 1.0 - (-gap / PACE_WINDOW.as_secs_f64()).exp();
                latency.mul_f64(1.0 - weight) + took.mul_f64(weight)
            }
            _ => took,
        });
        queue.ended_at = Some(now);
        if pace == Pace::Answered {
            queue.answered_at = Some(now);
        }
        queue.limit = match pace {
            Pace::Answered => (queue.limit + 1).min(queue.max),
            Pace::Slow => (queue.limit / 2).max(1),
        };
        queue.hand_over();
    }

    /// Requests at once allowed now, and deliveries waiting (for tests and logs).
    pub fn load(&self) -> (usize, usize) {
        let mut queue = lock(&self.queue);
        queue.prune();
        (queue.limit, queue.waiters.len())
    }
}

/// The admission state of every endpoint this dispatcher delivered to.
pub struct Endpoints {
    default_limit: usize,
    cap: usize,
    circuit: CircuitSettings,
    states: Mutex<HashMap<String, Arc<EndpointState>>>,
}

impl Endpoints {
    /// Empty; `default_limit` applies to endpoints without `max_in_flight`, and no
    /// endpoint has more than `cap` requests at once, so the rest of the dispatcher's
    /// capacity stays for the others; until its pace is known, no more than a quarter
    /// of `cap` of its deliveries wait.
    pub fn new(default_limit: usize, cap: usize, circuit: CircuitSettings) -> Self {
        Endpoints {
            default_limit,
            cap: cap.max(1),
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
        let max = max_in_flight
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(self.default_limit)
            .min(self.cap);
        let rps = max_rps
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0);
        let state = lock(&self.states)
            .entry(endpoint_id.to_owned())
            .or_insert_with(|| {
                let unknown_waiting = (self.cap / 4).max(1);
                Arc::new(EndpointState::new(
                    max,
                    unknown_waiting,
                    rps,
                    rendered_at,
                    &self.circuit,
                ))
            })
            .clone();
        state.update(max, rps, rendered_at);
        state
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
