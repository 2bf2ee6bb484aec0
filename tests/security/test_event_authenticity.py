"""Only our Web PubSub service can drive the event handler: signatures, replays, abuse protection.

Everything goes over real HTTP to the local Functions host; events come either from a genuine local
Web PubSub service (the same access key as the app) or are crafted the way an attacker would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.servers import ServerThread
from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, RunningWebPubSub, ServiceSettings
from shared.config import load_settings
from shared.events import EventHandlers
from shared.protocol import ConnectRequest, UserEvent
from shared.runtime import Runtime, use_runtime
from tests.support.apphost import ServedApp
from tests.support.events import sign
from tests.support.functions import error_code
from tests.support.issuer import Issuer
from tests.support.security import (
    ATTACKER_KEY,
    SERVICE_KEY,
    client_token,
    client_url,
    negotiated,
    open_client,
    refused_status,
    service_for,
    service_settings,
)
from tests.support.settings import use_environment

CONNECT = "azure.webpubsub.sys.connect"
EVENT_TYPES = {
    CONNECT: ("application/json", b'{"claims": {}, "query": {}, "headers": {}, "subprotocols": []}'),
    "azure.webpubsub.sys.connected": ("application/json", b"{}"),
    "azure.webpubsub.sys.disconnected": ("application/json", b'{"reason": "bye"}'),
    "azure.webpubsub.user.message": ("text/plain", b"hello"),
}


def cloud_event(event_type: str, connection_id: str = "conn-1", sig: str | None = None) -> dict[str, str]:
    content_type = EVENT_TYPES[event_type][0]
    headers = {
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": event_type,
        "ce-source": f"/hubs/chat/client/{connection_id}",
        "ce-id": "7",
        "ce-time": "2026-11-28T00:00:00Z",
        "ce-hub": "chat",
        "ce-connectionId": connection_id,
        "ce-eventName": event_type.rsplit(".", 1)[-1],
        "ce-userId": "alice",
        "WebHook-Request-Origin": "127.0.0.1",
        "Content-Type": content_type,
    }
    if sig is not None:
        headers["ce-signature"] = sig
    return headers


@pytest.fixture
def recorded(service: RunningWebPubSub) -> list[str]:
    """Every application handler call; a refused event must never add one."""
    calls: list[str] = []
    record_handler_calls(calls)
    return calls


def record_handler_calls(calls: list[str]) -> None:
    """Install a runtime from the current environment whose handlers append to `calls`."""
    registry = EventHandlers()

    def connect_handler(request: ConnectRequest) -> None:
        calls.append("connect")

    def user_handler(event: UserEvent) -> None:
        calls.append("user")

    registry.on_connect(connect_handler)
    registry.on_user_event()(user_handler)
    registry.on_connected(lambda event: calls.append("connected"))
    registry.on_disconnected(lambda event: calls.append("disconnected"))
    use_runtime(Runtime(load_settings(os.environ), registry=registry))


def test_events_from_our_service_are_accepted(app: ServedApp, service: RunningWebPubSub) -> None:
    """The control: a negotiated client connects, so the genuine service's signed connect passed."""
    with open_client(negotiated(app)["url"]):
        record = service.upstream_log.wait_for(lambda r: r.event_name == "connect" and r.status is not None)
    assert record.outcome == "delivered"
    assert record.status == 200


