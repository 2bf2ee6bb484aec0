"""The product end to end, as `make run` starts it: the real app behind the local Functions host,
the local Web PubSub service sending its events to the app, and the official Python client
(azure-messaging-webpubsubclient, unmodified) getting every URL from /api/negotiate.

Nothing here fakes the app: its settings are local.settings.json.example's (connection string,
anonymous negotiate, group `chat`), and every event is checked by the app's own signature
validation before it is answered.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import (
    OpenClientError,
    SendMessageError,
    WebPubSubDataType,
)

from devstack.__main__ import RunningStack
from devstack.webpubsub import RunningWebPubSub, UpstreamRecord
from tests.support.chat import ChatClient, chat_client, negotiator, service_of
from tests.support.stack import running_stack

HUB = "chat"
GROUP = "chat"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    with running_stack(tmp_path) as running:
        yield running


def events_of(service: RunningWebPubSub, connection_id: str) -> list[UpstreamRecord]:
    return [record for record in service.upstream_log.records() if record.connection_id == connection_id]


def test_official_client_negotiates_joins_sends_and_receives_and_the_app_sees_every_event(
    stack: RunningStack,
) -> None:
    service = service_of(stack)
    with chat_client(negotiator(stack, "alice")) as alice, chat_client(negotiator(stack, "bob")) as bob:
        alice_id = alice.connection_id()
        bob.connection_id()
        alice.client.join_group(GROUP)
        bob.client.join_group(GROUP)
        alice.client.send_to_group(GROUP, "hello bob", WebPubSubDataType.TEXT, no_echo=True)
        bob.client.send_to_group(GROUP, {"text": "hi alice"}, WebPubSubDataType.JSON)

        to_bob = bob.group_messages.get(timeout=10)
        assert (to_bob.group, to_bob.from_user_id, to_bob.data) == (GROUP, "alice", "hello bob")
        to_alice = alice.group_messages.get(timeout=10)
        assert (to_alice.from_user_id, to_alice.data) == ("bob", {"text": "hi alice"})
        alice.client.send_event("message", "for the app", WebPubSubDataType.TEXT)

    service.upstream_log.wait_for(
        lambda record: record.connection_id == alice_id and record.event_name == "disconnected", timeout=10
    )
    events = events_of(service, alice_id)
    assert [record.event_name for record in events] == ["connect", "connected", "message", "disconnected"]
    for record in events:  # the app answered each one after checking its ce-signature
        assert record.url == stack.url("eventhandler")
        assert (record.outcome, record.status) == ("delivered", 200 if record.event_name == "connect" else 204)


def test_a_forged_signature_is_refused_by_the_app(stack: RunningStack) -> None:
    """The control for the test above: the app's answers depend on the signature being right."""
    connection_id = f"forged-{uuid.uuid4().hex}"
    response = httpx.post(
        stack.url("eventhandler"),
        headers={
            "ce-specversion": "1.0",
            "ce-type": "azure.webpubsub.sys.connect",
            "ce-source": f"/hubs/{HUB}/client/{connection_id}",
            "ce-id": "1",
            "ce-awpsversion": "1.0",
            "ce-hub": HUB,
            "ce-connectionId": connection_id,
            "ce-eventName": "connect",
            "ce-userId": "mallory",
            "ce-signature": "sha256=" + "0" * 64,
            "WebHook-Request-Origin": service_of(stack).endpoint.split("//", 1)[1],
            "Content-Type": "application/json",
        },
        content=json.dumps({"claims": {}, "query": {}, "subprotocols": [], "clientCertificates": []}),
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"]


def test_a_client_without_the_groups_role_gets_a_forbidden_ack(stack: RunningStack) -> None:
    with chat_client(negotiator(stack, "carol", GROUP), message_retry_total=0) as carol:
        carol.connection_id()
        with pytest.raises(SendMessageError) as joined:
            carol.client.join_group("staff")  # not in NEGOTIATE_GROUPS, so negotiate granted no role for it
        assert joined.value.error_detail is not None
        assert joined.value.error_detail.name == "Forbidden"
        with pytest.raises(SendMessageError) as sent:
            carol.client.send_to_group("staff", "let me in", WebPubSubDataType.TEXT)
        assert sent.value.error_detail is not None
        assert sent.value.error_detail.name == "Forbidden"


def expired_copy(url: str) -> str:
    """The same client URL with its token expired an hour ago, signed with the same key."""
    base, token = url.split("access_token=", 1)
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    return f"{base}access_token={jwt.encode(claims, _access_key_of_this_run(), algorithm='HS256')}"


def _access_key_of_this_run() -> str:
    """The key the app signs with: the one in the connection string the stack gave it."""
    parts = dict(part.split("=", 1) for part in os.environ["WEBPUBSUB_CONNECTION_STRING"].strip(";").split(";"))
    return str(parts["AccessKey"])


def test_an_expired_token_gets_401_and_the_client_recovers_by_negotiating_again(stack: RunningStack) -> None:
    negotiate = negotiator(stack, "dave", GROUP)
    urls = iter([expired_copy(negotiate())])
    client = ChatClient(lambda: next(urls, None) or negotiate(), reconnect_retry_total=0)
    with pytest.raises(OpenClientError, match="401"):
        client.client.open()
    assert client.connected.empty()

    client.client.open()  # asks its URL source again: a fresh negotiate
    try:
        assert client.connected.get(timeout=10).user_id == "dave"
        assert client.client.is_connected()
    finally:
        client.client.close()


def test_the_reliable_subprotocol_recovers_a_dropped_connection_without_losing_messages(stack: RunningStack) -> None:
    service = service_of(stack)
    with chat_client(negotiator(stack, "erin", GROUP)) as erin, chat_client(negotiator(stack, "gina", GROUP)) as gina:
        connection_id = erin.connection_id()
        gina.connection_id()
        assert service.service.call(lambda: service.service.connections.drop_transport(connection_id))
        sent = ["sent", "while", "the", "socket", "was", "down"]
        for text in sent:
            gina.client.send_to_group(GROUP, text, WebPubSubDataType.TEXT, no_echo=True)
        received = [erin.group_messages.get(timeout=15) for _ in sent]
        assert [(message.from_user_id, message.data) for message in received] == [("gina", text) for text in sent]
        assert erin.client.is_connected()
        assert erin.connected.empty()  # recovered the same connection, not a new one

    connects = [record.connection_id for record in service.upstream_log.records() if record.event_name == "connect"]
    assert connects.count(connection_id) == 1


def test_a_connect_the_app_refuses_reaches_the_client_as_the_handshake_status(stack: RunningStack) -> None:
    """A token the service accepts but the app's policy does not (minted before the groups changed)."""
    negotiate = negotiator(stack, "frank", GROUP)
    url = negotiate()
    base, token = url.split("access_token=", 1)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["role"] = ["webpubsub.joinLeaveGroup.retired", "webpubsub.sendToGroup.retired"]
    stale = f"{base}access_token={jwt.encode(claims, _access_key_of_this_run(), algorithm='HS256')}"

    client = WebPubSubClient(stale, start_timeout=10, reconnect_retry_total=0)
    with pytest.raises(OpenClientError, match="403"):
        client.open()
    refused = service_of(stack).upstream_log.wait_for(lambda record: record.event_name == "connect", timeout=10)
    assert (refused.status, refused.outcome) == (403, "rejected")
