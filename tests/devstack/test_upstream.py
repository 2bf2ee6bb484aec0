"""Service → event handler: CloudEvents headers and bodies, abuse protection, answers applied."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.servers import ServerThread
from devstack.webpubsub import EventHandlerSettings, RunningWebPubSub
from devstack.webpubsub.upstream import event_handler_client
from tests.support.events import sign
from tests.support.local_service import (
    ACCESS_KEY,
    JSON_PROTOCOL,
    RELIABLE_PROTOCOL,
    FakeEventHandler,
    ReceivedRequest,
    client_token,
    client_url,
    close_code,
    json_client,
    open_socket,
    refused_handshake,
)

CONNECT = "azure.webpubsub.sys.connect"
CONNECTED = "azure.webpubsub.sys.connected"
DISCONNECTED = "azure.webpubsub.sys.disconnected"


def expected_signature(connection_id: str) -> str:
    """ce-signature computed independently: hex HMAC-SHA256 of the connection id, keyed by the access key."""
    return sign(connection_id, ACCESS_KEY)


def handshake_status(service: RunningWebPubSub, hub: str, **token_options: object) -> int:
    token = client_token(service.endpoint, hub, **token_options)  # type: ignore[arg-type]
    return refused_handshake(client_url(service, hub, token), JSON_PROTOCOL)[0]


def test_system_events_carry_every_cloud_event_header_and_a_valid_signature(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    with json_client(service, hub, user_id="alice") as client:
        connection_id = client.connection_id
        event_handler.wait_for_event(CONNECTED, connection_id)
    disconnected = event_handler.wait_for_event(DISCONNECTED, connection_id)
    connect_event = event_handler.wait_for_event(CONNECT)
    connected = event_handler.wait_for_event(CONNECTED, connection_id)

    for event, ce_id, event_name in ((connect_event, "0", "connect"), (connected, "1", "connected")):
        assert event.header("ce-specversion") == "1.0"
        assert event.header("ce-awpsversion") == "1.0"
        assert event.header("ce-type") == f"azure.webpubsub.sys.{event_name}"
        assert event.header("ce-eventname") == event_name
        assert event.header("ce-id") == ce_id
        assert event.header("ce-source") == f"/hubs/{hub}/client/{connection_id}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event.header("ce-time") or "")
        assert event.header("ce-hub") == hub
        assert event.header("ce-connectionid") == connection_id
        assert event.header("ce-userid") == "alice"
        assert event.header("ce-subprotocol") == JSON_PROTOCOL
        assert event.header("ce-signature") == expected_signature(connection_id)
        assert event.header("webhook-request-origin") == "127.0.0.1"
        assert event.header("content-type") == "application/json; charset=utf-8"
        assert event.header("ce-connectionstate") is None
    assert connected.json() == {}
    assert int(disconnected.header("ce-id") or "0") > 1
    assert set(disconnected.json()) == {"reason"}


def test_connect_body_lists_claims_query_headers_and_subprotocols_as_string_arrays(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    token = client_token(service.endpoint, hub, user_id="alice", roles=["r1", "r2"], team="blue")
    url = client_url(service, hub, token, room="a") + "&room=b"
    with open_socket(url, JSON_PROTOCOL, "custom.v1", additional_headers={"X-Trace": "t1"}):
        body = event_handler.wait_for_event(CONNECT).json()
    assert body["claims"]["sub"] == ["alice"]
    assert body["claims"]["role"] == ["r1", "r2"]
    assert body["claims"]["team"] == ["blue"]
    assert all(isinstance(value, list) and all(isinstance(v, str) for v in value) for value in body["claims"].values())
    assert body["query"] == {"room": ["a", "b"]}  # access_token removed
    assert body["headers"]["x-trace"] == ["t1"]
    assert "authorization" not in {name.lower() for name in body["headers"]}
    assert body["subprotocols"] == [JSON_PROTOCOL, "custom.v1"]
    assert body["clientCertificates"] == []


def _echo_with_content_type(request: ReceivedRequest) -> Response:
    """Reply to a user event with its own body and content type (what a chat handler might do)."""
    return Response(request.body, media_type=request.header("content-type"))


@pytest.mark.parametrize(
    ("data_type", "data", "content_type", "upstream_body"),
    [
        ("text", "hello", "text/plain", b"hello"),
        ("json", {"a": [1, "b"]}, "application/json", b'{"a":[1,"b"]}'),
        ("binary", base64.b64encode(b"\x00\x01\xff").decode(), "application/octet-stream", b"\x00\x01\xff"),
    ],
)
def test_user_event_round_trip_in_each_content_type(
    service: RunningWebPubSub,
    event_handler: FakeEventHandler,
    hub: str,
    data_type: str,
    data: object,
    content_type: str,
    upstream_body: bytes,
) -> None:
    event_handler.user_event = _echo_with_content_type
    with json_client(service, hub, user_id="alice") as client:
        client.send({"type": "event", "event": "chat", "dataType": data_type, "data": data, "ackId": 9})
        assert client.receive() == {"type": "message", "from": "server", "dataType": data_type, "data": data}
        assert client.receive() == {"type": "ack", "ackId": 9, "success": True}
        event = event_handler.wait_for_event("azure.webpubsub.user.chat", client.connection_id)
    assert event.header("content-type") == content_type
    assert event.header("ce-eventname") == "chat"
    assert event.header("ce-signature") == expected_signature(client.connection_id)
    assert event.body == upstream_body


def test_event_without_reply_only_acks(service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str) -> None:
    with json_client(service, hub) as client:
        client.send({"type": "event", "event": "note", "dataType": "text", "data": "x", "ackId": 1})
        assert client.receive() == {"type": "ack", "ackId": 1, "success": True}


def test_failed_user_event_is_acked_as_internal_server_error_and_the_connection_stays(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    event_handler.user_event = lambda _: Response("boom", status_code=500)
    with json_client(service, hub) as client:
        ack = client.request({"type": "event", "event": "chat", "dataType": "text", "data": "x", "ackId": 4})
        assert (ack["success"], ack["error"]["name"]) == (False, "InternalServerError")
        assert client.request({"type": "ping"}) == {"type": "pong"}


def test_plain_websocket_client_sends_message_events_and_gets_replies_as_frames(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    event_handler.user_event = _echo_with_content_type
    token = client_token(service.endpoint, hub, user_id="raw")
    with open_socket(client_url(service, hub, token)) as client:
        assert client.subprotocol is None
        client.send("hello there")
        assert client.recv(timeout=5) == "hello there"
        client.send(b"\x01\x02")
        assert client.recv(timeout=5) == b"\x01\x02"
    text_event, binary_event = event_handler.events("azure.webpubsub.user.message")[-2:]
    assert (text_event.header("content-type"), text_event.body) == ("text/plain", b"hello there")
    assert (binary_event.header("content-type"), binary_event.body) == ("application/octet-stream", b"\x01\x02")
    assert text_event.header("ce-subprotocol") is None
    assert text_event.header("ce-eventname") == "message"


def test_plain_websocket_client_is_closed_with_1011_when_the_handler_fails(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    event_handler.user_event = lambda _: Response(status_code=502)
    token = client_token(service.endpoint, hub)
    with open_socket(client_url(service, hub, token)) as client:
        client.send("anything")
        assert close_code(client) == 1011


def test_connect_response_sets_user_groups_roles_and_subprotocol(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    event_handler.connect = lambda _: JSONResponse(
        {
            "userId": "from-handler",
            "groups": ["assigned"],
            "roles": ["webpubsub.sendToGroup.assigned"],
            "subprotocol": RELIABLE_PROTOCOL,
        }
    )
    token = client_token(service.endpoint, hub, user_id="from-token")
    with open_socket(client_url(service, hub, token), JSON_PROTOCOL, RELIABLE_PROTOCOL) as client:
        assert client.subprotocol == RELIABLE_PROTOCOL
        connected = json.loads(client.recv(timeout=5))
        assert connected["userId"] == "from-handler"
        assert connected["reconnectionToken"]
        client.send(
            json.dumps({"type": "sendToGroup", "group": "assigned", "dataType": "text", "data": "hi", "ackId": 1})
        )
        echo = json.loads(client.recv(timeout=5))
        assert (echo["group"], echo["fromUserId"], echo["sequenceId"]) == ("assigned", "from-handler", 1)
        assert json.loads(client.recv(timeout=5))["success"] is True
        event = event_handler.wait_for_event(CONNECTED, connected["connectionId"])
    assert event.header("ce-userid") == "from-handler"
    assert event.header("ce-subprotocol") == RELIABLE_PROTOCOL


@pytest.mark.parametrize("status", [400, 401, 403, 429])
def test_connect_rejected_with_4xx_reaches_the_client_as_the_handshake_status(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str, status: int
) -> None:
    event_handler.connect = lambda _: Response("no", status_code=status)
    assert handshake_status(service, hub) == status
    record = service.upstream_log.wait_for(lambda r: r.hub == hub and r.event_name == "connect")
    assert (record.status, record.outcome) == (status, "rejected")
    assert event_handler.events(CONNECTED) == []


@pytest.mark.parametrize("answer", [Response(status_code=500), Response(status_code=503), Response("[1]")])
def test_connect_failing_in_the_handler_gives_the_client_500(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str, answer: Response
) -> None:
    event_handler.connect = lambda _: answer
    assert handshake_status(service, hub) == 500


def test_unreachable_handler_gives_the_client_500(service: RunningWebPubSub, hub: str) -> None:
    from devstack.servers import bind_socket

    unused = bind_socket("127.0.0.1", 0)  # bound but never listening: connections are refused
    port = unused.getsockname()[1]
    try:
        service.service.configure_event_handlers([EventHandlerSettings(url_template=f"http://127.0.0.1:{port}/x")])
        assert handshake_status(service, hub) == 500
    finally:
        unused.close()
    assert service.upstream_log.wait_for(lambda r: r.hub == hub).outcome == "refused"


def test_abuse_protection_runs_once_before_the_first_event_and_is_cached(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    with json_client(service, hub), json_client(service, hub):
        pass
    validations = [request for request in event_handler.requests if request.method != "POST"]
    assert len(validations) == 1
    validation = validations[0]
    assert validation.method == "OPTIONS"
    assert validation.header("webhook-request-origin") == "127.0.0.1"
    assert validation.header("ce-awpsversion") == "1.0"
    assert event_handler.requests.index(validation) == 0  # before the first event


@pytest.mark.parametrize(
    "answer",
    [
        Response(status_code=200),  # no WebHook-Allowed-Origin
        Response(status_code=200, headers={"WebHook-Allowed-Origin": "contoso.webpubsub.azure.com"}),
        Response(status_code=401, headers={"WebHook-Allowed-Origin": "*"}),
    ],
)
def test_refused_validation_refuses_the_connect_and_delivers_no_event(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str, answer: Response
) -> None:
    event_handler.validate = lambda _: answer
    assert handshake_status(service, hub) == 500
    assert event_handler.events() == []
    assert service.upstream_log.wait_for(lambda r: r.event_name == "connect").outcome == "blocked"


def test_validation_falls_back_to_get_when_options_is_not_found(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    event_handler.validate = lambda request: (
        Response(status_code=404)
        if request.method == "OPTIONS"
        else Response(headers={"WebHook-Allowed-Origin": "127.0.0.1"})  # the exact host also passes
    )
    with json_client(service, hub):
        pass
    assert [request.method for request in event_handler.requests[:3]] == ["OPTIONS", "GET", "POST"]


def test_url_template_expands_hub_and_event_and_validates_with_event_validate(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    template = event_handler.base_url + "/api/{hub}/{event}"
    service.service.configure_event_handlers([EventHandlerSettings(url_template=template)])
    with json_client(service, hub):
        pass
    event_handler.wait_for_event(DISCONNECTED)
    paths = [request.path for request in event_handler.requests]
    assert paths == [f"/api/{hub}/validate", f"/api/{hub}/connect", f"/api/{hub}/connected", f"/api/{hub}/disconnected"]


def test_only_configured_events_go_upstream(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    service.service.configure_event_handlers(
        [
            EventHandlerSettings(
                url_template=event_handler.url, system_events=frozenset({"connected"}), user_event_pattern="chat*"
            )
        ]
    )
    with json_client(service, hub, user_id="alice") as client:
        assert client.request({"type": "event", "event": "chatty", "dataType": "text", "data": "x", "ackId": 1})[
            "success"
        ]
        unhandled = client.request({"type": "event", "event": "other", "dataType": "text", "data": "x", "ackId": 2})
        assert unhandled["error"]["name"] == "InternalServerError"
    kinds = [request.ce_type for request in event_handler.events()]
    assert kinds == [CONNECTED, "azure.webpubsub.user.chatty"]  # no connect (token defaults apply), no disconnected


def test_connection_state_from_answers_is_sent_back_on_later_events(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    event_handler.connect = lambda _: Response(status_code=204, headers={"ce-connectionState": "c3RhdGUx"})
    event_handler.user_event = lambda request: Response(
        status_code=204, headers={"ce-connectionState": "c3RhdGUy"} if request.body == b"change" else {}
    )
    with json_client(service, hub) as client:
        for ack_id, text in enumerate(["keep", "change", "after"], start=1):
            assert client.request({"type": "event", "event": "e", "dataType": "text", "data": text, "ackId": ack_id})[
                "success"
            ]
    states = {
        request.body: request.header("ce-connectionstate") for request in event_handler.events("azure.webpubsub.user.e")
    }
    assert states == {b"keep": "c3RhdGUx", b"change": "c3RhdGUx", b"after": "c3RhdGUy"}
    assert event_handler.wait_for_event(DISCONNECTED).header("ce-connectionstate") == "c3RhdGUy"


def test_events_of_one_connection_never_overlap(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    """The first event's handler holds on; a second event arriving meanwhile would be a race."""
    overlapped: list[bool] = []

    async def slow_first(request: ReceivedRequest) -> Response:
        if request.body == b"first":
            seen_second = any(r.body == b"second" for r in event_handler.requests)
            for _ in range(20):  # up to 0.5 s for a racing second event to show up
                await asyncio.sleep(0.025)
                seen_second = seen_second or any(r.body == b"second" for r in event_handler.requests)
            overlapped.append(seen_second)
        return Response(status_code=204)

    event_handler.user_event = slow_first
    with json_client(service, hub) as client:
        client.send({"type": "event", "event": "e", "dataType": "text", "data": "first", "ackId": 1})
        client.send({"type": "event", "event": "e", "dataType": "text", "data": "second", "ackId": 2})
        assert client.request({"type": "ping"}) == {"type": "pong"}  # the reader is not blocked meanwhile
        assert [client.receive()["ackId"], client.receive()["ackId"]] == [1, 2]
    assert overlapped == [False]
    bodies = [request.body for request in event_handler.events("azure.webpubsub.user.e")]
    assert bodies == [b"first", b"second"]


