"""Secrets the client handles are remembered for redaction the moment it sees them.

No server: a transport that echoes the request in its error stands in for a server
or proxy that quotes what it was sent (fault injection). Every value is new to this
process, so a secret remembered by an earlier test cannot make a case pass.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import httpx
import pytest

from reconciler.client import Client, RetryPolicy
from reconciler.client._redact import REDACTED, redact, remember_secret
from reconciler.errors import ApiError

NO_WAIT = RetryPolicy(attempts=1, base_delay=0.0, sleep=lambda _seconds: None)
TOKEN = "redaction-test-token"


def _fresh(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex}"


def _echo_every_request(request: httpx.Request) -> httpx.Response:
    echo = json.dumps({"body": request.content.decode()})
    return httpx.Response(400, json={"errors": [f"cannot use request {echo}"]}, request=request)


def test_env_values_sent_in_a_registration_are_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    value = _fresh("env-value")
    transport = httpx.MockTransport(_echo_every_request)
    with (
        Client("http://127.0.0.1:8200", TOKEN, retry=NO_WAIT, transport=transport) as client,
        pytest.raises(ApiError) as caught,
    ):
        client.register_plugin(
            "secret", "demo-kv", "v1.0.0", "demo-kv-1.0.0", "0" * 64, [], {"KEY": value}
        )
    assert "cannot use request" in str(caught.value)
    assert value not in str(caught.value)
    assert value not in caplog.text
    assert redact(f"echoed {value}.") == f"echoed {REDACTED}."


def test_connection_details_read_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = _fresh("postgres://admin@db.internal:5432/orders")
    username = _fresh("db-admin")

    def answer(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v1/db/config/orders")
        data = {
            "plugin_name": "demo-db",
            "plugin_version": "v1.0.0",
            "connection_details": {"connection_url": url, "username": username},
        }
        return httpx.Response(200, json={"data": data}, request=request)

    transport = httpx.MockTransport(answer)
    with Client("http://127.0.0.1:8200", TOKEN, retry=NO_WAIT, transport=transport) as client:
        read = client.read_connection("db/", "orders")
    assert read == {"plugin_name": "demo-db", "plugin_version": "v1.0.0"}
    for secret in (url, username):
        assert redact(f"the server said {secret}") == f"the server said {REDACTED}"
    assert url not in caplog.text and username not in caplog.text


@pytest.mark.parametrize(
    "encode",
    [
        lambda secret: json.dumps(secret)[1:-1],
        lambda secret: quote(secret, safe=""),
        quote_plus,
    ],
    ids=["json", "url", "url-plus"],
)
def test_a_secret_echoed_encoded_is_redacted(encode: Callable[[str], str]) -> None:
    # Characters each encoding changes: a quote, a slash, a plus, an equals sign, a space.
    secret = _fresh('pw "a/b+c=d e"')
    encoded = encode(secret)
    assert encoded != secret
    remember_secret(secret)
    assert redact(f"GET /v1/x?token={encoded} failed") == f"GET /v1/x?token={REDACTED} failed"
