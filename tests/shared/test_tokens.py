"""The three token sources, each against the real Azure SDK with a fake server at its transport."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from azure.keyvault.secrets import SecretClient

from shared.errors import ConfigError, DependencyUnavailable
from shared.protocol import ClientProtocol
from shared.tokens import EntraTokenSource, KeyTokenSource, KeyVaultTokenSource, key_from_secret
from tests.support.clock import Clock
from tests.support.fakes import (
    EMULATOR_KEY,
    FakeAdapter,
    FakeCredential,
    FakeKeyVault,
    Seen,
    down,
    json_reply,
    transport_for,
)

ENDPOINT = "https://contoso.webpubsub.azure.com"
SECOND_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu"


def verify(token: str, key: str, endpoint: str = ENDPOINT, hub: str = "chat") -> dict[str, object]:
    """Independent check of a client token, as the service does it."""
    claims: dict[str, object] = jwt.decode(token, key, algorithms=["HS256"], audience=f"{endpoint}/client/hubs/{hub}")
    return claims


def test_key_source_signs_least_privilege_token_locally() -> None:
    source = KeyTokenSource(ENDPOINT, EMULATOR_KEY)
    before = int(time.time())
    access = source.client_access(
        hub="chat", user_id="alice", roles=["webpubsub.sendToGroup.chat"], groups=["chat"], minutes=5
    )
    claims = verify(access.token, EMULATOR_KEY)
    assert claims["sub"] == "alice"
    assert claims["role"] == ["webpubsub.sendToGroup.chat"]
    assert claims["webpubsub.group"] == ["chat"]
    assert before + 300 <= int(str(claims["exp"])) <= int(time.time()) + 300
    assert access.base_url == "wss://contoso.webpubsub.azure.com/client/hubs/chat"
    assert access.url == f"{access.base_url}?access_token={access.token}"
    assert access.expires_on.tzinfo is UTC
    assert access.expires_on.timestamp() <= int(str(claims["exp"]))
    assert access.token not in repr(access)


def test_key_source_uses_ws_for_a_local_http_service() -> None:
    access = KeyTokenSource("http://localhost:8080", EMULATOR_KEY).client_access(
        hub="chat", user_id="u", roles=[], groups=[], minutes=1
    )
    assert access.base_url == "ws://localhost:8080/client/hubs/chat"
    claims = verify(access.token, EMULATOR_KEY, endpoint="http://localhost:8080")
    assert "role" not in claims
    assert "webpubsub.group" not in claims


@pytest.mark.parametrize(
    ("protocol", "path"),
    [
        (ClientProtocol.DEFAULT, "/client/hubs/chat"),
        (ClientProtocol.MQTT, "/clients/mqtt/hubs/chat"),
        (ClientProtocol.SOCKETIO, "/clients/socketio/hubs/chat"),
    ],
)
def test_key_source_issues_for_each_client_endpoint(protocol: ClientProtocol, path: str) -> None:
    """Each endpoint checks that the token's audience is its own URL (the documented client URLs)."""
    access = KeyTokenSource(ENDPOINT, EMULATOR_KEY).client_access(
        hub="chat",
        user_id="alice",
        roles=["webpubsub.sendToGroup.chat"],
        groups=[],
        minutes=5,
        client_protocol=protocol,
    )
    assert access.base_url == f"wss://contoso.webpubsub.azure.com{path}"
    assert access.url == f"{access.base_url}?access_token={access.token}"
    claims = jwt.decode(access.token, EMULATOR_KEY, algorithms=["HS256"], audience=f"{ENDPOINT}{path}")
    assert (claims["sub"], claims["role"]) == ("alice", ["webpubsub.sendToGroup.chat"])
    for other in ClientProtocol:
        if other is not protocol:
            with pytest.raises(jwt.InvalidAudienceError):
                jwt.decode(
                    access.token, EMULATOR_KEY, algorithms=["HS256"], audience=f"{ENDPOINT}{other.path_prefix}chat"
                )


