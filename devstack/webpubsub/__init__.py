"""A local Web PubSub service: a development stand-in for Azure Web PubSub, never deployed.

It speaks the service's client protocols, CloudEvents upstream and data-plane REST API closely
enough for the official SDKs and the app to run unchanged on one machine. Production uses Azure
Web PubSub.

Run it with ``python -m devstack.webpubsub`` or in-process::

    from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, ServiceSettings

    settings = ServiceSettings(event_handlers=(EventHandlerSettings(url_template=handler_url),))
    with LocalWebPubSub(settings).run_in_thread() as running:
        running.connection_string        # Endpoint=http://127.0.0.1:<port>;AccessKey=...;Version=1.0;
        running.upstream_log.wait_for(lambda record: record.event_name == "connected")
"""

from .app import LocalWebPubSub, RunningWebPubSub, connection_string
from .settings import DEFAULT_ACCESS_KEY, DEFAULT_EVENT_HANDLER_URL, EventHandlerSettings, ServiceSettings
from .upstream import UpstreamLog, UpstreamRecord

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_EVENT_HANDLER_URL",
    "EventHandlerSettings",
    "LocalWebPubSub",
    "RunningWebPubSub",
    "ServiceSettings",
    "UpstreamLog",
    "UpstreamRecord",
    "connection_string",
]
