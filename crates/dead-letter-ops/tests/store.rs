//! The dead-letter operations against the real broker: listing in pages across
//! partitions, showing without secrets, and replays that re-queue each letter once,
//! also when two run at the same time.

use std::collections::HashSet;
use std::time::Duration;

use dead_letter_ops::{
    ListFilter, OpsError, Page, Progress, ReplayFilter, ReplayRequest, Store, codes,
};
use kafka_io::{KafkaSettings, Table, Topics};
use signing::Sealer;
use tokio_util::sync::CancellationToken;
use wire::{Attempt, DeadLetter, Endpoint, Header, Registry, RenderedDelivery};

const CANARY_KEY: &str = "canary-api-key-5e1f";
const CANARY_BODY: &str = "canary-body-77aa";

fn sealer() -> Sealer {
    Sealer::from_base64(test_kit::MASTER_KEY).expect("test setup")
}

fn endpoint(id: &str, url: &str) -> Endpoint {
    let s = sealer();
    Endpoint {
        id: id.to_owned(),
        kind: "webhook".into(),
        name: "n".into(),
        vendor: "generic_post".into(),
        url: url.to_owned(),
        events: vec!["transfer.error".into()],
        active: true,
        signing_scheme: "fivetran_hmac".into(),
        secret: Some(s.seal(b"hmac-secret", &signing::endpoint_context(id, "secret"))),
        ..Endpoint::default()
    }
}

/// A dispatcher's dead letter of a request to `url`, sealed as the renderer seals it.
fn letter(n: usize, endpoint_id: &str, url: &str) -> DeadLetter {
    let s = sealer();
    let delivery_id = format!("del-{n}");
    let ctx = |part: &str| signing::delivery_context(&delivery_id, part, "POST", url);
    let delivery = RenderedDelivery {
        delivery_id: delivery_id.clone(),
        event_id: format!("ev-{n}"),
        event_type: "transfer.error".into(),
        endpoint_id: endpoint_id.to_owned(),
        method: "POST".into(),
        url: url.to_owned(),
        headers: vec![Header::new("Content-Type", "application/json")],
        sensitive_headers: vec![Header::new(
            "Authorization",
            s.seal(
                format!("Bearer {CANARY_KEY}").as_bytes(),
                &ctx("header/authorization"),
            ),
        )],
        signing_scheme: "fivetran_hmac".into(),
        signing_secrets: vec![s.seal(b"old-secret", &ctx("signing-secret"))],
        body_sealed: true,
        body: s.seal(CANARY_BODY.as_bytes(), &ctx("body")).into_bytes(),
        ..RenderedDelivery::default()
    };
    let failed_at = wire::format_rfc3339(
        time::OffsetDateTime::now_utc() - time::Duration::minutes(60 - n as i64),
    );
    DeadLetter {
        id: format!("dl-{n:02}"),
        reason_code: "HL-DELIVERY-REJECTED".into(),
        reason: "final outcome after 1 attempt(s); last: HTTP 410".into(),
        failed_at: failed_at.clone(),
        stage: "dispatcher".into(),
        source_topic: "rendered-deliveries".into(),
        source_partition: 0,
        source_offset: n as i64,
        event_id: Some(format!("ev-{n}")),
        endpoint_id: Some(endpoint_id.to_owned()),
        delivery_id: Some(delivery_id.clone()),
        delivery: Some(delivery),
        payload: None,
        attempts: vec![Attempt {
            attempt: 1,
            started_at: failed_at,
            duration_ms: 3,
            status: Some(410),
            error_code: None,
            response: Some(s.seal(b"canary-response", &ctx("response/1"))),
        }],
    }
}

struct Fixture {
    kafka: KafkaSettings,
    topics: Topics,
    store: Store,
    endpoints: Table<Endpoint>,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn fixture(test: &str, letters: &[DeadLetter], endpoints: &[Endpoint]) -> Fixture {
    let (kafka, topics, registry) = test_kit::kafka_stack(test).await;
    let records: Vec<(&str, Vec<u8>)> = endpoints
        .iter()
        .map(|e| (e.id.as_str(), registry.encode(e).expect("test setup")))
        .collect();
    test_kit::produce(&kafka, &topics.endpoints, &records).await;
    // Keyed as the services key them: by endpoint id, else by dead-letter id.
    let mut records: Vec<(&str, Vec<u8>)> = letters
        .iter()
        .map(|l| {
            let key = l.endpoint_id.as_deref().unwrap_or(&l.id);
            (key, registry.encode(l).expect("test setup"))
        })
        .collect();
    // Junk in a partition that ep-b's letters are not in.
    let partitions = kafka.topic_partitions;
    let ep_b = kafka_io::partition_for_key(b"ep-b", partitions);
    let junk = (0..)
        .map(|n| format!("junk-{n}"))
        .find(|k| kafka_io::partition_for_key(k.as_bytes(), partitions) != ep_b)
        .expect("a key");
    records.push((junk.as_str(), b"not a dead letter".to_vec()));
    test_kit::produce(&kafka, &topics.dead_letter, &records).await;
    let shutdown = CancellationToken::new();
    let decoder = Registry::bundled().expect("test setup");
    let table = Table::start(
        &kafka,
        &topics.endpoints,
        move |b| decoder.decode::<Endpoint>(b).ok(),
        shutdown.child_token(),
    )
    .await
    .expect("test setup");
    let store = Store::new(kafka.clone()).expect("test setup");
    Fixture {
        kafka,
        topics,
        store,
        endpoints: table,
        _shutdown: shutdown.drop_guard(),
    }
}

impl Fixture {
    async fn replay(
        &self,
        filter: ReplayFilter,
        dry_run: bool,
    ) -> Result<dead_letter_ops::ReplaySummary, OpsError> {
        let request = ReplayRequest {
            filter,
            dry_run,
            requested_by: "test".into(),
        };
        self.store
            .replay(&request, &self.endpoints, &sealer(), &|_: Progress| {})
            .await
    }

