"""The pipeline benchmark: a fresh hookline stack per run on its own topic prefix, a load
generator and a receiver that are not the limit (ops/bench/hlbench, Go), every event
counted at the receiver (lost, duplicates), CPU and peak RSS per process, one JSON line
per run and a table at the end. Run through ops/bench/pipeline, which builds first.

Scenarios (issue 11; each can be changed with the flags below):
  A  one endpoint, standard_webhooks, 30,000 events as fast as they are accepted
  B  as A, but the renderer and dispatcher start after all events were written (a backlog)
  C  10 endpoints per event, 5,000 events
  D  200 events/s for 30 s: 202 received -> arrival latency
  E  as A with prequel_rsa signing
  F  a backlog of 200 events of 3 MiB each (written to Kafka), 2 endpoints: peak RSS
"""

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchlib import (
    ROOT,
    Run,
    arguments,
    cpu_seconds,
    free_port,
    http,
    machine_busy,
    port_written,
    run_all,
    scenarios,
    wait_until,
)

OFFERED = "A,B,C,D,E,F"


class Broker:
    """The local broker: reused when one answers, else started (and stopped at the end)."""

    def __init__(self) -> None:
        port = os.environ.get("HOOKLINE_KAFKA_PORT", "9092")
        self.brokers = os.environ.get("HOOKLINE_KAFKA_BROKERS") or f"127.0.0.1:{port}"
        self.started = False
        self.pid = None
        if not os.environ.get("HOOKLINE_KAFKA_BROKERS"):
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
            except OSError:
                subprocess.run([ROOT / "ops/kafka/broker", "start"], check=True)
                self.started = True
            status = subprocess.run(
                [ROOT / "ops/kafka/broker", "status"], capture_output=True, text=True
            ).stdout
            if "(pid " in status:
                self.pid = int(status.split("(pid ")[1].split(",")[0])

    def stop(self) -> None:
        if self.started:
            subprocess.run([ROOT / "ops/kafka/broker", "stop"], check=False)


class KafkaRun(Run):
    """A system of processes on the local broker, on a fresh topic prefix: the load, the
    wait for arrivals, perf profiles of the `critical` processes, topics deleted after."""

    def __init__(
        self, args, name: str, spec: dict, number: int, broker: Broker, system: str
    ) -> None:
        prefix = f"{system}-{name.lower()}-{uuid.uuid4().hex[:8]}-"
        super().__init__(
            args, name, spec, number, prefix, args.bin_dir.parent / "bench" / prefix.rstrip("-")
        )
        self.broker = broker
        self.perfs: dict[str, subprocess.Popen] = {}

    def start_consumers(self) -> list[str]:
        """Starts what reads a backlog written before (scenario B); returns their names."""
        raise NotImplementedError

    def extra_cpu(self) -> dict[str, float]:
        return {"broker": cpu_seconds(self.broker.pid)} if self.broker.pid else {}

    def execute(self) -> dict:
        self.setup()
        self.profile(list(self.critical))
        window = {"cpu0": self.cpu(), "busy0": machine_busy()}
        load = self.load()
        if self.spec.get("backlog"):
            # The drain is measured from the moment its consumers start.
            window.update(cpu0=self.cpu(), busy0=machine_busy(), start_ns=time.time_ns())
            self.profile(self.start_consumers())
        self.wait_for(load["accepted"] * self.spec["endpoints"], stall=self.args.stall)
        window.update(cpu1=self.cpu(), busy1=machine_busy())
        self.stop_profiles()
        arrivals = self.collect()
        # A service under callgrind writes its counts as it exits, slowly.
        slow = {name: 120 for name in getattr(self.args, "callgrind", [])}
        window["peaks"] = self.stop_all(grace=slow)
        return self.summarise(load, arrivals, window)

    def profile(self, names: list[str]) -> None:
        """With --perf: samples the services' stacks (perf record) while measuring."""
        if not self.args.perf:
            return
        for name in names:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None or name in self.perfs:
                continue
            out = self.dir / f"{name}.perf.data"
            argv = ["perf", "record", "-F", "499", "-g", "-p", str(proc.pid), "-o", str(out)]
            self.perfs[name] = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

    def stop_profiles(self) -> None:
        """Ends perf and writes each service's hottest symbols to NAME.perf.txt."""
        for name, perf in self.perfs.items():
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
            data = str(self.dir / f"{name}.perf.data")
            report = subprocess.run(
                ["perf", "report", "--stdio", "--no-children", "-g", "none", "-i", data],
                capture_output=True,
                text=True,
            )
            (self.dir / f"{name}.perf.txt").write_text(report.stdout)
        self.perfs = {}

    def cleanup(self) -> None:
        self.stop_all()
        if not self.args.keep_topics:
            argv = [self.args.hlbench, "topics-delete", "-brokers", self.broker.brokers]
            subprocess.run([*argv, "-prefix", self.prefix], check=False)


