"""svix-server through hookline's load tools, for a comparison with ops/bench/pipeline on the
same machine: the same load generator and receiver (ops/bench/hlbench, Go), every event counted
at the receiver (lost, duplicates), CPU and peak RSS per process, one JSON line per run (with
"system": "svix") and the same table as pipeline.py. Run through ops/bench/svix, which takes a
svix-server binary built beforehand (see docs/BENCHMARKS.md).

Scenarios (those of pipeline.py that apply to svix; each can be changed with the flags below):
  A  one endpoint, 30,000 events as fast as they are accepted
  C  10 endpoints per event, 5,000 events
  D  200 events/s for 30 s: 202 received -> arrival latency
B (a backlog drained by services started later) and E (prequel_rsa signing) have no svix
counterpart. svix signs with its own scheme: Standard Webhooks' HMAC-SHA256 under svix-*
headers, so "scheme" is standard_webhooks.

The stack: one throwaway PostgreSQL cluster for the whole invocation (loopback, trust,
max_connections=200, PostgreSQL's defaults otherwise: fsync and synchronous commits), a fresh
database, a fresh Redis (no persistence) and a fresh svix-server per run, queue and cache on
Redis, svix's defaults otherwise (100 connections to each, 500 worker tasks). A run posts to
POST /api/v1/app/APP/msg/ of one application with N endpoints at
http://127.0.0.1:<receiver>/ok/<i>; one event goes through first (the warm-up), then the load.
CPU per process from /proc: svix-server, postgres (every process of the cluster, exited
backends included), redis, receiver, loadgen. Peak RSS: VmHWM, and for postgres the highest
sum of the processes' PSS sampled about once a second (shared buffers counted once).
"""

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import (
    CLK_TCK,
    Run,
    arguments,
    free_port,
    http,
    machine_busy,
    run_all,
    scenarios,
    stat_fields,
    status_mb,
    wait_until,
)

OFFERED = "A,C,D"


