"""The security suite: the app over real HTTP (local Functions host) wired to a genuine local Web PubSub service.

One host and one service serve the whole package; each test installs its own settings (the
autouse fixture of tests/conftest.py restores the environment afterwards) and waits until the
service is quiet, so no late event of one test lands in the next. Helpers: tests.support.security.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devstack.servers import ServerThread
from devstack.webpubsub import RunningWebPubSub
from tests.support.apphost import ServedApp, serve_app
from tests.support.issuer import Issuer
from tests.support.security import POLICY_GROUPS, SERVICE_KEY, service_for
from tests.support.settings import use_environment


@pytest.fixture(scope="package")
def app() -> Iterator[ServedApp]:
    with serve_app() as served:
        yield served


@pytest.fixture(scope="package")
def _genuine(app: ServedApp) -> Iterator[RunningWebPubSub]:
    with service_for(app, SERVICE_KEY).run_in_thread() as running:
        yield running


@pytest.fixture
def service(_genuine: RunningWebPubSub) -> Iterator[RunningWebPubSub]:
    """The app's own service, with the app configured for it (connection string, anonymous negotiate)."""
    _genuine.upstream_log.clear()
    use_environment(
        WEBPUBSUB_CREDENTIAL="connectionstring",
        WEBPUBSUB_CONNECTION_STRING=_genuine.connection_string,
        NEGOTIATE_AUTH="anonymous",
        NEGOTIATE_GROUPS=",".join(POLICY_GROUPS),
    )
    yield _genuine
    _genuine.wait_until_quiet(timeout=10)


@pytest.fixture(scope="package")
def jwks_url(issuer: Issuer) -> Iterator[str]:
    """The fake issuer's signing keys, served over real HTTP for the app's own key download."""

    async def keys(request: Request) -> JSONResponse:
        return JSONResponse(issuer.jwks)

    with ServerThread(Starlette(routes=[Route("/keys", keys)]), name="jwks") as server:
        yield f"{server.base_url}/keys"
