//! Sealing at the services' edges: the master keys loaded, checked against the
//! account's signing key at start-up, and the sealed parts of deliveries, endpoints and
//! events opened or sealed.

use anyhow::Context;

use tokio_util::sync::CancellationToken;

use crate::Secret;

/// The sealer of the master key and the earlier ones (comma-separated), or a start-up
/// error that says what to do.
pub fn sealer(master_key: &Secret, previous: &Secret) -> anyhow::Result<signing::Sealer> {
    anyhow::ensure!(
        !master_key.is_empty(),
        "HOOKLINE_MASTER_KEY is not set: secrets are sealed with it before they reach Kafka (generate one with `openssl rand -base64 32`)"
    );
    let previous: Vec<&str> = previous
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    let sealer = signing::Sealer::from_keys(master_key.expose(), &previous)?;
    tracing::info!(sealing_key = sealer.key_id(), opening_keys = ?sealer.key_ids(), "master keys loaded");
    Ok(sealer)
}

/// Reads the `keys` topic and checks that the master key opens the account's signing
/// key (when there is one yet): a wrong `HOOKLINE_MASTER_KEY` is a start-up error,
/// not secrets that fail to open later. Returns the table for services that sign.
pub async fn check_master_key(
    kafka: &kafka_io::KafkaSettings,
    topics: &kafka_io::Topics,
    sealer: &signing::Sealer,
    shutdown: &CancellationToken,
) -> anyhow::Result<kafka_io::Table<wire::SigningKey>> {
    let registry = std::sync::Arc::new(wire::Registry::bundled()?);
    let keys = kafka_io::Table::start(
        kafka,
        &topics.keys,
        move |bytes| registry.decode::<wire::SigningKey>(bytes).ok(),
        shutdown.child_token(),
    )
    .await
    .context("reading keys")?;
    const WRONG: &str = "HOOKLINE_MASTER_KEY does not open this cluster's secrets: it is not the master key they were sealed with";
    if let Some(key) = keys.get(SIGNING_KEY) {
        open_signing_key(sealer, &key).context(WRONG)?;
    }
    // A sealed check value, written by whichever service starts first, catches a wrong
    // master key before any secret exists.
    match keys.get(MASTER_CHECK) {
        Some(check) => {
            sealer
                .open(
                    &check.private_key_sealed,
                    &signing::key_context(MASTER_CHECK),
                )
                .map_err(|_| anyhow::anyhow!(WRONG))?;
        }
        None => {
            let record = wire::SigningKey {
                kid: MASTER_CHECK.to_owned(),
                algorithm: "none".to_owned(),
                public_key_pem: String::new(),
                private_key_sealed: sealer.seal(
                    b"hookline master key check",
                    &signing::key_context(MASTER_CHECK),
                ),
                created_at: wire::now_rfc3339(),
                previous_keys: Vec::new(),
            };
            let registry = wire::Registry::bundled()?;
            let bytes = registry.encode(&record)?;
            let producer = kafka_io::producer(kafka, "hookline-master-check")?;
            let written = kafka_io::send_durably(
                &producer,
                &topics.keys,
                MASTER_CHECK.as_bytes(),
                Some(&bytes),
                None,
                shutdown,
            )
            .await
            .context("writing the master key check")?;
            keys.apply(
                MASTER_CHECK,
                written.partition,
                written.offset,
                Some(record),
            );
        }
    }
    Ok(keys)
}

/// The record key of the master key check in the `keys` topic.
pub const MASTER_CHECK: &str = "master-key-check";

/// The record key of the account's signing key in the `keys` topic.
pub const SIGNING_KEY: &str = "webhook-signing";

/// Opens a sealed signing key.
pub fn open_signing_key(
    sealer: &signing::Sealer,
    key: &wire::SigningKey,
) -> anyhow::Result<signing::RsaKey> {
    use base64::Engine as _;
    let b64 = sealer.open(&key.private_key_sealed, &signing::key_context(&key.kid))?;
    let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(signing::RsaKey::from_pkcs8(&der, key.kid.clone())?)
}

/// The seal context of one part of a delivery (`body`, `signing-secret`,
/// `header/<lower-case name>`): bound to its id, method and URL.
fn delivery_part(d: &wire::RenderedDelivery, part: &str) -> String {
    signing::delivery_context(&d.delivery_id, part, &d.method, &d.url)
}

fn header_part(name: &str) -> String {
    format!("header/{}", name.to_ascii_lowercase())
}

