//! An event's `type`, read from the first bytes of its datum without decoding the rest.
//!
//! A consumer that acts on a few event types (the sensitive-trace aggregator reads
//! every event, and most are not its own) tells them apart at the cost of two length
//! prefixes instead of a whole decode. It is only done where the writer schema is
//! known to begin with the envelope's `id` and `type` strings, as every version of
//! `schemas/event.*.avsc` does: then the datum begins with two Avro strings, each a
//! zigzag-varint length and that many UTF-8 bytes. Anywhere else (a foreign writer
//! schema, a registry id not fetched yet, bytes that do not parse) the answer is
//! `None`, and the caller decodes the event to know.

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;

use crate::event_reader::{EventReader, Framing, SCHEMA_REGISTRY_HEADER, Writer};
use crate::registry::{Registry, single_object};

/// Whether a writer schema of the envelope begins with `id` and `type`, both strings.
pub(crate) fn leads_with_type(schema: &Schema) -> bool {
    let Schema::Record(RecordSchema { fields, .. }) = schema else {
        return false;
    };
    matches!(
        fields.as_slice(),
        [id, kind, ..]
            if id.name == "id"
                && matches!(id.schema, Schema::String)
                && kind.name == "type"
                && matches!(kind.schema, Schema::String)
    )
}

impl EventReader {
    /// The event's `type`, when it can be read from the datum's first two fields
    /// (see the module's documentation); `None`: decode the event to know it.
    pub fn peek_type<'a>(&self, registry: &Registry, bytes: &'a [u8]) -> Option<&'a str> {
        let (index, datum) = match Framing::of(bytes).ok()? {
            Framing::SingleObject => {
                let (fingerprint, datum) = single_object(bytes)?;
                (
                    registry.version_with(crate::event::EVENT, fingerprint)?,
                    datum,
                )
            }
            Framing::SchemaRegistry(id) => match self.writer_of(id)?.as_ref() {
                Writer::Known(index) => (*index, &bytes[SCHEMA_REGISTRY_HEADER..]),
                Writer::Foreign { .. } | Writer::Unusable(_) => return None,
            },
        };
        if !self.peekable(index) {
            return None;
        }
        let (_id, rest) = string(datum)?;
        let (event_type, _) = string(rest)?;
        std::str::from_utf8(event_type).ok()
    }
}

/// An Avro string at the start of `bytes`, and what follows it.
fn string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = long(bytes)?;
    let len = usize::try_from(len).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// An Avro `long` (zigzag, then a little-endian base-128 varint of at most ten bytes).
fn long(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let mut n: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let value = (n >> 1) as i64 ^ -((n & 1) as i64);
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_reader::schema_registry_frame;

    /// The single-object header: marker and fingerprint.
    const HEADER_LEN: usize = 10;

    const OWN: &str = include_str!("../../../schemas/event.v1.avsc");

    #[test]
    fn every_event_type_is_peeked_as_it_decodes() {
        let registry = Registry::bundled().expect("bundled schemas");
        let reader = EventReader::new(&registry, None).expect("a reader");
        reader.learn(&registry, 7, OWN);
        let types = registry.event_types();
        assert!(types.len() > 5, "{types:?}");
        for event_type in types {
            let event = registry.sample_event(event_type).expect("a sample");
            let bytes = registry.encode_event(&event).expect("encodes");
            let decoded = registry.decode_event(&bytes).expect("decodes").event_type;
            assert_eq!(reader.peek_type(&registry, &bytes), Some(decoded.as_str()));
            let framed = schema_registry_frame(7, &bytes[HEADER_LEN..]);
            assert_eq!(reader.peek_type(&registry, &framed), Some(event_type));
        }
    }

    #[test]
    fn what_is_not_known_to_lead_with_the_type_is_not_peeked() {
        let registry = Registry::bundled().expect("bundled schemas");
        let reader = EventReader::new(&registry, None).expect("a reader");
        let event = registry.sample_event("transfer.error").expect("a sample");
        let bytes = registry.encode_event(&event).expect("encodes");
        let datum = &bytes[HEADER_LEN..];
        // A registry id not fetched yet, and an engine's schema with the fields
        // reordered: only a decode knows where its type is.
        assert_eq!(
            reader.peek_type(&registry, &schema_registry_frame(8, datum)),
            None
        );
        let mut reordered: serde_json::Value = serde_json::from_str(OWN).expect("json");
        reordered["fields"]
            .as_array_mut()
            .expect("fields")
            .swap(0, 1);
        reader.learn(&registry, 9, &reordered.to_string());
        assert_eq!(
            reader.peek_type(&registry, &schema_registry_frame(9, datum)),
            None
        );
        let reordered = Schema::parse_str(&reordered.to_string()).expect("a schema");
        assert!(!leads_with_type(&reordered));
        assert!(leads_with_type(&Schema::parse_str(OWN).expect("a schema")));
        // Bytes that end inside the type, an unknown fingerprint, no framing.
        let cut = &bytes[..HEADER_LEN + 1 + event.id.len() + 3];
        assert_eq!(reader.peek_type(&registry, cut), None);
        let mut unknown = bytes.clone();
        unknown[2] ^= 0xFF;
        assert_eq!(reader.peek_type(&registry, &unknown), None);
        assert_eq!(reader.peek_type(&registry, b"{\"type\": \"x\"}"), None);
        assert_eq!(reader.peek_type(&registry, &[]), None);
    }

    #[test]
    fn longs_read_as_avro_writes_them() {
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&Schema::Long)
            .build()
            .expect("a writer");
        let edges = [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN];
        for n in edges {
            let mut out = writer.write_value_to_vec(n).expect("encodes");
            out.push(0xAB);
            assert_eq!(long(&out), Some((n, &[0xABu8][..])), "{n}");
        }
        assert_eq!(long(&[0x80, 0x80]), None, "cut short");
        assert_eq!(long(&[0xFF; 11]), None, "longer than ten bytes");
    }

    #[test]
    fn a_string_longer_than_what_is_left_is_none() {
        assert_eq!(string(&[0x08, b'a', b'b']), None);
        assert_eq!(string(&[0x03]), None, "a negative length");
        assert_eq!(
            string(&[0x04, b'a', b'b', b'c']),
            Some((&b"ab"[..], &b"c"[..]))
        );
    }
}