def test_key_source_creates_one_sdk_client() -> None:
    source = KeyTokenSource(ENDPOINT, EMULATOR_KEY)
    source.client_access(hub="chat", user_id="a", roles=[], groups=[], minutes=1)
    client = source.service_client("chat")
    source.client_access(hub="chat", user_id="b", roles=[], groups=[], minutes=1)
    assert source.service_client("chat") is client


def keyvault(
    vault: FakeKeyVault, clock: Clock, *, refresh: float = 300, credential: FakeCredential | None = None
) -> KeyVaultTokenSource:
    adapter = FakeAdapter(vault)
    return KeyVaultTokenSource(
        endpoint=ENDPOINT,
        vault_uri="https://test.vault.azure.net/",
        secret_name="wps-key",
        refresh_seconds=refresh,
        credential_provider=lambda: credential or FakeCredential(),
        secret_client_factory=lambda: SecretClient(
            "https://test.vault.azure.net/",
            credential or FakeCredential(),
            transport=transport_for(adapter),
            retry_total=0,
        ),
        clock=clock,
    )


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_keyvault_key_is_read_once_for_many_tokens() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    source = keyvault(vault, Clock())
    for number in range(50):
        access = source.client_access(hub="chat", user_id=f"u{number}", roles=[], groups=[], minutes=5)
        verify(access.token, EMULATOR_KEY)
    assert vault.reads == 1
    assert source.access_keys() == (EMULATOR_KEY,)
    assert vault.reads == 1


def test_keyvault_secret_may_hold_a_connection_string() -> None:
    vault = FakeKeyVault({"wps-key": f"Endpoint={ENDPOINT};AccessKey={EMULATOR_KEY};Version=1.0;"})
    access = keyvault(vault, Clock()).client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    assert verify(access.token, EMULATOR_KEY)["sub"] == "u"


def test_keyvault_connection_string_for_another_service_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        key_from_secret(f"Endpoint=https://other.webpubsub.azure.com;AccessKey={EMULATOR_KEY}", ENDPOINT)
    assert caught.value.setting == "WEBPUBSUB_KEY_SECRET_NAME"
    assert EMULATOR_KEY not in str(caught.value)


def test_keyvault_refreshes_in_the_background_after_the_ttl() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    clock = Clock()
    source = keyvault(vault, clock, refresh=60)
    source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    vault.secrets["wps-key"] = SECOND_KEY  # rotated
    clock.now += 61
    # The request that finds the key stale is served at once with the cached key ...
    stale = source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    verify(stale.token, EMULATOR_KEY)
    # ... while one background read fetches the new key.
    wait_until(lambda: source.access_keys() == (SECOND_KEY,))
    assert vault.reads == 2
    verify(source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5).token, SECOND_KEY)


def test_keyvault_down_keeps_issuing_with_the_cached_key_and_recovers() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    clock = Clock()
    source = keyvault(vault, clock, refresh=60)
    source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    vault.available = False
    clock.now += 61
    for _ in range(20):
        verify(source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5).token, EMULATOR_KEY)
    wait_until(lambda: source.cached_key().last_error is not None)
    reads_while_down = vault.reads
    assert source.cached_key().has_key
    for _ in range(20):  # within the retry pause, nobody hits Key Vault again
        source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    assert vault.reads == reads_while_down
    vault.available = True
    vault.secrets["wps-key"] = SECOND_KEY
    clock.now += 10
    source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    wait_until(lambda: source.access_keys() == (SECOND_KEY,))
    assert source.cached_key().last_error is None


def test_keyvault_down_without_a_cached_key_is_a_503() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY}, available=False)
    source = keyvault(vault, Clock())
    with pytest.raises(DependencyUnavailable) as caught:
        source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    assert caught.value.dependency == "Key Vault"
    assert caught.value.headers["Retry-After"]
    reads = vault.reads
    with pytest.raises(DependencyUnavailable):  # answered from the remembered failure
        source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    assert vault.reads == reads


