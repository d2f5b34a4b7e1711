"""Soak and chaos (issue 14): events at a steady rate for N minutes into webhooks whose
receiver answers at random 200, 500, 429, 410, hangs past the timeout or resets the
connection; every few minutes one service is killed with SIGKILL and started again,
and the broker is restarted once. At the end every accepted event is counted against
what arrived (a 2xx answered) or sits in `dead-letter`: lost must be 0, duplicates
carry the same delivery id, and no consumer group may be left lagging. Peak RSS of each
service (sampled every second, across its restarts) is reported. Loopback only, bounded
in time and count; not part of CI. Run through ops/soak, which builds first.
"""

import argparse
import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("producer", "renderer", "dispatcher")
TRANSFER = re.compile(rb'"transfer_id"\s*:\s*"([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """Answers each request at random; records what it was sent and how it answered."""

    # (outcome, weight)
    OUTCOMES = (("200", 70), ("500", 10), ("429", 8), ("410", 2), ("hang", 5), ("reset", 5))

    def __init__(self, hang_s: float, seed: int) -> None:
        self.lock = threading.Lock()
        # (delivery id, transfer id, endpoint index, outcome)
        self.log: list[tuple[str, str, str, str]] = []
        self.random = random.Random(seed)
        self.hang_s = hang_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                delivery = self.headers.get("Hookline-Delivery-Id", "")
                found = TRANSFER.search(body)
                transfer = found.group(1).decode() if found else ""
                with receiver.lock:
                    outcome = receiver.random.choices(
                        [o for o, _ in receiver.OUTCOMES], [w for _, w in receiver.OUTCOMES]
                    )[0]
                    endpoint = self.path.rsplit("/", 1)[-1]
                    receiver.log.append((delivery, transfer, endpoint, outcome))
                if outcome == "hang":
                    time.sleep(receiver.hang_s)
                    self.close_connection = True
                    return
                if outcome == "reset":
                    # An RST instead of an answer.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.close_connection = True
                    return
                status = int(outcome)
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        class Server(ThreadingHTTPServer):
            # Python's default listen backlog is 5: under the dispatcher's concurrency
            # the kernel then refuses connections, failures the receiver never chose.
            request_queue_size = 1024

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.dir = ROOT / "target" / "soak" / time.strftime("%Y%m%d-%H%M%S")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"soak-{uuid.uuid4().hex[:8]}-"
        self.token = uuid.uuid4().hex
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.brokers = f"127.0.0.1:{args.kafka_port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "HOOKLINE_KAFKA_BROKERS": self.brokers,
                "HOOKLINE_TOPIC_PREFIX": self.prefix,
                "HOOKLINE_API_ADDR": f"127.0.0.1:{self.api_port}",
                "HOOKLINE_API_TOKEN": self.token,
                "HOOKLINE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
                "HOOKLINE_ALLOWED_NETWORKS": "127.0.0.0/8",
                "HOOKLINE_INSTANCE_ID": f"{self.prefix}renderer",
                "HOOKLINE_ADMIN_ADDR": "127.0.0.1:0",
                # Retries end within the soak's drain: delivered or dead-lettered.
                "HOOKLINE_RETRY_SCHEDULE": args.retry_schedule,
                "HOOKLINE_DELIVERY_TIMEOUT": "2s",
                "HOOKLINE_RETRY_AFTER_MAX": "5s",
                "RUST_LOG": args.rust_log,
            }
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts = {s: 0 for s in SERVICES}
        self.peak_mb = {s: 0.0 for s in SERVICES}
        self.accepted: dict[str, str] = {}  # event id -> transfer id
        self.refused = 0
        self.events_lock = threading.Lock()
        self.stop_sampling = threading.Event()
        self.chaos: list[str] = []
        self.endpoint_index: dict[str, str] = {}

    def broker(self, action: str) -> None:
        env = dict(
            os.environ,
            HOOKLINE_KAFKA_PORT=str(self.args.kafka_port),
            HOOKLINE_KAFKA_CONTROLLER_PORT=str(self.args.kafka_port + 1000),
        )
        subprocess.run(
            [ROOT / "ops/kafka/broker", action], check=True, env=env, stdout=subprocess.DEVNULL
        )

    def start(self, name: str) -> None:
        self.starts[name] += 1
        log = open(self.dir / f"{name}.{self.starts[name]}.log", "wb")
        self.procs[name] = subprocess.Popen(
            [self.args.bin_dir / f"hookline-{name}"], env=self.env, stdout=log, stderr=log
        )

    def kill9(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def sample(self) -> None:
        while not self.stop_sampling.wait(1.0):
            for name, proc in list(self.procs.items()):
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                mb = int(line.split()[1]) / 1024
                                self.peak_mb[name] = max(self.peak_mb[name], mb)
                except OSError:
                    pass

    def http(self, method: str, path: str, body=None, timeout: float = 30) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {}

    def send(self, i: int) -> None:
        transfer = f"{self.prefix}t{i}"
        event = {
            "type": "transfer.error",
            "data": {
                "error": {
                    "destination_id": "d-1",
                    "destination_name": "Soak",
                    "id_in_provider_system": "soak",
                    "models": ["users"],
                    "is_full_refresh": False,
                    "transfer_id": transfer,
                    "transfer_status": "ERROR",
                    "transfer_error_type": "third_party",
                    "transfer_log": "soak",
                    "transfer_log_pretty": "",
                    "transfer_started_at": "2026-12-01T00:00:00+00:00",
                    "transfer_ended_at": None,
                    "in_app_url": "",
                }
            },
        }
        # The producer may be down (killed) or the broker restarting: the client retries,
        # as an engine would; an event counts once a 202 answered it.
        for _ in range(60):
            try:
                status, body = self.http("POST", "/events", event, timeout=10)
            except OSError:
                status, body = 0, {}
            if status == 202:
                with self.events_lock:
                    self.accepted[body["id"]] = transfer
                return
            time.sleep(1)
        with self.events_lock:
            self.refused += 1

    def run(self) -> dict:
        a = self.args
        self.broker("start")
        receiver = Receiver(hang_s=4.0, seed=a.seed)
        for name in SERVICES:
            self.start(name)
        for _ in range(120):
            try:
                if self.http("GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        for i in range(a.endpoints):
            webhook = {
                "webhook": {
                    "name": f"soak {i}",
                    "vendor": "generic_post",
                    "url": f"http://127.0.0.1:{receiver.port}/hook/{i}",
                    "events": ["transfer.error"],
                    "signing_scheme": "standard_webhooks",
                    "timeout_ms": 2000,
                }
            }
            status, created = self.http("POST", "/webhooks", webhook)
            assert status == 201, f"creating a webhook answered {status}"
            self.endpoint_index[created["webhook"]["id"]] = str(i)
        threading.Thread(target=self.sample, daemon=True).start()

        total = int(a.rate * a.minutes * 60)
        began = time.time()
        next_kill = began + a.kill_every * 60
        broker_at = began + a.minutes * 30
        victims = ["dispatcher", "renderer", "producer"]
        kills = 0
        pool = ThreadPoolExecutor(max_workers=32)
        futures = []
        for i in range(total):
            due = began + i / a.rate
            while time.time() < due:
                now = time.time()
                if now >= next_kill:
                    victim = victims[kills % len(victims)]
                    kills += 1
                    self.kill9(victim)
                    self.start(victim)
                    self.chaos.append(f"{now - began:.0f}s kill -9 {victim}")
                    next_kill += a.kill_every * 60
                if now >= broker_at:
                    broker_at = float("inf")
                    self.broker("restart")
                    self.chaos.append(f"{now - began:.0f}s broker restart")
                time.sleep(min(0.01, max(0.0, due - time.time())))
            futures.append(pool.submit(self.send, i))
        for f in futures:
            f.result()
        sent_s = time.time() - began
        expected = {(t, str(i)) for t in self.accepted.values() for i in range(a.endpoints)}
        drain_until = time.time() + a.drain_minutes * 60
        while True:
            delivered, dead, dups = self.count(receiver)
            if len(expected - delivered - dead) == 0 or time.time() > drain_until:
                break
            time.sleep(5)
        lagging = self.lagging()
        self.stop_sampling.set()
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        missing = sorted(expected - delivered - dead)
        # Not delivered nor dead-lettered: still on its way (a group lags) or lost.
        unfinished = len(missing) if lagging else 0
        return {
            "minutes": a.minutes,
            "rate": a.rate,
            "endpoints": a.endpoints,
            "events_sent_s": round(sent_s),
            "events_accepted": len(self.accepted),
            "events_refused": self.refused,
            "deliveries_expected": len(expected),
            "delivered": len(delivered & expected),
            "dead_lettered": len(dead & expected),
            "unfinished": unfinished,
            "lost": len(missing) - unfinished,
            "missing_examples": missing[:5],
            "duplicates": dups,
            "requests": len(receiver.log),
            "outcomes": {
                o: sum(1 for r in receiver.log if r[3] == o) for o, _ in Receiver.OUTCOMES
            },
            "chaos": self.chaos,
            "peak_rss_mb": {k: round(v) for k, v in self.peak_mb.items()},
            "lagging_groups": lagging,
            "logs": str(self.dir),
        }

    def count(self, receiver: Receiver):
        """(delivered, dead-lettered) as {(transfer, endpoint index)}, and duplicates: 2xx
        answers beyond the first per delivery id (each carries that same id)."""
        with receiver.lock:
            log = list(receiver.log)
        delivered, ok_per_id = set(), {}
        for delivery, transfer, endpoint, outcome in log:
            if outcome == "200":
                delivered.add((transfer, endpoint))
                ok_per_id[delivery] = ok_per_id.get(delivery, 0) + 1
        dups = sum(n - 1 for n in ok_per_id.values() if n > 1)
        return delivered, self.dead_letters(), dups

    def dead_letters(self) -> set:
        """The dead-lettered deliveries, as {(transfer, endpoint index)}."""
        found, cursor = set(), None
        while True:
            argv = [self.args.bin_dir / "hookline", "dlq", "list", "--json", "--limit", "1000"]
            if cursor:
                argv += ["--cursor", cursor]
            out = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                return found
            page = json.loads(out.stdout)
            for letter in page["dead_letters"]:
                transfer = self.accepted.get(letter.get("event_id") or "")
                endpoint = self.endpoint_index.get(letter.get("endpoint_id") or "")
                if transfer and endpoint is not None and letter.get("delivery_id"):
                    found.add((transfer, endpoint))
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def lagging(self) -> dict:
        """Consumer groups with committed offsets behind the end of their topics."""
        try:
            from confluent_kafka import Consumer, TopicPartition
        except ImportError:
            return {"unchecked": "confluent-kafka is not installed"}
        # The dispatcher's group reads rendered-deliveries and every retry tier.
        topics = [("hookline-renderer", "events"), ("hookline-dispatcher", "rendered-deliveries")]
        topics += [
            ("hookline-dispatcher", f"retry-{t}") for t in ("1s", "5s", "30s", "5m", "30m", "2h")
        ]
        behind = {}
        for group, topic in topics:
            consumer = Consumer(
                {
                    "bootstrap.servers": self.brokers,
                    "group.id": f"{self.prefix}{group}",
                    "enable.auto.commit": False,
                }
            )
            full = f"{self.prefix}{topic}"
            meta = consumer.list_topics(full, timeout=10).topics.get(full)
            if meta is None:
                consumer.close()
                continue
            parts = [TopicPartition(full, p) for p in meta.partitions]
            lag = 0
            for tp in consumer.committed(parts, timeout=10):
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                lag += max(0, high - max(tp.offset, 0))
            consumer.close()
            if lag:
                behind[f"{group} {topic}"] = lag
        return behind


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--rate", type=float, default=20, help="events per second")
    p.add_argument("--endpoints", type=int, default=3)
    p.add_argument("--kill-every", type=float, default=4, help="minutes between kills")
    p.add_argument("--drain-minutes", type=float, default=5)
    p.add_argument("--retry-schedule", default="1s,5s,10s,30s")
    p.add_argument("--kafka-port", type=int, default=9292)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--bin-dir", type=Path, default=ROOT / "target/release")
    p.add_argument("--rust-log", default="warn", help="the services' RUST_LOG")
    args = p.parse_args()
    soak = Soak(args)
    try:
        result = soak.run()
    finally:
        for proc in soak.procs.values():
            if proc.poll() is None:
                proc.kill()
        soak.broker("stop")
    print(json.dumps(result, indent=2))
    (soak.dir / "result.json").write_text(json.dumps(result, indent=2))
    return 0 if not result["lost"] and not result["unfinished"] else 1


if __name__ == "__main__":
    sys.exit(main())
