"""The app talks back, end to end: the server-side client and the publish API against `make run`'s stack,
with the official Python client receiving what the server sends.

Every operation goes app -> SDK -> local Web PubSub service -> client WebSocket; the local service's
REST semantics follow the real service's (tests/devstack/test_rest.py pins them with their sources).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.messaging.webpubsubclient.models import SendMessageError, WebPubSubDataType

from devstack.__main__ import RunningStack
from shared.config import load_settings
from shared.errors import NotFound
from shared.events import EventHandlers
from shared.protocol import ConnectedEvent
from shared.runtime import Runtime, use_runtime
from shared.service_client import Permission, get_async_service_client, get_service_client
from tests.support.chat import chat_client, negotiator, service_of
from tests.support.stack import running_stack

GROUP = "chat"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    with running_stack(tmp_path) as running:
        yield running


def publish(stack: RunningStack, route: str, body: object) -> httpx.Response:
    return httpx.post(stack.url(route), json=body, timeout=10)


def test_the_server_reaches_a_connection_a_user_a_group_and_everyone(stack: RunningStack) -> None:
    service = get_service_client()
    with (
        chat_client(negotiator(stack, "alice")) as alice,
        chat_client(negotiator(stack, "bob")) as bob,
    ):
        alice_id = alice.connection_id()
        bob.connection_id()
        bob.client.join_group(GROUP)

        service.send_to_connection(alice_id, "just you")
        assert alice.server_messages.get(timeout=10).data == "just you"

        service.send_to_user("bob", {"notice": "for bob"})
        to_bob = bob.server_messages.get(timeout=10)
        assert (to_bob.data_type, to_bob.data) == (WebPubSubDataType.JSON, {"notice": "for bob"})

        # A REST message to a group reaches its members as a message from the server, not from a group member.
        service.send_to_group(GROUP, b"\x00\x01binary")
        in_group = bob.server_messages.get(timeout=10)
        assert (in_group.data_type, in_group.data) == (WebPubSubDataType.BINARY, b"\x00\x01binary")
        assert alice.no_more_server_messages()  # alice never joined

        service.send_to_all("everyone", excluded=[alice_id])
        assert bob.server_messages.get(timeout=10).data == "everyone"
        assert alice.no_more_server_messages()


def test_membership_closing_and_permissions_take_effect_at_the_service(stack: RunningStack) -> None:
    service = get_service_client()
    with chat_client(negotiator(stack, "carol")) as carol, chat_client(negotiator(stack, "dave")) as dave:
        carol_id = carol.connection_id()
        dave.connection_id()

        service.add_user_to_group("moderators", "carol")
        assert service.group_exists("moderators")
        service.send_to_group("moderators", "mods only")
        assert carol.server_messages.get(timeout=10).data == "mods only"
        assert dave.no_more_server_messages()

        service.remove_user_from_all_groups("carol")
        assert not service.group_exists("moderators")

        assert service.has_permission(Permission.SEND_TO_GROUP, carol_id, GROUP)  # from the token's roles
        service.revoke_permission(Permission.SEND_TO_GROUP, carol_id, GROUP)
        assert not service.has_permission(Permission.SEND_TO_GROUP, carol_id, GROUP)
        with pytest.raises(SendMessageError):  # the service itself now refuses carol's send
            carol.client.send_to_group(GROUP, "after the revoke", WebPubSubDataType.TEXT)
        service.grant_permission(Permission.SEND_TO_GROUP, carol_id, GROUP)
        carol.client.send_to_group(GROUP, "after the grant", WebPubSubDataType.TEXT)

        service.close_connection(carol_id, reason="moderated")
        assert carol.disconnected.get(timeout=10) is not None
        assert not service.connection_exists(carol_id)
        assert service.user_exists("dave")


def test_a_user_without_connections_cannot_be_added_to_a_group(stack: RunningStack) -> None:
    """The real service answers 404 Warning.User.NotExisted (webpubsub-rest-behaviour.md): a NotFound here."""
    with pytest.raises(NotFound):
        get_service_client().add_user_to_group(GROUP, "nobody-here")


def test_the_publish_api_sends_to_a_group_and_closes_a_users_connections(stack: RunningStack) -> None:
    with chat_client(negotiator(stack, "erin")) as erin:
        erin.connection_id()
        erin.client.join_group(GROUP)

        sent = publish(stack, "messages", {"to": {"group": GROUP}, "data": "from the CRM"})
        assert sent.status_code == 202, sent.text
        assert sent.json() == {"hub": "chat", "to": {"group": GROUP}, "dataType": "text", "bytes": 12}
        assert erin.server_messages.get(timeout=10).data == "from the CRM"

        binary = publish(
            stack,
            "messages",
            {"to": {"user": "erin"}, "data": base64.b64encode(b"\xff\x00").decode(), "dataType": "binary"},
        )
        assert binary.status_code == 202, binary.text
        assert erin.server_messages.get(timeout=10).data == b"\xff\x00"

        exists = publish(stack, "connections", {"action": "exists", "to": {"user": "erin"}})
        assert exists.json()["exists"] is True
        closed = publish(stack, "connections", {"action": "close", "to": {"user": "erin"}, "reason": "bye"})
        assert closed.status_code == 204, closed.text
        assert erin.disconnected.get(timeout=10) is not None
    service_of(stack)  # the stack kept serving throughout


def test_the_publish_api_manages_groups_and_permissions(stack: RunningStack) -> None:
    with chat_client(negotiator(stack, "frank")) as frank:
        frank_id = frank.connection_id()
        added = publish(stack, "groups", {"action": "add", "group": "vip", "connection": frank_id})
        assert added.status_code == 204, added.text
        publish(stack, "messages", {"to": {"group": "vip"}, "data": {"offer": 1}})
        assert frank.server_messages.get(timeout=10).data == {"offer": 1}

        check = publish(
            stack,
            "permissions",
            {"action": "check", "permission": "joinLeaveGroup", "connection": frank_id, "group": "vip"},
        )
        assert check.status_code == 200, check.text
        assert check.json()["granted"] is False
        granted = publish(
            stack,
            "permissions",
            {"action": "grant", "permission": "joinLeaveGroup", "connection": frank_id, "group": "vip"},
        )
        assert granted.status_code == 204
        again = publish(
            stack,
            "permissions",
            {"action": "check", "permission": "joinLeaveGroup", "connection": frank_id, "group": "vip"},
        )
        assert again.json()["granted"] is True

        missing = publish(stack, "groups", {"action": "add", "group": "vip", "user": "nobody-here"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


def test_presence_lists_the_users_online_in_a_group(stack: RunningStack) -> None:
    with (
        chat_client(negotiator(stack, "gina", GROUP)) as gina,
        chat_client(negotiator(stack, "gina", GROUP)) as gina_again,
        chat_client(negotiator(stack, "hank", GROUP)) as hank,
    ):
        for client in (gina, gina_again, hank):
            client.connection_id()
        response = httpx.get(stack.url(f"groups/{GROUP}/users"), params={"userId": "hank"})
        assert response.status_code == 200, response.text
        assert response.json() == {
            "hub": "chat",
            "group": GROUP,
            "users": [{"userId": "gina", "connections": 2}, {"userId": "hank", "connections": 1}],
            "next": None,
            "connections": 3,
            "truncated": False,
        }
        first = httpx.get(stack.url(f"groups/{GROUP}/users"), params={"userId": "hank", "top": "1"}).json()
        assert (first["users"], first["next"]) == ([{"userId": "gina", "connections": 2}], "gina")
        rest = httpx.get(
            stack.url(f"groups/{GROUP}/users"), params={"userId": "hank", "top": "1", "after": "gina"}
        ).json()
        assert (rest["users"], rest["next"]) == ([{"userId": "hank", "connections": 1}], None)

        outside = httpx.get(stack.url("groups/secret/users"), params={"userId": "hank"})
        assert outside.status_code == 403
        assert outside.json()["error"]["code"] == "group_not_permitted"


def test_an_async_handler_talks_back_through_the_async_client(tmp_path: Path) -> None:
    registry = EventHandlers()

    @registry.on_connected
    async def greet(event: ConnectedEvent) -> None:
        service = get_async_service_client(event.context.hub)
        assert await service.connection_exists(event.context.connection_id)
        await service.send_to_connection(event.context.connection_id, {"greeting": event.context.user_id})

    with running_stack(tmp_path) as stack:
        use_runtime(Runtime(load_settings(os.environ), registry=registry))
        try:
            with chat_client(negotiator(stack, "ivy")) as ivy:
                ivy.connection_id()
                assert ivy.server_messages.get(timeout=10).data == {"greeting": "ivy"}
        finally:
            use_runtime(None)
