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
