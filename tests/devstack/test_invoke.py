"""invoke: a client's request to the event handler, answered with the handler's reply (or its failure).

The wire format is `@azure/web-pubsub-client` 1.0.4's (`invokeEvent` in webPubSubClient.js,
frames in protocols/jsonProtocolBase.js): `{"type": "invoke", "invocationId", "target": "event",
"event", "dataType", "data"}` answered by `{"type": "invokeResponse", "invocationId", "success",
"dataType", "data"}` or `{"success": false, "error": {"name", "message"}}`; its own tests expect a
handler's refusal as an error named e.g. "BadRequest" (test/client.invoke.spec.ts). The service
sends the invocation upstream as the user event of that name (azure.webpubsub.user.<event>).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse, Response

from devstack.webpubsub import RunningWebPubSub
from tests.support.local_service import (
    RELIABLE_PROTOCOL,
    FakeEventHandler,
    ReceivedRequest,
    client_token,
    client_url,
    json_client,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("js") / "invoke.mjs"


def answer(request: ReceivedRequest) -> Response:
    """A stand-in upstream: echoes, computes, refuses and fails by event name."""
    event = request.header("ce-eventname")
    if event == "echo":
        return Response(b"pong: " + request.body, media_type="text/plain")
    if event == "sum":
        numbers = request.json()
        return JSONResponse({"sum": sum(numbers)})
    if event == "bytes":
        return Response(request.body[::-1], media_type="application/octet-stream")
    if event == "quiet":
        return Response(status_code=204)
    if event == "refuse":
        return Response(b"you may not", status_code=403, media_type="text/plain")
    if event == "reject":
        return Response(b"bad input", status_code=400, media_type="text/plain")
    return Response(b"Traceback: secret internals", status_code=500, media_type="text/plain")


def run_official_client(url: str, calls: list[list[Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (ROOT / "web" / "node_modules" / "@azure" / "web-pubsub-client").is_dir():
        pytest.fail("Node.js and web/node_modules (npm ci --prefix web) are needed for the official JS client.")
    result = subprocess.run(
        [node, str(SCRIPT), url, json.dumps(calls)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_the_official_js_client_gets_the_handlers_replies_and_errors(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    event_handler.user_event = answer
    url = client_url(service, hub, client_token(service.endpoint, hub, user_id="ivy"))
    results = run_official_client(
        url,
        [
            ["echo", "ping", "text"],
            ["sum", [1, 2, 3], "json"],
            ["bytes", "AQID", "binary"],
            ["quiet", "x", "text"],
            ["refuse", "x", "text"],
            ["reject", "x", "text"],
            ["crash", "x", "text"],
        ],
    )
    assert results[:4] == [
        {"ok": {"dataType": "text", "data": "pong: ping"}},
        {"ok": {"dataType": "json", "data": {"sum": 6}}},
        {"ok": {"dataType": "binary", "data": "AwIB"}},
        {"ok": {"dataType": None, "data": None}},
    ]
    errors = [result["error"] for result in results[4:]]
    assert [error["name"] for error in errors] == ["InvocationError"] * 3
    assert [error["detail"] for error in errors] == [
        {"name": "Forbidden", "message": "you may not"},
        {"name": "BadRequest", "message": "bad input"},
        {"name": "InternalServerError", "message": "The event handler failed to handle the invocation."},
    ]
    echo = event_handler.wait_for_event("azure.webpubsub.user.echo")
    assert (echo.body, echo.header("content-type"), echo.header("ce-userid")) == (b"ping", "text/plain", "ivy")
    assert echo.header("ce-subprotocol") == RELIABLE_PROTOCOL
    assert event_handler.wait_for_event("azure.webpubsub.user.sum").json() == [1, 2, 3]


def test_a_cancelled_invocation_gets_no_response(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    def slow_first(request: ReceivedRequest) -> Response:
        """Answers "a" only after its cancellation has surely reached the service (frames travel in order)."""
        if request.body == b"1":
            time.sleep(0.5)
        return answer(request)

    event_handler.user_event = slow_first
    with json_client(service, hub) as client:
        client.send(
            {"type": "invoke", "invocationId": "a", "target": "event", "event": "echo", "dataType": "text", "data": "1"}
        )
        client.send({"type": "cancelInvocation", "invocationId": "a"})
        client.send(
            {"type": "invoke", "invocationId": "b", "target": "event", "event": "echo", "dataType": "text", "data": "2"}
        )
        # One connection's upstream calls run in order, so "a" was answered (and dropped) before "b".
        assert client.receive() == {
            "type": "invokeResponse",
            "invocationId": "b",
            "success": True,
            "dataType": "text",
            "data": "pong: 2",
        }


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"target": "group"}, "'target' must be 'event'"),
        ({"event": "no spaces allowed"}, "'event' must be a valid event name"),
        ({"dataType": "binary", "data": "not base64!"}, "'data' must be base64 when 'dataType' is 'binary'"),
    ],
)
def test_a_malformed_invoke_is_answered_with_a_bad_request_error(
    service: RunningWebPubSub, hub: str, frame: dict[str, Any], message: str
) -> None:
    with json_client(service, hub) as client:
        invoke = {
            "type": "invoke",
            "invocationId": "x",
            "target": "event",
            "event": "echo",
            "dataType": "text",
            "data": "1",
        }
        assert client.request({**invoke, **frame}) == {
            "type": "invokeResponse",
            "invocationId": "x",
            "success": False,
            "error": {"name": "BadRequest", "message": message},
        }
