//! The policy against a producer that fails on cue, modelled on librdkafka's rules: a
//! call that timed out goes on in the background and only the same call may follow;
//! an abort meanwhile is refused as a conflict. The errors are real librdkafka errors,
//! made by a producer with no broker to talk to.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::OnceLock;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    AddOffsets,
    Commit,
    Abort,
}

/// How a scripted call ends.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The call timed out and goes on in the background.
    TimedOut,
    /// rdkafka's flush before the commit timed out: no commit was started.
    FlushTimedOut,
    /// A failure that is neither retriable nor fatal.
    Refused,
}

#[derive(Default)]
struct Fake {
    offsets: RefCell<VecDeque<Outcome>>,
    commits: RefCell<VecDeque<Outcome>>,
    calls: RefCell<Vec<Call>>,
    /// The call that timed out and is still going on.
    pending: Cell<Option<Call>>,
    /// Whether a transaction is open (begun and neither committed nor aborted).
    open: Cell<bool>,
}

impl Fake {
    fn with(offsets: &[Outcome], commits: &[Outcome]) -> Self {
        let fake = Fake::default();
        fake.offsets.borrow_mut().extend(offsets);
        fake.commits.borrow_mut().extend(commits);
        fake.open.set(true);
        fake
    }

    fn call(&self, which: Call, script: &RefCell<VecDeque<Outcome>>) -> KafkaResult<()> {
        self.calls.borrow_mut().push(which);
        if let Some(pending) = self.pending.get()
            && pending != which
        {
            return Err(conflict());
        }
        self.pending.set(None);
        match script.borrow_mut().pop_front() {
            None => {
                if which == Call::Commit {
                    self.open.set(false);
                }
                Ok(())
            }
            Some(Outcome::TimedOut) => {
                self.pending.set(Some(which));
                Err(timed_out())
            }
            Some(Outcome::FlushTimedOut) => {
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
            }
            Some(Outcome::Refused) => Err(refused()),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }
}

impl Transactions for Fake {
    fn add_offsets(&self, _: &TopicPartitionList, _: &ConsumerGroupMetadata) -> KafkaResult<()> {
        self.call(Call::AddOffsets, &self.offsets)
    }

    fn commit(&self) -> KafkaResult<()> {
        self.call(Call::Commit, &self.commits)
    }

