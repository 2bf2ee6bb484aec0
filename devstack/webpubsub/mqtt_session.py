"""What the service keeps for an MQTT client, and how MQTT maps onto Web PubSub (pure: no I/O).

The mapping follows the service's documentation (MicrosoftDocs azure-docs,
``articles/azure-web-pubsub``): a session is a Web PubSub connection and the client id its
connection id; subscribing to a topic joins the group of that name and publishing to a topic
sends to that group (``includes/mqtt-term-mappings.md``). Messages cross protocols as
``reference-mqtt-cross-protocol-communication.md`` defines: the MQTT 5.0 content type ↔ the
data type (absent, or MQTT 3.1.1: binary), and QoS min(1, granted) for messages from Web
PubSub clients and the REST API, whose send-to-all/user/connection messages arrive on
``$webpubsub/server/messages`` (``reference-rest-api-mqtt.md``). The CONNACK a refusing event
handler causes is ``reference-mqtt-cloud-events.md``'s ``mqtt.code``.
"""

from __future__ import annotations

import collections
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .mqtt_packets import (
    CONTENT_TYPE,
    MQTT_V5,
    PUBREL,
    SUBSCRIPTION_IDENTIFIER,
    Will,
    encode_disconnect,
    encode_pub_response,
    encode_publish,
    with_dup_flag,
)
from .protocol import Payload

__all__ = [
    "EVENT_TOPIC_PREFIX",
    "SERVER_MESSAGES_TOPIC",
    "DisconnectRecord",
    "MqttSession",
    "MqttSubscription",
    "connack_refusal",
    "is_valid_client_id",
    "payload_from_mqtt",
]

#: Where send-to-all, send-to-user and send-to-connection messages reach MQTT clients.
SERVER_MESSAGES_TOPIC = "$webpubsub/server/messages"
#: ``$webpubsub/server/events/{eventName}``: a request to the event handler, not a group message.
EVENT_TOPIC_PREFIX = "$webpubsub/server/events/"

# MQTT 3.1.1 CONNACK return codes (§3.2.2.3) and the MQTT 5.0 reason codes the service sends.
V311_UNACCEPTABLE_PROTOCOL_VERSION = 0x01
V311_IDENTIFIER_REJECTED = 0x02
V311_SERVER_UNAVAILABLE = 0x03
V311_BAD_USERNAME_OR_PASSWORD = 0x04
V311_NOT_AUTHORIZED = 0x05
UNSPECIFIED_ERROR = 0x80
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
CLIENT_IDENTIFIER_NOT_VALID = 0x85
BAD_USERNAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SERVER_UNAVAILABLE = 0x88
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
PACKET_ID_IN_USE = 0x91
PACKET_TOO_LARGE = 0x95
QUOTA_EXCEEDED = 0x97
ADMINISTRATIVE_ACTION = 0x98
PAYLOAD_FORMAT_INVALID = 0x99
RETAIN_NOT_SUPPORTED = 0x9A
TOPIC_ALIAS_INVALID = 0x94
SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2
SUBACK_FAILURE_V311 = 0x80
DISCONNECT_WITH_WILL_MESSAGE = 0x04

#: Every MQTT 3.1.1 refusal code, and every MQTT 5.0 CONNACK reason code that refuses (§3.2.2.2).
_V311_REFUSALS = frozenset(range(1, 6))
_V5_REFUSALS = frozenset(
    {0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B}
    | {0x9C, 0x9D, 0x9F}
)
#: Client ids the service accepts (``includes/mqtt-connection-parameters.md``).
_CLIENT_ID = re.compile(r"[0-9A-Za-z]{1,128}")
_CONTENT_TYPES = {
    "application/json": "json",
    "text/plain": "text",
    "application/x-protobuf": "protobuf",
    "application/octet-stream": "binary",
}


def is_valid_client_id(client_id: str) -> bool:
    return _CLIENT_ID.fullmatch(client_id) is not None


