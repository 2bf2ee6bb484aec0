"""`hubs`: does the service deliver the app's hubs' events to the app, the way the app expects them?

The silent failure this finds: the app serves hub `lobby`, the service's event handler is set up
for `chat`. Clients still connect and chat (negotiate signs the tokens), but no event reaches the
app, so its connect policy, its signature checks and its handlers are bypassed and everything
reads green. For every hub the app serves, the hub's event handler settings as the service holds
them are compared with the app's settings: is there a handler at all, does its URL template point
at the app's /api/eventhandler, does it forward `connect` (and connected, disconnected, user
events), and does its upstream auth match EVENTHANDLER_AUTH.

Where the settings come from:
- the local Web PubSub service (a loopback endpoint): its read-only `GET /_devstack/hubs/{hub}`;
- Azure: the management API (azure-mgmt-webpubsub) with the operator's own credential
  (DefaultAzureCredential: `az login`, or the app's managed identity, which needs Reader on the
  resource), for `--subscription`, `--resource-group` and `--resource-name` (defaults:
  AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP as azd sets them, and the endpoint's first label).
  This is the troubleshooting guide's `az webpubsub hub show`, automated.

Both answer in the service's (ARM) shape, `{"eventHandlers": [{"urlTemplate", "userEventPattern",
"systemEvents", "auth": {"type", "managedIdentity": {"resource"}}}]}`, so one comparison serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import requests

from doctor.net import run_with_deadline, send
from doctor.report import Check, fail, ok, redact_url, skip, warn
from shared.config import Concern, EventAuth, Settings
from shared.probes import ProbeFailed

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

EVENT_HANDLER_PATH = "/api/eventhandler"
LOCAL_HUBS_PATH = "/_devstack/hubs"
REQUIRED_EVENTS = ("connect",)
EXPECTED_EVENTS = ("connect", "connected", "disconnected")
SUBSCRIPTION_SETTING = "AZURE_SUBSCRIPTION_ID"
RESOURCE_GROUP_SETTING = "AZURE_RESOURCE_GROUP"
APP_HOST_SETTING = "WEBSITE_HOSTNAME"  # App Service sets it; `make run` too


class HubSettingsSource(Protocol):
    """Where a hub's event handler settings are read: the local service or Azure's management API."""

    @property
    def where(self) -> str:
        """Where the settings are read, for messages."""
        ...

    def hub(self, name: str) -> Mapping[str, Any] | None:
        """The hub's properties in the ARM shape, or None when the service has no settings for it."""
        ...

    def configured_hubs(self) -> list[str]:
        """The hubs that do have event handler settings (for the message when one is missing)."""
        ...


class SourceUnavailable(Exception):
    """The settings could not be read; the message says why, the fix what to do."""

    def __init__(self, detail: str, fix: str):
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


@dataclass
class LocalHubs:
    """The local Web PubSub service's own view of its hubs (read-only, development only)."""

    endpoint: str
    session: requests.Session
    timeout: float

    @property
    def where(self) -> str:
        return f"the local Web PubSub service at {self.endpoint}"

    def _get(self, path: str) -> Any:
        try:
            response = send(self.session, "GET", self.endpoint + path, timeout=self.timeout)
        except ProbeFailed as error:
            raise SourceUnavailable(f"cannot reach {self.where}: {error.log_detail}", error.fix) from None
        if response.status_code == 404:
            raise SourceUnavailable(
                f"{self.where} does not show its hub settings (GET {LOCAL_HUBS_PATH} answered 404): not this "
                "project's local service",
                "Check the hub's event handler in that service's own configuration.",
            )
        if response.status_code != 200:
            raise SourceUnavailable(f"GET {path} answered {response.status_code}", "Look at the local service's log.")
        return response.json()

    def hub(self, name: str) -> Mapping[str, Any] | None:
        document = self._get(f"{LOCAL_HUBS_PATH}/{quote(name, safe='')}")
        properties = document.get("properties") if isinstance(document, Mapping) else None
        handlers = properties.get("eventHandlers") if isinstance(properties, Mapping) else None
        return properties if handlers else None

    def configured_hubs(self) -> list[str]:
        document = self._get(LOCAL_HUBS_PATH)
        names = [str(hub.get("name")) for hub in document.get("value", []) if isinstance(hub, Mapping)]
        for handler in document.get("defaultEventHandlers", []):
            hubs = handler.get("hubs") if isinstance(handler, Mapping) else None
            names += ["(every hub)"] if hubs is None else [str(hub) for hub in hubs]
        return sorted(dict.fromkeys(names))