/// Seals what a delivery carries of secrets before it is written to Kafka: the values
/// of its sensitive headers, its signing secrets, and its body when it holds a secret
/// (`body_sealed`). The dispatcher opens them at send time ([`open_delivery`]).
pub fn seal_delivery(
    sealer: &signing::Sealer,
    mut d: wire::RenderedDelivery,
) -> wire::RenderedDelivery {
    let headers: Vec<String> = d
        .sensitive_headers
        .iter()
        .map(|h| {
            sealer.seal(
                h.value.as_bytes(),
                &delivery_part(&d, &header_part(&h.name)),
            )
        })
        .collect();
    let secrets: Vec<String> = d
        .signing_secrets
        .iter()
        .map(|s| sealer.seal(s.as_bytes(), &delivery_part(&d, "signing-secret")))
        .collect();
    let body = d.body_sealed.then(|| {
        sealer
            .seal(&d.body, &delivery_part(&d, "body"))
            .into_bytes()
    });
    for (h, sealed) in d.sensitive_headers.iter_mut().zip(headers) {
        h.value = sealed;
    }
    d.signing_secrets = secrets;
    if let Some(body) = body {
        d.body = body;
    }
    d
}

/// A delivery's sealed parts, opened (in memory only): what an attempt needs besides
/// the delivery's clear fields. No `Debug`: it holds secrets.
pub struct OpenedParts {
    /// The sensitive headers, their values opened.
    pub sensitive_headers: Vec<wire::Header>,
    /// The HMAC secrets, opened, current first.
    pub signing_secrets: Vec<String>,
    /// The body, opened, when it was sealed (`body_sealed`); `None`: the delivery's own.
    pub body: Option<Vec<u8>>,
}

/// Opens a delivery's sealed parts without copying the rest of it. Values that are not
/// sealed (written before sealing existed) pass as they are. Errors with
/// `HL-SEAL-OPEN` when a part does not open with this key and context.
pub fn open_parts(
    sealer: &signing::Sealer,
    d: &wire::RenderedDelivery,
) -> Result<OpenedParts, &'static str> {
    const CODE: &str = "HL-SEAL-OPEN";
    let open = |v: &str, part: &str| -> Result<String, &'static str> {
        if !signing::Sealer::is_sealed(v) {
            return Ok(v.to_owned());
        }
        let plain = sealer.open(v, &delivery_part(d, part)).map_err(|_| CODE)?;
        String::from_utf8(plain).map_err(|_| CODE)
    };
    let sensitive_headers = d
        .sensitive_headers
        .iter()
        .map(|h| {
            Ok(wire::Header {
                name: h.name.clone(),
                value: open(&h.value, &header_part(&h.name))?,
            })
        })
        .collect::<Result<_, &'static str>>()?;
    let signing_secrets = d
        .signing_secrets
        .iter()
        .map(|s| open(s, "signing-secret"))
        .collect::<Result<_, _>>()?;
    let body = if d.body_sealed {
        let text = std::str::from_utf8(&d.body).map_err(|_| CODE)?;
        Some(
            sealer
                .open(text, &delivery_part(d, "body"))
                .map_err(|_| CODE)?,
        )
    } else {
        None
    };
    Ok(OpenedParts {
        sensitive_headers,
        signing_secrets,
        body,
    })
}

/// The delivery with its sealed parts opened, for memory only (a copy; see
/// [`open_parts`]). Errors with `HL-SEAL-OPEN` as it does.
pub fn open_delivery(
    sealer: &signing::Sealer,
    d: &wire::RenderedDelivery,
) -> Result<wire::RenderedDelivery, &'static str> {
    let parts = open_parts(sealer, d)?;
    let mut opened = d.clone();
    opened.sensitive_headers = parts.sensitive_headers;
    opened.signing_secrets = parts.signing_secrets;
    if let Some(body) = parts.body {
        opened.body = body;
    }
    Ok(opened)
}

/// Opens, in memory, the sealed secrets of an endpoint read from Kafka (`api_key`,
/// `secret`, `previous_secret`); values written before sealing existed pass as they
/// are. On failure, names the field that did not open (it stays sealed).
pub fn open_endpoint_secrets(
    sealer: &signing::Sealer,
    endpoint: &mut wire::Endpoint,
) -> Result<(), &'static str> {
    let id = endpoint.id.clone();
    for (field, value) in [
        ("api_key", &mut endpoint.api_key),
        ("secret", &mut endpoint.secret),
        ("previous_secret", &mut endpoint.previous_secret),
    ] {
        if let Some(sealed) = value.as_deref().filter(|v| signing::Sealer::is_sealed(v)) {
            let plain = sealer
                .open(sealed, &signing::endpoint_context(&id, field))
                .map_err(|_| field)?;
            *value = Some(String::from_utf8_lossy(&plain).into_owned());
        }
    }
    Ok(())
}