class Postgres:
    """A throwaway PostgreSQL cluster on loopback in a temporary directory, run as the
    postgres user when we are root; one database per run."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.bin = pg_bin_dir()
        self.tmp = Path(tempfile.mkdtemp(prefix="hookline-svix-pg-"))
        self.tmp.chmod(0o755)
        self.data = self.tmp / "data"
        self.log = self.tmp / "postgres.log"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            owner = pwd.getpwnam(self.user)
            os.chown(self.tmp, owner.pw_uid, owner.pw_gid)
        initdb = [self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust"]
        self.as_owner([*initdb, "-E", "UTF8", "--locale=C", "--no-sync"], quiet=True)
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                "\n# ops/bench/svix\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.tmp}'\n"
                "max_connections = 200\n"
            )
        self.as_owner([self.bin / "pg_ctl", "-s", "-D", self.data, "-l", self.log, "-w", "start"])
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def as_owner(self, argv: list, quiet: bool = False) -> None:
        argv = [str(a) for a in argv]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        out = subprocess.DEVNULL if quiet else None
        subprocess.run(argv, check=True, stdout=out, cwd=self.tmp)

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> None:
        argv = [self.bin / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.dsn("postgres")]
        subprocess.run([str(a) for a in [*argv, "-c", statement]], check=True)

    def pids(self) -> list[int]:
        """The postmaster and its children."""
        pids = [self.pid]
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if int(stat_fields(int(entry.name))[1]) == self.pid:
                        pids.append(int(entry.name))
                except (OSError, IndexError):
                    pass
        return pids

    def cpu(self) -> float:
        """CPU of every process of the cluster, those that exited included (the postmaster
        collects its children's CPU as they exit)."""
        total = 0
        for pid in self.pids():
            try:
                fields = stat_fields(pid)
            except OSError:
                continue
            total += sum(int(v) for v in fields[11:15])
        return total / CLK_TCK

    def pss_mb(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                total += status_mb(pid, "Pss", "smaps_rollup")
            except OSError:
                pass
        return total

    def stop(self) -> None:
        self.as_owner([self.bin / "pg_ctl", "-s", "-D", self.data, "-m", "fast", "-w", "stop"])
        if self.keep:
            print(f"PostgreSQL's data kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def pg_bin_dir() -> Path:
    """Debian's newest /usr/lib/postgresql/<version>/bin, else pg_ctl's directory."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)],
    )
    if found:
        return found[-1].parent
    which = shutil.which("pg_ctl")
    if not which:
        raise RuntimeError("no PostgreSQL: apt-get install postgresql")
    return Path(which).resolve().parent


class SvixRun(Run):
    """svix-server with a fresh database and Redis, one application with the endpoints."""

    critical = ("svix-server", "redis")

    def __init__(self, args, name: str, spec: dict, number: int, pg: Postgres) -> None:
        prefix = f"svix-{name.lower()}-{uuid.uuid4().hex[:8]}-"
        super().__init__(args, name, spec, number, prefix, args.work / prefix.rstrip("-"))
        self.pg = pg
        self.database = prefix.rstrip("-").replace("-", "_")
        self.pg_peak = 0.0
        self.pg_sampled = 0.0
        self.api = f"http://127.0.0.1:{free_port()}"
        self.env.pop("DATABASE_URL", None)

    def extra_cpu(self) -> dict[str, float]:
        return {"postgres": self.pg.cpu()}

    def on_poll(self, every: float = 1.0) -> None:
        if time.time() - self.pg_sampled >= every:
            self.pg_sampled = time.time()
            self.pg_peak = max(self.pg_peak, self.pg.pss_mb())

    def result_fields(self) -> dict:
        return {
            "system": "svix",
            "svix_version": self.args.svix_version,
            "svix_commit": self.args.svix_commit,
            "ingest": "http",
        }

    def setup(self) -> None:
        redis_port = free_port()
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", redis_port, "--save", ""]
        redis = self.start("redis", [*argv, "--appendonly", "no", "--dir", self.dir])
        wait_until("redis", lambda: redis_ping(redis_port), redis, 30, self.dir / "redis.log")
        self.pg.sql(f"CREATE DATABASE {self.database}")
        config = {
            "listen_address": self.api.removeprefix("http://"),
            "jwt_secret": secrets.token_urlsafe(32),
            "main_secret": secrets.token_urlsafe(32),
            "db_dsn": self.pg.dsn(self.database),
            "redis_dsn": f"redis://127.0.0.1:{redis_port}",
            "queue_type": "redis",
            "cache_type": "redis",
            "whitelist_subnets": ["127.0.0.0/8"],
        }
        # svix-server reads ./config.toml (SVIX_* variables override it).
        path = self.dir / "config.toml"
        path.touch(mode=0o600)
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
        token = subprocess.run(
            [self.args.svix_server, "jwt", "generate"],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.token = token.split("Token (Bearer):", 1)[1].strip()
        self.start_receiver()
        server = self.start("svix-server", [self.args.svix_server, "--run-migrations"])
        wait_until(
            "svix-server",
            lambda: http("GET", f"{self.api}/api/v1/health"),
            server,
            120,
            self.dir / "svix-server.log",
        )
        app = http("POST", f"{self.api}/api/v1/app/", self.token, {"name": self.prefix})
        self.app = app["id"]
        for i in range(self.spec["endpoints"]):
            endpoint = {"url": f"{self.receiver}/ok/{i}", "description": f"bench {i}"}
            http("POST", f"{self.api}/api/v1/app/{self.app}/endpoint/", self.token, endpoint)
        self.warm_up()

    def send_one(self, event: dict) -> None:
        message = {"eventType": "transfer.error", "payload": event}
        http("POST", f"{self.api}/api/v1/app/{self.app}/msg/", self.token, message)

    def load_argv(self) -> list:
        argv = [self.args.hlbench, "load", "-url", self.api, "-token", self.token]
        return [*argv, "-svix-app", self.app, "-c", self.args.concurrency]

    def execute(self) -> dict:
        self.setup()
        self.pg_peak = 0.0
        self.on_poll(every=0)
        window = {"cpu0": self.cpu(), "busy0": machine_busy()}
        load = self.load()
        self.wait_for(load["accepted"] * self.spec["endpoints"], stall=self.args.stall)
        window.update(cpu1=self.cpu(), busy1=machine_busy())
        self.on_poll(every=0)
        arrivals = self.collect()
        # svix-server's graceful shutdown waits out the queue's long poll (20 s): killed
        # after 2 s, as everything was measured by then.
        window["peaks"] = self.stop_all(grace={"svix-server": 2})
        if self.pg_peak:
            window["peaks"]["postgres"] = round(self.pg_peak, 1)
        return self.summarise(load, arrivals, window)

    def cleanup(self) -> None:
        self.stop_all(grace={"svix-server": 2})
        if not self.args.keep_data:
            self.pg.sql(f"DROP DATABASE IF EXISTS {self.database}")


def redis_ping(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        if not s.recv(64).startswith(b"+PONG"):
            raise OSError("redis did not answer PONG")


def main() -> int:
    parser = arguments(__doc__, OFFERED)
    parser.add_argument(
        "--keep-data", action="store_true", help="leave the runs' databases and PostgreSQL's data"
    )
    parser.add_argument("--svix-server", type=Path, required=True, help="the svix-server binary")
    parser.add_argument("--svix-commit", help="the svix commit it was built from (recorded)")
    parser.add_argument("--work", type=Path, required=True, help="where runs keep their files")
    args = parser.parse_args()
    specs = scenarios(parser, args, OFFERED, ("n", "rate", "duration", "endpoints"))
    version = subprocess.run([args.svix_server, "--version"], capture_output=True, text=True)
    args.svix_version = version.stdout.split()[-1] if version.stdout.split() else None
    pg = Postgres(keep=args.keep_data)
    try:
        return run_all(args, specs, lambda n, s, k: SvixRun(args, n, s, k, pg))
    finally:
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
