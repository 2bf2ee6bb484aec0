"""HTTP stand-ins for dependencies on real sockets: answering, refusing, silent, failing and slow."""

from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.servers import ServerThread

IDENTITY_HEADER = "stand-in-identity-header"  # the secret App Service passes to its identity endpoint


class StandIn:
    """An HTTP server on a real socket answering every request with `status`, after `delay` seconds."""

    def __init__(self, status: int = 200, *, delay: float = 0.0, headers: dict[str, str] | None = None):
        self.status = status
        self.delay = delay
        self.headers = headers or {}
        self.seen: list[str] = []
        self.gate = threading.Event()  # cleared: requests wait until it is set again
        self.gate.set()
        self.app = Starlette(routes=[Route("/{path:path}", self._answer, methods=["GET", "HEAD"])])

    async def _answer(self, request: Request) -> Response:
        self.seen.append(f"{request.method} {request.url.path}?{request.url.query}")
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(self.delay)
        return Response(status_code=self.status, headers=self.headers)


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
