"""A local Web PubSub service: a development stand-in for Azure Web PubSub, never deployed.

It speaks the service's client protocols (JSON and protobuf subprotocols, reliable or not, invoke,
simple WebSocket clients, MQTT 3.1.1 and 5.0 on ``/clients/mqtt/hubs/{hub}``; not Socket.IO),
CloudEvents upstream with per-hub event handler settings and
ManagedIdentity auth, and the data-plane REST API closely enough for the official SDKs and the
app to run unchanged on one machine (docs/local-webpubsub.md). Production uses Azure Web PubSub.

Run it with ``python -m devstack.webpubsub`` or in-process::

    from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, ServiceSettings

    settings = ServiceSettings(event_handlers=(EventHandlerSettings(url_template=handler_url),))
    with LocalWebPubSub(settings).run_in_thread() as running:
        running.connection_string        # Endpoint=http://127.0.0.1:<port>;AccessKey=...;Version=1.0;
        running.identity_environment()   # IDENTITY_ENDPOINT / IDENTITY_HEADER for the app's identity
        running.upstream_identity        # issuer, jwks_uri, principal_id of the service's own identity
        running.upstream_log.wait_for(lambda record: record.event_name == "connected")
"""

from .app import LocalWebPubSub, RunningWebPubSub, connection_string
from .issuer import UpstreamIdentity
from .settings import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_EVENT_HANDLER_URL,
    EventHandlerSettings,
    HubSettings,
    ServiceSettings,
    hubs_from_json,
)
from .upstream import UpstreamLog, UpstreamRecord

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_EVENT_HANDLER_URL",
    "EventHandlerSettings",
    "HubSettings",
    "LocalWebPubSub",
    "RunningWebPubSub",
    "ServiceSettings",
    "UpstreamIdentity",
    "UpstreamLog",
    "UpstreamRecord",
    "connection_string",
    "hubs_from_json",
]
