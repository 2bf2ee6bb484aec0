"""One app serving two hubs end to end: the local Functions host and Web PubSub service as `make run`
starts them, with local.settings.json.example's settings plus `WEBPUBSUB_HUBS="chat notifications"`
and `NEGOTIATE_GROUPS_notifications=alerts`, and the official Python client on each hub.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    OnGroupDataMessageArgs,
    OpenClientError,
    SendMessageError,
    WebPubSubDataType,
)

from devstack.__main__ import RunningStack
from devstack.webpubsub import RunningWebPubSub
from tests.support.fakes import EMULATOR_KEY
from tests.support.stack import running_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    with running_stack(
        tmp_path, WEBPUBSUB_HUBS="chat notifications", NEGOTIATE_GROUPS_notifications="alerts"
    ) as running:
        yield running


def service_of(stack: RunningStack) -> RunningWebPubSub:
    assert stack.service is not None
    return stack.service


def url_source(stack: RunningStack, user_id: str, hub: str) -> str:
    response = httpx.get(stack.url("negotiate"), params={"userId": user_id, "hub": hub})
    assert response.status_code == 200, response.text
    return str(response.json()["url"])


def client_on(stack: RunningStack, user_id: str, hub: str) -> WebPubSubClient:
    return WebPubSubClient(
        WebPubSubClientCredential(lambda: url_source(stack, user_id, hub)),
        start_timeout=10,
        ack_timeout=1.0,
        message_retry_total=0,
    )


def test_each_hub_has_its_own_groups_and_only_served_hubs_get_in(stack: RunningStack) -> None:
    service = service_of(stack)
    received: queue.Queue[OnGroupDataMessageArgs] = queue.Queue()
    alice, bob, carol = (
        client_on(stack, "alice", "notifications"),
        client_on(stack, "bob", "notifications"),
        client_on(stack, "carol", "chat"),
    )
    bob.subscribe(CallbackType.GROUP_MESSAGE, received.put)
    with alice, bob, carol:
        bob.join_group("alerts")
        alice.send_to_group("alerts", "disk full", WebPubSubDataType.TEXT)
        message = received.get(timeout=10)
        assert (message.group, message.from_user_id, message.data) == ("alerts", "alice", "disk full")
        with pytest.raises(SendMessageError):  # chat's groups are not the notifications hub's
            alice.join_group("chat")
        with pytest.raises(SendMessageError):
            carol.join_group("alerts")
        carol.join_group("chat")

    connects = [record for record in service.upstream_log.records() if record.event_name == "connect"]
    assert sorted((record.hub, record.status) for record in connects) == [
        ("chat", 200),
        ("notifications", 200),
        ("notifications", 200),
    ]


def test_a_hub_the_app_does_not_serve_is_refused_at_negotiate_and_at_connect(stack: RunningStack) -> None:
    response = httpx.get(stack.url("negotiate"), params={"userId": "mallory", "hub": "lobby"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_hub"

    # A token for the unserved hub, signed with the service's key: the service takes it, the app does not.
    base, token = url_source(stack, "mallory", "chat").split("access_token=", 1)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["aud"] = str(claims["aud"]).replace("/hubs/chat", "/hubs/lobby")
    lobby = f"{base.replace('/hubs/chat', '/hubs/lobby')}access_token={jwt.encode(claims, EMULATOR_KEY)}"
    with pytest.raises(OpenClientError, match="400"):
        WebPubSubClient(lobby, start_timeout=10, reconnect_retry_total=0).open()
    refused = service_of(stack).upstream_log.wait_for(
        lambda record: record.hub == "lobby" and record.event_name == "connect", timeout=10
    )
    assert (refused.status, refused.outcome) == (400, "rejected")
