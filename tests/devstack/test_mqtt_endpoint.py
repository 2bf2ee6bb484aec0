"""MQTT clients of the local Web PubSub service, with paho-mqtt over WebSocket and a stand-in event handler.

The expectations are the service's documentation (MicrosoftDocs azure-docs, ``articles/azure-web-pubsub``):
[EVENTS] ``reference-mqtt-cloud-events.md``, [CONNECT] ``howto-connect-mqtt-websocket-client.md``,
[CROSS] ``reference-mqtt-cross-protocol-communication.md``, [REST] ``reference-rest-api-mqtt.md``,
[TERMS] ``includes/mqtt-term-mappings.md``, [STATUS] ``reference-mqtt-support-status.md``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from starlette.responses import JSONResponse, Response
from websockets.exceptions import ConnectionClosed

from devstack.webpubsub import RunningWebPubSub
from tests.support.local_service import (
    ACCESS_KEY,
    RELIABLE_PROTOCOL,
    FakeEventHandler,
    ReceivedRequest,
    client_token,
    json_client,
    open_socket,
    refused_handshake,
)
from tests.support.mqtt import MQTT_V5, MQTT_V311, MqttTestClient, mqtt_token

CONNECT = "azure.webpubsub.sys.connect"
CONNECTED = "azure.webpubsub.sys.connected"
DISCONNECTED = "azure.webpubsub.sys.disconnected"
BOTH_VERSIONS = pytest.mark.parametrize("version", [MQTT_V311, MQTT_V5], ids=["3.1.1", "5.0"])
EVERYTHING = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]

MakeClient = Callable[..., MqttTestClient]


@pytest.fixture
def mqtt(service: RunningWebPubSub, hub: str) -> Iterator[MakeClient]:
    """Makes paho clients of this test's hub (token roles as asked); stops them all afterwards."""
    made: list[MqttTestClient] = []

    def make(
        client_id: str = "client1",
        *,
        version: MQTTProtocolVersion = MQTT_V5,
        roles: list[str] | None = None,
        token: str | None = None,
        clean_start: bool = True,
        token_in_header: bool = False,
        **claims: Any,
    ) -> MqttTestClient:
        if token is None:
            if roles is not None:
                claims["role"] = roles
            token = mqtt_token(service.endpoint, hub, ACCESS_KEY, **claims)
        client = MqttTestClient(
            service.endpoint,
            hub,
            token,
            client_id=client_id,
            version=version,
            clean_start=clean_start,
            token_in_header=token_in_header,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()


def rest(
    service: RunningWebPubSub, method: str, path: str, *, content_type: str = "text/plain", **kwargs: Any
) -> httpx.Response:
    """A data-plane REST call signed with the access key, as the service SDKs sign them."""
    url = f"{service.endpoint}/api/hubs/{path}?api-version=2024-01-01"
    if params := kwargs.pop("params", None):
        url += "&" + urlencode(params)  # signed with the query: the token's audience is the whole URL
    token = jwt.encode({"aud": url, "exp": int(time.time()) + 300}, ACCESS_KEY.encode(), algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    if "content" in kwargs:
        headers["Content-Type"] = content_type
    return httpx.request(method, url, headers=headers, timeout=5, **kwargs)


def event_of(handler: FakeEventHandler, ce_type: str, client_id: str) -> ReceivedRequest:
    return handler.wait_for_event(ce_type, client_id)


# ----- the connect event and the CONNACK ----------------------------------------------------


@BOTH_VERSIONS
def test_connect_event_carries_the_mqtt_properties(
    mqtt: MakeClient, event_handler: FakeEventHandler, hub: str, version: MQTTProtocolVersion
) -> None:
    """[EVENTS] System `connect` event: headers and the `mqtt` part of the body."""
    client = mqtt("device1", version=version, sub="alice", roles=EVERYTHING)
    properties = [("region", "eu"), ("region", "us")] if version == MQTT_V5 else None
    connack = client.connect(username="user1", password=b"\x00secret", user_properties=properties)
    assert connack.reason_code == 0
    assert not connack.session_present

    connect = event_of(event_handler, CONNECT, "device1")
    physical = connect.header("ce-physicalConnectionId")
    assert physical
    assert connect.header("ce-sessionId") is None  # "It doesn't exist in the connect event."
    assert connect.header("ce-subprotocol") == "mqtt"
    assert connect.header("ce-userId") == "alice"
    assert connect.header("ce-source") == f"/hubs/{hub}/client/device1/{physical}"
    body = connect.json()
    assert body["mqtt"] == {
        "protocolVersion": 4 if version == MQTT_V311 else 5,
        "cleanStart": True,
        "username": "user1",
        "password": base64.b64encode(b"\x00secret").decode(),  # "Base64-encoded binary data"
        # "Currently, only MQTT 5.0 supports it."
        "userProperties": [{"name": "region", "value": "eu"}, {"name": "region", "value": "us"}]
        if properties
        else None,
    }
    assert body["subprotocols"] == ["mqtt"]
    assert body["claims"]["sub"] == ["alice"]
    assert "access_token" not in body["query"]

    connected = event_of(event_handler, CONNECTED, "device1")
    assert connected.json() == {}
    assert connected.header("ce-physicalConnectionId") == physical
    assert connected.header("ce-sessionId")  # "...includes a new header ce-sessionId"


def test_the_documented_connect_request_without_credentials(mqtt: MakeClient, event_handler: FakeEventHandler) -> None:
    """[EVENTS] The request example's `mqtt` object, byte for byte: a 3.1.1 client without user name."""
    assert mqtt("device1", version=MQTT_V311).connect().v311_code == 0
    assert event_of(event_handler, CONNECT, "device1").json()["mqtt"] == {
        "protocolVersion": 4,
        "cleanStart": True,
        "username": None,
        "password": None,
        "userProperties": None,
    }


def test_the_documented_success_response_sets_user_groups_roles_and_connack_properties(
    mqtt: MakeClient, event_handler: FakeEventHandler, service: RunningWebPubSub, hub: str
) -> None:
    """[EVENTS] Success Response Format: the example answer, and what each property does."""
    event_handler.connect = lambda _: JSONResponse(
        {
            "groups": ["newGroup1"],
            "subProtocol": "mqtt",
            "userId": "userId1",
            "roles": ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"],
            "mqtt": {"userProperties": [{"name": "name1", "value": "value1"}]},
        }
    )
    client = mqtt("device1")  # a token without roles or user: the answer decides
    connack = client.connect()
    assert connack.reason_code == 0
    assert connack.user_properties == [("name1", "value1")]
    assert event_of(event_handler, CONNECTED, "device1").header("ce-userId") == "userId1"
    # "groups ... assigns one or multiple subscriptions with default subscription options"
    assert rest(service, "POST", f"{hub}/groups/newGroup1/:send", content=b"hi").status_code == 202
    message = client.next_message()
    assert (message.topic, message.payload, message.qos) == ("newGroup1", b"hi", 0)
    # the roles: the client may now subscribe and publish anywhere
    assert client.subscribe("other") == [1]
    assert client.publish("other", b"x") == 0


@pytest.mark.parametrize(
    ("version", "status", "body", "code"),
    [
        # the documented error example: 401 with code 138 (Banned), reason and user properties
        (
            MQTT_V5,
            401,
            {"mqtt": {"code": 138, "reason": "banned by server", "userProperties": [{"name": "n", "value": "v"}]}},
            138,
        ),
        (MQTT_V311, 401, {"mqtt": {"code": 5}}, 5),
        (MQTT_V311, 403, {"mqtt": {"code": 4, "reason": "3.1.1 has no reason string"}}, 4),
        # "If the upstream webhook sets an invalid value, clients will receive 'unspecified error'"
        (MQTT_V5, 401, {"mqtt": {"code": 5}}, 0x80),
        (MQTT_V311, 401, {"mqtt": {"code": 135}}, 3),
        # no mqtt code: the status decides
        (MQTT_V5, 401, None, 135),
        (MQTT_V311, 401, None, 5),
        (MQTT_V5, 400, None, 134),
        (MQTT_V311, 400, None, 4),
        (MQTT_V5, 500, None, 136),
        (MQTT_V311, 503, None, 3),
    ],
)
def test_a_refused_connect_sets_the_connack_code(
    mqtt: MakeClient,
    event_handler: FakeEventHandler,
    service: RunningWebPubSub,
    version: MQTTProtocolVersion,
    status: int,
    body: dict[str, Any] | None,
    code: int,
) -> None:
    """[EVENTS] Error Response Format: `mqtt.code` becomes the CONNACK return code (3.1.1) / reason code (5.0)."""
    event_handler.connect = lambda _: (
        JSONResponse(body, status_code=status) if body is not None else Response(status_code=status)
    )
    connack = mqtt("device1", version=version).connect()
    if version == MQTT_V5:
        assert connack.reason_code == code
        assert connack.reason_string == ((body or {}).get("mqtt") or {}).get("reason")
        assert connack.user_properties == ([("n", "v")] if code == 138 else [])
    else:
        assert connack.v311_code == code
        assert connack.reason_string is None
    service.wait_until_quiet()  # no session was made: nothing stays connected
    assert not event_handler.events(CONNECTED)
    assert not event_handler.events(DISCONNECTED)


def test_an_unreachable_event_handler_is_server_unavailable(
    mqtt: MakeClient, service: RunningWebPubSub, event_handler: FakeEventHandler
) -> None:
    from devstack.webpubsub import EventHandlerSettings

    service.service.configure_event_handlers([EventHandlerSettings(url_template="http://127.0.0.1:9/api/eventhandler")])
    assert mqtt("device1", version=MQTT_V311).connect().v311_code == 3
    assert mqtt("device2").connect().reason_code == 136


@pytest.mark.parametrize(
    ("version", "client_id", "code"), [(MQTT_V311, "not-valid", 2), (MQTT_V5, "x" * 129, 133), (MQTT_V5, "a_b", 133)]
)
def test_client_ids_are_letters_and_digits(
    mqtt: MakeClient, event_handler: FakeEventHandler, version: int, client_id: str, code: int
) -> None:
    """[CONNECT] Client ID: 0-9, a-z, A-Z, 1 to 128 characters; refused before any event."""
    connack = mqtt(client_id, version=version).connect()
    assert (connack.v311_code if version == MQTT_V311 else connack.reason_code) == code
    assert not event_handler.events(CONNECT)


def test_a_5_0_client_without_id_gets_one_assigned(mqtt: MakeClient, event_handler: FakeEventHandler) -> None:
    """[STATUS] "Assigned client ID" (MQTT 5.0): it is the connection id upstream."""
    connack = mqtt("").connect()
    assert connack.reason_code == 0
    assert connack.assigned_client_id
    event_of(event_handler, CONNECTED, connack.assigned_client_id)


def test_the_token_may_come_in_the_authorization_header(mqtt: MakeClient, event_handler: FakeEventHandler) -> None:
    """[CONNECT] "you can include the token in the Authorization header in the format Bearer {token}"."""
    assert mqtt("device1", token_in_header=True, sub="bob").connect().reason_code == 0
    assert event_of(event_handler, CONNECT, "device1").header("ce-userId") == "bob"


@pytest.mark.parametrize("case", ["no token", "a default client token", "expired", "another key"])
def test_bad_tokens_are_refused_before_the_upgrade(service: RunningWebPubSub, hub: str, case: str) -> None:
    """Tokens are only good for the client type they were made for (``:generateToken?clientType=MQTT``)."""
    tokens = {
        "no token": None,
        "a default client token": client_token(service.endpoint, hub),
        "expired": mqtt_token(service.endpoint, hub, ACCESS_KEY, expires_in=-600),
        "another key": mqtt_token(service.endpoint, hub, "another-key-that-is-long-enough-for-hs256-0123"),
    }
    url = service.endpoint.replace("http://", "ws://") + f"/clients/mqtt/hubs/{hub}"
    if tokens[case] is not None:
        url += f"?access_token={tokens[case]}"
    status, _ = refused_handshake(url, "mqtt")
    assert status == 401


def test_the_mqtt_subprotocol_is_required(service: RunningWebPubSub, hub: str) -> None:
    token = mqtt_token(service.endpoint, hub, ACCESS_KEY)
    url = service.endpoint.replace("http://", "ws://") + f"/clients/mqtt/hubs/{hub}?access_token={token}"
    assert refused_handshake(url, "json.webpubsub.azure.v1")[0] == 400


def mqtt_socket_url(service: RunningWebPubSub, hub: str) -> str:
    token = mqtt_token(service.endpoint, hub, ACCESS_KEY)
    return service.endpoint.replace("http://", "ws://") + f"/clients/mqtt/hubs/{hub}?access_token={token}"


#: MQTT 3.1.1 §3.1: CONNECT, protocol name "MQTT", level 4, clean session, keep alive 60, client id "c1".
V311_CONNECT = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 60, 0, 2]) + b"c1"


