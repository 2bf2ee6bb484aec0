"""MQTT 3.1.1 and 5.0 control packets, as a broker reads and writes them (pure: no I/O).

Written from the OASIS specifications (MQTT 3.1.1 errata 01 §2 and §3, MQTT 5.0 §2 and §3) because no
maintained Python package decodes the client side of both versions: the 3.1.1 codecs on PyPI
lack 5.0's properties and reason codes, and the 5.0 ones refuse 3.1.1. The service reads what
clients send (CONNECT, PUBLISH and its acknowledgements, SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
DISCONNECT, AUTH) and writes what a broker sends (CONNACK, PUBLISH and acknowledgements, SUBACK,
UNSUBACK, PINGRESP, DISCONNECT). :class:`PacketReader` turns a byte stream (MQTT packets may
span WebSocket frames, or share one) into packets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MQTT_V5",
    "MQTT_V311",
    "Connect",
    "Disconnect",
    "MalformedPacket",
    "PacketReader",
    "PingReq",
    "Properties",
    "ProtocolViolation",
    "PubAck",
    "Publish",
    "Subscribe",
    "Subscription",
    "Unsubscribe",
    "Will",
    "encode_connack",
    "encode_disconnect",
    "encode_pingresp",
    "encode_pub_response",
    "encode_publish",
    "encode_suback",
    "encode_unsuback",
]

MQTT_V311 = 4
MQTT_V5 = 5

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

# MQTT 5.0 property identifiers (§2.2.2.2) used by the service.
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
REASON_STRING = 0x1F
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

_BYTE, _U16, _U32, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE,
    0x02: _U32,
    0x03: _STRING,
    0x08: _STRING,
    0x09: _BINARY,
    0x0B: _VARINT,
    0x11: _U32,
    0x12: _STRING,
    0x13: _U16,
    0x15: _STRING,
    0x16: _BINARY,
    0x17: _BYTE,
    0x18: _U32,
    0x19: _BYTE,
    0x1A: _STRING,
    0x1C: _STRING,
    0x1F: _STRING,
    0x21: _U16,
    0x22: _U16,
    0x23: _U16,
    0x24: _BYTE,
    0x25: _BYTE,
    0x26: _PAIR,
    0x27: _U32,
    0x28: _BYTE,
    0x29: _BYTE,
    0x2A: _BYTE,
}
_MAX_REMAINING_LENGTH = 268_435_455


class MalformedPacket(Exception):
    """Bytes that are not an MQTT packet (MQTT 5.0 reason code 0x81): the connection is closed."""


class ProtocolViolation(Exception):
    """A well-formed packet the protocol forbids here (MQTT 5.0 reason code 0x82)."""


@dataclass(frozen=True)
class Properties:
    """MQTT 5.0 properties: single values by identifier, user properties in order (names may repeat)."""

    values: dict[int, Any] = field(default_factory=dict)
    user: tuple[tuple[str, str], ...] = ()
    subscription_ids: tuple[int, ...] = ()

    def get(self, identifier: int, default: Any = None) -> Any:
        return self.values.get(identifier, default)


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties


@dataclass(frozen=True)
class Connect:
    protocol_name: str
    protocol_version: int
    clean_start: bool
    keep_alive: int
    client_id: str
    username: str | None
    password: bytes | None
    will: Will | None
    properties: Properties


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    properties: Properties


@dataclass(frozen=True)
class PubAck:
    """PUBACK, PUBREC, PUBREL or PUBCOMP from the client (``kind`` is the packet type)."""

    kind: int
    packet_id: int
    reason_code: int


@dataclass(frozen=True)
class Subscription:
    topic_filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties


@dataclass(frozen=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties


@dataclass(frozen=True)
class PingReq:
    pass


@dataclass(frozen=True)
class Disconnect:
    reason_code: int
    properties: Properties


@dataclass(frozen=True)
class Auth:
    reason_code: int
    properties: Properties


ClientPacket = Connect | Publish | PubAck | Subscribe | Unsubscribe | PingReq | Disconnect | Auth


class PacketReader:
    """Splits a client's byte stream into packets; the protocol version is learnt from CONNECT."""

    def __init__(self, max_packet_bytes: int) -> None:
        self.max_packet_bytes = max_packet_bytes
        self.version: int | None = None
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ClientPacket]:
        """Add bytes; return every packet now complete. Raises MalformedPacket or ProtocolViolation."""
        self._buffer += data
        packets: list[ClientPacket] = []
        while True:
            header = _fixed_header(self._buffer)
            if header is None:
                if len(self._buffer) > 5:
                    raise MalformedPacket("invalid remaining length")
                return packets
            first, length, offset = header
            if offset + length > self.max_packet_bytes:
                raise MalformedPacket("the packet is larger than the service accepts")
            if len(self._buffer) < offset + length:
                return packets
            body = bytes(self._buffer[offset : offset + length])
            del self._buffer[: offset + length]
            packets.append(self._parse(first, body))

    def _parse(self, first: int, body: bytes) -> ClientPacket:
        kind, flags = first >> 4, first & 0x0F
        if self.version is None:
            if kind != CONNECT:
                raise ProtocolViolation("the first packet must be CONNECT")
            packet = _parse_connect(flags, body)
            self.version = packet.protocol_version
            return packet
        v5 = self.version == MQTT_V5
        if kind == CONNECT:
            raise ProtocolViolation("a second CONNECT")
        if kind == PUBLISH:
            return _parse_publish(flags, body, v5)
        if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            _expect_flags(flags, 0b0010 if kind == PUBREL else 0)
            return _parse_pub_ack(kind, body, v5)
        if kind == SUBSCRIBE:
            _expect_flags(flags, 0b0010)
            return _parse_subscribe(body, v5)
        if kind == UNSUBSCRIBE:
            _expect_flags(flags, 0b0010)
            return _parse_unsubscribe(body, v5)
        if kind == PINGREQ:
            _expect_flags(flags, 0)
            if body:
                raise MalformedPacket("PINGREQ has no body")
            return PingReq()
        if kind == DISCONNECT:
            _expect_flags(flags, 0)
            if not v5:
                if body:
                    raise MalformedPacket("an MQTT 3.1.1 DISCONNECT has no body")
                return Disconnect(0, Properties())
            reader = _Reader(body)
            code = reader.byte() if reader.remaining else 0
            properties = reader.properties() if reader.remaining else Properties()
            reader.end()
            return Disconnect(code, properties)
        if kind == AUTH and v5:
            _expect_flags(flags, 0)
            reader = _Reader(body)
            code = reader.byte() if reader.remaining else 0
            properties = reader.properties() if reader.remaining else Properties()
            reader.end()
            return Auth(code, properties)
        raise ProtocolViolation(f"a client may not send packet type {kind}")


