"""One framework-neutral handler per route; function_app.py binds each to its URL and methods."""

from __future__ import annotations

from shared.runtime import get_runtime
from shared.web import Request, Response


def negotiate(request: Request) -> Response:
    return get_runtime().negotiator.negotiate(request)


def eventhandler(request: Request) -> Response:
    return get_runtime().events.handle(request)


# Health and the client page are imported by their first request: a cold start that serves events or
# negotiate never loads them (the health monitor's probes and thread pool, the page's assets).


def health(request: Request) -> Response:
    from shared import health as health_check

    return health_check.health()


def health_live(request: Request) -> Response:
    from shared import health as health_check

    return health_check.live()


def client(request: Request) -> Response:
    from shared import client_page

    return client_page.serve(request, get_runtime().settings)


def messages(request: Request) -> Response:
    return get_runtime().publish.messages(request)


def groups(request: Request) -> Response:
    return get_runtime().publish.groups(request)


def connections(request: Request) -> Response:
    return get_runtime().publish.connections(request)


def permissions(request: Request) -> Response:
    return get_runtime().publish.permissions(request)


def group_users(request: Request) -> Response:
    return get_runtime().presence.users(request)