def test_connack_bytes_on_the_wire(service: RunningWebPubSub, hub: str, event_handler: FakeEventHandler) -> None:
    """A hand-written 3.1.1 CONNECT gets the 4-byte CONNACK of §3.2 (accepted, then refused with 5)."""
    with open_socket(mqtt_socket_url(service, hub), "mqtt") as socket:
        assert socket.subprotocol == "mqtt"
        socket.send(V311_CONNECT)
        assert socket.recv(timeout=5) == bytes([0x20, 2, 0, 0])
        socket.send(bytes([0xC0, 0]))  # PINGREQ
        assert socket.recv(timeout=5) == bytes([0xD0, 0])  # PINGRESP
        socket.send(bytes([0xE0, 0]))  # DISCONNECT
    event_handler.connect = lambda _: JSONResponse({"mqtt": {"code": 5}}, status_code=401)
    with open_socket(mqtt_socket_url(service, hub), "mqtt") as socket:
        socket.send(V311_CONNECT[:7])  # a packet may span WebSocket frames
        socket.send(V311_CONNECT[7:])
        assert socket.recv(timeout=5) == bytes([0x20, 2, 0, 5])
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=5)


def test_unsupported_protocol_levels_and_packets_before_connect(service: RunningWebPubSub, hub: str) -> None:
    """MQTT 3.1 (level 3) gets return code 1; a first packet other than CONNECT closes the socket."""
    v31 = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([3, 0x02, 0, 60, 0, 2]) + b"c1"
    with open_socket(mqtt_socket_url(service, hub), "mqtt") as socket:
        socket.send(v31)
        assert socket.recv(timeout=5) == bytes([0x20, 2, 0, 1])
    with open_socket(mqtt_socket_url(service, hub), "mqtt") as socket:
        socket.send(bytes([0xC0, 0]))
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=5)


