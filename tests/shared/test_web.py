"""The framework-neutral request and response values the application logic speaks."""

from __future__ import annotations

import json

from shared.errors import DependencyUnavailable, Forbidden
from shared.web import Request, error_response, json_response


def test_headers_are_looked_up_in_any_case() -> None:
    request = Request("GET", "http://localhost/api/x", headers={"ce-type": "azure.webpubsub.sys.connect"})
    assert request.header("CE-Type") == "azure.webpubsub.sys.connect"
    assert request.header("ce-missing") is None


def test_repeated_query_parameters_keep_their_order() -> None:
    request = Request("GET", "http://localhost/api/x", query=[("group", "b"), ("userId", "u"), ("group", "a")])
    assert request.query_values("group") == ["b", "a"]
    assert request.query_value("group") == "b"
    assert request.query_value("missing") is None
    assert request.query_values("missing") == []


def test_the_content_type_is_its_media_type_only() -> None:
    def content_type(value: str | None) -> str:
        headers = {"content-type": value} if value is not None else {}
        return Request("POST", "http://localhost/api/x", headers=headers).content_type

    assert content_type("Application/JSON; charset=utf-8") == "application/json"
    assert content_type(" text/plain ") == "text/plain"
    assert content_type(None) == ""


def test_json_answers_are_utf8_never_cached_and_never_sniffed() -> None:
    response = json_response(200, {"user": "zoë"}, {"X-Extra": "1"})
    assert response.content_type == "application/json; charset=utf-8"
    assert json.loads(response.body.decode("utf-8")) == {"user": "zoë"}
    assert "zoë".encode() in response.body  # not \u-escaped
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Extra"] == "1"


def test_an_error_is_rendered_with_its_status_code_message_and_headers() -> None:
    forbidden = error_response(Forbidden("You may not join 'admins'.", code="group_not_permitted"))
    assert forbidden.status == 403
    assert json.loads(forbidden.body) == {
        "error": {"code": "group_not_permitted", "message": "You may not join 'admins'."}
    }
    unavailable = error_response(DependencyUnavailable("Key Vault", "secret detail"))
    assert unavailable.status == 503
    assert unavailable.headers["Retry-After"] == "5"
    assert b"secret detail" not in unavailable.body


def test_json_with_lone_surrogates_is_escaped_not_an_error() -> None:
    """A value holding a lone surrogate (from a JSON escape) renders as valid UTF-8 and reads back the same."""
    response = json_response(403, {"error": {"message": "group '\ud800' is not permitted"}})
    assert json.loads(response.body.decode("utf-8")) == {"error": {"message": "group '\ud800' is not permitted"}}
