"""What the two benchmark drivers share (ops/bench/pipeline.py for hookline, svix.py for
svix-server): process accounting from /proc, the receiver and load generator
(ops/bench/hlbench), counting what arrived, the result line and the table, and the loop
over scenarios and runs. A system under test is a `Run` subclass that starts its stack
and says how its load is sent."""

import argparse
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The scenarios of issue 11; a driver offers those that apply to its system.
SCENARIOS = {
    "A": {"n": 30000, "endpoints": 1, "scheme": "standard_webhooks"},
    "B": {"n": 30000, "endpoints": 1, "scheme": "standard_webhooks", "backlog": True},
    "C": {"n": 5000, "endpoints": 10, "scheme": "standard_webhooks"},
    "D": {"rate": 200, "duration": 30, "endpoints": 1, "scheme": "standard_webhooks"},
    "E": {"n": 30000, "endpoints": 1, "scheme": "prequel_rsa"},
    # Issue 14: a backlog of large events (3 MiB of trace text each, written to Kafka as
    # an engine would; the rendered deliveries are about 4 MiB): peak RSS under a flood.
    "F": {
        "n": 200,
        "endpoints": 2,
        "scheme": "standard_webhooks",
        "backlog": True,
        "log_bytes": 3 * 1024 * 1024,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a running process, from /proc."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mb(pid: int, field: str, file: str = "status") -> float:
    """A `kB` line of /proc/PID/status (VmHWM: peak RSS) or smaps_rollup (Pss), in MiB."""
    with open(f"/proc/{pid}/{file}") as f:
        for line in f:
            if line.startswith(f"{field}:"):
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


def wait_until(what: str, ready, proc: subprocess.Popen | None, seconds: float, log: Path):
    """Calls ready() until it returns without OSError, within `seconds`."""
    deadline = time.time() + seconds
    while True:
        try:
            return ready()
        except OSError:
            if time.time() > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError(f"{what} did not start: see {log}") from None
            time.sleep(0.1)


def port_written(what: str, port_file: Path, proc: subprocess.Popen, seconds: float) -> str:
    """The port a process writes to `port_file` once it listens (its log: NAME.log)."""

    def port() -> str:
        text = port_file.read_text().strip()
        if not text:
            raise OSError("not written yet")
        return text

    return wait_until(what, port, proc, seconds, port_file.with_suffix(".log"))


def sample_event(event_id: str) -> dict:
    """ops/demo/transfer-error.json, its id also its transfer id (the receiver's key)."""
    event = json.loads((ROOT / "ops/demo/transfer-error.json").read_text())
    event["id"] = event_id
    event["data"]["error"]["transfer_id"] = event_id
    return event


class Run:
    """One run of one scenario: a stack started by the subclass (`setup`), the load,
    and what arrived at the receiver."""

    # The processes whose exit ends the run with an error.
    critical: tuple[str, ...] = ()

    def __init__(self, args, name: str, spec: dict, number: int, prefix: str, folder: Path):
        self.args, self.name, self.spec, self.number = args, name, spec, number
        self.prefix, self.dir = prefix, folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ)
        self.env["RUST_LOG"] = os.environ.get("RUST_LOG", "warn")

    # ---------------------------------------------------------------- for subclasses

    def setup(self) -> None:
        """Starts the stack and the receiver, and configures the endpoints."""
        raise NotImplementedError

    def load_argv(self) -> list:
        """hlbench's command for this system, without the counts and the output."""
        raise NotImplementedError

    def send_one(self, event: dict) -> None:
        """Sends one event through the system's API (the warm-up)."""
        raise NotImplementedError

    def extra_cpu(self) -> dict[str, float]:
        """CPU seconds of processes not started by `start` (a broker, a database)."""
        return {}

    def on_poll(self) -> None:
        """Called while waiting for arrivals (to sample memory, for instance)."""

    def result_fields(self) -> dict:
        """Fields this system adds to the result line."""
        return {}

    def cleanup(self) -> None:
        self.stop_all()

    # ---------------------------------------------------------------- processes

    def start(self, name: str, argv: list) -> subprocess.Popen:
        # The child keeps its own copy of the descriptor; ours closes with the object.
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [str(a) for a in argv], env=self.env, stdout=log, stderr=log, cwd=self.dir
        )
        self.procs[name] = proc
        return proc

    def start_receiver(self) -> None:
        port_file = self.dir / "receiver.port"
        self.start("receiver", [self.args.hlbench, "receive", "-port-file", port_file])
        deadline = time.time() + 10
        while not port_file.exists():
            if time.time() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.05)
        self.receiver = f"http://127.0.0.1:{port_file.read_text()}"

    def stop_all(self, grace: dict[str, float] | None = None) -> dict:
        """Stops every process, in the reverse order of their start; returns their peak
        RSS. `grace` gives a process less than 15 s after SIGTERM."""
        peaks = {}
        for name, proc in reversed(self.procs.items()):
            if proc.poll() is None:
                peaks[name] = round(status_mb(proc.pid, "VmHWM"), 1)
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=(grace or {}).get(name, 15))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return peaks

    def cpu(self) -> dict[str, float]:
        cpu = {n: cpu_seconds(p.pid) for n, p in self.procs.items() if p.poll() is None}
        cpu.update(self.extra_cpu())
        return cpu

    # ---------------------------------------------------------------- the run

    def warm_up(self) -> None:
        """One event through the whole pipeline before measuring, then a clean receiver."""
        self.send_one(sample_event(f"{self.prefix}warm-up"))
        stats = self.wait_for(self.spec["endpoints"], stall=120)
        if stats["distinct"] < self.spec["endpoints"]:
            raise RuntimeError(f"the warm-up event did not arrive: see {self.dir}")
        http("POST", f"{self.receiver}/_reset")

    def wait_for(self, expected: int, stall: float) -> dict:
        """Polls the receiver until `expected` distinct deliveries arrived or none came
        for `stall` seconds."""
        last, progress_at = -1, time.time()
        while True:
            self.on_poll()
            stats = http("GET", f"{self.receiver}/_stats")
            if stats["distinct"] >= expected:
                return stats
            if stats["distinct"] != last:
                last, progress_at = stats["distinct"], time.time()
            elif time.time() - progress_at > stall:
                return stats
            for name in self.critical:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}): see {self.dir}")
            time.sleep(0.05)

    def load(self) -> dict:
        """Runs the load generator; returns its summary, and its CPU in `self.load_cpu`."""
        spec = self.spec
        n = spec.get("n") or int(spec["rate"] * spec["duration"])
        argv = [*self.load_argv(), "-n", n, "-id-prefix", f"{self.prefix}ev"]
        argv += ["-out", self.dir / "sent.txt"]
        if spec.get("rate"):
            argv += ["-rate", spec["rate"]]
        before = os.times()
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE)
        out, _ = proc.communicate()
        after = os.times()
        if proc.returncode != 0:
            raise RuntimeError(f"the load generator failed ({proc.returncode})")
        self.load_cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        return json.loads(out)

    def collect(self) -> list[tuple[str, str, int]]:
        with urllib.request.urlopen(f"{self.receiver}/_dump", timeout=60) as resp:
            text = resp.read().decode()
        (self.dir / "arrivals.txt").write_text(text)
        return [(p, i, int(t)) for p, i, t in (line.split(" ") for line in text.splitlines())]

    def summarise(self, load: dict, arrivals: list, window: dict) -> dict:
        """The result line: `window` holds cpu0/cpu1, busy0/busy1, peaks and, when the
        measured interval starts later than the load, start_ns."""
        sent = {}
        for line in (self.dir / "sent.txt").read_text().splitlines():
            i, start, accepted = line.split(" ")
            sent[i] = (int(start), int(accepted))
        first: dict[tuple[str, str], int] = {}
        for path, i, at in arrivals:
            if i in sent and (path, i) not in first:
                first[(path, i)] = at
        endpoints = self.spec["endpoints"]
        delivered = len(first)
        begin = window.get("start_ns") or min(s for s, _ in sent.values())
        end = max(first.values()) if first else begin
        seconds = max(1e-9, (end - begin) / 1e9)
        latencies = sorted((at - sent[i][1]) / 1e6 for (_, i), at in first.items())
        cpu0, cpu1 = window["cpu0"], window["cpu1"]
        cpu = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
        cpu["loadgen"] = self.load_cpu
        busy0, busy1 = window["busy0"], window["busy1"]
        result = {
            "scenario": self.name,
            "run": self.number,
            **self.result_fields(),
            "events": len(sent),
            "endpoints": endpoints,
            "scheme": self.spec["scheme"],
            "deliveries": delivered,
            "lost": len(sent) * endpoints - delivered,
            "duplicates": len(arrivals) - len(set((p, i) for p, i, _ in arrivals)),
            "seconds": round(seconds, 3),
            "deliveries_per_s": round(delivered / seconds, 1),
            "events_per_s": round(delivered / endpoints / seconds, 1),
            "ingest_per_s": round(load.get("accepted_per_s", 0), 1),
            "latency_ms": {
                "p50": round(percentile(latencies, 50), 2),
                "p99": round(percentile(latencies, 99), 2),
                "max": round(latencies[-1], 2) if latencies else None,
            },
            "cpu_ms_per_event": {
                k: round(v * 1000 / max(1, len(sent)), 3) for k, v in sorted(cpu.items())
            },
            "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
            "peak_rss_mb": window["peaks"],
            "prefix": self.prefix,
        }
        if self.spec.get("rate"):
            result["rate"] = self.spec["rate"]
        return result


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
            f"{r['duplicates']:>6}{lat['p50']:>9}{lat['p99']:>9}{lat['max']!s:>9}"
            f"{r['machine_busy']:>6.0%}  {cpu}"
        )
    return "\n".join(lines)


