//! Listing dead letters: metadata only, filtered, newest first, in pages with a cursor.
//!
//! An [`Entry`] is what is safe to show anyone who may operate the pipeline: ids,
//! times, codes, the reason (written without secrets or trace text) and per attempt
//! its time, duration, status and error code. Never the URL, headers, body, the
//! receiver's responses or a raw payload.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use time::OffsetDateTime;
use wire::DeadLetter;

use crate::scan::{Missing, scan};
use crate::{OpsError, Store, parse_rfc3339};

/// Entries per page unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// The most entries one page holds.
pub const MAX_LIMIT: usize = 1000;

/// Which dead letters to list; every field given must match.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only those that failed at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only those with this code (`HL-DELIVERY-REJECTED`), compared without case.
    pub reason_code: Option<String>,
}

impl ListFilter {
    /// True when `entry` passes.
    pub fn matches(&self, entry: &Entry) -> bool {
        self.endpoint_id
            .as_deref()
            .is_none_or(|e| entry.endpoint_id.as_deref() == Some(e))
            && self
                .since
                .is_none_or(|since| entry.failed_at_time().is_some_and(|t| t >= since))
            && self
                .reason_code
                .as_deref()
                .is_none_or(|c| entry.reason_code.eq_ignore_ascii_case(c))
    }
}

/// Which page: at most `limit` entries after `cursor` (the first page without one).
#[derive(Debug, Clone)]
pub struct Page {
    /// Entries wanted, 1 to [`MAX_LIMIT`] (clamped).
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

/// Where a page ended: the last entry's place in the order (failure time, then id).
/// Opaque text for callers; stable while new letters arrive (they sort before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    at: i128,
    id: String,
}

impl Cursor {
    /// Reads a cursor a page returned.
    pub fn parse(text: &str) -> Result<Cursor, OpsError> {
        let raw = B64.decode(text.trim()).map_err(|_| OpsError::BadCursor)?;
        let raw = String::from_utf8(raw).map_err(|_| OpsError::BadCursor)?;
        let (at, id) = raw.split_once('/').ok_or(OpsError::BadCursor)?;
        Ok(Cursor {
            at: at.parse().map_err(|_| OpsError::BadCursor)?,
            id: id.to_owned(),
        })
    }

    /// The text to hand out.
    pub fn encode(&self) -> String {
        B64.encode(format!("{}/{}", self.at, self.id))
    }
}

/// One attempt, without what the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptInfo {
    /// 1-based.
    pub number: i32,
    /// RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// The HTTP status, when there was a response.
    pub status: Option<i32>,
    /// `HL-…` code, when there was no response.
    pub error_code: Option<String>,
    /// `[sealed]` when a response body was kept (it is never shown); only in [`crate::Shown`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<&'static str>,
}

/// A dead letter's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// Dead-letter id.
    pub id: String,
    /// RFC 3339.
    pub failed_at: String,
    /// `renderer` or `dispatcher`.
    pub stage: String,
    /// Stable `HL-…` code.
    pub reason_code: String,
    /// Why, without secrets or trace text.
    pub reason: String,
    /// The endpoint, when known.
    pub endpoint_id: Option<String>,
    /// The event, when known.
    pub event_id: Option<String>,
    /// The event's type, when the letter holds the request.
    pub event_type: Option<String>,
    /// The delivery (the `Hookline-Delivery-Id` receivers got), when known.
    pub delivery_id: Option<String>,
    /// The transfer of a sensitive-trace delivery.
    pub transfer_id: Option<String>,
    /// The letter holds its request, so it can be replayed.
    pub replayable: bool,
    /// The dead letter this delivery was itself a replay of.
    pub replay_of: Option<String>,
    /// When it was replayed, if it was (RFC 3339).
    pub replayed_at: Option<String>,
    /// How many attempts were made.
    pub attempt_count: usize,
    /// Each attempt.
    pub attempts: Vec<AttemptInfo>,
}

