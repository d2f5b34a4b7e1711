//! The API's JSON bodies past their parsing: a body of `POST /events` (one event or an
//! array) through the event validation the producer runs, and an endpoint definition
//! through the creation-time compile and dry run (`render::compile`, `render::validate`)
//! the producer runs before it stores a webhook. Nothing may panic, and an event the
//! validation accepts must decode as it was written.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wire::Registry;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::bundled().expect("the bundled schemas load"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let reg = registry();
    let events: Vec<&Value> = match &body {
        Value::Array(items) => items.iter().take(16).collect(),
        one => vec![one],
    };
    for event in events {
        if let Ok((parsed, bytes)) = reg.event_from_json(event) {
            let read = reg.decode_event(&bytes).expect("an accepted event decodes");
            assert_eq!(read.data, parsed.data, "what was written is what is read");
        }
    }
    // An endpoint as the producer stores it, from the same JSON.
    if let Ok(endpoint) = serde_json::from_value::<wire::Endpoint>(body) {
        if let Ok(compiled) = render::compile(endpoint) {
            let _ = render::validate(&compiled, reg, "prod");
        }
    }
});
