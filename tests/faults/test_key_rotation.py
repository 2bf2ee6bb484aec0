"""Rotating the access key in keyvault mode, as docs/deploy.md describes, fails no request.

While clients negotiate and a Web PubSub stand-in delivers signed events without pause (over real
HTTP to the local host), the operator follows the documented procedure twice:

1. put the secondary key in the Key Vault secret;
2. wait until the app has re-read the secret (KEYVAULT_REFRESH_SECONDS, shortened here, plus a margin);
3. regenerate the primary key, which nothing uses any more;

then the same with the roles swapped. The stand-in signs every event with both of its current keys
and accepts a client token signed with either, as Web PubSub does. Every answer must be a success
and every token must be one the service accepts at the moment it arrives.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import jwt
from azure.keyvault.secrets import SecretClient

from shared.config import load_settings
from shared.runtime import Runtime, use_runtime
from shared.tokens import KeyVaultTokenSource
from tests.support.apphost import ServedApp
from tests.support.events import sign
from tests.support.fakes import FakeAdapter, FakeCredential, FakeKeyVault, transport_for

VAULT_URI = "https://rotation.vault.azure.net/"
SECRET = "webpubsub-access-key"
ENDPOINT = "https://contoso.webpubsub.azure.com"
REFRESH_SECONDS = 0.3  # KEYVAULT_REFRESH_SECONDS, shortened so the test takes seconds
MARGIN_SECONDS = 0.5
TRAFFIC_SECONDS = 0.7  # traffic after each step


def new_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class ServiceKeys:
    """The stand-in Web PubSub resource's two keys; regenerating one replaces it at once."""

    primary: str = field(default_factory=new_key)
    secondary: str = field(default_factory=new_key)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> tuple[str, str]:
        with self.lock:
            return self.primary, self.secondary

    def regenerate(self, which: str) -> None:
        with self.lock:
            setattr(self, which, new_key())

    def signature(self, connection_id: str) -> str:
        """`ce-signature` as the service sends it: one HMAC per key, comma-separated."""
        return ",".join(sign(connection_id, key) for key in self.current())

    def accepts(self, token: str) -> bool:
        for key in self.current():
            try:
                jwt.decode(token, key, algorithms=["HS256"], audience=f"{ENDPOINT}/client/hubs/chat")
            except jwt.InvalidSignatureError:
                continue
            return True
        return False


@dataclass
class Traffic:
    """Clients and the service calling the app on their own threads until stopped; counts outcomes."""

    app: ServedApp
    keys: ServiceKeys
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=lambda: {"negotiate": 0, "connect": 0, "message": 0})
    failures: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def negotiate(self, client: httpx.Client) -> None:
        response = client.get("negotiate", params={"userId": "alice"})
        if response.status_code != 200:
            self.fail(f"negotiate answered {response.status_code}")
        elif not self.keys.accepts(response.json()["token"]):
            self.fail("negotiate issued a token the service no longer accepts")
        self.count("negotiate")

    def connect(self, client: httpx.Client) -> None:
        self.event(client, "azure.webpubsub.sys.connect", "application/json", b'{"claims": {}}', "connect")

    def message(self, client: httpx.Client) -> None:
        self.event(client, "azure.webpubsub.user.message", "text/plain", b"hello", "message")

    def event(self, client: httpx.Client, event_type: str, content_type: str, body: bytes, name: str) -> None:
        connection_id = f"conn-{next(self.ids)}"
        headers = {
            "ce-awpsversion": "1.0",
            "ce-specversion": "1.0",
            "ce-type": event_type,
            "ce-hub": "chat",
            "ce-connectionId": connection_id,
            "ce-userId": "alice",
            "ce-signature": self.keys.signature(connection_id),
            "Content-Type": content_type,
        }
        response = client.post("eventhandler", headers=headers, content=body)
        if response.status_code >= 300:
            self.fail(f"{name} event answered {response.status_code}")
        self.count(name)

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def fail(self, why: str) -> None:
        with self.lock:
            self.failures.append(why)

    def run(self, call: Callable[[httpx.Client], None]) -> None:
        with httpx.Client(base_url=self.app.url("") + "/", timeout=30) as client:
            while not self.stop.is_set():
                call(client)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the app did not re-read the secret"
        time.sleep(0.01)


def test_rotating_both_keys_in_turn_fails_no_request(app: ServedApp) -> None:
    keys = ServiceKeys()
    vault = FakeKeyVault({SECRET: keys.primary})
    adapter = FakeAdapter(vault)
    settings = load_settings(
        {
            "WEBPUBSUB_CREDENTIAL": "keyvault",
            "WEBPUBSUB_ENDPOINT": ENDPOINT,
            "KEYVAULT_URI": VAULT_URI,
            "WEBPUBSUB_KEY_SECRET_NAME": SECRET,
            "NEGOTIATE_AUTH": "anonymous",
        }
    )
    source = KeyVaultTokenSource(
        endpoint=settings.service.endpoint,
        vault_uri=VAULT_URI,
        secret_name=SECRET,
        refresh_seconds=REFRESH_SECONDS,
        credential_provider=FakeCredential,
        secret_client_factory=lambda: SecretClient(VAULT_URI, FakeCredential(), transport=transport_for(adapter)),
        retry_seconds=REFRESH_SECONDS,  # the pause after any read; it bounds how often the TTL can be honoured
    )
    use_runtime(Runtime(settings, token_source=source))
    traffic = Traffic(app, keys)
    workers = [
        threading.Thread(target=traffic.run, args=(call,), name=f"traffic-{n}")
        for n, call in enumerate([traffic.negotiate, traffic.negotiate, traffic.connect, traffic.message])
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(TRAFFIC_SECONDS)
        for in_use, spare in [("primary", "secondary"), ("secondary", "primary")]:
            spare_key = getattr(keys, spare)
            vault.secrets[SECRET] = spare_key  # 1. the other key into the secret
            wait_until(lambda: source.access_keys() == (spare_key,))  # noqa: B023 - called within this iteration
            time.sleep(MARGIN_SECONDS)  # 2. every instance has re-read it
            keys.regenerate(in_use)  # 3. the key the app used before is replaced
            time.sleep(TRAFFIC_SECONDS)
    finally:
        traffic.stop.set()
        for worker in workers:
            worker.join(30)
    assert traffic.failures == []
    assert min(traffic.counts.values()) >= 20, traffic.counts  # traffic really flowed through every step
    assert source.access_keys() == (keys.primary,)  # after both rotations: the regenerated primary
