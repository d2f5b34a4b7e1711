"""The management API's contract, docs/openapi.json (generated from the producer's code;
a Rust test holds the file equal to it), judged by tools nobody here wrote:
openapi-spec-validator says it is valid OpenAPI 3.1, and schemathesis fuzzes the live
producer from it (every phase, stateful links included) and finds no 5xx and no answer
outside the contract."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openapi_spec_validator import validate
from standardwebhooks.webhooks import Webhook

from conftest import BIN, ROOT, TOKEN, Pipeline

DOCUMENT = ROOT / "docs" / "openapi.json"
# Examples per operation and phase: enough to reach every operation's error paths while
# keeping the run near a minute. HOOKLINE_SCHEMATHESIS_EXAMPLES and _SEED widen it.
EXAMPLES = os.environ.get("HOOKLINE_SCHEMATHESIS_EXAMPLES", "25")
SEED = os.environ.get("HOOKLINE_SCHEMATHESIS_SEED", "20261202")


@pytest.fixture(scope="module")
def producer(tmp_path_factory):
    # Test requests to addresses schemathesis makes up give up after 2 s.
    p = Pipeline(
        tmp_path_factory.mktemp("contract"),
        {"HOOKLINE_DELIVERY_TIMEOUT": "2s"},
        services=("hookline-producer",),
    )
    yield p
    p.stop()


def test_the_contract_is_valid_openapi_and_is_what_the_producer_serves(producer):
    checked_in = json.loads(DOCUMENT.read_text())
    validate(checked_in)  # raises on an invalid document
    assert checked_in["openapi"] == "3.1.0"
    # Served without a token, byte for byte the checked-in document.
    with urllib.request.urlopen(f"{producer.api}/openapi.json", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.read().decode() == DOCUMENT.read_text()


def test_schemathesis_finds_no_failure(producer, tmp_path):
    junit = tmp_path / "junit.xml"
    argv = [
        str(ROOT / ".venv" / "bin" / "schemathesis"),
        "--config-file",
        str(ROOT / "tests" / "python" / "schemathesis.toml"),
        "run",
        f"{producer.api}/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "2",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-4000:]
    # The run reached every operation and every phase, stateful links included.
    # Every operation but the document's own (schemathesis reads it, it does not test it).
    operations = sum(len(item) for item in json.loads(DOCUMENT.read_text())["paths"].values())
    selected = re.search(r"Selected:\s+(\d+)/(\d+)", run.stdout)
    assert selected and selected.group(1) == selected.group(2), run.stdout
    assert int(selected.group(1)) == operations - 1, run.stdout
    assert re.search(rf"Tested:\s+{operations - 1}\b", run.stdout), run.stdout
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", run.stdout), f"{phase} did not pass:\n{run.stdout}"
    links = re.search(r"API Links:\s+(\d+) covered", run.stdout)
    assert links and int(links.group(1)) >= 8, run.stdout
    cases = re.search(r"(\d+) generated, \1 passed(, \d+ skipped)?\n", run.stdout)
    assert cases and int(cases.group(1)) > 500, run.stdout
    suites = ET.parse(junit).getroot()
    assert suites.get("failures") in (None, "0") and suites.get("errors") in (None, "0")


def test_empty_optional_query_parameters_are_absent(producer):
    """Found by schemathesis: `GET /dead-letters?since=` was refused (400) while the
    other empty filters were taken as absent."""
    listing = producer.call("GET", "/dead-letters?since=&endpoint_id=&reason=&cursor=")
    assert listing["next_cursor"] is None
    assert isinstance(listing["dead_letters"], list)


class EchoReceiver:
    """Answers by path: /ok 200 echoing the Authorization header it got, /fail 500,
    /hang after 3 s; keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if self.path.startswith("/hang"):
                    time.sleep(3)
                status = 500 if self.path.startswith("/fail") else 200
                answer = f"got {self.headers.get('Authorization', '')}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def echo():
    r = EchoReceiver()
    yield r
    r.server.shutdown()


def webhook(producer, url: str, **fields) -> dict:
    body = {
        "name": "test target",
        "vendor": "generic_post",
        "url": url,
        "events": ["transfer.error", "source.*"],
        "signing_scheme": "standard_webhooks",
        **fields,
    }
    return producer.call("POST", "/webhooks", {"webhook": body})


def test_a_test_request_is_signed_sent_once_and_answered(producer, echo):
    created = webhook(producer, f"{echo.base}/ok")
    secret = created["generated_secret"]
    hook = created["webhook"]["id"]
    result = producer.call("POST", f"/webhooks/{hook}/test", {"event_type": "source.created"})[
        "test"
    ]
    assert result["delivered"] is True and result["status"] == 200, result
    assert result["would_retry"] is False and result["reason_code"] is None
    assert result["event_type"] == "source.created"
    [got] = [
        r
        for r in echo.requests
        if r["headers"].get("hookline-delivery-id") == result["delivery_id"]
    ]
    assert got["headers"]["hookline-test"] == "true"
    # Signed as a real delivery: the Standard Webhooks library verifies it.
    payload = Webhook(secret).verify(got["body"].decode(), got["headers"])
    assert payload["type"] == "source.created"
    sent = {h["name"]: h["value"] for h in result["request"]["headers"]}
    assert sent["hookline-test"] == "true"
    assert sent["webhook-id"] == result["delivery_id"]
    assert result["request"]["method"] == "POST"
    # The attempt log holds it, marked as a test.
    deadline = time.time() + 30
    while time.time() < deadline:
        listed = producer.call("GET", f"/webhooks/{hook}/deliveries")["deliveries"]
        if listed:
            break
        time.sleep(0.2)
    assert [(d["delivery_id"], d["test"], d["status"]) for d in listed] == [
        (result["delivery_id"], True, "delivered")
    ]


