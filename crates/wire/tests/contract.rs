//! The Avro contract: every schema in `schemas/` is bundled, records round-trip, JSON
//! events are validated with errors that name the field, and new readers read old data.

use serde_json::json;
use wire::{
    Attempt, BUNDLED_SCHEMAS, DeadLetter, Endpoint, Header, Registry, RenderedDelivery, WireError,
};

const OLD_ENDPOINT: &str = include_str!("fixtures/endpoint.v0.avsc");
const OLD_EVENT: &str = include_str!("fixtures/event.v0.avsc");

fn registry() -> Registry {
    Registry::bundled().expect("bundled schemas parse")
}

fn endpoint() -> Endpoint {
    Endpoint {
        id: "e1".into(),
        kind: "webhook".into(),
        name: "ops".into(),
        vendor: "generic_post".into(),
        url: "https://example.com/hook".into(),
        events: vec!["transfer.error".into()],
        api_key: Some("k".into()),
        active: true,
        created_at: "2023-10-15T19:19:08+00:00".into(),
        updated_at: "2023-10-15T19:19:08+00:00".into(),
        ..Endpoint::default()
    }
}

fn delivery() -> RenderedDelivery {
    RenderedDelivery {
        delivery_id: "d1".into(),
        event_id: "ev1".into(),
        event_type: "transfer.error".into(),
        endpoint_id: "e1".into(),
        rendered_at: "2023-10-15T19:19:08+00:00".into(),
        method: "POST".into(),
        url: "https://example.com/hook".into(),
        headers: vec![Header::new("Content-Type", "application/json")],
        sensitive_headers: vec![Header::new("Authorization", "Bearer k")],
        body: b"{\"a\":1}".to_vec(),
        ..wire::RenderedDelivery::default()
    }
}

fn transfer_error() -> serde_json::Value {
    json!({
        "type": "transfer.error",
        "api_version": "2023-10-15",
        "created_at": "2023-10-15T19:19:08+00:00",
        "data": {"error": {
            "destination_id": "00000000-0000-0000-0000-000000000000",
            "destination_name": "Foo Bar",
            "id_in_provider_system": "acme",
            "models": ["users"],
            "is_full_refresh": true,
            "transfer_id": "11111111-0000-0000-0000-000000000000",
            "transfer_status": "PARTIAL_ERROR",
            "transfer_error_type": "first_party_error",
            "transfer_log": "Exception in thread \"main\" org.apache.spark.SparkException",
            "transfer_log_pretty": "Error due to the heat death of the universe",
            "transfer_started_at": "2023-10-15T16:19:08+00:00",
            "transfer_ended_at": "2023-10-15T18:19:08+00:00",
            "in_app_url": ""
        }}
    })
}

#[test]
fn every_schema_file_is_bundled() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("schemas/ exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    on_disk.sort();
    let mut bundled: Vec<String> = BUNDLED_SCHEMAS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    bundled.sort();
    assert_eq!(on_disk, bundled);
    for (name, text) in BUNDLED_SCHEMAS {
        let on_disk = std::fs::read_to_string(format!("{dir}/{name}")).expect("readable");
        assert_eq!(&on_disk, text, "{name} differs from the bundled copy");
    }
}