ManagementClientFactory = Callable[["TokenCredential", str], Any]


def management_client(credential: TokenCredential, subscription: str) -> Any:
    """The Web PubSub management client (azure-mgmt-webpubsub), imported only when Azure is asked."""
    from azure.mgmt.webpubsub import WebPubSubManagementClient

    return WebPubSubManagementClient(credential, subscription, retry_total=0)


@dataclass
class AzureHubs:
    """Hub settings from Azure Resource Manager, read with the operator's credential."""

    subscription: str
    resource_group: str
    resource_name: str
    credential: Callable[[], TokenCredential]
    deadline: float
    client_factory: ManagementClientFactory = management_client
    _client: Any = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"Web PubSub resource {self.resource_name} (resource group {self.resource_group})"

    def _hubs(self) -> Any:
        if self._client is None:
            self._client = self.client_factory(self.credential(), self.subscription)
        return self._client.web_pub_sub_hubs

    def _call(self, action: Callable[[], Any], *, missing: Any = ...) -> Any:
        """Run one management call; `missing` is returned for a 404 when given."""
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
        )

        try:
            return run_with_deadline(action, self.deadline)
        except ResourceNotFoundError:
            if missing is ...:
                raise SourceUnavailable(
                    f"Azure Resource Manager knows no {self.where}",
                    f"Check --subscription, --resource-group and --resource-name ({SUBSCRIPTION_SETTING}, "
                    f"{RESOURCE_GROUP_SETTING}).",
                ) from None
            return missing
        except ProbeFailed as error:
            raise SourceUnavailable(f"Azure Resource Manager: {error.log_detail}", error.fix) from None
        except ClientAuthenticationError as error:
            raise SourceUnavailable(
                f"no token for Azure Resource Manager: {str(error).splitlines()[0][:200]}",
                "Sign in with `az login` (or run this where the app's identity has Reader on the resource).",
            ) from None
        except HttpResponseError as error:
            if error.status_code == 403:
                raise SourceUnavailable(
                    f"Azure Resource Manager refused to show {self.where} (403)",
                    "Grant this identity Reader on the resource (or sign in as one that has it).",
                ) from None
            raise SourceUnavailable(
                f"Azure Resource Manager answered {error.status_code} for {self.where}",
                f"Check --subscription, --resource-group and --resource-name ({SUBSCRIPTION_SETTING}, "
                f"{RESOURCE_GROUP_SETTING}).",
            ) from None
        except AzureError as error:
            raise SourceUnavailable(f"cannot reach Azure Resource Manager ({type(error).__name__})", "") from None

    def hub(self, name: str) -> Mapping[str, Any] | None:
        hub = self._call(lambda: self._hubs().get(name, self.resource_group, self.resource_name), missing=None)
        if hub is None:  # no hub resource: the service has no settings for it
            return None
        properties = hub.serialize().get("properties") or {}
        return properties if properties.get("eventHandlers") else None

    def configured_hubs(self) -> list[str]:
        hubs = self._call(lambda: list(self._hubs().list(self.resource_group, self.resource_name)))
        return sorted(str(hub.name) for hub in hubs if (hub.serialize().get("properties") or {}).get("eventHandlers"))