# ----- permissions: topics are groups --------------------------------------------------------


@BOTH_VERSIONS
def test_without_roles_a_client_may_neither_subscribe_nor_publish(
    mqtt: MakeClient, service: RunningWebPubSub, hub: str, version: MQTTProtocolVersion
) -> None:
    """[CONNECT] "By default MQTT clients don't have any permissions to publish or subscribe to any topics"."""
    listener = mqtt("listener", roles=EVERYTHING)
    listener.connect()
    assert listener.subscribe("room") == [1]
    client = mqtt("device1", version=version)
    client.connect()
    assert client.subscribe("room") == ([0x80] if version == MQTT_V311 else [0x87])
    # 3.1.1 cannot refuse a PUBLISH: it is acknowledged and dropped (MQTT-3.3.5-2)
    assert client.publish("room", b"x") == (0 if version == MQTT_V311 else 0x87)
    assert listener.no_message()
    assert rest(service, "HEAD", f"{hub}/groups/room").status_code == 200  # only the listener's group


def test_group_scoped_roles(mqtt: MakeClient) -> None:
    """[CONNECT] Permissions: `webpubsub.joinLeaveGroup.<group>` and `webpubsub.sendToGroup.<group>`."""
    client = mqtt("device1", roles=["webpubsub.joinLeaveGroup.group2", "webpubsub.sendToGroup.group1"])
    client.connect()
    assert client.subscribe("group2") == [1]
    assert client.subscribe("group1") == [0x87]
    assert client.publish("group1", b"x") == 0
    assert client.publish("group2", b"x") == 0x87


