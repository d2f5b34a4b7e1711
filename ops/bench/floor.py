"""The floor of hookline's architecture on this machine: ops/bench/hlfloor's three
processes (ingest, relay, send) carry every event along hookline's path with hookline's
Kafka settings and nothing else, through the load generator and receiver of
ops/bench/pipeline, counted the same way. Run through ops/bench/floor, which builds first.

Scenarios (those of pipeline.py that only move events; each can be changed with the flags):
  A  one endpoint, 30,000 events as fast as they are accepted
  C  10 endpoints per event, 5,000 events
  D  200 events/s for 30 s: 202 received -> arrival latency
"""

import argparse
import sys
from pathlib import Path

from benchlib import arguments, http, port_written, run_all, scenarios
from pipeline import Broker, KafkaRun

OFFERED = "A,C,D"


class FloorRun(KafkaRun):
    """hlfloor's three processes on a fresh topic prefix."""

    critical = ("ingest", "relay", "send")

    def __init__(self, args, name: str, spec: dict, number: int, broker: Broker) -> None:
        super().__init__(args, name, spec, number, broker, "floor")

    def role(self, name: str, *extra) -> None:
        base = [self.args.bin_dir / "hlfloor", "--brokers", self.broker.brokers]
        base += ["--prefix", self.prefix, "--profile", self.args.profile]
        self.start(name, [*base, name, *extra])

    def result_fields(self) -> dict:
        return {"system": "floor", "profile": self.args.profile}

    def setup(self) -> None:
        self.start_receiver()
        port_file = self.dir / "ingest.port"
        self.role("ingest", "--port-file", port_file)
        port = port_written("ingest", port_file, self.procs["ingest"], 60)
        self.api = f"http://127.0.0.1:{port}"
        endpoints = str(self.spec["endpoints"])
        self.role("relay", "--endpoints", endpoints)
        self.role("send", "--url", self.receiver, "--endpoints", endpoints)
        self.warm_up()

    def send_one(self, event: dict) -> None:
        http("POST", f"{self.api}/events", None, event)

    def load_argv(self) -> list:
        argv = [self.args.hlbench, "load", "-url", self.api, "-token", "none"]
        return [*argv, "-c", self.args.concurrency]


def main() -> int:
    parser = arguments(__doc__, OFFERED)
    parser.add_argument(
        "--profile",
        choices=["balanced", "latency", "throughput"],
        default="balanced",
        help="hookline's Kafka profile (HOOKLINE_KAFKA_PROFILE)",
    )
    parser.add_argument("--keep-topics", action="store_true", help="leave the run's topics")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="profile the three processes with perf record; NAME.perf.txt in the run's folder",
    )
    parser.add_argument("--bin-dir", type=Path, required=True, help=argparse.SUPPRESS)
    args = parser.parse_args()
    specs = scenarios(parser, args, OFFERED, ("n", "rate", "duration", "endpoints"))
    broker = Broker()
    try:
        return run_all(args, specs, lambda n, s, k: FloorRun(args, n, s, k, broker))
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
