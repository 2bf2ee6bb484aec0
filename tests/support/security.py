"""The security suite's helpers: the genuine service's key, an attacker's key, and what a client does.

The suite's fixtures (tests/security/conftest.py) run the app over real HTTP, wired to a genuine
local Web PubSub service; these helpers negotiate, mint tokens as a key holder could, and connect.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import jwt
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, RunningWebPubSub, ServiceSettings
from tests.support.apphost import ServedApp
from tests.support.issuer import Issuer

# The genuine service's access key: distinctive, so that a leak into a log line or body is unmistakable.
SERVICE_KEY = "SecuritySuitePrimaryKey-7f3a9c1e5b2d4f60a8c7e9b1d3f5a7c9"
ATTACKER_KEY = "AttackerOwnServiceKey-000000000000000000000000000000000"
JSON_PROTOCOL = "json.webpubsub.azure.v1"
POLICY_GROUPS = ("chat", "news")
BEARER_AUDIENCE = "api://negotiate"


def service_for(app: ServedApp, key: str) -> LocalWebPubSub:
    handler = EventHandlerSettings(url_template=app.url("eventhandler"))
    return LocalWebPubSub(ServiceSettings(access_key=key, event_handlers=(handler,)))


def negotiated(app: ServedApp, user_id: str = "alice", **params: Any) -> dict[str, Any]:
    response = app.client.get("negotiate", params={"userId": user_id, **params})
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def client_token(service: RunningWebPubSub, key: str, **claims: Any) -> str:
    """A client access token made directly with a key, as a holder of that key could."""
    payload = {"aud": f"{service.endpoint}/client/hubs/chat", "exp": 4_102_444_800, **claims}
    return jwt.encode(payload, key.encode(), algorithm="HS256")


def client_url(service: RunningWebPubSub, token: str) -> str:
    return service.endpoint.replace("http://", "ws://") + f"/client/hubs/chat?access_token={token}"


@contextlib.contextmanager
def open_client(url: str) -> Iterator[ClientConnection]:
    """A JSON-subprotocol client, once the service said `connected`."""
    with connect(url, subprotocols=[Subprotocol(JSON_PROTOCOL)], open_timeout=10) as connection:
        connected = json.loads(connection.recv(timeout=10))
        assert connected["event"] == "connected", connected
        yield connection


def refused_status(url: str) -> int:
    """The HTTP status with which the service refused the WebSocket handshake."""
    try:
        with connect(url, subprotocols=[Subprotocol(JSON_PROTOCOL)], open_timeout=10):
            pass
    except InvalidStatus as refused:
        return refused.response.status_code
    raise AssertionError("the service accepted the connection")


def service_settings(service: RunningWebPubSub, **overrides: str) -> dict[str, str]:
    """The app on the genuine service's connection string, anonymous negotiate, with overrides."""
    return {
        "WEBPUBSUB_CREDENTIAL": "connectionstring",
        "WEBPUBSUB_CONNECTION_STRING": service.connection_string,
        "NEGOTIATE_AUTH": "anonymous",
        **overrides,
    }


def bearer_settings(issuer: Issuer, jwks_url: str, service: RunningWebPubSub) -> dict[str, str]:
    """NEGOTIATE_AUTH=bearer against the fake issuer, tokens for the genuine service."""
    return {
        "WEBPUBSUB_CREDENTIAL": "connectionstring",
        "WEBPUBSUB_CONNECTION_STRING": service.connection_string,
        "NEGOTIATE_AUTH": "bearer",
        "NEGOTIATE_BEARER_ISSUER": issuer.issuer,
        "NEGOTIATE_BEARER_AUDIENCE": BEARER_AUDIENCE,
        "NEGOTIATE_BEARER_JWKS_URI": jwks_url,
    }