def test_wildcard_and_shared_subscriptions_are_not_supported(mqtt: MakeClient) -> None:
    """[STATUS] Not supported: wildcard subscription, shared subscription, retained messages."""
    client = mqtt("device1", roles=EVERYTHING)
    client.connect()
    assert client.subscribe("room/+") == [0xA2]
    assert client.subscribe("#") == [0xA2]
    assert client.subscribe("$share/g/room") == [0x9E]


# ----- messages across protocols ------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "content_type", "data_type", "data"),
    [
        (MQTT_V5, "application/json", "json", {"a": 1}),
        (MQTT_V5, "text/plain", "text", '{"a": 1}'),
        (MQTT_V5, "application/octet-stream", "binary", base64.b64encode(b'{"a": 1}').decode()),
        (MQTT_V5, None, "binary", base64.b64encode(b'{"a": 1}').decode()),
        (MQTT_V311, None, "binary", base64.b64encode(b'{"a": 1}').decode()),
    ],
)
def test_a_json_client_in_the_group_gets_an_mqtt_publish(
    mqtt: MakeClient,
    service: RunningWebPubSub,
    hub: str,
    version: MQTTProtocolVersion,
    content_type: str | None,
    data_type: str,
    data: Any,
) -> None:
    """[CROSS] Message routing (topic = group) and the content type ↔ data type table (absent / 3.1.1: binary)."""
    with json_client(service, hub, user_id="web", groups=["room"]) as web:
        client = mqtt("device1", version=version, sub="sensor", roles=EVERYTHING)
        client.connect()
        assert client.publish("room", b'{"a": 1}', content_type=content_type) == 0
        frame = web.receive()
    assert frame == {
        "type": "message",
        "from": "group",
        "group": "room",
        "fromUserId": "sensor",
        "dataType": data_type,
        "data": data,
    }


