//! Which offset may be stored when records of a partition finish out of order.
//!
//! Work on a partition runs concurrently (deliveries to different endpoints), so records
//! finish in any order. The committed position may only move to the lowest unfinished
//! offset: everything before it is done. Partitions revoked and assigned again start a
//! new generation, so a late finish from before the revoke cannot move the new position.
//! One consumer may read several topics (the dispatcher's affinity group), so a
//! partition is named by its topic and number.

use std::collections::{BTreeSet, HashMap};

/// Proof that a record was begun; hand it back to [`OffsetTracker::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The record's topic, as the tracker numbers them.
    topic: u32,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    generation: u64,
}

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    pending: BTreeSet<i64>,
    /// Next offset after the highest begun one.
    next: i64,
    /// Last position reported by `finish`.
    stored: i64,
}

/// Per-partition bookkeeping of in-flight records.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(u32, i32), PartitionState>,
    /// Topic names, numbered in the order they were first seen.
    topics: Vec<String>,
    generations: u64,
}

impl OffsetTracker {
    /// Records that work on `(topic, partition, offset)` started.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let topic = self.topic_number(topic);
        let generations = &mut self.generations;
        let state = self
            .partitions
            .entry((topic, partition))
            .or_insert_with(|| {
                *generations += 1;
                PartitionState {
                    generation: *generations,
                    next: offset,
                    stored: offset,
                    ..Default::default()
                }
            });
        state.pending.insert(offset);
        state.next = state.next.max(offset + 1);
        Ticket {
            topic,
            partition,
            offset,
            generation: state.generation,
        }
    }

    /// Records that the ticket's work is durable. Returns the partition's new position
    /// (the next offset to consume) when it moved forward.
    pub fn finish(&mut self, ticket: Ticket) -> Option<i64> {
        let state = self.partitions.get_mut(&(ticket.topic, ticket.partition))?;
        if state.generation != ticket.generation || !state.pending.remove(&ticket.offset) {
            return None;
        }
        let position = state.pending.first().copied().unwrap_or(state.next);
        if position > state.stored {
            state.stored = position;
            Some(position)
        } else {
            None
        }
    }

    /// Whether the ticket's partition is still owned in the generation it was begun in.
    pub fn is_current(&self, ticket: Ticket) -> bool {
        self.partitions
            .get(&(ticket.topic, ticket.partition))
            .is_some_and(|s| s.generation == ticket.generation)
    }

    /// Forgets a revoked partition; tickets issued for it finish as no-ops.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(topic) = self.topics.iter().position(|t| t == topic) {
            self.partitions.remove(&(topic as u32, partition));
        }
    }

    /// The topic a ticket was issued for.
    pub fn topic(&self, ticket: Ticket) -> &str {
        &self.topics[ticket.topic as usize]
    }

    fn topic_number(&mut self, topic: &str) -> u32 {
        let number = match self.topics.iter().position(|t| t == topic) {
            Some(n) => n,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        };
        u32::try_from(number).expect("fewer than 2^32 topics")
    }

    /// Records still unfinished, across partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_finishes_advance_one_by_one() {
        let mut t = OffsetTracker::default();
        let a = t.begin("t", 0, 10);
        let b = t.begin("t", 0, 11);
        assert_eq!(t.finish(a), Some(11));
        assert_eq!(t.finish(b), Some(12));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn position_waits_for_the_lowest_unfinished() {
        /// Begun offsets, the order they finish in, the position after each finish.
        type Case<'a> = (&'a [i64], &'a [usize], &'a [Option<i64>]);
        let table: &[Case] = &[
            (&[5, 6, 7], &[2, 1, 0], &[None, None, Some(8)]),
            (&[5, 6, 7], &[1, 0, 2], &[None, Some(7), Some(8)]),
            (&[5, 9, 12], &[0, 2, 1], &[Some(9), None, Some(13)]),
            (&[0], &[0], &[Some(1)]),
        ];
        for (begun, order, expected) in table {
            let mut t = OffsetTracker::default();
            let tickets: Vec<_> = begun.iter().map(|o| t.begin("t", 3, *o)).collect();
            let got: Vec<_> = order.iter().map(|i| t.finish(tickets[*i])).collect();
            assert_eq!(&got, expected, "begun {begun:?} finished in {order:?}");
        }
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        let a0 = t.begin("t", 0, 1);
        let b0 = t.begin("t", 1, 100);
        let _a1 = t.begin("t", 0, 2);
        assert_eq!(t.finish(b0), Some(101));
        assert_eq!(t.finish(a0), Some(2));
    }

    #[test]
    fn equal_partition_numbers_of_two_topics_are_independent() {
        let mut t = OffsetTracker::default();
        let first = t.begin("first", 0, 5);
        let tier = t.begin("tier", 0, 40);
        assert_eq!(t.finish(tier), Some(41));
        t.revoke("tier", 0);
        assert!(t.is_current(first) && !t.is_current(tier));
        assert_eq!(t.finish(first), Some(6));
    }

    #[test]
    fn a_late_finish_after_revoke_is_ignored() {
        let mut t = OffsetTracker::default();
        let old = t.begin("t", 0, 7);
        t.revoke("t", 0);
        // Reassigned: consumption restarts at the committed offset 7.
        let new7 = t.begin("t", 0, 7);
        let new8 = t.begin("t", 0, 8);
        assert!(!t.is_current(old) && t.is_current(new7));
        assert_eq!(
            t.finish(old),
            None,
            "a stale ticket must not finish the new 7"
        );
        assert_eq!(t.finish(new8), None);
        assert_eq!(t.finish(new7), Some(9));
    }

    #[test]
    fn finishing_twice_is_harmless() {
        let mut t = OffsetTracker::default();
        let a = t.begin("t", 0, 1);
        let b = t.begin("t", 0, 2);
        assert_eq!(t.finish(a), Some(2));
        assert_eq!(t.finish(a), None);
        assert_eq!(t.finish(b), Some(3));
    }
}
