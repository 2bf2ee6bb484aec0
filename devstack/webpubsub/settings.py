"""What the local Web PubSub service is configured with: key, event handlers, limits.

The defaults match the official emulator's (`awps-emulator`) so the same app settings work
against either: endpoint ``http://localhost:8080``, its public default access key, and one
event handler at the local Functions host's ``/api/eventhandler`` receiving the three system
events and every user event.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

#: The official emulator's public default key. Not a secret: it is published in its README.
DEFAULT_ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
DEFAULT_EVENT_HANDLER_URL = "http://localhost:7071/api/eventhandler"
DEFAULT_PORT = 8080
SYSTEM_EVENTS = ("connect", "connected", "disconnected")
#: Fixed like the access key: the value only guards the local token endpoint against other
#: local programs stumbling on it, exactly as App Service's per-site header does.
DEFAULT_IDENTITY_HEADER = "local-devstack-identity"


@dataclass(frozen=True)
class EventHandlerSettings:
    """One event handler entry of a hub's settings, as configured in the Azure portal.

    ``url_template`` may contain ``{hub}`` and ``{event}``; ``user_event_pattern`` is ``*``, a
    single name or a comma-separated list of names or wildcards (case-insensitive). ``hubs``
    limits the entry to those hubs; ``None`` applies it to every hub.
    """

    url_template: str = DEFAULT_EVENT_HANDLER_URL
    system_events: frozenset[str] = frozenset(SYSTEM_EVENTS)
    user_event_pattern: str = "*"
    hubs: frozenset[str] | None = None

    def __post_init__(self) -> None:
        unknown = {event.lower() for event in self.system_events} - set(SYSTEM_EVENTS)
        if unknown:
            raise ValueError(f"unknown system events: {', '.join(sorted(unknown))}")
        if not self.url_template.startswith(("http://", "https://")):
            raise ValueError("event handler URL template must be an absolute http(s) URL")

    def applies_to_hub(self, hub: str) -> bool:
        return self.hubs is None or hub.lower() in {name.lower() for name in self.hubs}

    def handles_system_event(self, event_name: str) -> bool:
        return event_name.lower() in {event.lower() for event in self.system_events}

    def handles_user_event(self, event_name: str) -> bool:
        patterns = [part.strip().lower() for part in self.user_event_pattern.split(",") if part.strip()]
        return any(fnmatch.fnmatchcase(event_name.lower(), pattern) for pattern in patterns)


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service needs; immutable so that it can be shared across threads."""

    access_key: str = DEFAULT_ACCESS_KEY
    event_handlers: tuple[EventHandlerSettings, ...] = field(default_factory=lambda: (EventHandlerSettings(),))
    #: How long a dropped reliable connection stays recoverable. The clients give up after 30 s.
    recovery_window_seconds: float = 30.0
    #: How long a blocking upstream call (connect, user events) may take before it counts as failed.
    upstream_timeout_seconds: float = 30.0
    #: How long a successful abuse-protection validation of a URL is trusted.
    validation_ttl_seconds: float = 60.0
    #: How long a failed validation is remembered before the next attempt; short, so that a
    #: developer who starts the Functions host after the service is not locked out for long.
    validation_failure_ttl_seconds: float = 1.0
    identity_header: str = DEFAULT_IDENTITY_HEADER
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
