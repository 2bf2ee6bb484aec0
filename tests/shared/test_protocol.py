"""The pure CloudEvents protocol: parsing, signatures, abuse protection, state, rendering."""

from __future__ import annotations

import base64
import json

import pytest

from shared.errors import (
    AppError,
    BadRequest,
    DependencyUnavailable,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from shared.protocol import (
    ClientProtocol,
    ConnectedEvent,
    ConnectionState,
    ConnectRequest,
    ConnectResponse,
    DisconnectedEvent,
    EventKind,
    GroupEvent,
    MqttConnectCode,
    MqttConnectProperties,
    MqttConnectRefused,
    MqttDisconnectPacket,
    MqttDisconnectProperties,
    MqttDisconnectReasonCode,
    MqttProtocolVersion,
    MqttUserProperty,
    MqttV5ConnectReasonCode,
    MqttV311ConnectReturnCode,
    UnknownEvent,
    UserEvent,
    UserEventResponse,
    abuse_protection,
    choose_subprotocol,
    is_signature_valid,
    kind_of,
    mqtt_code_for_status,
    mqtt_code_for_version,
    mqtt_status_for,
    parse_context,
    parse_event,
    render_connect,
    render_refusal,
    render_user_event,
)
from tests.support.events import sign
from tests.support.fakes import EMULATOR_KEY

SECONDARY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu"


def headers(event_type: str = "azure.webpubsub.sys.connect", **extra: str) -> dict[str, str]:
    values = {
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": event_type,
        "ce-hub": "chat",
        "ce-connectionid": "conn-1",
        "ce-eventname": event_type.rsplit(".", 1)[-1],
        "ce-id": "7",
        "ce-userid": "alice",
    }
    values.update({name.lower(): value for name, value in extra.items()})
    return values


class TestSignatures:
    def test_primary_key_matches(self) -> None:
        assert is_signature_valid("conn-1", sign("conn-1", EMULATOR_KEY), [EMULATOR_KEY])

    def test_secondary_key_matches_when_the_app_has_only_it(self) -> None:
        both = f"{sign('conn-1', EMULATOR_KEY)},{sign('conn-1', SECONDARY)}"
        assert is_signature_valid("conn-1", both, [SECONDARY])

    def test_two_header_lines_joined_with_spaces(self) -> None:
        joined = f"{sign('c', EMULATOR_KEY)} ,  {sign('c', SECONDARY)}"
        assert is_signature_valid("c", joined, [SECONDARY])
        assert is_signature_valid("c", joined, [EMULATOR_KEY])

    def test_upper_case_hex_matches(self) -> None:
        value = sign("conn-1", EMULATOR_KEY)
        assert is_signature_valid("conn-1", "sha256=" + value[7:].upper(), [EMULATOR_KEY])
        assert is_signature_valid("conn-1", "SHA256=" + value[7:], [EMULATOR_KEY])

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "sha256=",
            sign("conn-2", EMULATOR_KEY),  # replayed from another connection
            sign("conn-1", "wrong-key-wrong-key-wrong-key-wrong"),
            sign("conn-1", EMULATOR_KEY)[:-1] + "0",  # tampered
            "md5=" + sign("conn-1", EMULATOR_KEY)[7:],
            "sha256=zz\u00e9",
        ],
    )
    def test_tampered_missing_or_foreign_signatures_fail(self, header: str | None) -> None:
        assert not is_signature_valid("conn-1", header, [EMULATOR_KEY, SECONDARY])

    def test_no_keys_never_match(self) -> None:
        assert not is_signature_valid("conn-1", sign("conn-1", EMULATOR_KEY), [])


