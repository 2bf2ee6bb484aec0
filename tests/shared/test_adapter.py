"""The edge between Azure Functions and the app: conversions both ways, and no failure escapes."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

import azure.functions as func
import pytest

from shared.adapter import _headers, _query_pairs, handle, serve, to_http_response, to_request
from shared.errors import ConfigError, Unauthorized
from shared.web import Request, Response, json_response


def test_a_request_keeps_repeated_query_parameters_and_lower_cases_header_names() -> None:
    req = func.HttpRequest(
        method="post",
        url="http://localhost:7071/api/negotiate?group=a&userId=u&group=b&empty=",
        headers={"Content-Type": "application/json", "X-MS-CLIENT-PRINCIPAL-ID": "p"},
        params={"group": "a"},
        body=b'{"groups": []}',
    )
    request = to_request(req)
    assert request.method == "POST"
    assert request.query_values("group") == ["a", "b"]
    assert request.query_value("empty") == ""
    assert request.headers["content-type"] == "application/json"
    assert request.header("x-ms-client-principal-id") == "p"
    assert request.body == b'{"groups": []}'


def test_a_request_without_a_query_in_its_url_uses_the_params() -> None:
    req = func.HttpRequest(method="GET", url="http://localhost:7071/api/negotiate", params={"userId": "u"}, body=b"")
    assert to_request(req).query_value("userId") == "u"


@pytest.mark.parametrize(
    "query",
    ["a=1&b=2", "group=a&group=b", "a", "a=", "=b", "a=b=c", "&&a=1&", "a=%20b", "a+b=c+d", "x=%zz", "u=%C3%A9&v"],
)
def test_the_query_reads_as_parse_qsl_reads_it(query: str) -> None:
    assert _query_pairs(query) == parse_qsl(query, keep_blank_values=True)


def test_a_url_fragment_is_not_part_of_the_query() -> None:
    req = func.HttpRequest(method="GET", url="http://localhost:7071/api/negotiate?userId=u#x=1", body=b"")
    assert list(to_request(req).query) == [("userId", "u")]


def test_headers_of_any_mapping_get_lower_case_names() -> None:
    class Plain(dict[str, str]):
        pass

    assert _headers(Plain({"Content-Type": "text/plain", "X-A": "1"})) == {"content-type": "text/plain", "x-a": "1"}
    copied = _headers(func.HttpRequest(method="GET", url="http://h/", headers={"X-A": "1"}, body=b"").headers)
    assert copied == {"x-a": "1"}


def test_a_response_keeps_status_headers_body_and_content_type() -> None:
    converted = to_http_response(json_response(201, {"ok": True}, {"Retry-After": "3"}))
    assert converted.status_code == 201
    assert converted.get_body() == b'{"ok":true}'
    assert converted.mimetype == "application/json"
    assert converted.charset == "utf-8"
    assert converted.headers["Content-Type"] == "application/json; charset=utf-8"
    assert converted.headers["Retry-After"] == "3"


def test_a_response_without_content_type_sends_none() -> None:
    converted = to_http_response(Response(204))
    assert converted.status_code == 204
    assert converted.get_body() == b""


REQUEST = Request("GET", "http://localhost:7071/api/negotiate?userId=u")


def test_an_app_error_becomes_its_status_and_is_logged_by_code(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: Request) -> Response:
        raise Unauthorized("Sign in first.", code="not_signed_in")

    with caplog.at_level(logging.INFO, logger="shared.adapter"):
        response = handle(REQUEST, refuse)
    assert response.status == 401
    assert json.loads(response.body)["error"]["code"] == "not_signed_in"
    assert "GET /api/negotiate refused (401 not_signed_in)" in caplog.text
    assert "userId" not in caplog.text  # the path only: queries may carry user data


def test_a_configuration_error_names_the_setting_in_the_log_but_not_the_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def misconfigured(request: Request) -> Response:
        raise ConfigError("WEBPUBSUB_ENDPOINT", "must be an https URL")

    with caplog.at_level(logging.ERROR, logger="shared.adapter"):
        response = handle(REQUEST, misconfigured)
    assert response.status == 500
    assert b"WEBPUBSUB_ENDPOINT" not in response.body
    assert "WEBPUBSUB_ENDPOINT: must be an https URL" in caplog.text


def test_an_unexpected_exception_is_a_generic_500_with_its_trace_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("internal detail")

    with caplog.at_level(logging.ERROR, logger="shared.adapter"):
        converted = serve(func.HttpRequest(method="GET", url=REQUEST.url, body=b""), broken)
    assert converted.status_code == 500
    assert json.loads(converted.get_body()) == {
        "error": {"code": "internal_error", "message": "An unexpected error occurred."}
    }
    assert "internal detail" in caplog.text
    assert caplog.records[-1].exc_info is not None
