//! The Avro decoder on arbitrary bytes, as a record read from Kafka: single-object
//! encoding of every record hookline reads, with a valid header (the first byte picks
//! the record and its schema version) so the datum decoder is reached, and as the bytes
//! come. Nothing may panic; a decoded record must encode again.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wire::Registry;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::bundled().expect("the bundled schemas load"))
}

const RECORDS: [&str; 8] = [
    "hookline.events.Event",
    "hookline.internal.Endpoint",
    "hookline.internal.RenderedDelivery",
    "hookline.internal.DeadLetter",
    "hookline.internal.SigningKey",
    "hookline.internal.AggregatedTrace",
    "hookline.internal.DeliveryAttempt",
    "hookline.internal.EndpointRequest",
];

fuzz_target!(|data: &[u8]| {
    let reg = registry();
    // As the bytes come.
    let _ = reg.decode_event(data);
    let _ = reg.decode::<wire::Endpoint>(data);
    let Some((&pick, datum)) = data.split_first() else {
        return;
    };
    let name = RECORDS[usize::from(pick) % RECORDS.len()];
    let Ok(versions) = reg.fingerprints(name) else {
        return;
    };
    let (_, fingerprint) = versions[usize::from(pick / 8) % versions.len()];
    let mut framed = vec![0xC3, 0x01];
    framed.extend_from_slice(&fingerprint.0);
    framed.extend_from_slice(datum);
    match name {
        "hookline.events.Event" => {
            if let Ok(event) = reg.decode_event(&framed) {
                // What was read is valid by the schema: it is written back.
                let json = serde_json::json!({"type": event.event_type, "data": event.data});
                let _ = reg.event_from_json(&json);
            }
        }
        "hookline.internal.Endpoint" => {
            if let Ok(e) = reg.decode::<wire::Endpoint>(&framed) {
                reg.encode(&e).expect("a decoded endpoint encodes");
            }
        }
        "hookline.internal.RenderedDelivery" => {
            if let Ok(d) = reg.decode::<wire::RenderedDelivery>(&framed) {
                reg.encode(&d).expect("a decoded delivery encodes");
            }
        }
        "hookline.internal.DeadLetter" => {
            let _ = reg.decode::<wire::DeadLetter>(&framed);
        }
        "hookline.internal.SigningKey" => {
            let _ = reg.decode::<wire::SigningKey>(&framed);
        }
        "hookline.internal.AggregatedTrace" => {
            let _ = reg.decode::<wire::AggregatedTrace>(&framed);
        }
        "hookline.internal.DeliveryAttempt" => {
            let _ = reg.decode::<wire::DeliveryAttempt>(&framed);
        }
        _ => {
            let _ = reg.decode::<wire::EndpointRequest>(&framed);
        }
    }
});
