"""Signed deliveries through the real pipeline, verified by code nobody here wrote;
key rotation end to end; and no secret in the broker's log segments on disk."""

import base64
import hashlib
import hmac
import json
import os
import random
import string
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import standardwebhooks
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import ROOT


def canary() -> str:
    """A fresh random secret: no two share a prefix, so compression cannot hide one."""
    return uuid.uuid4().hex + uuid.uuid4().hex


CANARY = canary()
# Not secret: written in clear, so finding it proves the search reads the right files.
# Thirty-two distinct characters: lz4 replaces any repeated run of four bytes with a
# back-reference, so a marker repeating one of its own 4-grams (random hex does in about
# 0.6% of draws) would never be found whole on disk in any record.
MARKER = "marker-" + "".join(random.sample(string.ascii_letters + string.digits, 32))


def public_key(pipeline) -> dict:
    with urllib.request.urlopen(
        f"{pipeline.api}/public/signatures/webhook-public-key", timeout=10
    ) as resp:
        return json.loads(resp.read())


def rsa_ok(pem: str, request: dict) -> bool:
    h = request["headers"]
    message = h["x-prequel-webhook-timestamp"].encode() + b"." + request["body"]
    try:
        serialization.load_pem_public_key(pem.encode()).verify(
            bytes.fromhex(h["x-prequel-webhook-signature"]),
            message,
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        return True
    except InvalidSignature:
        return False


def openssl_verify(pem: str, request: dict) -> None:
    import subprocess
    import tempfile

    h = request["headers"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "pub.pem").write_text(pem)
        (d / "sig").write_bytes(bytes.fromhex(h["x-prequel-webhook-signature"]))
        (d / "msg").write_bytes(h["x-prequel-webhook-timestamp"].encode() + b"." + request["body"])
        out = subprocess.run(
            [
                "openssl",
                "dgst",
                "-sha256",
                "-verify",
                str(d / "pub.pem"),
                "-signature",
                str(d / "sig"),
                str(d / "msg"),
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and "Verified OK" in out.stdout, out.stdout + out.stderr


def transfer_error(n: int) -> dict:
    return {
        "type": "transfer.error",
        "data": {
            "error": {
                "destination_id": "d-1",
                "destination_name": "Dest",
                "id_in_provider_system": "x",
                "models": ["users"],
                "is_full_refresh": False,
                "transfer_id": f"t-{n}",
                "transfer_status": "ERROR",
                "transfer_error_type": "host",
                "transfer_log": "log",
                "transfer_log_pretty": "",
                "transfer_started_at": "2024-01-15T10:00:00Z",
                "transfer_ended_at": None,
                "in_app_url": "",
            }
        },
    }


def by_path(requests, path):
    return [r for r in requests if r["path"].split("?")[0] == path]


def of_transfer(requests, path, transfer_id):
    """The first request to `path` that carries `transfer_id`."""
    return next(
        r
        for r in by_path(requests, path)
        if json.loads(r["body"])["data"]["error"]["transfer_id"] == transfer_id
    )


def test_every_scheme_verifies_and_rotation_works_end_to_end(pipeline, receiver):
    base = receiver.url.rsplit("/", 1)[0]

    def hook(path, **extra):
        return {
            "webhook": {
                "name": f"{path} {MARKER}",
                "vendor": "generic_post",
                "url": f"{base}{path}",
                "events": ["transfer.error"],
                **extra,
            }
        }

    pipeline.call("POST", "/webhooks", hook("/rsa", api_key=CANARY))
    # Secrets a template or a vendor body could carry: all sealed on their way through Kafka.
    pagerduty_key = canary()
    pd = hook("/pagerduty", api_key=pagerduty_key)
    pd["webhook"]["vendor"] = "pagerduty"
    pipeline.call("POST", "/webhooks", pd)
    dump_secret = canary()
    pipeline.call(
        "POST",
        "/webhooks",
        hook("/dump", secret=dump_secret, signing_scheme="none", body_template="{{.}}"),
    )
    # A URL may not carry the secret: refused at creation.
    try:
        pipeline.call(
            "POST",
            "/webhooks",
            hook("/x?k={{.Secret}}", secret=canary(), signing_scheme="fivetran_hmac"),
        )
        raise AssertionError("a URL carrying the secret was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and json.loads(e.read())["error"]["field"] == "webhook.url"
    created = pipeline.call("POST", "/webhooks", hook("/std", signing_scheme="standard_webhooks"))
    std_secret = created["generated_secret"]
    assert std_secret.startswith("whsec_") and created["webhook"]["secret"] == "******"
    std_id = created["webhook"]["id"]
    fivetran_secret = canary()
    pipeline.call(
        "POST",
        "/webhooks",
        hook("/fivetran", signing_scheme="fivetran_hmac", secret=fivetran_secret),
    )
    dataprep_secret = canary()
    pipeline.call(
        "POST",
        "/webhooks",
        hook("/dataprep", signing_scheme="dataprep_hmac", secret=dataprep_secret),
    )
    get = hook("/dataprep-get", signing_scheme="dataprep_hmac", secret=dataprep_secret)
    get["webhook"]["vendor"] = "generic_get"
    pipeline.call("POST", "/webhooks", get)

    key1 = public_key(pipeline)
    pipeline.call("POST", "/events", transfer_error(1))
    got = receiver.wait_for(7)
    assert len(got) == 7, [r["path"] for r in got]

    # prequel_rsa: Python cryptography with the published key; the digest of the raw body.
    rsa = by_path(got, "/rsa")[0]
    assert rsa_ok(key1["public_key"], rsa)
    assert not rsa_ok(key1["public_key"], dict(rsa, body=rsa["body"] + b" ")), (
        "a tampered body fails"
    )
    openssl_verify(key1["public_key"], rsa)
    assert rsa["headers"]["x-prequel-webhook-digest"] == hashlib.sha256(rsa["body"]).hexdigest()
    assert rsa["headers"]["authorization"] == f"Bearer {CANARY}"
    assert json.loads(by_path(got, "/pagerduty")[0]["body"])["routing_key"] == pagerduty_key
    assert dump_secret.encode() in by_path(got, "/dump")[0]["body"], (
        "the template printed the secret to its receiver"
    )
    # standard_webhooks: the reference package.
    std = by_path(got, "/std")[0]
    standardwebhooks.Webhook(std_secret).verify(std["body"].decode(), std["headers"])
    assert std["headers"]["webhook-id"] == std["headers"]["hookline-delivery-id"]
    # fivetran_hmac and dataprep_hmac: Python hmac.
    ft = by_path(got, "/fivetran")[0]
    assert hmac.compare_digest(
        ft["headers"]["x-fivetran-signature-256"],
        hmac.new(fivetran_secret.encode(), ft["body"], hashlib.sha256).hexdigest().upper(),
    )
    for path, signed_of in [
        ("/dataprep", lambda r: r["body"]),
        ("/dataprep-get", lambda r: (base + r["path"]).encode()),
    ]:
        r = by_path(got, path)[0]
        parts = dict(p.split("=", 1) for p in r["headers"]["x-webhook-signature"].split(","))
        expected = hmac.new(
            dataprep_secret.encode(), parts["t"].encode() + b"." + signed_of(r), hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(parts["sha256"], expected), path

    # Rotation: new deliveries are signed with the new key, which the public endpoint now returns.
    rotated = pipeline.call("POST", "/signatures/webhook-key/rotate")
    key2 = public_key(pipeline)
    assert key2["kid"] == rotated["kid"] != key1["kid"]
    # The Standard Webhooks secret is rotated too: both sign during the overlap.
    new_std = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    pipeline.call("PATCH", f"/webhooks/{std_id}", {"webhook": {"secret": new_std}})
    pipeline.call("POST", "/events", transfer_error(2))
    got = receiver.wait_for(14)
    rsa2 = of_transfer(got, "/rsa", "t-2")
    assert rsa_ok(key2["public_key"], rsa2)
    assert not rsa_ok(key1["public_key"], rsa2), "a rotated-out key no longer verifies"
    std2 = of_transfer(got, "/std", "t-2")
    for secret in (new_std, std_secret):
        standardwebhooks.Webhook(secret).verify(std2["body"].decode(), std2["headers"])
    assert len(std2["headers"]["webhook-signature"].split(" ")) == 2

    # No secret in the broker's log segments on disk.
    port = os.environ.get("HOOKLINE_KAFKA_PORT", "9092")
    data = Path(
        os.environ.get("HOOKLINE_KAFKA_DATA_DIR") or ROOT / "ops" / "kafka" / ".data" / port
    )
    assert data.is_dir(), data
    time.sleep(1)
    needles = [
        n.encode()
        for n in (
            CANARY,
            std_secret,
            new_std,
            fivetran_secret,
            dataprep_secret,
            pagerduty_key,
            dump_secret,
        )
    ]
    # Every record of this pipeline's topics, decompressed by an independent client.
    from confluent_kafka import Consumer, TopicPartition

    from conftest import brokers

    consumer = Consumer(
        {
            "bootstrap.servers": brokers(),
            "group.id": f"leak-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    topics = [t for t in consumer.list_topics(timeout=10).topics if t.startswith(pipeline.prefix)]
    consumer.assign(
        [
            TopicPartition(t, p, 0)
            for t in topics
            for p in consumer.list_topics(t, timeout=10).topics[t].partitions
        ]
    )
    values, idle = [], 0
    while idle < 10:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            idle += 1
            continue
        idle = 0
        values.append((msg.topic(), msg.value() or b""))
    consumer.close()
    assert any(t.endswith("rendered-deliveries") for t, _ in values) and len(values) > 20
    in_records = [(t, n[:8]) for t, v in values for n in needles if n in v]
    assert not in_records, f"secrets in clear in Kafka records: {in_records}"
    # This pipeline's topics' log segments (index files hold offsets, not records).
    segments = [p for p in data.rglob("*.log") if p.parent.name.startswith(pipeline.prefix)]
    assert any(MARKER.encode() in p.read_bytes() for p in segments), (
        f"the endpoints' segments are read: {len(segments)} segment files of {pipeline.prefix}"
    )
    leaks = [str(p) for p in segments if any(n in p.read_bytes() for n in needles)]
    assert not leaks, f"secrets in clear on disk: {leaks}"
