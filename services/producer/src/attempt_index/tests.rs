use super::*;

fn attempt(endpoint: &str, delivery: &str, n: i32, second: u32, outcome: &str) -> DeliveryAttempt {
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
    let held = |index: &AttemptIndex| ["a", "b", "c"].map(|e| ids(&index.recent(e, 10)).join(","));
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

#[test]
fn record_names_what_the_bounds_dropped() {
    let mut index = AttemptIndex::new(Bounds {
        total_attempts: 4,
        per_endpoint: 2,
        per_delivery: 2,
    });
    assert!(
        index
            .record(attempt("a", "d1", 1, 0, "retrying"))
            .is_empty()
    );
    assert!(
        index
            .record(attempt("a", "d2", 1, 1, "retrying"))
            .is_empty()
    );
    // A third delivery of `a`: its least recently active goes.
    let dropped = index.record(attempt("a", "d3", 1, 2, "delivered"));
    assert_eq!(dropped, [(Arc::from("a"), Arc::from("d1"))]);
    assert!(
        index
            .record(attempt("b", "e1", 1, 3, "retrying"))
            .is_empty()
    );
    assert!(
        index
            .record(attempt("b", "e1", 2, 4, "retrying"))
            .is_empty()
    );
    // Over the total: `a` and `b` hold two each; the largest gives way, the first
    // of the largest in order.
    let dropped = index.record(attempt("c", "f1", 1, 5, "delivered"));
    assert_eq!(dropped, [(Arc::from("b"), Arc::from("e1"))]);
    assert!(index.delivery("b", "e1").is_none());
}

#[test]
fn an_attempt_read_twice_is_held_once() {
    let mut index = AttemptIndex::new(ROOMY);
    index.record(attempt("a", "d1", 1, 0, "retrying"));
    index.record(attempt("a", "d1", 1, 0, "retrying"));
    index.record(attempt("a", "d1", 2, 5, "delivered"));
    let held = index.delivery("a", "d1").expect("held");
    assert_eq!(
        held.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn summaries_restored_in_activity_order_give_the_same_listing() {
    let mut index = AttemptIndex::new(Bounds {
        total_attempts: 40,
        per_endpoint: 5,
        per_delivery: 3,
    });
    for n in 0..60u32 {
        let endpoint = ["a", "b", "c"][(n % 3) as usize];
        let delivery = format!("d{}", n % 11);
        let outcome = if n % 4 == 0 { "delivered" } else { "retrying" };
        index.record(attempt(
            endpoint,
            &delivery,
            (n / 11) as i32 + 1,
            n,
            outcome,
        ));
    }
    // What the topic would hold, least recently active first.
    let mut held: Vec<(u64, DeliverySummary)> = Vec::new();
    for (endpoint, log) in &index.endpoints {
        for (seq, id) in &log.by_activity {
            held.push((*seq, index.summary(endpoint, id).expect("held")));
        }
    }
    held.sort_by_key(|(seq, _)| *seq);
    let registry = wire::Registry::bundled().expect("schemas");
    let mut again = AttemptIndex::new(index.bounds);
    for (_, summary) in held {
        // Through Avro, as the topic holds it.
        let bytes = registry.encode(&summary).expect("encodes");
        let read = registry.decode::<DeliverySummary>(&bytes).expect("decodes");
        assert!(again.restore(read).is_empty(), "nothing over the bounds");
    }
    for endpoint in ["a", "b", "c"] {
        let (before, after) = (index.recent(endpoint, 100), again.recent(endpoint, 100));
        assert_eq!(ids(&before), ids(&after), "endpoint {endpoint}");
        for (x, y) in before.iter().zip(&after) {
            assert_eq!(x.attempts, y.attempts);
            assert_eq!(x.status(), y.status());
        }
    }
}

#[test]
fn put_replaces_a_delivery_and_remove_forgets_it() {
    let mut index = AttemptIndex::new(ROOMY);
    index.record(attempt("a", "d1", 1, 0, "retrying"));
    index.record(attempt("a", "d2", 1, 1, "retrying"));
    let mut source = AttemptIndex::new(ROOMY);
    source.record(attempt("a", "d1", 1, 0, "retrying"));
    source.record(attempt("a", "d1", 2, 5, "delivered"));
    let summary = source.summary("a", "d1").expect("held");
    assert!(index.put(summary.clone()).is_empty());
    index.put(summary);
    let d1 = index.delivery("a", "d1").expect("held");
    assert_eq!(
        (d1.status(), d1.attempts.len(), index.attempts_held()),
        ("delivered", 2, 3),
        "replaced, not appended to"
    );
    assert!(index.remove("a", "d2"));
    assert!(!index.remove("a", "d2"), "gone already");
    assert!(!index.remove("b", "d1"), "unknown endpoint");
    assert_eq!(ids(&index.recent("a", 10)), ["d1"]);
    assert!(index.remove("a", "d1"));
    assert_eq!((index.attempts_held(), index.endpoints.len()), (0, 0));
    assert!(index.by_size.is_empty());
}

#[test]
fn bound_drops_what_tighter_bounds_no_longer_allow() {
    let mut index = AttemptIndex::new(ROOMY);
    for n in 0..6u32 {
        index.record(attempt("a", &format!("d{n}"), 1, n, "delivered"));
    }
    for n in 0..3u32 {
        index.record(attempt("b", &format!("e{n}"), 1, 10 + n, "delivered"));
    }
    let dropped = index.bound(Bounds {
        total_attempts: 5,
        per_endpoint: 4,
        per_delivery: 2,
    });
    let names: Vec<String> = dropped.iter().map(|(e, d)| format!("{e}/{d}")).collect();
    // `a` keeps its newest 4; over the total (7 > 5) the largest gives way: `a`, then
    // (3 each) the last in order.
    assert_eq!(names, ["a/d0", "a/d1", "a/d2", "b/e0"]);
    assert_eq!(ids(&index.recent("a", 10)), ["d5", "d4", "d3"]);
    assert_eq!(ids(&index.recent("b", 10)), ["e2", "e1"]);
    assert_eq!(index.attempts_held(), 5);
}