/// Seals the sensitive fields of an event (trace text, transfer logs) before it is
/// written to Kafka. Values already sealed, empty or absent are left alone.
pub fn seal_event(sealer: &signing::Sealer, registry: &wire::Registry, event: &mut wire::Event) {
    for path in registry.sensitive_fields(&event.event_type) {
        if let Some(serde_json::Value::String(value)) = field_mut(&mut event.data, path)
            && let Some(sealed) = seal_field(sealer, &event.id, path, value)
        {
            *value = sealed;
        }
    }
}

/// One sensitive field of event `event_id` sealed, or `None` when it is empty or
/// already sealed: what [`wire::Registry::encode_event_json_sealing`] (the API's path)
/// and [`wire::Registry::event_from_json_sealing`] are given.
pub fn seal_field(
    sealer: &signing::Sealer,
    event_id: &str,
    path: &str,
    value: &str,
) -> Option<String> {
    (!value.is_empty() && !signing::Sealer::is_sealed(value))
        .then(|| sealer.seal(value.as_bytes(), &signing::event_context(event_id, path)))
}

/// Opens the sealed sensitive fields of an event read from Kafka. Fields written in
/// clear (by an engine that writes Avro itself) pass as they are.
pub fn open_event(
    sealer: &signing::Sealer,
    registry: &wire::Registry,
    event: &mut wire::Event,
) -> Result<(), signing::SealError> {
    for path in registry.sensitive_fields(&event.event_type) {
        if let Some(serde_json::Value::String(value)) = field_mut(&mut event.data, path)
            && signing::Sealer::is_sealed(value)
        {
            let plain = sealer.open(value, &signing::event_context(&event.id, path))?;
            *value = String::from_utf8(plain).map_err(|_| signing::SealError::CannotOpen)?;
        }
    }
    Ok(())
}

/// The non-empty values of an event's sensitive fields, e.g. to check that a URL
/// does not carry one.
pub fn sensitive_values<'a>(registry: &wire::Registry, event: &'a wire::Event) -> Vec<&'a str> {
    registry
        .sensitive_fields(&event.event_type)
        .iter()
        .filter_map(|path| {
            path.split('.')
                .try_fold(&event.data, |v, k| v.get(k))
                .and_then(serde_json::Value::as_str)
        })
        .filter(|v| !v.is_empty())
        .collect()
}