#[test]
fn internal_records_round_trip_in_single_object_encoding() {
    let reg = registry();
    let bytes = reg.encode(&endpoint()).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    let fp = reg.fingerprints("hookline.internal.Endpoint").unwrap();
    assert_eq!(&bytes[2..10], &fp.last().unwrap().1.0);
    assert_eq!(reg.decode::<Endpoint>(&bytes).unwrap(), endpoint());

    let bytes = reg.encode(&delivery()).unwrap();
    assert_eq!(reg.decode::<RenderedDelivery>(&bytes).unwrap(), delivery());

    let dl = DeadLetter {
        id: "x".into(),
        reason_code: "HL-HTTP-STATUS".into(),
        reason: "receiver answered 500 four times".into(),
        failed_at: "2023-10-15T19:19:08+00:00".into(),
        stage: "dispatcher".into(),
        source_topic: "rendered-deliveries".into(),
        source_partition: 3,
        source_offset: 42,
        event_id: Some("ev1".into()),
        endpoint_id: Some("e1".into()),
        delivery_id: Some("d1".into()),
        delivery: Some(delivery()),
        payload: Some(vec![0, 1, 2, 255]),
        attempts: vec![Attempt {
            attempt: 1,
            started_at: "2023-10-15T19:19:08+00:00".into(),
            duration_ms: 12,
            status: Some(500),
            error_code: None,
            response: Some("upstream down".into()),
        }],
    };
    let bytes = reg.encode(&dl).unwrap();
    assert_eq!(reg.decode::<DeadLetter>(&bytes).unwrap(), dl);

    // A delivery back from a retry tier carries its attempts; its dead letter too.
    let retried = RenderedDelivery {
        single_attempt: true,
        retry_schedule: Some("1s,5s".into()),
        max_in_flight: Some(4),
        max_rps: Some(10),
        due_at_ms: Some(1_700_000_000_000),
        attempts: dl.attempts.clone(),
        replay_of: Some("dl-1".into()),
        ..delivery()
    };
    let bytes = reg.encode(&retried).unwrap();
    assert_eq!(reg.decode::<RenderedDelivery>(&bytes).unwrap(), retried);
    let dl = DeadLetter {
        delivery: Some(retried),
        ..dl
    };
    let bytes = reg.encode(&dl).unwrap();
    assert_eq!(reg.decode::<DeadLetter>(&bytes).unwrap(), dl);

    let attempt = wire::DeliveryAttempt {
        delivery_id: "d1".into(),
        event_id: "ev1".into(),
        event_type: "transfer.error".into(),
        endpoint_id: "e1".into(),
        attempt: 2,
        started_at: "2023-10-15T19:19:08+00:00".into(),
        duration_ms: 7,
        status: Some(503),
        outcome: "retrying".into(),
        next_attempt_at: Some("2023-10-15T19:19:13+00:00".into()),
        ..wire::DeliveryAttempt::default()
    };
    let bytes = reg.encode(&attempt).unwrap();
    assert_eq!(
        reg.decode::<wire::DeliveryAttempt>(&bytes).unwrap(),
        attempt
    );
    let replay = wire::Replay {
        dead_letter_id: "dl-1".into(),
        delivery_id: "d1".into(),
        endpoint_id: "e1".into(),
        replayed_at: "2023-10-15T19:19:08+00:00".into(),
        requested_by: "cli".into(),
    };
    let bytes = reg.encode(&replay).unwrap();
    assert_eq!(reg.decode::<wire::Replay>(&bytes).unwrap(), replay);
}

#[test]
fn a_record_of_another_type_is_refused() {
    let reg = registry();
    let bytes = reg.encode(&endpoint()).unwrap();
    let err = reg.decode::<RenderedDelivery>(&bytes).unwrap_err();
    assert!(matches!(err, WireError::WrongRecord { .. }), "{err:?}");
    assert_eq!(err.code(), "HL-WIRE-WRONG-RECORD");
}

#[test]
fn garbage_is_refused_with_a_code() {
    let reg = registry();
    for bytes in [
        &b""[..],
        b"{\"type\":\"transfer.error\"}",
        &[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    ] {
        let err = reg.decode_event(bytes).unwrap_err();
        assert_eq!(err.code(), "HL-WIRE-UNKNOWN-FORMAT", "{err:?}");
    }
    // Right header, truncated datum.
    let (_, good) = reg.event_from_json(&transfer_error()).unwrap();
    let err = reg.decode_event(&good[..good.len() / 2]).unwrap_err();
    assert_eq!(err.code(), "HL-WIRE-UNDECODABLE", "{err:?}");
}

#[test]
fn the_seed_transfer_error_round_trips() {
    let reg = registry();
    let input = transfer_error();
    let (event, bytes) = reg.event_from_json(&input).unwrap();
    assert_eq!(event.key, "11111111-0000-0000-0000-000000000000");
    assert_eq!(event.version, "2023-10-15");
    assert!(!event.id.is_empty());
    let decoded = reg.decode_event(&bytes).unwrap();
    assert_eq!(decoded, event);
    assert_eq!(decoded.data, input["data"]);
    let body = decoded.envelope_json();
    let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["type", "version", "api_version", "created_at", "data"]
    );
    assert_eq!(body["api_version"], "2023-10-15");
}

