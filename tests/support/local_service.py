"""Clients and a fake event handler for tests of the local Web PubSub service, independent of its own code.

Client tokens are made with PyJWT directly, WebSockets with the websockets library, and the fake
event handler is a Starlette app that records what the service sends. The fixtures that serve them
live in tests/devstack/conftest.py.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from devstack.webpubsub import DEFAULT_ACCESS_KEY, RunningWebPubSub

ACCESS_KEY = DEFAULT_ACCESS_KEY


JSON_PROTOCOL = "json.webpubsub.azure.v1"


RELIABLE_PROTOCOL = "json.reliable.webpubsub.azure.v1"


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the fake event handler received."""

    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    @property
    def ce_type(self) -> str | None:
        return self.header("ce-type")

    @property
    def connection_id(self) -> str | None:
        return self.header("ce-connectionid")

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[ReceivedRequest], Response | Awaitable[Response]]


def allow_all_origins(_: ReceivedRequest) -> Response:
    return Response(headers={"WebHook-Allowed-Origin": "*"})


def no_content(_: ReceivedRequest) -> Response:
    return Response(status_code=204)


@dataclass
class FakeEventHandler:
    """A recording event handler whose answers each test chooses.

    ``validate`` answers OPTIONS and GET (abuse protection), ``connect`` the connect event,
    ``user_event`` user events; connected and disconnected always get 204.
    """

    #: ``http://127.0.0.1:<port>``; events go to ``<base_url>/api/eventhandler`` unless a test says otherwise.
    base_url: str = ""
    url: str = ""
    validate: Responder = allow_all_origins
    connect: Responder = no_content
    user_event: Responder = no_content
    requests: list[ReceivedRequest] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def reset(self) -> None:
        with self._changed:
            self.validate, self.connect, self.user_event = allow_all_origins, no_content, no_content
            self.requests.clear()

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "OPTIONS", "HEAD", "PUT", "DELETE"])]
        )

    def events(self, ce_type: str | None = None, connection_id: str | None = None) -> list[ReceivedRequest]:
        with self._changed:
            return [
                request
                for request in self.requests
                if request.method == "POST"
                and (ce_type is None or request.ce_type == ce_type)
                and (connection_id is None or request.connection_id == connection_id)
            ]

    def wait_for(self, predicate: Callable[[ReceivedRequest], bool], timeout: float = 5.0) -> ReceivedRequest:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("the event handler did not receive the expected request")
                self._changed.wait(remaining)

    def wait_for_event(self, ce_type: str, connection_id: str | None = None, timeout: float = 5.0) -> ReceivedRequest:
        return self.wait_for(
            lambda request: (
                request.method == "POST"
                and request.ce_type == ce_type
                and (connection_id is None or request.connection_id == connection_id)
            ),
            timeout,
        )

    async def _handle(self, request: Request) -> Response:
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.raw:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        received = ReceivedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=headers,
            body=await request.body(),
        )
        if request.method in ("OPTIONS", "GET"):
            responder = self.validate
        elif (received.ce_type or "") == "azure.webpubsub.sys.connect":
            responder = self.connect
        elif (received.ce_type or "").startswith("azure.webpubsub.user."):
            responder = self.user_event
        else:
            responder = no_content
        with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
        response = responder(received)
        return await response if inspect.isawaitable(response) else response


def client_token(
    endpoint: str,
    hub: str,
    *,
    key: str = ACCESS_KEY,
    audience: str | None = None,
    expires_in: float = 3600,
    user_id: str | None = None,
    roles: list[str] | None = None,
    groups: list[str] | str | None = None,
    **claims: Any,
) -> str:
    """A client access token made with PyJWT directly: independent of the service's own code."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "aud": audience if audience is not None else f"{endpoint}/client/hubs/{hub}",
        "iat": now,
        "exp": now + expires_in,
        **claims,
    }
    if user_id is not None:
        payload["sub"] = user_id
    if roles is not None:
        payload["role"] = roles
    if groups is not None:
        payload["webpubsub.group"] = groups
    return jwt.encode(payload, key.encode(), algorithm="HS256")


def client_url(service: RunningWebPubSub, hub: str, token: str | None = None, **query: str) -> str:
    url = service.endpoint.replace("http://", "ws://") + f"/client/hubs/{hub}"
    params = dict(query)
    if token is not None:
        params["access_token"] = token
    if params:
        url += "?" + "&".join(f"{name}={value}" for name, value in params.items())
    return url


class JsonClient:
    """A plain WebSocket client speaking a JSON subprotocol frame by frame."""

    def __init__(self, connection: ClientConnection, connected: dict[str, Any]) -> None:
        self.connection = connection
        self.connected = connected
        self.connection_id: str = connected["connectionId"]

    def send(self, frame: dict[str, Any]) -> None:
        self.connection.send(json.dumps(frame))

    def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = json.loads(self.connection.recv(timeout=timeout))
        assert isinstance(frame, dict)
        return frame

    def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with an ackId and return the next frame (its ack, when nothing else is due)."""
        self.send(frame)
        return self.receive()


@contextlib.contextmanager
def json_client(
    service: RunningWebPubSub,
    hub: str,
    *,
    protocol: str = JSON_PROTOCOL,
    **token_options: Any,
) -> Iterator[JsonClient]:
    token = client_token(service.endpoint, hub, **token_options)
    with open_socket(client_url(service, hub, token), protocol) as connection:
        connected = json.loads(connection.recv(timeout=5))
        assert connected["event"] == "connected", connected
        yield JsonClient(connection, connected)


def open_socket(url: str, *protocols: str, **options: Any) -> ClientConnection:
    """A plain WebSocket connection offering ``protocols`` (none: a simple WebSocket client)."""
    connection: ClientConnection = connect(
        url, subprotocols=[Subprotocol(name) for name in protocols] or None, open_timeout=5, **options
    )
    return connection


def refused_handshake(url: str, *protocols: str, **options: Any) -> tuple[int, bytes]:
    """The HTTP status and body with which the service refused to upgrade."""
    try:
        with open_socket(url, *protocols, **options):
            pass
    except InvalidStatus as refused:
        return refused.response.status_code, bytes(refused.response.body or b"")
    raise AssertionError("the handshake was accepted")


def close_code(connection: ClientConnection) -> int:
    """Read until the service closes the connection; the close code it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        _read_forever(connection)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


def _read_forever(connection: ClientConnection) -> None:
    while True:
        connection.recv(timeout=5)
