//! A replay decided without I/O: which letters are re-queued, skipped or refused.

use super::*;

/// Decides, without I/O, what happens to each of `letters` (oldest first): `marks` holds
/// the ids replayed before, `endpoint` gives an endpoint's current configuration with
/// its secrets open (`Err(())`: they do not open).
pub(crate) fn plan(
    mut letters: Vec<DeadLetter>,
    request: &ReplayRequest,
    marks: &HashSet<String>,
    endpoint: impl Fn(&str) -> Option<Result<Endpoint, ()>>,
    sealer: &Sealer,
    now: OffsetDateTime,
) -> (ReplaySummary, Writes) {
    letters.sort_by_cached_key(|l| (parse_rfc3339(&l.failed_at), l.id.clone()));
    let mut summary = ReplaySummary {
        dry_run: request.dry_run,
        matched: letters.len(),
        ..ReplaySummary::default()
    };
    let found: HashSet<&str> = letters.iter().map(|l| l.id.as_str()).collect();
    summary.not_found = request
        .filter
        .ids
        .iter()
        .filter(|id| !found.contains(id.as_str()))
        .cloned()
        .collect();
    let mut writes = Writes::default();
    // Delivery id -> index of its re-queued delivery in `writes`.
    let mut requeued: HashMap<String, usize> = HashMap::new();
    let replayed_at = wire::format_rfc3339(now);
    for letter in &letters {
        let d = letter.delivery.as_ref();
        let mut outcome = LetterOutcome {
            id: letter.id.clone(),
            delivery_id: letter
                .delivery_id
                .clone()
                .or_else(|| d.map(|d| d.delivery_id.clone())),
            endpoint_id: letter
                .endpoint_id
                .clone()
                .or_else(|| d.map(|d| d.endpoint_id.clone())),
            outcome: "refused",
            code: None,
        };
        let decided = if marks.contains(&letter.id) {
            Ok("already_replayed")
        } else {
            decide(letter, &endpoint, sealer, now).map(|delivery| {
                let mark = wire::Replay {
                    dead_letter_id: letter.id.clone(),
                    delivery_id: delivery.delivery_id.clone(),
                    endpoint_id: delivery.endpoint_id.clone(),
                    replayed_at: replayed_at.clone(),
                    requested_by: request.requested_by.clone(),
                };
                writes.marks.push(mark);
                match requeued.get(&delivery.delivery_id) {
                    // Letters go oldest first: the newest of a delivery is re-queued.
                    Some(&i) => writes.deliveries[i] = delivery,
                    None => {
                        requeued.insert(delivery.delivery_id.clone(), writes.deliveries.len());
                        writes.deliveries.push(delivery);
                    }
                }
                "requeued"
            })
        };
        match decided {
            Ok(o) => outcome.outcome = o,
            Err(code) => {
                outcome.code = Some(code);
                *summary.refused.entry(code.to_owned()).or_default() += 1;
            }
        }
        summary.letters.push(outcome);
    }
    // Of the letters of one delivery, the one re-queued is the one its delivery replays.
    let requeued_letters: HashSet<&str> = writes
        .deliveries
        .iter()
        .filter_map(|d| d.replay_of.as_deref())
        .collect();
    for o in &mut summary.letters {
        if o.outcome == "requeued" && !requeued_letters.contains(o.id.as_str()) {
            o.outcome = "duplicate";
        }
    }
    summary.requeued = summary
        .letters
        .iter()
        .filter(|o| o.outcome == "requeued")
        .count();
    summary.duplicates = summary
        .letters
        .iter()
        .filter(|o| o.outcome == "duplicate")
        .count();
    summary.already_replayed = summary
        .letters
        .iter()
        .filter(|o| o.outcome == "already_replayed")
        .count();
    (summary, writes)
}

fn decide(
    letter: &DeadLetter,
    endpoint: &impl Fn(&str) -> Option<Result<Endpoint, ()>>,
    sealer: &Sealer,
    now: OffsetDateTime,
) -> Result<RenderedDelivery, &'static str> {
    let d = letter.delivery.as_ref().ok_or(codes::NOT_REPLAYABLE)?;
    let endpoint = match endpoint(&d.endpoint_id) {
        None => return Err(codes::ENDPOINT_DELETED),
        Some(Err(())) => return Err(codes::SEAL_OPEN),
        Some(Ok(e)) => e,
    };
    if !endpoint.active {
        return Err(codes::ENDPOINT_INACTIVE);
    }
    crate::requeue(letter, &endpoint, sealer, now)
}