class TestAbuseProtection:
    def test_configured_host_is_allowed_by_name(self) -> None:
        response = abuse_protection("contoso.webpubsub.azure.com", ("contoso.webpubsub.azure.com",))
        assert response.status == 200
        assert response.headers == {"WebHook-Allowed-Origin": "contoso.webpubsub.azure.com"}

    def test_comparison_ignores_case_and_answers_with_the_configured_host(self) -> None:
        response = abuse_protection("Contoso.WebPubSub.Azure.com", ("contoso.webpubsub.azure.com",))
        assert response.headers["WebHook-Allowed-Origin"] == "contoso.webpubsub.azure.com"

    def test_comma_separated_origins_pick_the_configured_one(self) -> None:
        response = abuse_protection("evil.example, contoso.webpubsub.azure.com", ("contoso.webpubsub.azure.com",))
        assert response.headers["WebHook-Allowed-Origin"] == "contoso.webpubsub.azure.com"

    @pytest.mark.parametrize("origin", ["evil.example", "evil.example, other.example", "*", ""])
    def test_foreign_origins_are_refused_and_never_echoed(self, origin: str) -> None:
        with pytest.raises(BadRequest) as caught:
            abuse_protection(origin, ("contoso.webpubsub.azure.com",))
        assert "evil" not in caught.value.message

    def test_missing_origin_is_refused(self) -> None:
        with pytest.raises(BadRequest):
            abuse_protection(None, ("contoso.webpubsub.azure.com",))


class TestContext:
    def test_attributes_are_read(self) -> None:
        context = parse_context(headers(**{"ce-subprotocol": "json.webpubsub.azure.v1", "ce-signature": "sha256=x"}))
        assert (context.hub, context.connection_id, context.user_id, context.event_id) == (
            "chat",
            "conn-1",
            "alice",
            "7",
        )
        assert context.kind is EventKind.CONNECT
        assert context.subprotocol == "json.webpubsub.azure.v1"
        assert "sha256=x" not in repr(context)

    def test_user_event_name_comes_from_the_type(self) -> None:
        context = parse_context(headers("azure.webpubsub.user.chat.message", **{"ce-eventname": "lie"}))
        assert context.kind is EventKind.USER
        assert context.event_name == "chat.message"

    @pytest.mark.parametrize("missing", ["ce-type", "ce-hub", "ce-connectionid", "ce-awpsversion"])
    def test_missing_required_header_is_named(self, missing: str) -> None:
        values = headers()
        del values[missing]
        with pytest.raises(BadRequest) as caught:
            parse_context(values)
        assert missing in caught.value.message

    def test_unsupported_spec_version_is_refused(self) -> None:
        with pytest.raises(BadRequest):
            parse_context(headers(**{"ce-specversion": "0.3"}))

    @pytest.mark.parametrize(
        ("event_type", "kind"),
        [
            ("azure.webpubsub.sys.connected", EventKind.CONNECTED),
            ("azure.webpubsub.sys.disconnected", EventKind.DISCONNECTED),
            ("azure.webpubsub.gp.joined", EventKind.GROUP_JOINED),
            ("azure.webpubsub.gp.left", EventKind.GROUP_LEFT),
            ("azure.webpubsub.user.", EventKind.UNKNOWN),
            ("azure.webpubsub.sys.future", EventKind.UNKNOWN),
            ("com.example.other", EventKind.UNKNOWN),
        ],
    )
    def test_kinds(self, event_type: str, kind: EventKind) -> None:
        assert kind_of(event_type) is kind


class TestState:
    def test_round_trip(self) -> None:
        state = ConnectionState.decode(None)
        state["room"] = "lobby"
        state["count"] = 2
        decoded = ConnectionState.decode(state.encode())
        assert dict(decoded) == {"room": "lobby", "count": 2}
        assert not decoded.changed

    def test_wire_format_is_base64_json(self) -> None:
        header = base64.b64encode(b'{"a":[1,2]}').decode()
        assert dict(ConnectionState.decode(header)) == {"a": [1, 2]}

    @pytest.mark.parametrize(
        "header", ["not base64!", base64.b64encode(b"[1]").decode(), base64.b64encode(b"\xff").decode()]
    )
    def test_invalid_state_reads_as_empty(self, header: str) -> None:
        assert dict(ConnectionState.decode(header)) == {}

    def test_changes_are_tracked(self) -> None:
        state = ConnectionState({"a": 1})
        state["a"] = 1
        assert state.changed
        state = ConnectionState({"a": 1})
        del state["a"]
        assert state.changed
        assert not ConnectionState().changed

    def test_values_that_cannot_travel_are_refused_when_set(self) -> None:
        with pytest.raises(TypeError):
            ConnectionState()["bad"] = object()