def test_a_reliable_json_client_gets_mqtt_messages_with_sequence_ids(
    mqtt: MakeClient, service: RunningWebPubSub, hub: str
) -> None:
    """[CROSS] QoS: MQTT → reliable Web PubSub clients is always QoS 1 (sequenced, acknowledged)."""
    with json_client(service, hub, protocol=RELIABLE_PROTOCOL, groups=["room"]) as web:
        client = mqtt("device1", roles=EVERYTHING)
        client.connect()
        client.publish("room", b"one", qos=0)
        assert web.receive()["sequenceId"] == 1


@pytest.mark.parametrize("granted", [0, 1, 2])
def test_json_and_rest_messages_reach_mqtt_subscribers_at_min_1_and_granted_qos(
    mqtt: MakeClient, service: RunningWebPubSub, hub: str, granted: int
) -> None:
    """[CROSS] Web PubSub clients → MQTT: Min(1, granted subscription QoS); [REST] published with QoS 1."""
    client = mqtt("device1", roles=EVERYTHING)
    client.connect()
    assert client.subscribe("room", qos=granted) == [granted]
    with json_client(service, hub, roles=["webpubsub.sendToGroup"]) as web:
        web.send({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "hello"})
        message = client.next_message()
    assert (message.topic, message.payload, message.qos, message.content_type) == (
        "room",
        b"hello",
        min(1, granted),
        "text/plain",
    )
    response = rest(service, "POST", f"{hub}/groups/room/:send", json={"b": 2})
    assert response.status_code == 202
    message = client.next_message()
    assert (message.topic, json.loads(message.payload), message.qos, message.content_type) == (
        "room",
        {"b": 2},
        min(1, granted),
        "application/json",
    )


