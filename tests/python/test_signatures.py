"""hookline's signatures, verified by code nobody here wrote: Python `cryptography` and
the `openssl` command for prequel_rsa, the `standardwebhooks` package for Standard
Webhooks, Python's `hmac` for the Fivetran and Dataprep schemes. Negative cases: a
tampered body, a stale timestamp and a rotated-out key each fail."""

import base64
import hashlib
import hmac
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import ROOT


@pytest.fixture(scope="module")
def fixtures():
    out = subprocess.run(
        ["cargo", "run", "-q", "-p", "signing", "--example", "fixtures"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def request(fixtures, scheme, method="POST"):
    return next(r for r in fixtures["requests"] if r["scheme"] == scheme and r["method"] == method)


def rsa_verify(pem: str, message: bytes, signature: bytes) -> bool:
    key = serialization.load_pem_public_key(pem.encode())
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def test_prequel_rsa_with_cryptography(fixtures):
    r = request(fixtures, "prequel_rsa")
    h = r["headers"]
    ts, body = h["X-Prequel-Webhook-Timestamp"], r["body"].encode()
    signature = bytes.fromhex(h["X-Prequel-Webhook-Signature"])
    assert h["X-Prequel-Webhook-Digest"] == hashlib.sha256(body).hexdigest()
    assert rsa_verify(fixtures["public_key_pem"], ts.encode() + b"." + body, signature)
    # The timestamp is RFC 3339 and fresh (a receiver's 5-minute window).
    sent = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - sent) < timedelta(minutes=5)
    # Negative: a tampered body, a rotated-out key.
    assert not rsa_verify(fixtures["public_key_pem"], ts.encode() + b"." + body + b" ", signature)
    assert not rsa_verify(
        fixtures["rotated_out_public_key_pem"], ts.encode() + b"." + body, signature
    )


def test_prequel_rsa_with_openssl(fixtures, tmp_path):
    r = request(fixtures, "prequel_rsa")
    h = r["headers"]
    (tmp_path / "pub.pem").write_text(fixtures["public_key_pem"])
    (tmp_path / "old.pem").write_text(fixtures["rotated_out_public_key_pem"])
    (tmp_path / "sig").write_bytes(bytes.fromhex(h["X-Prequel-Webhook-Signature"]))
    (tmp_path / "msg").write_bytes(
        h["X-Prequel-Webhook-Timestamp"].encode() + b"." + r["body"].encode()
    )
    (tmp_path / "bad").write_bytes(
        h["X-Prequel-Webhook-Timestamp"].encode() + b"." + r["body"].encode() + b"x"
    )

    def openssl(key, msg):
        return subprocess.run(
            [
                "openssl",
                "dgst",
                "-sha256",
                "-verify",
                str(tmp_path / key),
                "-signature",
                str(tmp_path / "sig"),
                str(tmp_path / msg),
            ],
            capture_output=True,
            text=True,
        )

    ok = openssl("pub.pem", "msg")
    assert ok.returncode == 0 and "Verified OK" in ok.stdout
    assert openssl("pub.pem", "bad").returncode != 0
    assert openssl("old.pem", "msg").returncode != 0


def test_standard_webhooks_with_the_reference_package(fixtures):
    r = request(fixtures, "standard_webhooks")
    headers = r["headers"]
    assert headers["webhook-id"] == "5b0c7f2e-delivery"
    assert len(headers["webhook-signature"].split(" ")) == 2, (
        "both secrets sign during a rotation overlap"
    )
    for secret in fixtures["standard_secrets"]:
        standardwebhooks.Webhook(secret).verify(r["body"], headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(fixtures["standard_secrets"][0]).verify(r["body"] + " ", headers)
    stale = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)})
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(fixtures["standard_secrets"][0]).verify(r["body"], stale)
    other = "whsec_" + base64.b64encode(b"another-secret-of-24-byt").decode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(r["body"], headers)


def test_fivetran_hmac_with_python_hmac(fixtures):
    r = request(fixtures, "fivetran_hmac")
    expected = (
        hmac.new(fixtures["secret"].encode(), r["body"].encode(), hashlib.sha256)
        .hexdigest()
        .upper()
    )
    assert hmac.compare_digest(r["headers"]["X-Fivetran-Signature-256"], expected)
    tampered = (
        hmac.new(fixtures["secret"].encode(), r["body"].encode() + b"x", hashlib.sha256)
        .hexdigest()
        .upper()
    )
    assert not hmac.compare_digest(r["headers"]["X-Fivetran-Signature-256"], tampered)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_dataprep_hmac_with_python_hmac(fixtures, method):
    r = request(fixtures, "dataprep_hmac", method)
    parts = dict(p.split("=", 1) for p in r["headers"]["X-Webhook-Signature"].split(","))
    t = parts["t"]
    assert abs(int(t) / 1000 - time.time()) < 300, "t is unix milliseconds, fresh"
    signed = r["url"] if method == "GET" else r["body"]
    expected = hmac.new(
        fixtures["secret"].encode(), f"{t}.{signed}".encode(), hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["sha256"], expected)
    wrong = hmac.new(
        fixtures["secret"].encode(), f"{t}.{signed}x".encode(), hashlib.sha256
    ).hexdigest()
    assert not hmac.compare_digest(parts["sha256"], wrong)