@pytest.mark.parametrize(
    ("vault", "words"),
    [
        (FakeKeyVault({}), "does not exist"),
        (FakeKeyVault({"wps-key": EMULATOR_KEY}, status_override=403), "Key Vault Secrets User"),
    ],
)
def test_keyvault_failures_explain_the_fix(vault: FakeKeyVault, words: str) -> None:
    with pytest.raises(DependencyUnavailable) as caught:
        keyvault(vault, Clock()).client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
    assert words in caught.value.log_message


def test_keyvault_identity_failure_is_a_503() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    with pytest.raises(DependencyUnavailable):
        keyvault(vault, Clock(), credential=FakeCredential(available=False)).client_access(
            hub="chat", user_id="u", roles=[], groups=[], minutes=5
        )


def test_keyvault_forced_refresh_picks_up_rotation_but_is_rate_limited() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    clock = Clock()
    source = keyvault(vault, clock)
    assert source.access_keys() == (EMULATOR_KEY,)
    vault.secrets["wps-key"] = SECOND_KEY
    assert source.access_keys(refresh=True) == (EMULATOR_KEY,)  # read just now: not again yet
    clock.now += 10
    assert source.access_keys(refresh=True) == (SECOND_KEY,)
    reads = vault.reads
    for _ in range(10):
        source.access_keys(refresh=True)
    assert vault.reads == reads


def test_keyvault_concurrent_first_use_reads_once() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY}, delay_seconds=0.05)
    source = keyvault(vault, Clock())
    errors: list[BaseException] = []

    def negotiate() -> None:
        try:
            source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=5)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=negotiate) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert vault.reads == 1


def service_token(minutes: int = 60) -> str:
    exp = int(time.time()) + minutes * 60
    return jwt.encode({"aud": "x", "exp": exp}, "service-side-signing-key-not-ours-0123", algorithm="HS256")


def entra(adapter: FakeAdapter, credential: FakeCredential | None = None) -> EntraTokenSource:
    cred = credential or FakeCredential()
    return EntraTokenSource(
        endpoint=ENDPOINT,
        credential_provider=lambda: cred,
        sdk_options={"transport": transport_for(adapter), "retry_total": 0},
    )


def test_entra_source_calls_generate_token_with_the_identity() -> None:
    issued = service_token(minutes=30)

    def service(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        return json_reply(200, {"token": issued})

    adapter = FakeAdapter(service)
    access = entra(adapter).client_access(
        hub="chat", user_id="alice", roles=["webpubsub.sendToGroup.chat"], groups=["chat"], minutes=30
    )
    assert access.token == issued
    assert access.url == f"wss://contoso.webpubsub.azure.com/client/hubs/chat?access_token={issued}"
    exp = jwt.decode(issued, options={"verify_signature": False})["exp"]
    assert access.expires_on == datetime.fromtimestamp(exp, UTC)
    (call,) = adapter.seen
    assert call.method == "POST"
    assert call.path == "/api/hubs/chat/:generateToken"
    query = parse_qs(urlsplit(call.url).query)
    assert query["userId"] == ["alice"]
    assert query["role"] == ["webpubsub.sendToGroup.chat"]
    assert query["group"] == ["chat"]
    assert query["minutesToExpire"] == ["30"]
    assert call.headers["Authorization"] == "Bearer fake-entra-token"


@pytest.mark.parametrize(
    ("protocol", "client_type", "path"),
    [
        (ClientProtocol.DEFAULT, "Default", "/client/hubs/chat"),
        (ClientProtocol.MQTT, "MQTT", "/clients/mqtt/hubs/chat"),
        (ClientProtocol.SOCKETIO, "SocketIO", "/clients/socketio/hubs/chat"),
    ],
)
def test_entra_source_asks_generate_token_for_the_client_type(
    protocol: ClientProtocol, client_type: str, path: str
) -> None:
    issued = service_token()
    adapter = FakeAdapter(lambda seen: json_reply(200, {"token": issued}))
    access = entra(adapter).client_access(
        hub="chat", user_id="alice", roles=[], groups=[], minutes=60, client_protocol=protocol
    )
    (call,) = adapter.seen
    assert call.query["clientType"] == [client_type]  # the generateToken REST API's parameter
    assert access.base_url == f"wss://contoso.webpubsub.azure.com{path}"
    assert access.url == f"{access.base_url}?access_token={issued}"


def test_keyvault_source_passes_the_client_protocol_on() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    access = keyvault(vault, Clock()).client_access(
        hub="chat", user_id="u", roles=[], groups=[], minutes=5, client_protocol=ClientProtocol.MQTT
    )
    assert access.base_url.endswith("/clients/mqtt/hubs/chat")
    jwt.decode(access.token, EMULATOR_KEY, algorithms=["HS256"], audience=f"{ENDPOINT}/clients/mqtt/hubs/chat")


def test_entra_source_reuses_client_and_credential() -> None:
    credential = FakeCredential()
    adapter = FakeAdapter(lambda seen: json_reply(200, {"token": service_token()}))
    source = entra(adapter, credential)
    for _ in range(5):
        source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=60)
    assert len(adapter.seen) == 5
    assert credential.calls == 1  # the SDK's token cache holds the identity token


