"""The server-side client in each credential mode, against the local stack: the connection string's key,
the key kept in Key Vault (rotation included), and Entra ID through the local managed-identity endpoint.

Whatever the mode, a message the app sends reaches the official client, and a credential the service
refuses is a 503 that names the cause.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.keyvault.secrets import SecretClient

from devstack.__main__ import RunningStack
from shared.config import load_settings
from shared.errors import DependencyUnavailable
from shared.runtime import Runtime, get_runtime, use_runtime
from shared.service_client import get_service_client
from shared.tokens import KeyVaultTokenSource
from tests.support.chat import chat_client, negotiator, service_of
from tests.support.fakes import FakeAdapter, FakeCredential, FakeKeyVault, transport_for
from tests.support.stack import running_stack

VAULT_URI = "https://chat-vault.vault.azure.net/"
SECRET = "webpubsub-access-key"
STALE_KEY = "StaleKeyFromBeforeTheRotation0000000000000="


def delivered_to_client(stack: RunningStack) -> str:
    """Send through the app's client and return what the official client received."""
    with chat_client(negotiator(stack, "olivia")) as olivia:
        olivia.connection_id()
        get_service_client().send_to_user("olivia", "through the app")
        return str(olivia.server_messages.get(timeout=10).data)


def test_connection_string_mode(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        assert get_runtime().settings.service.credential.value == "connectionstring"
        assert delivered_to_client(stack) == "through the app"


def test_entra_mode_uses_the_local_managed_identity(tmp_path: Path) -> None:
    entra = {
        "WEBPUBSUB_CREDENTIAL": "entra",
        "WEBPUBSUB_ENDPOINT": "http://localhost:8080",
        "EVENTHANDLER_AUTH": "bearer",
    }
    with running_stack(tmp_path, **entra) as stack:
        assert get_runtime().settings.service.credential.value == "entra"
        assert get_runtime().token_source.access_keys() == ()  # no key anywhere in the app
        assert delivered_to_client(stack) == "through the app"


@pytest.fixture
def keyvault_stack(tmp_path: Path) -> Iterator[tuple[RunningStack, FakeKeyVault]]:
    """The stack with the app in keyvault mode: its key comes from a Key Vault stand-in holding a stale key."""
    with running_stack(tmp_path) as stack:
        service = service_of(stack)
        vault = FakeKeyVault(secrets={SECRET: STALE_KEY})
        environ = {
            **os.environ,
            "WEBPUBSUB_CREDENTIAL": "keyvault",
            "WEBPUBSUB_ENDPOINT": service.endpoint,
            "KEYVAULT_URI": VAULT_URI,
            "WEBPUBSUB_KEY_SECRET_NAME": SECRET,
        }
        tokens = KeyVaultTokenSource(
            endpoint=service.endpoint,
            vault_uri=VAULT_URI,
            secret_name=SECRET,
            refresh_seconds=3600,
            credential_provider=FakeCredential,
            secret_client_factory=lambda: SecretClient(
                VAULT_URI, FakeCredential(), transport=transport_for(FakeAdapter(vault))
            ),
            forced_refresh_seconds=0.0,
        )
        use_runtime(Runtime(load_settings(environ), token_source=tokens))
        try:
            yield stack, vault
        finally:
            use_runtime(None)


def test_keyvault_mode_names_a_stale_key_then_follows_the_rotation(
    keyvault_stack: tuple[RunningStack, FakeKeyVault],
) -> None:
    stack, vault = keyvault_stack
    service = service_of(stack)
    with pytest.raises(DependencyUnavailable) as refused:
        get_service_client().send_to_all("with the stale key")
    assert "does not match" in refused.value.detail
    assert STALE_KEY not in refused.value.detail

    # The operator puts the service's current key in the vault; the next refusal re-reads it and retries,
    # and negotiate signs with the new key from then on.
    vault.secrets[SECRET] = service.service.settings.access_key
    reads = vault.reads
    get_service_client().send_to_all("with the new key")
    assert vault.reads == reads + 1
    assert delivered_to_client(stack) == "through the app"
    assert vault.reads == reads + 1  # one re-read, not one per call


def test_the_publish_api_answers_503_naming_the_cause_when_the_service_refuses_the_key(
    keyvault_stack: tuple[RunningStack, FakeKeyVault],
) -> None:
    stack, _ = keyvault_stack
    response = httpx.post(stack.url("messages"), json={"to": {"all": True}, "data": "hi"}, timeout=30)
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["error"]["code"] == "dependency_unavailable"
    assert STALE_KEY not in response.text
