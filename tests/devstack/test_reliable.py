"""Reliable connections: sequence ids, acknowledgements, and recovery after a dropped socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, RunningWebPubSub, ServiceSettings
from tests.support.local_service import (
    RELIABLE_PROTOCOL,
    FakeEventHandler,
    JsonClient,
    close_code,
    json_client,
    open_socket,
)

CONNECT = "azure.webpubsub.sys.connect"
CONNECTED = "azure.webpubsub.sys.connected"
DISCONNECTED = "azure.webpubsub.sys.disconnected"


@pytest.fixture
def rest(service: RunningWebPubSub, hub: str) -> Iterator[WebPubSubServiceClient]:
    with WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub) as client:
        yield client


def recovery_url(service: RunningWebPubSub, hub: str, connection_id: str, token: str) -> str:
    base = service.endpoint.replace("http://", "ws://")
    return f"{base}/client/hubs/{hub}?awps_connection_id={connection_id}&awps_reconnection_token={token}"


def drop(client: JsonClient) -> None:
    """Lose the network under the client: no close frame, as when Wi-Fi goes away."""
    client.connection.socket.shutdown(socket.SHUT_RDWR)


def test_sequence_ids_start_at_one_and_rise(service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient) -> None:
    with json_client(service, hub, protocol=RELIABLE_PROTOCOL, groups=["room"]) as client:
        assert client.connected["reconnectionToken"]
        for text in ("a", "b", "c"):
            rest.send_to_group("room", text, content_type="text/plain")
        assert [client.receive()["sequenceId"] for _ in range(3)] == [1, 2, 3]


def test_recovery_resumes_the_same_connection_without_losing_messages(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str, rest: WebPubSubServiceClient
) -> None:
    with json_client(service, hub, protocol=RELIABLE_PROTOCOL, user_id="alice", groups=["room"]) as client:
        connection_id, token = client.connection_id, client.connected["reconnectionToken"]
        rest.send_to_group("room", "one", content_type="text/plain")
        assert client.receive()["sequenceId"] == 1
        client.send({"type": "sequenceAck", "sequenceId": 1})
        rest.send_to_group("room", "two", content_type="text/plain")
        assert client.receive()["data"] == "two"  # received but never acknowledged
        drop(client)
        rest.send_to_group("room", "three", content_type="text/plain")  # sent while the client is away

    with open_socket(recovery_url(service, hub, connection_id, token), RELIABLE_PROTOCOL) as recovered:
        assert recovered.subprotocol == RELIABLE_PROTOCOL
        connected = json.loads(recovered.recv(timeout=5))
        assert (connected["event"], connected["connectionId"]) == ("connected", connection_id)
        replayed = [json.loads(recovered.recv(timeout=5)) for _ in range(2)]
        assert [(m["sequenceId"], m["data"]) for m in replayed] == [(2, "two"), (3, "three")]
        rest.send_to_group("room", "four", content_type="text/plain")  # groups were kept
        assert json.loads(recovered.recv(timeout=5))["sequenceId"] == 4

    event_handler.wait_for_event(DISCONNECTED, connection_id)
    kinds = [request.ce_type for request in event_handler.events(connection_id=connection_id)]
    assert kinds == [CONNECT, CONNECTED, DISCONNECTED]  # no second connect/connected for the recovery


@pytest.mark.parametrize(
    "code",
    [1000, 1001, None],
    ids=["normal closure", "going away", "no status code (1005), as a browser's close()"],
)
def test_a_client_that_closes_normally_cannot_recover(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str, code: int | None
) -> None:
    with json_client(service, hub, protocol=RELIABLE_PROTOCOL) as client:
        connection_id, token = client.connection_id, client.connected["reconnectionToken"]
        # None sends a close frame without a code, which the receiving side reads as 1005.
        client.connection.close(code)  # type: ignore[arg-type]
    # At once, not after the recovery window: the connection ended for good.
    event_handler.wait_for_event(DISCONNECTED, connection_id)
    with open_socket(recovery_url(service, hub, connection_id, token), RELIABLE_PROTOCOL) as refused:
        assert close_code(refused) == 1008


@pytest.mark.parametrize("mismatch", ["unknown connection", "wrong token"])
def test_recovery_with_unknown_id_or_token_is_accepted_then_closed_with_1008(
    service: RunningWebPubSub, hub: str, mismatch: str
) -> None:
    with json_client(service, hub, protocol=RELIABLE_PROTOCOL) as client:
        connection_id, token = client.connection_id, client.connected["reconnectionToken"]
        if mismatch == "unknown connection":
            connection_id = "0" * 32
        else:
            token = token[::-1]
        with open_socket(recovery_url(service, hub, connection_id, token), RELIABLE_PROTOCOL) as refused:
            assert close_code(refused) == 1008
        assert client.request({"type": "ping"}) == {"type": "pong"}  # the real connection is untouched


def test_non_reliable_connection_ends_at_once_when_dropped(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    with json_client(service, hub) as client:
        drop(client)
        event_handler.wait_for_event(DISCONNECTED, client.connection_id)


def test_closing_from_rest_tells_the_client_why_and_ends_recovery(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str, rest: WebPubSubServiceClient
) -> None:
    with json_client(service, hub, protocol=RELIABLE_PROTOCOL) as client:
        connection_id, token = client.connection_id, client.connected["reconnectionToken"]
        rest.close_connection(connection_id, reason="maintenance")
        assert client.receive() == {"type": "system", "event": "disconnected", "message": "maintenance"}
        assert close_code(client.connection) == 1000
    assert event_handler.wait_for_event(DISCONNECTED, connection_id).json() == {"reason": "maintenance"}
    with open_socket(recovery_url(service, hub, connection_id, token), RELIABLE_PROTOCOL) as refused:
        assert close_code(refused) == 1008


def test_unrecovered_connection_expires_after_the_recovery_window(event_handler: FakeEventHandler, hub: str) -> None:
    settings = ServiceSettings(
        recovery_window_seconds=0.2, event_handlers=(EventHandlerSettings(url_template=event_handler.url),)
    )
    with LocalWebPubSub(settings).run_in_thread() as service:
        with json_client(service, hub, protocol=RELIABLE_PROTOCOL) as client:
            connection_id, token = client.connection_id, client.connected["reconnectionToken"]
            drop(client)
        expired = service.upstream_log.wait_for(
            lambda record: record.event_name == "disconnected" and record.connection_id == connection_id
        )
        assert expired.outcome == "delivered"
        with open_socket(recovery_url(service, hub, connection_id, token), RELIABLE_PROTOCOL) as refused:
            assert close_code(refused) == 1008
