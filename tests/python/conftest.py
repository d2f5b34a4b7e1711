"""Fixtures: the real broker (ops/test starts it), a pipeline of the three hookline
binaries under a fresh topic prefix, and a capturing HTTP receiver."""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The binaries ops/py-tests built (it honours CARGO_TARGET_DIR); target/debug otherwise.
BIN = Path(os.environ.get("HOOKLINE_BIN_DIR") or ROOT / "target" / "debug")
TOKEN = "py-token"
MASTER_KEY = "ziPT4SmMuMTwTwqeF6aldKiYNegAmm65VtVAqRVARKE="


def brokers() -> str:
    return (
        os.environ.get("HOOKLINE_KAFKA_BROKERS")
        or f"127.0.0.1:{os.environ.get('HOOKLINE_KAFKA_PORT', '9092')}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        # Statuses to answer first, in order; 200 once they are used up.
        self.script: list[int] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                    status = outer.script.pop(0) if outer.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_DELETE = do_POST

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, n: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.requests) < n:
            time.sleep(0.05)
        return list(self.requests)


SERVICES = ("hookline-producer", "hookline-renderer", "hookline-dispatcher")


class Pipeline:
    def __init__(
        self,
        tmp: Path,
        extra_env: dict[str, str] | None = None,
        services: tuple[str, ...] = SERVICES,
    ) -> None:
        self.prefix = f"py-{uuid.uuid4().hex[:8]}-"
        self.api = f"http://127.0.0.1:{free_port()}"
        env = dict(os.environ)
        env.update(
            {
                "HOOKLINE_KAFKA_BROKERS": brokers(),
                "HOOKLINE_TOPIC_PREFIX": self.prefix,
                "HOOKLINE_TOPIC_PARTITIONS": "3",
                "HOOKLINE_API_ADDR": self.api.removeprefix("http://"),
                "HOOKLINE_API_TOKEN": TOKEN,
                "HOOKLINE_MASTER_KEY": MASTER_KEY,
                # The receivers are local: loopback is not reachable by default (SSRF guard).
                "HOOKLINE_ALLOWED_NETWORKS": "127.0.0.0/8",
                "RUST_LOG": "info",
            }
        )
        env.update(extra_env or {})
        self.procs = []
        # Each service's admin listener (health, metrics) on a port of its own.
        self.admin: dict[str, str] = {}
        for name in services:
            self.admin[name] = f"http://127.0.0.1:{free_port()}"
            env["HOOKLINE_ADMIN_ADDR"] = self.admin[name].removeprefix("http://")
            log = open(tmp / f"{name}.log", "wb")
            self.procs.append(
                subprocess.Popen([str(BIN / name)], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.api}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"producer did not start; logs in {tmp}")

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"{self.api}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def add_webhook(self, name: str, url: str, events: list[str], **fields) -> dict:
        """Creates a generic POST webhook (`fields` adds to or overrides its body)."""
        webhook = {"name": name, "vendor": "generic_post", "url": url, "events": events}
        return self.call("POST", "/webhooks", {"webhook": webhook | fields})

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def pipeline(tmp_path):
    p = Pipeline(tmp_path)
    yield p
    p.stop()


@pytest.fixture
def start_pipeline(tmp_path):
    """A pipeline with extra environment: `start_pipeline({"NAME": "value"})`."""
    started = []

    def start(extra_env: dict[str, str]) -> Pipeline:
        started.append(Pipeline(tmp_path, extra_env))
        return started[-1]

    yield start
    for p in started:
        p.stop()
