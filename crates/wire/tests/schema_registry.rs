//! Reading Schema Registry-framed events against a registry that answers as the
//! Confluent REST API does (a few routes served here; the real registry, Apicurio, is
//! the judge in tests/python/test_schema_registry.py): which framing, which errors are
//! the record's fault and which are the registry's, and writer schemas that differ from
//! hookline's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use wire::{
    EventReader, Framing, Read, ReadError, Registry, RegistryError, RegistrySettings,
    SchemaRegistry, WireError, schema_registry_frame,
};

const EVENT_SCHEMA: &str = include_str!("../../../schemas/event.v1.avsc");

/// A registry holding `schemas` by id; with `token`, it wants that bearer token.
async fn fake_registry(schemas: HashMap<u32, String>, token: Option<&'static str>) -> String {
    type Shared = Arc<(HashMap<u32, String>, Option<&'static str>)>;
    async fn by_id(
        State(shared): State<Shared>,
        headers: HeaderMap,
        Path(id): Path<u32>,
    ) -> (StatusCode, Json<Value>) {
        let (schemas, token) = &*shared;
        if let Some(token) = token {
            let sent = headers.get("authorization").and_then(|v| v.to_str().ok());
            if sent != Some(&format!("Bearer {token}")) {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error_code": 401, "message": "Unauthorized"})),
                );
            }
        }
        match schemas.get(&id) {
            Some(s) => (StatusCode::OK, Json(json!({"schema": s}))),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error_code": 40403, "message": "Schema not found"})),
            ),
        }
    }
    let app = axum::Router::new()
        .route("/schemas/ids/{id}", axum::routing::get(by_id))
        .with_state(Arc::new((schemas, token)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn client(url: &str, token: Option<&str>) -> SchemaRegistry {
    SchemaRegistry::new(RegistrySettings {
        url: url.to_owned(),
        token: token.map(str::to_owned),
        timeout: Duration::from_secs(5),
        ..RegistrySettings::default()
    })
    .expect("client")
}

/// A `transfer.error` and its single-object encoding with hookline's own schema.
fn error_event(registry: &Registry) -> (wire::Event, Vec<u8>) {
    let event = registry.sample_event("transfer.error").expect("a sample");
    let bytes = registry.encode_event(&event).expect("encodes");
    (event, bytes)
}

/// The datum of that event (the single-object header cut).
fn datum(registry: &Registry) -> Vec<u8> {
    error_event(registry).1[10..].to_vec()
}

/// Reads a zigzag varint at `at`, returning (value, length).
fn varint(bytes: &[u8], at: usize) -> (i64, usize) {
    let (mut n, mut shift, mut len) = (0u64, 0, 0);
    loop {
        let b = bytes[at + len];
        n |= u64::from(b & 0x7f) << shift;
        len += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (((n >> 1) as i64) ^ -((n & 1) as i64), len)
}

#[test]
fn framing_is_decided_by_the_first_byte() {
    assert_eq!(
        Framing::of(&[0xC3, 0x01, 1]).ok(),
        Some(Framing::SingleObject)
    );
    assert_eq!(
        Framing::of(&[0, 0, 0, 1, 2, 9]).ok(),
        Some(Framing::SchemaRegistry(258))
    );
    for bytes in [&[][..], &[0x7B], &[0, 0, 1]] {
        assert_eq!(
            Framing::of(bytes).err().map(|e| e.code()),
            Some("HL-WIRE-UNKNOWN-FORMAT"),
            "{bytes:?}"
        );
    }
}

#[tokio::test]
async fn an_id_of_hookline_own_schema_reads_like_single_object_encoding() {
    let registry = Registry::bundled().expect("schemas");
    let url = fake_registry(HashMap::from([(7, EVENT_SCHEMA.to_owned())]), None).await;
    let reader = EventReader::new(&registry, Some(client(&url, None))).expect("reader");
    let (expected, single) = error_event(&registry);
    let framed = schema_registry_frame(7, &single[10..]);

    assert!(matches!(
        reader.read_cached(&registry, &framed),
        Read::Fetch(7)
    ));
    let event = reader.read(&registry, &framed).await.expect("read");
    assert_eq!(event, expected);
    // Fetched once, then read without the registry.
    assert!(matches!(
        reader.read_cached(&registry, &framed),
        Read::Done(Ok(_))
    ));
    let single_read = reader
        .read(&registry, &single)
        .await
        .expect("single object");
    assert_eq!(single_read, expected);
}

#[tokio::test]
async fn a_writer_schema_with_more_fields_and_another_branch_order_resolves_by_type() {
    let registry = Registry::bundled().expect("schemas");
    // The engine's copy: an extra envelope field at the end, and the first record of the
    // data union moved after TransferError (which moves up by one).
    let mut schema: Value = serde_json::from_str(EVENT_SCHEMA).expect("json");
    let fields = schema["fields"].as_array_mut().expect("fields");
    let data = fields
        .iter_mut()
        .find(|f| f["name"] == "data")
        .expect("data");
    let branches = data["type"].as_array_mut().expect("union");
    let at_error = branches
        .iter()
        .position(|b| b["name"] == "TransferError")
        .expect("TransferError");
    assert!(at_error > 0);
    let first = branches.remove(0);
    branches.insert(at_error, first);
    fields.push(json!({"name": "engine", "type": "string", "default": ""}));
    let url = fake_registry(HashMap::from([(8, schema.to_string())]), None).await;
    let reader = EventReader::new(&registry, Some(client(&url, None))).expect("reader");

    // The datum in that schema: hookline's, with the branch index one less and the extra
    // field appended.
    let (expected, _) = error_event(&registry);
    let mut ours = datum(&registry);
    let mut at = 0;
    for _ in 0..4 {
        let (len, n) = varint(&ours, at);
        at += n + usize::try_from(len).expect("length");
    }
    let (branch, n) = varint(&ours, at);
    assert_eq!((branch, n), (i64::try_from(at_error).expect("index"), 1));
    ours[at] = u8::try_from(2 * (at_error - 1)).expect("zigzag");
    ours.extend_from_slice(&[6, b'e', b't', b'l']);

    let event = reader
        .read(&registry, &schema_registry_frame(8, &ours))
        .await
        .expect("resolved");
    assert_eq!(event, expected);
}

#[tokio::test]
async fn what_is_the_record_fault_and_what_is_the_registry_fault() {
    let registry = Registry::bundled().expect("schemas");
    let bytes = schema_registry_frame(99, &datum(&registry));
    let code = |r: Result<wire::Event, ReadError>| match r {
        Err(ReadError::Wire(e)) => format!("dead letter {}", e.code()),
        Err(ReadError::Registry(e)) => format!("wait {}", e.code()),
        Ok(_) => "read".to_owned(),
    };

    // An id the registry does not know: the record's dead letter.
    let url = fake_registry(HashMap::from([(3, "\"string\"".to_owned())]), None).await;
    let reader = EventReader::new(&registry, Some(client(&url, None))).expect("reader");
    assert_eq!(
        code(reader.read(&registry, &bytes).await),
        "dead letter HL-WIRE-UNKNOWN-SCHEMA-ID"
    );
    // A schema that is no event envelope: the record's dead letter too.
    let not_event = schema_registry_frame(3, &[2, b'x']);
    assert_eq!(
        code(reader.read(&registry, &not_event).await),
        "dead letter HL-WIRE-UNRESOLVABLE"
    );

    // Credentials refused, no answer, a URL that is not a registry: wait, never a dead letter.
    let url = fake_registry(HashMap::new(), Some("right")).await;
    let reader = EventReader::new(&registry, Some(client(&url, Some("wrong")))).expect("reader");
    assert_eq!(
        code(reader.read(&registry, &bytes).await),
        "wait HL-REGISTRY-AUTH"
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let reader = EventReader::new(&registry, Some(client(&closed, None))).expect("reader");
    assert_eq!(
        code(reader.read(&registry, &bytes).await),
        "wait HL-REGISTRY-UNAVAILABLE"
    );
    let reader = EventReader::new(
        &registry,
        Some(client(&format!("{url}/not/here"), Some("right"))),
    )
    .expect("reader");
    assert!(matches!(
        reader.read(&registry, &bytes).await,
        Err(ReadError::Registry(RegistryError::NotFound(0)))
    ));

    // No registry configured at all: a dead letter that says so.
    let reader = EventReader::new(&registry, None).expect("reader");
    assert!(matches!(
        reader.read_cached(&registry, &bytes),
        Read::Done(Err(WireError::NoSchemaRegistry(99)))
    ));
}
