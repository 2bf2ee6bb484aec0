"""`python -m doctor handler` against deliberately broken event handlers, served for real.

One small Starlette handler runs on a free port for the module; each test chooses how it answers
(no allowed origin, wrong status, wrong content type, 5xx on connect, no signature check) and
reads back what the doctor sent, which must be what the service sends.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.servers import ServerThread
from doctor.cli import main
from doctor.handler import (
    CONNECT_REQUEST,
    HANDSHAKE_FAILED,
    INVALID_STATUS_CODE,
    MISSING_ALLOWED_ORIGIN,
    TEST_MESSAGE,
    UNEXPECTED_RESPONSE,
)
from doctor.target import AzureAccess
from shared.protocol import signature_for
from tests.support.fakes import EMULATOR_KEY, FakeCredential
from tests.support.settings import LOCAL_ENVIRON

ENDPOINT = "https://contoso.webpubsub.azure.com"
ORIGIN = "contoso.webpubsub.azure.com"
CONNECTION_STRING = f"Endpoint={ENDPOINT};AccessKey={EMULATOR_KEY};Version=1.0;"
GOOD_CONNECT_BODY = b'{"userId":"webpubsub-doctor","groups":["chat"],"roles":["webpubsub.sendToGroup.chat"]}'


@dataclass
class Behaviour:
    """How the fake handler answers; the defaults are a correct handler."""

    allowed_origin: str | None = ORIGIN
    options_status: int = 200
    get_status: int = 200
    connect_status: int = 200
    connect_body: bytes = GOOD_CONNECT_BODY
    connect_content_type: str = "application/json"
    user_status: int = 200
    user_body: bytes = b"echo"
    user_content_type: str = "text/plain; charset=utf-8"
    checks_signature: bool = True
    bearer: str | None = None  # the token it admits instead of a signature (EVENTHANDLER_AUTH=bearer)
    location: str | None = None  # a Location header on the validation answer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeHandler:
    behaviour: Behaviour = field(default_factory=Behaviour)
    seen: list[Seen] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        seen = Seen(request.method, request.url.path, dict(request.headers), await request.body())
        self.seen.append(seen)
        rules = self.behaviour
        if request.method in {"OPTIONS", "GET"}:
            status = rules.options_status if request.method == "OPTIONS" else rules.get_status
            if seen.headers.get("webhook-request-origin") != ORIGIN:
                return Response(status_code=400)
            headers = {"WebHook-Allowed-Origin": rules.allowed_origin} if rules.allowed_origin else {}
            if rules.location:
                headers["Location"] = rules.location
            return Response(status_code=status, headers=headers)
        connection_id = seen.headers.get("ce-connectionid", "")
        if rules.bearer is not None:
            if seen.headers.get("authorization") != f"Bearer {rules.bearer}":
                return Response(status_code=401)
        elif rules.checks_signature and seen.headers.get("ce-signature") != signature_for(EMULATOR_KEY, connection_id):
            return Response(status_code=401)
        event_type = seen.headers.get("ce-type", "")
        if event_type == "azure.webpubsub.sys.connect":
            return Response(rules.connect_body, rules.connect_status, media_type=rules.connect_content_type)
        if event_type.startswith("azure.webpubsub.user."):
            return Response(rules.user_body, rules.user_status, headers={"Content-Type": rules.user_content_type})
        return Response(status_code=204)

    def posts(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == "POST"]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeHandler, str]]:
    fake = FakeHandler()
    app = Starlette(routes=[Route("/{path:path}", fake.endpoint, methods=["OPTIONS", "GET", "POST"])])
    with ServerThread(app, name="fake-event-handler") as server:
        yield fake, server.base_url


@pytest.fixture
def handler(served: tuple[FakeHandler, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> FakeHandler:
    """A fresh correct handler, and a working directory without local.settings.json."""
    fake, _ = served
    fake.behaviour = Behaviour()
    fake.seen.clear()
    return fake


@pytest.fixture
def url(served: tuple[FakeHandler, str]) -> str:
    return served[1] + "/api/eventhandler"


def doctor(*argv: str) -> tuple[int, dict[str, Any], str]:
    """Run the command in-process with --json; returns the exit code, the report and the raw output."""
    out = io.StringIO()
    code = main([*argv, "--json"], out=out)
    text = out.getvalue()
    return code, json.loads(text), text


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def run_handler(url: str, *extra: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    code, report, text = doctor("handler", url, "--connection-string", CONNECTION_STRING, "--timeout", "3", *extra)
    return code, by_name(report), text


def test_a_correct_handler_passes_every_check(handler: FakeHandler, url: str) -> None:
    code, checks, text = run_handler(url)
    assert code == 0
    assert {name: check["status"] for name, check in checks.items()} == {
        "settings": "ok",
        "handshake": "ok",
        "connect": "ok",
        "user event": "ok",
        "disconnected": "ok",
        "unsigned event": "ok",
        "forged signature": "ok",
    }
    assert EMULATOR_KEY not in text
    assert CONNECTION_STRING not in text


def test_the_doctor_sends_what_the_service_sends(handler: FakeHandler, url: str) -> None:
    run_handler(url)
    options = handler.seen[0]
    assert options.method == "OPTIONS"
    assert options.headers["webhook-request-origin"] == ORIGIN  # the host only, no scheme or port
    assert options.headers["ce-awpsversion"] == "1.0"

    connect, user_event, disconnected, unsigned, forged = handler.posts()
    connection_id = connect.headers["ce-connectionid"]
    assert connect.headers["ce-specversion"] == "1.0"
    assert connect.headers["ce-type"] == "azure.webpubsub.sys.connect"
    assert connect.headers["ce-source"] == f"/hubs/chat/client/{connection_id}"
    assert connect.headers["ce-id"]
    assert datetime.strptime(connect.headers["ce-time"], "%Y-%m-%dT%H:%M:%SZ")
    assert connect.headers["ce-awpsversion"] == "1.0"
    assert connect.headers["ce-userid"]
    assert connect.headers["ce-hub"] == "chat"
    assert connect.headers["ce-eventname"] == "connect"
    assert connect.headers["webhook-request-origin"] == ORIGIN
    assert connect.headers["ce-signature"] == signature_for(EMULATOR_KEY, connection_id)
    assert connect.headers["content-type"] == "application/json"
    assert json.loads(connect.body) == CONNECT_REQUEST

    assert user_event.headers["ce-type"] == "azure.webpubsub.user.message"
    assert user_event.headers["ce-eventname"] == "message"
    assert user_event.headers["ce-connectionid"] == connection_id
    assert user_event.headers["content-type"] == "text/plain"
    assert user_event.body == TEST_MESSAGE
    assert disconnected.headers["ce-type"] == "azure.webpubsub.sys.disconnected"

    assert "ce-signature" not in unsigned.headers
    forged_id = forged.headers["ce-connectionid"]
    assert forged.headers["ce-signature"] != signature_for(EMULATOR_KEY, forged_id)
    assert len({connection_id, unsigned.headers["ce-connectionid"], forged_id}) == 3  # a fresh id each


def test_no_allowed_origin_header_is_the_services_missing_allowed_origin(handler: FakeHandler, url: str) -> None:
    handler.behaviour.allowed_origin = None
    code, checks, _ = run_handler(url)
    assert code == 1
    assert checks["handshake"]["status"] == "fail"
    assert checks["handshake"]["code"] == MISSING_ALLOWED_ORIGIN
    assert ORIGIN in checks["handshake"]["fix"]


@pytest.mark.parametrize("answer", ["other.webpubsub.azure.com", f"{ORIGIN}, other.webpubsub.azure.com"])
def test_a_wrong_or_multiple_allowed_origin_is_refused(handler: FakeHandler, url: str, answer: str) -> None:
    handler.behaviour.allowed_origin = answer
    _, checks, _ = run_handler(url)
    assert checks["handshake"]["code"] == MISSING_ALLOWED_ORIGIN


@pytest.mark.parametrize("answer", ["*", ORIGIN.upper()])
def test_a_wildcard_or_the_host_in_any_case_is_allowed(handler: FakeHandler, url: str, answer: str) -> None:
    handler.behaviour.allowed_origin = answer
    _, checks, _ = run_handler(url)
    assert checks["handshake"]["status"] == "ok"


def test_options_404_falls_back_to_get_like_the_service(handler: FakeHandler, url: str) -> None:
    handler.behaviour.options_status = 404
    code, checks, _ = run_handler(url)
    assert code == 0
    assert [seen.method for seen in handler.seen[:2]] == ["OPTIONS", "GET"]
    assert checks["handshake"]["status"] == "ok"
    assert "GET" in checks["handshake"]["summary"]


def test_a_missing_functions_key_is_an_invalid_status_code(handler: FakeHandler, url: str) -> None:
    handler.behaviour.options_status = 401
    code, checks, _ = run_handler(url)
    assert code == 1
    assert checks["handshake"]["code"] == INVALID_STATUS_CODE
    assert "401" in checks["handshake"]["summary"]
    assert "?code=" in checks["handshake"]["fix"]


def test_404_on_both_methods_names_the_path(handler: FakeHandler, url: str) -> None:
    handler.behaviour.options_status = handler.behaviour.get_status = 404
    _, checks, _ = run_handler(url)
    assert checks["handshake"]["code"] == INVALID_STATUS_CODE
    assert "/api/eventhandler" in checks["handshake"]["fix"]


def test_an_unreachable_handler_is_abuse_protection_failed(handler: FakeHandler) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, checks, _ = run_handler(f"http://127.0.0.1:{port}/api/eventhandler")
    assert code == 1
    assert checks["handshake"]["code"] == HANDSHAKE_FAILED
    assert "refused" in checks["handshake"]["summary"]
    assert checks["events"]["status"] == "skip"


def test_a_5xx_on_connect_is_http_handler_unexpected_response(handler: FakeHandler, url: str) -> None:
    handler.behaviour.connect_status = 500
    code, checks, _ = run_handler(url)
    assert code == 1
    assert checks["connect"]["status"] == "fail"
    assert checks["connect"]["code"] == UNEXPECTED_RESPONSE
    assert "disconnected" not in checks  # the service sends it only for connections it let in


def test_events_the_url_does_not_serve_are_http_handler_unexpected_response(handler: FakeHandler, url: str) -> None:
    handler.behaviour.connect_status = handler.behaviour.user_status = 404
    code, checks, _ = run_handler(url.replace("/api/eventhandler", "/api/{event}") + "?code=secret-function-key")
    assert code == 1
    for name, event in (("connect", "connect"), ("user event", "message")):
        assert (checks[name]["status"], checks[name]["code"]) == ("fail", UNEXPECTED_RESPONSE)
        assert f"nothing serves the {event} event at" in checks[name]["summary"]
        assert f"/api/{event}?code=***" in checks[name]["summary"]
        assert "event handler settings" in checks[name]["fix"]


@pytest.mark.parametrize(
    ("status", "location", "fix"),
    [
        (400, None, "WEBPUBSUB_ALLOWED_ORIGINS"),
        (405, None, "Answer OPTIONS"),
        (301, "https://example.net/api/eventhandler?code=secret-function-key", "redirects to https://example.net"),
    ],
)
def test_each_handshake_status_gets_its_own_fix(
    handler: FakeHandler, url: str, status: int, location: str | None, fix: str
) -> None:
    handler.behaviour.options_status = status
    handler.behaviour.location = location
    code, checks, text = run_handler(url)
    assert code == 1
    assert checks["handshake"]["code"] == INVALID_STATUS_CODE
    assert fix in checks["handshake"]["fix"]
    assert "secret-function-key" not in text
    assert [seen.method for seen in handler.seen[:2]] == ["OPTIONS", "POST"]  # only a 404 falls back to GET


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"userId": 5}',
        b'{"groups": "chat"}',
        b'{"roles": [1]}',
        b'{"subprotocol": "json.webpubsub.azure.v1"}',
    ],
)
def test_a_malformed_connect_answer_is_http_handler_unexpected_response(
    handler: FakeHandler, url: str, body: bytes
) -> None:
    handler.behaviour.connect_body = body
    _, checks, _ = run_handler(url)
    assert checks["connect"]["status"] == "fail"
    assert checks["connect"]["code"] == UNEXPECTED_RESPONSE


def test_connect_may_answer_204(handler: FakeHandler, url: str) -> None:
    handler.behaviour.connect_status = 204
    handler.behaviour.connect_body = b""
    code, checks, _ = run_handler(url)
    assert code == 0
    assert checks["connect"]["summary"] == "signed connect event accepted (204)"


def test_unknown_connect_fields_are_only_a_warning(handler: FakeHandler, url: str) -> None:
    handler.behaviour.connect_body = b'{"userId": "u", "nickname": "x"}'
    code, checks, _ = run_handler(url)
    assert code == 0
    assert checks["connect"]["status"] == "warn"
    assert "nickname" in checks["connect"]["summary"]


def test_a_connect_refusal_is_reported_with_the_status_the_client_sees(handler: FakeHandler, url: str) -> None:
    handler.behaviour.connect_status = 403
    handler.behaviour.connect_body = b""
    code, checks, _ = run_handler(url)
    assert code == 0
    assert checks["connect"]["status"] == "warn"
    assert "403" in checks["connect"]["summary"]


def test_a_user_event_reply_with_a_wrong_content_type_fails(handler: FakeHandler, url: str) -> None:
    handler.behaviour.user_content_type = "text/html"
    handler.behaviour.user_body = b"<p>hi</p>"
    code, checks, _ = run_handler(url)
    assert code == 1
    assert checks["user event"]["code"] == UNEXPECTED_RESPONSE
    assert "text/html" in checks["user event"]["summary"]


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream", "text/plain"])
def test_user_event_replies_in_the_three_content_types_pass(handler: FakeHandler, url: str, content_type: str) -> None:
    handler.behaviour.user_content_type = content_type
    _, checks, _ = run_handler(url)
    assert checks["user event"]["status"] == "ok"


def test_an_empty_user_event_reply_needs_no_content_type(handler: FakeHandler, url: str) -> None:
    handler.behaviour.user_status = 204
    handler.behaviour.user_body = b""
    handler.behaviour.user_content_type = ""
    _, checks, _ = run_handler(url)
    assert checks["user event"]["status"] == "ok"


@pytest.mark.parametrize("status", [400, 500])
def test_a_failing_user_event_fails(handler: FakeHandler, url: str, status: int) -> None:
    handler.behaviour.user_status = status
    _, checks, _ = run_handler(url)
    assert checks["user event"]["status"] == "fail"


def test_a_handler_verifying_with_another_key_is_told_to_compare_the_keys(handler: FakeHandler, url: str) -> None:
    other = CONNECTION_STRING.replace(EMULATOR_KEY, EMULATOR_KEY[::-1])
    code, report, text = doctor("handler", url, "--connection-string", other, "--timeout", "3")
    checks = by_name(report)
    assert code == 1
    assert checks["connect"]["status"] == "warn"
    assert checks["user event"]["status"] == "fail"
    assert "refuses every event signed with the key from the connection string" in checks["user event"]["summary"]
    assert "compare them" in checks["user event"]["fix"]
    assert EMULATOR_KEY[::-1] not in text


def test_a_handler_that_accepts_unsigned_events_is_reported(handler: FakeHandler, url: str) -> None:
    handler.behaviour.checks_signature = False
    code, checks, _ = run_handler(url)
    assert code == 1
    for name in ("unsigned event", "forged signature"):
        assert checks[name]["status"] == "fail"
        assert "accepts forged events" in checks[name]["summary"]
        assert "ce-signature" in checks[name]["fix"]


ENTRA_BEARER = {
    "WEBPUBSUB_CREDENTIAL": "entra",
    "WEBPUBSUB_ENDPOINT": ENDPOINT,
    "NEGOTIATE_AUTH": "anonymous",
    "EVENTHANDLER_AUTH": "bearer",
    "EVENTHANDLER_BEARER_ISSUER": "https://login.microsoftonline.com/tenant/v2.0",
    "EVENTHANDLER_BEARER_AUDIENCE": "api://events",
    "EVENTHANDLER_BEARER_PRINCIPAL_ID": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
}


class ScopeRecorder(FakeCredential):
    def __init__(self, *, available: bool = True):
        super().__init__(available=available)
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return super().get_token(*scopes, **kwargs)


def doctor_with(credential: FakeCredential, *argv: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    out = io.StringIO()
    code = main([*argv, "--json"], access=AzureAccess(credential=credential), out=out)
    return code, by_name(json.loads(out.getvalue())), out.getvalue()


def test_in_entra_mode_events_carry_a_token_for_the_handlers_audience(
    handler: FakeHandler, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENTRA_BEARER.items():
        monkeypatch.setenv(name, value)
    handler.behaviour.bearer = "fake-entra-token"  # what FakeCredential hands out
    credential = ScopeRecorder()
    code, checks, text = doctor_with(credential, "handler", url)
    assert code == 0, text
    assert credential.scopes == [("api://events/.default",)]
    assert checks["connect"]["status"] == "ok"
    assert checks["connect"]["summary"] == "connect event accepted (200)"
    assert checks["user event"]["summary"].startswith("bearer-authenticated message event accepted")
    assert checks["disconnected"]["status"] == "ok"
    assert checks["unsigned event"]["status"] == "ok"  # no token at all: refused
    bearer_posts = [seen for seen in handler.posts() if seen.headers.get("authorization")]
    assert len(bearer_posts) == 3
    assert all("ce-signature" not in seen.headers for seen in bearer_posts)
    assert "fake-entra-token" not in text


def test_a_token_the_handler_refuses_is_explained_by_its_principal_check(
    handler: FakeHandler, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENTRA_BEARER.items():
        monkeypatch.setenv(name, value)
    handler.behaviour.bearer = "only-the-services-token"
    code, checks, _ = doctor_with(FakeCredential(), "handler", url)
    assert code == 0
    assert checks["connect"]["status"] == "warn"
    assert "EVENTHANDLER_BEARER_PRINCIPAL_ID" in checks["connect"]["summary"]
    assert "user event" not in checks


def test_without_a_key_the_signed_events_are_skipped_and_the_forged_ones_still_sent(
    handler: FakeHandler, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENTRA_BEARER.items():
        monkeypatch.setenv(name, value)
    code, checks, _ = doctor_with(FakeCredential(available=False), "handler", url)
    assert code == 0
    assert checks["signed events"]["status"] == "skip"
    assert "no access key, and no token for api://events" in checks["signed events"]["summary"]
    assert "connect" not in checks
    assert checks["unsigned event"]["status"] == "ok"
    assert [seen.headers.get("ce-signature") is None for seen in handler.posts()] == [True, False]


def test_url_templates_are_filled_in_and_query_values_never_printed(handler: FakeHandler, url: str) -> None:
    template = url.replace("/api/eventhandler", "/api/{hub}/{event}") + "?code=function-key-secret-value"
    code, _, text = run_handler(template)
    assert code == 0
    assert [seen.path for seen in handler.seen[:2]] == ["/api/chat/validate", "/api/chat/connect"]
    assert "function-key-secret-value" not in text


def test_without_an_endpoint_there_is_no_origin_to_send(handler: FakeHandler, url: str) -> None:
    err = io.StringIO()
    code = main(["handler", url], out=err)
    assert code == 2
    assert handler.seen == []


@pytest.fixture(scope="module")
def app_host() -> Iterator[str]:
    """The app's own /api/eventhandler, served the way the local Functions host serves it."""
    import function_app
    from devstack.host import build_host

    with ServerThread(build_host(function_app.app), name="functions") as server:
        yield server.base_url + "/api/eventhandler"


def use_local_settings(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    for name, value in {**LOCAL_ENVIRON, **extra}.items():
        monkeypatch.setenv(name, value)


def test_the_apps_own_event_handler_passes_every_check(
    handler: FakeHandler, app_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_local_settings(monkeypatch)
    code, report, text = doctor("handler", app_host)
    checks = by_name(report)
    assert code == 0, text
    assert all(check["status"] == "ok" for check in checks.values()), text
    assert set(checks) >= {"handshake", "connect", "user event", "disconnected", "unsigned event", "forged signature"}


def test_the_apps_development_only_event_auth_is_reported_as_forgeable(
    handler: FakeHandler, app_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_local_settings(monkeypatch, EVENTHANDLER_AUTH="none")
    code, report, _ = doctor("handler", app_host)
    checks = by_name(report)
    assert code == 1
    assert checks["connect"]["status"] == "ok"
    assert checks["unsigned event"]["status"] == "fail"
    assert checks["forged signature"]["status"] == "fail"
