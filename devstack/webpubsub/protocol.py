"""The JSON client subprotocols: frames clients send, frames the service writes, message payloads.

Pure functions and value types only (no I/O), so the wire format lives in one place. Both
``json.webpubsub.azure.v1`` and ``json.reliable.webpubsub.azure.v1`` share these frames; the
reliable one adds ``sequenceId`` to data messages and a ``reconnectionToken`` to ``connected``.
The protobuf subprotocols (``protobuf_protocol``) parse into the same requests; a
:class:`Codec` renders the service's frames for either.

``invoke`` (``@azure/web-pubsub-client`` 1.0.4 ``invokeEvent``, read from the package's
``jsonProtocolBase.js``): ``{"type": "invoke", "invocationId": "1", "target": "event", "event":
"<name>", "dataType", "data"}``, answered with ``{"type": "invokeResponse", "invocationId",
"success", "dataType"?, "data"?, "error"?: {"name", "message"}}``; ``{"type":
"cancelInvocation", "invocationId"}`` withdraws it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .permissions import is_valid_group_name

__all__ = [
    "JSON_CODEC",
    "JSON_SUBPROTOCOL",
    "RELIABLE_JSON_SUBPROTOCOL",
    "BadClientRequest",
    "CancelInvocation",
    "ClientRequest",
    "Codec",
    "Frame",
    "Invoke",
    "JoinGroup",
    "LeaveGroup",
    "MalformedFrame",
    "Payload",
    "Ping",
    "SendEvent",
    "SendToGroup",
    "SequenceAck",
    "UnsupportedContentType",
    "WrongFrameType",
    "ack_frame",
    "connected_frame",
    "disconnected_frame",
    "group_message_frame",
    "invoke_response_frame",
    "parse_client_frame",
    "pong_frame",
    "server_message_frame",
]

JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
RELIABLE_JSON_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"

DataType = Literal["text", "json", "binary", "protobuf"]
_CONTENT_TYPES: dict[DataType, str] = {
    "text": "text/plain",
    "json": "application/json",
    "binary": "application/octet-stream",
    # A protobuf ``Any`` from a protobuf client, as the service sends it upstream.
    "protobuf": "application/x-protobuf",
}
Frame = str | bytes
_DATA_TYPES = {content_type: data_type for data_type, content_type in _CONTENT_TYPES.items()}
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_.\-]{0,127}", re.IGNORECASE)


class MalformedFrame(Exception):
    """Not a protocol message at all (not JSON, no type): the service closes the connection."""


class UnsupportedContentType(ValueError):
    """An HTTP body whose media type is not text/plain, application/json or application/octet-stream."""


class BadClientRequest(Exception):
    """A recognisable request with invalid fields: answered with a ``BadRequest`` ack (or invoke error)."""

    def __init__(self, message: str, ack_id: int | None, invocation_id: str | None = None) -> None:
        super().__init__(message)
        self.ack_id = ack_id
        self.invocation_id = invocation_id


class WrongFrameType(Exception):
    """A text frame to a binary subprotocol or the reverse: the service closes with 1003."""


@dataclass(frozen=True)
class Payload:
    """Message data in one canonical form: its type and its bytes (UTF-8 text or JSON, or raw binary)."""

    data_type: DataType
    body: bytes

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.data_type]

    @classmethod
    def from_content_type(cls, content_type: str | None, body: bytes) -> Payload:
        """Interpret an HTTP body by its media type; ValueError for unsupported or invalid content."""
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        data_type = _DATA_TYPES.get(media_type)
        if data_type is None:
            raise UnsupportedContentType(f"unsupported content type {media_type or '(none)'!r}")
        if data_type == "text":
            body.decode("utf-8")
        elif data_type == "json":
            json.loads(body)
        return cls(data_type, body)

    def wire_data(self) -> Any:
        """The ``data`` field of a JSON frame: a string, a JSON value, or base64 for binary and protobuf."""
        if self.data_type == "text":
            return self.body.decode("utf-8")
        if self.data_type == "json":
            return json.loads(self.body)
        return base64.b64encode(self.body).decode("ascii")


@dataclass(frozen=True)
class JoinGroup:
    group: str
    ack_id: int | None


@dataclass(frozen=True)
class LeaveGroup:
    group: str
    ack_id: int | None


@dataclass(frozen=True)
class SendToGroup:
    group: str
    payload: Payload
    no_echo: bool
    ack_id: int | None


@dataclass(frozen=True)
class SendEvent:
    event: str
    payload: Payload
    ack_id: int | None


@dataclass(frozen=True)
class Invoke:
    """A request to the event handler whose answer goes back to this client as ``invokeResponse``."""

    invocation_id: str
    event: str
    payload: Payload | None


@dataclass(frozen=True)
class CancelInvocation:
    invocation_id: str


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class SequenceAck:
    sequence_id: int


ClientRequest = JoinGroup | LeaveGroup | SendToGroup | SendEvent | Invoke | CancelInvocation | Ping | SequenceAck
MAX_INVOCATION_ID_LENGTH = 128


def parse_client_frame(text: str) -> ClientRequest:
    """Parse one text frame of a JSON subprotocol client."""
    try:
        message = json.loads(text)
    except ValueError as error:
        raise MalformedFrame("the frame is not valid JSON") from error
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise MalformedFrame("the frame is not a JSON object with a string 'type'")
    kind = message["type"]
    ack_id = _ack_id(message)
    if kind == "ping":
        return Ping()
    if kind == "sequenceAck":
        sequence_id = message.get("sequenceId")
        if not isinstance(sequence_id, int) or not _is_uint(sequence_id):
            raise BadClientRequest("'sequenceId' must be a non-negative integer", None)
        return SequenceAck(sequence_id)
    if kind == "joinGroup":
        return JoinGroup(_group(message, ack_id), ack_id)
    if kind == "leaveGroup":
        return LeaveGroup(_group(message, ack_id), ack_id)
    if kind == "sendToGroup":
        no_echo = message.get("noEcho", False)
        if not isinstance(no_echo, bool):
            raise BadClientRequest("'noEcho' must be a boolean", ack_id)
        return SendToGroup(_group(message, ack_id), _payload(message, ack_id), no_echo, ack_id)
    if kind == "event":
        event = message.get("event")
        if not is_valid_event_name(event):
            raise BadClientRequest("'event' must be a valid event name", ack_id)
        assert isinstance(event, str)
        return SendEvent(event, _payload(message, ack_id), ack_id)
    if kind == "invoke":
        invocation_id = invocation_id_of(message.get("invocationId"))
        if message.get("target", "event") != "event":
            raise BadClientRequest("'target' must be 'event'", None, invocation_id)
        event = message.get("event")
        if not is_valid_event_name(event):
            raise BadClientRequest("'event' must be a valid event name", None, invocation_id)
        assert isinstance(event, str)
        try:
            payload = _payload(message, None) if "data" in message else None
        except BadClientRequest as error:
            raise BadClientRequest(str(error), None, invocation_id) from error
        return Invoke(invocation_id, event, payload)
    if kind == "cancelInvocation":
        return CancelInvocation(invocation_id_of(message.get("invocationId")))
    raise BadClientRequest(f"unknown message type {kind!r}", ack_id)


def invocation_id_of(value: object) -> str:
    """A client's invocation id: a non-empty string of at most 128 characters; MalformedFrame otherwise."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_INVOCATION_ID_LENGTH:
        raise MalformedFrame("'invocationId' must be a string of 1 to 128 characters")
    return value


