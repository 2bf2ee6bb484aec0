"""Oversized and garbled input on every route answers 4xx (or the route's normal answer), never a 5xx;
oversized bodies are refused by their size, with the limit named.

The routes come from the app's own function list, so a route added later is covered here without
editing this file. Requests travel over real HTTP through the local Functions host.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import function_app
from devstack.host import http_functions
from devstack.webpubsub import RunningWebPubSub
from shared.config import load_settings
from shared.events import EventHandlers
from shared.protocol import UserEvent, UserEventResponse
from shared.runtime import Runtime, reset_runtime, use_runtime
from tests.support.apphost import ServedApp, serve_app
from tests.support.events import sign
from tests.support.functions import error_code
from tests.support.security import SERVICE_KEY

DEEP_JSON = b"[" * 5000 + b"]" * 5000  # valid JSON nested deeper than Python's parser allows
GARBLED = bytes(range(256)) * 4 + b'\xff\xfe\xfd{"groups": [\xc0\xaf]}'


@dataclass(frozen=True)
class Probe:
    """One hostile request, without the route it is sent to."""

    name: str
    query: str = ""
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes = b""


PROBES = [
    Probe("empty"),
    Probe("garbled-body", headers=(("content-type", b"application/json"),), body=GARBLED),
    Probe("garbled-text-body", headers=(("content-type", b"text/plain; charset=utf-8"),), body=GARBLED),
    Probe("oversized-body", headers=(("content-type", b"application/json"),), body=b'{"groups": ["' + b"x" * 2_000_000),
    Probe("deep-json-body", headers=(("content-type", b"application/json"),), body=DEEP_JSON),
    Probe("bad-percent-encoding", query="userId=%zz%ff%fe&group=%00%c0%af&asset=%"),
    Probe("control-characters", query="userId=a%0d%0aSet-Cookie:%20x&group=%1b%5b31m"),
    Probe("long-query-value", query="userId=" + "u" * 8000),
    Probe("repeated-parameters", query="&".join(f"group=g{n}" for n in range(500))),
    Probe("odd-content-type", headers=(("content-type", b'application/json; charset="\xff'),), body=b"{}"),
    Probe("latin-1-header", headers=(("x-ms-client-principal-id", "\u00e9\u00ff".encode("latin-1")),)),
    Probe("long-header", headers=(("authorization", b"Bearer " + b"A" * 8000),)),
    Probe(
        "garbled-cloud-event",
        headers=(
            ("ce-awpsversion", b"1.0"),
            ("ce-type", b"azure.webpubsub.\xff"),
            ("ce-hub", b"h\xffb"),
            ("ce-connectionid", b"c\xc3("),
            ("ce-signature", b"sha256=\xff\xff"),
            ("ce-connectionstate", b"!!not base64!!"),
        ),
        body=GARBLED,
    ),
]


def route_calls() -> Iterator[tuple[str, str]]:
    for function in http_functions(function_app.app):
        path = function.route.replace("{*asset}", "index.html")
        for method in sorted(function.methods or {"GET", "POST"}):
            yield method, path


ROUTE_CALLS = sorted(set(route_calls()))


def send(app: ServedApp, method: str, path: str, probe: Probe) -> httpx.Response:
    url = app.url(path) + (f"?{probe.query}" if probe.query else "")
    request = app.client.build_request(method, url, content=probe.body)
    for name, value in probe.headers:
        request.headers[name] = value.decode("latin-1")
    return app.client.send(request)


def test_every_route_is_covered() -> None:
    assert {path for _, path in ROUTE_CALLS} >= {"negotiate", "eventhandler", "health", "health/live"}


@pytest.mark.parametrize("probe", PROBES, ids=[probe.name for probe in PROBES])
@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_hostile_input_never_causes_a_5xx(
    app: ServedApp, service: RunningWebPubSub, method: str, path: str, probe: Probe
) -> None:
    response = send(app, method, path, probe)
    assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text[:200]}"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        assert error_code(response)  # the app's own refusals name the problem


# The deep-nesting cases one by one, each at the check that must catch it.


def signed_event(event_type: str, content_type: str, **extra: str) -> dict[str, str]:
    return {
        "ce-awpsversion": "1.0",
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-hub": "chat",
        "ce-connectionId": "conn-1",
        "ce-userId": "alice",
        "ce-signature": sign("conn-1", SERVICE_KEY),
        "Content-Type": content_type,
        **extra,
    }


def test_deeply_nested_negotiate_body_is_400(app: ServedApp, service: RunningWebPubSub) -> None:
    response = app.client.post(
        "negotiate", params={"userId": "a"}, headers={"Content-Type": "application/json"}, content=DEEP_JSON
    )
    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


def test_deeply_nested_connection_state_of_an_unsigned_event_is_401(app: ServedApp, service: RunningWebPubSub) -> None:
    """Parsed before authentication, so an anonymous caller could reach it: it must be harmless."""
    state = base64.b64encode(DEEP_JSON).decode()
    headers = signed_event("azure.webpubsub.sys.connected", "application/json", **{"ce-connectionState": state})
    del headers["ce-signature"]
    response = app.client.post("eventhandler", headers=headers, content=b"{}")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "event_type", ["azure.webpubsub.sys.connect", "azure.webpubsub.sys.disconnected", "azure.webpubsub.user.message"]
)
def test_deeply_nested_event_body_is_400(app: ServedApp, service: RunningWebPubSub, event_type: str) -> None:
    response = app.client.post("eventhandler", headers=signed_event(event_type, "application/json"), content=DEEP_JSON)
    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


# Oversized bodies: refused by size, before any parsing, with the limit named.


def test_an_oversized_negotiate_body_is_refused_by_size(app: ServedApp, service: RunningWebPubSub) -> None:
    body = b'{"groups": ["chat"], "padding": "' + b"x" * 17_000 + b'"}'  # valid JSON, over 16 KB
    response = app.client.post(
        "negotiate", params={"userId": "a"}, headers={"Content-Type": "application/json"}, content=body
    )
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
    assert "16384 bytes" in response.json()["error"]["message"]
    assert "token" not in response.json()


@pytest.mark.parametrize(
    ("event_type", "content_type", "filler"),
    [
        ("azure.webpubsub.user.message", "text/plain", b"x"),
        ("azure.webpubsub.user.message", "application/octet-stream", b"\x00"),
        ("azure.webpubsub.sys.connect", "application/json", b" "),
    ],
)
def test_an_oversized_signed_event_is_413_naming_the_setting(
    app: ServedApp, service: RunningWebPubSub, event_type: str, content_type: str, filler: bytes
) -> None:
    """One byte over EVENTHANDLER_MAX_BODY_BYTES (default 1 MiB); the same body at the limit is accepted."""
    os.environ["EVENTHANDLER_MAX_BODY_BYTES"] = "4096"  # tests/conftest.py restores the environment
    reset_runtime()
    headers = signed_event(event_type, content_type)
    at_limit = b"{}" + filler * 4094 if content_type == "application/json" else filler * 4096
    assert app.client.post("eventhandler", headers=headers, content=at_limit).status_code < 300
    response = app.client.post("eventhandler", headers=headers, content=at_limit + filler)
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
    assert "EVENTHANDLER_MAX_BODY_BYTES" in response.json()["error"]["message"]


# Valid JSON and valid UTF-8 holding text UTF-8 cannot encode: a faithful echo, never a 5xx.


@pytest.mark.parametrize("escaped", [r'"\ud800"', r'{"text": "a\udfffb"}', r'["\ude00\ud83d", "\ud83d\ude00"]'])
def test_the_readme_echo_handler_echoes_lone_surrogates_faithfully(
    app: ServedApp, service: RunningWebPubSub, escaped: str
) -> None:
    registry = EventHandlers()

    @registry.on_user_event("echo")
    def echo(event: UserEvent) -> UserEventResponse:  # as in the README
        event.context.state["echoes"] = event.context.state.get("echoes", 0) + 1
        return UserEventResponse(event.data, event.data_type)

    use_runtime(Runtime(load_settings(os.environ), registry=registry))
    headers = signed_event("azure.webpubsub.user.echo", "application/json")
    response = app.client.post("eventhandler", headers=headers, content=escaped.encode())
    assert response.status_code == 200, response.text
    assert json.loads(response.content.decode("utf-8")) == json.loads(escaped)
    assert response.headers["ce-connectionState"]  # the handler's state travels back too


# The Functions host's body limit (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, as infra and the example settings set
# it): an unauthenticated oversized body is refused by the host, before it is sent, on every route.


@pytest.mark.parametrize("route", ["eventhandler", "negotiate"])
def test_an_unauthenticated_95_mb_body_is_refused_before_it_is_sent(
    monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    example = json.loads(
        (Path(__file__).resolve().parents[2] / "local.settings.json.example").read_text(encoding="utf-8")
    )["Values"]
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", example["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"])
    with serve_app() as served:
        port = int(served.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = f"POST /api/{route} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {95 * 1024 * 1024}\r\n\r\n"
            sock.sendall(head.encode())  # and not one byte of the body
            assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
