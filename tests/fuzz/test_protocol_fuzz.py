"""Property-based tests of the CloudEvents protocol parser: 5,000 generated inputs, no crash, no 5xx.

The parser is pure, so it runs here directly (2,000 examples: only a 4xx AppError may escape it)
and behind the dispatcher with genuine signatures, so that every parser and default handler past
authentication sees the generated input (2,000 examples: every answer is 2xx or 4xx). Then text
UTF-8 cannot encode (lone surrogates, as valid JSON escapes) through handlers that render it back,
as the README's echo does, into replies, connection state, refusals and logs (1,000 examples).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from hypothesis import event, given, strategies as st

from shared.errors import AppError, Forbidden
from shared.events import EventHandlers
from shared.protocol import (
    ConnectionState,
    ConnectRequest,
    ConnectResponse,
    UserEvent,
    UserEventResponse,
    abuse_protection,
    is_signature_valid,
    parse_context,
    parse_event,
    signature_for,
)
from shared.runtime import Runtime
from shared.web import Request
from tests.support.fakes import EMULATOR_KEY
from tests.support.fuzz import generated_inputs, unencodable_text
from tests.support.settings import local_settings

PARSER_EXAMPLES = 2000
DISPATCH_EXAMPLES = 2000
RENDERING_EXAMPLES = 1000

EVENT_TYPES = [
    "azure.webpubsub.sys.connect",
    "azure.webpubsub.sys.connected",
    "azure.webpubsub.sys.disconnected",
    "azure.webpubsub.gp.joined",
    "azure.webpubsub.gp.left",
    "azure.webpubsub.user.message",
    "azure.webpubsub.user.",
    "azure.webpubsub.sys.",
    "azure.webpubsub.",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "text/plain",
    "text/plain; charset=UTF8",
    'text/plain; charset="utf-8"; charset=x',
    "application/octet-stream",
    "APPLICATION/JSON",
    ";;;",
    "",
]

# Header values as the host delivers them: any latin-1 text (HTTP headers are bytes decoded as latin-1).
header_text = st.text(st.characters(codec="latin-1", exclude_categories=["Cs"]), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
user_properties = st.lists(
    st.fixed_dictionaries({"name": st.text(max_size=8), "value": st.text(max_size=8)}) | json_values, max_size=3
)
# The `mqtt` objects of MQTT connect and disconnected events (reference-mqtt-cloud-events), valid or not.
mqtt_documents = st.fixed_dictionaries(
    {},
    optional={
        "protocolVersion": st.sampled_from([3, 4, 5, 6]) | json_values,
        "username": st.none() | st.text(max_size=12) | json_values,
        "password": st.none() | st.binary(max_size=12).map(lambda raw: base64.b64encode(raw).decode()) | json_values,
        "userProperties": st.none() | user_properties | json_values,
        "cleanStart": json_values,
        "initiatedByClient": json_values,
        "disconnectPacket": st.none()
        | st.fixed_dictionaries({}, optional={"code": json_values, "userProperties": user_properties})
        | json_values,
    },
)
connect_documents = st.fixed_dictionaries(
    {},
    optional={
        "mqtt": mqtt_documents | json_values,
        "claims": st.dictionaries(st.text(max_size=24), st.lists(st.text(max_size=40), max_size=4) | json_values),
        "query": st.dictionaries(st.text(max_size=12), st.lists(st.text(max_size=12), max_size=3) | json_values),
        "headers": st.dictionaries(st.text(max_size=12), st.lists(st.text(max_size=12), max_size=3) | json_values),
        "subprotocols": st.lists(st.text(max_size=40), max_size=4) | json_values,
        "clientCertificates": st.lists(st.dictionaries(st.sampled_from(["thumbprint", "content"]), json_values)),
        "reason": json_values,
        "group": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    connect_documents.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
)
states = st.one_of(
    st.none(),
    header_text,
    json_values.map(lambda value: base64.b64encode(json.dumps(value).encode()).decode()),
    st.binary(max_size=60).map(lambda raw: base64.b64encode(raw).decode()),
)


@generated_inputs(PARSER_EXAMPLES)
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "ce-type",
                "ce-hub",
                "ce-connectionid",
                "ce-userid",
                "ce-signature",
                "ce-awpsversion",
                "ce-specversion",
                "ce-connectionstate",
                "ce-id",
                "ce-eventname",
                "ce-subprotocol",
                "ce-physicalconnectionid",
                "ce-sessionid",
                "webhook-request-origin",
            ]
        ),
        header_text | st.sampled_from(EVENT_TYPES),
    ),
    body=bodies,
    content_type=st.none() | st.sampled_from(CONTENT_TYPES) | header_text,
    keys=st.lists(st.text(min_size=1, max_size=50), max_size=3),
    allowed=st.lists(st.text(max_size=20), max_size=3),
    max_body=st.integers(1, 4096),
)
def test_the_parser_raises_nothing_but_4xx_app_errors(
    headers: dict[str, str], body: bytes, content_type: str | None, keys: list[str], allowed: list[str], max_body: int
) -> None:
    refusals: list[AppError] = []
    try:
        context = parse_context(headers)
        is_signature_valid(context.connection_id, context.signature, keys)
        parse_event(context, body, content_type, max_body_bytes=max_body)
    except AppError as error:
        refusals.append(error)
    try:
        abuse_protection(headers.get("webhook-request-origin"), allowed)
    except AppError as error:
        refusals.append(error)
    assert all(400 <= refusal.status < 500 for refusal in refusals), refusals
    state = ConnectionState.decode(headers.get("ce-connectionstate"))
    assert isinstance(state.encode(), str)


def signed_request(
    event_type: str, connection_id: str, content_type: str, body: bytes, state: str | None, mqtt: bool
) -> Request:
    headers = {
        "ce-awpsversion": "1.0",
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-hub": "chat",
        "ce-connectionid": connection_id,
        "ce-userid": "alice",
        "ce-signature": signature_for(EMULATOR_KEY, connection_id),
        "content-type": content_type,
    }
    if state is not None:
        headers["ce-connectionstate"] = state
    if mqtt:  # an MQTT client's event: refusals of its connect are rendered as CONNACK codes
        headers["ce-physicalconnectionid"] = "physical-1"
    return Request("POST", "http://localhost:7071/api/eventhandler", headers, (), body)


dispatcher = Runtime(local_settings(NEGOTIATE_GROUPS="chat,news"), registry=EventHandlers()).events


@generated_inputs(DISPATCH_EXAMPLES)
@given(
    event_type=st.sampled_from(EVENT_TYPES) | st.text(max_size=40).map("azure.webpubsub.user.".__add__),
    connection_id=st.text(st.characters(codec="latin-1", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=bodies,
    state=states,
    mqtt=st.booleans(),
)
def test_authenticated_events_answer_only_2xx_or_4xx(
    event_type: str, connection_id: str, content_type: str, body: bytes, state: str | None, mqtt: bool
) -> None:
    response = dispatcher.handle(signed_request(event_type, connection_id, content_type, body, state, mqtt))
    event(f"status {response.status}")
    assert response.status < 500, response.body[:200]
    assert response.status != 401  # the genuine signature always passes, whatever follows it


def rendering_registry() -> EventHandlers:
    """Handlers that give the client's own text back: echo (README), a text reply, state, a refusal."""
    registry = EventHandlers()

    @registry.on_user_event("echo")
    def echo(event: UserEvent) -> UserEventResponse:
        event.context.state["echoes"] = event.context.state.get("echoes", 0) + 1
        return UserEventResponse(event.data, event.data_type)

    @registry.on_user_event("describe")
    def describe(event: UserEvent) -> UserEventResponse:
        event.context.state["last"] = event.data
        return UserEventResponse(f"you sent {event.data}", "text")

    @registry.on_connect
    def connect(request: ConnectRequest) -> ConnectResponse:
        rooms = request.query.get("room", [])
        if "deny" in request.query:
            raise Forbidden(f"room {rooms} is closed")
        return ConnectResponse(user_id=request.context.user_id, groups=rooms, subprotocol=None)

    return registry


