"""The protobuf subprotocols, driven with frames built from the published spec, not from the service's code.

Field numbers are those of Azure/azure-webpubsub protocols/protobuf.webpubsub.azure.v1/webpubsub.v1.proto
(UpstreamMessage: send_to_group 1, event 5, join 6, leave 7, sequence_ack 8, ping 9, invoke 10;
DownstreamMessage: ack 1, data 2, system 3, pong 4, invoke_response 5; MessageData: text 1,
binary 2, protobuf Any 3, json 4). Frames are written and read here with a few lines of protobuf
wire format, so a wrong field number in the service cannot pass by agreeing with itself. The data
mapping is reference-protobuf-webpubsub-subprotocol's ("Publish messages", "Send custom events").
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from starlette.responses import Response
from websockets.sync.client import ClientConnection

from devstack.webpubsub import RunningWebPubSub
from tests.support.local_service import (
    FakeEventHandler,
    ReceivedRequest,
    client_token,
    client_url,
    close_code,
    json_client,
    open_socket,
)

PROTOBUF = "protobuf.webpubsub.azure.v1"
RELIABLE_PROTOBUF = "protobuf.reliable.webpubsub.azure.v1"
GROUP_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
#: The Any of the spec's example (Case 2: MyMessage{value: 1} packed), byte for byte.
EXAMPLE_ANY = bytes.fromhex(
    "0A 2F 74 79 70 65 2E 67 6F 6F 67 6C 65 61 70 69 73 2E 63 6F 6D 2F 61 7A 75 72 65 2E 77 65 62 70 75 62"
    " 73 75 62 2E 54 65 73 74 4D 65 73 73 61 67 65 12 02 08 01"
)

# ----- protobuf wire format, just enough for these messages -----------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def decode(data: bytes) -> dict[int, Any]:
    """Fields by number: varints as ints, length-delimited ones as bytes (decode nested ones again)."""
    fields: dict[int, Any] = {}
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number], position = _read_varint(data, position)
        elif wire_type == 2:
            length, position = _read_varint(data, position)
            fields[number], position = data[position : position + length], position + length
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
    return fields


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def text_data(text: str) -> bytes:
    return field(1, text)


def join(group: str, ack_id: int) -> bytes:
    return field(6, field(1, group) + field(2, ack_id))


def send_to_group(group: str, data: bytes, ack_id: int | None = None) -> bytes:
    ack = field(2, ack_id) if ack_id is not None else b""
    return field(1, field(1, group) + ack + field(3, data))


class ProtobufClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        connected = self.receive()
        system = decode(connected[3])
        self.connected = decode(system[1])
        self.connection_id = self.connected[1].decode()

    def send(self, frame: bytes) -> None:
        self.connection.send(frame)

    def receive(self) -> dict[int, Any]:
        frame = self.connection.recv(timeout=5)
        assert isinstance(frame, bytes), "protobuf clients get binary frames only"
        return decode(frame)

    def data_message(self) -> dict[int, Any]:
        message = self.receive()
        assert 2 in message, message
        data = decode(message[2])
        data[3] = decode(data[3])
        return data


@contextmanager
def protobuf_client(
    service: RunningWebPubSub, hub: str, protocol: str = PROTOBUF, **token_options: Any
) -> Iterator[ProtobufClient]:
    with open_socket(client_url(service, hub, client_token(service.endpoint, hub, **token_options)), protocol) as ws:
        assert ws.subprotocol == protocol
        yield ProtobufClient(ws)


@pytest.fixture
def rest(service: RunningWebPubSub, hub: str) -> Iterator[WebPubSubServiceClient]:
    with WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub) as client:
        yield client


def test_connected_ack_and_forbidden_ack(service: RunningWebPubSub, hub: str) -> None:
    with protobuf_client(service, hub, user_id="pat", roles=["webpubsub.joinLeaveGroup"]) as client:
        assert client.connected[2] == b"pat"
        assert 3 not in client.connected  # no reconnection token without the reliable subprotocol
        client.send(join("room", 7))
        assert decode(client.receive()[1]) == {1: 7, 2: 1}  # ack_id 7, success
        client.send(send_to_group("room", text_data("x"), ack_id=8))
        ack = decode(client.receive()[1])
        assert (ack[1], ack.get(2, 0)) == (8, 0)
        assert decode(ack[3])[1] == b"Forbidden"
        client.send(field(9, b""))  # ping
        assert client.receive() == {4: b""}  # pong


def test_group_messages_cross_between_protobuf_json_and_plain_clients(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with (
        protobuf_client(service, hub, user_id="pb", roles=GROUP_ROLES, groups=["g"]) as proto,
        json_client(service, hub, user_id="js", roles=GROUP_ROLES, groups=["g"]) as js,
        open_socket(client_url(service, hub, client_token(service.endpoint, hub))) as plain,
    ):
        rest.add_connection_to_group(
            "g", _connection_id_of(service, hub, exclude={proto.connection_id, js.connection_id})
        )
        # Case 1 (text) and Case 2 (protobuf Any) of "Publish messages", from the protobuf client.
        proto.send(send_to_group("g", text_data("text data")))
        proto.send(send_to_group("g", field(3, EXAMPLE_ANY)))
        assert js.receive() == {
            "type": "message",
            "from": "group",
            "group": "g",
            "fromUserId": "pb",
            "dataType": "text",
            "data": "text data",
        }
        assert (
            js.receive()["data"]
            == base64.b64encode(EXAMPLE_ANY).decode()
            == ("Ci90eXBlLmdvb2dsZWFwaXMuY29tL2F6dXJlLndlYnB1YnN1Yi5UZXN0TWVzc2FnZRICCAE=")
        )
        assert plain.recv(timeout=5) == "text data"
        assert plain.recv(timeout=5) == EXAMPLE_ANY
        assert proto.data_message() == {1: b"group", 2: b"g", 3: {1: b"text data"}}
        assert proto.data_message()[3] == {3: EXAMPLE_ANY}
        # From a JSON client and from the server: json_data, binary_data.
        js.send({"type": "sendToGroup", "group": "g", "dataType": "json", "data": {"n": 1}})
        assert proto.data_message() == {1: b"group", 2: b"g", 3: {4: b'{"n":1}'}}
        rest.send_to_all(b"\x01\x02\x03", content_type="application/octet-stream")  # type: ignore[call-overload]
        assert proto.data_message() == {1: b"server", 3: {2: b"\x01\x02\x03"}}


def _connection_id_of(service: RunningWebPubSub, hub: str, exclude: set[str]) -> str:
    connections = service.service.call(service.service.connections.snapshot)
    return next(c["connectionId"] for c in connections if c["hub"] == hub and c["connectionId"] not in exclude)  # type: ignore[return-value]


def test_events_carry_the_protobuf_any_upstream_and_invoke_answers_in_protobuf(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    def upstream(request: ReceivedRequest) -> Response:
        return Response(b"got " + str(len(request.body)).encode(), media_type="text/plain")

    event_handler.user_event = upstream
    with protobuf_client(service, hub) as client:
        # "Send custom events", Case 2: the handler gets the Any's bytes as application/x-protobuf.
        client.send(field(5, field(1, "stats") + field(2, field(3, EXAMPLE_ANY)) + field(3, 1)))
        assert decode(client.receive()[2])[3] == field(1, f"got {len(EXAMPLE_ANY)}")  # the reply, text_data
        assert decode(client.receive()[1]) == {1: 1, 2: 1}
        event = event_handler.wait_for_event("azure.webpubsub.user.stats")
        assert (event.header("content-type"), event.body) == ("application/x-protobuf", EXAMPLE_ANY)
        # invoke_event_message (10): event 1, invocation_id 2, data 3 → invoke_response_message (5).
        client.send(field(10, field(1, "echo") + field(2, "inv-1") + field(3, text_data("hello"))))
        response = decode(client.receive()[5])
        assert (response[1], response[2], decode(response[3])) == (b"inv-1", 1, {1: b"got 5"})


def test_reliable_protobuf_sequences_messages_and_recovers(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with protobuf_client(service, hub, protocol=RELIABLE_PROTOBUF) as client:
        token = client.connected[3].decode()
        for text in ("one", "two"):
            rest.send_to_connection(client.connection_id, text, content_type="text/plain")
        first, second = client.data_message(), client.data_message()
        assert (first[3], first[4], second[4]) == ({1: b"one"}, 1, 2)
        client.send(field(8, field(1, 1)))  # sequence ack for 1: only "two" stays for replay
        assert service.service.call(lambda: service.service.connections.drop_transport(client.connection_id))
        recovery = client_url(service, hub, awps_connection_id=client.connection_id, awps_reconnection_token=token)
        with open_socket(recovery, RELIABLE_PROTOBUF) as resumed:
            recovered = ProtobufClient(resumed)
            assert recovered.connection_id == client.connection_id
            replayed = recovered.data_message()
            assert (replayed[3], replayed[4]) == ({1: b"two"}, 2)


def test_a_text_frame_closes_a_protobuf_connection_with_1003(service: RunningWebPubSub, hub: str) -> None:
    with protobuf_client(service, hub) as client:
        client.connection.send(json.dumps({"type": "ping"}))
        assert close_code(client.connection) == 1003


def test_an_undecodable_frame_closes_the_connection_with_1007(service: RunningWebPubSub, hub: str) -> None:
    with protobuf_client(service, hub) as client:
        client.connection.send(b"\x0a\xff")  # a length beyond the frame
        assert close_code(client.connection) == 1007