#[test]
fn the_envelope_serialises_to_the_same_bytes_without_a_copy() {
    let reg = registry();
    let types = reg.event_types();
    assert!(types.len() > 3, "{types:?}");
    for t in types {
        let event = reg.sample_event(t).expect("a sample of every type");
        let body = event.envelope_bytes();
        assert_eq!(
            body,
            serde_json::to_vec(&event.envelope_json()).unwrap(),
            "{t}"
        );
        let back: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(back["data"], event.data, "{t}");
    }
}

#[test]
fn every_catalogue_type_is_known() {
    let reg = registry();
    let mut expected = vec![
        "transfer.started",
        "transfer.completed",
        "transfer.error",
        "transfer.sensitive_trace",
        "connection_test.sensitive_trace",
        "transformation.started",
        "transformation.succeeded",
        "transformation.failed",
        "endpoint.disabled",
    ];
    for r in [
        "source",
        "destination",
        "recipient",
        "provider",
        "magic_link",
    ] {
        for a in ["created", "updated", "deleted"] {
            expected.push(Box::leak(format!("{r}.{a}").into_boxed_str()));
        }
    }
    expected.sort_unstable();
    assert_eq!(reg.event_types(), expected);
}

#[test]
fn resource_bodies_are_free_form_json_objects_and_key_by_resource_id() {
    let reg = registry();
    let input = json!({"type": "recipient.updated", "data": {
        "current_resource": {"id": "r-9", "name": "Acme Inc", "products": ["billing", "invoices"], "n": 1.5},
        "previous_resource": {"id": "r-9", "name": "Acme Inc", "products": ["billing"]}
    }});
    let (event, bytes) = reg.event_from_json(&input).unwrap();
    assert_eq!(event.key, "r-9");
    let decoded = reg.decode_event(&bytes).unwrap();
    assert_eq!(decoded.data, input["data"]);

    let deleted = json!({"type": "source.deleted", "data": {"previous_resource": {"id": "s-1"}}});
    let (event, _) = reg.event_from_json(&deleted).unwrap();
    assert_eq!(event.key, "s-1");
    assert_eq!(event.data["current_resource"], serde_json::Value::Null);
}

