"""The protobuf client subprotocols: ``protobuf.webpubsub.azure.v1`` and its reliable variant.

Message definitions follow the service's published ``webpubsub.v1.proto`` (Azure/azure-webpubsub
``protocols/protobuf.webpubsub.azure.v1``, package ``azure.webpubsub``), limited to what the local
service speaks: join, leave, send to group, events, invoke and cancel, sequence acks and ping
upstream; acks, data, system (connected, disconnected), pong and invoke responses downstream.
Streams and group state are not served. The descriptors are built here in Python (no protoc);
field numbers and types are the spec's, so official protobuf clients interoperate.

Data mapping (reference-protobuf-webpubsub-subprotocol): ``text_data`` ↔ text, ``binary_data`` ↔
binary, ``json_data`` ↔ json, ``protobuf_data`` (an ``Any``) ↔ the ``protobuf`` data type, whose
bytes are the serialized ``Any`` (JSON clients get them base64, plain clients as a binary frame).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from .permissions import is_valid_group_name
from .protocol import (
    BadClientRequest,
    CancelInvocation,
    ClientRequest,
    Frame,
    Invoke,
    JoinGroup,
    LeaveGroup,
    MalformedFrame,
    Payload,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    WrongFrameType,
    invocation_id_of,
    is_valid_event_name,
)

__all__ = ["PROTOBUF_CODEC", "PROTOBUF_SUBPROTOCOL", "RELIABLE_PROTOBUF_SUBPROTOCOL", "ProtobufCodec", "messages"]

PROTOBUF_SUBPROTOCOL = "protobuf.webpubsub.azure.v1"
RELIABLE_PROTOBUF_SUBPROTOCOL = "protobuf.reliable.webpubsub.azure.v1"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _BOOL, _UINT64, _MESSAGE = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_UINT64, _F.TYPE_MESSAGE

# (name, number, type, message type name or "", "oneof name" | "?" for proto3 optional | "")
_Field = tuple[str, int, int, str, str]


def _message(
    name: str, fields: list[_Field], nested: list[descriptor_pb2.DescriptorProto] | None = None
) -> descriptor_pb2.DescriptorProto:
    """A message descriptor; real oneofs are declared first, then proto3 ``optional``'s synthetic ones."""
    message = descriptor_pb2.DescriptorProto(name=name, nested_type=nested or [])
    real_oneofs = list(dict.fromkeys(kind for *_, kind in fields if kind not in ("", "?")))
    synthetic = [field_name for field_name, *_, kind in fields if kind == "?"]
    for oneof in real_oneofs + [f"_{field_name}" for field_name in synthetic]:
        message.oneof_decl.add(name=oneof)
    for field_name, number, field_type, type_name, kind in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=_F.LABEL_OPTIONAL)
        if type_name:
            field.type_name = type_name
        if kind == "?":
            field.proto3_optional = True
            field.oneof_index = len(real_oneofs) + synthetic.index(field_name)
        elif kind:
            field.oneof_index = real_oneofs.index(kind)
    return message