impl Entry {
    /// The metadata of `letter`.
    pub fn of(letter: &DeadLetter) -> Entry {
        let d = letter.delivery.as_ref();
        // The dispatcher keeps attempts on the letter; a delivery that travelled through
        // retry tiers may carry them itself.
        let attempts = if letter.attempts.is_empty() {
            d.map(|d| d.attempts.as_slice()).unwrap_or_default()
        } else {
            &letter.attempts
        };
        let attempts: Vec<AttemptInfo> = attempts
            .iter()
            .map(|a| AttemptInfo {
                number: a.attempt,
                started_at: a.started_at.clone(),
                duration_ms: a.duration_ms,
                status: a.status,
                error_code: a.error_code.clone(),
                response: None,
            })
            .collect();
        Entry {
            id: letter.id.clone(),
            failed_at: letter.failed_at.clone(),
            stage: letter.stage.clone(),
            reason_code: letter.reason_code.clone(),
            reason: letter.reason.clone(),
            endpoint_id: letter
                .endpoint_id
                .clone()
                .or_else(|| d.map(|d| d.endpoint_id.clone())),
            event_id: letter
                .event_id
                .clone()
                .or_else(|| d.map(|d| d.event_id.clone())),
            event_type: d.map(|d| d.event_type.clone()),
            delivery_id: letter
                .delivery_id
                .clone()
                .or_else(|| d.map(|d| d.delivery_id.clone())),
            transfer_id: d.and_then(|d| d.transfer_id.clone()),
            replayable: d.is_some(),
            replay_of: d.and_then(|d| d.replay_of.clone()),
            replayed_at: None,
            attempt_count: attempts.len(),
            attempts,
        }
    }

    fn failed_at_time(&self) -> Option<OffsetDateTime> {
        parse_rfc3339(&self.failed_at)
    }