class TestParseEvent:
    def parse(
        self, event_type: str, body: bytes, content_type: str | None = "application/json; charset=utf-8"
    ) -> object:
        return parse_event(parse_context(headers(event_type)), body, content_type, max_body_bytes=1024)

    def test_connect_body(self) -> None:
        body = {
            "claims": {"sub": ["alice"], "role": ["webpubsub.sendToGroup.chat"]},
            "query": {"access_token": ["x"], "room": ["1"]},
            "headers": {"User-Agent": ["test"]},
            "subprotocols": ["json.webpubsub.azure.v1"],
            "clientCertificates": [{"thumbprint": "ab", "content": "-----BEGIN CERTIFICATE-----"}],
        }
        event = self.parse("azure.webpubsub.sys.connect", json.dumps(body).encode())
        assert isinstance(event, ConnectRequest)
        assert event.claims["role"] == ["webpubsub.sendToGroup.chat"]
        assert event.query["room"] == ["1"]
        assert event.subprotocols == ("json.webpubsub.azure.v1",)
        assert event.client_certificates[0].thumbprint == "ab"

    def test_connect_with_empty_body_has_defaults(self) -> None:
        event = self.parse("azure.webpubsub.sys.connect", b"")
        assert isinstance(event, ConnectRequest)
        assert event.subprotocols == ()

    @pytest.mark.parametrize(
        "body",
        [b"{", b"[]", b'{"claims": {"a": "b"}}', b'{"subprotocols": "x"}', b'{"clientCertificates": [1]}', b"\xff"],
    )
    def test_malformed_connect_body_is_a_bad_request(self, body: bytes) -> None:
        with pytest.raises(BadRequest):
            self.parse("azure.webpubsub.sys.connect", body)

    def test_system_event_with_wrong_content_type_is_415(self) -> None:
        with pytest.raises(UnsupportedMediaType):
            self.parse("azure.webpubsub.sys.connect", b"{}", "text/plain")

    def test_connected_disconnected_and_groups(self) -> None:
        assert isinstance(self.parse("azure.webpubsub.sys.connected", b"{}"), ConnectedEvent)
        disconnected = self.parse("azure.webpubsub.sys.disconnected", b'{"reason": "closed by client"}')
        assert isinstance(disconnected, DisconnectedEvent)
        assert disconnected.reason == "closed by client"
        joined = self.parse("azure.webpubsub.gp.joined", b'{"group": "chat"}')
        assert isinstance(joined, GroupEvent)
        assert joined.group == "chat"
        with pytest.raises(BadRequest):
            self.parse("azure.webpubsub.gp.left", b"{}")

    @pytest.mark.parametrize(
        ("content_type", "body", "data", "data_type"),
        [
            ("text/plain; charset=utf-8", "héllo".encode(), "héllo", "text"),
            ("text/plain", b"plain", "plain", "text"),
            ("application/json", b'{"a": 1}', {"a": 1}, "json"),
            ("application/json; charset=utf-8", b'"s"', "s", "json"),
            ("application/octet-stream", b"\x00\xff", b"\x00\xff", "binary"),
        ],
    )
    def test_user_event_content_types(self, content_type: str, body: bytes, data: object, data_type: str) -> None:
        event = self.parse("azure.webpubsub.user.message", body, content_type)
        assert isinstance(event, UserEvent)
        assert (event.data, event.data_type) == (data, data_type)

    @pytest.mark.parametrize(
        ("content_type", "body", "error"),
        [
            ("text/plain", b"\xff\xfe", BadRequest),
            ("application/json", b"{oops", BadRequest),
            ("image/png", b"x", UnsupportedMediaType),
            (None, b"x", UnsupportedMediaType),
            ("text/plain; charset=latin-1", b"x", UnsupportedMediaType),
        ],
    )
    def test_bad_user_event_bodies(self, content_type: str | None, body: bytes, error: type[Exception]) -> None:
        with pytest.raises(error):
            self.parse("azure.webpubsub.user.message", body, content_type)

    def test_oversized_body_is_413(self) -> None:
        with pytest.raises(PayloadTooLarge):
            self.parse("azure.webpubsub.user.message", b"x" * 1025, "text/plain")

    def test_unknown_type_needs_no_body(self) -> None:
        assert isinstance(self.parse("azure.webpubsub.sys.future", b"\xff", "x/y"), UnknownEvent)