    fn abort(&self) -> KafkaResult<()> {
        self.calls.borrow_mut().push(Call::Abort);
        if self.pending.get().is_some() {
            return Err(conflict());
        }
        if !self.open.replace(false) {
            return Err(no_transaction());
        }
        Ok(())
    }
}

/// A real retriable error: `init_transactions` with no broker to reach, timed out.
fn timed_out() -> KafkaError {
    static ERROR: OnceLock<KafkaError> = OnceLock::new();
    ERROR
        .get_or_init(|| {
            let producer = unreachable_producer("hookline-test-timed-out");
            let e = producer
                .init_transactions(Duration::from_millis(10))
                .expect_err("no broker: the call must time out");
            // Kept alive: the background call would otherwise be cut short.
            std::mem::forget(producer);
            e
        })
        .clone()
}

/// librdkafka's answer to an abort while a commit goes on: also retriable.
fn conflict() -> KafkaError {
    timed_out()
}

/// A real error that is neither retriable nor fatal, and librdkafka's "no transaction
/// in progress": a commit on a producer that never began one.
fn no_transaction() -> KafkaError {
    static ERROR: OnceLock<KafkaError> = OnceLock::new();
    ERROR
        .get_or_init(|| {
            unreachable_producer("hookline-test-no-transaction")
                .commit_transaction(Duration::from_millis(10))
                .expect_err("no transaction was begun")
        })
        .clone()
}

fn refused() -> KafkaError {
    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
}

fn unreachable_producer(id: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9")
        .set("transactional.id", id)
        .set("log_level", "0")
        .create()
        .expect("a producer")
}

fn group() -> ConsumerGroupMetadata {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9")
        .set("group.id", "hookline-test")
        .set("log_level", "0")
        .create()
        .expect("a consumer");
    consumer.group_metadata().expect("group metadata")
}

/// Patience that stops after `checks` looks at the shutdown flag.
fn run<T>(checks: usize, f: impl FnOnce(&Patience<'_>) -> T) -> T {
    let left = Cell::new(checks);
    let stopping = || {
        let n = left.get();
        left.set(n.saturating_sub(1));
        n == 0
    };
    f(&Patience {
        stopping: &stopping,
        pause: Duration::ZERO,
    })
}

#[test]
fn the_errors_used_here_are_what_librdkafka_says_they_are() {
    let KafkaError::Transaction(e) = timed_out() else {
        panic!("not a transactional error: {:?}", timed_out());
    };
    assert!(e.is_retriable() && !e.is_fatal(), "{e:?}");
    assert_eq!(e.code(), RDKafkaErrorCode::OperationTimedOut);
    let KafkaError::Transaction(e) = no_transaction() else {
        panic!("not a transactional error: {:?}", no_transaction());
    };
    assert_eq!(e.code(), RDKafkaErrorCode::State);
    assert!(!e.is_retriable() && !e.is_fatal(), "{e:?}");
}

#[test]
fn errors_are_classified_once() {
    assert_eq!(classify(&timed_out()), Failure::Retriable);
    assert_eq!(
        classify(&KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)),
        Failure::Retriable
    );
    assert_eq!(classify(&no_transaction()), Failure::Abortable);
    assert_eq!(classify(&refused()), Failure::Abortable);
    assert!(!is_fatal(&anyhow::Error::from(timed_out()).context("x")));
}

#[test]
fn a_commit_that_timed_out_is_committed_again_never_aborted() {
    let fake = Fake::with(&[], &[Outcome::TimedOut]);
    let offsets = TopicPartitionList::new();
    let group = group();
    run(100, |p| commit(&fake, Some((&offsets, &group)), p)).expect("committed");
    assert_eq!(fake.calls(), [Call::AddOffsets, Call::Commit, Call::Commit]);
    assert!(!fake.open.get(), "the transaction is committed");
}

#[test]
fn offsets_that_timed_out_are_added_again_before_the_commit() {
    let fake = Fake::with(&[Outcome::TimedOut, Outcome::TimedOut], &[]);
    let offsets = TopicPartitionList::new();
    let group = group();
    run(100, |p| commit(&fake, Some((&offsets, &group)), p)).expect("committed");
    assert_eq!(
        fake.calls(),
        [
            Call::AddOffsets,
            Call::AddOffsets,
            Call::AddOffsets,
            Call::Commit
        ]
    );
}

#[test]
fn a_flush_that_timed_out_before_the_commit_is_followed_by_the_commit() {
    let fake = Fake::with(&[], &[Outcome::FlushTimedOut]);
    run(100, |p| commit(&fake, None, p)).expect("committed");
    assert_eq!(fake.calls(), [Call::Commit, Call::Commit]);
}

#[test]
fn a_commit_still_timing_out_at_shutdown_is_returned_and_never_aborted_meanwhile() {
    let fake = Fake::with(&[], &[Outcome::TimedOut; 10]);
    let e = run(3, |p| commit(&fake, None, p)).expect_err("still timing out");
    assert_eq!(classify_chain(&e), Some(Failure::Retriable));
    assert_eq!(fake.calls(), [Call::Commit; 4]);
}

#[test]
fn a_refused_commit_is_returned_and_the_transaction_aborted() {
    let fake = Fake::with(&[], &[Outcome::Refused]);
    let e = run(100, |p| commit(&fake, None, p)).expect_err("refused");
    assert_eq!(classify_chain(&e), Some(Failure::Abortable));
    run(100, |p| abort(&fake, p)).expect("aborted");
    assert_eq!(fake.calls(), [Call::Commit, Call::Abort]);
    assert!(!fake.open.get());
}

#[test]
fn an_abort_meeting_a_conflict_is_retried_and_no_transaction_is_success() {
    // What the old recovery did: an abort after a commit that timed out meets a
    // conflict for as long as the commit goes on (here until the service stops).
    let fake = Fake::with(&[], &[Outcome::TimedOut]);
    run(0, |p| commit(&fake, None, p)).expect_err("timed out, stopping");
    run(2, |p| abort(&fake, p)).expect_err("a conflict while the commit goes on");
    // Once the commit ended (here: as if it failed), the abort goes through, and an
    // abort with no transaction open is no error.
    fake.pending.set(None);
    run(100, |p| abort(&fake, p)).expect("aborted");
    run(100, |p| abort(&fake, p)).expect("nothing to abort is no error");
    assert_eq!(
        fake.calls(),
        [
            Call::Commit,
            Call::Abort,
            Call::Abort,
            Call::Abort,
            Call::Abort,
            Call::Abort
        ]
    );
}

fn classify_chain(e: &anyhow::Error) -> Option<Failure> {
    e.chain()
        .filter_map(|c| c.downcast_ref::<KafkaError>())
        .map(classify)
        .next()
}
