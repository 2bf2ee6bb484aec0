"""Wiring: the Starlette application, its lifetime, and how to run it in this process.

``LocalWebPubSub`` owns the service's state (connections, upstream dispatcher and log, its own
identity's issuer) and its ASGI ``app``. ``run_in_thread()`` serves it on a free port in a
background thread (via :class:`devstack.servers.ServerThread`) and returns a
:class:`RunningWebPubSub` with the endpoint, connection string, managed-identity environment and
upstream identity a client or app needs.

The service knows its public endpoint (``bind_endpoint``): client and REST tokens must name it,
and every HTTP or WebSocket request must carry a ``Host`` that is a loopback name or the
endpoint's own host, so a web page that rebinds its DNS name to 127.0.0.1 cannot talk to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto import events

from ..servers import ServerThread
from .client_endpoint import ClientEndpoint
from .connections import ConnectionManager
from .identity import IDENTITY_PATH, ManagedIdentityEndpoint
from .issuer import DISCOVERY_PATH, JWKS_PATH, LocalIssuer, UpstreamIdentity
from .mqtt_endpoint import MQTT_PATH, MqttEndpoint
from .rest import RestApi
from .settings import EventHandlerSettings, HubSettings, ServiceSettings
from .upstream import UpstreamDispatcher, UpstreamLog

__all__ = ["HUBS_PATH", "MAX_FRAME_BYTES", "LocalWebPubSub", "RunningWebPubSub", "connection_string", "is_loopback"]

logger = logging.getLogger("devstack.webpubsub")

#: The service's WebSocket frame limit; larger frames close the connection with 1009.
MAX_FRAME_BYTES = 1024 * 1024
UPSTREAM_LOG_PATH = "/_devstack/upstream-log"
CONNECTIONS_PATH = "/_devstack/connections"
#: Read-only view of the hubs' event handler settings (``/_devstack/hubs/{hub}`` for one hub).
HUBS_PATH = "/_devstack/hubs"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

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


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: answer only requests whose ``Host`` is a loopback name or the service's own host.

    A browser page that rebinds its DNS name to 127.0.0.1 still sends its own name in ``Host``;
    refusing that name keeps such a page away from the REST API, the identity endpoint and the
    client WebSockets. Refused with 403 before any route runs, for HTTP and WebSocket alike.
    """

    def __init__(self, app: ASGIApp, public_host: Callable[[], str | None]) -> None:
        self.app = app
        self.public_host = public_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"code": "InvalidHost", "message": "The Host header must name this machine or the service's endpoint."}
        ).encode()
        start = {
            "status": 403,
            "headers": [(b"content-type", b"application/json; charset=utf-8"), (b"x-ms-error-code", b"InvalidHost")],
        }
        if scope["type"] == "http":
            await send({"type": "http.response.start", **start})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", **start})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    def _allowed(self, scope: Scope) -> bool:
        hosts = [value for name, value in scope.get("headers", ()) if name == b"host"]
        if len(hosts) != 1:
            return False
        try:
            hostname = urlsplit("//" + hosts[0].decode("latin-1")).hostname or ""
        except ValueError:
            return False
        public = self.public_host()
        return hostname in _LOOPBACK_NAMES or (public is not None and hostname == public.lower())


