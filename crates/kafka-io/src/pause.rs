//! Pausing a consumer's partitions without losing track of who paused what.

use std::collections::HashSet;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;

use crate::client::GroupConsumer;

/// The partitions a full lane paused, resumed exactly.
///
/// A full lane pauses its partitions instead of the loop not polling: a consumer that
/// does not poll within `max.poll.interval.ms` is dropped from its group. A pause drops
/// what librdkafka had prefetched for the partition (it fetches again from the
/// consumed position when resumed), and resuming a paused partition restarts its
/// fetch. So a lane pauses a quarter below its bound and resumes only what it paused.
#[derive(Debug, Default)]
pub(crate) struct FullPause {
    partitions: HashSet<(String, i32)>,
}

impl FullPause {
    pub(crate) fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Pauses every assigned partition but those `keep` leaves alone.
    pub(crate) fn pause(&mut self, consumer: &GroupConsumer, keep: impl Fn(&str, i32) -> bool) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            if !keep(e.topic(), e.partition()) {
                tpl.add_partition(e.topic(), e.partition());
                self.partitions
                    .insert((e.topic().to_owned(), e.partition()));
            }
        }
        if let Err(e) = consumer.pause(&tpl) {
            tracing::debug!(error = %e, "pause refused");
        }
    }

    /// Resumes what this paused that is assigned now; `keep` names partitions another
    /// mechanism holds paused (they are left to it). A partition revoked meanwhile stays
    /// on the list: librdkafka keeps its pause if it is assigned again.
    pub(crate) fn resume(&mut self, consumer: &GroupConsumer, keep: impl Fn(&str, i32) -> bool) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            let key = (e.topic().to_owned(), e.partition());
            if self.partitions.remove(&key) && !keep(e.topic(), e.partition()) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.resume(&tpl)
        {
            tracing::debug!(error = %e, "resume refused");
        }
    }
}

/// Pauses or resumes one partition.
pub(crate) fn set_paused(consumer: &GroupConsumer, topic: &str, partition: i32, on: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let result = if on {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = result {
        // Not assigned any more: the new owner reads from the last commit.
        tracing::debug!(topic, partition, error = %e, "pause/resume refused");
    }
}
