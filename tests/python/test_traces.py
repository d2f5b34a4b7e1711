"""One OpenTelemetry trace from `POST /events` to every HTTP attempt, across both Kafka
hops and a retry tier, judged by an OTLP receiver that decodes with PyPI's
opentelemetry-proto (code nobody here wrote). A canary secret and a canary trace text
must appear nowhere in what is exported."""

import json
import os
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from confluent_kafka import Producer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from test_avro_interop import load, single_object
from test_signed_deliveries import transfer_error

from conftest import TOKEN, brokers

KINDS = {
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
}


class Collector:
    """An OTLP/HTTP trace receiver: keeps every request's raw bytes and its spans."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.spans: list[dict] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with lock:
                    outer.raw.append(body)
                    for resource_spans in request.resource_spans:
                        service = next(
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        )
                        for scope in resource_spans.scope_spans:
                            for span in scope.spans:
                                outer.spans.append(
                                    {
                                        "service": service,
                                        "name": span.name,
                                        "kind": KINDS.get(span.kind, str(span.kind)),
                                        "trace": span.trace_id.hex(),
                                        "id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "attributes": {
                                            a.key: getattr(a.value, a.value.WhichOneof("value"))
                                            for a in span.attributes
                                        },
                                        "error": span.status.code == span.status.STATUS_CODE_ERROR,
                                        "links": [
                                            (link.trace_id.hex(), link.span_id.hex())
                                            for link in span.links
                                        ],
                                    }
                                )
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_one_trace_from_ingest_to_every_attempt(start_pipeline, receiver):
    collector = Collector()
    try:
        run(start_pipeline, receiver, collector)
    finally:
        collector.server.shutdown()


def run(start_pipeline, receiver, collector: Collector) -> None:
    pipeline = start_pipeline(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            # The retry after the 500 waits 1.6 to 2.4 s: longer than the shortest tier
            # (1 s), so it goes through the `retry-1s` topic, not a sleep in place.
            "HOOKLINE_RETRY_SCHEDULE": "2s",
        }
    )
    secret = f"canary-secret-{uuid.uuid4().hex}"
    trace_text = f"canary-trace-{uuid.uuid4().hex}"
    pipeline.add_webhook(
        "traced",
        receiver.url + "?token=" + secret,
        ["transfer.error"],
        api_key=secret,
        signing_scheme="standard_webhooks",
    )
    receiver.script = [500]
    event = transfer_error(1)
    event["data"]["error"]["transfer_log"] = trace_text
    # The transfer engine's own trace, continued by hookline.
    engine_trace, engine_span = os.urandom(16).hex(), os.urandom(8).hex()
    request = urllib.request.Request(
        f"{pipeline.api}/events",
        method="POST",
        data=json.dumps(event).encode(),
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
            "traceparent": f"00-{engine_trace}-{engine_span}-01",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 202
    got = receiver.wait_for(2, timeout=60)
    assert len(got) == 2, "a 500, then the retry"

    def attempts() -> list[dict]:
        return [s for s in collector.spans if s["kind"] == "client"]

    deadline = time.time() + 30
    while time.time() < deadline and len(attempts()) < 2:
        time.sleep(0.1)
    spans = [s for s in collector.spans if s["trace"] == engine_trace]
    by_id = {s["id"]: s for s in spans}

    # The tree, printed as checked: service, span, parent.
    def depth(s: dict) -> int:
        return 0 if s["parent"] not in by_id else 1 + depth(by_id[s["parent"]])

    for s in sorted(spans, key=lambda s: (depth(s), s["attributes"].get("hookline.attempt", 0))):
        parent = by_id.get(s["parent"], {}).get("name", f"(engine span {s['parent']})")
        detail = ""
        if s["kind"] == "client":
            a = s["attributes"]
            detail = f" status {a['http.response.status_code']}, attempt {a['hookline.attempt']}"
        print(f"{'  ' * depth(s)}{s['service']}: {s['name']} [{s['kind']}]{detail} <- {parent}")

    def one(name: str, kind: str) -> dict:
        found = [s for s in spans if s["name"] == name and s["kind"] == kind]
        assert len(found) == 1, f"{name} [{kind}]: {found}"
        return found[0]

    server = one("POST /events", "server")
    assert server["service"] == "hookline-producer"
    assert server["parent"] == engine_span, "continues the engine's traceparent"
    assert server["attributes"]["http.response.status_code"] == 202
    process = one("process events", "consumer")
    assert process["service"] == "hookline-renderer"
    assert process["parent"] == server["id"], "the event record carries the context"
    assert process["attributes"]["messaging.system"] == "kafka"
    assert process["attributes"]["messaging.destination.name"].endswith("events")
    assert "messaging.kafka.offset" in process["attributes"]
    assert "messaging.consumer.group.name" in process["attributes"]
    rendered = one("send rendered-deliveries", "producer")
    assert rendered["parent"] == process["id"]

    tried = sorted(
        (s for s in spans if s["kind"] == "client"),
        key=lambda s: s["attributes"]["hookline.attempt"],
    )
    assert len(tried) == 2, tried
    for attempt in tried:
        assert attempt["service"] == "hookline-dispatcher"
        assert attempt["name"] == "POST"
        assert attempt["parent"] == rendered["id"], "through the retry tier, in one trace"
        assert attempt["attributes"]["http.request.method"] == "POST"
        assert attempt["attributes"]["server.address"] == "127.0.0.1"
        assert attempt["attributes"]["url.full"].endswith("/hook?token=REDACTED")
    first, second = tried
    assert first["attributes"]["http.response.status_code"] == 500
    assert first["attributes"]["error.type"] == "500" and first["error"]
    assert "http.request.resend_count" not in first["attributes"]
    assert second["attributes"]["http.response.status_code"] == 200
    assert second["attributes"]["http.request.resend_count"] == 1
    assert not second["error"]

    aggregated(pipeline, receiver, collector, trace_text)
    replayed(pipeline, receiver, collector)
    from_the_engine(pipeline, receiver, collector)

    exported = b"".join(collector.raw)
    assert secret.encode() not in exported, "a secret reached a span"
    assert trace_text.encode() not in exported, "trace text reached a span"


def aggregated(pipeline, receiver, collector: Collector, trace_text: str) -> None:
    """A transfer's sensitive traces, each posted in a trace of its own: the flush's
    span links to all three, and its request's attempt is parented in the flush."""
    base = receiver.url.rsplit("/", 1)[0]
    pipeline.call(
        "POST",
        "/sensitive-trace-endpoints",
        {"sensitive_trace_endpoint": {"name": "traces", "url": f"{base}/traces"}},
    )
    transfer = f"tr-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        trace = {
            "type": "transfer.sensitive_trace",
            "data": {
                "transfer_id": transfer,
                "destination_id": "dest-1",
                "source_id": "src-1",
                "model_id": f"m{n}",
                "model_name": f"m{n}_table",
                "source_vendor": "postgres",
                "destination_vendor": "snowflake",
                "execution_context": "load",
                "trace": f"{trace_text} {n}",
            },
        }
        pipeline.call("POST", "/events", trace)
    completed = {
        "type": "transfer.completed",
        "data": {
            "transfer_id": transfer,
            "destination_id": "dest-1",
            "status": "PARTIAL_ERROR",
            "started_at": "2024-01-15T10:00:00Z",
            "ended_at": "2024-01-15T10:30:00Z",
        },
    }
    pipeline.call("POST", "/events", completed)
    deadline = time.time() + 60
    while time.time() < deadline and not any(r["path"] == "/traces" for r in receiver.requests):
        time.sleep(0.1)
    assert any(r["path"] == "/traces" for r in receiver.requests), "the transfer's one POST"

    def flushed() -> list[dict]:
        return [s for s in collector.spans if s["name"] == "flush sensitive-traces"]

    while time.time() < deadline and not (
        flushed()
        and any(
            s["kind"] == "client" and s["parent"] == flushed()[0]["id"] for s in collector.spans
        )
    ):
        time.sleep(0.1)
    assert len(flushed()) == 1, flushed()
    flush = flushed()[0]
    assert flush["service"] == "hookline-renderer"
    assert flush["attributes"]["hookline.traces"] == 3
    sent = {(s["trace"], s["id"]) for s in collector.spans if s["name"] == "POST /events"}
    linked = set(flush["links"])
    print(f"flush sensitive-traces links {len(linked)} traces: {sorted(t for t, _ in linked)}")
    assert len(linked) == 3 and linked <= sent, (linked, sent)
    attempt = [s for s in collector.spans if s["kind"] == "client" and s["parent"] == flush["id"]]
    assert len(attempt) == 1 and attempt[0]["trace"] == flush["trace"], attempt


