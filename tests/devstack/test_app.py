"""The service's own perimeter: the Host it answers, its endpoint, and the warning when exposed."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest

from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub, ServiceSettings
from devstack.webpubsub.__main__ import banner
from tests.support.local_service import JSON_PROTOCOL, client_token, client_url, refused_handshake


@pytest.mark.parametrize("path", ["/api/health", "/_devstack/identity/token", "/_devstack/connections"])
def test_http_requests_naming_a_foreign_host_are_refused(service: RunningWebPubSub, path: str) -> None:
    # DNS rebinding: a page on rebind.example resolves its name to 127.0.0.1; the browser still
    # sends "Host: rebind.example", which the service must refuse before any route runs.
    url = service.endpoint + path
    response = httpx.get(url, headers={"Host": "rebind.example"})
    assert response.status_code == 403
    assert response.json()["code"] == "InvalidHost"
    assert httpx.get(url, headers={"Host": f"localhost:{service.server.port}"}).status_code != 403


def test_websocket_handshakes_naming_a_foreign_host_are_refused(service: RunningWebPubSub, hub: str) -> None:
    token = client_token(service.endpoint, hub)
    request = (
        f"GET /client/hubs/{hub}?access_token={token} HTTP/1.1\r\nHost: rebind.example:{service.server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {JSON_PROTOCOL}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", service.server.port), timeout=5) as raw:
        raw.sendall(request.encode())
        status_line = raw.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 403")


def test_client_token_audience_is_the_configured_endpoint_not_the_host_the_client_used(
    service: RunningWebPubSub, hub: str
) -> None:
    # The service is configured as http://127.0.0.1:<port>. A client reaching it as localhost
    # with a token minted for "localhost" must be refused: the audience names the service's
    # endpoint, whatever Host header the client (or a page) chose.
    local_name = service.endpoint.replace("127.0.0.1", "localhost")
    token = client_token(local_name, hub)
    url = client_url(service, hub, token).replace("127.0.0.1", "localhost")
    assert refused_handshake(url, JSON_PROTOCOL)[0] == 401


def test_rest_token_audience_is_the_configured_endpoint(service: RunningWebPubSub, hub: str) -> None:
    import jwt

    local_url = f"{service.endpoint.replace('127.0.0.1', 'localhost')}/api/hubs/{hub}/:send"
    token = jwt.encode({"aud": local_url, "exp": 4102444800}, service.service.settings.access_key.encode(), "HS256")
    response = httpx.post(
        local_url, content=b"x", headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    )
    assert response.status_code == 401


def test_the_identity_header_is_random_per_run_and_the_old_default_is_refused(service: RunningWebPubSub) -> None:
    assert ServiceSettings().identity_header != ServiceSettings().identity_header
    endpoint = service.identity_environment()["IDENTITY_ENDPOINT"]
    params = {"api-version": "2019-08-01", "resource": "https://webpubsub.azure.com"}
    assert (
        httpx.get(endpoint, params=params, headers={"X-IDENTITY-HEADER": "local-devstack-identity"}).status_code == 401
    )


def test_binding_beyond_loopback_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="devstack.webpubsub"),
        LocalWebPubSub().run_in_thread(
            host="0.0.0.0",  # noqa: S104 - the case under test
            public_host="localhost",
        ),
    ):
        pass
    assert any("reachable from other machines" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="devstack.webpubsub"), LocalWebPubSub().run_in_thread():
        pass
    assert not caplog.records


def test_the_command_line_banner_warns_when_listening_beyond_loopback() -> None:
    settings = ServiceSettings()
    assert banner(settings, "http://localhost:8080", "0.0.0.0").startswith("WARNING: listening on 0.0.0.0")  # noqa: S104
    assert "WARNING" not in banner(settings, "http://localhost:8080", "127.0.0.1")
