"""The JSON subprotocols between clients and the service: groups, acks, permissions, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.webpubsub import RunningWebPubSub
from tests.support.local_service import JSON_PROTOCOL, client_token, client_url, close_code, json_client, open_socket

GROUP_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def test_join_send_and_receive_in_a_group_with_acks(service: RunningWebPubSub, hub: str) -> None:
    with json_client(service, hub, user_id="alice", roles=GROUP_ROLES) as alice:
        assert alice.request({"type": "joinGroup", "group": "room", "ackId": 1}) == {
            "type": "ack",
            "ackId": 1,
            "success": True,
        }
        alice.send({"type": "sendToGroup", "group": "room", "ackId": 2, "dataType": "text", "data": "hi"})
        assert alice.receive() == {
            "type": "message",
            "from": "group",
            "group": "room",
            "fromUserId": "alice",
            "dataType": "text",
            "data": "hi",
        }
        assert alice.receive() == {"type": "ack", "ackId": 2, "success": True}


def test_group_messages_fan_out_to_every_member_in_every_data_type(service: RunningWebPubSub, hub: str) -> None:
    with (
        json_client(service, hub, user_id="alice", roles=GROUP_ROLES) as alice,
        json_client(service, hub, user_id="bob", roles=GROUP_ROLES) as bob,
        json_client(service, hub, user_id="carol", roles=GROUP_ROLES) as outsider,
    ):
        for client in (alice, bob):
            assert client.request({"type": "joinGroup", "group": "room", "ackId": 1})["success"] is True
        messages = [("text", "plain words"), ("json", {"n": [1, 2], "s": "x"}), ("binary", "AAEC/w==")]
        for ack_id, (data_type, data) in enumerate(messages, start=10):
            alice.send({"type": "sendToGroup", "group": "room", "dataType": data_type, "data": data, "ackId": ack_id})
            received = bob.receive()
            assert (received["dataType"], received["data"], received["fromUserId"]) == (data_type, data, "alice")
        assert outsider.request({"type": "ping"}) == {"type": "pong"}  # nothing was queued before the pong


def test_no_echo_skips_the_sender_only(service: RunningWebPubSub, hub: str) -> None:
    with (
        json_client(service, hub, user_id="alice", roles=GROUP_ROLES, groups=["room"]) as alice,
        json_client(service, hub, user_id="bob", groups=["room"]) as bob,
    ):
        alice.send(
            {"type": "sendToGroup", "group": "room", "noEcho": True, "dataType": "text", "data": "x", "ackId": 5}
        )
        # Delivery to members happens before the ack is written, so an echo would come first.
        assert alice.receive() == {"type": "ack", "ackId": 5, "success": True}
        assert bob.receive()["data"] == "x"


def test_repeated_ack_id_is_answered_duplicate(service: RunningWebPubSub, hub: str) -> None:
    with json_client(service, hub, roles=GROUP_ROLES) as client:
        assert client.request({"type": "joinGroup", "group": "g", "ackId": 7})["success"] is True
        duplicate = client.request({"type": "joinGroup", "group": "g", "ackId": 7})
        assert duplicate["success"] is False
        assert duplicate["error"]["name"] == "Duplicate"
        assert duplicate["error"]["message"]


def test_missing_roles_are_forbidden(service: RunningWebPubSub, hub: str) -> None:
    with json_client(service, hub) as client:
        join = client.request({"type": "joinGroup", "group": "g", "ackId": 1})
        send = client.request({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x", "ackId": 2})
        leave = client.request({"type": "leaveGroup", "group": "g", "ackId": 3})
    for ack in (join, send, leave):
        assert ack["success"] is False
        assert ack["error"]["name"] == "Forbidden"


def test_a_forbidden_request_can_be_retried_with_the_same_ack_id_once_allowed(
    service: RunningWebPubSub, hub: str
) -> None:
    """Only successful requests count as processed, as in the emulator."""
    with json_client(service, hub, roles=["webpubsub.joinLeaveGroup.allowed"]) as client:
        assert client.request({"type": "joinGroup", "group": "denied", "ackId": 1})["error"]["name"] == "Forbidden"
        assert client.request({"type": "joinGroup", "group": "allowed", "ackId": 1})["success"] is True


@pytest.mark.parametrize(
    ("roles", "group", "allowed"),
    [
        (["webpubsub.sendToGroup.room"], "room", True),
        (["webpubsub.sendToGroup.room"], "other", False),
        (["webpubsub.sendToGroups.chat.*"], "chat.lobby", True),
        (["webpubsub.sendToGroups.chat.*"], "chat.lobby.inner", False),
        (["webpubsub.sendToGroups.chat.**"], "chat.lobby.inner", True),
        (["webpubsub.sendToGroups.room?"], "room7", True),
        (["webpubsub.joinLeaveGroup"], "room", False),
    ],
)
def test_group_send_permissions_follow_roles(
    service: RunningWebPubSub, hub: str, roles: list[str], group: str, allowed: bool
) -> None:
    with json_client(service, hub, roles=roles) as client:
        ack = client.request({"type": "sendToGroup", "group": group, "dataType": "text", "data": "x", "ackId": 1})
    assert ack["success"] is allowed


def test_groups_from_the_token_are_joined_at_connect(service: RunningWebPubSub, hub: str) -> None:
    with (
        json_client(service, hub, groups="lobby") as listener,
        json_client(service, hub, roles=GROUP_ROLES) as sender,
    ):
        sender.send({"type": "sendToGroup", "group": "lobby", "dataType": "json", "data": {"ok": True}})
        assert listener.receive()["data"] == {"ok": True}


def test_leave_group_stops_delivery(service: RunningWebPubSub, hub: str) -> None:
    with (
        json_client(service, hub, roles=GROUP_ROLES, groups=["g"]) as leaver,
        json_client(service, hub, roles=GROUP_ROLES, groups=["g"]) as sender,
    ):
        assert leaver.request({"type": "leaveGroup", "group": "g", "ackId": 1})["success"] is True
        assert (
            sender.request({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x", "ackId": 2})["from"]
            == "group"
        )  # the sender's own echo
        assert leaver.request({"type": "ping"}) == {"type": "pong"}


def test_invalid_requests_with_ack_id_get_bad_request(service: RunningWebPubSub, hub: str) -> None:
    invalid_requests: list[dict[str, Any]] = [
        {"type": "joinGroup", "group": " "},
        {"type": "sendToGroup", "group": "g", "dataType": "text", "data": 5},
        {"type": "sendToGroup", "group": "g", "dataType": "binary", "data": "not base64!"},
        {"type": "event", "event": "bad name!", "dataType": "text", "data": "x"},
        {"type": "somethingNew"},
    ]
    with json_client(service, hub, roles=GROUP_ROLES) as client:
        for ack_id, frame in enumerate(invalid_requests, start=1):
            ack = client.request({**frame, "ackId": ack_id})
            assert (ack["ackId"], ack["success"], ack["error"]["name"]) == (ack_id, False, "BadRequest")


def test_ping_is_answered_with_pong(service: RunningWebPubSub, hub: str) -> None:
    with json_client(service, hub) as client:
        assert client.request({"type": "ping"}) == {"type": "pong"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [("this is not json", 1007), (b"\x00binary", 1003), (json.dumps({"no": "type"}), 1007)],
)
def test_frames_that_are_not_protocol_messages_close_the_connection(
    service: RunningWebPubSub, hub: str, frame: str | bytes, code: int
) -> None:
    with json_client(service, hub) as client:
        client.connection.send(frame)
        assert close_code(client.connection) == code


def test_frames_over_one_megabyte_are_refused(service: RunningWebPubSub, hub: str) -> None:
    token = client_token(service.endpoint, hub)
    with open_socket(client_url(service, hub, token), JSON_PROTOCOL, max_size=None) as client:
        client.recv(timeout=5)
        client.send(json.dumps({"type": "event", "event": "big", "dataType": "text", "data": "x" * (1024 * 1024)}))
        assert close_code(client) == 1009
