"""The publish API: who may call it, and every body it refuses, in process with the real SDK at a fake service."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, strategies as st

from shared.adapter import handle
from shared.bearer import BearerValidator
from shared.config import BearerSettings, PublishAuth, PublishSettings
from shared.errors import Forbidden, Unauthorized
from shared.publish import (
    MAX_BODY_BYTES,
    AppServicePublisher,
    BearerPublisher,
    OpenPublisher,
    PublishApi,
    PublishAuthenticator,
    build_publish_authenticator,
)
from shared.service_client import ServiceClient
from shared.tokens import KeyTokenSource
from shared.web import Request, Response
from tests.support.fakes import EMULATOR_KEY, FakeAdapter, transport_for, webpubsub_success
from tests.support.fuzz import generated_inputs
from tests.support.issuer import Issuer

ENDPOINT = "https://contoso.webpubsub.azure.com"
AUDIENCE = "api://publish"
ROLE = "WebPubSub.Publish"


def api(authenticator: PublishAuthenticator | None = None) -> tuple[PublishApi, FakeAdapter]:
    adapter = FakeAdapter(webpubsub_success)
    tokens = KeyTokenSource(ENDPOINT, EMULATOR_KEY, sdk_options={"transport": transport_for(adapter)})
    clients = {"chat": ServiceClient(tokens, "chat"), "news": ServiceClient(tokens, "news")}

    def client(hub: str | None) -> ServiceClient:
        from shared.errors import NotFound

        if (hub or "chat") not in clients:
            raise NotFound("unknown hub", code="unknown_hub")
        return clients[hub or "chat"]

    return PublishApi(authenticator=authenticator or OpenPublisher(), clients=client), adapter


def post(publish: PublishApi, route: str, body: Any, **headers: str) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = Request(
        "POST", f"http://localhost/api/{route}", headers={k.lower(): v for k, v in headers.items()}, body=raw
    )
    return handle(request, getattr(publish, route))


def code(response: Response) -> str:
    return str(json.loads(response.body)["error"]["code"])


# --- who may call ---------------------------------------------------------------------------------


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


def bearer(issuer: Issuer) -> BearerPublisher:
    settings = BearerSettings(issuer=issuer.issuer, audience=AUDIENCE)
    return BearerPublisher(BearerValidator(settings, fetch=issuer.fetch), ROLE)


def test_a_client_credentials_token_with_the_role_may_publish(issuer: Issuer) -> None:
    publish, adapter = api(bearer(issuer))
    token = issuer.token(audience=AUDIENCE, roles=[ROLE], azp="crm-backend", idtyp="app")
    response = post(publish, "messages", {"to": {"all": True}, "data": "hi"}, Authorization=f"Bearer {token}")
    assert response.status == 202
    assert len(adapter.seen) == 1


@pytest.mark.parametrize(
    ("claims", "status", "error"),
    [
        (None, 401, "missing_token"),
        ({"audience": "api://negotiate", "roles": [ROLE]}, 401, "invalid_token"),
        ({"audience": AUDIENCE, "roles": [ROLE], "lifetime": -3600}, 401, "invalid_token"),
        ({"audience": AUDIENCE}, 403, "missing_role"),
        ({"audience": AUDIENCE, "roles": ["WebPubSub.Read"]}, 403, "missing_role"),
        ({"audience": AUDIENCE, "roles": ROLE}, 403, "missing_role"),  # a string is not a list of roles
        ({"audience": AUDIENCE, "scp": "user_impersonation"}, 403, "missing_role"),  # an end user, no role
    ],
)
def test_the_publish_api_refuses_what_is_not_a_publisher(
    issuer: Issuer, claims: dict[str, Any] | None, status: int, error: str
) -> None:
    publish, adapter = api(bearer(issuer))
    headers = {} if claims is None else {"Authorization": f"Bearer {issuer.token(**claims)}"}
    response = post(publish, "messages", {"to": {"all": True}, "data": "hi"}, **headers)
    assert (response.status, code(response)) == (status, error)
    assert adapter.seen == []


def test_a_token_from_another_issuer_is_refused(issuer: Issuer) -> None:
    stranger = Issuer(issuer="https://login.example.test/other/v2.0")
    publish, _ = api(bearer(issuer))
    token = stranger.token(audience=AUDIENCE, roles=[ROLE])
    response = post(publish, "messages", {"to": {"all": True}, "data": "x"}, Authorization=f"Bearer {token}")
    assert response.status == 401


def test_authentication_comes_before_the_body(issuer: Issuer) -> None:
    """A stranger learns nothing about what a valid body looks like."""
    publish, _ = api(bearer(issuer))
    assert post(publish, "messages", b"not json").status == 401


def principal(*roles: str, role_type: str = "roles") -> str:
    claims = [{"typ": role_type, "val": role} for role in roles] + [{"typ": "name", "val": "crm"}]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": role_type}
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.mark.parametrize("role_type", ["roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"])
def test_an_app_service_principal_with_the_role_may_publish(role_type: str) -> None:
    publisher = AppServicePublisher(ROLE)
    request = Request("POST", "http://x", headers={"x-ms-client-principal": principal(ROLE, role_type=role_type)})
    assert publisher.authenticate(request).name == "unnamed"


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, Unauthorized),
        ("not base64!", Unauthorized),
        (base64.b64encode(b'{"claims": 3}').decode(), Unauthorized),
        (principal("WebPubSub.Read"), Forbidden),
        (principal(), Forbidden),
    ],
)
def test_an_app_service_principal_without_the_role_is_refused(header: str | None, error: type[Exception]) -> None:
    headers = {} if header is None else {"x-ms-client-principal": header}
    with pytest.raises(error):
        AppServicePublisher(ROLE).authenticate(Request("POST", "http://x", headers=headers))


# --- the bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"to": {"everyone": True}, "data": "x"}, "unknown_target"),
        ({"to": {"all": "yes"}, "data": "x"}, "invalid_target"),
        ({"to": {"group": "a", "user": "b"}, "data": "x"}, "invalid_target"),
        ({"to": {"group": ""}, "data": "x"}, "invalid_target"),
        ({"to": {"group": "a"}}, "missing_data"),
        ({"to": {"group": "a"}, "data": ""}, "empty_data"),
        ({"to": {"group": "a"}, "data": "!!", "dataType": "binary"}, "invalid_base64"),
        ({"to": {"group": "a"}, "data": "", "dataType": "binary"}, "empty_data"),
        ({"to": {"group": "a"}, "data": {"x": 1}, "dataType": "text"}, "invalid_data"),
        ({"to": {"group": "a"}, "data": "x", "dataType": "xml"}, "invalid_data_type"),
        ({"to": {"user": "u"}, "data": "x", "excluded": ["c1"]}, "invalid_excluded"),
        ({"to": {"group": "a"}, "data": "x", "excluded": "c1"}, "invalid_excluded"),
        ({"to": {"connection": "c"}, "data": "x", "filter": "userId eq 'a'"}, "invalid_filter"),
        ({"to": {"group": "a"}, "data": "x", "exclude": ["c1"]}, "unknown_field"),
        ({"to": {"group": "a"}, "data": "x", "hub": "elsewhere"}, "unknown_hub"),
        ({"to": {"group": "\u0000"}, "data": "x"}, "invalid_group"),
        ([1, 2], "invalid_body"),
    ],
)
def test_bad_message_bodies_get_a_4xx_naming_the_problem(body: Any, error: str) -> None:
    publish, adapter = api()
    response = post(publish, "messages", body)
    assert 400 <= response.status < 500
    assert code(response) == error
    assert adapter.seen == []


def test_an_oversized_message_is_413_before_the_service_is_called() -> None:
    publish, adapter = api()
    response = post(publish, "messages", b'{"to": {"all": true}, "data": "' + b"x" * MAX_BODY_BYTES + b'"}')
    assert response.status == 413
    binary = base64.b64encode(b"\x00" * (MAX_BODY_BYTES * 3 // 4 - 64)).decode()
    assert post(publish, "messages", {"to": {"all": True}, "data": binary, "dataType": "binary"}).status == 202
    assert len(adapter.seen) == 1


def test_a_message_to_a_named_hub_goes_to_that_hub() -> None:
    publish, adapter = api()
    response = post(publish, "messages", {"to": {"connection": "c1"}, "data": [1, 2], "hub": "news"})
    assert response.status == 202
    assert json.loads(response.body) == {"hub": "news", "to": {"connection": "c1"}, "dataType": "json", "bytes": 5}
    assert adapter.seen[0].path == "/api/hubs/news/connections/c1/:send"


@pytest.mark.parametrize(
    ("route", "body", "error"),
    [
        ("groups", {"action": "join", "group": "a", "user": "u"}, "invalid_action"),
        ("groups", {"action": "add", "group": "a"}, "invalid_target"),
        ("groups", {"action": "add", "group": "a", "user": "u", "connection": "c"}, "invalid_target"),
        ("groups", {"action": "add", "user": "u"}, "missing_group"),
        ("groups", {"action": "removeFromAll", "group": "a", "user": "u"}, "invalid_group"),
        ("connections", {"action": "close"}, "invalid_target"),
        ("connections", {"action": "close", "to": {"connection": "c"}, "excluded": ["d"]}, "invalid_excluded"),
        ("connections", {"action": "close", "to": {"all": True}, "reason": 5}, "invalid_reason"),
        ("connections", {"action": "exists", "to": {"all": True}}, "unknown_target"),
        (
            "permissions",
            {"action": "grant", "permission": "admin", "connection": "c", "group": "g"},
            "invalid_permission",
        ),
        ("permissions", {"action": "grant", "permission": "sendToGroup", "group": "g"}, "missing_connection"),
    ],
)
def test_bad_management_bodies_get_a_4xx_naming_the_problem(route: str, body: Any, error: str) -> None:
    publish, adapter = api()
    response = post(publish, route, body)
    assert (response.status, code(response)) == (400, error)
    assert adapter.seen == []


def test_management_actions_reach_the_service() -> None:
    publish, adapter = api()
    assert post(publish, "groups", {"action": "add", "group": "mods", "user": "alice"}).status == 204
    assert post(publish, "groups", {"action": "removeFromAll", "connection": "c1"}).status == 204
    assert post(publish, "connections", {"action": "close", "to": {"group": "mods"}, "reason": "bye"}).status == 204
    grant = {"action": "grant", "permission": "sendToGroup", "connection": "c1", "group": "mods"}
    assert post(publish, "permissions", grant).status == 204
    assert [(seen.method, seen.path) for seen in adapter.seen] == [
        ("PUT", "/api/hubs/chat/users/alice/groups/mods"),
        ("DELETE", "/api/hubs/chat/connections/c1/groups"),
        ("POST", "/api/hubs/chat/groups/mods/:closeConnections"),
        ("PUT", "/api/hubs/chat/permissions/sendToGroup/connections/c1"),
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "to": json_values | st.sampled_from([{"all": True}, {"group": "chat"}, {"user": "u"}]),
            "data": json_values,
            "dataType": st.sampled_from(["text", "json", "binary", "other"]) | json_values,
            "excluded": json_values,
            "filter": json_values,
            "hub": json_values,
            "action": st.sampled_from(["add", "remove", "removeFromAll", "close", "exists", "grant", "check"]),
            "group": json_values,
            "user": json_values,
            "connection": json_values,
            "permission": st.sampled_from(["sendToGroup", "joinLeaveGroup"]) | json_values,
            "reason": json_values,
        },
    ).map(lambda document: json.dumps(document).encode()),
)


@generated_inputs(300)
@given(route=st.sampled_from(["messages", "groups", "connections", "permissions"]), body=bodies)
def test_fuzzed_bodies_never_produce_a_5xx(route: str, body: bytes) -> None:
    publish, _ = api()
    response = post(publish, route, body)
    assert response.status < 500, response.body


def test_an_app_that_never_set_up_the_api_answers_404_naming_the_settings() -> None:
    publish, adapter = api(build_publish_authenticator(PublishSettings(auth=PublishAuth.BEARER)))
    response = post(publish, "messages", {"to": {"all": True}, "data": "x"})
    assert (response.status, code(response)) == (404, "publish_not_configured")
    assert b"PUBLISH_BEARER_ISSUER" in response.body
    assert adapter.seen == []
