"""Avro single-object encoding, checked with fastavro and confluent-kafka (code nobody
here wrote): an event written by fastavro straight to Kafka is delivered, and a dead
letter hookline wrote is read back by fastavro after checking its fingerprint."""

import io
import json
import time
import uuid

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

from conftest import ROOT, brokers

SCHEMAS = ROOT / "schemas"


def load(name: str) -> dict:
    """The current (highest) version of a schema: `dead-letter` -> dead-letter.vN.avsc."""
    record = name.split(".v")[0]
    newest = max(
        SCHEMAS.glob(f"{record}.v*.avsc"), key=lambda p: int(p.name.split(".v")[1].split(".")[0])
    )
    return fastavro.parse_schema(json.loads(newest.read_text()))


def fp_bytes(schema: dict) -> bytes:
    """The Avro spec's CRC-64-AVRO of the Parsing Canonical Form, as single-object
    encoding carries it (little-endian; fastavro's hex is already in that order)."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def single_object(schema: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return b"\xc3\x01" + fp_bytes(schema) + buf.getvalue()


def read_all(topic: str, want: int, timeout: float = 30.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": brokers(),
            "group.id": f"py-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    meta = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
    out, deadline = [], time.time() + timeout
    while time.time() < deadline and len(out) < want:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            out.append(msg)
    consumer.close()
    return out


def test_an_event_written_by_fastavro_is_delivered(pipeline, receiver):
    pipeline.add_webhook("py", receiver.url, ["recipient.updated"])
    schema = load("event.v1.avsc")
    event = {
        "id": str(uuid.uuid4()),
        "type": "recipient.updated",
        "version": "2023-10-15",
        "created_at": "2023-10-15T19:19:08+00:00",
        # fastavro picks the union branch by name with a (name, value) tuple.
        "data": (
            "hookline.events.ResourceChange",
            {
                "current_resource": json.dumps(
                    {"id": "r-1", "name": "Acme Inc", "products": ["billing", "invoices"]}
                ),
                "previous_resource": json.dumps(
                    {"id": "r-1", "name": "Acme Inc", "products": ["billing"]}
                ),
            },
        ),
    }
    producer = Producer({"bootstrap.servers": brokers(), "enable.idempotence": True})
    producer.produce(f"{pipeline.prefix}events", key=b"r-1", value=single_object(schema, event))
    producer.produce(
        f"{pipeline.prefix}events", key=b"r-1", value=b"\xc3\x01" + b"\x00" * 8 + b"junk"
    )
    assert producer.flush(30) == 0

    got = receiver.wait_for(1)
    assert len(got) == 1
    body = json.loads(got[0]["body"])
    assert body == {
        "type": "recipient.updated",
        "version": "2023-10-15",
        "api_version": "2023-10-15",
        "created_at": "2023-10-15T19:19:08+00:00",
        "data": {
            "current_resource": {
                "id": "r-1",
                "name": "Acme Inc",
                "products": ["billing", "invoices"],
            },
            "previous_resource": {"id": "r-1", "name": "Acme Inc", "products": ["billing"]},
        },
    }
    assert got[0]["headers"]["hookline-delivery-id"]

    # The junk record (unknown fingerprint) became a dead letter that fastavro reads.
    letters = read_all(f"{pipeline.prefix}dead-letter", 1)
    assert len(letters) == 1
    raw = letters[0].value()
    dl_schema = load("dead-letter.v1.avsc")
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == fp_bytes(dl_schema), (
        "hookline's fingerprint differs from fastavro's CRC-64-AVRO"
    )
    letter = fastavro.schemaless_reader(io.BytesIO(raw[10:]), dl_schema)
    assert letter["reason_code"] == "HL-WIRE-UNKNOWN-FORMAT"
    assert letter["stage"] == "renderer"
    assert letter["payload"] == b"\xc3\x01" + b"\x00" * 8 + b"junk"


def test_events_accepted_by_the_api_are_readable_by_fastavro(pipeline):
    answer = pipeline.call(
        "POST",
        "/events",
        {
            "type": "transfer.started",
            "data": {
                "transfer_id": "t-9",
                "destination_id": "d",
                "source_ids": ["s"],
                "model_ids": ["m"],
                "is_full_refresh": True,
                "started_at": "2023-10-15T16:19:08+00:00",
            },
        },
    )
    records = read_all(f"{pipeline.prefix}events", 1)
    assert len(records) == 1 and records[0].key() == b"t-9"
    raw = records[0].value()
    schema = load("event.v1.avsc")
    assert raw[2:10] == fp_bytes(schema)
    event = fastavro.schemaless_reader(io.BytesIO(raw[10:]), schema)
    assert event["id"] == answer["id"]
    assert event["type"] == "transfer.started"
    assert event["data"]["transfer_id"] == "t-9"
    assert event["data"]["is_full_refresh"] is True


CODECS = ["gzip", "snappy", "lz4", "zstd"]


def test_events_in_every_kafka_codec_are_delivered(pipeline, receiver):
    """A transfer engine's producer may compress with any codec Kafka has; the renderer
    reads them all. Each event is large and repetitive, so each batch is compressed
    (librdkafka sends a batch as it is when compressing would not shrink it)."""
    pipeline.add_webhook("codecs", receiver.url, ["recipient.updated"])
    schema = load("event.v1.avsc")
    for codec in CODECS:
        event = {
            "id": str(uuid.uuid4()),
            "type": "recipient.updated",
            "version": "2023-10-15",
            "created_at": "2023-10-15T19:19:08+00:00",
            "data": (
                "hookline.events.ResourceChange",
                {
                    "current_resource": json.dumps({"id": codec, "notes": "abcd" * 2048}),
                    "previous_resource": None,
                },
            ),
        }
        producer = Producer({"bootstrap.servers": brokers(), "compression.type": codec})
        producer.produce(
            f"{pipeline.prefix}events", key=codec.encode(), value=single_object(schema, event)
        )
        assert producer.flush(30) == 0, codec

    got = receiver.wait_for(len(CODECS))
    delivered = sorted(json.loads(r["body"])["data"]["current_resource"]["id"] for r in got)
    assert delivered == sorted(CODECS)