@pytest.mark.parametrize("target", ["connections/device1", "users/alice", ""])
def test_rest_messages_to_a_connection_user_or_all_arrive_on_the_server_messages_topic(
    mqtt: MakeClient, service: RunningWebPubSub, hub: str, target: str
) -> None:
    """[REST] Send to All / User / Connection: "a message with the topic $webpubsub/server/messages"."""
    client = mqtt("device1", version=MQTT_V311, sub="alice")
    client.connect()
    path = f"{hub}/{target}/:send" if target else f"{hub}/:send"
    response = rest(service, "POST", path, content=b"\x01\x02", content_type="application/octet-stream")
    assert response.status_code == 202
    message = client.next_message()
    assert (message.topic, message.payload, message.qos) == ("$webpubsub/server/messages", b"\x01\x02", 1)


def test_rest_group_membership_is_an_mqtt_subscription(mqtt: MakeClient, service: RunningWebPubSub, hub: str) -> None:
    """[REST] Add Connection to Group "adds a subscription"; Remove removes it; Connection Exists sees the session."""
    client = mqtt("device1")
    client.connect()
    assert rest(service, "HEAD", f"{hub}/connections/device1").status_code == 200  # client id = connection id
    assert rest(service, "PUT", f"{hub}/groups/room/connections/device1").status_code == 200
    rest(service, "POST", f"{hub}/groups/room/:send", content=b"in")
    assert client.next_message().payload == b"in"
    assert rest(service, "DELETE", f"{hub}/groups/room/connections/device1").status_code == 204
    rest(service, "POST", f"{hub}/groups/room/:send", content=b"out")
    assert client.no_message()


def test_mqtt_to_mqtt_qos_is_the_smaller_of_publish_and_subscription(mqtt: MakeClient) -> None:
    """MQTT semantics between MQTT clients, QoS 2 included ([STATUS] "exactly once"); 5.0 No Local."""
    publisher = mqtt("publisher", roles=EVERYTHING)
    publisher.connect()
    exact, once = mqtt("exact", roles=EVERYTHING), mqtt("once", version=MQTT_V311, roles=EVERYTHING)
    exact.connect()
    once.connect()
    assert exact.subscribe("room", qos=2) == [2]
    assert once.subscribe("room", qos=0) == [0]
    assert publisher.subscribe("room", qos=2, no_local=True) == [2]
    assert publisher.publish("room", b"q2", qos=2) == 0
    assert exact.next_message().qos == 2
    assert once.next_message().qos == 0
    assert publisher.no_message()  # No Local: its own message is not echoed
    publisher.publish("room", b"q1", qos=1)
    assert exact.next_message().qos == 1


def test_unsubscribe_leaves_the_group(mqtt: MakeClient) -> None:
    listener, publisher = mqtt("listener", roles=EVERYTHING), mqtt("publisher", roles=EVERYTHING)
    listener.connect()
    publisher.connect()
    listener.subscribe("room")
    assert listener.unsubscribe("room") == [0]
    assert listener.unsubscribe("room") == [0x11]  # no subscription existed
    publisher.publish("room", b"x")
    assert listener.no_message()


# ----- sessions and the disconnected event --------------------------------------------------


