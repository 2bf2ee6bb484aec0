"""HTTP stand-ins for dependencies on real sockets: answering, refusing, silent, failing, slow and hostile."""

from __future__ import annotations

import asyncio
import enum
import json
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from devstack.servers import ServerThread

IDENTITY_HEADER = "stand-in-identity-header"  # the secret App Service passes to its identity endpoint


class StandIn:
    """An HTTP server on a real socket answering every request with `status`, after `delay` seconds."""

    def __init__(
        self, status: int = 200, *, delay: float = 0.0, headers: dict[str, str] | None = None, body: bytes = b""
    ):
        self.status = status
        self.delay = delay
        self.headers = headers or {}
        self.body = body
        self.seen: list[str] = []
        self.gate = threading.Event()  # cleared: requests wait until it is set again
        self.gate.set()
        self.app = Starlette(routes=[Route("/{path:path}", self._answer, methods=["GET", "HEAD", "POST"])])

    async def _answer(self, request: Request) -> Response:
        self.seen.append(f"{request.method} {request.url.path}?{request.url.query}")
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(self.delay)
        return Response(self.body, status_code=self.status, headers=self.headers)

    def seen_at(self, path: str) -> list[str]:
        """The requests for `path` only (health probes the service's health and its REST API)."""
        return [line for line in self.seen if line.split(" ", 1)[1].startswith(path + "?")]


def serve(stack: ExitStack, stand_in: StandIn, **uvicorn_options: Any) -> str:
    server = stack.enter_context(ServerThread(stand_in.app, name="stand-in", shutdown_timeout=1, **uvicorn_options))
    stack.callback(stand_in.gate.set)  # runs before the server stops: no request left waiting
    return server.base_url


def refusing(stack: ExitStack) -> str:
    """A port that is bound but not listening: every connection is refused."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def silent(stack: ExitStack) -> str:
    """A port that accepts TCP connections (the kernel completes them) and never says a word."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def use_identity_endpoint(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    """azure-identity's ManagedIdentityCredential asks `base_url` as it asks App Service's identity endpoint."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{base_url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


class KeyBehaviour(enum.StrEnum):
    """How a `KeyEndpoint` answers."""

    ANSWER = "answer"  # the key set, at once
    FAIL = "fail"  # HTTP 500
    TRICKLE = "trickle"  # the key set, one byte every `trickle_seconds`
    HUGE = "huge"  # `huge_bytes` of whitespace before the key set, as fast as the socket takes them
    REDIRECT = "redirect"  # 302 to `redirect_to`
    SILENT = "silent"  # accepts the request and never answers


class KeyEndpoint:
    """An issuer's signing-key endpoint (JWKS, and discovery pointing at it) on a real socket.

    `behaviour` can be changed while it serves; `requests` counts the downloads it saw.
    """

    def __init__(self, jwks: dict[str, Any], behaviour: KeyBehaviour = KeyBehaviour.ANSWER):
        self.jwks = jwks
        self.behaviour = behaviour
        self.trickle_seconds = 0.2
        self.huge_bytes = 300 * 1024 * 1024
        self.redirect_to = ""
        self.requests: list[str] = []
        self.bytes_sent = 0
        self.closing = threading.Event()  # set on shutdown: trickles and silences end
        self.app = Starlette(routes=[Route("/{path:path}", self._answer, methods=["GET"])])

    async def _answer(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        body = json.dumps(self.jwks).encode()
        behaviour = self.behaviour
        if behaviour is KeyBehaviour.FAIL:
            return Response(status_code=500)
        if behaviour is KeyBehaviour.REDIRECT:
            return RedirectResponse(self.redirect_to, status_code=302)
        if behaviour is KeyBehaviour.SILENT:
            while not self.closing.is_set():
                await asyncio.sleep(0.05)
            return Response(status_code=503)
        if behaviour is KeyBehaviour.TRICKLE:
            return StreamingResponse(self._trickle(body), media_type="application/json")
        if behaviour is KeyBehaviour.HUGE:
            return StreamingResponse(self._huge(body), media_type="application/json")
        return JSONResponse(self.jwks)

    async def _trickle(self, body: bytes) -> AsyncIterator[bytes]:
        for index in range(len(body)):
            if self.closing.is_set():
                return
            self.bytes_sent += 1
            yield body[index : index + 1]
            await asyncio.sleep(self.trickle_seconds)

    async def _huge(self, body: bytes) -> AsyncIterator[bytes]:
        chunk = b" " * (1024 * 1024)
        for _ in range(self.huge_bytes // len(chunk)):
            if self.closing.is_set():
                return
            self.bytes_sent += len(chunk)
            yield chunk
        yield body

    def serve(self, stack: ExitStack) -> str:
        """Serve until `stack` closes; returns the key set's URL (discovery is at the same host)."""
        server = stack.enter_context(ServerThread(self.app, name="keys", shutdown_timeout=1))
        stack.callback(self.closing.set)  # runs before the server stops
        return f"{server.base_url}/keys"