@dataclass(frozen=True)
class AzureResource:
    """Which Web PubSub resource to read: the CLI's options, else the azd environment and the endpoint."""

    subscription: str | None
    resource_group: str | None
    resource_name: str | None

    @classmethod
    def resolve(
        cls,
        environ: Mapping[str, str],
        endpoint: str | None,
        *,
        subscription: str | None = None,
        resource_group: str | None = None,
        resource_name: str | None = None,
    ) -> AzureResource:
        host = urlsplit(endpoint).hostname if endpoint else None
        from_endpoint = host.split(".", 1)[0] if host and host.endswith(".webpubsub.azure.com") else None
        return cls(
            subscription or (environ.get(SUBSCRIPTION_SETTING) or "").strip() or None,
            resource_group or (environ.get(RESOURCE_GROUP_SETTING) or "").strip() or None,
            resource_name or from_endpoint,
        )

    @property
    def missing(self) -> list[str]:
        return [
            option
            for option, value in (
                (f"--subscription (or {SUBSCRIPTION_SETTING})", self.subscription),
                (f"--resource-group (or {RESOURCE_GROUP_SETTING})", self.resource_group),
                ("--resource-name", self.resource_name),
            )
            if not value
        ]


@dataclass(frozen=True)
class AppExpectation:
    """What the app expects of its hubs' event handlers, from its own settings."""

    hubs: Sequence[str]
    app_host: str | None  # the app's host name, when known (WEBSITE_HOSTNAME or --app-url)
    auth: EventAuth | None  # None when the event handler settings do not load
    audience: str | None = None  # EVENTHANDLER_BEARER_AUDIENCE with bearer

    @classmethod
    def of(cls, settings: Settings, environ: Mapping[str, str], app_url: str | None = None) -> AppExpectation:
        host = urlsplit(app_url).netloc if app_url else (environ.get(APP_HOST_SETTING) or "").strip() or None
        auth = audience = None
        if Concern.EVENT_HANDLER not in settings.problems:
            auth = settings.event_handler.auth
            bearer = settings.event_handler.bearer
            audience = bearer.audience if bearer is not None else None
        return cls(hubs=settings.service.hubs, app_host=host, auth=auth, audience=audience)