# ----- reading -----------------------------------------------------------------------------


def _fixed_header(buffer: bytearray) -> tuple[int, int, int] | None:
    """(first byte, remaining length, header size), or None while the header is incomplete."""
    if len(buffer) < 2:
        return None
    length, multiplier = 0, 1
    for index in range(1, 5):
        if index >= len(buffer):
            return None
        byte = buffer[index]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return buffer[0], length, index + 1
        multiplier *= 128
    raise MalformedPacket("invalid remaining length")


def _expect_flags(flags: int, expected: int) -> None:
    if flags != expected:
        raise MalformedPacket("invalid fixed header flags")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.position

    def take(self, count: int) -> bytes:
        if count > self.remaining:
            raise MalformedPacket("the packet ends early")
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def varint(self) -> int:
        value, multiplier = 0, 1
        for _ in range(4):
            byte = self.byte()
            value += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                return value
            multiplier *= 128
        raise MalformedPacket("invalid variable byte integer")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedPacket("a string is not valid UTF-8") from error
        if "\x00" in text:
            raise MalformedPacket("a string contains U+0000")
        return text

    def properties(self) -> Properties:
        length = self.varint()
        end = self.position + length
        if end > len(self.data):
            raise MalformedPacket("the properties run past the packet")
        values: dict[int, Any] = {}
        user: list[tuple[str, str]] = []
        subscription_ids: list[int] = []
        while self.position < end:
            identifier = self.varint()
            kind = _PROPERTY_TYPES.get(identifier)
            if kind is None:
                raise MalformedPacket(f"unknown property 0x{identifier:02x}")
            value: Any
            if kind == _BYTE:
                value = self.byte()
            elif kind == _U16:
                value = self.u16()
            elif kind == _U32:
                value = self.u32()
            elif kind == _VARINT:
                value = self.varint()
            elif kind == _STRING:
                value = self.string()
            elif kind == _BINARY:
                value = self.binary()
            else:
                user.append((self.string(), self.string()))
                continue
            if identifier == SUBSCRIPTION_IDENTIFIER:
                subscription_ids.append(value)
            elif identifier in values:
                raise ProtocolViolation(f"property 0x{identifier:02x} appears twice")
            else:
                values[identifier] = value
        if self.position != end:
            raise MalformedPacket("the properties run past their length")
        return Properties(values, tuple(user), tuple(subscription_ids))

    def end(self) -> None:
        if self.remaining:
            raise MalformedPacket("unexpected bytes at the end of the packet")


