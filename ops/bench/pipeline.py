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
"""

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCENARIOS = {
    "A": {"n": 30000, "endpoints": 1, "scheme": "standard_webhooks", "backlog": False},
    "B": {"n": 30000, "endpoints": 1, "scheme": "standard_webhooks", "backlog": True},
    "C": {"n": 5000, "endpoints": 10, "scheme": "standard_webhooks", "backlog": False},
    "D": {"rate": 200, "duration": 30, "endpoints": 1, "scheme": "standard_webhooks"},
    "E": {"n": 30000, "endpoints": 1, "scheme": "prequel_rsa", "backlog": False},
}
SERVICES = ("producer", "renderer", "dispatcher")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def http(method: str, url: str, token: str | None = None, body: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


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


class Run:
    """One run of one scenario: its stack, its load and what arrived."""

    def __init__(self, args, name: str, spec: dict, number: int, broker: Broker) -> None:
        self.args, self.name, self.spec, self.number, self.broker = args, name, spec, number, broker
        self.prefix = f"bench-{name.lower()}-{uuid.uuid4().hex[:8]}-"
        self.dir = args.bin_dir.parent / "bench" / self.prefix.rstrip("-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ)
        self.env.update(
            {
                "HOOKLINE_KAFKA_BROKERS": broker.brokers,
                "HOOKLINE_TOPIC_PREFIX": self.prefix,
                "HOOKLINE_API_ADDR": f"127.0.0.1:{self.api_port}",
                "HOOKLINE_API_TOKEN": self.token,
                "HOOKLINE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
                "HOOKLINE_ALLOWED_NETWORKS": "127.0.0.0/8",
                "HOOKLINE_INSTANCE_ID": f"{self.prefix}renderer",
                "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
            }
        )

    # ---------------------------------------------------------------- processes

    def start(self, name: str, argv: list) -> subprocess.Popen:
        # The child keeps its own copy of the descriptor; ours closes with the object.
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen([str(a) for a in argv], env=self.env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def start_service(self, name: str) -> None:
        self.start(name, [self.args.bin_dir / f"hookline-{name}"])

    def stop_all(self) -> dict:
        peaks = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                peaks[name] = round(peak_rss_mb(proc.pid), 1)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return peaks

    def measured(self) -> dict[str, int]:
        pids = {n: p.pid for n, p in self.procs.items() if p.poll() is None}
        if self.broker.pid:
            pids["broker"] = self.broker.pid
        return pids

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.measured().items()}

    # ---------------------------------------------------------------- the run

    def setup(self) -> None:
        port_file = self.dir / "receiver.port"
        self.start("receiver", [self.args.hlbench, "receive", "-port-file", port_file])
        deadline = time.time() + 10
        while not port_file.exists():
            if time.time() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.05)
        self.receiver = f"http://127.0.0.1:{port_file.read_text()}"
        self.start_service("producer")
        deadline = time.time() + 60
        while True:
            try:
                http("GET", f"{self.api}/health")
                break
            except OSError:
                if time.time() > deadline or self.procs["producer"].poll() is not None:
                    raise RuntimeError(f"the producer did not start: see {self.dir}") from None
                time.sleep(0.1)
        for i in range(self.spec["endpoints"]):
            webhook = {
                "name": f"bench {i}",
                "vendor": "generic_post",
                "url": f"{self.receiver}/ok/{i}",
                "events": ["transfer.error"],
                "signing_scheme": self.spec["scheme"],
            }
            http("POST", f"{self.api}/webhooks", self.token, {"webhook": webhook})
        if not self.spec.get("backlog"):
            self.start_service("renderer")
            self.start_service("dispatcher")
            self.warm_up()

    def warm_up(self) -> None:
        """One event through the whole pipeline before measuring, then a clean receiver."""
        http("POST", f"{self.api}/events", self.token, sample_event(f"{self.prefix}warm-up"))
        self.wait_for(self.spec["endpoints"], stall=120)
        http("POST", f"{self.receiver}/_reset")

    def wait_for(self, expected: int, stall: float) -> dict:
        """Polls the receiver until `expected` distinct deliveries arrived or none came
        for `stall` seconds."""
        last, progress_at = -1, time.time()
        while True:
            stats = http("GET", f"{self.receiver}/_stats")
            if stats["distinct"] >= expected:
                return stats
            if stats["distinct"] != last:
                last, progress_at = stats["distinct"], time.time()
            elif time.time() - progress_at > stall:
                return stats
            for name in SERVICES:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}): see {self.dir}")
            time.sleep(0.05)

    def load(self) -> dict:
        spec, args = self.spec, self.args
        n = spec.get("n") or int(spec["rate"] * spec["duration"])
        sent = self.dir / "sent.txt"
        common = ["-n", n, "-id-prefix", f"{self.prefix}ev", "-out", sent]
        if spec.get("rate"):
            common += ["-rate", spec["rate"]]
        if args.ingest == "kafka":
            argv = [args.hlbench, "write", "-brokers", self.broker.brokers]
            argv += ["-topic", f"{self.prefix}events", "-schema", ROOT / "schemas/event.v1.avsc"]
        else:
            argv = [args.hlbench, "load", "-url", self.api, "-token", self.token]
            argv += ["-c", args.concurrency]
        proc = subprocess.Popen([str(a) for a in argv + common], stdout=subprocess.PIPE)
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the load generator failed ({proc.returncode})")
        return json.loads(out)

    def execute(self) -> dict:
        self.setup()
        self.profile(["producer", "renderer", "dispatcher"])
        window = {"cpu0": self.cpu(), "busy0": machine_busy(), "start_ns": None}
        children0 = os.times()
        load = self.load()
        children1 = os.times()
        window["loadgen_cpu"] = (children1.children_user - children0.children_user) + (
            children1.children_system - children0.children_system
        )
        if self.spec.get("backlog"):
            # The drain is measured from the moment the renderer and dispatcher start.
            window.update(cpu0=self.cpu(), busy0=machine_busy(), start_ns=time.time_ns())
            self.start_service("renderer")
            self.start_service("dispatcher")
            self.profile(["renderer", "dispatcher"])
        self.wait_for(load["accepted"] * self.spec["endpoints"], stall=self.args.stall)
        window.update(cpu1=self.cpu(), busy1=machine_busy())
        self.stop_profiles()
        arrivals = self.collect()
        window["peaks"] = self.stop_all()
        return self.summarise(load, arrivals, window)

    def profile(self, names: list[str]) -> None:
        """With --perf: samples the services' stacks (perf record) while measuring."""
        if not self.args.perf:
            return
        self.perfs = getattr(self, "perfs", {})
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
        for name, perf in getattr(self, "perfs", {}).items():
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

    def collect(self) -> list[tuple[str, str, int]]:
        with urllib.request.urlopen(f"{self.receiver}/_dump", timeout=60) as resp:
            text = resp.read().decode()
        (self.dir / "arrivals.txt").write_text(text)
        lines = text.splitlines()
        return [(p, i, int(t)) for p, i, t in (line.split(" ") for line in lines)]

    def summarise(self, load: dict, arrivals: list, window: dict) -> dict:
        cpu0, cpu1, busy0, busy1 = (window[k] for k in ("cpu0", "cpu1", "busy0", "busy1"))
        sent = {}
        for line in (self.dir / "sent.txt").read_text().splitlines():
            i, start, accepted = line.split(" ")
            sent[i] = (int(start), int(accepted))
        first: dict[tuple[str, str], int] = {}
        for path, i, at in arrivals:
            if i in sent and (path, i) not in first:
                first[(path, i)] = at
        expected = len(sent) * self.spec["endpoints"]
        delivered = len(first)
        begin = window["start_ns"] or min(s for s, _ in sent.values())
        end = max(first.values()) if first else begin
        seconds = max(1e-9, (end - begin) / 1e9)
        latencies = sorted((at - sent[i][1]) / 1e6 for (_, i), at in first.items())
        cpu = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
        cpu["loadgen"] = window["loadgen_cpu"]
        busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        result = {
            "scenario": self.name,
            "run": self.number,
            "ingest": self.args.ingest,
            "events": len(sent),
            "endpoints": self.spec["endpoints"],
            "scheme": self.spec["scheme"],
            "deliveries": delivered,
            "lost": expected - delivered,
            "duplicates": len(arrivals) - len(set((p, i) for p, i, _ in arrivals)),
            "seconds": round(seconds, 3),
            "deliveries_per_s": round(delivered / seconds, 1),
            "events_per_s": round(delivered / self.spec["endpoints"] / seconds, 1),
            "ingest_per_s": round(load.get("accepted_per_s", 0), 1),
            "latency_ms": {
                "p50": round(percentile(latencies, 50), 2),
                "p99": round(percentile(latencies, 99), 2),
                "max": round(latencies[-1], 2) if latencies else None,
            },
            "cpu_ms_per_event": {
                k: round(v * 1000 / max(1, len(sent)), 3) for k, v in sorted(cpu.items())
            },
            "machine_busy": round(busy, 3),
            "peak_rss_mb": window["peaks"],
            "prefix": self.prefix,
        }
        if self.spec.get("rate"):
            result["rate"] = self.spec["rate"]
        return result

    def cleanup(self) -> None:
        self.stop_all()
        if not self.args.keep_topics:
            subprocess.run(
                [
                    self.args.hlbench,
                    "topics-delete",
                    "-brokers",
                    self.broker.brokers,
                    "-prefix",
                    self.prefix,
                ],
                check=False,
            )


