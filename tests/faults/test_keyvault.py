"""Key Vault down, slow, or its identity failing: negotiate and events over real HTTP, same process throughout.

The real SecretClient (challenge authentication, retries, timeouts of SDK_CLIENT_OPTIONS) talks to
a fake vault at its transport. Without a cached key the app answers 503 with Retry-After; with one
it keeps serving; and when the vault comes back the same runtime serves again, without a restart.
The identity is a fake credential, or the app's own DefaultAzureCredential against a real
managed-identity endpoint that refuses connections. Forged events cannot turn into vault reads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from azure.core.credentials import TokenCredential
from azure.keyvault.secrets import SecretClient

from shared.config import load_settings
from shared.runtime import Runtime, get_runtime, use_runtime
from shared.tokens import SDK_CLIENT_OPTIONS, KeyVaultTokenSource
from tests.support.apphost import ServedApp
from tests.support.clock import Clock
from tests.support.events import sign
from tests.support.failing import IdentityEndpoint, TimedAdapter, transport_with_timeouts
from tests.support.fakes import FakeCredential, FakeKeyVault

VAULT_URI = "https://faults.vault.azure.net/"
SECRET = "webpubsub-access-key"
ENDPOINT = "https://contoso.webpubsub.azure.com"
KEY = "FaultsSuitePrimaryKey-0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"
NEW_KEY = "FaultsSuiteRotatedKey-5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"


class Vault:
    """The fake vault, its credential, the adapter in front of it and the app's token source."""

    def __init__(self, *, read_timeout: float | None = None, real_identity: bool = False) -> None:
        """`real_identity`: the app's own DefaultAzureCredential (from the environment) instead of a fake."""
        self.store = FakeKeyVault({SECRET: KEY})
        self.credential = FakeCredential()
        self.adapter = TimedAdapter(self.store)
        self.clock = Clock()
        options = {**SDK_CLIENT_OPTIONS, **({"read_timeout": read_timeout} if read_timeout else {})}
        settings = load_settings(
            {
                "WEBPUBSUB_CREDENTIAL": "keyvault",
                "WEBPUBSUB_ENDPOINT": ENDPOINT,
                "KEYVAULT_URI": VAULT_URI,
                "WEBPUBSUB_KEY_SECRET_NAME": SECRET,
                "NEGOTIATE_AUTH": "anonymous",
            }
        )
        self.source = KeyVaultTokenSource(
            endpoint=settings.service.endpoint,
            vault_uri=VAULT_URI,
            secret_name=SECRET,
            refresh_seconds=settings.service.keyvault_refresh_seconds,
            credential_provider=lambda: self.identity,
            secret_client_factory=lambda: SecretClient(
                VAULT_URI, self.identity, transport=transport_with_timeouts(self.adapter, options), **options
            ),
            clock=self.clock,
        )
        self.runtime = Runtime(settings, token_source=self.source)
        self.identity: TokenCredential = self.runtime.credential() if real_identity else self.credential
        use_runtime(self.runtime)

    @property
    def requests(self) -> int:
        """Authorized requests that reached the vault (the first, unauthorized one is the challenge)."""
        return sum(1 for seen in self.adapter.seen if "Authorization" in seen.headers)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the background refresh did not finish"
            time.sleep(0.01)


def negotiate(app: ServedApp) -> tuple[int, dict[str, str], dict[str, object]]:
    response = app.client.get("negotiate", params={"userId": "alice"})
    return response.status_code, dict(response.headers), response.json()


def signed_by(token: object, key: str) -> bool:
    try:
        jwt.decode(str(token), key, algorithms=["HS256"], audience=f"{ENDPOINT}/client/hubs/chat")
    except jwt.InvalidSignatureError:
        return False
    return True


def event(app: ServedApp, key: str, connection_id: str = "conn-1") -> int:
    signature = sign(connection_id, key)
    headers = {
        "ce-awpsversion": "1.0",
        "ce-type": "azure.webpubsub.user.message",
        "ce-hub": "chat",
        "ce-connectionId": connection_id,
        "ce-userId": "alice",
        "ce-signature": signature,
        "Content-Type": "text/plain",
    }
    return app.client.post("eventhandler", headers=headers, content=b"hi").status_code


def assert_retry_later(status: int, headers: dict[str, str], body: dict[str, object]) -> int:
    assert status == 503
    assert body["error"] == {"code": "dependency_unavailable", "message": "Key Vault is unavailable; retry later."}
    retry_after = int(headers["retry-after"])
    assert retry_after >= 1
    return retry_after


def test_down_before_the_first_read_is_503_then_recovers_in_the_same_process(app: ServedApp) -> None:
    vault = Vault()
    vault.store.available = False
    retry_after = assert_retry_later(*negotiate(app))
    assert event(app, KEY) == 503  # no key to check the signature with: the service retries later
    attempts = len(vault.adapter.seen)
    assert_retry_later(*negotiate(app))  # within the pause the failure is remembered, not retried
    assert len(vault.adapter.seen) == attempts
    vault.store.available = True
    vault.clock.advance(retry_after)
    status, _, body = negotiate(app)
    assert status == 200
    assert signed_by(body["token"], KEY)
    assert event(app, KEY) == 204
    assert get_runtime() is vault.runtime