def _file() -> descriptor_pb2.FileDescriptorProto:
    up, down, data = ".azure.webpubsub.UpstreamMessage", ".azure.webpubsub.DownstreamMessage", ".azure.webpubsub"
    upstream = _message(
        "UpstreamMessage",
        [
            ("send_to_group_message", 1, _MESSAGE, f"{up}.SendToGroupMessage", "message"),
            ("event_message", 5, _MESSAGE, f"{up}.EventMessage", "message"),
            ("join_group_message", 6, _MESSAGE, f"{up}.JoinGroupMessage", "message"),
            ("leave_group_message", 7, _MESSAGE, f"{up}.LeaveGroupMessage", "message"),
            ("sequence_ack_message", 8, _MESSAGE, f"{up}.SequenceAckMessage", "message"),
            ("ping_message", 9, _MESSAGE, f"{up}.PingMessage", "message"),
            ("invoke_event_message", 10, _MESSAGE, f"{up}.InvokeEventMessage", "message"),
            ("cancel_invocation_message", 11, _MESSAGE, f"{up}.CancelInvocationMessage", "message"),
        ],
        [
            _message(
                "SendToGroupMessage",
                [
                    ("group", 1, _STRING, "", ""),
                    ("ack_id", 2, _UINT64, "", "?"),
                    ("data", 3, _MESSAGE, f"{data}.MessageData", ""),
                    ("no_echo", 4, _BOOL, "", "?"),
                ],
            ),
            _message(
                "EventMessage",
                [
                    ("event", 1, _STRING, "", ""),
                    ("data", 2, _MESSAGE, f"{data}.MessageData", ""),
                    ("ack_id", 3, _UINT64, "", "?"),
                ],
            ),
            _message("JoinGroupMessage", [("group", 1, _STRING, "", ""), ("ack_id", 2, _UINT64, "", "?")]),
            _message("LeaveGroupMessage", [("group", 1, _STRING, "", ""), ("ack_id", 2, _UINT64, "", "?")]),
            _message("SequenceAckMessage", [("sequence_id", 1, _UINT64, "", "")]),
            _message("PingMessage", []),
            _message(
                "InvokeEventMessage",
                [
                    ("event", 1, _STRING, "", ""),
                    ("invocation_id", 2, _STRING, "", ""),
                    ("data", 3, _MESSAGE, f"{data}.MessageData", ""),
                ],
            ),
            _message("CancelInvocationMessage", [("invocation_id", 1, _STRING, "", "")]),
        ],
    )
    error = _message("ErrorMessage", [("name", 1, _STRING, "", ""), ("message", 2, _STRING, "", "")])
    downstream = _message(
        "DownstreamMessage",
        [
            ("ack_message", 1, _MESSAGE, f"{down}.AckMessage", "message"),
            ("data_message", 2, _MESSAGE, f"{down}.DataMessage", "message"),
            ("system_message", 3, _MESSAGE, f"{down}.SystemMessage", "message"),
            ("pong_message", 4, _MESSAGE, f"{down}.PongMessage", "message"),
            ("invoke_response_message", 5, _MESSAGE, f"{down}.InvokeResponseMessage", "message"),
        ],
        [
            _message(
                "AckMessage",
                [
                    ("ack_id", 1, _UINT64, "", ""),
                    ("success", 2, _BOOL, "", ""),
                    ("error", 3, _MESSAGE, f"{down}.AckMessage.ErrorMessage", "?"),
                ],
                [error],
            ),
            _message(
                "DataMessage",
                [
                    ("from", 1, _STRING, "", ""),
                    ("group", 2, _STRING, "", "?"),
                    ("data", 3, _MESSAGE, f"{data}.MessageData", ""),
                    ("sequence_id", 4, _UINT64, "", "?"),
                ],
            ),
            _message(
                "SystemMessage",
                [
                    ("connected_message", 1, _MESSAGE, f"{down}.SystemMessage.ConnectedMessage", "message"),
                    ("disconnected_message", 2, _MESSAGE, f"{down}.SystemMessage.DisconnectedMessage", "message"),
                ],
                [
                    _message(
                        "ConnectedMessage",
                        [
                            ("connection_id", 1, _STRING, "", ""),
                            ("user_id", 2, _STRING, "", ""),
                            ("reconnection_token", 3, _STRING, "", "?"),
                        ],
                    ),
                    _message("DisconnectedMessage", [("reason", 2, _STRING, "", "")]),
                ],
            ),
            _message("PongMessage", []),
            _message(
                "InvokeResponseMessage",
                [
                    ("invocation_id", 1, _STRING, "", ""),
                    ("success", 2, _BOOL, "", ""),
                    ("data", 3, _MESSAGE, f"{data}.MessageData", "?"),
                    ("error", 4, _MESSAGE, f"{down}.InvokeResponseMessage.ErrorMessage", "?"),
                ],
                [error],
            ),
        ],
    )
    message_data = _message(
        "MessageData",
        [
            ("text_data", 1, _STRING, "", "data"),
            ("binary_data", 2, _BYTES, "", "data"),
            ("protobuf_data", 3, _MESSAGE, ".google.protobuf.Any", "data"),
            ("json_data", 4, _STRING, "", "data"),
        ],
    )
    return descriptor_pb2.FileDescriptorProto(
        name="devstack/webpubsub.v1.proto",
        package="azure.webpubsub",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
        message_type=[upstream, downstream, message_data],
    )


def _build() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(_file())
    names = ("UpstreamMessage", "DownstreamMessage", "MessageData")
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"azure.webpubsub.{name}")) for name in names
    }


#: The message classes, by name: ``UpstreamMessage``, ``DownstreamMessage``, ``MessageData``.
#: Tests build and read frames with them just as a client would.
messages = _build()
_Upstream, _Downstream = messages["UpstreamMessage"], messages["DownstreamMessage"]


def _payload(data: Any, ack_id: int | None, invocation_id: str | None = None) -> Payload:
    """A ``MessageData`` as a payload; BadClientRequest when it carries nothing or invalid JSON."""
    kind = data.WhichOneof("data")
    if kind == "text_data":
        return Payload("text", data.text_data.encode("utf-8"))
    if kind == "binary_data":
        return Payload("binary", bytes(data.binary_data))
    if kind == "protobuf_data":
        return Payload("protobuf", data.protobuf_data.SerializeToString())
    if kind == "json_data":
        try:
            json.loads(data.json_data)
        except ValueError as error:
            raise BadClientRequest("'json_data' must be valid JSON", ack_id, invocation_id) from error
        return Payload("json", data.json_data.encode("utf-8"))
    raise BadClientRequest("'data' is required", ack_id, invocation_id)


def _message_data(payload: Payload) -> Any:
    """A payload as ``MessageData`` (a message of this module's pool, so it nests in the others)."""
    data: Any = messages["MessageData"]()
    if payload.data_type == "text":
        data.text_data = payload.body.decode("utf-8")
    elif payload.data_type == "json":
        data.json_data = payload.body.decode("utf-8")
    elif payload.data_type == "protobuf":
        data.protobuf_data.ParseFromString(payload.body)
    else:
        data.binary_data = payload.body
    return data


