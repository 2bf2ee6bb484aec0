"""`doctor hubs`: the hub mismatch nobody sees, against the local stack and against Azure's management API.

Azure is a fake management client answering with the SDK's own models, so their serialization to the
service's (ARM) shape is the real one.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.webpubsub import models

from devstack.__main__ import RunningStack
from devstack.webpubsub import EventHandlerSettings
from doctor.cli import main
from doctor.target import AzureAccess
from tests.support.fakes import FakeCredential
from tests.support.stack import running_stack

REPOSITORY = Path(__file__).resolve().parents[2]
APP_URL = "https://contoso-app.azurewebsites.net"
AUDIENCE = "api://contoso-events"
ENTRA_APP = {
    "WEBPUBSUB_CREDENTIAL": "entra",
    "WEBPUBSUB_ENDPOINT": "https://contoso.webpubsub.azure.com",
    "WEBPUBSUB_HUB": "chat",
    "NEGOTIATE_AUTH": "anonymous",
    "EVENTHANDLER_AUTH": "bearer",
    "EVENTHANDLER_BEARER_ISSUER": "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0",
    "EVENTHANDLER_BEARER_AUDIENCE": AUDIENCE,
    "EVENTHANDLER_BEARER_PRINCIPAL_ID": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
    "WEBSITE_HOSTNAME": "contoso-app.azurewebsites.net",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-0000000000aa",
    "AZURE_RESOURCE_GROUP": "rg-contoso",
}


def run(*argv: str, access: AzureAccess | None = None) -> tuple[int, dict[str, dict[str, Any]]]:
    out = io.StringIO()
    code = main([*argv, "--json"], access=access, out=out)
    document = json.loads(out.getvalue()) if out.getvalue().strip() else {"checks": []}
    return code, {check["name"]: check for check in document["checks"]}


# The local service: its own configuration, read-only


@contextlib.contextmanager
def local_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> Iterator[RunningStack]:
    """The stack started from the repository; the doctor then runs where its local.settings.json is."""
    monkeypatch.chdir(REPOSITORY)
    with running_stack(tmp_path, **values) as stack:
        monkeypatch.chdir(tmp_path)
        yield stack


@pytest.fixture
def lobby_app_chat_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The app serves hub lobby; the local service's event handler is configured for chat only."""
    with local_stack(monkeypatch, tmp_path, WEBPUBSUB_HUB="lobby") as stack:
        assert stack.service is not None
        handler = EventHandlerSettings(url_template=stack.url("eventhandler"), hubs=frozenset({"chat"}))
        stack.service.service.configure_event_handlers([handler])
        yield


@pytest.mark.usefixtures("lobby_app_chat_service")
def test_a_hub_the_local_service_delivers_no_events_for_is_found() -> None:
    code, checks = run("hubs")
    assert code == 1
    lobby = checks["hub lobby"]
    assert lobby["status"] == "fail"
    assert "the service delivers no events for hub lobby" in lobby["summary"]
    assert "has event handlers for: chat" in lobby["summary"]
    assert "connect policy" in lobby["summary"]
    assert "WEBPUBSUB_HUB" in lobby["fix"]


def test_the_local_stack_as_make_run_starts_it_delivers_every_hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with local_stack(monkeypatch, tmp_path, WEBPUBSUB_HUBS="chat notifications"):
        code, checks = run("hubs")
    assert code == 0, checks
    assert {name for name in checks if name.startswith("hub ")} == {
        "hub chat",
        "hub chat events",
        "hub chat auth",
        "hub notifications",
        "hub notifications events",
        "hub notifications auth",
    }
    assert {check["status"] for check in checks.values()} == {"ok"}


# Azure: the management API, with a fake client


class FakeHubs:
    """`web_pub_sub_hubs` of WebPubSubManagementClient: hubs by name, as the SDK's models."""

    def __init__(self, hubs: dict[str, models.WebPubSubHub]):
        self.hubs = hubs
        self.asked: list[tuple[str, str, str]] = []

    def get(self, hub_name: str, resource_group_name: str, resource_name: str) -> models.WebPubSubHub:
        self.asked.append((hub_name, resource_group_name, resource_name))
        if hub_name not in self.hubs:
            raise ResourceNotFoundError(f"hub {hub_name} not found")
        return self.hubs[hub_name]

    def list(self, resource_group_name: str, resource_name: str) -> list[SimpleNamespace]:
        # `name` is read-only in the SDK's model (the service fills it in): listed as the service would.
        return [SimpleNamespace(name=name, serialize=hub.serialize) for name, hub in self.hubs.items()]