def _parse_connect(flags: int, body: bytes) -> Connect:
    _expect_flags(flags, 0)
    reader = _Reader(body)
    protocol_name = reader.string()
    version = reader.byte()
    if protocol_name not in ("MQTT", "MQIsdp"):
        raise ProtocolViolation("the protocol name is not MQTT")
    connect_flags = reader.byte()
    keep_alive = reader.u16()
    v5 = version == MQTT_V5
    if version not in (MQTT_V311, MQTT_V5):
        # Enough is known to answer "unacceptable protocol version"; the rest is not read.
        return Connect(protocol_name, version, True, keep_alive, "", None, None, None, Properties())
    if connect_flags & 0x01:
        raise MalformedPacket("the reserved CONNECT flag is set")
    properties = reader.properties() if v5 else Properties()
    client_id = reader.string()
    will: Will | None = None
    will_qos = (connect_flags >> 3) & 0x03
    if connect_flags & 0x04:
        if will_qos == 3:
            raise MalformedPacket("will QoS 3")
        will_properties = reader.properties() if v5 else Properties()
        will = Will(reader.string(), reader.binary(), will_qos, bool(connect_flags & 0x20), will_properties)
    elif will_qos or connect_flags & 0x20:
        raise MalformedPacket("will QoS or retain without a will")
    username = reader.string() if connect_flags & 0x80 else None
    if connect_flags & 0x40 and not v5 and username is None:
        raise MalformedPacket("an MQTT 3.1.1 password needs a user name")
    password = reader.binary() if connect_flags & 0x40 else None
    reader.end()
    return Connect(
        protocol_name, version, bool(connect_flags & 0x02), keep_alive, client_id, username, password, will, properties
    )


def _parse_publish(flags: int, body: bytes, v5: bool) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MalformedPacket("DUP set on a QoS 0 PUBLISH")
    reader = _Reader(body)
    topic = reader.string()
    packet_id = reader.u16() if qos else None
    if packet_id == 0:
        raise MalformedPacket("packet identifier 0")
    properties = reader.properties() if v5 else Properties()
    payload = reader.take(reader.remaining)
    return Publish(topic, payload, qos, bool(flags & 0x01), dup, packet_id, properties)


def _parse_pub_ack(kind: int, body: bytes, v5: bool) -> PubAck:
    reader = _Reader(body)
    packet_id = reader.u16()
    code = 0
    if v5 and reader.remaining:
        code = reader.byte()
        if reader.remaining:
            reader.properties()
    reader.end()
    return PubAck(kind, packet_id, code)