class LocalWebPubSub:
    """A local Web PubSub service: a development stand-in, never used in production."""

    def __init__(self, settings: ServiceSettings | None = None) -> None:
        self.settings = settings or ServiceSettings()
        #: The public endpoint (``http://localhost:8080``); set by ``bind_endpoint`` before serving.
        self.endpoint: str | None = None
        self.issuer = LocalIssuer(self.settings.service_principal_id)
        self.upstream_log = UpstreamLog(self.settings.upstream_log_size)
        self.dispatcher = UpstreamDispatcher(self.settings, self.upstream_log, self._upstream_token)
        self.connections = ConnectionManager(self.settings, self.dispatcher)
        clients = ClientEndpoint(self.settings, self.connections, self.dispatcher, self.bound_endpoint)
        mqtt = MqttEndpoint(self.settings, self.connections, self.dispatcher, self.bound_endpoint)
        rest = RestApi(self.settings, self.connections, self.bound_endpoint)
        identity = ManagedIdentityEndpoint(self.settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        routes = Starlette(
            routes=[
                WebSocketRoute("/client/hubs/{hub}", clients.handle),
                WebSocketRoute("/client", clients.handle),
                WebSocketRoute("/client/", clients.handle),
                WebSocketRoute(MQTT_PATH, mqtt.handle),
                Route("/api/{rest:path}", rest.handle, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
                Route(IDENTITY_PATH, identity.handle, methods=["GET"]),
                Route(DISCOVERY_PATH, self._discovery_route, methods=["GET"]),
                Route(JWKS_PATH, self._jwks_route, methods=["GET"]),
                Route(UPSTREAM_LOG_PATH, self._upstream_log_route, methods=["GET"]),
                Route(CONNECTIONS_PATH, self._connections_route, methods=["GET"]),
                Route(HUBS_PATH, self._hubs_route, methods=["GET"]),
                Route(HUBS_PATH + "/{hub}", self._hub_route, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )
        self.app = HostCheck(routes, self._public_host)

    def bind_endpoint(self, endpoint: str) -> None:
        """Tell the service its public endpoint: what tokens must name and which ``Host`` it answers."""
        self.endpoint = endpoint.rstrip("/")

    def bound_endpoint(self) -> str:
        if self.endpoint is None:
            raise RuntimeError("the service's endpoint is not known yet (bind_endpoint)")
        return self.endpoint

    def upstream_identity(self) -> UpstreamIdentity:
        """Issuer, JWKS URL and object id of the service's identity, as the app validates them."""
        return self.issuer.identity(self.bound_endpoint())

    def _public_host(self) -> str | None:
        return urlsplit(self.endpoint).hostname if self.endpoint else None

    def _upstream_token(self, resource: str) -> str:
        return self.issuer.token(self.bound_endpoint(), resource)

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
        name = public_host or host
        self.bind_endpoint(f"http://{f'[{name}]' if ':' in name else name}:{server.port}")
        warn_if_exposed(host)
        server.start()
        return RunningWebPubSub(self, server)

    def configure_event_handlers(
        self, handlers: Iterable[EventHandlerSettings], hubs: Iterable[HubSettings] | None = None
    ) -> None:
        """Replace the default event handlers (and the hubs' own), also while running.

        For launchers that learn URLs late and tests that change handlers between cases.
        """
        replacement = tuple(handlers)
        hub_settings = None if hubs is None else tuple(hubs)

        def apply() -> None:
            self.dispatcher.configure(replacement, hub_settings)

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

    async def _hubs_route(self, _: Request) -> JSONResponse:
        """Every configured hub's settings, and the handlers every other hub uses, in the service's shape."""
        return JSONResponse(
            {
                "value": [hub.to_json() for hub in self.dispatcher.hubs],
                "defaultEventHandlers": [
                    {**handler.to_json(), "hubs": sorted(handler.hubs) if handler.hubs is not None else None}
                    for handler in self.dispatcher.event_handlers
                ],
            }
        )

    async def _hub_route(self, request: Request) -> JSONResponse:
        """The effective settings of one hub: what the service applies to its connections."""
        name = request.path_params["hub"]
        handlers = self.dispatcher.handlers_of(name)
        return JSONResponse(HubSettings(name=name, event_handlers=handlers).to_json())

    async def _discovery_route(self, _: Request) -> JSONResponse:
        return JSONResponse(self.issuer.discovery(self.bound_endpoint()))

    async def _jwks_route(self, _: Request) -> JSONResponse:
        return JSONResponse(self.issuer.jwks())


def warn_if_exposed(host: str) -> None:
    """A loud warning when the service listens beyond this machine: it is a development tool."""
    if is_loopback(host):
        return
    logger.warning(
        "The local Web PubSub service listens on %s, reachable from other machines. It is a development "
        "tool with a public default key and no production-grade security: bind it to 127.0.0.1 unless "
        "you mean to expose it.",
        host,
    )


class RunningWebPubSub:
    """A service serving in a background thread of this process; stop it when done."""

    def __init__(self, service: LocalWebPubSub, server: ServerThread) -> None:
        self.service = service
        self.server = server
        self.endpoint = service.bound_endpoint()

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

    @property
    def upstream_identity(self) -> UpstreamIdentity:
        """Issuer URL, JWKS URL and object id of the identity the service calls event handlers with."""
        return self.service.upstream_identity()

    def event_handler_auth_settings(self, audience: str) -> dict[str, str]:
        """The app settings for ``EVENTHANDLER_AUTH=bearer`` against this service's ManagedIdentity auth."""
        return self.upstream_identity.app_settings(audience)

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
