//! Admission tables and scenarios on tokio's paused clock.

use super::*;

fn settings() -> CircuitSettings {
    CircuitSettings {
        failures: 3,
        cooldown: Duration::from_secs(10),
        max_cooldown: Duration::from_secs(40),
    }
}

/// An endpoint whose attempts take `took`, learnt from a few attempts.
fn paced(endpoints: &Endpoints, id: &str, took: Duration) -> Arc<EndpointState> {
    let state = endpoints.get(id, None, None, "t1");
    for _ in 0..32 {
        state.observe(took, Pace::Answered);
    }
    state
}

#[tokio::test(start_paused = true)]
async fn a_healthy_backlog_waits_its_turn_however_long() {
    let endpoints = Endpoints::new(4, 100, settings());
    let state = paced(&endpoints, "ep", Duration::from_millis(2));
    assert_eq!(state.load().0, 4, "grown to its max_in_flight");
    // 2,000 deliveries at once: 4 go, the rest wait (about 1 s of work at 2 ms each).
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move {
                let turn = state.turn().await;
                // When its turn came (turns handed over at one instant then run in the
                // runtime's order, not necessarily the queue's).
                let given = Instant::now();
                if turn.is_ok() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                turn.map(|_| given)
            })
        })
        .collect();
    let mut given = Vec::new();
    for task in tasks {
        if let Ok(at) = task.await.expect("no panic") {
            given.push(at);
        }
    }
    assert_eq!(
        given.len(),
        2000,
        "a healthy endpoint's backlog is not deferred"
    );
    assert!(
        given.windows(2).all(|w| w[0] <= w[1]),
        "first come, first served: none got its turn before one that came earlier"
    );
    assert!(given[1999] > given[0], "and they waited");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_slowed_by_a_busy_dispatcher_is_not_deferred() {
    // 500 ms an attempt (a dispatcher short of CPU, say): not slow, so its 100
    // deliveries wait their turn, the last ones past QUEUE_DEADLINE.
    let endpoints = Endpoints::new(4, 100, settings());
    let state = paced(&endpoints, "ep", Duration::from_millis(500));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move {
                let turn = state.turn().await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                drop(turn);
                Ok::<_, Duration>(Instant::now())
            })
        })
        .collect();
    let started = Instant::now();
    let mut last = started;
    for task in tasks {
        last = last.max(task.await.expect("no panic").expect("not deferred"));
    }
    assert!(
        last - started > QUEUE_DEADLINE,
        "some waited past the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_endpoint_is_slow_before_any_attempt_ends() {
    let endpoints = Endpoints::new(50, 100, settings());
    let state = endpoints.get("hole", None, None, "t1");
    // It starts with INITIAL_LIMIT requests at once, not its max_in_flight.
    let mut out = Vec::new();
    for _ in 0..INITIAL_LIMIT {
        out.push(state.turn().await.expect("a turn"));
    }
    // Three seconds without an answer: the pace is at least 3 s, so 16 may wait
    // (16 × 3 s / 10 ≤ 5 s), the 17th is deferred.
    tokio::time::advance(Duration::from_secs(3)).await;
    let waiters: Vec<_> = (0..16)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { state.turn().await.map(drop) })
        })
        .collect();
    while state.load().1 < 16 {
        tokio::task::yield_now().await;
    }
    let deferred = state.turn().await.err().expect("the 17th is deferred");
    assert!(
        deferred >= Duration::from_secs(4),
        "the queue's drain time: {deferred:?}"
    );
    // None of them gets a turn while the attempts hang: at the deadline they are deferred.
    for waiter in waiters {
        assert!(waiter.await.expect("no panic").is_err());
    }
    assert_eq!(state.load().1, 0, "nothing left waiting");
    drop(out);
}