class FakeManagement:
    def __init__(self, hubs: dict[str, models.WebPubSubHub]):
        self.web_pub_sub_hubs = FakeHubs(hubs)
        self.created_with: list[str] = []

    def factory(self, credential: Any, subscription: str) -> FakeManagement:
        self.created_with.append(subscription)
        return self


def hub(
    url: str = f"{APP_URL}/api/eventhandler",
    events: tuple[str, ...] = ("connect", "connected", "disconnected"),
    resource: str | None = AUDIENCE,
) -> models.WebPubSubHub:
    auth = models.UpstreamAuthSettings(type="None")
    if resource is not None:
        auth = models.UpstreamAuthSettings(
            type="ManagedIdentity", managed_identity=models.ManagedIdentitySettings(resource=resource)
        )
    handler = models.EventHandler(url_template=url, user_event_pattern="*", system_events=list(events), auth=auth)
    return models.WebPubSubHub(properties=models.WebPubSubHubProperties(event_handlers=[handler]))


def azure(
    monkeypatch: pytest.MonkeyPatch, hubs: dict[str, models.WebPubSubHub], **settings: str
) -> tuple[FakeManagement, AzureAccess]:
    for name, value in {**ENTRA_APP, **settings}.items():
        monkeypatch.setenv(name, value)
    management = FakeManagement(hubs)
    return management, AzureAccess(credential=FakeCredential(), management_client=management.factory)


def test_matching_azure_hub_settings_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    management, access = azure(monkeypatch, {"chat": hub()})
    code, checks = run("hubs", access=access)
    assert code == 0, checks
    assert checks["hub chat"]["status"] == "ok"
    assert checks["hub chat auth"]["summary"].startswith(f"the service sends a token for {AUDIENCE}")
    # Which resource: the azd environment's subscription and group, the endpoint's name.
    assert management.created_with == [ENTRA_APP["AZURE_SUBSCRIPTION_ID"]]
    assert management.web_pub_sub_hubs.asked == [("chat", "rg-contoso", "contoso")]


def test_an_azure_hub_without_settings_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _, access = azure(monkeypatch, {"chat": hub()}, WEBPUBSUB_HUB="lobby")
    code, checks = run("hubs", access=access)
    assert code == 1
    assert "the service delivers no events for hub lobby" in checks["hub lobby"]["summary"]
    assert "event handlers for: chat" in checks["hub lobby"]["summary"]


def test_an_azure_hub_whose_handler_points_elsewhere_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _, access = azure(monkeypatch, {"chat": hub(url="https://old-app.azurewebsites.net/api/eventhandler?code=k3y")})
    code, checks = run("hubs", access=access)
    assert code == 1
    summary = checks["hub chat"]["summary"]
    assert "not to the app's https://contoso-app.azurewebsites.net/api/eventhandler" in summary
    assert "k3y" not in summary  # a function key in the template is never printed


def test_an_azure_hub_that_does_not_forward_connect_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _, access = azure(monkeypatch, {"chat": hub(events=("connected", "disconnected"))})
    code, checks = run("hubs", access=access)
    assert code == 1
    assert checks["hub chat events"]["status"] == "fail"
    assert "connect policy" in checks["hub chat events"]["summary"]


def test_an_azure_hub_with_other_upstream_auth_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _, access = azure(monkeypatch, {"chat": hub(resource="api://someone-else")})
    code, checks = run("hubs", access=access)
    assert code == 1
    assert checks["hub chat auth"]["status"] == "fail"
    assert "api://someone-else" in checks["hub chat auth"]["summary"]
    assert f"resource {AUDIENCE}" in checks["hub chat auth"]["fix"]


def test_options_replace_the_azd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    management, access = azure(monkeypatch, {"chat": hub()})
    argv = ["hubs", "--subscription", "sub-2", "--resource-group", "rg-2", "--resource-name", "other"]
    code, _ = run(*argv, access=access)
    assert code == 0
    assert management.created_with == ["sub-2"]
    assert management.web_pub_sub_hubs.asked == [("chat", "rg-2", "other")]


def test_without_a_resource_group_azure_cannot_be_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, access = azure(monkeypatch, {"chat": hub()})
    monkeypatch.delenv("AZURE_RESOURCE_GROUP")
    out = io.StringIO()
    assert main(["hubs"], access=access, out=out) == 2
    assert "--resource-group (or AZURE_RESOURCE_GROUP)" in capsys.readouterr().err
