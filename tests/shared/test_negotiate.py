"""Negotiate end to end through the Functions adapter: identity, group policy, token, errors."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import cast

import azure.functions as func
import jwt
import pytest

import function_app
from shared.bearer import BearerValidator
from shared.config import BearerSettings
from shared.identity import BearerCaller
from shared.negotiate import _utc_timestamp
from shared.runtime import Runtime, use_runtime
from shared.tokens import ClientAccess, KeyTokenSource
from tests.support.fakes import EMULATOR_KEY, LOCAL_CONNECTION_STRING, UnavailableAtFirst
from tests.support.functions import http_request
from tests.support.issuer import Issuer
from tests.support.settings import local_settings

AUDIENCE = "http://localhost:8080/client/hubs/chat"
JSON_TYPE = "application/json"


def negotiate(
    query: list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> func.HttpResponse:
    request = http_request(method, "negotiate", query=query, headers=headers, body=body)
    return cast(func.HttpResponse, function_app.negotiate(request))


def payload(response: func.HttpResponse) -> dict[str, object]:
    document: dict[str, object] = json.loads(response.get_body())
    return document


def claims_of(response: func.HttpResponse) -> dict[str, object]:
    token = str(payload(response)["token"])
    decoded: dict[str, object] = jwt.decode(token, EMULATOR_KEY, algorithms=["HS256"], audience=AUDIENCE)
    return decoded


def install(**overrides: str) -> None:
    use_runtime(Runtime(local_settings(**overrides)))


def test_anonymous_negotiate_returns_a_verifiable_client_url() -> None:
    install(NEGOTIATE_GROUPS="chat,news", TOKEN_LIFETIME_MINUTES="15")
    before = int(time.time())
    response = negotiate([("userId", "alice")])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    body = payload(response)
    assert set(body) == {"url", "baseUrl", "token", "expiresOn"}
    assert body["baseUrl"] == "ws://localhost:8080/client/hubs/chat"
    assert body["url"] == f"{body['baseUrl']}?access_token={body['token']}"
    claims = claims_of(response)
    assert claims["sub"] == "alice"
    assert claims["role"] == [
        "webpubsub.joinLeaveGroup.chat",
        "webpubsub.sendToGroup.chat",
        "webpubsub.joinLeaveGroup.news",
        "webpubsub.sendToGroup.news",
    ]
    assert "webpubsub.group" not in claims
    exp = int(str(claims["exp"]))
    assert before + 15 * 60 <= exp <= int(time.time()) + 15 * 60
    expires_on = str(body["expiresOn"])
    assert expires_on.endswith("Z")
    parsed = datetime.strptime(expires_on, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert exp - 2 <= parsed.timestamp() <= exp


def test_requested_groups_by_query_narrow_the_grant_and_join() -> None:
    install(NEGOTIATE_GROUPS="chat,news")
    claims = claims_of(negotiate([("userId", "alice"), ("group", "news"), ("group", "news")]))
    assert claims["role"] == ["webpubsub.joinLeaveGroup.news", "webpubsub.sendToGroup.news"]
    assert claims["webpubsub.group"] == ["news"]


def test_requested_groups_by_post_body() -> None:
    install(NEGOTIATE_GROUPS="chat,news")
    response = negotiate(
        [("userId", "bob")],
        method="POST",
        headers={"Content-Type": "application/json"},
        body=b'{"groups": ["chat"]}',
    )
    assert response.status_code == 200
    assert claims_of(response)["webpubsub.group"] == ["chat"]


def test_post_without_body_grants_the_defaults() -> None:
    install()
    assert claims_of(negotiate([("userId", "bob")], method="POST"))["sub"] == "bob"


@pytest.mark.parametrize(
    ("query", "body", "content_type", "status", "code"),
    [
        ([("userId", "a"), ("group", "admins")], b"", None, 403, "group_not_permitted"),
        ([("userId", "a")], b'{"groups": ["admins"]}', "application/json", 403, "group_not_permitted"),
        ([("userId", "a")], b"{not json", "application/json", 400, "invalid_json"),
        ([("userId", "a")], b"\xff\xfe", "application/json", 400, "invalid_json"),
        ([("userId", "a")], b'["chat"]', "application/json", 400, "invalid_body"),
        ([("userId", "a")], b'{"groups": "chat"}', "application/json", 400, "invalid_groups"),
        ([("userId", "a")], b'{"groups": [1]}', "application/json", 400, "invalid_groups"),
        ([("userId", "a")], b'{"groups": []}', "text/plain", 415, "unsupported_media_type"),
        ([("userId", "a")], b" " + b"x" * 20000, "application/json", 413, "payload_too_large"),
        ([("userId", "a"), ("group", " ")], b"", None, 400, "invalid_group"),
        ([], b"", None, 400, "missing_user_id"),
        ([("userId", "")], b"", None, 400, "invalid_user_id"),
        ([("userId", "a"), ("protocol", "amqp")], b"", None, 400, "unknown_protocol"),
        ([("userId", "a"), ("protocol", "")], b"", None, 400, "unknown_protocol"),
        ([("userId", "a"), ("protocol", "mqtt"), ("protocol", "default")], b"", None, 400, "invalid_protocol"),
        (
            [("userId", "a"), ("protocol", "mqtt")],
            b'{"protocol": "socketio"}',
            "application/json",
            400,
            "invalid_protocol",
        ),
        ([("userId", "a")], b'{"protocol": 5}', "application/json", 400, "invalid_protocol"),
        ([("userId", "a"), ("hub", "lobby")], b"", None, 404, "unknown_hub"),
        ([("userId", "a"), ("hub", "chat"), ("hub", "other")], b"", None, 400, "invalid_hub"),
        ([("userId", "a")], b'{"hub": ["chat"]}', "application/json", 400, "invalid_hub"),
        ([("hub", "lobby")], b"", None, 400, "missing_user_id"),  # the caller first: no hub names to strangers
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(
    query: list[tuple[str, str]], body: bytes, content_type: str | None, status: int, code: str
) -> None:
    install()
    headers = {"Content-Type": content_type} if content_type else {}
    response = negotiate(query, method="POST" if body else "GET", headers=headers, body=body)
    assert response.status_code == status
    error = payload(response)["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["message"]
    assert "token" not in payload(response)


def test_forbidden_names_the_group() -> None:
    install()
    response = negotiate([("userId", "a"), ("group", "chat"), ("group", "admins")])
    error = payload(response)["error"]
    assert isinstance(error, dict)
    assert "'admins'" in str(error["message"])


def test_userid_in_body_is_ignored() -> None:
    """Only the mode decides who the caller is; a body field never does."""
    install()
    response = negotiate([("userId", "alice")], method="POST", body=b'{"userId": "admin"}')
    assert claims_of(response)["sub"] == "alice"


def test_appservice_mode_uses_the_platform_principal() -> None:
    install(NEGOTIATE_AUTH="appservice", WEBSITE_AUTH_ENABLED="true")
    response = negotiate(headers={"X-MS-CLIENT-PRINCIPAL-ID": "00000000-aaaa"})
    assert claims_of(response)["sub"] == "00000000-aaaa"
    refused = negotiate([("userId", "alice")])
    assert refused.status_code == 401
    assert "token" not in payload(refused)


def bearer_runtime(issuer: Issuer) -> None:
    settings = local_settings(
        NEGOTIATE_AUTH="bearer", NEGOTIATE_BEARER_ISSUER=issuer.issuer, NEGOTIATE_BEARER_AUDIENCE="api://negotiate"
    )
    identifier = BearerCaller(BearerValidator(BearerSettings(issuer.issuer, "api://negotiate"), fetch=issuer.fetch))
    use_runtime(Runtime(settings, identifier=identifier))


def test_bearer_mode_uses_the_token_and_refuses_forged_headers(issuer: Issuer) -> None:
    bearer_runtime(issuer)
    token = issuer.user_token(oid="oid-42")
    assert claims_of(negotiate(headers={"Authorization": f"Bearer {token}"}))["sub"] == "oid-42"
    forged = negotiate([("userId", "admin")], headers={"X-MS-CLIENT-PRINCIPAL-ID": "admin"})
    assert forged.status_code == 401
    assert forged.headers["WWW-Authenticate"] == "Bearer"
    expired = negotiate(headers={"Authorization": f"Bearer {issuer.user_token(oid='x', lifetime=-600)}"})
    assert expired.status_code == 401
    error = payload(expired)["error"]
    assert isinstance(error, dict)
    assert "expired" in str(error["message"])


def test_dependency_down_is_503_with_retry_after() -> None:
    use_runtime(
        Runtime(
            local_settings(), token_source=UnavailableAtFirst(KeyTokenSource("http://localhost:8080", EMULATOR_KEY))
        )
    )
    response = negotiate([("userId", "a")])
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    error = payload(response)["error"]
    assert isinstance(error, dict)
    assert error["code"] == "dependency_unavailable"


def test_misconfiguration_is_a_generic_500_with_the_cause_in_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEBPUBSUB_CREDENTIAL", "connectionstring")
    monkeypatch.setenv(
        "WEBPUBSUB_CONNECTION_STRING", LOCAL_CONNECTION_STRING.replace("localhost:8080", "localhost:8080;Port=8080")
    )
    monkeypatch.setenv("NEGOTIATE_AUTH", "anonymous")
    with caplog.at_level(logging.ERROR):
        response = negotiate([("userId", "a")])
    assert response.status_code == 500
    error = payload(response)["error"]
    assert isinstance(error, dict)
    assert error["code"] == "configuration_error"
    assert "WEBPUBSUB_CONNECTION_STRING" not in response.get_body().decode()
    assert "WEBPUBSUB_CONNECTION_STRING" in caplog.text
    assert EMULATOR_KEY not in caplog.text


def test_unexpected_failure_is_a_generic_500_never_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(KeyTokenSource):
        def client_access(self, **kwargs: object) -> ClientAccess:
            raise RuntimeError("boom with details")

    use_runtime(Runtime(local_settings(), token_source=Broken("http://localhost:8080", EMULATOR_KEY)))
    with caplog.at_level(logging.ERROR):
        response = negotiate([("userId", "a")])
    assert response.status_code == 500
    assert b"boom" not in response.get_body()
    assert "boom with details" in caplog.text


def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    install()
    with caplog.at_level(logging.DEBUG):
        tokens = [str(payload(negotiate([("userId", f"user{n}")]))["token"]) for n in range(3)]
        negotiate([("userId", "a"), ("group", "admins")])
        negotiate([])
    assert "Negotiated" in caplog.text
    assert EMULATOR_KEY not in caplog.text
    for token in tokens:
        assert token not in caplog.text
        assert token.split(".")[2] not in caplog.text


def audience_of(response: func.HttpResponse, path: str) -> dict[str, object]:
    """The token's claims, checked as the endpoint at `path` checks them (its URL is the audience)."""
    token = str(payload(response)["token"])
    claims: dict[str, object] = jwt.decode(
        token, EMULATOR_KEY, algorithms=["HS256"], audience=f"http://localhost:8080{path}"
    )
    return claims


