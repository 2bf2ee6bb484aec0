"""The composition root: each collaborator built once, one reset for every cache, and the identity bounded in time."""

from __future__ import annotations

import asyncio
import logging
from contextlib import ExitStack

import pytest
from azure.core.exceptions import ClientAuthenticationError

from shared import runtime as runtime_module
from shared.config import load_settings
from shared.errors import ConfigError, NotFound
from shared.policy import GroupPolicy
from shared.runtime import IDENTITY_OPTIONS, AsyncRunner, Runtime, get_runtime, reset_runtime
from shared.tokens import EntraTokenSource, KeyTokenSource
from tests.support.settings import LOCAL_ENVIRON, entra_settings, local_settings
from tests.support.standins import StandIn, serve, silent, use_identity_endpoint

WEBPUBSUB_SCOPE = "https://webpubsub.azure.com/.default"


def entra_runtime(**overrides: str) -> Runtime:
    return Runtime(entra_settings("https://contoso.webpubsub.azure.com", **overrides))


def test_collaborators_are_built_once_and_shared() -> None:
    runtime = Runtime(local_settings())
    assert runtime.token_source is runtime.token_source
    assert runtime.negotiator is runtime.negotiator
    assert runtime.events is runtime.events
    assert isinstance(runtime.token_source, KeyTokenSource)


def test_each_hub_gets_one_policy_from_its_own_groups() -> None:
    runtime = Runtime(local_settings(WEBPUBSUB_HUBS="chat notifications", NEGOTIATE_GROUPS_notifications="alerts"))
    assert runtime.policy_for("notifications") is runtime.policy_for("NOTIFICATIONS")
    assert runtime.policy_for("notifications").permitted_groups("u") == ("alerts",)
    assert runtime.policy is runtime.policy_for("chat")
    assert runtime.policy.permitted_groups("u") == ("chat",)


def test_policies_passed_in_replace_those_of_the_settings() -> None:
    every_hub, notifications = GroupPolicy(["x"]), GroupPolicy(["y"])
    settings = local_settings(WEBPUBSUB_HUBS="chat notifications")
    runtime = Runtime(settings, policy=every_hub, policies={"Notifications": notifications})
    assert (runtime.policy_for("chat"), runtime.policy_for("notifications")) == (every_hub, notifications)
    assert Runtime(settings, policies={"chat": every_hub}).policy_for("notifications").permitted_groups("u") == (
        "chat",
    )


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


def test_the_process_runtime_loads_the_environment_once_and_says_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in {**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "appservice"}.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="shared.runtime"):
        first = get_runtime()
        monkeypatch.setenv("WEBPUBSUB_HUB", "changed")
        assert get_runtime() is first
    assert first.settings.service.hub == "chat"
    messages = [record.getMessage() for record in caplog.records]
    assert [message for message in messages if "NEGOTIATE_AUTH" in message and "invalid" in message]
    assert any("WEBPUBSUB_CREDENTIAL=connectionstring" in message for message in messages)
    assert len(messages) == 1 + len(first.settings.development_shortcuts)


def test_a_negotiate_misconfiguration_leaves_the_event_handler_working() -> None:
    """One route's bad setting fails that route only: the runtime builds everything else."""
    runtime = Runtime(load_settings({**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "appservice"}))
    with pytest.raises(ConfigError) as caught:
        _ = runtime.negotiator
    assert caught.value.setting == "NEGOTIATE_AUTH"
    assert runtime.events is runtime.events
    assert runtime.health_monitor is runtime.health_monitor


def test_reset_forgets_every_process_wide_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LOCAL_ENVIRON.items():
        monkeypatch.setenv(name, value)
    first = get_runtime()
    monitor = first.health_monitor
    loop = first.async_runner.loop
    reset_runtime()
    monkeypatch.setenv("WEBPUBSUB_HUB", "changed")
    second = get_runtime()
    assert second is not first
    assert second.settings.service.hub == "changed"
    assert second.health_monitor is not monitor
    assert loop.is_closed()  # the old runtime's handler loop ended with it


def test_async_runner_runs_coroutines_from_sync_code_on_one_loop() -> None:
    runner = AsyncRunner()
    loops = []

    async def where() -> asyncio.AbstractEventLoop:
        loops.append(asyncio.get_running_loop())
        return loops[-1]

    try:
        assert runner.run(where()) is runner.run(where())
        assert len(set(map(id, loops))) == 1

        async def fails() -> None:
            raise ValueError("raised in the handler")

        with pytest.raises(ValueError, match="raised in the handler"):
            runner.run(fails())
    finally:
        runner.close()


@pytest.mark.parametrize(
    ("configured", "expected"), [(logging.NOTSET, logging.WARNING), (logging.DEBUG, logging.DEBUG)]
)
def test_the_sdks_per_request_log_is_quiet_unless_the_operator_asked_for_it(
    monkeypatch: pytest.MonkeyPatch, configured: int, expected: int
) -> None:
    sdk_logger = logging.getLogger(runtime_module.SDK_REQUEST_LOGGER)
    monkeypatch.setattr(sdk_logger, "level", configured)
    _ = Runtime(local_settings()).token_source
    assert sdk_logger.level == expected


def test_the_server_side_client_is_one_per_hub_on_the_token_sources_sdk_client() -> None:
    runtime = Runtime(local_settings(WEBPUBSUB_HUBS="chat news"))
    assert runtime.service_client() is runtime.service_client("CHAT")
    assert runtime.service_client("news").hub == "news"
    assert runtime.async_service_client("news").hub == "news"
    with pytest.raises(NotFound):
        runtime.service_client("elsewhere")
