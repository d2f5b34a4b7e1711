"""Where an event's latency goes, hop by hop, for one run of ops/bench/pipeline that
kept its topics (--keep-topics). Run through ops/bench/hops.

Joins, per event id, the load generator's POST start and 202 (sent.txt), the Kafka
CreateTime of the event in `events` and of its rendered delivery in
`rendered-deliveries` (librdkafka stamps a record when produce() is called), and the
first arrival at the receiver (arrivals.txt). Every clock is this machine's.

  t_event     the producer hands the event to librdkafka
  t_202       the load generator receives the 202
  t_rendered  the renderer hands the rendered delivery to librdkafka
  t_arrival   the receiver reads the request

Prints one JSON object: percentiles (ms) of each hop, and of 202 -> arrival.

With the run's spans kept (ops/bench/pipeline --spans), also splits each event by its
trace: the API's `POST /events` span, the renderer's `process events` and `send
rendered-deliveries` spans and the dispatcher's attempt span, to the microsecond, with
the mean of each part over the slowest 1% of events (what makes the p99).
"""

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from benchlib import percentile
from confluent_kafka import Consumer, TopicPartition


def spread(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {}
    out = {f"p{p}": round(percentile(values, p), 3) for p in (50, 90, 99)}
    out["max"] = round(values[-1], 3)
    return out


def stamps(brokers: str, topic: str, pattern: re.Pattern) -> dict[str, int]:
    """The first CreateTime (ms) of every event id found in the topic's records."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "hookline-bench-hops",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        left, found = set(partitions), {}
        while left:
            msg = consumer.poll(5)
            if msg is None:
                raise RuntimeError(f"{topic}: no record for 5 s before the end")
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    left.discard(msg.partition())
                    continue
                raise RuntimeError(f"{topic}: {msg.error()}")
            match = pattern.search(msg.value() or b"")
            if match:
                found.setdefault(match.group().decode(), msg.timestamp()[1])
        return found
    finally:
        consumer.close()


# Each part of an event's latency by its spans: (name, from, to), as (span, "start" or
# "end"), or "arrival" for the receiver's stamp.
SPAN_PARTS = [
    (
        "POST /events span (checked, written, acknowledged)",
        ("POST /events", "start"),
        ("POST /events", "end"),
    ),
    (
        "acknowledged -> renderer starts the event",
        ("POST /events", "end"),
        ("process events", "start"),
    ),
    (
        "renderer starts -> writes the delivery",
        ("process events", "start"),
        ("send rendered-deliveries", "start"),
    ),
    (
        "delivery written -> acknowledged",
        ("send rendered-deliveries", "start"),
        ("send rendered-deliveries", "end"),
    ),
    (
        "acknowledged -> dispatcher's attempt starts",
        ("send rendered-deliveries", "end"),
        ("POST", "start"),
    ),
    ("attempt starts -> arrival", ("POST", "start"), "arrival"),
]


def span_parts(folder: Path, accepted: dict[str, float], arrival: dict[str, float]) -> dict:
    """Each part of every event's latency (ms) by its trace's spans, kept by the
    pipeline's OTLP sink (--spans); the attempt span is named after its method."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    traces: dict[bytes, dict] = defaultdict(dict)
    for export in sorted(folder.glob("*.pb")):
        request = ExportTraceServiceRequest.FromString(export.read_bytes())
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    traces[span.trace_id].setdefault(span.name, span)
    events = []
    for spans in traces.values():
        send = spans.get("send rendered-deliveries")
        if send is None or any(n not in spans for n in ("POST /events", "process events", "POST")):
            continue
        attributes = {a.key: a.value.string_value for a in send.attributes}
        event = attributes.get("hookline.event.id")
        if event not in accepted or event not in arrival:
            continue

        def at(point, spans=spans, event=event) -> float:
            if point == "arrival":
                return arrival[event]
            span = spans[point[0]]
            return (
                span.start_time_unix_nano if point[1] == "start" else span.end_time_unix_nano
            ) / 1e6

        parts = {name: at(to) - at(start) for name, start, to in SPAN_PARTS}
        parts["202 -> arrival"] = arrival[event] - accepted[event]
        events.append(parts)
    events.sort(key=lambda parts: parts["202 -> arrival"])
    slowest = events[-max(1, len(events) // 100) :] if events else []
    names = [name for name, _, _ in SPAN_PARTS] + ["202 -> arrival"]
    return {
        "events": len(events),
        "parts": {n: spread([e[n] for e in events]) for n in names},
        "slowest 1%, mean": {
            n: round(sum(e[n] for e in slowest) / len(slowest), 3) for n in names if slowest
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="the run's folder (<target>/bench/bench-d-<id>)")
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    args = parser.parse_args()
    prefix = args.run.name + "-"
    pattern = re.compile(re.escape(f"{prefix}ev").encode() + rb"[-0-9]+")
    sent = {}
    for line in (args.run / "sent.txt").read_text().splitlines():
        i, start, accepted = line.split(" ")
        sent[i] = (int(start) / 1e6, int(accepted) / 1e6)
    arrival: dict[str, float] = {}
    for line in (args.run / "arrivals.txt").read_text().splitlines():
        _, i, at = line.split(" ")
        arrival.setdefault(i, int(at) / 1e6)
    event = stamps(args.brokers, f"{prefix}events", pattern)
    rendered = stamps(args.brokers, f"{prefix}rendered-deliveries", pattern)
    hops: dict[str, list[float]] = {
        "202 -> arrival": [],
        "event produced -> 202": [],
        "event produced -> rendered produced": [],
        "rendered produced -> arrival": [],
    }
    for i, (_, accepted) in sent.items():
        if i not in arrival or i not in event or i not in rendered:
            continue
        hops["202 -> arrival"].append(arrival[i] - accepted)
        hops["event produced -> 202"].append(accepted - event[i])
        hops["event produced -> rendered produced"].append(rendered[i] - event[i])
        hops["rendered produced -> arrival"].append(arrival[i] - rendered[i])
    out = {"run": args.run.name, "events": len(hops["202 -> arrival"])}
    out.update({name: spread(values) for name, values in hops.items()})
    if (args.run / "spans").is_dir():
        accepted = {i: at for i, (_, at) in sent.items()}
        out["spans"] = span_parts(args.run / "spans", accepted, arrival)
    print(json.dumps(out))
    return 0 if out["events"] else 1


if __name__ == "__main__":
    sys.exit(main())
