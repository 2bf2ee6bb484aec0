"""The MQTT packet codec against the OASIS specifications' layouts (MQTT 3.1.1 and 5.0, §2 and §3)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings, strategies as st

from devstack.webpubsub.mqtt_packets import (
    MQTT_V5,
    MQTT_V311,
    Connect,
    Disconnect,
    MalformedPacket,
    PacketReader,
    PingReq,
    Properties,
    ProtocolViolation,
    PubAck,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_connack,
    encode_disconnect,
    encode_properties,
    encode_publish,
    encode_suback,
    encode_unsuback,
    with_dup_flag,
)

#: MQTT 3.1.1 §3.1: protocol name "MQTT", level 4, clean session, keep alive 60, client id "c1".
V311_CONNECT = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 60, 0, 2]) + b"c1"


def v5_connect() -> bytes:
    """A 5.0 CONNECT with session expiry 30, a user property, a will, user name and password."""
    properties = encode_properties({0x11: 30}, [("k", "v")])
    will_properties = encode_properties({0x03: "text/plain"})
    flags = 0x80 | 0x40 | 0x04 | 0x08 | 0x02  # user name, password, will QoS 1, will, clean start
    body = b"\x00\x04MQTT\x05" + bytes([flags]) + b"\x00\x1e" + properties
    body += b"\x00\x02id" + will_properties + b"\x00\x04will" + b"\x00\x03bye" + b"\x00\x01u" + b"\x00\x02\x00\x01"
    return bytes([0x10, len(body)]) + body


def test_a_3_1_1_connect() -> None:
    (packet,) = PacketReader(1024).feed(V311_CONNECT)
    assert packet == Connect("MQTT", MQTT_V311, True, 60, "c1", None, None, None, Properties())


def test_a_5_0_connect_with_properties_will_and_credentials() -> None:
    (packet,) = PacketReader(1024).feed(v5_connect())
    assert isinstance(packet, Connect)
    assert (packet.protocol_version, packet.client_id, packet.keep_alive) == (MQTT_V5, "id", 30)
    assert packet.properties.get(0x11) == 30
    assert packet.properties.user == (("k", "v"),)
    assert (packet.username, packet.password) == ("u", b"\x00\x01")
    assert packet.will is not None
    assert (packet.will.topic, packet.will.payload, packet.will.qos) == ("will", b"bye", 1)
    assert packet.will.properties.get(0x03) == "text/plain"


def stream_after_connect() -> bytes:
    """Every packet type a 5.0 client sends, after its CONNECT."""
    subscribe_body = b"\x00\x05" + encode_properties({0x0B: 7}) + b"\x00\x04room" + bytes([0x01 | 0x04])
    unsubscribe_body = b"\x00\x06" + encode_properties() + b"\x00\x04room"
    return (
        v5_connect()
        + encode_publish(MQTT_V5, "room", b"hi", qos=1, packet_id=3, values={0x03: "text/plain"})
        + bytes([0x40, 2, 0, 9])  # PUBACK 9 (5.0 may leave the reason code out: success)
        + bytes([0x62, 3, 0, 4, 0x92])  # PUBREL 4, packet identifier not found
        + bytes([0x82, len(subscribe_body)])
        + subscribe_body
        + bytes([0xA2, len(unsubscribe_body)])
        + unsubscribe_body
        + bytes([0xC0, 0])
        + bytes([0xE0, 2, 0x04, 0])  # DISCONNECT with will message, no properties
    )


def parsed(stream: bytes, splits: list[int]) -> list[object]:
    reader = PacketReader(1 << 20)
    packets: list[object] = []
    start = 0
    for end in [*sorted(splits), len(stream)]:
        packets += reader.feed(stream[start:end])
        start = end
    return packets


def test_every_client_packet_type() -> None:
    packets = parsed(stream_after_connect(), [])
    assert [type(packet) for packet in packets] == [
        Connect,
        Publish,
        PubAck,
        PubAck,
        Subscribe,
        Unsubscribe,
        PingReq,
        Disconnect,
    ]
    publish, puback, pubrel, subscribe, unsubscribe, _, disconnect = packets[1:]
    assert isinstance(publish, Publish)
    assert (publish.topic, publish.payload, publish.qos, publish.packet_id) == ("room", b"hi", 1, 3)
    assert publish.properties.get(0x03) == "text/plain"
    assert puback == PubAck(4, 9, 0)
    assert pubrel == PubAck(6, 4, 0x92)
    assert isinstance(subscribe, Subscribe)
    assert subscribe.properties.subscription_ids == (7,)
    assert [(s.topic_filter, s.qos, s.no_local) for s in subscribe.subscriptions] == [("room", 1, True)]
    assert isinstance(unsubscribe, Unsubscribe)
    assert unsubscribe.topic_filters == ("room",)
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == 0x04


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_packets_split_anywhere_across_frames_read_the_same(splits: list[int]) -> None:
    stream = stream_after_connect()
    assert parsed(stream, [split % len(stream) for split in splits]) == parsed(stream, [])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_after_connect_only_raise_the_codec_errors(data: bytes) -> None:
    reader = PacketReader(1024)
    reader.feed(v5_connect())
    with contextlib.suppress(MalformedPacket, ProtocolViolation):  # anything else fails the test
        reader.feed(data)


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (bytes([0xC0, 0]), ProtocolViolation),  # the first packet must be CONNECT
        (V311_CONNECT + V311_CONNECT, ProtocolViolation),  # a second CONNECT
        (V311_CONNECT + bytes([0x36, 5, 0, 1]) + b"t\x00\x01", MalformedPacket),  # PUBLISH with QoS 3
        (V311_CONNECT + bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), MalformedPacket),  # 5-byte length
        (V311_CONNECT + bytes([0x80, 2, 0, 1]), MalformedPacket),  # SUBSCRIBE without its 0b0010 flags
        (V311_CONNECT + bytes([0x82, 2, 0, 1]), ProtocolViolation),  # SUBSCRIBE without a topic
        (V311_CONNECT + bytes([0xE0, 1, 0]), MalformedPacket),  # a 3.1.1 DISCONNECT has no body
        (V311_CONNECT[:9] + bytes([0x03]) + V311_CONNECT[10:], MalformedPacket),  # reserved flag set
        (V311_CONNECT + bytes([0x30, 4, 0, 2, 0xC3, 0x28]), MalformedPacket),  # a topic that is not UTF-8
    ],
)
def test_malformed_and_forbidden_packets(stream: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        PacketReader(1024).feed(stream)


def test_packets_larger_than_the_limit_are_refused_before_they_are_complete() -> None:
    reader = PacketReader(64)
    reader.feed(V311_CONNECT)
    with pytest.raises(MalformedPacket):
        reader.feed(bytes([0x30, 0x80, 0x01]))  # announces 128 bytes


def test_unknown_protocol_levels_are_read_far_enough_to_answer() -> None:
    (packet,) = PacketReader(1024).feed(V311_CONNECT[:8] + bytes([3]) + V311_CONNECT[9:])
    assert isinstance(packet, Connect)
    assert packet.protocol_version == 3


def test_server_packets() -> None:
    assert encode_connack(MQTT_V311, False, 0) == bytes([0x20, 2, 0, 0])
    assert encode_connack(MQTT_V311, True, 0) == bytes([0x20, 2, 1, 0])
    assert encode_connack(MQTT_V5, False, 0x87) == bytes([0x20, 3, 0, 0x87, 0])
    assert encode_suback(MQTT_V311, 5, [1, 0x80]) == bytes([0x90, 4, 0, 5, 1, 0x80])
    assert encode_suback(MQTT_V5, 5, [0xA2]) == bytes([0x90, 4, 0, 5, 0, 0xA2])
    assert encode_unsuback(MQTT_V311, 6, [0]) == bytes([0xB0, 2, 0, 6])
    assert encode_unsuback(MQTT_V5, 6, [0x11]) == bytes([0xB0, 4, 0, 6, 0, 0x11])
    assert encode_disconnect(0x98) == bytes([0xE0, 2, 0x98, 0])
    assert with_dup_flag(encode_publish(MQTT_V311, "t", b"", qos=1, packet_id=1))[0] == 0x3A


@pytest.mark.parametrize("payload_size", [0, 120, 121, 16_378, 16_379, 100_000])
def test_publish_round_trips_across_remaining_length_sizes(payload_size: int) -> None:
    """Remaining lengths of one to three bytes (127 → 128 and 16 383 → 16 384 are the edges)."""
    payload = bytes(range(256)) * (payload_size // 256) + bytes(payload_size % 256)
    packet = encode_publish(
        MQTT_V5, "room", payload, qos=2, packet_id=65535, values={0x03: "application/json", 0x0B: 9}, user=[("a", "b")]
    )
    reader = PacketReader(1 << 20)
    reader.version = MQTT_V5
    (decoded,) = reader.feed(packet)
    assert isinstance(decoded, Publish)
    assert (decoded.topic, decoded.payload, decoded.qos, decoded.packet_id) == ("room", payload, 2, 65535)
    assert decoded.properties.get(0x03) == "application/json"
    assert decoded.properties.subscription_ids == (9,)
    assert decoded.properties.user == (("a", "b"),)