def test_upstream_log_shows_outcomes_but_no_secrets(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devstack")
    function_key = "s3cr3t-function-key"
    service.service.configure_event_handlers(
        [EventHandlerSettings(url_template=f"{event_handler.url}?code={function_key}")]
    )
    event_handler.user_event = lambda _: Response(status_code=500)
    token = client_token(service.endpoint, hub, user_id="alice")
    with json_client(service, hub, user_id="alice") as client:
        assert (
            client.request({"type": "event", "event": "chat", "dataType": "text", "data": "x", "ackId": 1})["error"][
                "name"
            ]
            == "InternalServerError"
        )
        connection_id = client.connection_id
    event_handler.wait_for_event(DISCONNECTED, connection_id)
    assert event_handler.requests[0].query == f"code={function_key}"  # the handler does get its key

    records = httpx.get(f"{service.endpoint}/_devstack/upstream-log").json()
    outcomes = [(r["event_name"], r["status"], r["outcome"]) for r in records]
    assert outcomes == [
        ("validate", 200, "allowed"),
        ("connect", 204, "delivered"),
        ("connected", 204, "delivered"),
        ("chat", 500, "failed"),
        ("disconnected", 204, "delivered"),
    ]
    assert all(record["url"].endswith("?code=***") for record in records)
    written = json.dumps(records) + caplog.text
    for secret in (function_key, ACCESS_KEY, token, expected_signature(connection_id)):
        assert secret not in written


def test_events_go_out_on_connections_with_nagle_off() -> None:
    """The service's client sockets to the event handler: no request waits for the handler's delayed ACK."""

    async def post_twice(url: str) -> list[tuple[int, int]]:
        client = event_handler_client(5.0)
        try:
            for _ in range(2):
                await client.post(url, content=b"{}")
            sockets = client.open_sockets()
            return [(sock.proto, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) for sock in sockets]
        finally:
            await client.aclose()

    async def ok(_: Request) -> Response:
        return Response(status_code=204)

    with ServerThread(Starlette(routes=[Route("/", ok, methods=["POST"])])) as server:
        [(protocol, no_delay)] = asyncio.run(post_twice(server.base_url + "/"))  # one kept-alive connection
    assert protocol == socket.IPPROTO_TCP
    assert no_delay != 0


def test_every_socket_of_a_client_and_its_events_has_nagle_off(
    service: RunningWebPubSub, request: pytest.FixtureRequest, hub: str
) -> None:
    """The client's WebSocket as the service accepted it, and the service's event connection as the handler did."""
    handler_server: ServerThread = request.getfixturevalue("_handler_server")[1]
    with json_client(service, hub):
        client_sockets = service.server.connection_sockets()
        handler_sockets = handler_server.connection_sockets()
        assert client_sockets
        assert handler_sockets
        for sock in client_sockets + handler_sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
