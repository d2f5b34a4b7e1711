//! A service's group consumer, replaced when its membership stands still.
//!
//! librdkafka 2.12 can leave a group consumer without a working coordinator after a
//! broker restart: its session times out, its partitions are revoked, and it never
//! joins again (seen in CI: "GroupCoordinator: Timed out 0 in-flight, 0 retry-queued,
//! 1 out-queue" every 60 s for minutes, the same kind of fault as librdkafka issue 5301,
//! ARCHITECTURE "Known gaps"), while a new consumer made from the same settings joins
//! at once. So the consumer's statistics are watched: a member that has not been in its
//! group (coordinator known, join state `steady`) for [`STUCK_AFTER`] is closed and a
//! new one joins. A member with no partitions is in its group all the same (more
//! replicas than partitions), so the assignment plays no part.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaResult;
use tokio_util::sync::CancellationToken;

use crate::client::GroupConsumer;
use crate::consume::{Ended, Lane, Outcome, Record, consume_lanes};
use crate::offsets::OffsetTracker;

/// How long a member may be out of its group before it is replaced: longer than a
/// rebalance that waits for every member of the last generation (the rebalance timeout
/// is `max.poll.interval.ms`, 120 s, but a member that left or died stops being waited
/// for after its 10 s session), short enough that a stuck replica is back within minutes.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// Whether a group consumer is in its group, from librdkafka's statistics.
#[derive(Debug, Clone)]
pub struct GroupHealth {
    inner: Arc<Mutex<Health>>,
}

#[derive(Debug)]
struct Health {
    /// Since when the statistics have said "not in the group"; `None`: in it, or no
    /// statistics yet.
    out_since: Option<Instant>,
    /// librdkafka's group state and join state, as last reported.
    state: String,
    join_state: String,
    stuck_after: Duration,
}

impl Default for GroupHealth {
    fn default() -> Self {
        GroupHealth {
            inner: Arc::new(Mutex::new(Health {
                out_since: None,
                state: String::new(),
                join_state: String::new(),
                stuck_after: STUCK_AFTER,
            })),
        }
    }
}

/// Why a member was found stuck: librdkafka's states, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// How long it has been out of its group.
    pub out_for: Duration,
    /// librdkafka's group state (`up` once the coordinator is known).
    pub state: String,
    /// librdkafka's join state (`steady` once assigned, even nothing).
    pub join_state: String,
}

impl GroupHealth {
    /// Takes a statistics report's group states, seen at `now`.
    pub fn update(&self, state: &str, join_state: &str, now: Instant) {
        let mut health = lock(&self.inner);
        if state == "up" && join_state == "steady" {
            health.out_since = None;
        } else if health.out_since.is_none() {
            health.out_since = Some(now);
        }
        state.clone_into(&mut health.state);
        join_state.clone_into(&mut health.join_state);
    }

    /// `Some` once the member has been out of its group for the threshold.
    pub fn stuck(&self, now: Instant) -> Option<Stuck> {
        let health = lock(&self.inner);
        let out_for = now.duration_since(health.out_since?);
        (out_for >= health.stuck_after).then(|| Stuck {
            out_for,
            state: health.state.clone(),
            join_state: health.join_state.clone(),
        })
    }

    /// Sets the threshold (tests shorten it).
    #[doc(hidden)]
    pub fn set_stuck_after(&self, stuck_after: Duration) {
        lock(&self.inner).stuck_after = stuck_after;
    }
}

/// [`consume_lanes`] on a consumer from `make`, until `shutdown`; a consumer found
/// stuck out of its group is drained, closed in the background and replaced by a new
/// one from `make`. Records it had not finished are read again by the partitions' next
/// owner, as after any rebalance: at least once.
///
/// `Err` only when `make` fails.
pub async fn consume_group<M, F, Fut>(
    mut make: M,
    lanes: &[Lane],
    drain_timeout: Duration,
    shutdown: &CancellationToken,
    mut handle: F,
) -> KafkaResult<()>
where
    M: FnMut() -> KafkaResult<(GroupConsumer, Arc<Mutex<OffsetTracker>>)>,
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    loop {
        let (consumer, tracker) = make()?;
        let ended = consume_lanes(
            &consumer,
            &tracker,
            lanes,
            drain_timeout,
            shutdown,
            &mut handle,
        )
        .await;
        // Closing waits for the group (a revoke's commit, the leave): never on a runtime
        // worker. At shutdown it is awaited, so the group hears the member leave; a stuck
        // member may not reach its group for a while, so then it is not.
        let close = tokio::task::spawn_blocking(move || drop(consumer));
        match ended {
            Ended::Shutdown => {
                let _ = close.await;
                return Ok(());
            }
            Ended::Stuck(why) => tracing::warn!(
                out_for_s = why.out_for.as_secs(),
                state = %why.state,
                join_state = %why.join_state,
                "the group consumer has been out of its group too long; a new one joins"
            ),
        }
    }
}

fn lock(health: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    health.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_member_out_of_its_group_is_stuck_after_the_threshold_only() {
        let health = GroupHealth::default();
        let t0 = Instant::now();
        assert_eq!(health.stuck(t0 + 600 * S), None, "no statistics yet");
        health.update("query-coord", "init", t0);
        health.update("up", "wait-join", t0 + 5 * S);
        assert_eq!(health.stuck(t0 + 59 * S), None);
        let stuck = health.stuck(t0 + 60 * S).expect("out for 60 s");
        assert_eq!(stuck.out_for, 60 * S);
        assert_eq!(
            (stuck.state.as_str(), stuck.join_state.as_str()),
            ("up", "wait-join")
        );
    }

    #[test]
    fn being_in_the_group_resets_the_clock() {
        let health = GroupHealth::default();
        let t0 = Instant::now();
        health.update("up", "wait-join", t0);
        health.update("up", "steady", t0 + 30 * S);
        assert_eq!(
            health.stuck(t0 + 300 * S),
            None,
            "in the group, partitions or not"
        );
        health.update("wait-coord", "steady", t0 + 40 * S);
        assert_eq!(health.stuck(t0 + 99 * S), None);
        assert!(
            health.stuck(t0 + 100 * S).is_some(),
            "coordinator lost for 60 s"
        );
    }

    #[test]
    fn the_threshold_can_be_shortened() {
        let health = GroupHealth::default();
        health.set_stuck_after(3 * S);
        let t0 = Instant::now();
        health.update("wait-broker-transport", "init", t0);
        assert!(health.stuck(t0 + 3 * S).is_some());
    }
}