/// Table: (mutation of the seed event, expected field path in the error).
#[test]
fn invalid_events_name_the_field() {
    let reg = registry();
    /// What the case is, how it spoils the seed event, the field the error names.
    type Case = (
        &'static str,
        Box<dyn Fn(&mut serde_json::Value)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown type",
            Box::new(|e| e["type"] = json!("transfer.exploded")),
            "type",
        ),
        (
            "type not a string",
            Box::new(|e| e["type"] = json!(5)),
            "type",
        ),
        (
            "missing type",
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("type");
            }),
            "type",
        ),
        (
            "missing data",
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("data");
            }),
            "data",
        ),
        (
            "unknown envelope field",
            Box::new(|e| e["extra"] = json!(1)),
            "extra",
        ),
        (
            "bad created_at",
            Box::new(|e| e["created_at"] = json!("yesterday")),
            "created_at",
        ),
        (
            "version disagrees",
            Box::new(|e| e["version"] = json!("2020-01-01")),
            "api_version",
        ),
        (
            "missing nested required",
            Box::new(|e| {
                e["data"]["error"]
                    .as_object_mut()
                    .unwrap()
                    .remove("transfer_id");
            }),
            "data.error.transfer_id",
        ),
        (
            "wrong type",
            Box::new(|e| e["data"]["error"]["is_full_refresh"] = json!("yes")),
            "data.error.is_full_refresh",
        ),
        (
            "bad enum",
            Box::new(|e| e["data"]["error"]["transfer_status"] = json!("MEH")),
            "data.error.transfer_status",
        ),
        (
            "array item",
            Box::new(|e| e["data"]["error"]["models"] = json!(["a", 2])),
            "data.error.models[1]",
        ),
        (
            "unknown data field",
            Box::new(|e| e["data"]["error"]["colour"] = json!("red")),
            "data.error.colour",
        ),
        (
            "bad nested timestamp",
            Box::new(|e| e["data"]["error"]["transfer_started_at"] = json!("noon")),
            "data.error.transfer_started_at",
        ),
        (
            "null where required",
            Box::new(|e| e["data"]["error"]["destination_id"] = json!(null)),
            "data.error.destination_id",
        ),
        (
            "data not object",
            Box::new(|e| e["data"] = json!([1])),
            "data",
        ),
    ];
    for (name, mutate, field) in cases {
        let mut event = transfer_error();
        mutate(&mut event);
        match reg.event_from_json(&event) {
            Err(WireError::Invalid { field: f, reason }) => {
                assert_eq!(f, field, "{name}: {reason}");
                assert!(!reason.contains("spark"), "{name}: error quotes a value");
            }
            other => panic!("{name}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn error_messages_never_quote_values() {
    let reg = registry();
    let mut event = transfer_error();
    event["data"]["error"]["transfer_log"] = json!(12345);
    let err = reg.event_from_json(&event).unwrap_err().to_string();
    assert!(!err.contains("12345"), "{err}");
}

#[test]
fn new_readers_read_data_written_with_older_schemas() {
    let mut sources: Vec<(&str, &str)> = BUNDLED_SCHEMAS.to_vec();
    sources.push(("endpoint.v0.avsc", OLD_ENDPOINT));
    sources.push(("event.v0.avsc", OLD_EVENT));
    let reg = Registry::from_sources(sources).unwrap();

    // An Endpoint written by a v0 writer (no `active`) reads as active by default.
    let old_schema = apache_avro::Schema::parse_str(OLD_ENDPOINT).unwrap();
    let bytes = old_endpoint(
        &old_schema,
        apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
        None,
    );
    let read: Endpoint = reg.decode(&bytes).unwrap();
    assert!(read.active);
    assert_eq!(read.api_key, None);
    assert_eq!(read.url, endpoint().url);

    // An event written with the v0 envelope (no version field, fewer branches): the data
    // branch is matched by name, the missing version takes its default.
    let old_event = apache_avro::Schema::parse_str(OLD_EVENT).unwrap();
    let (current, _) = reg.event_from_json(&transfer_error()).unwrap();
    let v = json!({"id": current.id, "type": "transfer.error", "created_at": current.created_at});
    let mut rec = apache_avro::types::Record::new(&old_event).unwrap();
    for k in ["id", "type", "created_at"] {
        rec.put(k, v[k].as_str().unwrap());
    }
    let current_bytes = reg.event_from_json(&transfer_error()).unwrap().1;
    let current_value = reg
        .decode_value("hookline.events.Event", &current_bytes)
        .unwrap();
    let apache_avro::types::Value::Record(fields) = current_value else {
        panic!()
    };
    let (_, apache_avro::types::Value::Union(_, data)) =
        fields.into_iter().find(|(n, _)| n == "data").unwrap()
    else {
        panic!()
    };
    // TransferError is branch 2 in v0 as well.
    rec.put("data", apache_avro::types::Value::Union(2, data));
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&old_event)
        .build()
        .expect("a writer")
        .write_value_to_vec(rec)
        .expect("the old record encodes");
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&wire::Fingerprint::of(&old_event).0);
    bytes.extend_from_slice(&datum);
    let read = reg.decode_event(&bytes).unwrap();
    assert_eq!(read.event_type, "transfer.error");
    assert_eq!(read.version, "2023-10-15");
    assert_eq!(read.data, transfer_error()["data"]);
}