def test_down_after_a_read_keeps_serving_from_the_cached_key_and_picks_up_a_new_one(app: ServedApp) -> None:
    vault = Vault()
    assert negotiate(app)[0] == 200
    vault.store.available = False
    vault.clock.advance(vault.runtime.settings.service.keyvault_refresh_seconds)  # the key is due for a refresh
    for _ in range(10):
        status, _, body = negotiate(app)
        assert status == 200
        assert signed_by(body["token"], KEY)
        assert event(app, KEY) == 204
    vault.wait_for(lambda: vault.source.cached_key().last_error is not None)
    assert vault.source.cached_key().has_key
    vault.store.available = True
    vault.store.secrets[SECRET] = NEW_KEY
    vault.clock.advance(5)  # past the pause after a failed read
    assert negotiate(app)[0] == 200  # still the cached key; this request starts the background read
    vault.wait_for(lambda: vault.source.access_keys() == (NEW_KEY,))
    status, _, body = negotiate(app)
    assert status == 200
    assert signed_by(body["token"], NEW_KEY)
    assert vault.source.cached_key().last_error is None


def test_slower_than_its_timeout_is_503_then_recovers(app: ServedApp) -> None:
    """SDK_CLIENT_OPTIONS with a short read timeout, so the test does not wait 10 s per attempt."""
    vault = Vault(read_timeout=0.2)
    vault.store.delay_seconds = 5.0
    retry_after = assert_retry_later(*negotiate(app))
    assert vault.source.cached_key().last_error is not None
    assert "Timeout" in str(vault.source.cached_key().last_error)
    vault.store.delay_seconds = 0.0
    vault.clock.advance(retry_after)
    assert negotiate(app)[0] == 200


def test_slow_within_its_timeout_serves_and_refreshes_once_for_many_requests(app: ServedApp) -> None:
    vault = Vault()
    vault.store.delay_seconds = 0.2
    assert negotiate(app)[0] == 200
    reads = vault.requests
    vault.store.secrets[SECRET] = NEW_KEY
    vault.clock.advance(vault.runtime.settings.service.keyvault_refresh_seconds)
    vault.store.delay_seconds = 1.0
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: negotiate(app)[0], range(32)))
    assert statuses == [200] * 32
    vault.wait_for(lambda: vault.source.access_keys() == (NEW_KEY,))
    assert vault.requests == reads + 1  # one background read, however many requests found the key stale


def test_identity_failing_for_key_vault_is_503_then_recovers(app: ServedApp) -> None:
    vault = Vault()
    vault.credential.available = False
    retry_after = assert_retry_later(*negotiate(app))
    vault.credential.available = True
    vault.clock.advance(retry_after)
    assert negotiate(app)[0] == 200


@pytest.fixture
def identity() -> Iterator[IdentityEndpoint]:
    endpoint = IdentityEndpoint()
    os.environ.update(endpoint.environment)  # what the platform sets; tests/conftest.py restores the environment
    yield endpoint
    endpoint.stop()


def test_managed_identity_endpoint_down_is_503_then_recovers_with_the_apps_own_credential(
    app: ServedApp, identity: IdentityEndpoint
) -> None:
    """DefaultAzureCredential as the app builds it, against a real identity endpoint that refuses connections."""
    identity.stop()
    vault = Vault(real_identity=True)
    retry_after = assert_retry_later(*negotiate(app))
    assert event(app, KEY) == 503
    assert vault.requests == 0  # no token, so nothing authorized reached the vault
    identity.start()
    vault.clock.advance(retry_after)
    status, _, body = negotiate(app)
    assert status == 200
    assert signed_by(body["token"], KEY)
    assert event(app, KEY) == 204
    assert identity.tokens_issued >= 1
    presented = {seen.headers["Authorization"] for seen in vault.adapter.seen if "Authorization" in seen.headers}
    assert presented == {"Bearer identity-token-1"}  # the vault was read with the identity's token
    assert get_runtime() is vault.runtime


def test_forged_events_cannot_flood_key_vault(app: ServedApp) -> None:
    """Each forged signature is a mismatch that may mean a rotated key, but re-reads are rate-limited."""
    vault = Vault()
    assert event(app, KEY) == 204
    reads = vault.requests
    assert [event(app, "forged-key", f"conn-{n}") for n in range(30)] == [401] * 30
    assert vault.requests == reads  # the key was read just now: a mismatch does not re-read it yet
    vault.clock.advance(10)
    assert [event(app, "forged-key", f"conn-{n}") for n in range(30)] == [401] * 30
    assert vault.requests == reads + 1  # one re-read, however many forged events arrive
    assert event(app, KEY) == 204


@pytest.mark.parametrize("status", [403, 500])
def test_vault_refusing_or_failing_is_503_then_recovers(app: ServedApp, status: int) -> None:
    vault = Vault()
    vault.store.status_override = status
    retry_after = assert_retry_later(*negotiate(app))
    vault.store.status_override = None
    vault.clock.advance(retry_after)
    assert negotiate(app)[0] == 200


def test_concurrent_first_requests_while_down_share_one_failure(app: ServedApp) -> None:
    vault = Vault()
    vault.store.available = False
    barrier = threading.Barrier(6)

    def call(_: int) -> int:
        barrier.wait()
        return negotiate(app)[0]

    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(call, range(6))) == {503}
    assert vault.source.reads == 1