def _parse_subscribe(body: bytes, v5: bool) -> Subscribe:
    reader = _Reader(body)
    packet_id = reader.u16()
    properties = reader.properties() if v5 else Properties()
    subscriptions: list[Subscription] = []
    while reader.remaining:
        topic_filter = reader.string()
        options = reader.byte()
        if options & (0xC0 if v5 else 0xFC) or options & 0x03 == 3 or (options >> 4) & 0x03 == 3:
            raise MalformedPacket("invalid subscription options")
        subscriptions.append(
            Subscription(topic_filter, options & 0x03, bool(options & 0x04), bool(options & 0x08), (options >> 4) & 3)
        )
    if not subscriptions:
        raise ProtocolViolation("SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _parse_unsubscribe(body: bytes, v5: bool) -> Unsubscribe:
    reader = _Reader(body)
    packet_id = reader.u16()
    properties = reader.properties() if v5 else Properties()
    filters: list[str] = []
    while reader.remaining:
        filters.append(reader.string())
    if not filters:
        raise ProtocolViolation("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(filters), properties)


# ----- writing -----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def _binary(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    if len(body) > _MAX_REMAINING_LENGTH:
        raise ValueError("packet too large")
    return bytes([first]) + _varint(len(body)) + body


def encode_properties(values: dict[int, Any] | None = None, user: Iterable[tuple[str, str]] = ()) -> bytes:
    """A property block: identifiers in ascending order, then the user properties in order."""
    out = bytearray()
    for identifier, value in sorted((values or {}).items()):
        kind = _PROPERTY_TYPES[identifier]
        if value is None:
            continue
        if kind == _VARINT:
            for item in value if isinstance(value, list | tuple) else (value,):
                out += _varint(identifier) + _varint(item)
            continue
        out += _varint(identifier)
        if kind == _BYTE:
            out.append(value)
        elif kind == _U16:
            out += struct.pack(">H", value)
        elif kind == _U32:
            out += struct.pack(">I", value)
        elif kind == _STRING:
            out += _string(value)
        elif kind == _BINARY:
            out += _binary(value)
    for name, value in user:
        out += _varint(USER_PROPERTY) + _string(name) + _string(value)
    return _varint(len(out)) + bytes(out)


def encode_connack(
    version: int,
    session_present: bool,
    code: int,
    values: dict[int, Any] | None = None,
    user: Iterable[tuple[str, str]] = (),
) -> bytes:
    body = bytes([1 if session_present else 0, code])
    if version == MQTT_V5:
        body += encode_properties(values, user)
    return _packet(CONNACK << 4, body)


def encode_publish(
    version: int,
    topic: str,
    payload: bytes,
    *,
    qos: int,
    packet_id: int | None,
    dup: bool = False,
    retain: bool = False,
    values: dict[int, Any] | None = None,
    user: Iterable[tuple[str, str]] = (),
) -> bytes:
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = _string(topic)
    if qos:
        assert packet_id is not None
        body += struct.pack(">H", packet_id)
    if version == MQTT_V5:
        body += encode_properties(values, user)
    return _packet(first, body + payload)


def encode_pub_response(kind: int, version: int, packet_id: int, reason_code: int = 0) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP; a 5.0 reason code only when it is not success."""
    body = struct.pack(">H", packet_id)
    if version == MQTT_V5 and reason_code:
        body += bytes([reason_code])
    return _packet(kind << 4 | (0b0010 if kind == PUBREL else 0), body)


def encode_suback(version: int, packet_id: int, codes: Iterable[int]) -> bytes:
    body = struct.pack(">H", packet_id)
    if version == MQTT_V5:
        body += encode_properties()
    return _packet(SUBACK << 4, body + bytes(codes))


def encode_unsuback(version: int, packet_id: int, codes: Iterable[int]) -> bytes:
    body = struct.pack(">H", packet_id)
    if version == MQTT_V5:
        body += encode_properties() + bytes(codes)
    return _packet(UNSUBACK << 4, body)


def encode_pingresp() -> bytes:
    return _packet(PINGRESP << 4, b"")


def encode_disconnect(reason_code: int, reason: str | None = None) -> bytes:
    """A server DISCONNECT (MQTT 5.0 only: 3.1.1 servers just close the connection)."""
    values = {REASON_STRING: reason[:200]} if reason else None
    return _packet(DISCONNECT << 4, bytes([reason_code]) + encode_properties(values))


def with_dup_flag(packet: bytes) -> bytes:
    """The same PUBLISH marked as a redelivery (required when resending QoS 1 and 2 messages)."""
    return bytes([packet[0] | 0x08]) + packet[1:]
