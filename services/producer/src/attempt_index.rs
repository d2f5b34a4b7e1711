//! The attempt log's index, without I/O: each endpoint's recent deliveries and their
//! attempts, built from `delivery-attempts` records in the order they were read, and
//! held within fixed bounds (deliveries per endpoint, attempts per delivery, attempts
//! in all), so memory does not grow with traffic or retention. Over the total, the
//! endpoint holding the most attempts gives up its least recently active delivery: a
//! busy endpoint cannot push a quiet one's history out.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wire::DeliveryAttempt;

/// How much the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Attempts in all; beyond it the endpoint holding the most drops its least
    /// recently active delivery.
    pub total_attempts: usize,
    /// Deliveries per endpoint; beyond it the endpoint's least recently active are dropped.
    pub per_endpoint: usize,
    /// Attempts per delivery; beyond it its oldest attempts are dropped.
    pub per_delivery: usize,
}

/// One attempt, as the API lists it (`GET /webhooks/{id}/deliveries`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = AttemptView)]
pub struct Attempt {
    /// 1-based; 0 when no request was made.
    pub attempt: i32,
    /// RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// HTTP status, when there was a response.
    pub status: Option<i32>,
    /// `HL-…` code, when there was no response.
    pub error_code: Option<String>,
    /// `delivered`, `retrying` or `dead_lettered`; of a test, `delivered` or `failed`.
    pub outcome: String,
    /// The dead letter's code, when dead-lettered.
    pub reason_code: Option<String>,
    /// RFC 3339, when retrying.
    pub next_attempt_at: Option<String>,
}

/// A delivery and its recent attempts, in the order they were recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The delivery (shared with the index's keys).
    pub delivery_id: Arc<str>,
    /// Its event.
    pub event_id: String,
    /// That event's type.
    pub event_type: String,
    /// The dead letter replayed, when the latest replay-tagged record said so.
    pub replay_of: Option<String>,
    /// A test delivery (`POST /webhooks/{id}/test`).
    pub test: bool,
    /// Never empty.
    pub attempts: VecDeque<Attempt>,
    /// Where its latest record came in the order the index read them.
    seq: u64,
}

impl Delivery {
    /// The latest attempt's outcome.
    pub fn status(&self) -> &str {
        self.attempts.back().map_or("", |a| a.outcome.as_str())
    }

    /// When the latest attempt started (RFC 3339).
    pub fn last_attempt_at(&self) -> &str {
        self.attempts.back().map_or("", |a| a.started_at.as_str())
    }
}

#[derive(Debug, Default)]
struct EndpointLog {
    deliveries: HashMap<Arc<str>, Delivery>,
    /// Delivery ids by the position of their latest record: least recently active first.
    by_activity: BTreeMap<u64, Arc<str>>,
    /// Attempts held for this endpoint.
    attempts: usize,
}

impl EndpointLog {
    /// Drops the least recently active delivery; returns how many attempts went with it.
    fn drop_oldest(&mut self) -> usize {
        let Some((_, id)) = self.by_activity.pop_first() else {
            return 0;
        };
        let dropped = self.deliveries.remove(&id).map_or(0, |d| d.attempts.len());
        self.attempts -= dropped;
        dropped
    }
}

/// Every endpoint's recent deliveries, within [`Bounds`].
#[derive(Debug)]
pub(crate) struct AttemptIndex {
    bounds: Bounds,
    endpoints: HashMap<Arc<str>, EndpointLog>,
    /// Every endpoint held, by the attempts it holds: the largest gives way first.
    by_size: BTreeSet<(usize, Arc<str>)>,
    /// Attempts held in all.
    attempts: usize,
    next_seq: u64,
}

impl AttemptIndex {
    /// An empty index. Every bound is at least 1, and `total_attempts` at least
    /// `per_delivery`.
    pub fn new(bounds: Bounds) -> Self {
        let bounds = Bounds {
            per_delivery: bounds.per_delivery.max(1),
            per_endpoint: bounds.per_endpoint.max(1),
            total_attempts: bounds.total_attempts.max(bounds.per_delivery.max(1)),
        };
        AttemptIndex {
            bounds,
            endpoints: HashMap::new(),
            by_size: BTreeSet::new(),
            attempts: 0,
            next_seq: 0,
        }
    }

