"""The composition root: each collaborator built once, and the app's identity bounded in time."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from azure.core.exceptions import ClientAuthenticationError

from shared import runtime as runtime_module
from shared.runtime import IDENTITY_OPTIONS, Runtime
from shared.tokens import EntraTokenSource, KeyTokenSource
from tests.conftest import entra_settings, local_settings
from tests.standins import StandIn, serve, silent, use_identity_endpoint

WEBPUBSUB_SCOPE = "https://webpubsub.azure.com/.default"


def entra_runtime(**overrides: str) -> Runtime:
    return Runtime(entra_settings("https://contoso.webpubsub.azure.com", **overrides))


def test_collaborators_are_built_once_and_shared() -> None:
    runtime = Runtime(local_settings())
    assert runtime.token_source is runtime.token_source
    assert runtime.negotiator is runtime.negotiator
    assert runtime.events is runtime.events
    assert isinstance(runtime.token_source, KeyTokenSource)


def test_entra_mode_asks_the_credential_only_when_a_token_is_needed() -> None:
    asked: list[str] = []

    class Credential:
        def get_token(self, *scopes: str, **kwargs: object) -> object:
            asked.extend(scopes)
            raise ClientAuthenticationError("no identity here")

    runtime = entra_runtime()
    runtime._credential = Credential()  # type: ignore[assignment]
    assert isinstance(runtime.token_source, EntraTokenSource)
    assert runtime.negotiator is not None
    assert asked == []


def test_the_apps_identity_retries_a_failing_endpoint_a_bounded_number_of_times(
    servers: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """azure-identity's default retries a 503 more often, with longer back-off; the app's credential stops."""
    identity = StandIn(503)
    use_identity_endpoint(monkeypatch, serve(servers, identity))
    client_id = "00000000-0000-0000-0000-0000000000a1"
    credential = entra_runtime(AZURE_CLIENT_ID=client_id).credential()
    with pytest.raises(ClientAuthenticationError):
        credential.get_token(WEBPUBSUB_SCOPE)
    assert len(identity.seen) == IDENTITY_OPTIONS["retry_total"] + 1
    assert all(f"client_id={client_id}" in request for request in identity.seen)


def test_the_apps_identity_gives_up_on_a_silent_endpoint_after_its_read_timeout(
    servers: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that accepts the connection and never answers ends in the configured read timeout."""
    monkeypatch.setitem(runtime_module.IDENTITY_OPTIONS, "read_timeout", 0.3)
    monkeypatch.setitem(runtime_module.IDENTITY_OPTIONS, "retry_total", 0)
    use_identity_endpoint(monkeypatch, silent(servers))
    credential = entra_runtime().credential()
    with pytest.raises(ClientAuthenticationError) as raised:
        credential.get_token(WEBPUBSUB_SCOPE)
    assert "read timeout=0.3" in str(raised.value)