def replayed(pipeline, receiver, collector: Collector) -> None:
    """A delivery answered 400 is dead-lettered in its trace; its replay starts a new
    trace, linked to the original, in which the new attempt is parented."""
    base = receiver.url.rsplit("/", 1)[0]
    pipeline.add_webhook("replayed", f"{base}/replay", ["transfer.started"])
    receiver.script = [400]
    started = {
        "type": "transfer.started",
        "data": {
            "transfer_id": f"tr-{uuid.uuid4().hex[:8]}",
            "destination_id": "d-1",
            "source_ids": ["s-1"],
            "model_ids": ["m-1"],
            "is_full_refresh": False,
            "started_at": "2023-10-15T16:19:08+00:00",
        },
    }
    pipeline.call("POST", "/events", started)
    deadline = time.time() + 60
    letters: list = []
    while time.time() < deadline and not letters:
        letters = pipeline.call("GET", "/dead-letters")["dead_letters"]
        time.sleep(0.2)
    assert len(letters) == 1, letters
    summary = pipeline.call("POST", "/dead-letters/replay", {"ids": [letters[0]["id"]]})
    assert summary["requeued"] == 1, summary

    def on(path: str) -> list[dict]:
        return [r for r in receiver.requests if r["path"] == path]

    while time.time() < deadline and len(on("/replay")) < 2:
        time.sleep(0.1)
    assert len(on("/replay")) == 2, "the 400, then the replay's 200"

    def client_spans() -> list[dict]:
        return [
            s
            for s in collector.spans
            if s["kind"] == "client" and s["attributes"]["url.full"].endswith("/replay")
        ]

    def replay_spans() -> list[dict]:
        return [s for s in collector.spans if s["name"] == "replay dead-letter"]

    # Each service exports in its own batches: the dispatcher's span can arrive before
    # the producer's replay span it is parented to.
    while time.time() < deadline and (len(client_spans()) < 2 or not replay_spans()):
        time.sleep(0.1)
    first, again = sorted(
        client_spans(), key=lambda s: -s["attributes"]["http.response.status_code"]
    )
    assert first["attributes"]["http.response.status_code"] == 400
    assert again["attributes"]["http.response.status_code"] == 200
    replay = replay_spans()
    assert len(replay) == 1, replay
    replay = replay[0]
    assert replay["service"] == "hookline-producer"
    assert again["parent"] == replay["id"] and again["trace"] == replay["trace"]
    assert replay["trace"] != first["trace"], "a replay starts a new trace"
    original = (first["trace"], first["parent"])
    print(f"replay dead-letter: trace {replay['trace']} linked to {original}")
    assert replay["links"] == [original], "linked to the dead letter's trace"