#[test]
fn sensitive_values_are_redacted_in_debug() {
    let printed = format!("{:?} {:?}", endpoint(), delivery());
    assert!(!printed.contains("Bearer k"), "{printed}");
    assert!(printed.contains("[redacted]"));
    let reg = registry();
    let (event, _) = reg.event_from_json(&transfer_error()).unwrap();
    let printed = format!("{event:?}");
    assert!(!printed.contains("SparkException"), "{printed}");
}

#[test]
fn endpoints_written_with_v1_read_with_the_current_schema() {
    let reg = registry();
    let versions = reg.versions("hookline.internal.Endpoint").unwrap();
    assert_eq!(
        versions.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let v1 = versions[0].1;
    let bytes = old_endpoint(
        v1,
        apache_avro::types::Value::Union(1, Box::new("k".into())),
        Some(true),
    );
    let read: Endpoint = reg.decode(&bytes).unwrap();
    assert_eq!(
        read,
        Endpoint {
            signing_scheme: "prequel_rsa".into(),
            ..endpoint()
        },
        "later fields take their defaults"
    );
}

#[test]
fn every_event_type_has_a_valid_sample() {
    let reg = registry();
    for t in reg.event_types() {
        let sample = reg.sample_event(t).unwrap();
        let json = serde_json::json!({"type": t, "data": sample.data});
        let (event, _) = reg
            .event_from_json(&json)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(event.data, sample.data);
    }
}

/// `endpoint()` written with an older Endpoint schema, as single-object encoding.
fn old_endpoint(
    schema: &apache_avro::Schema,
    api_key: apache_avro::types::Value,
    active: Option<bool>,
) -> Vec<u8> {
    let e = endpoint();
    let mut rec = apache_avro::types::Record::new(schema).expect("a record schema");
    for (field, value) in [
        ("id", &e.id),
        ("kind", &e.kind),
        ("name", &e.name),
        ("vendor", &e.vendor),
        ("url", &e.url),
        ("created_at", &e.created_at),
        ("updated_at", &e.updated_at),
    ] {
        rec.put(field, value.clone());
    }
    rec.put(
        "events",
        apache_avro::types::Value::Array(vec!["transfer.error".into()]),
    );
    rec.put("api_key", api_key);
    if let Some(active) = active {
        rec.put("active", active);
    }
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .expect("a writer")
        .write_value_to_vec(rec)
        .expect("the old record encodes");
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&wire::Fingerprint::of(schema).0);
    bytes.extend_from_slice(&datum);
    bytes
}

#[test]
fn sensitive_fields_come_from_the_schema() {
    let r = registry();
    assert_eq!(
        r.sensitive_fields("transfer.error"),
        ["error.transfer_log".to_owned()]
    );
    assert_eq!(
        r.sensitive_fields("transfer.sensitive_trace"),
        ["trace".to_owned()]
    );
    assert_eq!(
        r.sensitive_fields("connection_test.sensitive_trace"),
        ["trace".to_owned()]
    );
    assert!(r.sensitive_fields("transfer.completed").is_empty());
    assert!(r.sensitive_fields("no.such_type").is_empty());
}

#[test]
fn every_event_type_round_trips_through_its_encoding() {
    let reg = registry();
    for t in reg.event_types() {
        let sample = reg.sample_event(t).unwrap();
        let json = serde_json::json!({"type": t, "data": sample.data});
        let (event, bytes) = reg
            .event_from_json(&json)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let read = reg
            .decode_event(&bytes)
            .unwrap_or_else(|e| panic!("{t} does not decode: {e}"));
        assert_eq!(
            (read.event_type.as_str(), &read.data),
            (t, &event.data),
            "{t}"
        );
    }
}

