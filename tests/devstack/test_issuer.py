"""Hub settings and event handler auth "ManagedIdentity": the service as its own local OpenID issuer.

With ManagedIdentity auth the real service calls the event handler with `Authorization: Bearer`
and its managed identity's token for the configured resource (howto-develop-eventhandler,
"Authentication"; the emulator's UpstreamEventDispatcher asks for `<resource>/.default`). The
app checks issuer, audience, signature and the identity's object id (EVENTHANDLER_AUTH=bearer),
here with the app's own validator and, end to end, with the app itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt
import pytest

from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, RunningWebPubSub, ServiceSettings
from devstack.webpubsub.settings import DEFAULT_SERVICE_PRINCIPAL_ID, HubSettings
from shared.bearer import BearerValidator
from shared.config import BearerSettings
from tests.support.apphost import ServedApp, serve_app
from tests.support.local_service import (
    FakeEventHandler,
    client_token,
    client_url,
    json_client,
    open_socket,
    refused_handshake,
)
from tests.support.settings import use_environment

AUDIENCE = "api://local-functions-app"


def test_managed_identity_handlers_get_a_token_the_apps_validator_accepts(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    handler = EventHandlerSettings(url_template=event_handler.url, managed_identity_resource=AUDIENCE)
    service.service.configure_event_handlers([handler])
    with json_client(service, hub):
        connect = event_handler.wait_for_event("azure.webpubsub.sys.connect")
    validation = next(request for request in event_handler.requests if request.method == "OPTIONS")
    identity = service.upstream_identity
    assert identity.principal_id == DEFAULT_SERVICE_PRINCIPAL_ID
    # The app's bearer validator, configured as the app would be (JWKS over loopback http).
    settings = BearerSettings(
        issuer=identity.issuer, audience=AUDIENCE, jwks_uri=identity.jwks_uri, principal_id=identity.principal_id
    )
    for request in (connect, validation):
        authorization = request.header("authorization") or ""
        assert authorization.startswith("Bearer ")
        claims = BearerValidator(settings).validate(authorization[7:])
        assert (claims["oid"], claims["aud"], claims["iss"]) == (identity.principal_id, AUDIENCE, identity.issuer)
    assert jwt.get_unverified_header(authorization[7:])["alg"] == "RS256"
    discovery = httpx.get(identity.issuer + "/.well-known/openid-configuration").json()
    assert (discovery["issuer"], discovery["jwks_uri"]) == (identity.issuer, identity.jwks_uri)
    other = BearerSettings(issuer=identity.issuer, audience="api://another-app", jwks_uri=identity.jwks_uri)
    with pytest.raises(Exception, match="another audience"):
        BearerValidator(other).validate(authorization[7:])


def test_handlers_without_auth_send_no_authorization(
    service: RunningWebPubSub, event_handler: FakeEventHandler, hub: str
) -> None:
    with json_client(service, hub):
        connect = event_handler.wait_for_event("azure.webpubsub.sys.connect")
    assert connect.header("authorization") is None


def test_each_hub_has_its_own_ordered_event_handlers(
    service: RunningWebPubSub, event_handler: FakeEventHandler
) -> None:
    base = event_handler.base_url
    chat = HubSettings(
        "Chat",
        (
            EventHandlerSettings(
                url_template=f"{base}/first/{{hub}}/{{event}}",
                system_events=frozenset(),
                user_event_pattern="vote,poll*",
            ),
            EventHandlerSettings(url_template=f"{base}/second/{{hub}}/{{event}}", system_events=frozenset({"connect"})),
        ),
    )
    notifications = HubSettings("notifications", (EventHandlerSettings(url_template=f"{base}/notify/{{event}}"),))
    default = EventHandlerSettings(url_template=f"{base}/default/{{hub}}/{{event}}")
    service.service.configure_event_handlers([default], [chat, notifications])
    try:
        with json_client(service, "chat") as client:
            client.send({"type": "event", "event": "vote", "dataType": "text", "data": "1"})
            client.send({"type": "event", "event": "pollresult", "dataType": "text", "data": "2"})
            client.send({"type": "event", "event": "chatter", "dataType": "text", "data": "3"})
            event_handler.wait_for(lambda request: request.path == "/second/chat/chatter")
        with json_client(service, "notifications"):
            event_handler.wait_for(lambda request: request.path == "/notify/connected")
        with json_client(service, "elsewhere"):
            event_handler.wait_for(lambda request: request.path == "/default/elsewhere/connected")
        chat_posts = [
            request.path for request in event_handler.events() if request.path.startswith(("/first", "/second"))
        ]
        # First match wins: vote and poll* go to the first entry; connect and other events to the second;
        # the first entry receives no system events, the second only connect.
        assert chat_posts == [
            "/second/chat/connect",
            "/first/chat/vote",
            "/first/chat/pollresult",
            "/second/chat/chatter",
        ]
    finally:
        service.service.configure_event_handlers([EventHandlerSettings(url_template=event_handler.url)], [])


def test_the_hub_settings_are_readable_in_the_services_shape(event_handler: FakeEventHandler) -> None:
    chat = HubSettings(
        "chat",
        (
            EventHandlerSettings(
                url_template="http://127.0.0.1:7071/api/eventhandler?code=secret-function-key",
                system_events=frozenset({"connect", "disconnected"}),
                user_event_pattern="*",
                managed_identity_resource=AUDIENCE,
            ),
        ),
    )
    with LocalWebPubSub(ServiceSettings(hubs=(chat,))).run_in_thread() as service:
        listed = httpx.get(f"{service.endpoint}/_devstack/hubs").json()
        one = httpx.get(f"{service.endpoint}/_devstack/hubs/chat").json()
        other = httpx.get(f"{service.endpoint}/_devstack/hubs/other").json()
    expected = {
        "name": "chat",
        "properties": {
            "eventHandlers": [
                {
                    "urlTemplate": "http://127.0.0.1:7071/api/eventhandler?code=***",
                    "userEventPattern": "*",
                    "systemEvents": ["connect", "disconnected"],
                    "auth": {"type": "ManagedIdentity", "managedIdentity": {"resource": AUDIENCE}},
                }
            ]
        },
    }
    assert listed["value"] == [expected]
    assert one == expected
    assert other["properties"]["eventHandlers"][0]["auth"] == {"type": "None"}
    assert "secret-function-key" not in str(listed)


@pytest.fixture
def app() -> Iterator[ServedApp]:
    with serve_app() as served:
        yield served


def test_the_app_accepts_the_services_events_with_eventhandler_auth_bearer(app: ServedApp) -> None:
    """End to end: the real app, entra mode, EVENTHANDLER_AUTH=bearer with the local issuer's values."""
    handler = EventHandlerSettings(url_template=app.url("eventhandler"), managed_identity_resource=AUDIENCE)
    with LocalWebPubSub(ServiceSettings(event_handlers=(handler,))).run_in_thread() as service:
        use_environment(
            WEBPUBSUB_CREDENTIAL="entra",
            WEBPUBSUB_ENDPOINT=service.endpoint,
            NEGOTIATE_AUTH="anonymous",
            **service.identity_environment(),
            **service.event_handler_auth_settings(AUDIENCE),
        )
        token = client_token(service.endpoint, "chat", user_id="ada")
        with open_socket(client_url(service, "chat", token), "json.webpubsub.azure.v1") as client:
            assert '"connected"' in str(client.recv(timeout=10))
        accepted = service.upstream_log.wait_for(lambda record: record.event_name == "connect")
        assert accepted.outcome == "delivered"
        # The same app refuses a service that sends no token: connect is refused with 401.
        service.service.configure_event_handlers([EventHandlerSettings(url_template=app.url("eventhandler"))])
        assert refused_handshake(client_url(service, "chat", token), "json.webpubsub.azure.v1")[0] == 401