def sample_event(event_id: str) -> dict:
    event = json.loads((ROOT / "ops/demo/transfer-error.json").read_text())
    event["id"] = event_id
    return event


def table(results: list[dict]) -> str:
    head = (
        f"{'run':<6}{'events':>8}{'eps':>5}{'deliv/s':>10}{'events/s':>10}{'lost':>6}"
        f"{'dup':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'busy':>6}  cpu ms/event"
    )
    lines = [head]
    for r in results:
        lat = r["latency_ms"]
        cpu = " ".join(f"{k}={v}" for k, v in r["cpu_ms_per_event"].items())
        lines.append(
            f"{r['scenario'] + str(r['run']):<6}{r['events']:>8}{r['endpoints']:>5}"
            f"{r['deliveries_per_s']:>10}{r['events_per_s']:>10}{r['lost']:>6}"
            f"{r['duplicates']:>6}{lat['p50']:>9}{lat['p99']:>9}{lat['max']:>9}"
            f"{r['machine_busy']:>6.0%}  {cpu}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scenario", default="A,B,C,D,E", help="comma-separated, e.g. A,C")
    parser.add_argument("--runs", type=int, default=1, help="runs of each scenario")
    parser.add_argument("--n", type=int, help="events (overrides the scenario's)")
    parser.add_argument("--rate", type=float, help="events per second (D; or any)")
    parser.add_argument("--duration", type=float, help="seconds at --rate")
    parser.add_argument("--endpoints", type=int, help="webhooks per event")
    parser.add_argument("--scheme", help="signing scheme of the webhooks")
    parser.add_argument("--concurrency", type=int, default=64, help="load connections")
    parser.add_argument(
        "--ingest",
        choices=["http", "kafka"],
        default="http",
        help="POST /events, or Avro straight to the events topic (the engine's path)",
    )
    parser.add_argument("--stall", type=float, default=60, help="give up after s without progress")
    parser.add_argument("--json", type=Path, help="append each run's JSON line to this file")
    parser.add_argument("--keep-topics", action="store_true", help="leave the run's topics")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="profile the services with perf record; NAME.perf.txt in the run's folder",
    )
    parser.add_argument("--bin-dir", type=Path, required=True, help=argparse.SUPPRESS)
    parser.add_argument("--hlbench", type=Path, required=True, help=argparse.SUPPRESS)
    args = parser.parse_args()

    broker = Broker()
    results = []
    try:
        for name in [s.strip().upper() for s in args.scenario.split(",") if s.strip()]:
            if name not in SCENARIOS:
                parser.error(f"unknown scenario {name!r} (A to E)")
            spec = dict(SCENARIOS[name])
            for key in ("n", "rate", "duration", "endpoints", "scheme"):
                if getattr(args, key) is not None:
                    spec[key] = getattr(args, key)
            if spec.get("rate") and not spec.get("duration") and not spec.get("n"):
                parser.error("--rate needs --duration or --n")
            if spec.get("rate") and spec.get("duration"):
                spec.pop("n", None)
            for number in range(1, args.runs + 1):
                run = Run(args, name, spec, number, broker)
                try:
                    result = run.execute()
                finally:
                    run.cleanup()
                results.append(result)
                line = json.dumps(result)
                print(line, flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(line + "\n")
    finally:
        broker.stop()
    print(table(results))
    return 1 if any(r["lost"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
