"""What the local Web PubSub service is configured with: key, hubs and their event handlers, identities, limits.

The defaults match the official emulator's (`awps-emulator`) so the same app settings work
against either: endpoint ``http://localhost:8080``, its public default access key, and one
event handler at the local Functions host's ``/api/eventhandler`` receiving the three system
events and every user event.

Hubs are configured like the service's hub settings: each :class:`HubSettings` has an ordered
list of event handlers (first match wins), each with a URL template, the system events and user
event pattern it receives, and how the service authenticates to it (nothing, or a managed-identity
token for a resource). Hubs without settings of their own use ``ServiceSettings.event_handlers``.
"""

from __future__ import annotations

import fnmatch
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: The official emulator's public default key. Not a secret: it is published in its README.
DEFAULT_ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
DEFAULT_EVENT_HANDLER_URL = "http://localhost:7071/api/eventhandler"
DEFAULT_PORT = 8080
SYSTEM_EVENTS = ("connect", "connected", "disconnected")
#: The principal the local managed-identity endpoint issues tokens for when the caller names none
#: (a system-assigned identity); it holds the data-plane owner role unless settings say otherwise.
DEFAULT_APP_PRINCIPAL_ID = "local-system-assigned-identity"
#: Object id of the local service's own managed identity: the ``oid`` of the tokens it sends to
#: event handlers with ManagedIdentity auth. Fixed, so an app can be configured with it once.
DEFAULT_SERVICE_PRINCIPAL_ID = "6f1d4c2e-8a8b-4d3e-9c4a-00000000a295"
#: The built-in data-plane roles (Azure RBAC role names) the local REST API knows.
SERVICE_OWNER = "Web PubSub Service Owner"
SERVICE_READER = "Web PubSub Service Reader"
DATA_PLANE_ROLES = (SERVICE_OWNER, SERVICE_READER)


def new_identity_header() -> str:
    """A per-run secret for ``X-IDENTITY-HEADER``, as App Service generates one per site.

    Random so that another local program, or a web page, cannot get the app's tokens by
    presenting a published default value.
    """
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class EventHandlerSettings:
    """One event handler entry of a hub's settings, as configured in the Azure portal.

    ``url_template`` may contain ``{hub}`` and ``{event}``; ``user_event_pattern`` is ``*``, a
    single name or a comma-separated list of names or wildcards (case-insensitive). ``hubs``
    limits a default entry to those hubs; ``None`` applies it to every hub. With
    ``managed_identity_resource`` the service authenticates as its managed identity: every
    request carries ``Authorization: Bearer`` with a token for that resource (audience).
    """

    url_template: str = DEFAULT_EVENT_HANDLER_URL
    system_events: frozenset[str] = frozenset(SYSTEM_EVENTS)
    user_event_pattern: str = "*"
    hubs: frozenset[str] | None = None
    managed_identity_resource: str | None = None

    def __post_init__(self) -> None:
        unknown = {event.lower() for event in self.system_events} - set(SYSTEM_EVENTS)
        if unknown:
            raise ValueError(f"unknown system events: {', '.join(sorted(unknown))}")
        parts = urlsplit(self.url_template)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("event handler URL template must be an absolute http(s) URL")
        if "{" in parts.netloc:
            raise ValueError("event handler URL template must not have {hub} or {event} in its host")
        if self.managed_identity_resource is not None and not self.managed_identity_resource.strip():
            raise ValueError("a ManagedIdentity event handler needs a resource (the token audience)")

    def applies_to_hub(self, hub: str) -> bool:
        return self.hubs is None or hub.lower() in {name.lower() for name in self.hubs}

    def handles_system_event(self, event_name: str) -> bool:
        return event_name.lower() in {event.lower() for event in self.system_events}

    def handles_user_event(self, event_name: str) -> bool:
        patterns = [part.strip().lower() for part in self.user_event_pattern.split(",") if part.strip()]
        return any(fnmatch.fnmatchcase(event_name.lower(), pattern) for pattern in patterns)

    def to_json(self) -> dict[str, Any]:
        """The shape of the service's hub settings (ARM ``eventHandlers`` items); query values redacted."""
        auth: dict[str, Any] = {"type": "None"}
        if self.managed_identity_resource is not None:
            auth = {"type": "ManagedIdentity", "managedIdentity": {"resource": self.managed_identity_resource}}
        return {
            "urlTemplate": redacted_url(self.url_template),
            "userEventPattern": self.user_event_pattern,
            "systemEvents": [event for event in SYSTEM_EVENTS if self.handles_system_event(event)],
            "auth": auth,
        }

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> EventHandlerSettings:
        """Read one ``eventHandlers`` item in the service's (ARM) shape; ValueError names what is wrong."""
        url = item.get("urlTemplate")
        if not isinstance(url, str):
            raise ValueError("every event handler needs a urlTemplate")
        events = item.get("systemEvents", list(SYSTEM_EVENTS))
        if not isinstance(events, list) or not all(isinstance(event, str) for event in events):
            raise ValueError("systemEvents must be a list of event names")
        pattern = item.get("userEventPattern", "")
        if not isinstance(pattern, str):
            raise ValueError("userEventPattern must be a string")
        resource: str | None = None
        auth = item.get("auth") or {"type": "None"}
        if not isinstance(auth, Mapping) or auth.get("type", "None") not in ("None", "ManagedIdentity"):
            raise ValueError("auth.type must be None or ManagedIdentity")
        if auth.get("type") == "ManagedIdentity":
            identity = auth.get("managedIdentity") or {}
            resource = identity.get("resource") if isinstance(identity, Mapping) else None
            if not isinstance(resource, str) or not resource:
                raise ValueError("a ManagedIdentity event handler needs managedIdentity.resource")
        return cls(
            url_template=url,
            system_events=frozenset(events),
            user_event_pattern=pattern,
            managed_identity_resource=resource,
        )