def arguments(description: str, offered: str) -> argparse.ArgumentParser:
    """The flags both drivers take."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scenario", default=offered, help="comma-separated, e.g. A,C")
    parser.add_argument("--runs", type=int, default=1, help="runs of each scenario")
    parser.add_argument("--n", type=int, help="events (overrides the scenario's)")
    parser.add_argument("--rate", type=float, help="events per second (D; or any)")
    parser.add_argument("--duration", type=float, help="seconds at --rate")
    parser.add_argument("--endpoints", type=int, help="endpoints per event")
    parser.add_argument("--concurrency", type=int, default=64, help="load connections")
    parser.add_argument("--stall", type=float, default=60, help="give up after s without progress")
    parser.add_argument("--json", type=Path, help="append each run's JSON line to this file")
    parser.add_argument("--hlbench", type=Path, required=True, help=argparse.SUPPRESS)
    return parser


def scenarios(parser, args, offered: str, overrides: tuple[str, ...]) -> list[tuple[str, dict]]:
    """The scenarios asked for, with the flags' overrides applied."""
    specs = []
    for name in [s.strip().upper() for s in args.scenario.split(",") if s.strip()]:
        if name not in offered.split(","):
            parser.error(f"scenario {name!r} is not offered here (offered: {offered})")
        spec = dict(SCENARIOS[name])
        for key in overrides:
            if getattr(args, key, None) is not None:
                spec[key] = getattr(args, key)
        if spec.get("rate") and not spec.get("duration") and not spec.get("n"):
            parser.error("--rate needs --duration or --n")
        if spec.get("rate") and spec.get("duration"):
            spec.pop("n", None)
        specs.append((name, spec))
    return specs


def run_all(args, specs: list[tuple[str, dict]], make_run) -> int:
    """Runs every scenario `args.runs` times: a JSON line per run (also appended to
    --json), then the table; exit status 1 when an event was lost."""
    results = []
    for name, spec in specs:
        for number in range(1, args.runs + 1):
            run = make_run(name, spec, number)
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
    print(table(results))
    return 1 if any(r["lost"] for r in results) else 0
