"""Dependencies that fail on demand, behind the real Azure SDK clients.

- `TimedAdapter`: a fake Key Vault at the SDK's transport that is slow, or slower than the request's
  read timeout (then it raises ReadTimeout after that timeout, as a socket would).
- `TcpProxy`: a real TCP proxy in front of a local service that can delay every request.
- `IdentityEndpoint`: an App Service managed-identity endpoint on a real port, for any resource,
  that can be stopped (connections refused) and started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devstack.servers import ServerThread, bind_socket
from tests.support.fakes import FakeAdapter


class TimedAdapter(FakeAdapter):
    """A fake server whose handler's `delay_seconds` counts against the request's read timeout."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        delay = float(getattr(self.handler, "delay_seconds", 0.0))
        timeout = kwargs.get("timeout")
        read_timeout = timeout[1] if isinstance(timeout, tuple) else timeout
        if read_timeout is not None and delay > read_timeout:
            time.sleep(read_timeout)
            raise requests.exceptions.ReadTimeout(f"no answer within {read_timeout} s")
        return super().send(request, **kwargs)


def transport_with_timeouts(adapter: FakeAdapter, options: dict[str, Any]) -> RequestsTransport:
    """The SDK transport over `adapter`, with the timeouts the app gives its own (SDK_CLIENT_OPTIONS).

    A client given a ready transport does not apply timeout options to it, so they go in here.
    """
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(
        session=session,
        session_owner=False,
        connection_timeout=options["connection_timeout"],
        read_timeout=options["read_timeout"],
    )


class IdentityEndpoint:
    """The managed-identity protocol azure-identity speaks when IDENTITY_ENDPOINT is set, for any resource.

    The local Web PubSub service's own identity endpoint issues tokens for Web PubSub only; Key Vault
    needs one for its resource too. `stop` refuses connections from then on; `start` serves again.
    """

    HEADER = "faults-identity-header"

    def __init__(self) -> None:
        self.tokens_issued = 0
        self._server: ServerThread | None = self._serve(0).start()
        self.port = self._server.port

    @property
    def environment(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{self.port}/token", "IDENTITY_HEADER": self.HEADER}

    def _serve(self, port: int) -> ServerThread:
        async def token(request: Request) -> JSONResponse:
            if request.headers.get("x-identity-header") != self.HEADER:
                return JSONResponse({"statusCode": 401, "message": "wrong X-IDENTITY-HEADER"}, status_code=401)
            self.tokens_issued += 1
            return JSONResponse(
                {
                    "access_token": f"identity-token-{self.tokens_issued}",
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": request.query_params.get("resource", ""),
                    "token_type": "Bearer",
                }
            )

        return ServerThread(Starlette(routes=[Route("/token", token)]), port=port, name="identity")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def start(self) -> None:
        if self._server is None:
            self._server = self._serve(self.port).start()


class TcpProxy:
    """Forwards TCP connections to `target_port`, holding every chunk the client sends for `delay` seconds."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self._socket = bind_socket("127.0.0.1", 0)
        self.port: int = self._socket.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, sock=self._socket), self._loop
        ).result(5)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            connections = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer, delayed=True),
                self._pipe(upstream_reader, client_writer, delayed=False),
            )
        finally:
            for writer in (client_writer, upstream_writer):
                with contextlib.suppress(Exception):
                    writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if delayed and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()