def is_valid_event_name(event: object) -> bool:
    return isinstance(event, str) and _EVENT_NAME.fullmatch(event) is not None


def connected_frame(user_id: str | None, connection_id: str, reconnection_token: str | None) -> str:
    frame: dict[str, Any] = {
        "type": "system",
        "event": "connected",
        "userId": user_id,
        "connectionId": connection_id,
    }
    if reconnection_token is not None:
        frame["reconnectionToken"] = reconnection_token
    return _dump(frame)


def disconnected_frame(reason: str) -> str:
    return _dump({"type": "system", "event": "disconnected", "message": reason})


def ack_frame(ack_id: int, error_name: str | None = None, message: str = "") -> str:
    frame: dict[str, Any] = {"type": "ack", "ackId": ack_id, "success": error_name is None}
    if error_name is not None:
        frame["error"] = {"name": error_name, "message": message}
    return _dump(frame)


def pong_frame() -> str:
    return _dump({"type": "pong"})


def group_message_frame(group: str, from_user_id: str | None, payload: Payload, sequence_id: int | None) -> str:
    frame: dict[str, Any] = {
        "type": "message",
        "from": "group",
        "group": group,
        "fromUserId": from_user_id,
        "dataType": payload.data_type,
        "data": payload.wire_data(),
    }
    if sequence_id is not None:
        frame["sequenceId"] = sequence_id
    return _dump(frame)


