"""``python -m devstack.webpubsub``: run the local Web PubSub service in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from ..servers import bind_socket, redact_tokens_in_server_logs
from .app import CONNECTIONS_PATH, HUBS_PATH, UPSTREAM_LOG_PATH, LocalWebPubSub, connection_string, is_loopback
from .identity import IDENTITY_PATH
from .settings import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_EVENT_HANDLER_URL,
    DEFAULT_PORT,
    SYSTEM_EVENTS,
    EventHandlerSettings,
    HubSettings,
    ServiceSettings,
    hubs_from_json,
    new_identity_header,
)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.webpubsub",
        description="Local Web PubSub service for development. Production uses Azure Web PubSub.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--access-key",
        default=DEFAULT_ACCESS_KEY,
        help="access key for tokens and signatures (default: the official emulator's public key)",
    )
    parser.add_argument(
        "--hub",
        action="append",
        dest="hubs",
        metavar="HUB",
        help="hub the event handler serves; repeat for several (default: every hub)",
    )
    parser.add_argument(
        "--event-handler",
        default=DEFAULT_EVENT_HANDLER_URL,
        metavar="URL_TEMPLATE",
        help="event handler URL; may contain {hub} and {event} (default: %(default)s)",
    )
    parser.add_argument(
        "--system-events",
        default=",".join(SYSTEM_EVENTS),
        help="comma-separated system events to send upstream (default: %(default)s)",
    )
    parser.add_argument(
        "--user-events", default="*", help="user events to send upstream: *, names or wildcards (default: %(default)s)"
    )
    parser.add_argument(
        "--managed-identity-resource",
        metavar="AUDIENCE",
        help="authenticate to the event handler as the service's managed identity, with tokens for AUDIENCE",
    )
    parser.add_argument("--no-event-handler", action="store_true", help="send no events upstream at all")
    parser.add_argument(
        "--hubs-file",
        type=Path,
        help='JSON hub settings, {"hubs": {"<hub>": {"eventHandlers": [...]}}} in the service\'s shape',
    )
    parser.add_argument(
        "--identity-header",
        default=None,
        help="IDENTITY_HEADER value the local managed-identity endpoint expects (default: random for this run)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def settings_from(arguments: argparse.Namespace) -> ServiceSettings:
    handlers: tuple[EventHandlerSettings, ...] = ()
    if not arguments.no_event_handler:
        system_events = frozenset(name.strip() for name in arguments.system_events.split(",") if name.strip())
        handlers = (
            EventHandlerSettings(
                url_template=arguments.event_handler,
                system_events=system_events,
                user_event_pattern=arguments.user_events,
                hubs=frozenset(arguments.hubs) if arguments.hubs else None,
                managed_identity_resource=arguments.managed_identity_resource,
            ),
        )
    hubs: tuple[HubSettings, ...] = ()
    if arguments.hubs_file is not None:
        try:
            hubs = hubs_from_json(json.loads(arguments.hubs_file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise ValueError(f"{arguments.hubs_file}: {error}") from None
    return ServiceSettings(
        access_key=arguments.access_key,
        event_handlers=handlers,
        hubs=hubs,
        identity_header=arguments.identity_header or new_identity_header(),
    )


def banner(settings: ServiceSettings, endpoint: str, listen_host: str = "127.0.0.1") -> str:
    lines = [
        "Local Web PubSub service: a development tool. Production uses Azure Web PubSub.",
        f"  Connection string: {connection_string(endpoint, settings.access_key)}",
    ]
    if not is_loopback(listen_host):
        lines.insert(
            0,
            f"WARNING: listening on {listen_host}: other machines can reach this development service, "
            "its REST API and its identity endpoint. Use --host 127.0.0.1 unless you mean it.",
        )
    for hub in settings.hubs:
        for handler in hub.event_handlers:
            lines.append(f"  Hub {hub.name}:  {_describe(handler)}")
    for handler in settings.event_handlers:
        hubs = ", ".join(sorted(handler.hubs)) if handler.hubs else "every hub"
        lines.append(f"  Event handler:     {_describe(handler)} ({hubs})")
    if not settings.event_handlers:
        lines.append("  Event handler:     none (no events are sent upstream)")
    lines += [
        f"  Managed identity:  IDENTITY_ENDPOINT={endpoint}{IDENTITY_PATH} IDENTITY_HEADER={settings.identity_header}",
        f"  Upstream log:      {endpoint}{UPSTREAM_LOG_PATH}   connections: {endpoint}{CONNECTIONS_PATH}",
        f"  Hub settings:      {endpoint}{HUBS_PATH}",
    ]
    return "\n".join(lines)


def _describe(handler: EventHandlerSettings) -> str:
    events = ", ".join(sorted(handler.system_events)) or "none"
    auth = f"; ManagedIdentity for {handler.managed_identity_resource}" if handler.managed_identity_resource else ""
    url = handler.to_json()["urlTemplate"]
    return f"{url} (system events: {events}; user events: {handler.user_event_pattern or 'none'}{auth})"


def _public_host(listen_host: str) -> str:
    """The host name to advertise: ``localhost`` for loopback and wildcard binds, as the emulator does."""
    if listen_host == "localhost":
        return listen_host
    try:
        address = ipaddress.ip_address(listen_host)
    except ValueError:
        return listen_host
    return "localhost" if address.is_loopback or address.is_unspecified else listen_host


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        settings = settings_from(arguments)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=arguments.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # httpx logs every request's full URL at INFO, which would print a ``?code=`` function key.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redact_tokens_in_server_logs()  # uvicorn logs each client's URL, access token included
    service = LocalWebPubSub(settings)
    sock = bind_socket(arguments.host, arguments.port)
    public_host = _public_host(arguments.host)
    endpoint = f"http://{public_host}:{sock.getsockname()[1]}"
    service.bind_endpoint(endpoint)
    print(banner(settings, endpoint, arguments.host), flush=True)
    config = uvicorn.Config(service.app, log_config=None, access_log=False, **service.uvicorn_options)
    # In the main thread, so Ctrl+C stops it gracefully; uvicorn re-raises the interrupt afterwards.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