def test_a_service_holding_another_key_cannot_connect_clients(app: ServedApp, service: RunningWebPubSub) -> None:
    """An attacker points their own Web PubSub (same host name, so the origin check passes) at our handler."""
    with service_for(app, ATTACKER_KEY).run_in_thread() as attacker:
        token = client_token(attacker, ATTACKER_KEY, sub="mallory")
        assert refused_status(client_url(attacker, token)) == 401
        record = attacker.upstream_log.wait_for(lambda r: r.event_name == "connect" and r.status is not None)
        assert record.outcome == "rejected"
        assert record.status == 401
        attacker.wait_until_quiet()


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@pytest.mark.parametrize(
    "forged",
    [
        None,
        "",
        sign("conn-1", ATTACKER_KEY),
        sign("conn-1", SERVICE_KEY)[:-1],
        sign("conn-1", SERVICE_KEY).replace("sha256=", "sha1="),
        sign("conn-1", SERVICE_KEY)[7:],  # the digest without its algorithm
        sign("CONN-1", SERVICE_KEY),
        f"{sign('conn-1', ATTACKER_KEY)}, sha256=",
    ],
    ids=["missing", "empty", "other-key", "truncated", "sha1", "bare-digest", "other-case-id", "list"],
)
def test_forged_or_missing_signatures_are_401_and_reach_no_handler(
    app: ServedApp, recorded: list[str], event_type: str, forged: str | None
) -> None:
    body = EVENT_TYPES[event_type][1]
    response = app.client.post("eventhandler", headers=cloud_event(event_type, sig=forged), content=body)
    assert response.status_code == 401
    assert error_code(response) == "unauthenticated_event"
    assert recorded == []


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_the_correct_signature_reaches_the_handler(app: ServedApp, recorded: list[str], event_type: str) -> None:
    """The control for the forged cases: same request, genuine signature."""
    body = EVENT_TYPES[event_type][1]
    headers = cloud_event(event_type, sig=sign("conn-1", SERVICE_KEY))
    response = app.client.post("eventhandler", headers=headers, content=body)
    assert response.status_code < 300
    assert len(recorded) == 1


@dataclass
class Recorder:
    """An event handler URL that records each request and forwards it to the app unchanged."""

    target: str
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {name: value for name, value in request.headers.items() if name not in {"host", "content-length"}}
        self.seen.append((request.method, headers, body))
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.request(request.method, self.target, headers=headers, content=body)
        passed = {name: value for name, value in answer.headers.items() if name.lower() != "content-length"}
        return Response(answer.content, status_code=answer.status_code, headers=passed)


@pytest.fixture
def captured(app: ServedApp, service: RunningWebPubSub) -> Iterator[tuple[dict[str, str], bytes]]:
    """A connect event as a genuine service really sent it, captured on its way to the app."""
    recorder = Recorder(app.url("eventhandler"))
    routes = [Route("/{path:path}", recorder.forward, methods=["GET", "POST", "OPTIONS"])]
    with ServerThread(Starlette(routes=routes), name="recorder") as server:
        handler = EventHandlerSettings(url_template=f"{server.base_url}/api/eventhandler")
        genuine = LocalWebPubSub(ServiceSettings(access_key=SERVICE_KEY, event_handlers=(handler,)))
        with genuine.run_in_thread() as running:
            with open_client(client_url(running, client_token(running, SERVICE_KEY, sub="alice"))):
                pass
            running.wait_until_quiet()
        connects = [(headers, body) for method, headers, body in recorder.seen if headers.get("ce-type") == CONNECT]
        assert len(connects) == 1
        yield connects[0]


def test_a_captured_event_replayed_for_another_connection_is_refused(
    app: ServedApp, captured: tuple[dict[str, str], bytes]
) -> None:
    headers, body = captured
    verbatim = app.client.post("eventhandler", headers=headers, content=body)
    assert verbatim.status_code == 200  # the capture is genuine: its own connection id passes
    replayed = app.client.post("eventhandler", headers={**headers, "ce-connectionid": "someone-else"}, content=body)
    assert replayed.status_code == 401
    assert error_code(replayed) == "unauthenticated_event"


@pytest.mark.parametrize("method", ["OPTIONS", "GET"])
@pytest.mark.parametrize(
    "origin",
    [
        "attacker.example",
        "*",
        "127.0.0.1.attacker.example",
        "attacker.example.127.0.0.1",
        "attacker.example, evil.example",
        "127.0.0.2",
        "",
    ],
)
def test_a_spoofed_origin_cannot_validate_the_webhook(
    app: ServedApp, service: RunningWebPubSub, method: str, origin: str
) -> None:
    response = app.client.request(method, "eventhandler", headers={"WebHook-Request-Origin": origin})
    assert response.status_code == 400
    assert "webhook-allowed-origin" not in response.headers
    assert error_code(response) in {"origin_not_allowed", "missing_origin"}
    if origin:
        assert origin not in response.text


@pytest.mark.parametrize("origin", ["127.0.0.1", "attacker.example, 127.0.0.1"])
def test_our_service_origin_validates_with_our_host_never_an_echo(
    app: ServedApp, service: RunningWebPubSub, origin: str
) -> None:
    response = app.client.options("eventhandler", headers={"WebHook-Request-Origin": origin})
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "127.0.0.1"


