"""Outbound calls for real: a real worker against the stand-ins, which answer with redirects,
sit behind a proxy, or serve HTTPS with a certificate only the configured CA bundle trusts."""

from __future__ import annotations

import ipaddress
import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge import create_app
from config import Settings
from tests.conftest import API_KEY
from tests.integration.test_paypal_flow import ipn
from tests.integration.test_stripe_flow import checkout_event, post
from tests.processes import WorkerProcess
from tests.standins.proxy import ForwardProxy
from tests.standins.refcampaign import PATH, RefCampaign, Scripted
from tests.waiting import wait_until

REDIRECTS = [301, 302, 303, 307, 308]
IPN = (
    b"txn_type=web_accept&payment_status=Completed&txn_id=OUTBOUND{n}&mc_gross=12.50"
    b"&mc_currency=EUR&custom=rcsid%3Drcs_outbound&payer_id=PAYEROUT1&charset=UTF-8"
)


def attempt_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "attempt_finished"]


def wait_delivered(refcampaign: RefCampaign, timeout: float = 30.0) -> dict[str, Any]:
    [payload] = refcampaign.wait_for(1, timeout=timeout)
    return payload


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", REDIRECTS)
def test_a_redirected_postback_is_retried_never_followed(client, worker, refcampaign, status):
    # A login page behind the redirect answers any GET with 200: followed, a 302 would turn the
    # POST into that GET and record the conversion as delivered.
    refcampaign.script(Scripted(status, body="", headers={"Location": "/login"}))
    assert post(client, checkout_event(f"cs_test_redirect_{status}")).status_code == 200
    payload = wait_delivered(refcampaign)
    assert payload["externalId"] == f"cs_test_redirect_{status}"
    seen = [(r["method"], r["path"]) for r in refcampaign.requests]
    assert seen == [("POST", PATH), ("POST", PATH)]
    port = refcampaign.server_address[1]
    [retried] = [line for line in attempt_lines(worker) if line["outcome"] == "retried"]
    assert retried["status"] == status
    assert retried["error"] == f"HTTP {status}, redirect to 127.0.0.1:{port}"


def test_a_redirect_elsewhere_names_that_host_and_sends_nothing_there(client, worker, refcampaign):
    location = "https://user:pw-in-location@login.example.test/sso"
    refcampaign.script(Scripted(302, body="", headers={"Location": location}))
    assert post(client, checkout_event("cs_test_redirect_away")).status_code == 200
    wait_delivered(refcampaign)
    [retried] = [line for line in attempt_lines(worker) if line["outcome"] == "retried"]
    assert retried["error"] == "HTTP 302, redirect to login.example.test"
    assert "pw-in-location" not in worker.output()


@pytest.mark.parametrize("status", REDIRECTS)
def test_a_redirected_verification_is_retried_never_followed(
    client, worker, paypal, refcampaign, status
):
    paypal.fail_next(status)
    ipn(client, paypal, IPN.replace(b"{n}", str(status).encode()))
    payload = wait_delivered(refcampaign)
    assert payload["externalId"] == f"OUTBOUND{status}"
    seen = [(r["method"], r["path"]) for r in paypal.requests]
    assert seen == [("POST", "/cgi-bin/webscr"), ("POST", "/cgi-bin/webscr")]


# --- a total deadline for each exchange ---------------------------------------------------------


def test_an_answer_that_dribbles_is_cut_at_its_deadline_and_never_attempted_twice_at_once(
    client, worker, refcampaign
):
    # A byte a second: each read well inside DELIVERY_TIMEOUT (2 s), the whole a minute, far
    # past the claim's lease (2 × 2 + 10 s), when the item would be claimed a second time.
    refcampaign.script(Scripted(200, body='{"conversionId":"' + "x" * 45 + '"}', dribble=1.0))
    sent = time.time()
    assert post(client, checkout_event("cs_test_dribble")).status_code == 200
    wait_delivered(refcampaign)
    first, second = refcampaign.requests[:2]
    assert len(refcampaign.requests) == 2
    [retried] = [line for line in attempt_lines(worker) if line["outcome"] == "retried"]
    assert retried["error"] == "timeout: no whole answer within 2 s"
    # The first attempt ended (cut, its retry scheduled) before the second began.
    assert datetime.fromisoformat(retried["timestamp"]).timestamp() <= second["at"]
    assert second["at"] - sent < 10
    # The stand-in saw the hang-up within a byte or two of the deadline, not after the minute.
    wait_until(lambda: refcampaign.dribbles_ended, timeout=10, what="the hang-up")
    assert refcampaign.dribbles_ended[0] - first["at"] < 2 + 2 * 1.0 + 1


# --- retry log lines -------------------------------------------------------------------------


