"""The local host's request body limit (devstack.body_limit): FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, before buffering.

Raw sockets, so the test controls what the client has sent when the host answers: a declared
Content-Length over the limit is refused while the body has not been sent at all, and a chunked
body is refused once it passes the limit, with the rest still unsent. The function never runs.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import azure.functions as func
import pytest

from devstack.body_limit import HOST_DEFAULT_BYTES, SETTING, request_body_limit
from devstack.host import build_host
from devstack.servers import ServerThread

LIMIT = 2048
calls: list[int] = []
sink_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@sink_app.route(route="sink", methods=["POST"])
def sink(req: func.HttpRequest) -> func.HttpResponse:
    calls.append(len(req.get_body()))
    return func.HttpResponse(status_code=204)


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The host as the launcher builds it: the limit comes from the environment local.settings.json fills."""
    monkeypatch.setenv(SETTING, str(LIMIT))
    calls.clear()
    with ServerThread(build_host(sink_app), name="functions") as server:
        yield server.port


def post_head(port: int, *headers: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = ["POST /api/sink HTTP/1.1", "Host: localhost", "Content-Type: application/octet-stream", *headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def status_line(sock: socket.socket) -> bytes:
    return sock.recv(4096).split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("environ", "limit"),
    [
        ({}, HOST_DEFAULT_BYTES),
        ({SETTING: "2048"}, 2048),
        ({SETTING: " 10 "}, 10),
        ({SETTING: "lots"}, HOST_DEFAULT_BYTES),
    ],
)
def test_the_limit_is_read_as_the_real_host_reads_it(environ: dict[str, str], limit: int) -> None:
    assert request_body_limit(environ) == limit
    assert request_body_limit({SETTING: "0"}) == HOST_DEFAULT_BYTES


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(port: int) -> None:
    with contextlib.closing(post_head(port, f"Content-Length: {95 * 1024 * 1024}")) as sock:
        assert status_line(sock) == b"HTTP/1.1 413 Request Entity Too Large"  # not one body byte sent
    assert calls == []


def test_a_streamed_body_is_refused_once_it_passes_the_limit(port: int) -> None:
    with contextlib.closing(post_head(port, "Transfer-Encoding: chunked")) as sock:
        chunk = b"x" * 512
        sent = 0
        with contextlib.suppress(OSError):  # the host may close the connection while more is being sent
            while sent <= LIMIT:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        assert status_line(sock) == b"HTTP/1.1 413 Request Entity Too Large"
    assert calls == []


def test_a_body_within_the_limit_reaches_the_function(port: int) -> None:
    with contextlib.closing(post_head(port, f"Content-Length: {LIMIT}")) as sock:
        sock.sendall(b"x" * LIMIT)
        assert status_line(sock) == b"HTTP/1.1 204 No Content"
    assert calls == [LIMIT]