def payload_from_mqtt(version: int, content_type: str | None, data: bytes) -> Payload:
    """An MQTT payload as Web PubSub data: typed by the 5.0 content type, else binary.

    ValueError when the content type promises JSON or text the bytes are not.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower() if version == MQTT_V5 else ""
    data_type = _CONTENT_TYPES.get(media_type, "binary")
    if data_type == "json":
        json.loads(data)
    elif data_type == "text":
        data.decode("utf-8")
    return Payload(data_type, data)  # type: ignore[arg-type]


def connack_refusal(
    version: int, status: int, body: dict[str, Any] | None
) -> tuple[int, str | None, tuple[tuple[str, str], ...]]:
    """The CONNACK code, reason string and user properties for a refused ``connect``.

    The handler's ``mqtt.code`` when it is a refusal code of the client's MQTT version; an
    invalid one becomes "unspecified error" (5.0: 0x80; 3.1.1 has none, so 0x03, server
    unavailable). Without ``mqtt.code`` the status decides: 400 → bad user name or password,
    401/403 → not authorized, a 5xx or no answer → server unavailable (the official server SDKs'
    mapping of their error kinds).
    """
    mqtt = body.get("mqtt") if isinstance(body, dict) else None
    mqtt = mqtt if isinstance(mqtt, dict) else {}
    reason = mqtt.get("reason") if isinstance(mqtt.get("reason"), str) else None
    user = _user_properties(mqtt.get("userProperties"))
    code = mqtt.get("code")
    v5 = version == MQTT_V5
    if isinstance(code, int) and not isinstance(code, bool):
        valid = code in (_V5_REFUSALS if v5 else _V311_REFUSALS)
        return (code if valid else UNSPECIFIED_ERROR if v5 else V311_SERVER_UNAVAILABLE), reason, user
    if status == 400:
        fallback = BAD_USERNAME_OR_PASSWORD if v5 else V311_BAD_USERNAME_OR_PASSWORD
    elif status in (401, 403):
        fallback = NOT_AUTHORIZED if v5 else V311_NOT_AUTHORIZED
    elif status >= 500:
        fallback = SERVER_UNAVAILABLE if v5 else V311_SERVER_UNAVAILABLE
    else:
        fallback = UNSPECIFIED_ERROR if v5 else V311_NOT_AUTHORIZED
    return fallback, reason, user


def user_properties_of(value: Any) -> tuple[tuple[str, str], ...]:
    """``[{"name", "value"}]`` from a connect response; ValueError when it is not that shape."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)
        for item in value
    ):
        raise ValueError("mqtt.userProperties must be a list of {name, value} strings")
    return tuple((item["name"], item["value"]) for item in value)


def _user_properties(value: Any) -> tuple[tuple[str, str], ...]:
    try:
        return user_properties_of(value)
    except ValueError:
        return ()


