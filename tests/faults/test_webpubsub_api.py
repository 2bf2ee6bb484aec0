"""Entra mode: the service's generateToken API and the managed-identity endpoint, down or slow.

Real servers on real sockets: the local Web PubSub service answers the REST API (behind a TCP
proxy that can delay requests), and a second local service with the same key plays the identity
endpoint, so each can fail alone. The app runs unchanged: DefaultAzureCredential from the
environment and the service SDK with SDK_CLIENT_OPTIONS. Every failure is a 503 with Retry-After,
and the same process serves again once the dependency is back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub, ServiceSettings
from devstack.webpubsub.identity import IDENTITY_PATH
from shared.config import load_settings
from shared.runtime import Runtime, get_runtime, reset_runtime, use_runtime
from shared.tokens import SDK_CLIENT_OPTIONS, EntraTokenSource
from tests.support.apphost import ServedApp
from tests.support.failing import TcpProxy


class Dependencies:
    """The REST API (behind `proxy`) and the identity endpoint, each stoppable and restartable on its port."""

    def __init__(self) -> None:
        # One settings object for both, as for one service: the REST API accepts the identity endpoint's
        # tokens, and a restarted service keeps its identity header and signing keys (random per settings).
        self.rest_settings = self.identity_settings = ServiceSettings()
        self.rest: RunningWebPubSub | None = LocalWebPubSub(self.rest_settings).run_in_thread()
        self.rest_port = self.rest.server.port
        self.identity: RunningWebPubSub | None = LocalWebPubSub(self.identity_settings).run_in_thread()
        self.identity_port = self.identity.server.port
        self.proxy = TcpProxy(self.rest_port).start()

    def environment(self) -> dict[str, str]:
        assert self.identity is not None
        return {
            "WEBPUBSUB_CREDENTIAL": "entra",
            "WEBPUBSUB_ENDPOINT": self.proxy.endpoint,
            "NEGOTIATE_AUTH": "anonymous",
            "EVENTHANDLER_AUTH": "none",
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{self.identity_port}{IDENTITY_PATH}",
            "IDENTITY_HEADER": self.identity_settings.identity_header,
        }

    def stop_rest(self) -> None:
        assert self.rest is not None
        self.rest.stop()
        self.rest = None

    def start_rest(self) -> None:
        self.rest = LocalWebPubSub(self.rest_settings).run_in_thread(port=self.rest_port)

    def stop_identity(self) -> None:
        assert self.identity is not None
        self.identity.stop()
        self.identity = None

    def start_identity(self) -> None:
        self.identity = LocalWebPubSub(self.identity_settings).run_in_thread(port=self.identity_port)

    def close(self) -> None:
        self.proxy.stop()
        for running in (self.rest, self.identity):
            if running is not None:
                running.stop()


@pytest.fixture
def deps() -> Iterator[Dependencies]:
    dependencies = Dependencies()
    os.environ.update(dependencies.environment())
    reset_runtime()
    yield dependencies
    dependencies.close()


def negotiate(app: ServedApp) -> int:
    return app.client.get("negotiate", params={"userId": "alice", "group": "chat"}).status_code


def assert_retry_later(app: ServedApp, dependency: str) -> None:
    response = app.client.get("negotiate", params={"userId": "alice"})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] == {
        "code": "dependency_unavailable",
        "message": f"{dependency} is unavailable; retry later.",
    }


def test_rest_api_down_is_503_then_recovers_in_the_same_process(app: ServedApp, deps: Dependencies) -> None:
    assert negotiate(app) == 200
    runtime = get_runtime()
    deps.stop_rest()
    assert_retry_later(app, "Web PubSub")
    deps.start_rest()
    assert negotiate(app) == 200
    assert get_runtime() is runtime


def test_rest_api_down_from_the_start_is_503_then_recovers(app: ServedApp, deps: Dependencies) -> None:
    deps.stop_rest()
    assert_retry_later(app, "Web PubSub")
    deps.start_rest()
    assert negotiate(app) == 200


def test_rest_api_slow_within_its_timeout_still_serves(app: ServedApp, deps: Dependencies) -> None:
    deps.proxy.delay = 0.5
    assert negotiate(app) == 200


def test_rest_api_slower_than_its_timeout_is_503_then_recovers(app: ServedApp, deps: Dependencies) -> None:
    """SDK_CLIENT_OPTIONS with a short read timeout, so the test does not wait 10 s per attempt."""
    settings = load_settings(os.environ)
    runtime = Runtime(settings)
    source = EntraTokenSource(
        endpoint=settings.service.endpoint,
        credential_provider=runtime.credential,
        sdk_options={**SDK_CLIENT_OPTIONS, "read_timeout": 0.3},
    )
    use_runtime(Runtime(settings, credential=runtime.credential(), token_source=source))
    deps.proxy.delay = 3.0
    assert_retry_later(app, "Web PubSub")
    deps.proxy.delay = 0.0
    assert negotiate(app) == 200


def test_identity_endpoint_down_is_503_then_recovers(app: ServedApp, deps: Dependencies) -> None:
    deps.stop_identity()
    assert_retry_later(app, "Entra ID")
    deps.start_identity()
    assert negotiate(app) == 200


def test_identity_endpoint_down_after_a_token_keeps_serving_from_the_cached_token(
    app: ServedApp, deps: Dependencies
) -> None:
    assert negotiate(app) == 200
    deps.stop_identity()
    assert [negotiate(app) for _ in range(5)] == [200] * 5