@dataclass(frozen=True)
class HubSettings:
    """The settings of one hub: its ordered event handlers, as the service's hub resource holds them."""

    name: str
    event_handlers: tuple[EventHandlerSettings, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "properties": {"eventHandlers": [h.to_json() for h in self.event_handlers]}}

    @classmethod
    def from_json(cls, name: str, properties: Mapping[str, Any]) -> HubSettings:
        handlers = properties.get("eventHandlers", [])
        if not isinstance(handlers, list) or not all(isinstance(item, Mapping) for item in handlers):
            raise ValueError(f"hub {name}: eventHandlers must be a list of objects")
        return cls(name=name, event_handlers=tuple(EventHandlerSettings.from_json(item) for item in handlers))


def hubs_from_json(document: Any) -> tuple[HubSettings, ...]:
    """``{"hubs": {"<name>": {"eventHandlers": [...]}, ...}}`` (the ``--hubs-file`` format)."""
    hubs = document.get("hubs") if isinstance(document, Mapping) else None
    if not isinstance(hubs, Mapping) or not all(isinstance(value, Mapping) for value in hubs.values()):
        raise ValueError('the hubs file must look like {"hubs": {"<hub>": {"eventHandlers": [...]}}}')
    return tuple(HubSettings.from_json(str(name), properties) for name, properties in hubs.items())


def redacted_url(url: str) -> str:
    """The URL without query values: a ``?code=`` function key must never reach a log or a response."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    names = [pair.split("=", 1)[0] for pair in parts.query.split("&") if pair]
    return urlunsplit(parts._replace(query="&".join(f"{name}=***" for name in names)))


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service needs; immutable so that it can be shared across threads."""

    access_key: str = DEFAULT_ACCESS_KEY
    #: Event handlers of every hub that has no :class:`HubSettings` of its own.
    event_handlers: tuple[EventHandlerSettings, ...] = field(default_factory=lambda: (EventHandlerSettings(),))
    #: Hubs with settings of their own (names compare case-insensitively, as the service's do).
    hubs: tuple[HubSettings, ...] = ()
    #: How long a dropped reliable connection stays recoverable. The clients give up after 30 s.
    recovery_window_seconds: float = 30.0
    #: How long a blocking upstream call (connect, user events) may take before it counts as failed.
    upstream_timeout_seconds: float = 30.0
    #: How long a successful abuse-protection validation of a URL is trusted.
    validation_ttl_seconds: float = 60.0
    #: How long a failed validation is remembered before the next attempt; short, so that a
    #: developer who starts the Functions host after the service is not locked out for long.
    validation_failure_ttl_seconds: float = 1.0
    #: The secret the local managed-identity endpoint expects in ``X-IDENTITY-HEADER``.
    identity_header: str = field(default_factory=new_identity_header, repr=False)
    #: Access-key auth for REST and client tokens. False mirrors the resource's ``disableLocalAuth``
    #: (what the templates set in entra mode): only Entra callers with a role reach the REST API, and
    #: clients connect only with tokens from ``:generateToken``.
    local_auth: bool = True
    #: Secret the service derives its own signing keys from (identity tokens; client tokens without
    #: local auth). Random per settings object: the often published access key cannot mint them.
    signing_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    #: Data-plane role assignments for Entra callers of the REST API: principal (object) id → role.
    role_assignments: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_APP_PRINCIPAL_ID: SERVICE_OWNER})
    #: The object id of the service's own managed identity (``oid`` of its upstream tokens).
    service_principal_id: str = DEFAULT_SERVICE_PRINCIPAL_ID
    upstream_log_size: int = 500
    #: Unacknowledged messages kept per reliable connection; beyond it the connection is closed.
    reliable_buffer_messages: int = 1000
    #: Frames waiting to be written to one client; beyond it the client counts as too slow.
    outbound_queue_frames: int = 2000

    def __post_init__(self) -> None:
        if len(self.access_key.encode()) < 32:
            # HS256 keys shorter than the hash are weak; PyJWT warns about them and the
            # emulator refuses them. Refuse early with a clear message instead.
            raise ValueError("access key must be at least 32 bytes long")
        if len(self.identity_header) < 16:
            raise ValueError("the identity header must be at least 16 characters (it guards the app's tokens)")
        unknown = set(self.role_assignments.values()) - set(DATA_PLANE_ROLES)
        if unknown:
            raise ValueError(f"unknown data-plane roles: {', '.join(sorted(unknown))}")
        names = [hub.name.lower() for hub in self.hubs]
        if len(names) != len(set(names)):
            raise ValueError("a hub is configured twice")
