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
"""

import argparse
import json
import re
import sys
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
    print(json.dumps(out))
    return 0 if out["events"] else 1


if __name__ == "__main__":
    sys.exit(main())
