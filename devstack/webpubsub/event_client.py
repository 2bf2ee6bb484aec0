"""The HTTP client the local service calls event handlers with: HTTP/1.1 keep-alive connections, kept.

The service sends every connect, connected, disconnected and user event of every client as one
HTTP request, so at a few hundred clients this client carries thousands of requests a second. An
httpx ``AsyncClient`` spent most of the service's time there (by py-spy): its connection pool
re-scans every queued request whenever one finishes, its locks look for ``sniffio`` with a failing
import on every request, and beyond twenty kept-alive connections every request opened a new TCP
connection. This client does one thing: requests to ``http://`` event handlers over a pool of
kept-alive connections (``TCP_NODELAY`` on each), parsed with httptools, the parser uvicorn uses;
at most ``max_connections`` at once, further requests wait for a free one in order. Requests to
``https://`` handlers go through httpx, which has the TLS and proxy support they may need.

Failures raise httpx's own exceptions (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
``RemoteProtocolError``), so callers handle both paths alike.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
import httpx

from ..servers import NO_DELAY

__all__ = ["EventClient", "EventResponse"]

Headers = list[tuple[str, str]] | dict[str, str]
#: What a header name or value may not contain: it would end the line or the name early.
_BREAKS_NAME = re.compile("[:\r\n\0 ]")
_BREAKS_VALUE = re.compile("[\r\n\0]")


@dataclass(frozen=True)
class EventResponse:
    """An event handler's answer: status, headers (repeated names kept, looked up in any case), body."""

    status_code: int
    headers: httpx.Headers
    content: bytes


class _Parsed:
    """httptools' callbacks for one response."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # Asked here, not after feed_data returns: once a response with a body is complete, the
        # parser has reset for the next message and says False, which closed the connection after
        # every connect event and every reply (a new TCP connection each).
        if self.parser is not None:
            self.keep_alive = self.parser.should_keep_alive()


class _Connection:
    """One kept-alive TCP connection to an event handler."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False  # has answered a request before: the server may have closed it since

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as error:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}") from error
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(*NO_DELAY)
        return cls(reader, writer)

    @property
    def reusable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def exchange(self, request: bytes, *, expect_body: bool) -> tuple[int, _Parsed, bool]:
        """Send one request, read its whole answer: status, parsed parts, whether to keep the connection."""
        self.writer.write(request)
        parsed = _Parsed()
        parser = httptools.HttpResponseParser(parsed)
        parsed.parser = parser
        received = False
        while not parsed.complete:
            data = await self.reader.read(65536)
            if not data:
                if parsed.headers_done and not expect_body:
                    break
                if parsed.headers_done and not _framed(parsed.headers):
                    break  # a body delimited by the end of the connection
                raise _ClosedBeforeAnswer(received) from None
            received = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as error:
                raise httpx.RemoteProtocolError(f"malformed response from the event handler: {error}") from error
        return parser.get_status_code(), parsed, parsed.complete and parsed.keep_alive

    def close(self) -> None:
        self.writer.close()


class _ClosedBeforeAnswer(httpx.RemoteProtocolError):
    def __init__(self, received: bool) -> None:
        super().__init__("the event handler closed the connection before answering")
        self.received = received


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)


class EventClient:
    """Requests to event handlers; one per service, closed with ``aclose``."""

    def __init__(self, timeout: float, max_connections: int = 256) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = collections.defaultdict(collections.deque)
        self._slots = asyncio.Semaphore(max_connections)
        self._https: httpx.AsyncClient | None = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers | None = None,
        content: bytes = b"",
        timeout: float | None = None,
    ) -> EventResponse:
        """One request; raises httpx.TransportError when the handler cannot be reached or answers garbage."""
        parts = urlsplit(url)
        if parts.scheme != "http":
            return await self._through_httpx(method, url, headers, content, timeout)
        host = parts.hostname or "localhost"
        port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = _render(method, target, parts.netloc, headers, content)
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                async with self._slots:
                    return await self._send(host, port, request, expect_body=method != "HEAD")
        except TimeoutError:
            raise httpx.ReadTimeout(f"the event handler did not answer within {timeout or self.timeout} s") from None

    async def post(self, url: str, *, content: bytes = b"", headers: Headers | None = None) -> EventResponse:
        return await self.request("POST", url, headers=headers, content=content)

    async def _send(self, host: str, port: int, request: bytes, *, expect_body: bool) -> EventResponse:
        idle = self._idle[(host, port)]
        while True:
            connection = idle.pop() if idle else await _Connection.open(host, port)
            if not connection.reusable:
                connection.close()
                continue
            try:
                status, parsed, keep = await connection.exchange(request, expect_body=expect_body)
            except _ClosedBeforeAnswer as error:
                connection.close()
                if connection.used and not error.received:
                    continue  # closed while idle (the server's keep-alive timeout): the request never arrived
                raise
            except BaseException:
                connection.close()
                raise
            connection.used = True
            if keep:
                idle.append(connection)
            else:
                connection.close()
            headers = httpx.Headers(
                [(name.decode("latin-1"), value.decode("latin-1")) for name, value in parsed.headers]
            )
            return EventResponse(status, headers, b"".join(parsed.body))

    async def _through_httpx(
        self, method: str, url: str, headers: Headers | None, content: bytes, timeout: float | None
    ) -> EventResponse:
        if self._https is None:
            self._https = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        response = await self._https.request(
            method, url, headers=headers, content=content, timeout=timeout if timeout is not None else self.timeout
        )
        return EventResponse(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        closing = [connection for connections in self._idle.values() for connection in connections]
        self._idle.clear()
        for connection in closing:
            connection.close()
        for connection in closing:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()
        if self._https is not None:
            await self._https.aclose()
            self._https = None

    def open_sockets(self) -> list[socket.socket]:
        """The sockets of the kept-alive connections (to check their options; do not read or write them)."""
        found = (connection.writer.get_extra_info("socket") for queue in self._idle.values() for connection in queue)
        return [sock for sock in found if sock is not None]


def _render(method: str, target: str, netloc: str, headers: Headers | None, content: bytes) -> bytes:
    """The request's bytes; a header that would break the framing (a line break, non-Latin-1) is refused."""
    items = list(headers.items() if isinstance(headers, dict) else headers or ())
    lines = [f"{method} {target} HTTP/1.1", f"Host: {netloc}"]
    lines += [f"{name}: {value}" for name, value in items if name.lower() not in ("host", "content-length")]
    lines.append(f"Content-Length: {len(content)}")
    head = "\r\n".join(lines)
    names = [name for name, _ in items]
    # One search over all names and one over all values, not a Python-level scan of every character
    # of every header (about 40 of them per event).
    if not all(names) or _BREAKS_NAME.search("".join(names)) or _BREAKS_VALUE.search("".join(v for _, v in items)):
        raise httpx.LocalProtocolError("an event header name or value contains a line break or a separator")
    try:
        return (head + "\r\n\r\n").encode("latin-1") + content
    except UnicodeEncodeError:
        raise httpx.LocalProtocolError("an event header is not Latin-1 text") from None