    /// The entry's place in the order: failure time (unparsable: oldest), then id.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor {
            at: self
                .failed_at_time()
                .map_or(i128::MIN, OffsetDateTime::unix_timestamp_nanos),
            id: self.id.clone(),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ListPage {
    /// Newest first.
    pub dead_letters: Vec<Entry>,
    /// Pass it back for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Records read that are not dead letters hookline can read (skipped): of the whole
    /// topic, or with an endpoint filter of the one partition its letters are in.
    pub unreadable: usize,
}

/// Orders `entries` newest first and cuts the page out: entries after the cursor, at
/// most `limit`, and a cursor when more follow.
pub(crate) fn paginate(
    mut entries: Vec<(Cursor, Entry)>,
    page: &Page,
) -> (Vec<Entry>, Option<String>) {
    entries.sort_by(|(a, _), (b, _)| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
    let limit = page.limit.clamp(1, MAX_LIMIT);
    let after = |c: &Cursor| {
        page.cursor
            .as_ref()
            .is_none_or(|cur| (c.at, &c.id) < (cur.at, &cur.id))
    };
    let mut rest = entries.into_iter().filter(|(c, _)| after(c));
    let taken: Vec<(Cursor, Entry)> = rest.by_ref().take(limit).collect();
    let next = match (rest.next(), taken.last()) {
        (Some(_), Some((last, _))) => Some(last.encode()),
        _ => None,
    };
    (taken.into_iter().map(|(_, e)| e).collect(), next)
}

impl Store {
    /// The dead letters `filter` selects, newest first, one page.
    pub async fn list(&self, filter: &ListFilter, page: &Page) -> Result<ListPage, OpsError> {
        let registry = self.registry.clone();
        let filter_owned = filter.clone();
        let (entries, unreadable) = scan(
            &self.settings,
            &self.topics.dead_letter,
            filter.endpoint_id.as_deref(),
            Missing::Error,
            (Vec::new(), 0usize),
            move |(entries, unreadable), r| match r
                .payload
                .map(|p| registry.decode::<DeadLetter>(p))
            {
                Some(Ok(letter)) => {
                    let entry = Entry::of(&letter);
                    if filter_owned.matches(&entry) {
                        entries.push((entry.cursor(), entry));
                    }
                }
                _ => {
                    tracing::warn!(
                        partition = r.partition,
                        offset = r.offset,
                        code = "HL-DLQ-UNREADABLE",
                        "skipping a record of the dead-letter topic that is not a dead letter"
                    );
                    *unreadable += 1;
                }
            },
        )
        .await?;
        let (mut dead_letters, next_cursor) = paginate(entries, page);
        let marks = self.marks().await?;
        for e in &mut dead_letters {
            e.replayed_at = marks.get(&e.id).map(|m| m.replayed_at.clone());
        }
        Ok(ListPage {
            dead_letters,
            next_cursor,
            unreadable,
        })
    }

    /// Every replay mark, by dead-letter id.
    pub(crate) async fn marks(&self) -> Result<HashMap<String, wire::Replay>, OpsError> {
        let registry = self.registry.clone();
        scan(
            &self.settings,
            &self.topics.dead_letter_replays,
            None,
            Missing::Empty,
            HashMap::new(),
            move |marks, r| {
                let Some(key) = r.key.and_then(|k| std::str::from_utf8(k).ok()) else {
                    return;
                };
                match r.payload.map(|p| registry.decode::<wire::Replay>(p)) {
                    Some(Ok(mark)) => {
                        marks.insert(key.to_owned(), mark);
                    }
                    None => {
                        marks.remove(key);
                    }
                    Some(Err(_)) => {
                        // A mark that cannot be read still says the letter was replayed.
                        tracing::warn!(
                            partition = r.partition,
                            offset = r.offset,
                            code = "HL-DLQ-UNREADABLE",
                            "unreadable replay mark; the letter counts as replayed"
                        );
                        marks.insert(
                            key.to_owned(),
                            wire::Replay {
                                dead_letter_id: key.to_owned(),
                                ..wire::Replay::default()
                            },
                        );
                    }
                }
            },
        )
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wire::{Attempt, RenderedDelivery};

    pub(crate) fn letter(
        id: &str,
        failed_at: &str,
        endpoint: Option<&str>,
        code: &str,
    ) -> DeadLetter {
        DeadLetter {
            id: id.to_owned(),
            reason_code: code.to_owned(),
            reason: "final outcome after 1 attempt(s); last: HTTP 410".to_owned(),
            failed_at: failed_at.to_owned(),
            stage: "dispatcher".to_owned(),
            source_topic: "rendered-deliveries".to_owned(),
            source_partition: 0,
            source_offset: 7,
            event_id: Some("ev-1".to_owned()),
            endpoint_id: endpoint.map(str::to_owned),
            delivery_id: Some(format!("del-{id}")),
            delivery: endpoint.map(|e| RenderedDelivery {
                delivery_id: format!("del-{id}"),
                event_id: "ev-1".to_owned(),
                event_type: "transfer.error".to_owned(),
                endpoint_id: e.to_owned(),
                method: "POST".to_owned(),
                url: "https://example.com/hook?token=canary-query".to_owned(),
                body: b"{\"canary\":\"canary-body\"}".to_vec(),
                ..RenderedDelivery::default()
            }),
            payload: None,
            attempts: vec![Attempt {
                attempt: 1,
                started_at: failed_at.to_owned(),
                duration_ms: 12,
                status: Some(410),
                error_code: None,
                response: Some("hl1:canary-response".to_owned()),
            }],
        }
    }

    fn entries(letters: &[DeadLetter], filter: &ListFilter) -> Vec<(Cursor, Entry)> {
        letters
            .iter()
            .map(Entry::of)
            .filter(|e| filter.matches(e))
            .map(|e| (e.cursor(), e))
            .collect()
    }

    #[test]
    fn an_entry_holds_metadata_and_nothing_of_the_request() {
        let l = letter(
            "a",
            "2024-01-15T10:00:00.000+00:00",
            Some("ep-1"),
            "HL-DELIVERY-REJECTED",
        );
        let entry = Entry::of(&l);
        assert_eq!(entry.event_type.as_deref(), Some("transfer.error"));
        assert_eq!(entry.delivery_id.as_deref(), Some("del-a"));
        assert_eq!(
            entry.attempts,
            vec![AttemptInfo {
                number: 1,
                started_at: l.failed_at.clone(),
                duration_ms: 12,
                status: Some(410),
                error_code: None,
                response: None
            }]
        );
        assert!(entry.replayable);
        let json = serde_json::to_string(&entry).unwrap();
        for canary in ["canary", "example.com", "token", "response"] {
            assert!(!json.contains(canary), "{canary} in {json}");
        }
        let unreadable = DeadLetter {
            delivery: None,
            endpoint_id: None,
            delivery_id: None,
            payload: Some(b"raw".to_vec()),
            ..l
        };
        let entry = Entry::of(&unreadable);
        assert!(!entry.replayable && entry.event_type.is_none() && entry.endpoint_id.is_none());
    }

    #[test]
    fn filters_select_by_endpoint_time_and_code() {
        let letters = [
            letter(
                "a",
                "2024-01-15T10:00:00.000+00:00",
                Some("ep-1"),
                "HL-DELIVERY-REJECTED",
            ),
            letter(
                "b",
                "2024-01-15T11:00:00.000+00:00",
                Some("ep-2"),
                "HL-DELIVERY-EXHAUSTED",
            ),
            letter(
                "c",
                "2024-01-15T12:00:00.000+00:00",
                Some("ep-1"),
                "HL-DELIVERY-EXHAUSTED",
            ),
            letter("d", "not a time", None, "HL-WIRE-UNDECODABLE"),
        ];
        let at = |s: &str| parse_rfc3339(s);
        let table: [(ListFilter, &[&str]); 6] = [
            (ListFilter::default(), &["c", "b", "a", "d"]),
            (
                ListFilter {
                    endpoint_id: Some("ep-1".into()),
                    ..ListFilter::default()
                },
                &["c", "a"],
            ),
            (
                ListFilter {
                    since: at("2024-01-15T11:00:00Z"),
                    ..ListFilter::default()
                },
                &["c", "b"],
            ),
            (
                ListFilter {
                    reason_code: Some("hl-delivery-exhausted".into()),
                    ..ListFilter::default()
                },
                &["c", "b"],
            ),
            (
                ListFilter {
                    endpoint_id: Some("ep-1".into()),
                    reason_code: Some("HL-DELIVERY-REJECTED".into()),
                    ..ListFilter::default()
                },
                &["a"],
            ),
            (
                ListFilter {
                    endpoint_id: Some("ep-9".into()),
                    ..ListFilter::default()
                },
                &[],
            ),
        ];
        for (filter, want) in table {
            let (page, next) = paginate(entries(&letters, &filter), &Page::default());
            assert_eq!(
                page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
                want,
                "{filter:?}"
            );
            assert!(next.is_none());
        }
    }

    #[test]
    fn pages_are_newest_first_and_a_cursor_survives_new_letters() {
        let mut letters: Vec<DeadLetter> = (0..7)
            .map(|i| {
                letter(
                    &format!("l{i}"),
                    &format!("2024-01-15T10:00:0{i}.000+00:00"),
                    Some("ep"),
                    "HL-X",
                )
            })
            .collect();
        // Two letters in the same millisecond are ordered by id.
        letters.push(letter(
            "l3b",
            "2024-01-15T10:00:03.000+00:00",
            Some("ep"),
            "HL-X",
        ));
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = Page {
                limit: 3,
                cursor: cursor.as_deref().map(|c| Cursor::parse(c).unwrap()),
            };
            let (got, next) = paginate(entries(&letters, &ListFilter::default()), &page);
            seen.extend(got.iter().map(|e| e.id.clone()));
            pages += 1;
            if pages == 1 {
                // A letter arriving between pages belongs before the cursor: not repeated.
                letters.push(letter(
                    "new",
                    "2024-01-15T10:00:09.000+00:00",
                    Some("ep"),
                    "HL-X",
                ));
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["l6", "l5", "l4", "l3b", "l3", "l2", "l1", "l0"]);
        assert_eq!(pages, 3);
        let (got, next) = paginate(
            entries(&letters, &ListFilter::default()),
            &Page {
                limit: 0,
                cursor: None,
            },
        );
        assert_eq!(
            (got.len(), next.is_some()),
            (1, true),
            "a limit of 0 is clamped to 1"
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Entry::of(&letter("x", "2024-01-15T10:00:00.000+00:00", None, "HL-X")).cursor();
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        for bad in ["", "!!", "bm8tc2xhc2g", "YWJjL2lk"] {
            assert!(
                matches!(Cursor::parse(bad), Err(OpsError::BadCursor)),
                "{bad}"
            );
        }
    }
}
