"""The helper that runs ASGI apps under uvicorn in a background thread."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from devstack.servers import ServerStartError, ServerThread, TokenRedactingFilter, bind_socket


def greeting_app(text: str) -> Starlette:
    async def greet(_: Request) -> PlainTextResponse:
        return PlainTextResponse(text)

    return Starlette(routes=[Route("/", greet)])


def is_running(server: ServerThread) -> bool:
    return server.running


def test_port_is_known_before_start_and_the_server_answers_once_started() -> None:
    server = ServerThread(greeting_app("hello"))
    assert server.port > 0
    assert not is_running(server)
    with server:
        assert is_running(server)
        assert httpx.get(server.base_url + "/").text == "hello"
    assert not is_running(server)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/")


def test_two_servers_can_learn_each_others_urls_before_either_starts() -> None:
    first, second = ServerThread(greeting_app("one")), ServerThread(greeting_app("two"))
    assert first.base_url != second.base_url
    with first, second:
        assert httpx.get(first.base_url).text == "one"
        assert httpx.get(second.base_url).text == "two"


def test_a_failing_startup_is_reported_instead_of_hanging() -> None:
    def fail() -> None:
        raise RuntimeError("cannot start")

    @contextlib.asynccontextmanager
    async def broken_lifespan(_: Starlette) -> AsyncIterator[None]:
        fail()
        yield

    server = ServerThread(Starlette(lifespan=broken_lifespan))
    with pytest.raises(ServerStartError):
        server.start(timeout=5)
    server.stop()


def test_a_port_in_use_is_refused_at_construction() -> None:
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        with pytest.raises(OSError, match="in use"):
            ServerThread(greeting_app("x"), port=occupied.getsockname()[1])


def test_token_values_in_logged_urls_are_blanked_and_the_rest_kept() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/client/hubs/chat?awps_connection_id=c1&awps_reconnection_token=r.t%3D&access_token=a.b.c"),
        None,
    )
    assert TokenRedactingFilter().filter(record)
    assert record.getMessage() == (
        '127.0.0.1:5000 - "WebSocket /client/hubs/chat?awps_connection_id=c1'
        '&awps_reconnection_token=<redacted>&access_token=<redacted>" [accepted]'
    )


def nagle_is_off(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_listening_sockets_are_tcp_with_nagle_off() -> None:
    """asyncio turns Nagle off only on sockets whose protocol is TCP; accepted ones inherit the listener's."""
    with contextlib.closing(bind_socket("127.0.0.1", 0)) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert nagle_is_off(sock)


def test_accepted_connections_have_nagle_off_so_kept_alive_requests_never_wait_for_a_delayed_ack() -> None:
    with ServerThread(greeting_app("hello")) as server, httpx.Client() as client:
        for _ in range(3):  # the same kept-alive connection
            assert client.get(server.base_url + "/").text == "hello"
        sockets = server.connection_sockets()
        assert len(sockets) == 1
        assert nagle_is_off(sockets[0])