def from_the_engine(pipeline, receiver, collector: Collector) -> None:
    """A transfer engine that writes `events` itself, with a `traceparent` header: the
    renderer and the dispatcher continue its trace."""
    base = receiver.url.rsplit("/", 1)[0]
    pipeline.call(
        "POST",
        "/webhooks",
        {
            "webhook": {
                "name": "engine",
                "vendor": "generic_post",
                "url": f"{base}/engine",
                "events": ["recipient.updated"],
            }
        },
    )
    event = {
        "id": str(uuid.uuid4()),
        "type": "recipient.updated",
        "version": "2023-10-15",
        "created_at": "2023-10-15T19:19:08+00:00",
        "data": (
            "hookline.events.ResourceChange",
            {"current_resource": json.dumps({"id": "r-1"}), "previous_resource": None},
        ),
    }
    engine_trace, engine_span = os.urandom(16).hex(), os.urandom(8).hex()
    producer = Producer({"bootstrap.servers": brokers()})
    producer.produce(
        f"{pipeline.prefix}events",
        key=b"r-1",
        value=single_object(load("event.v1.avsc"), event),
        headers=[("traceparent", f"00-{engine_trace}-{engine_span}-01".encode())],
    )
    assert producer.flush(30) == 0
    deadline = time.time() + 60

    def in_trace(kind: str) -> list[dict]:
        return [s for s in collector.spans if s["trace"] == engine_trace and s["kind"] == kind]

    # Each service exports its spans in its own batches: the dispatcher's attempt can
    # arrive before the renderer's span it is parented in.
    while time.time() < deadline and not (in_trace("client") and in_trace("consumer")):
        time.sleep(0.1)
    (process,) = in_trace("consumer")
    assert process["parent"] == engine_span, "the engine's record continues its trace"
    (attempt,) = in_trace("client")
    assert attempt["attributes"]["url.full"].endswith("/engine")
