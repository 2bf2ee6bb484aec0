"""The official Python client SDK (azure-messaging-webpubsubclient), unmodified, against the local service."""

from __future__ import annotations

import gc
import queue
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    OnConnectedArgs,
    OnGroupDataMessageArgs,
    OnServerDataMessageArgs,
    OpenClientError,
    SendMessageError,
    WebPubSubDataType,
)
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from starlette.responses import Response

from devstack.webpubsub import RunningWebPubSub
from tests.support.events import sign
from tests.support.local_service import ACCESS_KEY, FakeEventHandler, ReceivedRequest, client_token, client_url

GROUP_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture(autouse=True)
def _collect_sockets_the_client_library_leaks() -> Iterator[None]:
    """Close, quietly, the sockets websocket-client leaves open.

    When the *server* closes a connection, websocket-client (under the official client) answers
    the close frame and then skips closing its socket; only the garbage collector closes it, with
    a ResourceWarning that would surface in whichever test happens to run then. Collecting here,
    with exactly that warning ignored, keeps it attributed to this module and out of the others.
    """
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


class RecordingClient:
    """An official client whose callbacks feed queues the test can wait on.

    ``ack_timeout`` is short because the client has a lost-wakeup race: an ack that arrives
    before the sending thread starts waiting is only noticed when the wait times out (30 s by
    default). Against a local service acks are fast enough to hit it now and then; the result is
    still correct, only late.
    """

    def __init__(self, url_provider: Callable[[], str], **options: Any) -> None:
        options.setdefault("ack_timeout", 1.0)
        self.client = WebPubSubClient(WebPubSubClientCredential(url_provider), start_timeout=10, **options)
        self.connected: queue.Queue[OnConnectedArgs] = queue.Queue()
        self.group_messages: queue.Queue[OnGroupDataMessageArgs] = queue.Queue()
        self.server_messages: queue.Queue[OnServerDataMessageArgs] = queue.Queue()
        self.client.subscribe(CallbackType.CONNECTED, self.connected.put)
        self.client.subscribe(CallbackType.GROUP_MESSAGE, self.group_messages.put)
        self.client.subscribe(CallbackType.SERVER_MESSAGE, self.server_messages.put)


@contextmanager
def official_client(url_provider: Callable[[], str], **options: Any) -> Iterator[RecordingClient]:
    recording = RecordingClient(url_provider, **options)
    recording.client.open()
    try:
        yield recording
    finally:
        recording.client.close()


@pytest.fixture
def rest(service: RunningWebPubSub, hub: str) -> Iterator[WebPubSubServiceClient]:
    with WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub) as client:
        yield client


def negotiate(rest: WebPubSubServiceClient, user_id: str, roles: list[str] | None = None) -> Callable[[], str]:
    """What the app's /api/negotiate does for the client: a fresh client access URL each time."""
    return lambda: str(rest.get_client_access_token(user_id=user_id, roles=roles or [])["url"])


def assert_signed(request: ReceivedRequest) -> None:
    connection_id = request.connection_id or ""
    assert request.header("ce-signature") == sign(connection_id, ACCESS_KEY)


def test_official_client_connects_joins_sends_and_receives(
    service: RunningWebPubSub, event_handler: FakeEventHandler, rest: WebPubSubServiceClient
) -> None:
    event_handler.user_event = lambda request: Response(b"got " + request.body, media_type="text/plain")
    with (
        official_client(negotiate(rest, "alice", GROUP_ROLES)) as alice,
        official_client(negotiate(rest, "bob", GROUP_ROLES)) as bob,
    ):
        connected = alice.connected.get(timeout=5)
        assert connected.user_id == "alice"
        alice.client.join_group("room")
        bob.client.join_group("room")
        alice.client.send_to_group("room", "hello bob", WebPubSubDataType.TEXT, no_echo=True)
        received = bob.group_messages.get(timeout=5)
        assert (received.group, received.from_user_id, received.data) == ("room", "alice", "hello bob")
        assert received.sequence_id == 1

        alice.client.send_event("chat", {"text": "hi"}, WebPubSubDataType.JSON)
        reply = alice.server_messages.get(timeout=5)
        assert (reply.data_type, reply.data) == (WebPubSubDataType.TEXT, 'got {"text":"hi"}')
        connection_id = connected.connection_id

    disconnected = event_handler.wait_for_event("azure.webpubsub.sys.disconnected", connection_id)
    events = event_handler.events(connection_id=connection_id)
    assert [request.ce_type for request in events] == [
        "azure.webpubsub.sys.connect",
        "azure.webpubsub.sys.connected",
        "azure.webpubsub.user.chat",
        "azure.webpubsub.sys.disconnected",
    ]
    assert events[-1] is disconnected
    for request in events:
        assert_signed(request)
        assert request.header("ce-subprotocol") == "json.reliable.webpubsub.azure.v1"


def test_official_client_without_roles_is_forbidden(service: RunningWebPubSub, rest: WebPubSubServiceClient) -> None:
    with official_client(negotiate(rest, "mallory"), message_retry_total=0) as client:
        with pytest.raises(SendMessageError) as forbidden:
            client.client.join_group("room")
        assert forbidden.value.error_detail is not None
        assert forbidden.value.error_detail.name == "Forbidden"


def test_official_client_sees_401_for_an_expired_token(service: RunningWebPubSub, hub: str) -> None:
    expired = client_url(service, hub, client_token(service.endpoint, hub, expires_in=-3600))
    client = WebPubSubClient(expired, start_timeout=5, reconnect_retry_total=0)
    with pytest.raises(OpenClientError, match="401"):
        client.open()


def test_official_client_recovers_a_dropped_connection_without_losing_messages(
    service: RunningWebPubSub, event_handler: FakeEventHandler, rest: WebPubSubServiceClient
) -> None:
    with official_client(negotiate(rest, "rita", GROUP_ROLES)) as rita:
        connection_id = rita.connected.get(timeout=5).connection_id
        assert connection_id is not None
        rita.client.join_group("room")
        assert service.service.call(lambda: service.service.connections.drop_transport(connection_id))
        for text in ("while", "the", "socket", "was", "down"):
            rest.send_to_group("room", text, content_type="text/plain")
        received = [rita.server_messages.get(timeout=10).data for _ in range(5)]
        assert received == ["while", "the", "socket", "was", "down"]
        assert rita.client.is_connected()
    event_handler.wait_for_event("azure.webpubsub.sys.disconnected", connection_id)
    assert len(event_handler.events("azure.webpubsub.sys.connect")) == 1
    assert len(event_handler.events("azure.webpubsub.sys.connected")) == 1
