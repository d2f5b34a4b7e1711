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
use wire::{DeliveryAttempt, DeliverySummary, IndexedAttempt};

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
    /// Drops the least recently active delivery; returns its id and how many attempts
    /// went with it.
    fn drop_oldest(&mut self) -> Option<(Arc<str>, usize)> {
        let (_, id) = self.by_activity.pop_first()?;
        let dropped = self.deliveries.remove(&id).map_or(0, |d| d.attempts.len());
        self.attempts -= dropped;
        Some((id, dropped))
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
    /// Returns the deliveries dropped, as (endpoint, delivery). A record already held
    /// (the same attempt of the same delivery, read again) changes nothing.
    pub fn record(&mut self, record: DeliveryAttempt) -> Vec<(Arc<str>, Arc<str>)> {
        let mut dropped = Vec::new();
        if self.holds(&record) {
            return dropped;
        }
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
            if let Some((id, _)) = log.drop_oldest() {
                dropped.push((endpoint_id.clone(), id));
            }
        }
        self.attempts = self.attempts + log.attempts - before;
        self.by_size.insert((log.attempts, endpoint_id.clone()));
        dropped.extend(self.evict_over_total(Some(&endpoint_id)));
        dropped
    }

    /// Drops deliveries until the total is within bounds: the endpoint holding the
    /// most gives way, unless all it holds is `latest`'s delivery just recorded (its
    /// oldest is then that one): the next largest does.
    fn evict_over_total(&mut self, latest: Option<&Arc<str>>) -> Vec<(Arc<str>, Arc<str>)> {
        let mut dropped = Vec::new();
        while self.attempts > self.bounds.total_attempts {
            let endpoints = &self.endpoints;
            let victim = self
                .by_size
                .iter()
                .rev()
                .find(|(_, id)| {
                    Some(id) != latest
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
            if let Some((id, attempts)) = log.drop_oldest() {
                self.attempts -= attempts;
                dropped.push((victim.clone(), id));
            }
            if log.deliveries.is_empty() {
                self.endpoints.remove(&victim);
            } else {
                self.by_size.insert((log.attempts, victim));
            }
        }
        dropped
    }

    /// Applies `bounds` from now on, dropping what they no longer allow (each
    /// endpoint's least recently active first, then over the total as
    /// [`AttemptIndex::record`] does). Returns what was dropped.
    pub fn bound(&mut self, bounds: Bounds) -> Vec<(Arc<str>, Arc<str>)> {
        self.bounds = Self::new(bounds).bounds;
        let mut dropped = Vec::new();
        for (endpoint, log) in &mut self.endpoints {
            let before = log.attempts;
            while log.deliveries.len() > self.bounds.per_endpoint {
                if let Some((id, _)) = log.drop_oldest() {
                    dropped.push((endpoint.clone(), id));
                }
            }
            if log.attempts != before {
                self.by_size.remove(&(before, endpoint.clone()));
                self.by_size.insert((log.attempts, endpoint.clone()));
                self.attempts -= before - log.attempts;
            }
        }
        dropped.extend(self.evict_over_total(None));
        dropped
    }

    /// Forgets one delivery (a tombstone of the `delivery-index` topic). False when it
    /// was not held.
    pub fn remove(&mut self, endpoint_id: &str, delivery_id: &str) -> bool {
        let Some(endpoint) = self
            .endpoints
            .get_key_value(endpoint_id)
            .map(|(e, _)| e.clone())
        else {
            return false;
        };
        let Some(log) = self.endpoints.get_mut(&endpoint) else {
            return false;
        };
        let Some(delivery) = log.deliveries.remove(delivery_id) else {
            return false;
        };
        log.by_activity.remove(&delivery.seq);
        self.by_size.remove(&(log.attempts, endpoint.clone()));
        log.attempts -= delivery.attempts.len();
        self.attempts -= delivery.attempts.len();
        if log.deliveries.is_empty() {
            self.endpoints.remove(&endpoint);
        } else {
            self.by_size.insert((log.attempts, endpoint));
        }
        true
    }

    /// Replaces a delivery with the summary the `delivery-index` topic holds for it
    /// (now its most recently active). Returns what the bounds dropped.
    pub fn put(&mut self, summary: DeliverySummary) -> Vec<(Arc<str>, Arc<str>)> {
        self.remove(&summary.endpoint_id, &summary.delivery_id);
        self.restore(summary)
    }

    /// Whether `record`'s attempt is already held (the same number, start and outcome).
    fn holds(&self, record: &DeliveryAttempt) -> bool {
        self.delivery(&record.endpoint_id, &record.delivery_id)
            .is_some_and(|d| {
                d.attempts.iter().any(|a| {
                    a.attempt == record.attempt
                        && a.started_at == record.started_at
                        && a.outcome == record.outcome
                })
            })
    }

    /// A held delivery as the `delivery-index` topic records it.
    pub fn summary(&self, endpoint_id: &str, delivery_id: &str) -> Option<DeliverySummary> {
        let d = self.delivery(endpoint_id, delivery_id)?;
        Some(DeliverySummary {
            endpoint_id: endpoint_id.to_owned(),
            delivery_id: delivery_id.to_owned(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            replay_of: d.replay_of.clone(),
            test: d.test,
            attempts: d
                .attempts
                .iter()
                .map(|a| IndexedAttempt {
                    attempt: a.attempt,
                    started_at: a.started_at.clone(),
                    duration_ms: a.duration_ms,
                    status: a.status,
                    error_code: a.error_code.clone(),
                    outcome: a.outcome.clone(),
                    reason_code: a.reason_code.clone(),
                    next_attempt_at: a.next_attempt_at.clone(),
                })
                .collect(),
        })
    }

    /// Adds a delivery read back from the `delivery-index` topic (in the order the
    /// topic holds them: least recently active first), as if its attempts were read
    /// again. Returns what the bounds dropped, as [`AttemptIndex::record`] does.
    pub fn restore(&mut self, summary: DeliverySummary) -> Vec<(Arc<str>, Arc<str>)> {
        let mut dropped = Vec::new();
        for a in summary.attempts {
            dropped.extend(self.record(DeliveryAttempt {
                delivery_id: summary.delivery_id.clone(),
                event_id: summary.event_id.clone(),
                event_type: summary.event_type.clone(),
                endpoint_id: summary.endpoint_id.clone(),
                transfer_id: None,
                attempt: a.attempt,
                started_at: a.started_at,
                duration_ms: a.duration_ms,
                status: a.status,
                error_code: a.error_code,
                outcome: a.outcome,
                reason_code: a.reason_code,
                next_attempt_at: a.next_attempt_at,
                replay_of: summary.replay_of.clone(),
                test: summary.test,
            }));
        }
        dropped
    }

    /// One delivery of one endpoint, if held.
    pub fn delivery(&self, endpoint_id: &str, delivery_id: &str) -> Option<&Delivery> {
        self.endpoints.get(endpoint_id)?.deliveries.get(delivery_id)
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
mod tests;
