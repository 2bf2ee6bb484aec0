"""The local service's HTTP client to event handlers: kept-alive connections, answers read whole, failures named."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from devstack.servers import ServerThread
from devstack.webpubsub.event_client import EventClient
from tests.support.standins import refusing, silent

received: list[tuple[str, str, dict[str, str], bytes]] = []


async def echo(request: Request) -> Response:
    body = await request.body()
    received.append((request.method, str(request.url), dict(request.headers), body))
    response = Response(body, status_code=201, media_type="application/json")
    response.raw_headers += [(b"x-state", b"one"), (b"x-state", b"two")]
    return response


async def streamed(_: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"chunked ", b"answer"):
            yield part

    return StreamingResponse(parts(), media_type="text/plain")


async def nothing(_: Request) -> Response:
    return Response(status_code=204)


HANDLER = Starlette(
    routes=[
        Route("/echo", echo, methods=["POST", "OPTIONS"]),
        Route("/streamed", streamed, methods=["POST"]),
        Route("/nothing", nothing, methods=["POST"]),
    ]
)


def run(test: Callable[[EventClient], Awaitable[None]], timeout: float = 5.0) -> None:
    async def main() -> None:
        client = EventClient(timeout)
        try:
            await test(client)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_request_arrives_as_sent_and_the_answer_is_read_whole() -> None:
    received.clear()
    with ServerThread(HANDLER) as server:

        async def test(client: EventClient) -> None:
            response = await client.post(
                server.base_url + "/echo?code=k", content=b'{"a":1}', headers=[("ce-type", "x"), ("ce-hub", "chat")]
            )
            assert response.status_code == 201
            assert response.content == b'{"a":1}'
            assert response.headers.get_list("x-state") == ["one", "two"]
            assert response.headers["Content-Type"] == "application/json"
            chunked = await client.post(server.base_url + "/streamed")
            assert chunked.content == b"chunked answer"
            assert (await client.post(server.base_url + "/nothing")).status_code == 204

        run(test)
    method, url, headers, body = received[0]
    assert (method, url, body) == ("POST", server.base_url + "/echo?code=k", b'{"a":1}')
    assert headers["ce-type"] == "x"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["content-length"] == "7"


def test_connections_are_kept_alive_and_reused_with_nagle_off() -> None:
    with ServerThread(HANDLER) as server:

        async def test(client: EventClient) -> None:
            for _ in range(5):
                await client.post(server.base_url + "/nothing")
            [sock] = client.open_sockets()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert len(server.connection_sockets()) == 1

        run(test)


def test_answers_with_a_body_keep_the_connection_too() -> None:
    with ServerThread(HANDLER) as server:

        async def test(client: EventClient) -> None:
            for _ in range(3):
                assert (await client.post(server.base_url + "/echo", content=b"{}")).content == b"{}"
                assert (await client.post(server.base_url + "/streamed")).content == b"chunked answer"
            assert len(client.open_sockets()) == 1
            assert len(server.connection_sockets()) == 1

        run(test)


def test_a_connection_the_handler_closed_while_idle_is_replaced_without_losing_the_request() -> None:
    """A server that answers one request per connection and closes it (as at the end of its keep-alive)."""
    answered: list[bytes] = []
    both_closed = asyncio.Event()

    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        answered.append(request.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        if len(answered) == 2:
            both_closed.set()

    @asynccontextmanager
    async def closing_server() -> AsyncIterator[int]:
        server = await asyncio.start_server(one_answer, "127.0.0.1", 0)
        async with server:
            yield server.sockets[0].getsockname()[1]

    async def main() -> None:
        client = EventClient(5.0)
        try:
            async with closing_server() as port:
                assert (await client.post(f"http://127.0.0.1:{port}/first")).content == b"ok"
                await asyncio.sleep(0.2)  # the server has closed the kept-alive connection
                assert (await client.post(f"http://127.0.0.1:{port}/second")).content == b"ok"
                await both_closed.wait()
        finally:
            await client.aclose()

    asyncio.run(main())
    assert answered == [b"POST /first HTTP/1.1", b"POST /second HTTP/1.1"]


def test_an_unreachable_handler_is_a_connect_error() -> None:
    with ExitStack() as stack:
        url = refusing(stack)

        async def test(client: EventClient) -> None:
            with pytest.raises(httpx.ConnectError):
                await client.post(url + "/eventhandler")

        run(test)


def test_a_handler_that_never_answers_is_a_timeout() -> None:
    with ExitStack() as stack:
        url = silent(stack)

        async def test(client: EventClient) -> None:
            with pytest.raises(httpx.ReadTimeout):
                await client.request("OPTIONS", url + "/eventhandler", timeout=0.2)

        run(test)


@pytest.mark.parametrize(
    "headers", [[("ce-userId", "alice\r\nX-Injected: yes")], [("bad name", "x")], [("ce-userId", "\u0100lice")]]
)
def test_a_header_that_would_break_the_request_is_refused_before_sending(headers: list[tuple[str, str]]) -> None:
    received.clear()
    with ServerThread(HANDLER) as server:

        async def test(client: EventClient) -> None:
            with pytest.raises(httpx.LocalProtocolError):
                await client.post(server.base_url + "/echo", headers=headers)

        run(test)
    assert received == []
