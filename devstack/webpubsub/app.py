"""Wiring: the Starlette application, its lifetime, and how to run it in this process.

``LocalWebPubSub`` owns the service's state (connections, upstream dispatcher and log) and its
ASGI ``app``. ``run_in_thread()`` serves it on a free port in a background thread (via
:class:`devstack.servers.ServerThread`) and returns a :class:`RunningWebPubSub` with the
endpoint, connection string and managed-identity environment a client or app needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto import events

from ..servers import ServerThread
from .client_endpoint import ClientEndpoint
from .connections import ConnectionManager
from .identity import IDENTITY_PATH, ManagedIdentityEndpoint
from .rest import RestApi
from .settings import EventHandlerSettings, ServiceSettings
from .upstream import UpstreamDispatcher, UpstreamLog

__all__ = ["MAX_FRAME_BYTES", "LocalWebPubSub", "RunningWebPubSub", "connection_string"]

#: The service's WebSocket frame limit; larger frames close the connection with 1009.
MAX_FRAME_BYTES = 1024 * 1024
UPSTREAM_LOG_PATH = "/_devstack/upstream-log"
CONNECTIONS_PATH = "/_devstack/connections"

_T = TypeVar("_T")


class ClientWebSocketProtocol(WSProtocol):
    """uvicorn's wsproto protocol, telling a lost connection (1006) from a close frame without a code (1005).

    uvicorn reports both as 1005. The service must tell them apart: a browser's ``close()`` sends
    the second and ends a reliable connection for good, while a lost network leaves it recoverable.
    """

    _close_frame_received = False

    def handle_close(self, event: events.CloseConnection) -> None:
        self._close_frame_received = True
        super().handle_close(event)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake_complete and not self._close_frame_received:
            # The app reads this one first; the 1005 uvicorn queues after it is never read.
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        super().connection_lost(exc)


def connection_string(endpoint: str, access_key: str) -> str:
    return f"Endpoint={endpoint};AccessKey={access_key};Version=1.0;"


class LocalWebPubSub:
    """A local Web PubSub service: a development stand-in, never used in production."""

    def __init__(self, settings: ServiceSettings | None = None) -> None:
        self.settings = settings or ServiceSettings()
        self.upstream_log = UpstreamLog(self.settings.upstream_log_size)
        self.dispatcher = UpstreamDispatcher(self.settings, self.upstream_log)
        self.connections = ConnectionManager(self.settings, self.dispatcher)
        clients = ClientEndpoint(self.settings, self.connections, self.dispatcher)
        rest = RestApi(self.settings, self.connections)
        identity = ManagedIdentityEndpoint(self.settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app = Starlette(
            routes=[
                WebSocketRoute("/client/hubs/{hub}", clients.handle),
                WebSocketRoute("/client", clients.handle),
                WebSocketRoute("/client/", clients.handle),
                Route("/api/{rest:path}", rest.handle, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
                Route(IDENTITY_PATH, identity.handle, methods=["GET"]),
                Route(UPSTREAM_LOG_PATH, self._upstream_log_route, methods=["GET"]),
                Route(CONNECTIONS_PATH, self._connections_route, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @property
    def uvicorn_options(self) -> dict[str, Any]:
        """Server options the service relies on; pass them to whatever runs ``app``.

        wsproto, not uvicorn's default: its websockets-sansio protocol answers a refused handshake
        correctly but then logs a spurious "returned without completing handshake" error.
        """
        return {"ws_max_size": MAX_FRAME_BYTES, "ws": ClientWebSocketProtocol}

    def run_in_thread(
        self, *, host: str = "127.0.0.1", port: int = 0, public_host: str | None = None, **uvicorn_options: Any
    ) -> RunningWebPubSub:
        """Serve on ``host:port`` (0 = a free port) in a background thread; returns once it accepts.

        ``public_host`` is the host name clients should use in URLs (defaults to ``host``); it
        goes into the endpoint and the connection string, and tokens' audiences must name it.
        """
        options = {**self.uvicorn_options, **uvicorn_options}
        server = ServerThread(self.app, host=host, port=port, name="webpubsub", **options)
        server.start()
        return RunningWebPubSub(self, server, public_host or host)

    def configure_event_handlers(self, handlers: Iterable[EventHandlerSettings]) -> None:
        """Replace the event handlers, also while running (for launchers that learn URLs late)."""
        replacement = tuple(handlers)

        def apply() -> None:
            self.dispatcher.configure(replacement)

        if self._loop is None:
            apply()
        else:
            self.call(apply)

    def call(self, function: Callable[[], _T], timeout: float = 5.0) -> _T:
        """Run ``function`` on the service's event loop and return its result.

        The service's state belongs to its loop; tests and tools in other threads use this to
        look at it or poke it (for example ``connections.drop_transport``).
        """
        if self._loop is None:
            raise RuntimeError("the service is not running")

        async def run() -> _T:
            return function()

        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            await self.connections.shutdown()
            await self.dispatcher.aclose()
            self._loop = None

    async def _upstream_log_route(self, _: Request) -> JSONResponse:
        return JSONResponse([record.to_json() for record in self.upstream_log.records()])

    async def _connections_route(self, _: Request) -> JSONResponse:
        return JSONResponse(self.connections.snapshot())


class RunningWebPubSub:
    """A service serving in a background thread of this process; stop it when done."""

    def __init__(self, service: LocalWebPubSub, server: ServerThread, public_host: str) -> None:
        self.service = service
        self.server = server
        self.endpoint = f"http://{public_host}:{server.port}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.endpoint, self.service.settings.access_key)

    @property
    def upstream_log(self) -> UpstreamLog:
        return self.service.upstream_log

    def identity_environment(self) -> dict[str, str]:
        """Environment variables that point azure-identity's ManagedIdentityCredential here."""
        return {
            "IDENTITY_ENDPOINT": self.endpoint + IDENTITY_PATH,
            "IDENTITY_HEADER": self.service.settings.identity_header,
        }

    def wait_until_quiet(self, timeout: float = 5.0) -> None:
        """Block until no client is connected (or recoverable) and every upstream event is out.

        Tests call it between cases so that one case's late ``disconnected`` event cannot land
        in the next; raises TimeoutError if connections are still open after ``timeout``.
        """
        manager = self.service.connections
        deadline = time.monotonic() + timeout
        while True:
            manager.changed.clear()
            if self.service.call(manager.is_quiet):
                return
            if not manager.changed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("clients are still connected to the local Web PubSub service")

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> RunningWebPubSub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