@pytest.mark.parametrize(
    ("protocol", "path"),
    [
        ("mqtt", "/clients/mqtt/hubs/chat"),
        ("MQTT", "/clients/mqtt/hubs/chat"),
        ("socketio", "/clients/socketio/hubs/chat"),
        ("default", "/client/hubs/chat"),
    ],
)
def test_each_client_protocol_gets_its_url_with_the_same_identity_and_roles(protocol: str, path: str) -> None:
    install(NEGOTIATE_GROUPS="chat,news")
    default = claims_of(negotiate([("userId", "alice"), ("group", "news")]))
    response = negotiate([("userId", "alice"), ("group", "news"), ("protocol", protocol)])
    assert response.status_code == 200
    body = payload(response)
    assert body["baseUrl"] == f"ws://localhost:8080{path}"
    assert body["url"] == f"{body['baseUrl']}?access_token={body['token']}"
    claims = audience_of(response, path)
    for claim in ("sub", "role", "webpubsub.group"):
        assert claims[claim] == default[claim]


def test_the_protocol_may_come_in_the_body() -> None:
    install()
    response = negotiate(
        [("userId", "alice")],
        method="POST",
        headers={"Content-Type": "application/json"},
        body=b'{"protocol": "mqtt", "groups": ["chat"]}',
    )
    assert audience_of(response, "/clients/mqtt/hubs/chat")["webpubsub.group"] == ["chat"]


