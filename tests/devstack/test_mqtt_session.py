"""How MQTT maps onto Web PubSub: CONNACK codes for refusals, content types, QoS, packet ids (pure functions).

[EVENTS] MicrosoftDocs azure-docs ``articles/azure-web-pubsub/reference-mqtt-cloud-events.md``;
[CROSS] ``reference-mqtt-cross-protocol-communication.md``.
"""

from __future__ import annotations

import pytest

from devstack.webpubsub.mqtt_packets import MQTT_V5, MQTT_V311, PacketReader, Publish
from devstack.webpubsub.mqtt_session import (
    SERVER_MESSAGES_TOPIC,
    DisconnectRecord,
    MqttSession,
    MqttSubscription,
    connack_refusal,
    payload_from_mqtt,
)
from devstack.webpubsub.protocol import Payload


@pytest.mark.parametrize(
    ("version", "status", "body", "expected"),
    [
        (MQTT_V5, 401, {"mqtt": {"code": 138, "reason": "banned by server"}}, (138, "banned by server")),
        (MQTT_V311, 401, {"mqtt": {"code": 5}}, (5, None)),
        # invalid for the client's version: "unspecified error" (3.1.1 has none: server unavailable)
        (MQTT_V5, 401, {"mqtt": {"code": 0}}, (0x80, None)),
        (MQTT_V5, 401, {"mqtt": {"code": 4}}, (0x80, None)),
        (MQTT_V311, 401, {"mqtt": {"code": 0x87}}, (3, None)),
        (MQTT_V311, 401, {"mqtt": {"code": True}}, (5, None)),  # not an integer: as if absent
        (MQTT_V5, 403, {"error": "no mqtt part"}, (0x87, None)),
        (MQTT_V5, 400, None, (0x86, None)),
        (MQTT_V311, 409, None, (5, None)),
        (MQTT_V5, 409, None, (0x80, None)),
        (MQTT_V311, 500, None, (3, None)),
        (MQTT_V5, 502, None, (0x88, None)),
    ],
)
def test_connack_refusal(version: int, status: int, body: dict[str, object] | None, expected: tuple[int, str]) -> None:
    code, reason, _ = connack_refusal(version, status, body)
    assert (code, reason) == expected


def test_connack_refusal_user_properties_need_the_documented_shape() -> None:
    good = {"mqtt": {"code": 135, "userProperties": [{"name": "a", "value": "b"}]}}
    bad = {"mqtt": {"code": 135, "userProperties": [{"name": "a"}]}}
    assert connack_refusal(MQTT_V5, 401, good)[2] == (("a", "b"),)
    assert connack_refusal(MQTT_V5, 401, bad)[2] == ()


@pytest.mark.parametrize(
    ("version", "content_type", "data_type"),
    [
        (MQTT_V5, "application/json", "json"),
        (MQTT_V5, "application/json; charset=utf-8", "json"),
        (MQTT_V5, "text/plain", "text"),
        (MQTT_V5, "application/x-protobuf", "protobuf"),
        (MQTT_V5, "application/octet-stream", "binary"),
        (MQTT_V5, None, "binary"),
        (MQTT_V5, "image/png", "binary"),
        (MQTT_V311, "application/json", "binary"),  # 3.1.1 has no content type
    ],
)
def test_content_type_to_data_type(version: int, content_type: str | None, data_type: str) -> None:
    """[CROSS] Message Content Type Conversion."""
    assert payload_from_mqtt(version, content_type, b'"x"').data_type == data_type


@pytest.mark.parametrize(("content_type", "data"), [("application/json", b"{no"), ("text/plain", b"\xff")])
def test_content_that_contradicts_its_type_is_refused(content_type: str, data: bytes) -> None:
    with pytest.raises(ValueError, match=r"Expecting|codec"):
        payload_from_mqtt(MQTT_V5, content_type, data)


def session(version: int = MQTT_V5, max_in_flight: int = 10) -> MqttSession:
    return MqttSession(
        version=version,
        client_id="c",
        physical_connection_id="p",
        expiry_seconds=0,
        will=None,
        max_in_flight=max_in_flight,
    )


def test_delivery_qos() -> None:
    """[CROSS] min(sent QoS, granted); groups joined without SUBSCRIBE have default options (QoS 0)."""
    state = session()
    state.subscriptions["room"] = MqttSubscription(qos=2)
    assert state.delivery_qos("room", 1) == 1
    assert state.delivery_qos("room", 2) == 2
    assert state.delivery_qos("joined-by-rest", 1) == 0
    assert state.delivery_qos(SERVER_MESSAGES_TOPIC, 1) == 1
    state.subscriptions[SERVER_MESSAGES_TOPIC] = MqttSubscription(qos=0)
    assert state.delivery_qos(SERVER_MESSAGES_TOPIC, 1) == 0


def test_publish_keeps_qos_1_and_2_for_redelivery_with_dup() -> None:
    state = session(MQTT_V311)
    assert state.publish("room", Payload("text", b"zero"), 0) is not None
    first = state.publish("room", Payload("text", b"one"), 1)
    assert first is not None
    assert list(state.outbound) == [1]
    state.released[7] = None
    redelivered, pubrel = state.redelivery()
    assert redelivered[0] == first[0] | 0x08
    assert pubrel == bytes([0x62, 2, 0, 7])
    reader = PacketReader(1024)
    reader.version = MQTT_V311
    (decoded,) = reader.feed(redelivered)
    assert isinstance(decoded, Publish)
    assert (decoded.dup, decoded.packet_id, decoded.payload) == (True, 1, b"one")


def test_packet_ids_skip_those_in_flight_and_run_out_at_the_limit() -> None:
    state = session(max_in_flight=3)
    state.outbound[2] = b""
    ids = []
    for _ in range(2):
        assert state.publish("t", Payload("binary", b""), 1) is not None
        ids.append(next(reversed(state.outbound)))
    assert ids == [1, 3]
    assert state.publish("t", Payload("binary", b""), 1) is None  # three in flight: no more


def test_disconnected_body() -> None:
    state = session()
    assert state.disconnected_body("expired") == {
        "reason": "expired",
        "mqtt": {"initiatedByClient": False, "disconnectPacket": None},
    }
    state.last_disconnect = DisconnectRecord(True, 0, (("n", "v"),), None)
    assert state.disconnected_body("ignored") == {
        "reason": None,
        "mqtt": {
            "initiatedByClient": True,
            "disconnectPacket": {"code": 0, "userProperties": [{"name": "n", "value": "v"}]},
        },
    }