    /// Every delivery on `rendered-deliveries` for `endpoint_id`: a sentinel written
    /// after the replays, on the same key (so the same partition), ends the read.
    async fn deliveries(&self, endpoint_id: &str) -> Vec<RenderedDelivery> {
        test_kit::produce(
            &self.kafka,
            &self.topics.rendered_deliveries,
            &[(endpoint_id, b"sentinel".to_vec())],
        )
        .await;
        let records = test_kit::read_topic(
            &self.kafka,
            &self.topics.rendered_deliveries,
            Duration::from_secs(60),
            |r| r.iter().any(|r| r.value.as_deref() == Some(b"sentinel")),
        )
        .await;
        assert!(
            records
                .iter()
                .any(|r| r.value.as_deref() == Some(b"sentinel")),
            "the sentinel was not read back"
        );
        let registry = Registry::bundled().expect("test setup");
        records
            .iter()
            .filter(|r| {
                r.key.as_deref() == Some(endpoint_id) && r.value.as_deref() != Some(b"sentinel")
            })
            .map(|r| {
                registry
                    .decode::<RenderedDelivery>(r.value.as_ref().expect("test setup"))
                    .expect("test setup")
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_in_pages_newest_first_and_shows_without_secrets() {
    let letters: Vec<DeadLetter> = (0..12)
        .map(|n| {
            letter(
                n,
                if n % 3 == 0 { "ep-b" } else { "ep-a" },
                "https://old.example/hook?token=canary-query",
            )
        })
        .collect();
    let f = fixture("dlq-list", &letters, &[]).await;

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = Page {
            limit: 5,
            cursor: cursor
                .as_deref()
                .map(|c| dead_letter_ops::Cursor::parse(c).unwrap()),
        };
        let got = f.store.list(&ListFilter::default(), &page).await.unwrap();
        assert_eq!(got.unreadable, 1, "the junk record is counted, not listed");
        assert!(got.dead_letters.len() <= 5);
        seen.extend(got.dead_letters.iter().map(|e| e.id.clone()));
        let json = serde_json::to_string(&got).unwrap();
        for canary in [
            CANARY_KEY,
            CANARY_BODY,
            "canary-query",
            "canary-response",
            "old.example",
        ] {
            assert!(!json.contains(canary), "{canary} listed: {json}");
        }
        match got.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let newest_first: Vec<String> = (0..12).rev().map(|n| format!("dl-{n:02}")).collect();
    assert_eq!(seen, newest_first);

    let only_b = f
        .store
        .list(
            &ListFilter {
                endpoint_id: Some("ep-b".into()),
                ..ListFilter::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        only_b
            .dead_letters
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["dl-09", "dl-06", "dl-03", "dl-00"]
    );
    assert_eq!(
        only_b.unreadable, 0,
        "one endpoint's letters are read from its partition only, not the junk's"
    );
    let since =
        time::OffsetDateTime::now_utc() - time::Duration::minutes(50) - time::Duration::seconds(30);
    let recent = f
        .store
        .list(
            &ListFilter {
                since: Some(since),
                ..ListFilter::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        recent.dead_letters.len(),
        2,
        "dl-10 and dl-11 failed in the last 50 minutes"
    );
    let none = f
        .store
        .list(
            &ListFilter {
                reason_code: Some("HL-OTHER".into()),
                ..ListFilter::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert!(none.dead_letters.is_empty());

    let shown = f
        .store
        .show("dl-04")
        .await
        .unwrap()
        .expect("dl-04 is there");
    let json = serde_json::to_string(&shown).unwrap();
    for canary in [CANARY_KEY, CANARY_BODY, "canary-query", "canary-response"] {
        assert!(!json.contains(canary), "{canary} shown: {json}");
    }
    let request = shown.request.unwrap();
    assert_eq!(request.url, "https://old.example/hook?token=[redacted]");
    assert!(
        request
            .headers
            .iter()
            .any(|h| h.name == "Authorization" && h.value == "[redacted]")
    );
    assert!(request.body_sealed && request.body.is_none());
    assert_eq!(shown.entry.attempts[0].response, Some("[sealed]"));
    assert!(f.store.show("dl-99").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_requeues_each_letter_once_resealed_for_the_current_url() {
    let old = "https://old.example/hook";
    let mut letters: Vec<DeadLetter> = (0..6).map(|n| letter(n, "ep-a", old)).collect();
    letters.push(letter(6, "ep-deleted", old));
    letters.push(DeadLetter {
        delivery: None,
        payload: Some(b"raw".to_vec()),
        ..letter(7, "ep-a", old)
    });
    let f = fixture(
        "dlq-replay",
        &letters,
        &[endpoint("ep-a", "https://new.example/v2")],
    )
    .await;

    let dry = f
        .replay(
            ReplayFilter {
                endpoint_id: Some("ep-a".into()),
                ..ReplayFilter::default()
            },
            true,
        )
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!((dry.matched, dry.requeued, dry.already_replayed), (7, 6, 0));
    assert_eq!(dry.refused.get(codes::NOT_REPLAYABLE), Some(&1));

    // The dry run wrote nothing: the first real replay still re-queues every letter.
    let everything = ReplayFilter {
        since: Some(time::OffsetDateTime::now_utc() - time::Duration::hours(2)),
        ..ReplayFilter::default()
    };
    let first = f.replay(everything.clone(), false).await.unwrap();
    assert_eq!(
        (first.matched, first.requeued, first.already_replayed),
        (8, 6, 0)
    );
    assert_eq!(first.refused.get(codes::ENDPOINT_DELETED), Some(&1));
    assert_eq!(first.refused.get(codes::NOT_REPLAYABLE), Some(&1));
    let again = f.replay(everything, false).await.unwrap();
    assert_eq!((again.requeued, again.already_replayed), (0, 6));

    let deliveries = f.deliveries("ep-a").await;
    assert_eq!(deliveries.len(), 6, "each letter re-queued once");
    let s = sealer();
    let ids: HashSet<String> = deliveries.iter().map(|d| d.delivery_id.clone()).collect();
    assert_eq!(
        ids,
        (0..6).map(|n| format!("del-{n}")).collect::<HashSet<_>>()
    );
    for d in &deliveries {
        let n = &d.delivery_id[4..];
        assert_eq!(d.replay_of.as_deref(), Some(format!("dl-{n:0>2}").as_str()));
        assert_eq!(d.url, "https://new.example/v2");
        let ctx = |part: &str| {
            signing::delivery_context(&d.delivery_id, part, "POST", "https://new.example/v2")
        };
        assert_eq!(
            s.open(&d.sensitive_headers[0].value, &ctx("header/authorization"))
                .unwrap(),
            format!("Bearer {CANARY_KEY}").into_bytes()
        );
        assert_eq!(
            s.open(std::str::from_utf8(&d.body).unwrap(), &ctx("body"))
                .unwrap(),
            CANARY_BODY.as_bytes()
        );
        assert_eq!(
            s.open(&d.signing_secrets[0], &ctx("signing-secret"))
                .unwrap(),
            b"hmac-secret",
            "the endpoint's current secret"
        );
    }
    let listed = f
        .store
        .list(
            &ListFilter {
                endpoint_id: Some("ep-a".into()),
                ..ListFilter::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        listed
            .dead_letters
            .iter()
            .filter(|e| e.replayed_at.is_some())
            .count(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replays_at_once_requeue_each_letter_once() {
    let letters: Vec<DeadLetter> = (0..20)
        .map(|n| letter(n, "ep-a", "https://old.example/hook"))
        .collect();
    let f = fixture(
        "dlq-race",
        &letters,
        &[endpoint("ep-a", "https://new.example/v2")],
    )
    .await;
    let filter = ReplayFilter {
        endpoint_id: Some("ep-a".into()),
        ..ReplayFilter::default()
    };
    let (a, b) = tokio::join!(f.replay(filter.clone(), false), f.replay(filter, false));
    // A replay fenced by the other, or whose commit failed, wrote nothing; the other
    // re-queued everything, or found it marked.
    let mut requeued = 0;
    for result in [&a, &b] {
        match result {
            Ok(summary) => requeued += summary.requeued,
            Err(e) => assert!(
                matches!(e, OpsError::Conflict | OpsError::NotCommitted(_)),
                "unexpected failure: {e}"
            ),
        }
    }
    assert!(a.is_ok() || b.is_ok(), "both failed: {a:?} {b:?}");
    let deliveries = f.deliveries("ep-a").await;
    assert_eq!(requeued, 20);
    assert_eq!(deliveries.len(), 20, "each letter re-queued once");
    assert_eq!(
        deliveries
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<HashSet<_>>()
            .len(),
        20
    );
}