def test_disconnect_packet_of_a_5_0_client(mqtt: MakeClient, event_handler: FakeEventHandler) -> None:
    """[EVENTS] System `disconnected` event: the documented example's `mqtt` object."""
    client = mqtt("device1")
    client.connect()
    session = event_of(event_handler, CONNECTED, "device1").header("ce-sessionId")
    client.disconnect(user_properties=[("name1", "value1")])
    disconnected = event_of(event_handler, DISCONNECTED, "device1")
    assert disconnected.header("ce-sessionId") == session
    assert disconnected.json() == {
        "reason": None,  # "It may be null if it's a normal disconnection."
        "mqtt": {
            "initiatedByClient": True,
            "disconnectPacket": {"code": 0, "userProperties": [{"name": "name1", "value": "value1"}]},
        },
    }


def test_disconnect_packet_of_a_3_1_1_client(mqtt: MakeClient, event_handler: FakeEventHandler) -> None:
    """[EVENTS] "For MQTT 3.1.1 clients ... this property defaults to 0"; no user properties."""
    client = mqtt("device1", version=MQTT_V311)
    client.connect()
    client.disconnect()
    assert event_of(event_handler, DISCONNECTED, "device1").json()["mqtt"] == {
        "initiatedByClient": True,
        "disconnectPacket": {"code": 0, "userProperties": None},
    }


def test_a_lost_network_has_no_disconnect_packet_and_publishes_the_will(
    mqtt: MakeClient, event_handler: FakeEventHandler
) -> None:
    """[EVENTS] disconnectPacket "is null when the connection is disconnected without ... a DISCONNECT
    packet, for example, due to an IO error"; [STATUS] last will & testament."""
    listener = mqtt("listener", roles=EVERYTHING)
    listener.connect()
    listener.subscribe("status")
    client = mqtt("device1", version=MQTT_V311, roles=EVERYTHING)
    client.connect(will=("status", b"device1 is gone", 1))
    client.drop()
    body = event_of(event_handler, DISCONNECTED, "device1").json()
    assert body["mqtt"] == {"initiatedByClient": False, "disconnectPacket": None}
    assert body["reason"]
    will = listener.next_message()
    assert (will.topic, will.payload) == ("status", b"device1 is gone")


def test_a_normal_disconnect_discards_the_will(mqtt: MakeClient, event_handler: FakeEventHandler) -> None:
    listener = mqtt("listener", roles=EVERYTHING)
    listener.connect()
    listener.subscribe("status")
    client = mqtt("device1", roles=EVERYTHING)
    client.connect(will=("status", b"gone", 1))
    client.disconnect()
    event_of(event_handler, DISCONNECTED, "device1")
    assert listener.no_message()