def test_a_test_request_reports_failures_and_masks_secrets(producer, echo):
    # The API key goes out as `Authorization: Bearer`, and the receiver echoes it back.
    hook = webhook(
        producer,
        f"{echo.base}/fail",
        api_key="api-key-that-must-not-show",
        signing_scheme="none",
    )["webhook"]["id"]
    failed = producer.call("POST", f"/webhooks/{hook}/test")["test"]
    assert failed["status"] == 500 and failed["delivered"] is False, failed
    assert failed["would_retry"] is True
    assert "api-key-that-must-not-show" not in json.dumps(failed)
    assert failed["response"] == "got ******"
    sent = {h["name"]: h["value"] for h in failed["request"]["headers"]}
    assert sent["authorization"] == "******"

    slow = webhook(producer, f"{echo.base}/hang", timeout_ms=300)["webhook"]["id"]
    timed_out = producer.call("POST", f"/webhooks/{slow}/test")["test"]
    assert timed_out["error_code"] == "HL-HTTP-TIMEOUT" and timed_out["would_retry"] is True
    assert timed_out["status"] is None

    # Outside HOOKLINE_ALLOWED_NETWORKS (127.0.0.0/8 here): the SSRF guard refuses it.
    before = len(echo.requests)
    refused = webhook(producer, "http://10.255.255.1:9/hook")["webhook"]["id"]
    outcome = producer.call("POST", f"/webhooks/{refused}/test")["test"]
    assert outcome["error_code"] == "HL-DELIVERY-REFUSED", outcome
    assert outcome["would_retry"] is False
    assert outcome["reason_code"] == "HL-DELIVERY-REFUSED"
    assert len(echo.requests) == before, "the refused address got no request"


def test_a_sensitive_trace_endpoint_test_sends_traces_with_its_secret(producer, echo):
    created = producer.call(
        "POST",
        "/sensitive-trace-endpoints",
        {
            "sensitive_trace_endpoint": {
                "name": "traces",
                "url": f"{echo.base}/ok",
                "secret": "trace-secret-value",
            }
        },
    )
    endpoint = created["sensitive_trace_endpoint"]["id"]
    traces = [{"destination_id": "d-1", "trace": "ERROR: test trace"}]
    result = producer.call(
        "POST", f"/sensitive-trace-endpoints/{endpoint}/test", {"sensitive_traces": traces}
    )["test"]
    assert result["delivered"] is True and result["event_type"] == "transfer.sensitive_trace"
    assert result["response"] == "got ******"
    [got] = [
        r
        for r in echo.requests
        if r["headers"].get("hookline-delivery-id") == result["delivery_id"]
    ]
    assert got["headers"]["authorization"] == "Bearer trace-secret-value"
    assert json.loads(got["body"])["sensitive_traces"] == traces
    assert "trace-secret-value" not in json.dumps(result)


def hookline(producer, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOOKLINE_API_URL=producer.api, HOOKLINE_API_TOKEN=TOKEN)
    return subprocess.run(
        [str(BIN / "hookline"), "webhooks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_covers_the_webhook_routes(producer, echo, tmp_path):
    spec = tmp_path / "hook.json"
    spec.write_text(json.dumps({"webhook": {"name": "from a file", "vendor": "generic_post"}}))
    made = hookline(
        producer,
        "create",
        "--file",
        str(spec),
        "--url",
        f"{echo.base}/ok",
        "--event",
        "transfer.error",
        "--signing-scheme",
        "none",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)["webhook"]
    assert created["name"] == "from a file" and created["url"] == f"{echo.base}/ok"
    hook = created["id"]

    listed = hookline(producer, "list")
    assert listed.returncode == 0 and hook in listed.stdout, listed

    stale = hookline(producer, "update", hook, "--name", "renamed", "--if-match", "999")
    assert stale.returncode == 1 and "HL-API-PRECONDITION" in stale.stderr, stale
    renamed = hookline(
        producer, "update", hook, "--name", "renamed", "--if-match", str(created["version"])
    )
    assert renamed.returncode == 0 and "renamed" in renamed.stdout, renamed
    shown = json.loads(hookline(producer, "show", hook, "--json").stdout)
    assert shown["webhook"]["name"] == "renamed"

    tested = hookline(producer, "test", hook)
    assert tested.returncode == 0 and tested.stdout.startswith("delivered: answered 200"), tested
    bad = hookline(
        producer, "create", "--name", "x", "--vendor", "nope", "--url", echo.base, "--event", "*"
    )
    assert bad.returncode == 1 and "HL-API-INVALID (webhook.vendor)" in bad.stderr, bad

    gone = hookline(producer, "delete", hook)
    assert gone.returncode == 0 and gone.stdout.startswith("deleted"), gone
    assert hookline(producer, "show", hook).returncode == 1


def test_listings_page_with_a_cursor_and_filter(producer, echo):
    for vendor in ("generic_post", "slack"):
        webhook(producer, f"{echo.base}/ok", vendor=vendor, signing_scheme="none")
    everything = producer.call("GET", "/webhooks?limit=500")
    assert everything["next_cursor"] is None
    ids = [w["id"] for w in everything["webhooks"]]
    paged, cursor = [], ""
    while True:
        page = producer.call("GET", f"/webhooks?limit=2&cursor={cursor}")
        assert len(page["webhooks"]) <= 2
        paged += [w["id"] for w in page["webhooks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == ids and len(ids) >= 2
    slack = producer.call("GET", "/webhooks?vendor=slack&active=true&event_type=source.created")
    assert slack["webhooks"] and all(w["vendor"] == "slack" for w in slack["webhooks"])
    traces = producer.call("GET", "/sensitive-trace-endpoints?limit=500")
    assert traces["next_cursor"] is None