    /// Adds one record (the next one read), then drops what the bounds no longer allow.
    pub fn record(&mut self, record: DeliveryAttempt) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let DeliveryAttempt {
            delivery_id,
            event_id,
            event_type,
            endpoint_id,
            transfer_id: _,
            attempt,
            started_at,
            duration_ms,
            status,
            error_code,
            outcome,
            reason_code,
            next_attempt_at,
            replay_of,
            test,
        } = record;
        let endpoint_id: Arc<str> = match self.endpoints.get_key_value(endpoint_id.as_str()) {
            Some((held, _)) => held.clone(),
            None => endpoint_id.into(),
        };
        let log = self.endpoints.entry(endpoint_id.clone()).or_default();
        self.by_size.remove(&(log.attempts, endpoint_id.clone()));
        let before = log.attempts;
        let delivery = match log.deliveries.entry(delivery_id.as_str().into()) {
            Entry::Occupied(held) => {
                let delivery = held.into_mut();
                log.by_activity.remove(&delivery.seq);
                delivery
            }
            Entry::Vacant(new) => {
                let id = new.key().clone();
                new.insert(Delivery {
                    delivery_id: id,
                    event_id,
                    event_type,
                    replay_of: None,
                    test,
                    // Most deliveries succeed at the first attempt: no room for more until needed.
                    attempts: VecDeque::with_capacity(1),
                    seq,
                })
            }
        };
        delivery.seq = seq;
        if replay_of.is_some() {
            delivery.replay_of = replay_of;
        }
        delivery.attempts.push_back(Attempt {
            attempt,
            started_at,
            duration_ms,
            status,
            error_code,
            outcome,
            reason_code,
            next_attempt_at,
        });
        log.attempts += 1;
        if delivery.attempts.len() > self.bounds.per_delivery {
            delivery.attempts.pop_front();
            log.attempts -= 1;
        }
        log.by_activity.insert(seq, delivery.delivery_id.clone());
        while log.deliveries.len() > self.bounds.per_endpoint {
            log.drop_oldest();
        }
        self.attempts = self.attempts + log.attempts - before;
        self.by_size.insert((log.attempts, endpoint_id.clone()));
        while self.attempts > self.bounds.total_attempts {
            // The largest endpoint gives way, unless all it holds is the delivery just
            // recorded (its oldest is then that one): the next largest does.
            let endpoints = &self.endpoints;
            let victim = self
                .by_size
                .iter()
                .rev()
                .find(|(_, id)| {
                    *id != endpoint_id
                        || endpoints
                            .get(id)
                            .is_some_and(|log| log.deliveries.len() > 1)
                })
                .cloned();
            let Some((size, victim)) = victim else { break };
            self.by_size.remove(&(size, victim.clone()));
            let Some(log) = self.endpoints.get_mut(&victim) else {
                continue;
            };
            self.attempts -= log.drop_oldest();
            if log.deliveries.is_empty() {
                self.endpoints.remove(&victim);
            } else {
                self.by_size.insert((log.attempts, victim));
            }
        }
    }

    /// The endpoint's `limit` most recent deliveries, newest first: by when their latest
    /// attempt started, then (same time, or a time that does not parse) by the order
    /// their latest records were read.
    pub fn recent(&self, endpoint_id: &str, limit: usize) -> Vec<Delivery> {
        let Some(log) = self.endpoints.get(endpoint_id) else {
            return Vec::new();
        };
        let mut deliveries: Vec<(Option<OffsetDateTime>, &Delivery)> = log
            .deliveries
            .values()
            .map(|d| (OffsetDateTime::parse(d.last_attempt_at(), &Rfc3339).ok(), d))
            .collect();
        deliveries.sort_by(|(a_at, a), (b_at, b)| b_at.cmp(a_at).then(b.seq.cmp(&a.seq)));
        deliveries
            .into_iter()
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Attempts held in all.
    #[cfg(test)]
    fn attempts_held(&self) -> usize {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(
        endpoint: &str,
        delivery: &str,
        n: i32,
        second: u32,
        outcome: &str,
    ) -> DeliveryAttempt {
        DeliveryAttempt {
            delivery_id: delivery.to_owned(),
            event_id: format!("event-of-{delivery}"),
            event_type: "transfer.error".to_owned(),
            endpoint_id: endpoint.to_owned(),
            attempt: n,
            started_at: format!("2026-11-23T10:00:{second:02}.000+00:00"),
            duration_ms: 12,
            status: Some(if outcome == "delivered" { 200 } else { 503 }),
            outcome: outcome.to_owned(),
            ..DeliveryAttempt::default()
        }
    }

    fn ids(deliveries: &[Delivery]) -> Vec<&str> {
        deliveries.iter().map(|d| &*d.delivery_id).collect()
    }

    const ROOMY: Bounds = Bounds {
        total_attempts: 1000,
        per_endpoint: 100,
        per_delivery: 10,
    };

    #[test]
    fn groups_by_delivery_newest_first_per_endpoint() {
        let mut index = AttemptIndex::new(ROOMY);
        for r in [
            attempt("a", "d1", 1, 0, "retrying"),
            attempt("b", "e1", 1, 1, "delivered"),
            attempt("a", "d2", 1, 2, "retrying"),
            attempt("a", "d1", 2, 5, "delivered"),
            attempt("a", "d2", 2, 7, "dead_lettered"),
            attempt("a", "d3", 1, 6, "delivered"),
        ] {
            index.record(r);
        }
        let a = index.recent("a", 10);
        assert_eq!(ids(&a), ["d2", "d3", "d1"], "by the latest attempt's start");
        let d2 = &a[0];
        assert_eq!(
            (d2.status(), d2.last_attempt_at()),
            ("dead_lettered", "2026-11-23T10:00:07.000+00:00")
        );
        assert_eq!(
            d2.attempts
                .iter()
                .map(|x| (x.attempt, x.outcome.as_str()))
                .collect::<Vec<_>>(),
            [(1, "retrying"), (2, "dead_lettered")]
        );
        assert_eq!(d2.event_id, "event-of-d2");
        assert_eq!(ids(&index.recent("a", 2)), ["d2", "d3"]);
        assert_eq!(ids(&index.recent("b", 10)), ["e1"]);
        assert!(index.recent("nobody", 10).is_empty());
    }

    #[test]
    fn equal_or_unreadable_times_fall_back_to_read_order() {
        let mut index = AttemptIndex::new(ROOMY);
        let mut odd = attempt("a", "odd", 1, 0, "delivered");
        odd.started_at = "yesterday".to_owned();
        for r in [
            attempt("a", "first", 1, 3, "delivered"),
            odd,
            attempt("a", "second", 1, 3, "delivered"),
        ] {
            index.record(r);
        }
        assert_eq!(ids(&index.recent("a", 10)), ["second", "first", "odd"]);
    }

    #[test]
    fn a_replay_is_marked_and_takes_the_status() {
        let mut index = AttemptIndex::new(ROOMY);
        index.record(attempt("a", "d1", 1, 0, "dead_lettered"));
        let mut replayed = attempt("a", "d1", 1, 9, "delivered");
        replayed.replay_of = Some("dl-1".to_owned());
        index.record(replayed);
        let d1 = &index.recent("a", 1)[0];
        assert_eq!(
            (d1.status(), d1.replay_of.as_deref(), d1.attempts.len()),
            ("delivered", Some("dl-1"), 2)
        );
    }

    #[test]
    fn keeps_the_newest_attempts_of_a_delivery() {
        let mut index = AttemptIndex::new(Bounds {
            per_delivery: 3,
            ..ROOMY
        });
        for n in 1..=5 {
            index.record(attempt("a", "d1", n, n.unsigned_abs(), "retrying"));
        }
        let kept: Vec<i32> = index.recent("a", 1)[0]
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect();
        assert_eq!(kept, [3, 4, 5]);
        assert_eq!(index.attempts_held(), 3);
    }

    #[test]
    fn keeps_the_most_recently_active_deliveries_of_an_endpoint() {
        let mut index = AttemptIndex::new(Bounds {
            per_endpoint: 2,
            ..ROOMY
        });
        index.record(attempt("a", "d1", 1, 0, "retrying"));
        index.record(attempt("a", "d2", 1, 1, "retrying"));
        index.record(attempt("a", "d1", 2, 2, "delivered")); // d1 active again: d2 is the oldest now
        index.record(attempt("a", "d3", 1, 3, "delivered"));
        index.record(attempt("b", "e1", 1, 4, "delivered"));
        assert_eq!(ids(&index.recent("a", 10)), ["d3", "d1"]);
        assert_eq!(
            ids(&index.recent("b", 10)),
            ["e1"],
            "other endpoints keep theirs"
        );
        assert_eq!(index.attempts_held(), 4);
    }

    #[test]
    fn over_the_total_the_endpoint_holding_the_most_gives_way() {
        let mut index = AttemptIndex::new(Bounds {
            total_attempts: 4,
            per_delivery: 2,
            ..ROOMY
        });
        index.record(attempt("a", "d1", 1, 0, "retrying"));
        index.record(attempt("b", "e1", 1, 1, "retrying"));
        index.record(attempt("b", "e1", 2, 2, "delivered"));
        index.record(attempt("b", "e2", 1, 3, "delivered"));
        assert_eq!(index.attempts_held(), 4);
        // b holds the most: its least recently active delivery goes, with both attempts,
        // though a's d1 is older.
        index.record(attempt("c", "f1", 1, 4, "retrying"));
        let held =
            |index: &AttemptIndex| ["a", "b", "c"].map(|e| ids(&index.recent(e, 10)).join(","));
        assert_eq!(held(&index), ["d1", "e2", "f1"]);
        assert_eq!(index.attempts_held(), 3);
        // A noisy endpoint pushes out only its own history.
        for n in 0..100 {
            index.record(attempt("z", &format!("z{n}"), 1, 5, "delivered"));
        }
        assert_eq!(held(&index), ["d1", "e2", "f1"]);
        assert_eq!(
            (ids(&index.recent("z", 10)), index.attempts_held()),
            (vec!["z99"], 4)
        );
    }

    #[test]
    fn the_delivery_just_recorded_stays() {
        let mut index = AttemptIndex::new(Bounds {
            total_attempts: 4,
            per_delivery: 2,
            ..ROOMY
        });
        for (endpoint, delivery) in [("a", "d1"), ("b", "e1"), ("c", "f1"), ("z", "z1")] {
            index.record(attempt(endpoint, delivery, 1, 0, "retrying"));
        }
        // b is now the largest, but all it holds is e1: the next largest gives way.
        index.record(attempt("b", "e1", 2, 1, "delivered"));
        assert_eq!(index.recent("b", 10)[0].attempts.len(), 2);
        assert_eq!(
            (index.attempts_held(), index.endpoints.len()),
            (4, 3),
            "an emptied endpoint is forgotten"
        );
        assert!(index.recent("z", 10).is_empty());
    }
}
