"""The WebSocket handshake: tokens validated as the service does, refusals as real HTTP statuses."""

from __future__ import annotations

import json
import warnings

import pytest
import websocket  # websocket-client: the library the official Python client uses

from devstack.webpubsub import RunningWebPubSub
from tests.support.local_service import JSON_PROTOCOL, client_token, client_url, open_socket, refused_handshake


def test_valid_token_connects_and_names_the_user(service: RunningWebPubSub, hub: str) -> None:
    token = client_token(service.endpoint, hub, user_id="alice")
    with open_socket(client_url(service, hub, token), JSON_PROTOCOL) as client:
        assert client.subprotocol == JSON_PROTOCOL
        connected = json.loads(client.recv(timeout=5))
    assert connected["type"] == "system"
    assert connected["event"] == "connected"
    assert connected["userId"] == "alice"
    assert connected["connectionId"]
    assert "reconnectionToken" not in connected  # only the reliable subprotocol gets one


@pytest.mark.parametrize(
    ("case", "token_options"),
    [
        ("expired beyond the 5 minute skew", {"expires_in": -400}),
        ("wrong audience", {"audience": "http://elsewhere.example/client/hubs/{hub}"}),
        ("another hub", {"audience": "{endpoint}/client/hubs/otherhub"}),
        ("wrong key", {"key": "another-key-that-is-long-enough-for-hs256-0123456789"}),
    ],
)
def test_bad_tokens_are_refused_with_401(
    service: RunningWebPubSub, hub: str, case: str, token_options: dict[str, object]
) -> None:
    if isinstance(token_options.get("audience"), str):
        token_options["audience"] = str(token_options["audience"]).format(hub=hub, endpoint=service.endpoint)
    token = client_token(service.endpoint, hub, **token_options)  # type: ignore[arg-type]
    status, body = refused_handshake(client_url(service, hub, token))
    assert status == 401, case
    assert token.encode() not in body


def test_missing_token_is_refused_with_401(service: RunningWebPubSub, hub: str) -> None:
    status, _ = refused_handshake(client_url(service, hub))
    assert status == 401


def test_token_without_expiry_is_refused(service: RunningWebPubSub, hub: str) -> None:
    import jwt

    token = jwt.encode({"aud": f"{service.endpoint}/client/hubs/{hub}"}, service.service.settings.access_key)
    status, _ = refused_handshake(client_url(service, hub, token))
    assert status == 401


@pytest.mark.parametrize("algorithm", ["none", "HS512"])
def test_only_hs256_tokens_are_accepted(service: RunningWebPubSub, hub: str, algorithm: str) -> None:
    """An unsigned token, or one signed with the right key by another algorithm, is refused."""
    import time

    import jwt

    claims = {"aud": f"{service.endpoint}/client/hubs/{hub}", "exp": int(time.time()) + 600, "sub": "mallory"}
    key = "" if algorithm == "none" else service.service.settings.access_key
    with warnings.catch_warnings():  # PyJWT finds the emulator's key short for SHA-512: the point here
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        token = jwt.encode(claims, key, algorithm=algorithm)
    status, _ = refused_handshake(client_url(service, hub, token))
    assert status == 401


def test_recently_expired_token_is_tolerated_within_clock_skew(service: RunningWebPubSub, hub: str) -> None:
    token = client_token(service.endpoint, hub, expires_in=-60)
    with open_socket(client_url(service, hub, token), JSON_PROTOCOL) as client:
        assert json.loads(client.recv(timeout=5))["event"] == "connected"


def test_audience_may_use_the_ws_scheme_and_a_trailing_slash_in_any_case(service: RunningWebPubSub, hub: str) -> None:
    audience = f"{service.endpoint.replace('http://', 'WS://')}/CLIENT/hubs/{hub.upper()}/"
    token = client_token(service.endpoint, hub, audience=audience)
    with open_socket(client_url(service, hub, token), JSON_PROTOCOL) as client:
        assert json.loads(client.recv(timeout=5))["event"] == "connected"


def test_token_in_authorization_header_and_hub_in_query(service: RunningWebPubSub, hub: str) -> None:
    token = client_token(service.endpoint, hub, user_id="bob")
    url = service.endpoint.replace("http://", "ws://") + f"/client/?hub={hub}"
    with open_socket(url, JSON_PROTOCOL, additional_headers={"Authorization": f"Bearer {token}"}) as client:
        assert json.loads(client.recv(timeout=5))["userId"] == "bob"


def test_invalid_group_in_token_is_refused_with_400(service: RunningWebPubSub, hub: str) -> None:
    token = client_token(service.endpoint, hub, groups=["fine", "   "])
    status, _ = refused_handshake(client_url(service, hub, token))
    assert status == 400


def test_invalid_hub_name_is_refused_with_400(service: RunningWebPubSub) -> None:
    token = client_token(service.endpoint, "9hub")
    status, _ = refused_handshake(client_url(service, "9hub", token))
    assert status == 400


def test_the_official_clients_websocket_library_sees_401(service: RunningWebPubSub, hub: str) -> None:
    token = client_token(service.endpoint, hub, expires_in=-3600)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(client_url(service, hub, token), subprotocols=[JSON_PROTOCOL], timeout=5)
    assert refused.value.status_code == 401


def test_refused_handshake_sends_no_events_upstream(service: RunningWebPubSub, event_handler: object, hub: str) -> None:
    token = client_token(service.endpoint, hub, key="another-key-that-is-long-enough-for-hs256-0123456789")
    refused_handshake(client_url(service, hub, token))
    assert [record for record in service.upstream_log.records() if record.hub == hub] == []
