"""What this machine allows without hookline: the ceilings the pipeline benchmark is read
against (docs/BENCHMARKS.md, "The limits of this machine"). Run through ops/bench/limits,
which builds the Go tools and fetches Kafka's jars first.

  receiver  the load generator posting straight to the receiver (no hookline): the most
            requests per second the two tools manage together on this machine
  broker    Kafka's own perf tools against the local broker, with hookline's producer
            settings (acks=all, idempotent, lz4, linger 1 ms) and records of an event's
            size: records per second written, then read, and the broker's CPU per record
  hop       one Kafka hop as hookline's clients make it (librdkafka, through Python's
            confluent-kafka): a record produced every 5 ms (200/s, as scenario D), the
            time until its acknowledgement and until a consumer has it, with Nagle's
            algorithm on (librdkafka's default) and off, at linger.ms 0 and 1

One JSON line per measurement, with CPU milliseconds per event or record by process.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import cpu_seconds, http, machine_busy, percentile
from pipeline import Broker

# A transfer.error event as the load generator sends it is about 420 bytes of JSON; its
# Avro record on `events` about 300, a rendered delivery about 900.
RECORD_SIZE = 600


def receiver_alone(hlbench: Path, n: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        receiver = subprocess.Popen(
            [hlbench, "receive", "-port-file", port_file], stdout=subprocess.DEVNULL
        )
        try:
            deadline = time.time() + 10
            while not port_file.exists():
                if time.time() > deadline:
                    raise RuntimeError("the receiver did not start")
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            argv = [hlbench, "load", "-direct", f"{url}/ok/alone", "-n", n, "-c", concurrency]
            cpu0, busy0, before = cpu_seconds(receiver.pid), machine_busy(), os.times()
            out = subprocess.run([str(a) for a in argv], capture_output=True, check=True)
            cpu1, busy1, after = cpu_seconds(receiver.pid), machine_busy(), os.times()
            load = json.loads(out.stdout)
            stats = http("GET", f"{url}/_stats")
        finally:
            receiver.terminate()
            receiver.wait()
    loadgen = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {
        "limit": "receiver",
        "requests": n,
        "concurrency": concurrency,
        "arrived": stats["distinct"],
        "requests_per_s": round(load["accepted_per_s"], 1),
        "cpu_ms_per_event": {
            "receiver": round((cpu1 - cpu0) * 1000 / n, 3),
            "loadgen": round(loadgen * 1000 / n, 3),
        },
        "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
    }


def kafka_tool(jars: Path, main: str, args: list) -> str:
    java = os.environ.get("JAVA", "java")
    argv = [java, "-Xmx512m", "-cp", f"{jars}/*", main, *[str(a) for a in args]]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def broker_alone(jars: Path, broker: Broker, n: int) -> list[dict]:
    topic = f"bench-limits-{uuid.uuid4().hex[:8]}"
    base = ["--bootstrap-server", broker.brokers]
    kafka_tool(
        jars,
        "org.apache.kafka.tools.TopicCommand",
        [*base, "--create", "--topic", topic, "--partitions", 6, "--replication-factor", 1],
    )
    results = []
    try:
        props = [
            f"bootstrap.servers={broker.brokers}",
            "acks=all",
            "enable.idempotence=true",
            "compression.type=lz4",
            "linger.ms=1",
        ]
        cpu0, busy0 = cpu_seconds(broker.pid), machine_busy()
        out = kafka_tool(
            jars,
            "org.apache.kafka.tools.ProducerPerformance",
            [
                *("--topic", topic, "--num-records", n, "--record-size", RECORD_SIZE),
                *("--throughput", -1, "--producer-props", *props),
            ],
        )
        cpu1, busy1 = cpu_seconds(broker.pid), machine_busy()
        # The last line: "N records sent, R records/sec (M MB/sec), A ms avg latency, ..."
        line = [x for x in out.splitlines() if "records sent" in x][-1]
        rate = float(re.search(r"([\d.]+) records/sec", line).group(1))
        latency = re.findall(r"([\d.]+) ms ([\w.]+)", line)
        results.append(
            {
                "limit": "broker-produce",
                "records": n,
                "record_bytes": RECORD_SIZE,
                "records_per_s": rate,
                "latency_ms": {name: float(v) for v, name in latency},
                "broker_cpu_ms_per_record": round((cpu1 - cpu0) * 1000 / n, 4),
                "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
            }
        )
        cpu0, busy0, start = cpu_seconds(broker.pid), machine_busy(), time.time()
        kafka_tool(
            jars,
            "org.apache.kafka.tools.ConsumerPerformance",
            [
                *base,
                *("--topic", topic, "--messages", n, "--timeout", 60000),
                *("--group", f"{topic}-read"),
            ],
        )
        elapsed = time.time() - start
        cpu1, busy1 = cpu_seconds(broker.pid), machine_busy()
        results.append(
            {
                "limit": "broker-consume",
                "records": n,
                "record_bytes": RECORD_SIZE,
                "records_per_s": round(n / elapsed, 1),
                "broker_cpu_ms_per_record": round((cpu1 - cpu0) * 1000 / n, 4),
                "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
            }
        )
    finally:
        kafka_tool(
            jars, "org.apache.kafka.tools.TopicCommand", [*base, "--delete", "--topic", topic]
        )
    return results


def hop_latency(jars: Path, broker: Broker, n: int) -> list[dict]:
    """One record at a time every 5 ms through a one-partition topic: produce -> ack and
    produce -> consumed, in ms, per librdkafka setting."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    results = []
    for nagle_off in ("false", "true"):
        for linger in ("1", "0"):
            topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
            base = ["--bootstrap-server", broker.brokers]
            create = ["--create", "--topic", topic, "--partitions", 1]
            kafka_tool(jars, "org.apache.kafka.tools.TopicCommand", [*base, *create])
            common = {"bootstrap.servers": broker.brokers, "socket.nagle.disable": nagle_off}
            producer = Producer(
                {**common, "acks": "all", "enable.idempotence": True, "linger.ms": linger}
            )
            consumer = Consumer(
                {
                    **common,
                    "group.id": topic,
                    "fetch.wait.max.ms": 100,
                    "fetch.min.bytes": 1,
                    "enable.auto.commit": False,
                }
            )
            consumer.assign([TopicPartition(topic, 0, 0)])
            acked, consumed, value = [], [], os.urandom(RECORD_SIZE)
            try:
                for i in range(n + 200):  # the first 200 warm the clients up
                    done: list[int] = []
                    start = time.perf_counter_ns()
                    producer.produce(
                        topic, value, key=str(i), on_delivery=lambda *_, d=done: d.append(1)
                    )
                    # Not flush(): it sends at once, whatever linger.ms says.
                    while not done and time.perf_counter_ns() - start < 10e9:
                        producer.poll(0.001)
                    ack = time.perf_counter_ns()
                    msg = consumer.poll(10)
                    if msg is None or msg.error():
                        raise RuntimeError(f"hop: record {i} not consumed: {msg and msg.error()}")
                    got = time.perf_counter_ns()
                    if i >= 200:
                        acked.append((ack - start) / 1e6)
                        consumed.append((got - start) / 1e6)
                    time.sleep(max(0.0, 0.005 - (got - start) / 1e9))
            finally:
                consumer.close()
                kafka_tool(
                    jars,
                    "org.apache.kafka.tools.TopicCommand",
                    [*base, "--delete", "--topic", topic],
                )
            line = {"limit": "broker-hop", "records": n, "record_bytes": RECORD_SIZE}
            line.update({"socket.nagle.disable": nagle_off == "true", "linger.ms": int(linger)})
            for name, values in (("ack_ms", acked), ("consumed_ms", consumed)):
                values.sort()
                line[name] = {f"p{p}": round(percentile(values, p), 3) for p in (50, 99)}
                line[name]["max"] = round(values[-1], 3)
            results.append(line)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["receiver", "broker", "hop"], help="one measurement")
    parser.add_argument("--n", type=int, default=30000, help="requests to the receiver")
    parser.add_argument("--concurrency", type=int, default=64, help="load connections")
    parser.add_argument("--records", type=int, default=300000, help="records through Kafka")
    parser.add_argument("--hops", type=int, default=3000, help="records for the hop latency")
    parser.add_argument("--json", type=Path, help="append the JSON lines to this file")
    parser.add_argument("--hlbench", type=Path, required=True, help=argparse.SUPPRESS)
    parser.add_argument("--jars", type=Path, required=True, help=argparse.SUPPRESS)
    args = parser.parse_args()
    lines = []
    if args.only in (None, "receiver"):
        lines.append(receiver_alone(args.hlbench, args.n, args.concurrency))
    if args.only in (None, "broker", "hop"):
        broker = Broker()
        try:
            if broker.pid is None:
                print("limits: the broker's pid is unknown (remote broker?)", file=sys.stderr)
                return 2
            if args.only in (None, "broker"):
                lines.extend(broker_alone(args.jars, broker, args.records))
            if args.only in (None, "hop"):
                lines.extend(hop_latency(args.jars, broker, args.hops))
        finally:
            broker.stop()
    for line in lines:
        text = json.dumps(line)
        print(text)
        if args.json:
            with args.json.open("a") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
