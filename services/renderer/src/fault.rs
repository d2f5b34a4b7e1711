//! Test hooks: built only with the `fault-injection` feature, which only the renderer's
//! own tests turn on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The id of an event whose rendering panics, as a dependency's bug would.
pub static PANIC_ON_EVENT: Mutex<Option<String>> = Mutex::new(None);

/// How many more aggregator restores fail, as a changelog read would while the
/// broker is away.
pub static FAIL_RESTORES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn restore_fails() -> bool {
    FAIL_RESTORES
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

pub(crate) fn check(event_id: &str) {
    let armed = PANIC_ON_EVENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_deref()
        == Some(event_id);
    if armed {
        panic!("fault injection: rendering event {event_id} panics");
    }
}
