//! The claim's liveness rules, without a broker.

use super::*;

fn me() -> Me {
    Me {
        incarnation: "me".into(),
        host: "h1".into(),
        pid: 10,
    }
}

fn seen(offset: i64, at_ms: i64, incarnation: &str, host: &str, pid: i64, released: bool) -> Seen {
    Seen {
        offset,
        at_ms,
        claim: InstanceClaim {
            instance_id: "r-1".into(),
            incarnation: incarnation.into(),
            host: host.into(),
            pid,
            interval_ms: 2000,
            released,
        },
    }
}

const NOW: i64 = 1_000_000;

#[test]
fn a_recent_claim_from_another_host_is_a_rival() {
    let log = [seen(1, NOW - 1000, "a", "h2", 10, false)];
    let found = rivals(&log, "r-1", &me(), NOW, |_| true);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].claim.incarnation, "a");
}

#[test]
fn released_stale_own_and_other_ids_are_not() {
    let mut other_id = seen(4, NOW, "d", "h2", 1, false);
    other_id.claim.instance_id = "r-2".into();
    let log = [
        seen(1, NOW - 1000, "a", "h2", 10, false),
        seen(2, NOW - 500, "a", "h2", 10, true),
        seen(3, NOW - STALE.as_millis() as i64 - 1, "b", "h2", 11, false),
        seen(5, NOW, "me", "h1", 10, false),
        other_id,
    ];
    assert!(rivals(&log, "r-1", &me(), NOW, |_| true).is_empty());
}

#[test]
fn a_predecessor_on_this_host_counts_only_while_its_process_runs() {
    let log = [seen(1, NOW - 1000, "a", "h1", 77, false)];
    assert!(rivals(&log, "r-1", &me(), NOW, |_| false).is_empty());
    assert_eq!(rivals(&log, "r-1", &me(), NOW, |_| true).len(), 1);
    // In a container every start is pid 1: a claim with this process's own pid on
    // this host is its predecessor's.
    let log = [seen(1, NOW - 1000, "a", "h1", 10, false)];
    assert!(rivals(&log, "r-1", &me(), NOW, |_| true).is_empty());
}

#[test]
fn each_incarnation_is_judged_on_its_latest_claim_in_offset_order() {
    let log = [
        seen(3, NOW - 100, "a", "h2", 1, true),
        seen(1, NOW - 900, "a", "h2", 1, false),
        seen(2, NOW - 800, "b", "h3", 1, false),
    ];
    let found = rivals(&log, "r-1", &me(), NOW, |_| true);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].claim.incarnation, "b");
}

#[test]
fn this_process_runs() {
    assert!(alive(i64::from(std::process::id())));
    assert!(!alive(i64::from(i32::MAX)));
}
