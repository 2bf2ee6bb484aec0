"""In-process figures: negotiate and the event handler, per call through `function_app`, against their floors.

The app runs as the Functions worker runs it: a func.HttpRequest is built for every call, goes into
the function, and the func.HttpResponse that comes out is read as the worker reads it (status,
headers, body), in local-development settings (connection string, anonymous negotiate, signed
events). The targets compare with the platform floor, what every Python Functions app pays: a
do-nothing function that gets the same func.HttpRequest (built and read the same way) and returns
a func.HttpResponse of the same size, plus the one operation no implementation can skip (the
SDK's token signing for negotiate; one HMAC of the connection id and one JSON parse of the body for
an event). The earlier floors, that operation alone, are still reported beside them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.measure import Comparison, Figure, compare, microseconds

ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"  # the official emulator's public key
SECONDARY_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu00"
ENDPOINT = "http://localhost:8080"
SETTINGS = {
    "WEBPUBSUB_CREDENTIAL": "connectionstring",
    "WEBPUBSUB_CONNECTION_STRING": f"Endpoint={ENDPOINT};AccessKey={ACCESS_KEY};Version=1.0;",
    "NEGOTIATE_AUTH": "anonymous",
}
NEGOTIATE_TARGET = 1.3
EVENT_TARGET = 2.0


@contextmanager
def app_settings(values: dict[str, str]) -> Iterator[None]:
    """The app's settings for one measurement, read fresh, and the previous environment afterwards."""
    from shared.runtime import reset_runtime

    saved = dict(os.environ)
    os.environ.update(values)
    reset_runtime()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_runtime()


def negotiate_figure(*, rounds: int, calls: int) -> Figure:
    import azure.functions as func
    from azure.core.credentials import AzureKeyCredential
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

    import function_app

    with app_settings(SETTINGS):

        def request() -> func.HttpRequest:
            return func.HttpRequest(
                method="GET",
                url="http://localhost:7071/api/negotiate?userId=alice",
                headers={"accept": "application/json", "host": "localhost:7071"},
                params={"userId": "alice"},
                route_params={},
                body=b"",
            )

        response = function_app.negotiate(request())
        if response.status_code != 200:
            raise RuntimeError(f"negotiate answered {response.status_code}: {response.get_body()[:200]!r}")
        answer = json.loads(response.get_body())
        roles = _claims(answer["token"])["role"]
        headers = dict(response.headers)
        client = WebPubSubServiceClient(endpoint=ENDPOINT, hub="chat", credential=AzureKeyCredential(ACCESS_KEY))

        def signing() -> object:
            return client.get_client_access_token(user_id="alice", roles=roles, minutes_to_expire=60)

        def do_nothing_negotiate(req: func.HttpRequest) -> func.HttpResponse:
            token = client.get_client_access_token(user_id=req.params["userId"], roles=roles, minutes_to_expire=60)
            document = {"url": token["url"], "baseUrl": answer["baseUrl"], "token": token["token"]}
            document["expiresOn"] = answer["expiresOn"]
            return func.HttpResponse(
                json.dumps(document), status_code=200, headers=headers, mimetype="application/json"
            )

        platform = compare(
            _as_worker(function_app.negotiate, request),
            _as_worker(do_nothing_negotiate, request),
            rounds=rounds,
            calls=calls,
        )
        fixed = request()
        sdk = compare(lambda: function_app.negotiate(fixed), signing, rounds=rounds, calls=calls)
    return Figure(
        "negotiate",
        f"{platform.ratio:.2f}x",
        f"<= {NEGOTIATE_TARGET}x",
        platform.ratio <= NEGOTIATE_TARGET,
        (
            f"function_app.negotiate {microseconds(platform.measured)}/call, platform floor (a do-nothing function: "
            f"the same func.HttpRequest, the SDK's get_client_access_token, a same-size func.HttpResponse) "
            f"{microseconds(platform.floor)}/call",
            f"against the SDK's signing alone (same key and roles, reused client): {sdk.ratio:.2f}x "
            f"({microseconds(sdk.measured)} vs {microseconds(sdk.floor)}, one reused func.HttpRequest)",
            _method(platform),
        ),
    )


def _as_worker(function: Callable[[Any], Any], request: Callable[[], object]) -> Callable[[], object]:
    """One invocation as the worker makes it: a new func.HttpRequest in, the func.HttpResponse read out."""

    def invoke() -> object:
        response = function(request())
        return response.status_code, list(response.headers.items()), response.mimetype, response.get_body()

    return invoke


def _claims(token: str) -> dict[str, Any]:
    import jwt

    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _signature(connection_id: str) -> str:
    """`ce-signature` as the service sends it: an HMAC per access key."""
    return ",".join(
        "sha256=" + hmac.new(key.encode(), connection_id.encode(), hashlib.sha256).hexdigest()
        for key in (ACCESS_KEY, SECONDARY_KEY)
    )