fn field_mut<'a>(data: &'a mut serde_json::Value, path: &str) -> Option<&'a mut serde_json::Value> {
    path.split('.').try_fold(data, |v, k| v.get_mut(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ziPT4SmMuMTwTwqeF6aldKiYNegAmm65VtVAqRVARKE=";

    fn trace_event(registry: &wire::Registry, trace: &str) -> wire::Event {
        let json = serde_json::json!({"id": "ev-1", "type": "transfer.sensitive_trace", "data": {
            "transfer_id": "t-1", "destination_id": "d-1", "execution_context": "write_destination", "trace": trace}});
        registry.event_from_json(&json).expect("valid").0
    }

    #[test]
    fn sensitive_fields_are_sealed_for_kafka_and_open_only_in_their_event() {
        let registry = wire::Registry::bundled().expect("schemas");
        let sealer = signing::Sealer::from_base64(KEY).expect("key");
        let mut event = trace_event(&registry, "ERROR: secret row 42");
        seal_event(&sealer, &registry, &mut event);
        let bytes = registry.encode_event(&event).expect("encodes");
        assert!(
            !bytes.windows(10).any(|w| w == b"secret row"),
            "the trace reached the record in clear"
        );
        let mut read = registry.decode_event(&bytes).expect("decodes");
        assert!(signing::Sealer::is_sealed(
            read.data["trace"].as_str().expect("trace")
        ));
        let mut moved = read.clone();
        open_event(&sealer, &registry, &mut read).expect("opens");
        assert_eq!(read.data["trace"], "ERROR: secret row 42");
        // Sealed for event ev-1, the value does not open in another event.
        moved.id = "ev-2".to_owned();
        assert!(open_event(&sealer, &registry, &mut moved).is_err());
        // A trace written in clear by an engine passes as it is.
        let mut clear = trace_event(&registry, "plain");
        open_event(&sealer, &registry, &mut clear).expect("clear passes");
        assert_eq!(clear.data["trace"], "plain");
        assert_eq!(sensitive_values(&registry, &clear), ["plain"]);
    }

    #[test]
    fn sealing_while_encoding_writes_what_sealing_after_it_wrote() {
        let registry = wire::Registry::bundled().expect("schemas");
        let sealer = signing::Sealer::from_base64(KEY).expect("key");
        let demo = include_str!("../../../ops/demo/transfer-error.json");
        let mut error: serde_json::Value = serde_json::from_str(demo).expect("JSON");
        error["id"] = "ev-1".into();
        let trace = serde_json::json!({"id": "ev-2", "type": "transfer.sensitive_trace", "data": {
            "transfer_id": "t-1", "destination_id": "d-1", "execution_context": "write_destination",
            "trace": "ERROR: secret row 42"}});
        let empty = serde_json::json!({"id": "ev-3", "type": "transfer.sensitive_trace", "data": {
            "transfer_id": "t-1", "destination_id": "d-1", "execution_context": "write_destination",
            "trace": ""}});
        for mut json in [error, trace, empty] {
            json["created_at"] = "2026-12-03T10:00:00Z".into();
            // Before: validated and encoded, sealed, validated and encoded again.
            let (mut before, _) = registry.event_from_json(&json).expect("valid");
            seal_event(&sealer, &registry, &mut before);
            let before_bytes = registry.encode_event(&before).expect("encodes");
            let (now, now_bytes) = registry
                .event_from_json_sealing(&json, |id, path, value| {
                    seal_field(&sealer, id, path, value)
                })
                .expect("valid");
            // Nonces differ, so compare what each record opens to, and the shapes.
            let mut read_before = registry.decode_event(&before_bytes).expect("decodes");
            let mut read_now = registry.decode_event(&now_bytes).expect("decodes");
            assert_eq!(read_now, now, "the event returned is the one encoded");
            let sealed_now = sensitive_values(&registry, &read_now);
            assert_eq!(
                sealed_now.len(),
                sensitive_values(&registry, &read_before).len()
            );
            assert!(sealed_now.iter().all(|v| signing::Sealer::is_sealed(v)));
            assert!(!now_bytes.windows(10).any(|w| w == b"secret row"));
            open_event(&sealer, &registry, &mut read_before).expect("opens");
            open_event(&sealer, &registry, &mut read_now).expect("opens");
            assert_eq!(read_now, read_before);
        }
    }

    #[test]
    fn a_delivery_seals_and_its_parts_open_only_under_its_own_id_method_and_url() {
        use signing::Sealer;
        let sealer = Sealer::from_base64(KEY).expect("key");
        let clear = wire::RenderedDelivery {
            delivery_id: "d-1".into(),
            method: "POST".into(),
            url: "https://hooks.example.com/in".into(),
            headers: vec![wire::Header::new("Content-Type", "application/json")],
            sensitive_headers: vec![wire::Header::new("Authorization", "Bearer sk-1")],
            signing_secrets: vec!["whsec_a".into(), "whsec_b".into()],
            body_sealed: true,
            body: b"{\"trace\":\"secret\"}".to_vec(),
            ..wire::RenderedDelivery::default()
        };
        let sealed = seal_delivery(&sealer, clear.clone());
        assert!(Sealer::is_sealed(&sealed.sensitive_headers[0].value));
        assert!(sealed.signing_secrets.iter().all(|s| Sealer::is_sealed(s)));
        assert_ne!(sealed.body, clear.body);

        let parts = open_parts(&sealer, &sealed).expect("opens");
        assert_eq!(parts.sensitive_headers, clear.sensitive_headers);
        assert_eq!(parts.signing_secrets, clear.signing_secrets);
        assert_eq!(parts.body.as_deref(), Some(clear.body.as_slice()));
        assert!(open_delivery(&sealer, &sealed).expect("opens") == clear);

        // A body that was never sealed is the delivery's own.
        let plain = wire::RenderedDelivery {
            body_sealed: false,
            body: b"{}".to_vec(),
            ..sealed.clone()
        };
        assert!(open_parts(&sealer, &plain).expect("opens").body.is_none());
        // Moved to another URL, or under another master key, nothing opens.
        let moved = wire::RenderedDelivery {
            url: "https://elsewhere.example.com/in".into(),
            ..sealed.clone()
        };
        assert!(open_parts(&sealer, &moved).is_err_and(|code| code == "HL-SEAL-OPEN"));
        let other = Sealer::from_base64(&Sealer::new_master_key()).expect("key");
        assert!(open_parts(&other, &sealed).is_err());
    }
}