def _optional_ack(message: Any) -> int | None:
    return int(message.ack_id) if message.HasField("ack_id") else None


def _group(message: Any, ack_id: int | None) -> str:
    if not is_valid_group_name(message.group):
        raise BadClientRequest("'group' must be 1 to 1024 characters and not only whitespace", ack_id)
    return str(message.group)


def parse_client_frame(data: bytes) -> ClientRequest:
    """Parse one binary frame of a protobuf subprotocol client."""
    upstream: Any = _Upstream()
    try:
        upstream.ParseFromString(data)
    except DecodeError as error:
        raise MalformedFrame("the frame is not a valid UpstreamMessage") from error
    kind = upstream.WhichOneof("message")
    if kind is None:
        raise BadClientRequest("the UpstreamMessage carries no supported message", None)
    message = getattr(upstream, kind)
    if kind == "ping_message":
        return Ping()
    if kind == "sequence_ack_message":
        return SequenceAck(int(message.sequence_id))
    if kind == "invoke_event_message":
        invocation_id = invocation_id_of(message.invocation_id)
        if not is_valid_event_name(message.event):
            raise BadClientRequest("'event' must be a valid event name", None, invocation_id)
        payload = _payload(message.data, None, invocation_id) if message.HasField("data") else None
        return Invoke(invocation_id, str(message.event), payload)
    if kind == "cancel_invocation_message":
        return CancelInvocation(invocation_id_of(message.invocation_id))
    ack_id = _optional_ack(message)
    if kind == "join_group_message":
        return JoinGroup(_group(message, ack_id), ack_id)
    if kind == "leave_group_message":
        return LeaveGroup(_group(message, ack_id), ack_id)
    if kind == "send_to_group_message":
        no_echo = bool(message.no_echo) if message.HasField("no_echo") else False
        return SendToGroup(_group(message, ack_id), _payload(message.data, ack_id), no_echo, ack_id)
    if not is_valid_event_name(message.event):
        raise BadClientRequest("'event' must be a valid event name", ack_id)
    return SendEvent(str(message.event), _payload(message.data, ack_id), ack_id)


def _downstream(**fields: Any) -> bytes:
    frame: bytes = _Downstream(**fields).SerializeToString()
    return frame


class ProtobufCodec:
    """``protobuf.webpubsub.azure.v1`` and ``protobuf.reliable.webpubsub.azure.v1``: binary frames only."""

    subprotocols = (PROTOBUF_SUBPROTOCOL, RELIABLE_PROTOBUF_SUBPROTOCOL)
    reliable_subprotocol = RELIABLE_PROTOBUF_SUBPROTOCOL

    def parse(self, text: str | None, data: bytes | None) -> ClientRequest:
        if data is None:
            raise WrongFrameType("The protobuf subprotocols accept binary frames only.")
        return parse_client_frame(data)

    def connected(self, user_id: str | None, connection_id: str, reconnection_token: str | None) -> Frame:
        connected: dict[str, Any] = {"connection_id": connection_id, "user_id": user_id or ""}
        if reconnection_token is not None:
            connected["reconnection_token"] = reconnection_token
        return _downstream(system_message={"connected_message": connected})

    def disconnected(self, reason: str) -> Frame:
        return _downstream(system_message={"disconnected_message": {"reason": reason}})

    def ack(self, ack_id: int, error_name: str | None = None, message: str = "") -> Frame:
        ack: dict[str, Any] = {"ack_id": ack_id, "success": error_name is None}
        if error_name is not None:
            ack["error"] = {"name": error_name, "message": message}
        return _downstream(ack_message=ack)

    def pong(self) -> Frame:
        return _downstream(pong_message={})

    def group_message(self, group: str, from_user_id: str | None, payload: Payload, sequence_id: int | None) -> Frame:
        # The published DataMessage has no sender field: protobuf clients do not learn fromUserId.
        data: dict[str, Any] = {"from": "group", "group": group, "data": _message_data(payload)}
        if sequence_id is not None:
            data["sequence_id"] = sequence_id
        return _downstream(data_message=data)

    def server_message(self, payload: Payload, sequence_id: int | None) -> Frame:
        data: dict[str, Any] = {"from": "server", "data": _message_data(payload)}
        if sequence_id is not None:
            data["sequence_id"] = sequence_id
        return _downstream(data_message=data)

    def invoke_response(
        self, invocation_id: str, payload: Payload | None, error_name: str | None = None, message: str = ""
    ) -> Frame:
        response: dict[str, Any] = {"invocation_id": invocation_id, "success": error_name is None}
        if error_name is not None:
            response["error"] = {"name": error_name, "message": message}
        elif payload is not None:
            response["data"] = _message_data(payload)
        return _downstream(invoke_response_message=response)


PROTOBUF_CODEC = ProtobufCodec()