def test_an_unknown_protocol_names_the_known_ones() -> None:
    install()
    error = payload(negotiate([("userId", "a"), ("protocol", "amqp")]))["error"]
    assert isinstance(error, dict)
    assert "default, mqtt, socketio" in str(error["message"])


class TestSeveralHubs:
    @pytest.fixture(autouse=True)
    def hubs(self) -> None:
        install(
            WEBPUBSUB_HUBS="chat notifications",
            NEGOTIATE_GROUPS="chat,news",
            NEGOTIATE_GROUPS_NOTIFICATIONS="alerts",
        )

    def test_without_a_hub_the_default_hub_is_used(self) -> None:
        response = negotiate([("userId", "alice")])
        assert payload(response)["baseUrl"] == "ws://localhost:8080/client/hubs/chat"
        assert claims_of(response)["role"] == [
            "webpubsub.joinLeaveGroup.chat",
            "webpubsub.sendToGroup.chat",
            "webpubsub.joinLeaveGroup.news",
            "webpubsub.sendToGroup.news",
        ]

    def test_a_named_hub_gets_its_own_groups(self) -> None:
        response = negotiate([("userId", "alice"), ("hub", "Notifications")])
        assert payload(response)["baseUrl"] == "ws://localhost:8080/client/hubs/notifications"  # configured spelling
        claims = audience_of(response, "/client/hubs/notifications")
        assert claims["role"] == ["webpubsub.joinLeaveGroup.alerts", "webpubsub.sendToGroup.alerts"]

    def test_groups_of_another_hub_are_not_permitted(self) -> None:
        response = negotiate([("userId", "alice"), ("hub", "notifications"), ("group", "chat")])
        assert response.status_code == 403
        assert negotiate([("userId", "alice"), ("hub", "notifications"), ("group", "alerts")]).status_code == 200

    def test_hub_and_protocol_combine(self) -> None:
        response = negotiate([("userId", "alice"), ("hub", "notifications"), ("protocol", "mqtt")])
        audience_of(response, "/clients/mqtt/hubs/notifications")

    def test_an_unserved_hub_names_the_served_ones(self) -> None:
        response = negotiate([("userId", "alice"), ("hub", "lobby")])
        assert response.status_code == 404
        error = payload(response)["error"]
        assert isinstance(error, dict)
        assert "'chat', 'notifications'" in str(error["message"])
        assert "token" not in payload(response)

    def test_the_default_hub_can_be_any_of_them(self) -> None:
        install(WEBPUBSUB_HUBS="chat notifications", WEBPUBSUB_HUB="notifications")
        assert payload(negotiate([("userId", "a")]))["baseUrl"] == "ws://localhost:8080/client/hubs/notifications"


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2030, 6, 1, tzinfo=UTC),
    ],
)
def test_expires_on_is_written_as_strftime_writes_it(moment: datetime) -> None:
    assert _utc_timestamp(moment) == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