def _event_headers(event_type: str, content_type: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": event_type,
        "ce-source": "/hubs/chat/client/Ab1Cd2Ef3",
        "ce-id": "1",
        "ce-time": "2026-11-28T00:00:00Z",
        "ce-hub": "chat",
        "ce-connectionid": "Ab1Cd2Ef3",
        "ce-userid": "alice",
        "ce-eventname": event_type.rsplit(".", 1)[-1],
        "ce-signature": _signature("Ab1Cd2Ef3"),
        "webhook-request-origin": "localhost",
        "content-type": content_type,
    }


# The connect body the service sends for a client that negotiated at /api/negotiate.
CONNECT_BODY = json.dumps(
    {
        "claims": {
            "aud": [f"{ENDPOINT}/client/hubs/chat"],
            "iat": ["1764288000"],
            "exp": ["1764291600"],
            "sub": ["alice"],
            "role": ["webpubsub.joinLeaveGroup.chat", "webpubsub.sendToGroup.chat"],
        },
        "query": {},
        "headers": {
            "Host": ["localhost:8080"],
            "Connection": ["Upgrade"],
            "Upgrade": ["websocket"],
            "Sec-WebSocket-Version": ["13"],
            "Sec-WebSocket-Protocol": ["json.webpubsub.azure.v1"],
        },
        "subprotocols": ["json.webpubsub.azure.v1"],
        "clientCertificates": [],
    }
).encode()
MESSAGE_BODY = json.dumps({"text": "hello, chat", "sentAt": "2026-11-28T00:00:00.000Z"}).encode()


def eventhandler_figure(*, rounds: int, calls: int) -> Figure:
    import azure.functions as func

    import function_app

    platform: dict[str, Comparison] = {}
    alone: dict[str, Comparison] = {}
    with app_settings(SETTINGS):
        cases = {
            "connect": (_event_headers("azure.webpubsub.sys.connect", "application/json; charset=utf-8"), CONNECT_BODY),
            "message": (_event_headers("azure.webpubsub.user.message", "application/json"), MESSAGE_BODY),
        }
        for name, (headers, body) in cases.items():

            def request(headers: dict[str, str] = headers, body: bytes = body) -> func.HttpRequest:
                return func.HttpRequest(
                    method="POST",
                    url="http://localhost:7071/api/eventhandler",
                    headers=headers,
                    params={},
                    route_params={},
                    body=body,
                )

            answer = function_app.eventhandler(request())
            if answer.status_code >= 300:
                raise RuntimeError(f"the {name} event answered {answer.status_code}")
            platform[name] = compare(
                _as_worker(function_app.eventhandler, request),
                _as_worker(_do_nothing_event(answer), request),
                rounds=rounds,
                calls=calls,
            )
            alone[name] = compare(
                _caller(function_app.eventhandler, request()), _event_floor(body), rounds=rounds, calls=calls
            )
    worst = max(result.ratio for result in platform.values())
    rates = {name: 1 / result.measured for name, result in platform.items()}
    details = [
        f"{name}: function_app.eventhandler {microseconds(result.measured)}/event, platform floor (a do-nothing "
        "function: the same func.HttpRequest, one HMAC-SHA256 of the connection id, one json.loads of the body, "
        f"a same-size func.HttpResponse) {microseconds(result.floor)}"
        for name, result in platform.items()
    ]
    details += [
        f"{name} against the HMAC and the parse alone: {result.ratio:.2f}x "
        f"({microseconds(result.measured)} vs {microseconds(result.floor)}, one reused func.HttpRequest)"
        for name, result in alone.items()
    ]
    details.append(_method(platform["message"]))
    return Figure(
        "eventhandler",
        f"connect {platform['connect'].ratio:.2f}x, message {platform['message'].ratio:.2f}x, "
        f"{rates['message']:,.0f} messages/s and {rates['connect']:,.0f} connects/s on one core",
        f"<= {EVENT_TARGET:g}x",
        worst <= EVENT_TARGET,
        tuple(details),
    )


def _caller(function: Callable[[Any], object], request: object) -> Callable[[], object]:
    return lambda: function(request)


def _event_floor(body: bytes) -> Callable[[], object]:
    key = ACCESS_KEY.encode()
    connection_id = b"Ab1Cd2Ef3"

    def floor() -> object:
        return hmac.new(key, connection_id, hashlib.sha256).hexdigest(), json.loads(body)

    return floor


def _do_nothing_event(answer: Any) -> Callable[[Any], object]:
    """The platform floor's function: verifies nothing but pays for one HMAC and one parse, answers as the app did."""
    import azure.functions as func

    key = ACCESS_KEY.encode()
    status, headers, body = answer.status_code, dict(answer.headers), answer.get_body()

    def function(req: Any) -> func.HttpResponse:
        hmac.new(key, req.headers["ce-connectionid"].encode(), hashlib.sha256).hexdigest()
        json.loads(req.get_body())
        return func.HttpResponse(body, status_code=status, headers=headers)

    return function


def _method(result: Comparison) -> str:
    return f"median of {result.rounds} interleaved rounds of {result.calls} calls each"