def user_properties_json(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


@dataclass(frozen=True)
class MqttSubscription:
    """A topic filter (a group name) with the QoS granted and the 5.0 options the service honours."""

    qos: int
    no_local: bool = False
    subscription_id: int | None = None


#: Groups a session joins otherwise than by SUBSCRIBE (token, connect response, REST) get the
#: default subscription options (``reference-rest-api-mqtt.md``): all zero, so QoS 0.
DEFAULT_SUBSCRIPTION = MqttSubscription(qos=0)


@dataclass(frozen=True)
class DisconnectRecord:
    """How the last physical connection of a session ended: the ``disconnected`` event's ``mqtt`` part."""

    initiated_by_client: bool
    #: The DISCONNECT packet's reason code, None when no DISCONNECT was sent (network loss, or a
    #: 3.1.1 client closed by the service, which has no DISCONNECT to send).
    packet_code: int | None
    user_properties: tuple[tuple[str, str], ...] | None
    reason: str | None


@dataclass
class MqttSession:
    """One MQTT session: it outlives its WebSocket for the session expiry interval (at most 30 s)."""

    version: int
    client_id: str
    physical_connection_id: str
    expiry_seconds: float
    will: Will | None
    max_in_flight: int
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    subscriptions: dict[str, MqttSubscription] = field(default_factory=dict)
    #: QoS 1 and 2 PUBLISH packets sent and not yet acknowledged (PUBACK / PUBREC), in order.
    outbound: collections.OrderedDict[int, bytes] = field(default_factory=collections.OrderedDict)
    #: QoS 2 packet ids the service has released (PUBREL sent) and awaits PUBCOMP for.
    released: collections.OrderedDict[int, None] = field(default_factory=collections.OrderedDict)
    #: QoS 2 packet ids from the client awaiting its PUBREL (the message is already delivered).
    inbound_qos2: set[int] = field(default_factory=set)
    last_disconnect: DisconnectRecord | None = None
    _next_packet_id: int = 1

    @property
    def v5(self) -> bool:
        return self.version == MQTT_V5

    def subscription(self, topic: str) -> MqttSubscription | None:
        return self.subscriptions.get(topic)

    def delivery_qos(self, topic: str, published_qos: int) -> int:
        """min(published, granted); a server message nobody subscribed to keeps QoS 1."""
        subscription = self.subscriptions.get(topic)
        if subscription is None:
            granted = 1 if topic == SERVER_MESSAGES_TOPIC else DEFAULT_SUBSCRIPTION.qos
        else:
            granted = subscription.qos
        return min(published_qos, granted)

    def publish(
        self,
        topic: str,
        payload: Payload,
        qos: int,
        *,
        user: tuple[tuple[str, str], ...] = (),
        extra: dict[int, Any] | None = None,
    ) -> bytes | None:
        """A PUBLISH for this client, kept for redelivery when QoS > 0; None when no packet id is free."""
        packet_id: int | None = None
        if qos:
            packet_id = self._allocate_packet_id()
            if packet_id is None:
                return None
        values: dict[int, Any] = {CONTENT_TYPE: payload.content_type, **(extra or {})}
        subscription = self.subscriptions.get(topic)
        if subscription is not None and subscription.subscription_id is not None:
            values[SUBSCRIPTION_IDENTIFIER] = subscription.subscription_id
        packet = encode_publish(
            self.version, topic, payload.body, qos=qos, packet_id=packet_id, values=values, user=user
        )
        if packet_id is not None:
            self.outbound[packet_id] = packet
        return packet

    @property
    def in_flight(self) -> int:
        return len(self.outbound) + len(self.released)

    def redelivery(self) -> list[bytes]:
        """What a resumed session resends: unacknowledged PUBLISH packets (DUP set), then PUBRELs."""
        packets = [with_dup_flag(packet) for packet in self.outbound.values()]
        packets += [encode_pub_response(PUBREL, self.version, packet_id) for packet_id in self.released]
        return packets

    def farewell(self, reason_code: int, reason: str | None) -> bytes | None:
        """The DISCONNECT the service sends before closing: MQTT 5.0 only."""
        return encode_disconnect(reason_code, reason) if self.v5 else None

    def disconnected_body(self, fallback_reason: str | None) -> dict[str, Any]:
        """The ``disconnected`` event body, from how the last physical connection ended."""
        record = self.last_disconnect or DisconnectRecord(False, None, None, fallback_reason)
        packet: dict[str, Any] | None = None
        if record.packet_code is not None:
            user = record.user_properties
            packet = {"code": record.packet_code, "userProperties": user_properties_json(user) if user else None}
        return {
            "reason": record.reason,
            "mqtt": {"initiatedByClient": record.initiated_by_client, "disconnectPacket": packet},
        }

    def _allocate_packet_id(self) -> int | None:
        if self.in_flight >= min(self.max_in_flight, 65535):
            return None
        while True:
            packet_id = self._next_packet_id
            self._next_packet_id = packet_id % 65535 + 1
            if packet_id not in self.outbound and packet_id not in self.released:
                return packet_id
