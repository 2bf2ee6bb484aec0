"""Events as the Web PubSub service sends them: CloudEvents headers, `ce-signature`, connect bodies."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tests.support.fakes import EMULATOR_KEY

CONNECT = "azure.webpubsub.sys.connect"
CONNECTED = "azure.webpubsub.sys.connected"
DISCONNECTED = "azure.webpubsub.sys.disconnected"


def sign(connection_id: str, key: str = EMULATOR_KEY) -> str:
    """`sha256=<hex HMAC-SHA256(key, connectionId)>`, one entry of the service's `ce-signature`."""
    return "sha256=" + hmac.new(key.encode(), connection_id.encode(), hashlib.sha256).hexdigest()


SIGNED = "signed with the key"


def event_headers(
    event_type: str = CONNECT,
    *,
    hub: str = "chat",
    connection_id: str = "conn-1",
    user_id: str | None = "alice",
    signature: str | None = SIGNED,
    key: str = EMULATOR_KEY,
    content_type: str = "application/json; charset=utf-8",
    origin: str = "localhost",
    **extra: str,
) -> dict[str, str]:
    """Every header the service sends with an event; `ce-signature` over the connection id with `key`.

    `signature=None` leaves `ce-signature` out, any other string is sent as it is; `extra` adds or
    replaces headers.
    """
    values = {
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": event_type,
        "ce-source": f"/hubs/{hub}/client/{connection_id}",
        "ce-id": "1",
        "ce-time": "2026-11-28T00:00:00Z",
        "ce-hub": hub,
        "ce-connectionId": connection_id,
        "ce-eventName": event_type.rsplit(".", 1)[-1],
        "WebHook-Request-Origin": origin,
        "Content-Type": content_type,
    }
    if user_id is not None:
        values["ce-userId"] = user_id
    if signature == SIGNED:
        values["ce-signature"] = sign(connection_id, key)
    elif signature is not None:
        values["ce-signature"] = signature
    values.update(extra)
    return values


def connect_body(**fields: Any) -> bytes:
    """A connect event's JSON body; `fields` add or replace its members (claims, query, subprotocols...)."""
    return json.dumps({"claims": {}, "query": {}, "headers": {}, "subprotocols": [], **fields}).encode()


def mqtt_event_headers(event_type: str = CONNECT, *, connection_id: str = "client1", **options: Any) -> dict[str, str]:
    """`event_headers` as the service sends them for an MQTT client (reference-mqtt-cloud-events).

    The connection id is the MQTT client id; `ce-physicalConnectionId` marks the event as MQTT, and
    every event but connect names the session.
    """
    extra = {"ce-physicalConnectionId": f"{connection_id}-physical"}
    if event_type != CONNECT:
        extra["ce-sessionId"] = f"{connection_id}-session"
    return event_headers(event_type, connection_id=connection_id, **{**extra, **options})


def mqtt_connect_body(protocol_version: int = 5, **mqtt: Any) -> bytes:
    """An MQTT client's connect body: the `mqtt` object (`mqtt` adds or replaces its members) and `subprotocols`."""
    return connect_body(subprotocols=["mqtt"], mqtt={"protocolVersion": protocol_version, **mqtt})
