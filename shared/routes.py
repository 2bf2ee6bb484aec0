"""One framework-neutral handler per route; function_app.py binds each to its URL and methods."""

from __future__ import annotations

from shared import client_page
from shared.runtime import get_runtime
from shared.web import Request, Response


def negotiate(request: Request) -> Response:
    return get_runtime().negotiator.negotiate(request)


def eventhandler(request: Request) -> Response:
    return get_runtime().events.handle(request)


def client(request: Request) -> Response:
    return client_page.serve(request, get_runtime().settings)
