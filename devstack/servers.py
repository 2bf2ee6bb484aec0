"""Run any ASGI application under uvicorn in a background thread.

The local stack (local Functions host, local Web PubSub service) and the tests that drive it
need real servers on real ports, started and stopped from ordinary synchronous code. This
helper is the one place that knows how to do that:

    server = ServerThread(app, port=0)        # binds now, so server.port is known at once
    server.start()                            # returns when uvicorn accepts connections
    ...  httpx.get(server.base_url + "/...")
    server.stop()                             # graceful, bounded by ``shutdown_timeout``

or as a context manager: ``with ServerThread(app) as server: ...``.

The socket is bound in the constructor, before uvicorn starts, so that two servers that need
each other's URLs (the host needs the service's connection string, the service needs the
host's event handler URL) can both be created on free ports first and started afterwards.
Extra keyword arguments go to ``uvicorn.Config`` unchanged (for example ``ws_max_size`` or
``access_log=True``). Logging is left to the caller: by default uvicorn does not install its
own logging configuration, so its records flow to whatever the process configured; token values
in the URLs uvicorn logs are blanked first (see :func:`redact_tokens_in_server_logs`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = [
    "NO_DELAY",
    "ServerStartError",
    "ServerThread",
    "TokenRedactingFilter",
    "bind_socket",
    "redact_tokens_in_server_logs",
]

#: The socket option that switches Nagle's algorithm off: every socket of the stack, listening or connecting, has it.
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
#: The loggers on which uvicorn writes request lines with their query strings.
UVICORN_REQUEST_LOGGERS = ("uvicorn.error", "uvicorn.access")
# A query parameter whose name contains "token" (access_token, awps_reconnection_token, ...).
_TOKEN_PARAMETER = re.compile(r"([?&][^=&#\s\"']*token[^=&#\s\"']*=)[^&#\s\"']+", re.IGNORECASE)


class TokenRedactingFilter(logging.Filter):
    """Blank the values of token query parameters in a log line, keeping the rest of it.

    uvicorn logs every WebSocket handshake with its query on ``uvicorn.error`` (``"WebSocket
    /client/hubs/chat?access_token=..." [accepted]``, even with the access log off), and Web
    PubSub clients carry their access token and reconnection token there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_PARAMETER.sub(r"\1<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_tokens_in_server_logs() -> None:
    """Install :class:`TokenRedactingFilter` on uvicorn's request loggers (once; later calls do nothing)."""
    for name in UVICORN_REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, TokenRedactingFilter) for existing in logger.filters):
            logger.addFilter(TokenRedactingFilter())


class ServerStartError(RuntimeError):
    """The server did not come up (startup failed or timed out)."""


class _ReadySignallingServer(uvicorn.Server):
    """A uvicorn server that tells another thread when it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._ready.set()


class ServerThread:
    """One uvicorn server for one ASGI app, running in a daemon thread of this process."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "asgi",
        shutdown_timeout: float = 5.0,
        **uvicorn_options: Any,
    ) -> None:
        self.name = name
        self.host = host
        redact_tokens_in_server_logs()
        self._socket = bind_socket(host, port)
        self.port: int = self._socket.getsockname()[1]
        options: dict[str, Any] = {
            "log_config": None,
            "access_log": False,
            "lifespan": "on",
            "timeout_graceful_shutdown": shutdown_timeout,
        }
        options.update(uvicorn_options)
        config = uvicorn.Config(app, **options)
        self._ready = threading.Event()
        self._server = _ReadySignallingServer(config, self._ready)
        self._thread = threading.Thread(target=self._run, name=f"{name}-server", daemon=True)
        self._failure: BaseException | None = None
        self._shutdown_timeout = shutdown_timeout

    @property
    def base_url(self) -> str:
        """``http://host:port`` as clients on this machine should use it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started

    def connection_sockets(self) -> list[socket.socket]:
        """The sockets of the connections open right now (to check their options; do not read or write them)."""
        protocols = list(self._server.server_state.connections)
        found = (protocol.transport.get_extra_info("socket") for protocol in protocols if protocol.transport)
        return [sock for sock in found if sock is not None]

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving; return once the server accepts connections, or raise ServerStartError."""
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise ServerStartError(f"{self.name} server did not start within {timeout} s")
        if not self._server.started:
            self._thread.join(self._shutdown_timeout)
            raise ServerStartError(f"{self.name} server failed to start") from self._failure
        return self

    def stop(self) -> None:
        """Ask uvicorn to shut down gracefully and wait for the thread to finish."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(self._shutdown_timeout + 5.0)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5.0)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            # A fresh event loop per thread: uvicorn's own run() would install signal handlers,
            # which only the main thread may do. The loop is the one uvicorn itself would choose
            # (``loop="auto"``: uvloop when installed, as uvicorn[standard] installs it).
            with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
                runner.run(self._server.serve(sockets=[self._socket]))
        except BaseException as error:  # SystemExit from a failed lifespan startup included
            self._failure = error
        finally:
            self._ready.set()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0 = a free port), for uvicorn's ``sockets=``.

    The protocol is named (``IPPROTO_TCP``), not left 0: asyncio switches Nagle's algorithm off
    (``TCP_NODELAY``) only on sockets whose ``proto`` says TCP, and accepted connections inherit the
    listener's. Without it every response after the first on a keep-alive connection waited for
    the client's delayed ACK (about 40 ms on Linux). The option is also set on the listener, which
    Linux copies to every connection it accepts.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(*NO_DELAY)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
