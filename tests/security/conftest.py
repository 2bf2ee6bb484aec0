"""The app over real HTTP (local Functions host) wired to a genuine local Web PubSub service.

One host and one service serve the whole package; each test installs its own settings (the
autouse fixture of tests/conftest.py restores the environment afterwards) and waits until the
service is quiet, so no late event of one test lands in the next.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from devstack.servers import ServerThread
from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, RunningWebPubSub, ServiceSettings
from shared import health
from shared.config import reset_settings
from tests.apphost import ServedApp, serve_app
from tests.conftest import Issuer

# The genuine service's access key: distinctive, so that a leak into a log line or body is unmistakable.
SERVICE_KEY = "SecuritySuitePrimaryKey-7f3a9c1e5b2d4f60a8c7e9b1d3f5a7c9"
ATTACKER_KEY = "AttackerOwnServiceKey-000000000000000000000000000000000"
JSON_PROTOCOL = "json.webpubsub.azure.v1"
POLICY_GROUPS = ("chat", "news")
BEARER_AUDIENCE = "api://negotiate"


@pytest.fixture(autouse=True)
def _no_health_monitor_left() -> Iterator[None]:
    """/api/health keeps one monitor per process, with a worker thread per check; end it after each test.

    Otherwise its idle workers outlive this package and other tests that count probe threads see them.
    """
    yield
    health.reset_monitor()


@pytest.fixture(scope="package")
def app() -> Iterator[ServedApp]:
    with serve_app() as served:
        yield served


def service_for(app: ServedApp, key: str) -> LocalWebPubSub:
    handler = EventHandlerSettings(url_template=app.url("eventhandler"))
    return LocalWebPubSub(ServiceSettings(access_key=key, event_handlers=(handler,)))


@pytest.fixture(scope="package")
def _genuine(app: ServedApp) -> Iterator[RunningWebPubSub]:
    with service_for(app, SERVICE_KEY).run_in_thread() as running:
        yield running


@pytest.fixture
def service(_genuine: RunningWebPubSub) -> Iterator[RunningWebPubSub]:
    """The app's own service, with the app configured for it (connection string, anonymous negotiate)."""
    _genuine.upstream_log.clear()
    use_settings(
        WEBPUBSUB_CREDENTIAL="connectionstring",
        WEBPUBSUB_CONNECTION_STRING=_genuine.connection_string,
        NEGOTIATE_AUTH="anonymous",
        NEGOTIATE_GROUPS=",".join(POLICY_GROUPS),
    )
    yield _genuine
    _genuine.wait_until_quiet(timeout=10)


def use_settings(**values: str) -> None:
    """The app reads its settings from the environment on first use; start this test from these."""
    for name in [name for name in os.environ if name.startswith(("WEBPUBSUB_", "NEGOTIATE_", "EVENTHANDLER_"))]:
        del os.environ[name]
    os.environ.update(values)
    reset_settings()


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


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@pytest.fixture(scope="package")
def jwks_url(issuer: Issuer) -> Iterator[str]:
    """The fake issuer's signing keys, served over real HTTP for the app's own key download."""

    async def keys(request: Request) -> JSONResponse:
        return JSONResponse(issuer.jwks)

    with ServerThread(Starlette(routes=[Route("/keys", keys)]), name="jwks") as server:
        yield f"{server.base_url}/keys"


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