def test_closing_by_rest_sends_a_5_0_disconnect(
    mqtt: MakeClient, service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    """[REST] Close Connections "ends the specified sessions": DISCONNECT 0x98 (administrative action)."""
    client = mqtt("device1")
    client.connect()
    assert rest(service, "DELETE", f"{hub}/connections/device1", params={"reason": "bye"}).status_code == 204
    assert client.disconnects.get(timeout=5) == (0x98, "bye")
    assert event_of(event_handler, DISCONNECTED, "device1").json() == {
        "reason": "bye",
        "mqtt": {"initiatedByClient": False, "disconnectPacket": {"code": 0x98, "userProperties": None}},
    }


def test_a_session_survives_its_socket_for_the_expiry_interval(
    mqtt: MakeClient, event_handler: FakeEventHandler, service: RunningWebPubSub, hub: str
) -> None:
    """[EVENTS] `connected` only for a new session ("If a client connects to an existing session, there is
    no upstream call"), `connect` for every CONNECT; [STATUS] persistent sessions keep QoS 1 messages."""
    first = mqtt("device1", clean_start=False, roles=EVERYTHING)
    assert not first.connect(session_expiry=2).session_present
    first.subscribe("room", qos=1)
    first.disconnect()
    rest(service, "POST", f"{hub}/groups/room/:send", content=b"while away")
    time.sleep(0.3)
    assert not event_handler.events(DISCONNECTED, "device1")  # the session is kept

    second = mqtt("device1", clean_start=False)
    connack = second.connect(session_expiry=1)
    assert connack.session_present
    message = second.next_message()
    assert (message.topic, message.payload, message.qos) == ("room", b"while away", 1)
    assert len(event_handler.events(CONNECT, "device1")) == 2
    assert len(event_handler.events(CONNECTED, "device1")) == 1
    sessions = {event.header("ce-sessionId") for event in event_handler.events(connection_id="device1")}
    assert len(sessions - {None}) == 1

    second.disconnect()
    event_of(
        event_handler,
        DISCONNECTED,
        "device1",
    )  # after its 1 s expiry
    assert len(event_handler.events(DISCONNECTED, "device1")) == 1


def test_clean_start_replaces_the_session_and_takes_the_client_id_over(
    mqtt: MakeClient, event_handler: FakeEventHandler
) -> None:
    """MQTT 5.0 §3.1.4: a second connection with the client id takes over (DISCONNECT 0x8E)."""
    first = mqtt("device1")
    first.connect()
    second = mqtt("device1")
    assert not second.connect().session_present
    assert first.disconnects.get(timeout=5)[0] == 0x8E
    assert event_of(event_handler, DISCONNECTED, "device1").json()["mqtt"]["disconnectPacket"] == {
        "code": 0x8E,
        "userProperties": None,
    }
    # Two sessions; connected is delivered asynchronously, so the second may still be on its way.
    event_handler.wait_for(lambda _: len(event_handler.events(CONNECTED, "device1")) >= 2)
    assert len(event_handler.events(CONNECTED, "device1")) == 2


# ----- requests to the event handler --------------------------------------------------------


def test_publishing_to_the_events_topic_calls_the_event_handler(
    mqtt: MakeClient, event_handler: FakeEventHandler
) -> None:
    """[EVENTS] User `{custom_event}` Event: request and response mapping, correlation data, `mqtt-` headers."""

    def answer(request: ReceivedRequest) -> Response:
        assert request.body == b'{"q": 1}'
        return Response(
            b'{"answer": 42}',
            media_type="application/json",
            headers={"mqtt-response-property-1": "response-property-value1"},
        )

    event_handler.user_event = answer
    client = mqtt("device1")  # no roles needed: "The client can send event requests."
    client.connect()
    client.subscribe("$webpubsub/server/events/ask/succeeded")
    assert (
        client.publish(
            "$webpubsub/server/events/ask",
            b'{"q": 1}',
            content_type="application/json",
            user_properties=[("request-property-1", "request-property-value1")],
            correlation_data=b"req-7",
        )
        == 0
    )
    request = event_of(event_handler, "azure.webpubsub.user.ask", "device1")
    assert request.header("content-type") == "application/json"
    assert request.header("mqtt-request-property-1") == "request-property-value1"
    assert request.header("ce-sessionId")
    assert request.header("ce-physicalConnectionId")
    response = client.next_message()
    assert response.topic == "$webpubsub/server/events/ask/succeeded"
    assert json.loads(response.payload) == {"answer": 42}
    assert response.content_type == "application/json"
    assert response.correlation_data == b"req-7"
    assert response.user_properties == [
        ("response-property-1", "response-property-value1"),
        ("azure-status-code", "200"),
    ]


def test_a_failing_event_handler_answers_on_the_failed_topic(mqtt: MakeClient, event_handler: FakeEventHandler) -> None:
    event_handler.user_event = lambda _: Response("no such thing", status_code=404, media_type="text/plain")
    client = mqtt("device1", version=MQTT_V311)
    client.connect()
    client.publish("$webpubsub/server/events/ask", b"?")
    response = client.next_message()
    assert (response.topic, response.payload) == ("$webpubsub/server/events/ask/failed", b"no such thing")