def _handlers(properties: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [item for item in properties.get("eventHandlers") or [] if isinstance(item, Mapping)]


def _fill(template: str, hub: str, event: str) -> str:
    return template.replace("{hub}", hub).replace("{event}", event)


def _points_at_app(handler: Mapping[str, Any], hub: str, expected: AppExpectation) -> bool:
    url = urlsplit(_fill(str(handler.get("urlTemplate") or ""), hub, "connect"))
    if url.path.rstrip("/").lower() != EVENT_HANDLER_PATH:
        return False
    return expected.app_host is None or url.netloc.lower() == expected.app_host.lower()


def check_hub(
    hub: str,
    properties: Mapping[str, Any] | None,
    expected: AppExpectation,
    where: str,
    others: Callable[[], list[str]],
) -> list[Check]:
    """The findings for one hub the app serves."""
    name = f"hub {hub}"
    handlers = _handlers(properties or {})
    if not handlers:
        try:
            configured = others()
        except SourceUnavailable:
            configured = []
        elsewhere = f"; {where} has event handlers for: {', '.join(configured)}" if configured else ""
        return [
            fail(
                name,
                f"the service delivers no events for hub {hub}: {where} has no event handler for it{elsewhere}. "
                "Clients still connect and chat, but the app never sees them: its connect policy, its signature "
                "checks and its handlers are bypassed",
                f"Add an event handler to hub {hub} whose URL template is the app's {EVENT_HANDLER_PATH}, with "
                "system events connect, connected, disconnected and user events * (infra does: "
                "WEBPUBSUB_HUBS must list the hubs infra creates), or serve the hub the service has "
                "(WEBPUBSUB_HUB, WEBPUBSUB_HUBS).",
            )
        ]
    at_app = [handler for handler in handlers if _points_at_app(handler, hub, expected)]
    if not at_app:
        shown = ", ".join(redact_url(str(handler.get("urlTemplate"))) for handler in handlers)
        target = f"https://{expected.app_host}{EVENT_HANDLER_PATH}" if expected.app_host else EVENT_HANDLER_PATH
        return [
            fail(
                name,
                f"hub {hub}'s event handlers go to {shown}, not to the app's {target}: the app receives none of "
                "its events",
                f"Set the URL template of hub {hub}'s event handler to {target} (this app serves every event at that "
                "one route: no {event} in the path).",
            )
        ]
    handler = at_app[0]
    findings = [ok(name, f"{where} delivers hub {hub}'s events to {redact_url(str(handler.get('urlTemplate')))}")]
    findings.append(_check_events(hub, handler))
    findings.append(_check_auth(hub, handler, expected))
    return findings


def _check_events(hub: str, handler: Mapping[str, Any]) -> Check:
    name = f"hub {hub} events"
    events = {str(event).lower() for event in handler.get("systemEvents") or []}
    missing_required = [event for event in REQUIRED_EVENTS if event not in events]
    if missing_required:
        return fail(
            name,
            f"the service does not send connect to the app for hub {hub}: every client gets in without the app's "
            "connect policy (groups, roles, the stale-token check)",
            f"Add the system event connect to hub {hub}'s event handler.",
        )
    missing = [event for event in EXPECTED_EVENTS if event not in events]
    pattern = str(handler.get("userEventPattern") or "").strip()
    problems = []
    if missing:
        problems.append(f"no {', '.join(missing)} events (the app's handlers for them never run)")
    if not pattern:
        problems.append("no user events (the app's message handlers never run)")
    if problems:
        return warn(
            name,
            f"hub {hub}: " + "; ".join(problems),
            "Forward connect, connected and disconnected, and user events * (what infra configures).",
        )
    return ok(name, f"connect, connected, disconnected and user events {pattern} reach the app")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _check_auth(hub: str, handler: Mapping[str, Any], expected: AppExpectation) -> Check:
    name = f"hub {hub} auth"
    auth = _mapping(handler.get("auth"))
    kind = str(auth.get("type") or "None")
    identity = _mapping(auth.get("managedIdentity"))
    resource = str(identity.get("resource") or "") if kind == "ManagedIdentity" else ""
    sends = f"ManagedIdentity for {resource}" if resource else "no token"
    if expected.auth is None:
        return skip(name, f"not compared: the app's EVENTHANDLER_* settings do not load (the service sends {sends})")
    if expected.auth is EventAuth.BEARER:
        if resource and expected.audience and resource.rstrip("/") == expected.audience.rstrip("/"):
            return ok(
                name, f"the service sends a token for {resource}, the audience EVENTHANDLER_BEARER_AUDIENCE names"
            )
        return fail(
            name,
            f"the app expects a bearer token for {expected.audience} (EVENTHANDLER_AUTH=bearer), the service sends "
            f"{sends}: the app refuses every event with 401 and no client can connect",
            f"Set hub {hub}'s upstream auth to ManagedIdentity with resource {expected.audience}, or make "
            "EVENTHANDLER_BEARER_AUDIENCE the resource the hub names.",
        )
    if expected.auth is EventAuth.APP_SERVICE and not resource:
        return fail(
            name,
            "the app expects App Service Authentication to admit the service (EVENTHANDLER_AUTH=appservice), but the "
            "service sends no token: App Service refuses every event",
            f"Set hub {hub}'s upstream auth to ManagedIdentity with the app registration's resource.",
        )
    return ok(name, f"EVENTHANDLER_AUTH={expected.auth.value}; the service sends {sends}")


def check_hubs(source: HubSettingsSource, expected: AppExpectation) -> list[Check]:
    """Every check of the `hubs` command."""
    findings: list[Check] = []
    for hub in expected.hubs:
        try:
            properties = source.hub(hub)
        except SourceUnavailable as error:
            findings.append(fail(f"hub {hub}", f"could not read the hub settings: {error.detail}", error.fix))
            continue
        findings.extend(check_hub(hub, properties, expected, source.where, source.configured_hubs))
    return findings
