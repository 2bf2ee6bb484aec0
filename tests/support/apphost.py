"""The app over real HTTP: the local Functions host serving `function_app.app` on a free port.

System-level suites (faults, security) talk to the app the way clients and the Web PubSub service
do, through sockets, routing and the func.HttpRequest/HttpResponse conversion, and install the
settings or runtime of each case in this process (the host runs the functions here, in threads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

import function_app
from devstack.host import build_host, route_url
from devstack.servers import ServerThread


@dataclass(frozen=True)
class ServedApp:
    """The running host and an HTTP client for it."""

    base_url: str
    client: httpx.Client

    def url(self, route: str) -> str:
        return route_url(self.base_url, "api", route)


@contextlib.contextmanager
def serve_app(timeout: float = 30.0) -> Iterator[ServedApp]:
    with (
        ServerThread(build_host(function_app.app), name="functions") as server,
        httpx.Client(base_url=server.base_url + "/api/", timeout=timeout) as client,
    ):
        yield ServedApp(server.base_url, client)