class TestRendering:
    def test_connect_omits_unset_keys(self) -> None:
        response = render_connect(ConnectResponse(user_id="a", roles=["r"]), ConnectionState())
        assert response.status == 200
        assert json.loads(response.body) == {"userId": "a", "roles": ["r"]}
        assert response.content_type is not None
        assert response.content_type.startswith("application/json")
        assert "ce-connectionState" not in response.headers

    def test_connect_with_nothing_to_say_is_204(self) -> None:
        assert render_connect(None, ConnectionState()).status == 204
        assert render_connect(ConnectResponse(), ConnectionState()).status == 204

    def test_changed_state_is_sent_once(self) -> None:
        state = ConnectionState()
        state["room"] = "lobby"
        response = render_connect(None, state)
        assert dict(ConnectionState.decode(response.headers["ce-connectionState"])) == {"room": "lobby"}

    @pytest.mark.parametrize(
        ("reply", "content_type", "body"),
        [
            (UserEventResponse("hi"), "text/plain; charset=utf-8", b"hi"),
            (UserEventResponse({"a": "é"}, "json"), "application/json; charset=utf-8", '{"a":"é"}'.encode()),
            (UserEventResponse(b"\x01", "binary"), "application/octet-stream", b"\x01"),
            # Lone surrogates (valid JSON input can hold them as escapes): JSON keeps them as escapes,
            # text has no escape and gets U+FFFD; a pair split over two code points is joined.
            (UserEventResponse(["\ud800", "é"], "json"), "application/json; charset=utf-8", b'["\\ud800","\\u00e9"]'),
            (UserEventResponse("a\udfffb", "text"), "text/plain; charset=utf-8", "a\ufffdb".encode()),
            (UserEventResponse("\ud83d\ude00", "text"), "text/plain; charset=utf-8", "\U0001f600".encode()),
        ],
    )
    def test_user_event_reply_content_types(self, reply: UserEventResponse, content_type: str, body: bytes) -> None:
        response = render_user_event(reply, ConnectionState())
        assert (response.status, response.content_type, response.body) == (200, content_type, body)

    def test_no_reply_is_204(self) -> None:
        assert render_user_event(None, ConnectionState()).status == 204

    def test_reply_of_the_wrong_type_is_a_handler_bug(self) -> None:
        with pytest.raises(TypeError):
            render_user_event(UserEventResponse(b"bytes", "text"), ConnectionState())


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([], None),
        (["mqtt"], None),
        (["json.webpubsub.azure.v1"], "json.webpubsub.azure.v1"),
        (["json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1"], "json.reliable.webpubsub.azure.v1"),
        (["custom", "protobuf.webpubsub.azure.v1"], "protobuf.webpubsub.azure.v1"),
    ],
)
def test_subprotocol_is_only_ever_one_the_client_offered(offered: list[str], chosen: str | None) -> None:
    assert choose_subprotocol(offered) == chosen


# The documented MQTT examples (reference-mqtt-cloud-events, "CloudEvents extension for Azure Web
# PubSub MQTT event handler with HTTP protocol"): the headers and bodies the service sends, in the
# lower-case spelling shared.web.Request gives them. Placeholders are filled with sample values.
DOCUMENTED_MQTT_CONNECT_HEADERS = {
    "webhook-request-origin": "xxx.webpubsub.azure.com",
    "content-type": "application/json; charset=utf-8",
    "ce-specversion": "1.0",
    "ce-awpsversion": "1.0",
    "ce-type": "azure.webpubsub.sys.connect",
    "ce-source": "/hubs/chat/client/client1/physical-1",
    "ce-id": "event-1",
    "ce-time": "2021-01-01T00:00:00Z",
    "ce-connectionid": "client1",
    "ce-hub": "chat",
    "ce-eventname": "connect",
    "ce-physicalconnectionid": "physical-1",
}
DOCUMENTED_MQTT_CONNECT_BODY = {
    "mqtt": {"protocolVersion": 4, "cleanStart": True, "username": None, "password": None, "userProperties": None},
    "claims": {"type1": ["value1"]},
    "query": {"queryKey1": ["queryValue1"]},
    "headers": {"Connection": ["Upgrade"]},
    "subprotocols": ["mqtt"],
    "clientCertificates": [
        {
            "thumbprint": "3ce9b08a37566915dec4d1662cd2102121a99868",
            "content": "{string content of PEM format certificate}",
        }
    ],
}
DOCUMENTED_MQTT_DISCONNECTED_BODY = {
    "reason": "",
    "mqtt": {
        "initiatedByClient": True,
        "disconnectPacket": {"code": 0, "userProperties": [{"name": "name1", "value": "value1"}]},
    },
}