@pytest.mark.parametrize(
    ("handler", "credential", "dependency", "words"),
    [
        (lambda s: json_reply(200, {"token": "x"}), FakeCredential(available=False), "Entra ID", "could not get"),
        (lambda s: json_reply(401, {"code": "Unauthorized"}), FakeCredential(), "Web PubSub", "refused"),
        (lambda s: json_reply(403, {"code": "Forbidden"}), FakeCredential(), "Web PubSub", "Service Owner"),
        (lambda s: json_reply(404, {"code": "NotFound"}), FakeCredential(), "Web PubSub", "WEBPUBSUB_HUB"),
        (lambda s: json_reply(503, {"code": "Busy"}), FakeCredential(), "Web PubSub", "503"),
        (down, FakeCredential(), "Web PubSub", "ServiceRequestError"),
    ],
)
def test_entra_source_failures_are_503_with_the_cause(
    handler: object, credential: FakeCredential, dependency: str, words: str
) -> None:
    source = entra(FakeAdapter(handler), credential)  # type: ignore[arg-type]
    with pytest.raises(DependencyUnavailable) as caught:
        source.client_access(hub="chat", user_id="u", roles=[], groups=[], minutes=60)
    assert caught.value.dependency == dependency
    assert words in caught.value.log_message
    assert caught.value.status == 503


def test_entra_source_has_no_keys() -> None:
    assert entra(FakeAdapter(down)).access_keys(refresh=True) == ()


def test_keyvault_probe_reads_now_and_keeps_the_cached_key_when_it_fails() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    source = keyvault(vault, Clock())
    source.access_keys()
    vault.secrets["wps-key"] = SECOND_KEY
    source.check(1.0)  # reads although the cached key is fresh, and a success refreshes it
    assert vault.reads == 2
    assert source.access_keys() == (SECOND_KEY,)
    vault.available = False
    with pytest.raises(DependencyUnavailable):
        source.check(1.0)
    assert source.access_keys() == (SECOND_KEY,)
    assert source.cached_key().has_key
    assert source.cached_key().last_error is not None


def test_keyvault_probe_makes_one_attempt_without_retries() -> None:
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY}, status_override=503)
    adapter = FakeAdapter(vault)
    source = KeyVaultTokenSource(
        endpoint=ENDPOINT,
        vault_uri="https://test.vault.azure.net/",
        secret_name="wps-key",
        refresh_seconds=300,
        credential_provider=FakeCredential,
        # The SDK's default retry policy, which retries a 503 several times for an ordinary read.
        secret_client_factory=lambda: SecretClient(
            "https://test.vault.azure.net/", FakeCredential(), transport=transport_for(adapter)
        ),
    )
    with pytest.raises(DependencyUnavailable) as caught:
        source.check(1.0)
    assert "503" in caught.value.detail
    reads = [seen for seen in adapter.seen if "Authorization" in seen.headers]  # the challenge is cached per process
    assert len(reads) == 1