def server_message_frame(payload: Payload, sequence_id: int | None) -> str:
    frame: dict[str, Any] = {
        "type": "message",
        "from": "server",
        "dataType": payload.data_type,
        "data": payload.wire_data(),
    }
    if sequence_id is not None:
        frame["sequenceId"] = sequence_id
    return _dump(frame)


def invoke_response_frame(
    invocation_id: str, payload: Payload | None, error_name: str | None = None, message: str = ""
) -> str:
    frame: dict[str, Any] = {"type": "invokeResponse", "invocationId": invocation_id, "success": error_name is None}
    if error_name is not None:
        frame["error"] = {"name": error_name, "message": message}
    elif payload is not None:
        frame["dataType"] = payload.data_type
        frame["data"] = payload.wire_data()
    return _dump(frame)


class Codec(Protocol):
    """Parses a subprotocol's client frames and renders the service's frames in it."""

    @property
    def subprotocols(self) -> tuple[str, ...]: ...

    @property
    def reliable_subprotocol(self) -> str: ...

    def parse(self, text: str | None, data: bytes | None) -> ClientRequest: ...

    def connected(self, user_id: str | None, connection_id: str, reconnection_token: str | None) -> Frame: ...

    def disconnected(self, reason: str) -> Frame: ...

    def ack(self, ack_id: int, error_name: str | None = None, message: str = "") -> Frame: ...

    def pong(self) -> Frame: ...

    def group_message(
        self, group: str, from_user_id: str | None, payload: Payload, sequence_id: int | None
    ) -> Frame: ...

    def server_message(self, payload: Payload, sequence_id: int | None) -> Frame: ...

    def invoke_response(
        self, invocation_id: str, payload: Payload | None, error_name: str | None = None, message: str = ""
    ) -> Frame: ...


class JsonCodec:
    """``json.webpubsub.azure.v1`` and ``json.reliable.webpubsub.azure.v1``: text frames only."""

    subprotocols = (JSON_SUBPROTOCOL, RELIABLE_JSON_SUBPROTOCOL)
    reliable_subprotocol = RELIABLE_JSON_SUBPROTOCOL

    def parse(self, text: str | None, data: bytes | None) -> ClientRequest:
        if text is None:
            raise WrongFrameType("The JSON subprotocols accept text frames only.")
        return parse_client_frame(text)

    connected = staticmethod(connected_frame)
    disconnected = staticmethod(disconnected_frame)
    ack = staticmethod(ack_frame)
    pong = staticmethod(pong_frame)
    group_message = staticmethod(group_message_frame)
    server_message = staticmethod(server_message_frame)
    invoke_response = staticmethod(invoke_response_frame)


JSON_CODEC = JsonCodec()


def _dump(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ack_id(message: dict[str, Any]) -> int | None:
    ack_id = message.get("ackId")
    if ack_id is None:
        return None
    if not _is_uint(ack_id):
        raise BadClientRequest("'ackId' must be a non-negative integer", None)
    return int(ack_id)


def _group(message: dict[str, Any], ack_id: int | None) -> str:
    group = message.get("group")
    if not is_valid_group_name(group):
        raise BadClientRequest("'group' must be 1 to 1024 characters and not only whitespace", ack_id)
    assert isinstance(group, str)
    return group


def _payload(message: dict[str, Any], ack_id: int | None) -> Payload:
    data_type = message.get("dataType", "json")
    if "data" not in message:
        raise BadClientRequest("'data' is required", ack_id)
    data = message["data"]
    if data_type == "text":
        if not isinstance(data, str):
            raise BadClientRequest("'data' must be a string when 'dataType' is 'text'", ack_id)
        return Payload("text", data.encode("utf-8"))
    if data_type in ("binary", "protobuf"):
        if not isinstance(data, str):
            raise BadClientRequest(f"'data' must be base64 when 'dataType' is '{data_type}'", ack_id)
        try:
            return Payload(data_type, base64.b64decode(data, validate=True))
        except binascii.Error as error:
            raise BadClientRequest(f"'data' must be base64 when 'dataType' is '{data_type}'", ack_id) from error
    if data_type == "json":
        if data is None:
            raise BadClientRequest("'data' must not be null when 'dataType' is 'json'", ack_id)
        return Payload("json", json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    raise BadClientRequest(f"unsupported dataType {data_type!r}", ack_id)