rendering_dispatcher = Runtime(local_settings(NEGOTIATE_GROUPS="chat,news"), registry=rendering_registry()).events
json_with_unencodable_text = st.recursive(
    unencodable_text | st.integers() | st.none(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(unencodable_text, children, max_size=3),
    max_leaves=8,
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


@pytest.fixture(scope="module")
def log_lines() -> Any:
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.messages
    root.removeHandler(handler)
    root.setLevel(level)


@generated_inputs(RENDERING_EXAMPLES)
@given(
    kind=st.sampled_from(["echo", "describe", "connect", "deny"]),
    data=json_with_unencodable_text,
    state=st.none() | json_with_unencodable_text.map(lambda value: base64.b64encode(json.dumps(value).encode())),
    mqtt=st.booleans(),
)
def test_text_utf8_cannot_encode_is_rendered_back_as_valid_utf8_never_a_5xx(
    log_lines: list[str], kind: str, data: Any, state: bytes | None, mqtt: bool
) -> None:
    if kind in {"echo", "describe"}:
        event_type, body = f"azure.webpubsub.user.{kind}", json.dumps(data).encode()
    else:
        query: dict[str, Any] = {"room": [data] if isinstance(data, str) else ["chat"]}
        if kind == "deny":
            query["deny"] = ["1"]
        event_type, body = "azure.webpubsub.sys.connect", json.dumps({"claims": {}, "query": query}).encode()
    assert body.decode("utf-8")  # valid UTF-8 in: the JSON escapes hold the surrogates
    encoded_state = None if state is None else state.decode()
    request = signed_request(event_type, "conn-1", "application/json", body, encoded_state, mqtt)
    del log_lines[:]
    response = rendering_dispatcher.handle(request)
    event(f"{kind}: {response.status}")
    assert response.status < 500, response.body[:200]
    text = response.body.decode("utf-8")  # raises if the body is not valid UTF-8
    if kind == "echo":
        assert json.loads(text) == data  # a faithful echo: the same value, surrogates escaped
    for name, value in response.headers.items():
        value.encode("latin-1")  # a header the host can send
        assert name
    for line in log_lines:
        line.encode("utf-8")  # a log line any UTF-8 log sink can write