# The Web PubSub resource's managed identity and a user of the same app (App Service Authentication
# signs both in; the platform puts each one's object id in X-MS-CLIENT-PRINCIPAL-ID).
SERVICE_IDENTITY = "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f"
SIGNED_IN_USER = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_appservice_mode_lets_only_the_service_identity_through(
    app: ServedApp, service: RunningWebPubSub, event_type: str
) -> None:
    """A signed-in chat user posting events as someone else (no signature) reaches no handler."""
    use_environment(
        **service_settings(service),
        EVENTHANDLER_AUTH="appservice",
        EVENTHANDLER_APPSERVICE_PRINCIPAL_ID=SERVICE_IDENTITY,
        WEBSITE_AUTH_ENABLED="true",
    )
    calls: list[str] = []
    record_handler_calls(calls)
    body = EVENT_TYPES[event_type][1]
    for principal in (SIGNED_IN_USER, SIGNED_IN_USER.upper(), "", None):
        headers = cloud_event(event_type)
        headers["ce-userId"] = "admin"  # the victim
        if principal is not None:
            headers["X-MS-CLIENT-PRINCIPAL-ID"] = principal
        response = app.client.post("eventhandler", headers=headers, content=body)
        assert response.status_code == 401, principal
        assert error_code(response) == "unauthenticated_event"
    assert calls == []
    headers = {**cloud_event(event_type), "X-MS-CLIENT-PRINCIPAL-ID": SERVICE_IDENTITY}
    assert app.client.post("eventhandler", headers=headers, content=body).status_code < 300
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("mode", "missing"),
    [("appservice", "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID"), ("bearer", "EVENTHANDLER_BEARER_PRINCIPAL_ID")],
)
def test_the_event_handler_refuses_to_run_without_the_service_identity(
    app: ServedApp, service: RunningWebPubSub, issuer: Issuer, jwks_url: str, mode: str, missing: str
) -> None:
    """Without it, any signed-in user (appservice) or any identity of the tenant (bearer) would pass."""
    use_environment(
        **service_settings(service),
        EVENTHANDLER_AUTH=mode,
        EVENTHANDLER_BEARER_ISSUER=issuer.issuer,
        EVENTHANDLER_BEARER_AUDIENCE="api://events",
        EVENTHANDLER_BEARER_JWKS_URI=jwks_url,
        WEBSITE_AUTH_ENABLED="true",
    )
    token = issuer.token(audience="api://events", oid=SIGNED_IN_USER)
    headers = {
        **cloud_event(CONNECT),
        "X-MS-CLIENT-PRINCIPAL-ID": SIGNED_IN_USER,
        "Authorization": f"Bearer {token}",
    }
    response = app.client.post("eventhandler", headers=headers, content=EVENT_TYPES[CONNECT][1])
    assert response.status_code == 500
    assert error_code(response) == "configuration_error"
    health = app.client.get("health")
    assert health.status_code == 503
    assert missing in health.json()["checks"]["configuration"]["detail"]
    assert app.client.get("negotiate", params={"userId": "alice"}).status_code == 200  # other routes keep working


def test_entra_mode_events_pass_only_with_the_service_identitys_token(
    app: ServedApp, service: RunningWebPubSub, issuer: Issuer, jwks_url: str
) -> None:
    use_environment(
        **service_settings(service),
        EVENTHANDLER_AUTH="bearer",
        EVENTHANDLER_BEARER_ISSUER=issuer.issuer,
        EVENTHANDLER_BEARER_AUDIENCE="api://events",
        EVENTHANDLER_BEARER_JWKS_URI=jwks_url,
        EVENTHANDLER_BEARER_PRINCIPAL_ID=SERVICE_IDENTITY,
    )
    calls: list[str] = []
    record_handler_calls(calls)
    body = EVENT_TYPES[CONNECT][1]
    for token in (issuer.token(audience="api://events", oid=SIGNED_IN_USER), issuer.token(audience="api://events")):
        headers = {**cloud_event(CONNECT), "Authorization": f"Bearer {token}"}
        response = app.client.post("eventhandler", headers=headers, content=body)
        assert response.status_code == 401
    assert calls == []
    token = issuer.token(audience="api://events", oid=SERVICE_IDENTITY)
    headers = {**cloud_event(CONNECT), "Authorization": f"Bearer {token}"}
    assert app.client.post("eventhandler", headers=headers, content=body).status_code < 300
    assert calls == ["connect"]
