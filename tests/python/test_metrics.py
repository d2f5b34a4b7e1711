"""The services' admin listeners judged by Prometheus itself (Debian's package, never run
as a system service): every /metrics passes `promtool check metrics`, and a real
Prometheus server scraping the three services counts exactly the deliveries the
receiver saw."""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from test_signed_deliveries import transfer_error

from conftest import ROOT, free_port

EVENTS = 20

PROMETHEUS = os.environ.get("HOOKLINE_PROMETHEUS_DIR")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def query(server: str, promql: str) -> float | None:
    url = f"{server}/api/v1/query?query={urllib.parse.quote(promql)}"
    answer = json.loads(get(url)[1])
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for_value(server: str, promql: str, want: float, seconds: float = 60) -> float | None:
    deadline, got = time.time() + seconds, None
    while time.time() < deadline:
        got = query(server, promql)
        if got == want:
            return got
        time.sleep(0.5)
    return got


@pytest.mark.skipif(not PROMETHEUS, reason="HOOKLINE_PROMETHEUS_DIR unset (ops/py-tests sets it)")
def test_metrics_pass_promtool_and_prometheus_counts_every_delivery(
    pipeline, receiver, tmp_path: Path
):
    bin_dir = Path(PROMETHEUS)
    pipeline.add_webhook(
        "metrics", receiver.url, ["transfer.error"], signing_scheme="standard_webhooks"
    )
    for n in range(EVENTS):
        pipeline.call("POST", "/events", transfer_error(n))
    try:
        pipeline.call("POST", "/events", {"type": "not.a.type", "data": {}})
    except urllib.error.HTTPError as e:
        assert e.code == 400
    got = receiver.wait_for(EVENTS)
    assert len(got) == EVENTS

    exposed: set[str] = set()
    for name, admin in pipeline.admin.items():
        assert get(f"{admin}/health/live")[0] == 200
        status, body = get(f"{admin}/health/ready")
        assert status == 200 and json.loads(body)["status"] == "ready", body
        status, text = get(f"{admin}/metrics")
        assert status == 200
        exposed |= {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        check = subprocess.run(
            [bin_dir / "promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
        )
        print(f"promtool check metrics {name}: exit {check.returncode} {check.stdout.strip()}")
        assert check.returncode == 0, check.stdout + check.stderr

    documented_metrics_match(exposed)

    port = free_port()
    server = f"http://127.0.0.1:{port}"
    targets = [a.removeprefix("http://") for a in pipeline.admin.values()]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ROOT / "ops" / "observability" / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "hookline", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "wb")
    prometheus = subprocess.Popen(
        [
            bin_dir / "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if get(f"{server}/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert wait_for_value(server, 'sum(up{job="hookline"})', 3) == 3
        groups = json.loads(get(f"{server}/api/v1/rules")[1])["data"]["groups"]
        alerts = sorted(r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting")
        print(f"prometheus loaded {len(alerts)} alert rules: {', '.join(alerts)}")
        assert len(alerts) == 6 and all(r["health"] != "err" for g in groups for r in g["rules"])
        delivered = len(receiver.requests)
        checks = {
            'sum(hookline_delivery_attempts_total{outcome="2xx"})': delivered,
            'sum(hookline_events_ingested_total{outcome="accepted"})': EVENTS,
            'sum(hookline_events_ingested_total{outcome="invalid"})': 1,
            "sum(hookline_deliveries_rendered_total)": EVENTS,
            "sum(hookline_delivery_latency_seconds_count)": delivered,
            # Every service ready, and the renderer's group caught up (librdkafka's
            # statistics, every 5 s).
            "sum(hookline_ready)": 3,
            'sum(hookline_consumer_lag_records{group=~".*hookline-renderer"})': 0,
        }
        for promql, want in checks.items():
            got = wait_for_value(server, promql, want)
            print(f"prometheus: {promql} = {got} (want {want})")
            assert got == want, promql
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def documented_metrics_match(exposed: set[str]) -> None:
    """Every metric a service exposes is in the README's table, and every metric the
    alert rules and the dashboard use is too (histograms by their family name)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| metric | type | service | labels |")[1].split("\n\n")[0]
    documented = set(re.findall(r"`(hookline_[a-z_]+)`", table))
    assert exposed, "no metric exposed"
    assert exposed <= documented, f"exposed but not in the README: {exposed - documented}"
    observability = ROOT / "ops" / "observability"
    used = set()
    for f in ("alerts.yml", "dashboard.json"):
        used |= set(re.findall(r"hookline_[a-z_]+", (observability / f).read_text()))
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert used <= documented, (
        f"used by alerts or the dashboard, not documented: {used - documented}"
    )
    print(
        f"metrics: {len(exposed)} exposed, {len(used)} used by alerts and the dashboard,"
        " all documented"
    )