#[test]
fn outages_halve_the_limit_answers_raise_it_one_at_a_time() {
    let endpoints = Endpoints::new(12, 100, settings());
    let state = endpoints.get("ep", None, None, "t1");
    let table = [
        (Pace::Slow, 5),
        (Pace::Slow, 2),
        (Pace::Slow, 1),
        (Pace::Slow, 1),
        (Pace::Answered, 2),
        (Pace::Answered, 3),
    ];
    for (pace, limit) in table {
        state.observe(Duration::from_millis(5), pace);
        assert_eq!(state.load().0, limit, "after {pace:?}");
    }
    for _ in 0..20 {
        state.observe(Duration::from_millis(5), Pace::Answered);
    }
    assert_eq!(state.load().0, 12, "up to max_in_flight, no further");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_gives_back_a_turn_handed_to_it() {
    let endpoints = Endpoints::new(1, 100, settings());
    let state = endpoints.get("ep", None, None, "t1");
    let first = state.turn().await.expect("the one turn");
    let mut second = Box::pin(state.turn());
    assert!(futures::poll!(second.as_mut()).is_pending(), "in line");
    drop(first); // handed to the second, which is then dropped before it runs
    drop(second);
    let third = tokio::time::timeout(Duration::from_millis(10), state.turn()).await;
    assert!(matches!(third, Ok(Ok(_))), "the turn came back");
}

#[tokio::test(start_paused = true)]
async fn a_turn_with_room_and_no_rate_is_given_without_the_timer() {
    // Off a millisecond boundary: tokio rounds a deadline up to its next millisecond
    // tick, so a sleep there, even of zero, would hold every attempt up to 1 ms. The
    // paused clock moves only to a timer's deadline.
    tokio::time::advance(Duration::from_micros(300)).await;
    let endpoints = Endpoints::new(4, 100, settings());
    let state = endpoints.get("ep", None, None, "t1");
    let asked = Instant::now();
    assert!(state.turn().await.is_ok());
    assert_eq!(Instant::now(), asked, "no timer was waited for");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_endpoint_spreads_its_sends_and_defers_past_a_second() {
    let endpoints = Endpoints::new(10, 100, settings());
    let state = endpoints.get("ep", None, Some(1), "t1");
    let started = Instant::now();
    // Three at once: the first goes now, the second a second later (slept out), the
    // third would wait two seconds, so it is deferred.
    let (first, second, third) = tokio::join!(state.turn(), state.turn(), state.turn());
    assert!(first.is_ok() && second.is_ok());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the second was spread out"
    );
    let third = third.err().expect("two seconds out: deferred");
    assert!(third > Duration::from_millis(1500), "{third:?}");
}

#[tokio::test]
async fn one_state_per_endpoint_whose_newest_deliveries_set_the_limits() {
    let endpoints = Endpoints::new(10, 8, settings());
    let state = endpoints.get("ep", Some(1), None, "2026-01-01T00:00:01Z");
    assert_eq!(state.load().0, 1);
    let newer = endpoints.get("ep", Some(3), None, "2026-01-01T00:00:02Z");
    assert!(
        Arc::ptr_eq(&state, &newer),
        "one state: circuit and queue are shared"
    );
    for _ in 0..5 {
        state.observe(Duration::from_millis(1), Pace::Answered);
    }
    assert_eq!(state.load().0, 3, "raised to 3 by the newer delivery");
    let older = endpoints.get("ep", Some(1), None, "2026-01-01T00:00:01Z");
    assert!(Arc::ptr_eq(&state, &older));
    assert_eq!(state.load().0, 3, "an older delivery does not lower it");
    let capped = endpoints.get("big", Some(1000), None, "t");
    for _ in 0..20 {
        capped.observe(Duration::from_millis(1), Pace::Answered);
    }
    assert_eq!(capped.load().0, 8, "capped at the dispatcher's cap");
}

#[tokio::test(start_paused = true)]
async fn until_its_pace_is_known_few_of_an_endpoints_deliveries_wait() {
    // A cap of 40 at once: before any attempt ended, 10 may wait.
    let endpoints = Endpoints::new(50, 40, settings());
    let state = endpoints.get("new", None, None, "t1");
    let out: Vec<_> = futures::future::join_all((0..INITIAL_LIMIT).map(|_| state.turn())).await;
    assert!(out.iter().all(Result::is_ok));
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { state.turn().await.map(drop) })
        })
        .collect();
    while state.load().1 < 10 {
        tokio::task::yield_now().await;
    }
    assert!(state.turn().await.is_err(), "the eleventh is deferred");
    // Once an attempt ended, the pace is known and the line may grow.
    drop(out);
    state.observe(Duration::from_millis(2), Pace::Answered);
    for waiter in waiters {
        assert!(
            waiter.await.expect("no panic").is_ok(),
            "the waiting ones go"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn one_attempt_held_up_does_not_make_an_answering_endpoint_slow() {
    let endpoints = Endpoints::new(10, 100, settings());
    let state = paced(&endpoints, "ep", Duration::from_millis(20));
    // One attempt out for 3 s (held up in a busy dispatcher) while others are answered
    // after it started: the endpoint is alive, its pace is its answers'.
    let held = state.turn().await.expect("a turn");
    tokio::time::advance(Duration::from_millis(100)).await;
    let other = state.turn().await.expect("a turn");
    state.observe(Duration::from_millis(20), Pace::Answered);
    drop(other);
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(
        !lock(&state.queue).slow(Instant::now()),
        "answers keep coming"
    );
    drop(held);
    // Nothing answered since its oldest attempt started: that attempt's age is the pace.
    let hanging = state.turn().await.expect("a turn");
    tokio::time::advance(SLOW_PACE).await;
    assert!(
        lock(&state.queue).slow(Instant::now()),
        "no answer for a second"
    );
    drop(hanging);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_holds_for_sends_that_woke_late() {
    // 20 a second; the dispatcher stalls for 300 ms (a rebalance's backlog decoded on
    // the runtime) while turns sleep out their pacing: those that woke late must not
    // go together, nor shorten the second after.
    let endpoints = Endpoints::new(10, 100, settings());
    let state = endpoints.get("ep", None, Some(20), "t1");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (state, sent) = (state.clone(), sent.clone());
            tokio::spawn(async move {
                if let Ok(turn) = state.turn().await {
                    lock(&sent).push(Instant::now());
                    drop(turn);
                }
            })
        })
        .collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // The stall: every timer due within it fires at its end, at once.
    tokio::time::advance(Duration::from_millis(300)).await;
    for task in tasks {
        task.await.expect("task");
    }
    let mut sent = lock(&sent).clone();
    sent.sort_unstable();
    assert!(sent.len() >= 20, "{} sent", sent.len());
    for pair in sent.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(50),
            "sends {:?} apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_held_up_together_count_about_once() {
    let endpoints = Endpoints::new(50, 100, settings());
    let state = endpoints.get("ep", None, None, "t1");
    let slow = |state: &EndpointState| lock(&state.queue).slow(Instant::now());
    // Answered every 10 ms, in 50 ms each.
    for _ in 0..100 {
        tokio::time::advance(Duration::from_millis(10)).await;
        state.observe(Duration::from_millis(50), Pace::Answered);
    }
    // Ten attempts on new connections waited 1.5 s for a lost SYN and end together: one
    // moment's hiccup, not the endpoint's pace (an average per attempt put it at 1.1 s).
    tokio::time::advance(Duration::from_millis(10)).await;
    for _ in 0..10 {
        state.observe(Duration::from_millis(1500), Pace::Answered);
    }
    assert!(!slow(&state), "it kept answering in 50 ms");
    // Its answers take 1.5 s for a second and more: that is its pace.
    for _ in 0..12 {
        tokio::time::advance(Duration::from_millis(100)).await;
        state.observe(Duration::from_millis(1500), Pace::Answered);
    }
    assert!(slow(&state), "slow for over a second");

    // Nothing answered for 1.5 s, then everything at once: 1.5 s was its pace.
    let quiet = endpoints.get("quiet", None, None, "t1");
    quiet.observe(Duration::from_millis(50), Pace::Answered);
    tokio::time::advance(Duration::from_millis(1500)).await;
    for _ in 0..10 {
        quiet.observe(Duration::from_millis(1500), Pace::Answered);
    }
    assert!(slow(&quiet), "no answer for 1.5 s");
}
