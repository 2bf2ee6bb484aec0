"""The chat page route: what it serves, what it refuses, and the headers that keep it safe."""

from __future__ import annotations

import json
import re
from typing import cast

import azure.functions as func
import pytest

import function_app
from shared import client_page
from shared.errors import NotFound
from shared.runtime import Runtime, use_runtime
from shared.web import Request
from tests.support.functions import http_request
from tests.support.settings import local_settings

REQUIRED_TEST_IDS = ("status", "group-input", "join-button", "message-input", "send-button", "messages")


def get(
    route: str,
    *,
    query: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
) -> func.HttpResponse:
    use_runtime(Runtime(local_settings(**(settings or {}))))
    request = http_request("GET", route, query=query, headers=headers)
    return cast(func.HttpResponse, function_app.client(request))


def page_html(**settings: str) -> str:
    response = get("client", settings=settings)
    assert response.status_code == 200
    body: bytes = response.get_body()
    return body.decode("utf-8")


def linked_assets(html: str) -> dict[str, str]:
    """{file name: version} for every client/<file>?v=<version> the page links."""
    return dict(re.findall(r'"client/([\w.]+)\?v=([0-9a-f]+)"', html))


def test_page_is_html_with_every_element_the_tests_and_users_need() -> None:
    response = get("client")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_body().decode("utf-8")
    for test_id in REQUIRED_TEST_IDS:
        assert f'data-testid="{test_id}"' in html
    assert "${" not in html  # every template field was filled in


def test_page_tells_the_script_how_negotiate_identifies_callers() -> None:
    assert 'data-negotiate-auth="anonymous"' in page_html()
    assert 'data-negotiate-auth="appservice"' in page_html(NEGOTIATE_AUTH="appservice", WEBSITE_AUTH_ENABLED="true")


def test_group_input_starts_with_the_first_configured_group_escaped() -> None:
    assert 'data-testid="group-input" value="team&quot;&lt;b&gt;"' in page_html(NEGOTIATE_GROUPS='team"<b>,other')


def test_page_links_every_asset_by_its_content_version() -> None:
    html = page_html()
    versions = linked_assets(html)
    assert set(versions) == set(client_page.ASSETS)
    for name, version in versions.items():
        assert version == client_page.version_of(client_page.read_file(name))


def test_content_security_policy_allows_only_this_origin_and_the_service_websocket() -> None:
    response = get("client")
    policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "connect-src": "'self' ws://localhost:8080",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-cache"


def test_deployed_service_is_reached_over_wss_only() -> None:
    connection_string = "Endpoint=https://chat.webpubsub.azure.com;AccessKey=" + "k" * 44 + ";Version=1.0;"
    response = get("client", settings={"WEBPUBSUB_CONNECTION_STRING": connection_string})
    assert "connect-src 'self' wss://chat.webpubsub.azure.com;" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(("name", "mimetype"), [("app.js", "text/javascript"), ("app.css", "text/css")])
def test_versioned_asset_is_cached_for_a_year(name: str, mimetype: str) -> None:
    version = linked_assets(page_html())[name]
    response = get(f"client/{name}", query=[("v", version)])
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.get_body() == client_page.read_file(name)
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in response.headers


@pytest.mark.parametrize("query", [[], [("v", "0123456789abcdef")]])
def test_unversioned_or_stale_asset_url_is_revalidated(query: list[tuple[str, str]]) -> None:
    response = get("client/app.js", query=query)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("route", ["client", "client/app.js"])
def test_unchanged_file_answers_304(route: str) -> None:
    first = get(route)
    again = get(route, headers={"If-None-Match": f'W/"other", {first.headers["ETag"]}'})
    assert again.status_code == 304
    assert again.get_body() == b""
    assert again.headers["ETag"] == first.headers["ETag"]


@pytest.mark.parametrize(
    "route",
    [
        "client/index.html",
        "client/README.md",
        "client/THIRD_PARTY_NOTICES.txt",
        "client/APP.JS",
        "client/app.js/",
        "client/sub/app.js",
        "client/../function_app.py",
        "client/..%2Fconfig.py",
        "client/%2e%2e/function_app.py",
        "client/app.js%00",
    ],
)
def test_anything_outside_the_allow_list_is_404_json(route: str) -> None:
    response = get(route)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert json.loads(response.get_body())["error"] == {"code": "not_found", "message": "No such file."}
    assert response.headers["Cache-Control"] == "no-store"


def test_missing_file_is_raised_as_not_found_for_the_one_error_path() -> None:
    """The adapter, not the page, renders errors: same body, headers and log line as every route."""
    request = Request(method="GET", url="http://localhost/api/client/secret.txt")
    with pytest.raises(NotFound) as raised:
        client_page.serve(request, local_settings())
    assert raised.value.status == 404
    assert raised.value.public_message == "No such file."


def test_trailing_slash_redirects_to_the_page_so_relative_links_resolve() -> None:
    response = get("client/")
    assert response.status_code == 308
    assert response.headers["Location"] == "../client"


@pytest.mark.parametrize("route", ["client", "client/app.js"])
def test_switched_off_page_is_404_naming_the_setting(route: str) -> None:
    response = get(route, settings={"CLIENT_PAGE_ENABLED": "false"})
    assert response.status_code == 404
    error = json.loads(response.get_body())["error"]
    assert error["code"] == "not_found"
    assert "CLIENT_PAGE_ENABLED" in error["message"]


def test_page_never_contains_the_access_key() -> None:
    for route in ("client", "client/app.js", "client/app.css"):
        response = get(route)
        assert b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH" not in response.get_body()
        assert "ABCDEFGHIJKLMNOPQRSTUVWXYZ" not in json.dumps(dict(response.headers))


def misconfigured_get(route: str, **environ: str) -> func.HttpResponse:
    from shared.config import load_settings
    from tests.support.settings import LOCAL_ENVIRON

    use_runtime(Runtime(load_settings({**LOCAL_ENVIRON, **environ})))
    return cast(func.HttpResponse, function_app.client(http_request("GET", route)))


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        pytest.param("NEGOTIATE_AUTH", "appservice-typo", id="negotiate"),
        pytest.param("WEBPUBSUB_CREDENTIAL", "nonsense", id="service"),
        pytest.param("CLIENT_PAGE_ENABLED", "perhaps", id="client-page"),
    ],
)
def test_a_misconfigured_app_answers_a_readable_page_saying_where_to_look(
    setting: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="shared.client_page"):
        response = misconfigured_get("client", **{setting: value})
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    text = response.get_body().decode("utf-8")
    assert text.startswith("<!doctype html>")
    assert "The app is misconfigured" in text
    assert f"{setting}:" in text  # which setting, as /api/health shows it to anyone
    assert '<a href="health">/api/health</a>' in text
    assert "log" in text
    assert value not in text  # the rejected value only in the log: it may be a secret in the wrong setting
    assert "<script" not in text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert any(value in record.getMessage() for record in caplog.records)


def test_a_misconfigured_apps_asset_is_still_a_json_error() -> None:
    response = misconfigured_get("client/app.js", WEBPUBSUB_CREDENTIAL="nonsense")
    assert response.status_code == 500
    assert response.mimetype == "application/json"