class HooklineRun(KafkaRun):
    """hookline's three services on a fresh topic prefix, the webhooks on the receiver."""

    critical = ("producer", "renderer", "dispatcher")

    def __init__(self, args, name: str, spec: dict, number: int, broker: Broker) -> None:
        super().__init__(args, name, spec, number, broker, "bench")
        self.token = uuid.uuid4().hex

        api_port = free_port()
        self.api = f"http://127.0.0.1:{api_port}"
        self.env.update(
            {
                "HOOKLINE_KAFKA_BROKERS": broker.brokers,
                "HOOKLINE_TOPIC_PREFIX": self.prefix,
                "HOOKLINE_API_ADDR": f"127.0.0.1:{api_port}",
                "HOOKLINE_API_TOKEN": self.token,
                "HOOKLINE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
                "HOOKLINE_ALLOWED_NETWORKS": "127.0.0.0/8",
                "HOOKLINE_INSTANCE_ID": f"{self.prefix}renderer",
            }
        )

    def start_service(self, name: str) -> None:
        argv = [self.args.bin_dir / f"hookline-{name}"]
        if name in self.args.callgrind:
            # Instructions counted per function (valgrind, repeatable on a noisy
            # machine); written when the service exits. Slow: use a small --n.
            out = self.dir / f"{name}.callgrind.out"
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
        self.start(name, argv)

    def start_consumers(self) -> list[str]:
        self.start_service("renderer")
        self.start_service("dispatcher")
        return ["renderer", "dispatcher"]

    def result_fields(self) -> dict:
        fields = {"ingest": "kafka" if self.spec.get("log_bytes") else self.args.ingest}
        if self.args.otlp or self.args.spans:
            fields["traces"] = "otlp"
        if self.args.batch > 1:
            fields["batch"] = self.args.batch
        if self.args.black_holes:
            fields["black_holes"] = self.args.black_holes
        return fields

    def setup(self) -> None:
        self.start_receiver()
        if self.args.otlp or self.args.spans:
            # Every span exported (100% sampling) to a sink that answers 200 at once;
            # with --spans one that also keeps them, for ops/bench/hops.
            port_file = self.dir / "otlp.port"
            if self.args.spans:
                sink = Path(__file__).with_name("otlp_sink.py")
                self.start("otlp", [sys.executable, sink, self.dir / "spans", port_file])
            else:
                self.start("otlp", [self.args.hlbench, "receive", "-port-file", port_file])
            otlp_port = port_written("the OTLP sink", port_file, self.procs["otlp"], 10)
            self.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
            self.env["OTEL_TRACES_SAMPLER"] = "always_on"
        self.start_service("producer")
        wait_until(
            "the producer",
            lambda: http("GET", f"{self.api}/health"),
            self.procs["producer"],
            60,
            self.dir / "producer.log",
        )
        for i in range(self.spec["endpoints"]):
            webhook = {
                "name": f"bench {i}",
                "vendor": "generic_post",
                "url": f"{self.receiver}/ok/{i}",
                "events": ["transfer.error"],
                "signing_scheme": self.spec["scheme"],
            }
            http("POST", f"{self.api}/webhooks", self.token, {"webhook": webhook})
        # Black holes beside them: the receiver holds these requests unanswered; only
        # the healthy endpoints' deliveries are counted.
        for i in range(self.args.black_holes):
            webhook = {
                "name": f"black hole {i}",
                "vendor": "generic_post",
                "url": f"{self.receiver}/hang/{i}",
                "events": ["transfer.error"],
                "timeout_ms": 10000,
            }
            http("POST", f"{self.api}/webhooks", self.token, {"webhook": webhook})
        if not self.spec.get("backlog"):
            self.start_service("renderer")
            self.start_service("dispatcher")
            self.warm_up()

    def send_one(self, event: dict) -> None:
        http("POST", f"{self.api}/events", self.token, event)

    def load_argv(self) -> list:
        # Events over the API's body limit go to Kafka, as an engine would write them.
        log_bytes = self.spec.get("log_bytes")
        if self.args.ingest == "kafka" or log_bytes:
            argv = [self.args.hlbench, "write", "-brokers", self.broker.brokers]
            if log_bytes:
                argv += ["-log-bytes", log_bytes]
            return [
                *argv,
                "-topic",
                f"{self.prefix}events",
                "-schema",
                ROOT / "schemas/event.v1.avsc",
            ]
        argv = [self.args.hlbench, "load", "-url", self.api, "-token", self.token]
        return [*argv, "-c", self.args.concurrency, "-batch", self.args.batch]


def main() -> int:
    parser = arguments(__doc__, OFFERED)
    parser.add_argument("--scheme", help="signing scheme of the webhooks")
    parser.add_argument(
        "--ingest",
        choices=["http", "kafka"],
        default="http",
        help="POST /events, or Avro straight to the events topic (the engine's path)",
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="events per POST /events (a JSON array when > 1)"
    )
    parser.add_argument("--keep-topics", action="store_true", help="leave the run's topics")
    parser.add_argument(
        "--black-holes",
        type=int,
        default=0,
        help="also this many webhooks whose requests are never answered (10 s timeout)",
    )
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="export every trace span (100%% sampling) to a local OTLP sink",
    )
    parser.add_argument(
        "--spans",
        action="store_true",
        help="as --otlp, and keep every span in the run's folder (spans/) for ops/bench/hops",
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="profile the services with perf record; NAME.perf.txt in the run's folder",
    )
    parser.add_argument(
        "--callgrind",
        type=lambda v: [n for n in v.split(",") if n],
        default=[],
        metavar="SERVICES",
        help="run these services (comma-separated) under callgrind; NAME.callgrind.out in the "
        "run's folder (slow: a small --n, and B so the setup is not counted as load)",
    )
    parser.add_argument("--bin-dir", type=Path, required=True, help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.callgrind) - set(HooklineRun.critical)
    if unknown:
        parser.error(f"--callgrind: no service {', '.join(sorted(unknown))}")
    if args.callgrind and not shutil.which("valgrind"):
        parser.error("--callgrind needs valgrind (Debian: apt-get install valgrind)")
    specs = scenarios(parser, args, OFFERED, ("n", "rate", "duration", "endpoints", "scheme"))
    broker = Broker()
    try:
        return run_all(args, specs, lambda n, s, k: HooklineRun(args, n, s, k, broker))
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