def mqtt_headers(event_type: str, **extra: str) -> dict[str, str]:
    """A documented MQTT event of `event_type`; events after connect also carry ce-sessionId."""
    values = {**DOCUMENTED_MQTT_CONNECT_HEADERS, "ce-type": event_type, "ce-eventname": event_type.rsplit(".", 1)[-1]}
    if event_type != "azure.webpubsub.sys.connect":
        values["ce-sessionid"] = "session-1"
    values.update({name.lower(): value for name, value in extra.items()})
    return values


def parse_mqtt(event_type: str, body: object, **extra: str) -> object:
    context = parse_context(mqtt_headers(event_type, **extra))
    return parse_event(context, json.dumps(body).encode(), JSON_CT, max_body_bytes=1 << 20)


def mqtt_connect(**mqtt: object) -> ConnectRequest:
    body = {**DOCUMENTED_MQTT_CONNECT_BODY, "mqtt": {**DOCUMENTED_MQTT_CONNECT_BODY["mqtt"], **mqtt}}  # type: ignore[dict-item]
    request = parse_mqtt("azure.webpubsub.sys.connect", body)
    assert isinstance(request, ConnectRequest)
    return request


JSON_CT = "application/json; charset=utf-8"


class TestMqttEvents:
    def test_the_documented_connect_is_an_mqtt_connect_request(self) -> None:
        request = parse_mqtt("azure.webpubsub.sys.connect", DOCUMENTED_MQTT_CONNECT_BODY)
        assert isinstance(request, ConnectRequest)
        assert request.context.client_protocol is ClientProtocol.MQTT
        assert request.context.connection_id == "client1"  # the MQTT client id
        assert request.context.physical_connection_id == "physical-1"
        assert request.context.session_id is None  # documented: absent from connect
        assert request.mqtt == MqttConnectProperties(protocol_version=MqttProtocolVersion.V311, clean_start=True)
        assert request.subprotocols == ("mqtt",)
        assert request.claims == {"type1": ["value1"]}
        assert request.client_certificates[0].thumbprint == "3ce9b08a37566915dec4d1662cd2102121a99868"

    def test_mqtt5_connect_properties(self) -> None:
        # The payload of Microsoft.Azure.WebPubSub.AspNetCore's MQTT connect tests (protocol 5).
        password = base64.b64encode(b"\x00secret").decode()
        request = mqtt_connect(
            protocolVersion=5, username="username", password=password, userProperties=[{"name": "a", "value": "b"}]
        )
        assert request.mqtt is not None
        assert request.mqtt.protocol_version is MqttProtocolVersion.V500
        assert request.mqtt.username == "username"
        assert request.mqtt.password_bytes() == b"\x00secret"
        assert request.mqtt.user_properties == (MqttUserProperty("a", "b"),)
        assert password not in repr(request.mqtt)

    def test_a_password_that_is_not_base64_is_a_bad_request(self) -> None:
        mqtt = mqtt_connect(password="not base64!").mqtt
        assert mqtt is not None
        with pytest.raises(BadRequest) as caught:
            mqtt.password_bytes()
        assert caught.value.code == "invalid_password"

    def test_a_websocket_connect_has_no_mqtt_properties_even_if_the_body_has_some(self) -> None:
        context = parse_context(headers())
        request = parse_event(context, json.dumps(DOCUMENTED_MQTT_CONNECT_BODY).encode(), JSON_CT, max_body_bytes=4096)
        assert isinstance(request, ConnectRequest)
        assert request.mqtt is None
        assert context.client_protocol is ClientProtocol.DEFAULT

    def test_the_documented_connected_carries_the_session(self) -> None:
        event = parse_mqtt("azure.webpubsub.sys.connected", {})
        assert isinstance(event, ConnectedEvent)
        assert (event.context.physical_connection_id, event.context.session_id) == ("physical-1", "session-1")
        assert event.context.client_protocol is ClientProtocol.MQTT

    def test_the_documented_disconnected_carries_the_disconnect_packet(self) -> None:
        event = parse_mqtt("azure.webpubsub.sys.disconnected", DOCUMENTED_MQTT_DISCONNECTED_BODY)
        assert isinstance(event, DisconnectedEvent)
        assert event.reason == ""
        assert event.mqtt == MqttDisconnectProperties(
            initiated_by_client=True,
            disconnect_packet=MqttDisconnectPacket(
                MqttDisconnectReasonCode.NORMAL_DISCONNECTION, (MqttUserProperty("name1", "value1"),)
            ),
        )

    def test_a_lost_network_connection_has_no_disconnect_packet(self) -> None:
        body = {"reason": "connection lost", "mqtt": {"initiatedByClient": False, "disconnectPacket": None}}
        event = parse_mqtt("azure.webpubsub.sys.disconnected", body)
        assert isinstance(event, DisconnectedEvent)
        assert event.mqtt == MqttDisconnectProperties(initiated_by_client=False)

    def test_an_mqtt_user_event_carries_the_session(self) -> None:
        context = parse_context(mqtt_headers("azure.webpubsub.user.telemetry", **{"content-type": "text/plain"}))
        event = parse_event(context, b"21.5", "text/plain", max_body_bytes=4096)
        assert isinstance(event, UserEvent)
        assert (event.context.event_name, event.context.session_id, event.data) == ("telemetry", "session-1", "21.5")

    @pytest.mark.parametrize(
        ("event_type", "body"),
        [
            ("azure.webpubsub.sys.connect", {"claims": {}}),  # no mqtt object
            ("azure.webpubsub.sys.connect", {"mqtt": []}),
            ("azure.webpubsub.sys.connect", {"mqtt": {}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": 3}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": True}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": "4"}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": [4]}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": 5, "username": 7}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": 5, "cleanStart": "yes"}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": 5, "userProperties": [{"name": "a"}]}}),
            ("azure.webpubsub.sys.connect", {"mqtt": {"protocolVersion": 5, "userProperties": {"a": "b"}}}),
            ("azure.webpubsub.sys.disconnected", {"reason": "x"}),
            ("azure.webpubsub.sys.disconnected", {"mqtt": {"initiatedByClient": 1}}),
            ("azure.webpubsub.sys.disconnected", {"mqtt": {"disconnectPacket": {"code": True}}}),
            ("azure.webpubsub.sys.disconnected", {"mqtt": {"disconnectPacket": []}}),
        ],
    )
    def test_malformed_mqtt_objects_are_bad_requests(self, event_type: str, body: object) -> None:
        with pytest.raises(BadRequest) as caught:
            parse_mqtt(event_type, body)
        assert "mqtt" in caught.value.message