def test_a_retry_line_says_the_error_the_delay_and_the_next_attempt(client, worker, refcampaign):
    body = '{"error":"jane.doe@example.com Bearer ' + API_KEY + '"}'
    refcampaign.script(Scripted(503, body=body))
    before = time.time()
    assert post(client, checkout_event("cs_test_retry_line")).status_code == 200
    wait_delivered(refcampaign)
    [retried] = [line for line in attempt_lines(worker) if line["outcome"] == "retried"]
    assert retried["error"] == "HTTP 503"
    assert retried["externalId"] == "cs_test_retry_line"
    assert 0 < retried["delay"] <= 1  # DELIVERY_BACKOFF_MAX of the test deployment
    assert retried["next_attempt_at"].endswith("Z")
    due = datetime.fromisoformat(retried["next_attempt_at"]).timestamp()
    logged = datetime.fromisoformat(retried["timestamp"]).timestamp()
    assert before < due and abs(due - (logged + retried["delay"])) < 1.0
    assert "jane.doe" not in worker.output() and API_KEY not in worker.output()


@pytest.mark.parametrize("retry_after", ["²", "1e1", "-1"])
def test_a_retry_after_that_is_not_ascii_digits_means_the_backoff(
    client, worker, refcampaign, retry_after
):
    refcampaign.script(Scripted(429, body="{}", headers={"Retry-After": retry_after}))
    assert post(client, checkout_event("cs_test_retry_after")).status_code == 200
    wait_delivered(refcampaign)
    [retried] = [line for line in attempt_lines(worker) if line["outcome"] == "retried"]
    assert retried["error"] == "HTTP 429"
    assert retried["delay"] <= 1  # the test deployment's backoff, not a crash's
    assert "attempt_crashed" not in worker.output()


# --- proxy and CA settings, per destination ------------------------------------------------


@pytest.fixture()
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy().start()
    yield server
    server.stop()


def without_proxy_settings(env: dict[str, str]) -> dict[str, str]:
    names = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    names |= {"requests_ca_bundle", "curl_ca_bundle"}
    return {k: v for k, v in env.items() if k.lower() not in names}


def test_proxy_settings_apply_per_destination(env, tmp_path, client, paypal, refcampaign, proxy):
    # RefCampaign is reached as "localhost", listed in NO_PROXY; PayPal as 127.0.0.1, which is
    # not: only the verification goes through the proxy.
    rc_port = refcampaign.server_address[1]
    deployment = {
        **without_proxy_settings(env),
        "REFCAMPAIGN_API_URL": f"http://localhost:{rc_port}",
        "HTTP_PROXY": proxy.url,
        "NO_PROXY": "localhost",
    }
    worker = WorkerProcess(deployment, tmp_path / "worker.log").start()
    try:
        ipn(client, paypal, IPN.replace(b"{n}", b"PROXY"))
        wait_delivered(refcampaign)
    finally:
        worker.stop()
    assert proxy.seen() == [paypal.verify_url]
    assert [r["path"] for r in refcampaign.requests] == [PATH]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, valid for a day, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        # What a strict verifier (Python 3.13's default context) also asks of a CA.
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_requests_ca_bundle_is_honoured(env, tmp_path, client):
    cert, key = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure = RefCampaign(API_KEY)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    secure.start()
    deployment = {
        **without_proxy_settings(env),
        "REFCAMPAIGN_API_URL": f"https://127.0.0.1:{secure.server_address[1]}",
        "REQUESTS_CA_BUNDLE": str(cert),
    }
    worker = WorkerProcess(deployment, tmp_path / "worker.log").start()
    try:
        assert post(client, checkout_event("cs_test_own_ca")).status_code == 200
        assert wait_delivered(secure, timeout=20)["externalId"] == "cs_test_own_ca"
    finally:
        worker.stop()
        secure.stop()


# --- METRICS_BEARER_TOKEN ----------------------------------------------------------------------

TOKEN = "prom-token-5e1f-\u00e9"


@pytest.fixture()
def guarded(env: dict[str, str]) -> Any:
    settings = Settings.from_env({**env, "METRICS_BEARER_TOKEN": TOKEN})
    return create_app(settings).test_client()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        "Bearer prom-token-5e1f-",  # a prefix
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
    ],
)
def test_metrics_without_the_bearer_token_is_401(guarded, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in response.get_data(as_text=True)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_metrics_with_the_bearer_token_answers(guarded, scheme):
    # A header carries bytes: the token's UTF-8 bytes, as a client sends them.
    value = f"{scheme} {TOKEN}".encode().decode("latin-1")
    response = guarded.get("/metrics", headers={"Authorization": value})
    assert response.status_code == 200
    assert "refbridge_" in response.get_data(as_text=True)


def test_metrics_are_open_while_no_token_is_set(client):
    assert client.get("/metrics").status_code == 200
