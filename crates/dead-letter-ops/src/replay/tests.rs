use super::*;
use crate::list::tests::letter;

fn endpoints(id: &str) -> Option<Result<Endpoint, ()>> {
    let e = |active| Endpoint {
        id: id.to_owned(),
        url: "https://now.example/hook".into(),
        active,
        signing_scheme: "prequel_rsa".into(),
        ..Endpoint::default()
    };
    match id {
        "ep-live" => Some(Ok(e(true))),
        "ep-off" => Some(Ok(e(false))),
        "ep-sealed" => Some(Err(())),
        _ => None,
    }
}

fn request(ids: &[&str]) -> ReplayRequest {
    ReplayRequest {
        filter: ReplayFilter {
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            ..ReplayFilter::default()
        },
        dry_run: false,
        requested_by: "cli".into(),
    }
}

#[test]
fn each_letter_is_requeued_skipped_or_refused_with_a_code() {
    let sealer = Sealer::from_base64(&Sealer::new_master_key()).unwrap();
    let at = |m: u32| format!("2024-01-15T10:{m:02}:00.000+00:00");
    let mut twin_old = letter("twin-old", &at(5), Some("ep-live"), "HL-X");
    let mut twin_new = letter("twin-new", &at(6), Some("ep-live"), "HL-X");
    for l in [&mut twin_old, &mut twin_new] {
        l.delivery_id = Some("del-twin".into());
        l.delivery.as_mut().unwrap().delivery_id = "del-twin".into();
    }
    let letters = vec![
        twin_new,
        letter("live", &at(0), Some("ep-live"), "HL-X"),
        letter("gone", &at(1), Some("ep-gone"), "HL-X"),
        letter("unreadable", &at(2), None, "HL-WIRE-UNDECODABLE"),
        letter("done", &at(3), Some("ep-live"), "HL-X"),
        letter("off", &at(4), Some("ep-off"), "HL-X"),
        twin_old,
        letter("sealed", &at(7), Some("ep-sealed"), "HL-X"),
    ];
    let marks: HashSet<String> = ["done".to_owned()].into();
    let now = parse_rfc3339("2024-01-16T00:00:00Z").unwrap();
    let (summary, writes) = plan(
        letters,
        &request(&["live", "missing"]),
        &marks,
        endpoints,
        &sealer,
        now,
    );
    let outcomes: Vec<(&str, &str, Option<&str>)> = summary
        .letters
        .iter()
        .map(|o| (o.id.as_str(), o.outcome, o.code))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("live", "requeued", None),
            ("gone", "refused", Some(codes::ENDPOINT_DELETED)),
            ("unreadable", "refused", Some(codes::NOT_REPLAYABLE)),
            ("done", "already_replayed", None),
            ("off", "refused", Some(codes::ENDPOINT_INACTIVE)),
            ("twin-old", "duplicate", None),
            ("twin-new", "requeued", None),
            ("sealed", "refused", Some(codes::SEAL_OPEN)),
        ]
    );
    assert_eq!(
        (
            summary.matched,
            summary.requeued,
            summary.already_replayed,
            summary.duplicates
        ),
        (8, 2, 1, 1)
    );
    assert_eq!(summary.refused.values().sum::<usize>(), 4);
    assert_eq!(summary.refused[codes::ENDPOINT_DELETED], 1);
    assert_eq!(summary.not_found, ["missing"]);

    // Two deliveries (the twins once, as the newer letter), three marks.
    let replays: Vec<(&str, Option<&str>)> = writes
        .deliveries
        .iter()
        .map(|d| (d.delivery_id.as_str(), d.replay_of.as_deref()))
        .collect();
    assert_eq!(
        replays,
        [("del-live", Some("live")), ("del-twin", Some("twin-new"))]
    );
    assert!(
        writes
            .deliveries
            .iter()
            .all(|d| d.url == "https://now.example/hook")
    );
    let marked: Vec<&str> = writes
        .marks
        .iter()
        .map(|m| m.dead_letter_id.as_str())
        .collect();
    assert_eq!(marked, ["live", "twin-old", "twin-new"]);
    assert!(
        writes
            .marks
            .iter()
            .all(|m| m.requested_by == "cli" && m.replayed_at == "2024-01-16T00:00:00.000+00:00")
    );
}

#[test]
fn the_filter_selects_by_endpoint_window_and_ids() {
    let l = letter("a", "2024-01-15T10:00:00.000+00:00", Some("ep-1"), "HL-X");
    let at = |s: &str| parse_rfc3339(s);
    let f = |endpoint: Option<&str>, since: Option<&str>, until: Option<&str>, ids: &[&str]| {
        ReplayFilter {
            endpoint_id: endpoint.map(str::to_owned),
            since: since.and_then(at),
            until: until.and_then(at),
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    };
    let table = [
        (f(None, None, None, &[]), true),
        (f(Some("ep-1"), None, None, &[]), true),
        (f(Some("ep-2"), None, None, &[]), false),
        (f(None, Some("2024-01-15T10:00:00Z"), None, &[]), true),
        (f(None, Some("2024-01-15T10:00:01Z"), None, &[]), false),
        (f(None, None, Some("2024-01-15T10:00:00Z"), &[]), false),
        (f(None, None, Some("2024-01-15T10:00:01Z"), &[]), true),
        (f(None, None, None, &["b", "a"]), true),
        (f(Some("ep-1"), None, None, &["b"]), false),
    ];
    for (filter, want) in table {
        assert_eq!(filter.matches(&l), want, "{filter:?}");
    }
    assert!(
        f(None, None, None, &[]).is_everything() && !f(None, None, None, &["a"]).is_everything()
    );
}