class TestMqttRendering:
    def test_user_properties_of_an_accepted_connect_go_to_the_connack(self) -> None:
        # The documented success response: groups, userId, roles and mqtt.userProperties.
        response = render_connect(
            ConnectResponse(
                user_id="userId1",
                groups=["newGroup1"],
                roles=["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"],
                mqtt_user_properties=[MqttUserProperty("name1", "value1")],
            ),
            ConnectionState(),
        )
        assert response.status == 200
        assert json.loads(response.body) == {
            "userId": "userId1",
            "groups": ["newGroup1"],
            "roles": ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"],
            "mqtt": {"userProperties": [{"name": "name1", "value": "value1"}]},
        }

    def test_the_documented_refusal(self) -> None:
        # Documented error response: {"mqtt": {"code": 138, "reason": "banned by server", "userProperties": [...]}}.
        # The service reads the code; every non-2xx status refuses. 138 (Banned) is answered 403, as the
        # official server SDKs map it.
        refused = MqttConnectRefused(
            MqttV5ConnectReasonCode.BANNED, "banned by server", user_properties=[MqttUserProperty("name1", "value1")]
        )
        response = render_refusal(refused, mqtt_connect(protocolVersion=5))
        assert response.status == 403
        assert response.content_type is not None
        assert response.content_type.startswith("application/json")
        assert json.loads(response.body) == {
            "mqtt": {
                "code": 138,
                "reason": "banned by server",
                "userProperties": [{"name": "name1", "value": "value1"}],
            }
        }

    @pytest.mark.parametrize(
        ("code", "version", "body"),
        [
            # Microsoft.Azure.WebPubSub.AspNetCore's MQTT connect test data: 401 with these codes.
            (MqttV311ConnectReturnCode.NOT_AUTHORIZED, 4, {"code": 5, "reason": "not authorized"}),
            (MqttV5ConnectReasonCode.NOT_AUTHORIZED, 5, {"code": 135, "reason": "not authorized"}),
            # A code the client's version lacks is replaced by that version's nearest one.
            (MqttV311ConnectReturnCode.NOT_AUTHORIZED, 5, {"code": 135, "reason": "not authorized"}),
            (MqttV5ConnectReasonCode.BAD_USERNAME_OR_PASSWORD, 4, {"code": 4, "reason": "not authorized"}),
        ],
    )
    def test_a_chosen_code_fits_the_client_version(self, code: MqttConnectCode, version: int, body: object) -> None:
        response = render_refusal(MqttConnectRefused(code, "not authorized"), mqtt_connect(protocolVersion=version))
        assert response.status == 401
        assert json.loads(response.body) == {"mqtt": body}

    def test_banned_reaches_an_mqtt311_client_as_not_authorized(self) -> None:
        response = render_refusal(MqttConnectRefused(MqttV5ConnectReasonCode.BANNED), mqtt_connect(protocolVersion=4))
        assert (response.status, json.loads(response.body)) == (401, {"mqtt": {"code": 5}})

    @pytest.mark.parametrize(
        ("error", "v311", "v5"),
        [
            # The status-to-code choice of web-pubsub-express's MQTT connect refusals.
            (BadRequest("bad password"), 4, 134),
            (Unauthorized("who are you"), 5, 135),
            (Forbidden("not for you"), 5, 135),
            (AppError("bug"), 3, 128),
            (DependencyUnavailable("Key Vault", "down"), 3, 136),
        ],
    )
    def test_app_errors_become_the_connack_code_of_their_status(self, error: AppError, v311: int, v5: int) -> None:
        for version, code in ((4, v311), (5, v5)):
            response = render_refusal(error, mqtt_connect(protocolVersion=version))
            assert response.status == error.status
            assert json.loads(response.body) == {"mqtt": {"code": code, "reason": error.public_message}}
            assert dict(response.headers).items() >= error.headers.items()  # Retry-After stays

    def test_websocket_refusals_stay_the_apps_json_error(self) -> None:
        context = parse_context(headers())
        request = parse_event(context, b"{}", JSON_CT, max_body_bytes=4096)
        response = render_refusal(Unauthorized("no", code="no_user"), request)
        assert (response.status, json.loads(response.body)) == (401, {"error": {"code": "no_user", "message": "no"}})
        assert render_refusal(MqttConnectRefused(MqttV5ConnectReasonCode.BANNED), None).status == 401

    def test_every_code_has_a_refusing_status_and_a_counterpart_in_the_other_version(self) -> None:
        for code in [*MqttV311ConnectReturnCode, *MqttV5ConnectReasonCode]:
            assert 400 <= mqtt_status_for(code) < 600
            for version in MqttProtocolVersion:
                translated = mqtt_code_for_version(code, version)
                expected = MqttV5ConnectReasonCode if version is MqttProtocolVersion.V500 else MqttV311ConnectReturnCode
                assert isinstance(translated, expected)
        assert mqtt_status_for(MqttV311ConnectReturnCode.SERVER_UNAVAILABLE) == 503
        assert mqtt_status_for(MqttV5ConnectReasonCode.QUOTA_EXCEEDED) == 429

    def test_only_connack_codes_can_be_raised(self) -> None:
        with pytest.raises(TypeError):
            MqttConnectRefused(135)  # type: ignore[arg-type]

    def test_the_status_of_errors_outside_4xx_and_5xx_maps_to_a_server_code(self) -> None:
        assert mqtt_code_for_status(429, MqttProtocolVersion.V500) is MqttV5ConnectReasonCode.NOT_AUTHORIZED
        assert mqtt_code_for_status(502, MqttProtocolVersion.V311) is MqttV311ConnectReturnCode.SERVER_UNAVAILABLE
