"""The management API's contract, docs/openapi.json (generated from the producer's code;
a Rust test holds the file equal to it), judged by tools nobody here wrote:
openapi-spec-validator says it is valid OpenAPI 3.1, and schemathesis fuzzes the live
producer from it (every phase, stateful links included) and finds no 5xx and no answer
outside the contract."""

import json
import os
import re
import subprocess
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from openapi_spec_validator import validate

from conftest import ROOT, TOKEN, Pipeline

DOCUMENT = ROOT / "docs" / "openapi.json"
# Examples per operation and phase: enough to reach every operation's error paths while
# keeping the run near a minute. HOOKLINE_SCHEMATHESIS_EXAMPLES and _SEED widen it.
EXAMPLES = os.environ.get("HOOKLINE_SCHEMATHESIS_EXAMPLES", "25")
SEED = os.environ.get("HOOKLINE_SCHEMATHESIS_SEED", "20261202")


@pytest.fixture(scope="module")
def producer(tmp_path_factory):
    p = Pipeline(tmp_path_factory.mktemp("contract"), services=("hookline-producer",))
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
