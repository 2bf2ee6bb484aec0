"""The probes health and the doctor share, against the real SDK on fake wires and against the local service.

The access probe is the one that finds a key or identity the service refuses, which nothing else
notices: negotiate signs tokens locally, and clients then hang on "connecting".
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub, ServiceSettings
from shared.errors import DependencyUnavailable
from shared.probes import (
    FIXES,
    Failure,
    HttpProbe,
    ProbeFailed,
    classify,
    identity_credential,
    probe_service,
    probe_service_access,
)
from shared.tokens import EntraTokenSource, KeyTokenSource, KeyVaultTokenSource
from tests.support.fakes import EMULATOR_KEY, FakeAdapter, FakeCredential, Reply, Seen, down, json_reply, transport_for

ENDPOINT = "https://contoso.webpubsub.azure.com"
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvuts"


def key_source(handler: FakeAdapter) -> KeyTokenSource:
    return KeyTokenSource(ENDPOINT, EMULATOR_KEY, sdk_options={"transport": transport_for(handler)})


def entra_source(handler: FakeAdapter, credential: FakeCredential | None = None) -> EntraTokenSource:
    given = credential or FakeCredential()
    return EntraTokenSource(
        endpoint=ENDPOINT, credential_provider=lambda: given, sdk_options={"transport": transport_for(handler)}
    )


def answering(status: int, payload: object = None) -> FakeAdapter:
    def reply(_: Seen) -> Reply:
        return json_reply(status, payload if payload is not None else {"code": "x", "message": "no"})

    return FakeAdapter(reply)


def failed(action: object) -> ProbeFailed:
    with pytest.raises(ProbeFailed) as caught:
        action()  # type: ignore[operator]
    return caught.value


# With an access key: a signed HEAD users/{id} per hub


@pytest.mark.parametrize("status", [200, 404])
def test_a_key_the_service_accepts_passes_whether_or_not_the_user_exists(status: int) -> None:
    adapter = answering(status, {})
    detail = probe_service_access(key_source(adapter), ENDPOINT, ("chat", "lobby"), 2.0)
    assert detail == "the service accepts the app's access key for hubs chat, lobby"
    assert [(seen.method, seen.path) for seen in adapter.seen] == [
        ("HEAD", "/api/hubs/chat/users/webpubsub-health-probe"),
        ("HEAD", "/api/hubs/lobby/users/webpubsub-health-probe"),
    ]
    assert all(seen.headers["Authorization"].startswith("Bearer ") for seen in adapter.seen)


def test_a_refused_key_is_named_with_its_fix() -> None:
    failure = failed(lambda: probe_service_access(key_source(answering(401)), ENDPOINT, ("chat",), 2.0))
    assert failure.failure is Failure.KEY_REFUSED
    assert failure.detail.startswith("hub chat: the service refuses the app's access key (HTTP 401)")
    assert "Keys page" in failure.fix
    assert EMULATOR_KEY not in failure.detail + failure.log_detail


def test_a_403_to_a_key_is_the_network_not_the_key() -> None:
    failure = failed(lambda: probe_service_access(key_source(answering(403)), ENDPOINT, ("chat",), 2.0))
    assert failure.failure is Failure.NETWORK_DENIED


def test_an_unreachable_service_is_a_network_failure() -> None:
    failure = failed(lambda: probe_service_access(key_source(FakeAdapter(down)), ENDPOINT, ("chat",), 2.0))
    assert failure.network
    assert failure.detail.startswith("hub chat: ")


def test_no_key_from_key_vault_means_nothing_to_try() -> None:
    def unavailable() -> tuple[str, ...]:
        raise DependencyUnavailable("Key Vault", "secret 'wps-key' in https://v.vault.azure.net/: 403")

    source = KeyVaultTokenSource(
        endpoint=ENDPOINT,
        vault_uri="https://v.vault.azure.net/",
        secret_name="wps-key",
        refresh_seconds=300,
        credential_provider=FakeCredential,
    )
    source.access_keys = lambda **_: unavailable()  # type: ignore[method-assign]
    failure = failed(lambda: probe_service_access(source, ENDPOINT, ("chat",), 2.0))
    assert failure.failure is Failure.NO_KEY
    assert "wps-key" not in failure.detail  # anyone may read it
    assert "wps-key" in failure.log_detail


# With Entra ID: generateToken, as negotiate asks it


def test_an_identity_the_service_accepts_gets_a_token_for_every_hub() -> None:
    adapter = answering(200, {"token": "issued"})
    detail = probe_service_access(entra_source(adapter), ENDPOINT, ("chat",), 2.0)
    assert detail == "the service accepts the app's identity for hub chat"
    assert [(seen.method, seen.path) for seen in adapter.seen] == [("POST", "/api/hubs/chat/:generateToken")]
    assert adapter.seen[0].query["minutesToExpire"] == ["1"]


def test_an_identity_without_the_role_is_named() -> None:
    failure = failed(lambda: probe_service_access(entra_source(answering(403)), ENDPOINT, ("chat",), 2.0))
    assert failure.failure is Failure.ROLE_MISSING
    assert "lacks the Web PubSub Service Owner role" in failure.detail
    assert "Web PubSub Service Owner" in failure.fix


def test_an_identity_token_the_service_refuses_is_named() -> None:
    failure = failed(lambda: probe_service_access(entra_source(answering(401)), ENDPOINT, ("chat",), 2.0))
    assert failure.failure is Failure.IDENTITY_REFUSED


def test_an_identity_without_a_token_is_named() -> None:
    source = entra_source(answering(200, {"token": "x"}), FakeCredential(available=False))
    failure = failed(lambda: probe_service_access(source, ENDPOINT, ("chat",), 2.0))
    assert failure.failure is Failure.NO_TOKEN
    assert "identity endpoint unreachable" in failure.log_detail


# Against the local Web PubSub service: its own authorisation decides


@pytest.fixture
def local_service() -> Iterator[RunningWebPubSub]:
    with LocalWebPubSub(ServiceSettings(access_key=OTHER_KEY, role_assignments={})).run_in_thread() as service:
        yield service


def test_the_local_service_refuses_an_app_key_that_is_not_its_own(local_service: RunningWebPubSub) -> None:
    wrong = KeyTokenSource(local_service.endpoint, EMULATOR_KEY)
    failure = failed(lambda: probe_service_access(wrong, local_service.endpoint, ("chat",), 5.0))
    assert failure.failure is Failure.KEY_REFUSED
    right = KeyTokenSource(local_service.endpoint, OTHER_KEY)
    assert "accepts the app's access key" in probe_service_access(right, local_service.endpoint, ("chat",), 5.0)


def test_the_local_service_refuses_an_identity_without_a_data_plane_role(
    local_service: RunningWebPubSub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in local_service.identity_environment().items():
        monkeypatch.setenv(name, value)
    credential = identity_credential(None, timeout=5.0)
    source = EntraTokenSource(endpoint=local_service.endpoint, credential_provider=lambda: credential)
    failure = failed(lambda: probe_service_access(source, local_service.endpoint, ("chat",), 5.0))
    assert failure.failure is Failure.ROLE_MISSING


# The service's health endpoint and network failures


def test_a_host_that_is_not_the_service_is_named() -> None:
    class Answers:
        def status(self, method: str, url: str, timeout: float) -> int:
            return 404

    failure = failed(lambda: probe_service(Answers(), ENDPOINT, 1.0))  # type: ignore[arg-type]
    assert failure.failure is Failure.NOT_THE_SERVICE
    assert failure.detail.startswith(f"HEAD {ENDPOINT}/api/health?api-version=2024-12-01 answered HTTP 404")


def test_a_403_on_the_health_endpoint_is_the_network() -> None:
    """Health and the doctor once disagreed here (wrong endpoint vs refused network): one answer now."""

    class Answers:
        def status(self, method: str, url: str, timeout: float) -> int:
            return 403

    assert failed(lambda: probe_service(Answers(), ENDPOINT, 1.0)).failure is Failure.NETWORK_DENIED  # type: ignore[arg-type]


def test_network_failures_name_the_host_only_for_the_operator() -> None:
    error = requests.ConnectionError(OSError(-2, "Name or service not known"))
    error.__cause__ = __import__("socket").gaierror(-2, "Name or service not known")
    failure = classify(error, "https://private-vault.vault.azure.net/secrets?x=1", 2.0)
    assert failure.failure is Failure.DNS
    assert "private-vault" not in failure.detail
    assert "private-vault.vault.azure.net" in failure.log_detail
    assert "x=1" not in failure.log_detail


def test_a_refused_connection_is_named_by_the_http_probe() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        failure = failed(lambda: HttpProbe().status("HEAD", f"http://127.0.0.1:{port}/", 1.0))
    assert failure.failure is Failure.REFUSED
    assert failure.detail == "connection refused"


def test_every_failure_has_a_fix() -> None:
    assert set(FIXES) == set(Failure)
    assert json.dumps(sorted(FIXES.values()))