/// A record a few bytes long whose first string claims 9 MiB: refused before anything
/// is allocated (apache-avro's default bound is 512 MiB, so such records made every
/// decoder allocate what they claimed).
#[test]
fn a_length_prefix_larger_than_any_record_is_refused_unallocated() {
    let reg = registry();
    assert_eq!(
        apache_avro::util::max_allocation_bytes(0),
        wire::MAX_ALLOCATION_BYTES
    );
    let valid = reg.encode(&endpoint()).unwrap();
    let mut hostile = valid[..10].to_vec();
    // Avro's zig-zag varint of 9 MiB, then a few bytes of "string".
    let mut n = (9u64 * 1024 * 1024) << 1;
    while n >= 0x80 {
        hostile.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    hostile.push(n as u8);
    hostile.extend_from_slice(b"abc");
    let err = reg.decode::<Endpoint>(&hostile).unwrap_err();
    assert_eq!(err.code(), "HL-WIRE-UNDECODABLE");
    assert!(err.to_string().contains("allocate"), "{err}");
}

/// A record of the current version is deserialised straight from its bytes: it reads
/// what the generic value path reads, and refuses what that path refuses (a truncated
/// datum, bytes after the datum) with the same codes.
#[test]
fn typed_decoding_reads_what_the_value_path_reads() {
    let reg = registry();
    let retried = RenderedDelivery {
        transfer_id: Some("t1".into()),
        timeout_ms: Some(2_000),
        insecure_tls: true,
        max_rps: Some(-1),
        due_at_ms: Some(i64::MIN),
        body_sealed: true,
        body: (0..=255).collect(),
        signing_secrets: vec!["s1".into(), String::new()],
        attempts: vec![Attempt {
            attempt: 3,
            started_at: "2023-10-15T19:19:08+00:00".into(),
            duration_ms: i64::MAX,
            status: None,
            error_code: Some("HL-HTTP-TIMEOUT".into()),
            response: None,
        }],
        ..delivery()
    };
    let bytes = reg.encode(&retried).unwrap();
    let typed = reg.decode::<RenderedDelivery>(&bytes).unwrap();
    let value = reg
        .decode_value("hookline.internal.RenderedDelivery", &bytes)
        .unwrap();
    assert_eq!(
        typed,
        apache_avro::from_value::<RenderedDelivery>(&value).unwrap()
    );
    assert_eq!(typed, retried);

    for cut in [bytes.len() - 1, bytes.len() / 2, 11] {
        let err = reg.decode::<RenderedDelivery>(&bytes[..cut]).unwrap_err();
        assert_eq!(err.code(), "HL-WIRE-UNDECODABLE", "cut at {cut}: {err:?}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let err = reg.decode::<RenderedDelivery>(&longer).unwrap_err();
    assert_eq!(err.code(), "HL-WIRE-UNDECODABLE", "{err:?}");
    assert!(err.to_string().contains("trailing"), "{err}");
    // The right header, then bytes that are no datum of the schema.
    let mut garbage = bytes[..10].to_vec();
    garbage.extend_from_slice(&[0x7f; 40]);
    let err = reg.decode::<RenderedDelivery>(&garbage).unwrap_err();
    assert_eq!(err.code(), "HL-WIRE-UNDECODABLE", "{err:?}");
}

/// Events are written through the schema-aware serializer: byte for byte what
/// apache-avro's generic encoder writes for the same value (every event type's sample,
/// and arrays empty and long).
#[test]
fn events_encode_as_the_generic_encoder_does() {
    let reg = registry();
    let schema = reg.current("hookline.events.Event").unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .unwrap();
    let mut events: Vec<serde_json::Value> = reg
        .event_types()
        .into_iter()
        .map(|t| json!({"type": t, "data": reg.sample_event(t).unwrap().data}))
        .collect();
    for models in [json!([]), json!(["a", "b", "c", "d"])] {
        let mut e = transfer_error();
        e["data"]["error"]["models"] = models;
        events.push(e);
    }
    for json in &events {
        let (_, bytes) = reg.event_from_json(json).unwrap();
        let value = reg.decode_value("hookline.events.Event", &bytes).unwrap();
        let generic = writer.write_value_to_vec(value).unwrap();
        assert_eq!(&bytes[10..], &generic[..], "{}", json["type"]);
    }
}
