"""The event handler route end to end: handshake, authenticity, dispatch, extension point, bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Sequence
from typing import cast

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import function_app
from shared.bearer import BearerValidator
from shared.config import BearerSettings
from shared.errors import BadRequest, Forbidden
from shared.events import EventHandlers
from shared.policy import Grant, GroupPolicy, roles_for
from shared.protocol import (
    ConnectedEvent,
    ConnectRequest,
    ConnectResponse,
    MqttConnectRefused,
    MqttDisconnectPacket,
    MqttDisconnectProperties,
    MqttDisconnectReasonCode,
    MqttUserProperty,
    MqttV5ConnectReasonCode,
    UserEvent,
    UserEventResponse,
)
from shared.runtime import Runtime, use_runtime
from shared.tokens import KeyVaultTokenSource
from shared.upstream_auth import ServiceTokenCheck
from tests.support.events import (
    CONNECT,
    CONNECTED,
    DISCONNECTED,
    connect_body,
    event_headers,
    mqtt_connect_body,
    mqtt_event_headers,
    sign,
)
from tests.support.fakes import EMULATOR_KEY, FakeAdapter, FakeCredential, FakeKeyVault, transport_for
from tests.support.functions import error_code, http_request
from tests.support.issuer import Issuer
from tests.support.settings import local_settings

SECONDARY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu"
# The Web PubSub resource's managed identity (object id), the only caller the entra and appservice checks let through.
WPS_PRINCIPAL = "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f"


def post(headers: dict[str, str], body: bytes = b"") -> func.HttpResponse:
    return cast(
        func.HttpResponse, function_app.eventhandler(http_request("POST", "eventhandler", headers=headers, body=body))
    )


@pytest.fixture
def registry() -> EventHandlers:
    """A fresh handler registry installed with local settings (connection string, signatures)."""
    handlers = EventHandlers()
    use_runtime(Runtime(local_settings(NEGOTIATE_GROUPS="chat,news"), registry=handlers))
    return handlers


class TestAbuseProtection:
    @pytest.mark.parametrize("method", ["OPTIONS", "GET"])
    def test_service_host_is_allowed(self, registry: EventHandlers, method: str) -> None:
        request = http_request(method, "eventhandler", headers={"WebHook-Request-Origin": "localhost"})
        response = function_app.eventhandler(request)
        assert response.status_code == 200
        assert response.headers["WebHook-Allowed-Origin"] == "localhost"

    def test_spoofed_origin_is_refused_without_echo(self, registry: EventHandlers) -> None:
        request = http_request("OPTIONS", "eventhandler", headers={"WebHook-Request-Origin": "attacker.example"})
        response = function_app.eventhandler(request)
        assert response.status_code == 400
        assert "WebHook-Allowed-Origin" not in response.headers
        assert b"attacker" not in response.get_body()

    def test_origin_list_with_the_service_host_is_allowed(self) -> None:
        use_runtime(Runtime(local_settings(WEBPUBSUB_ALLOWED_ORIGINS="custom.example.com")))
        origin = "other.example, Custom.Example.com"
        response = function_app.eventhandler(
            http_request("OPTIONS", "eventhandler", headers={"WebHook-Request-Origin": origin})
        )
        assert response.headers["WebHook-Allowed-Origin"] == "custom.example.com"

    def test_missing_origin_is_refused(self, registry: EventHandlers) -> None:
        assert function_app.eventhandler(http_request("OPTIONS", "eventhandler")).status_code == 400


class TestAuthenticity:
    def test_signed_connect_is_accepted_with_policy_roles(self, registry: EventHandlers) -> None:
        body = connect_body(subprotocols=["json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1"])
        response = post(event_headers(), body)
        assert response.status_code == 200
        assert json.loads(response.get_body()) == {
            "userId": "alice",
            "roles": [
                "webpubsub.joinLeaveGroup.chat",
                "webpubsub.sendToGroup.chat",
                "webpubsub.joinLeaveGroup.news",
                "webpubsub.sendToGroup.news",
            ],
            "subprotocol": "json.reliable.webpubsub.azure.v1",
        }

    def test_the_group_policy_is_asked_once_per_connect(self) -> None:
        class Counting(GroupPolicy):
            def __init__(self) -> None:
                super().__init__(["chat"])
                self.asked: list[str] = []

            def grant(self, user_id: str, requested: Sequence[str] | None = None) -> Grant:
                self.asked.append(user_id)
                return super().grant(user_id, requested)

        policy = Counting()
        use_runtime(Runtime(local_settings(), registry=EventHandlers(), policy=policy))
        response = post(event_headers(), connect_body())
        assert response.status_code == 200
        assert json.loads(response.get_body())["roles"] == list(roles_for(["chat"]))
        assert policy.asked == ["alice"]  # the token check's grant is the answer's

    @pytest.mark.parametrize(
        "signature",
        [
            None,
            "",
            sign("conn-2"),  # an event replayed with another connection's signature
            sign("conn-1", "a-different-access-key-of-enough-length"),
            sign("conn-1")[:-2] + "00",
        ],
    )
    def test_unauthenticated_event_is_401_and_never_reaches_a_handler(
        self, registry: EventHandlers, signature: str | None
    ) -> None:
        called: list[object] = []
        registry.on_connect(lambda request: called.append(request))
        response = post(event_headers(signature=signature), connect_body())
        assert response.status_code == 401
        assert error_code(response) == "unauthenticated_event"
        assert called == []

    def test_secondary_key_on_its_own_header_line_and_upper_case(self) -> None:
        use_runtime(
            Runtime(
                local_settings(
                    WEBPUBSUB_CONNECTION_STRING=f"Endpoint=http://localhost:8080;AccessKey={SECONDARY};Version=1.0;"
                )
            )
        )
        # The host joins repeated header lines with ", ".
        primary, secondary = sign("conn-1"), sign("conn-1", SECONDARY)
        header = f"{primary}, sha256={secondary[7:].upper()}"
        assert post(event_headers(signature=header), connect_body()).status_code == 200

    def test_keyvault_rotation_is_picked_up_on_a_mismatch(self) -> None:
        vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
        adapter = FakeAdapter(vault)
        from azure.keyvault.secrets import SecretClient

        source = KeyVaultTokenSource(
            endpoint="http://localhost:8080",
            vault_uri="https://test.vault.azure.net/",
            secret_name="wps-key",
            refresh_seconds=300,
            credential_provider=FakeCredential,
            secret_client_factory=lambda: SecretClient(
                "https://test.vault.azure.net/", FakeCredential(), transport=transport_for(adapter)
            ),
            forced_refresh_seconds=0,
        )
        use_runtime(Runtime(local_settings(), token_source=source))
        assert post(event_headers(), connect_body()).status_code == 200
        vault.secrets["wps-key"] = SECONDARY  # rotated: the service now signs with the new primary
        new_signature = f"{sign('conn-1', 'regenerated-primary-key-0123456789abcdef')},{sign('conn-1', SECONDARY)}"
        assert post(event_headers(signature=new_signature), connect_body()).status_code == 200
        assert vault.reads == 2

    def test_entra_mode_checks_the_service_bearer_token(self, issuer: Issuer) -> None:
        audience = "api://events"
        validator = BearerValidator(BearerSettings(issuer.issuer, audience), fetch=issuer.fetch)
        use_runtime(Runtime(local_settings(), authenticator=ServiceTokenCheck(validator, WPS_PRINCIPAL)))
        token = issuer.token(audience=audience, oid=WPS_PRINCIPAL)
        good = event_headers(signature=None, Authorization=f"Bearer {token}")
        assert post(good, connect_body()).status_code == 200
        wrong_audience = event_headers(
            signature=None, Authorization=f"Bearer {issuer.token(audience='api://x', oid=WPS_PRINCIPAL)}"
        )
        assert post(wrong_audience, connect_body()).status_code == 401
        assert post(event_headers(), connect_body()).status_code == 401  # a signature is not enough here

    def test_entra_mode_accepts_only_the_service_identity(self, issuer: Issuer) -> None:
        audience = "api://events"
        validator = BearerValidator(BearerSettings(issuer.issuer, audience), fetch=issuer.fetch)
        use_runtime(Runtime(local_settings(), authenticator=ServiceTokenCheck(validator, WPS_PRINCIPAL)))
        service = event_headers(
            signature=None, Authorization=f"Bearer {issuer.token(audience=audience, oid=WPS_PRINCIPAL.upper())}"
        )
        assert post(service, connect_body()).status_code == 200
        another_identity = issuer.token(audience=audience, oid="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
        others = [another_identity, issuer.token(audience=audience)]
        for token in others:
            other = event_headers(signature=None, Authorization=f"Bearer {token}")
            response = post(other, connect_body())
            assert response.status_code == 401
            assert "another identity" in json.loads(response.get_body())["error"]["message"]

    def test_appservice_mode_accepts_only_the_service_identity(self) -> None:
        settings = local_settings(
            EVENTHANDLER_AUTH="appservice",
            WEBSITE_AUTH_ENABLED="true",
            EVENTHANDLER_APPSERVICE_PRINCIPAL_ID=WPS_PRINCIPAL.upper(),
        )
        use_runtime(Runtime(settings))
        assert post(event_headers(signature=None), connect_body()).status_code == 401
        service = event_headers(signature=None, **{"X-MS-CLIENT-PRINCIPAL-ID": WPS_PRINCIPAL})
        assert post(service, connect_body()).status_code == 200
        # Any other user of the app is signed in by the same App Service Authentication.
        user = event_headers(signature=None, **{"X-MS-CLIENT-PRINCIPAL-ID": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"})
        response = post(user, connect_body())
        assert response.status_code == 401
        assert "another principal" in json.loads(response.get_body())["error"]["message"]

    def test_none_mode_accepts_unsigned_events(self) -> None:
        use_runtime(Runtime(local_settings(EVENTHANDLER_AUTH="none")))
        assert post(event_headers(signature=None), connect_body()).status_code == 200


class TestConnectPolicy:
    def test_connection_without_user_is_401(self, registry: EventHandlers) -> None:
        response = post(event_headers(user_id=None), connect_body())
        assert response.status_code == 401
        assert error_code(response) == "no_user"

    def test_token_joining_groups_gets_them_assigned(self, registry: EventHandlers) -> None:
        claims = {"webpubsub.group": ["news"], "role": ["webpubsub.sendToGroup.news"]}
        body = json.loads(post(event_headers(), connect_body(claims=claims)).get_body())
        assert body["groups"] == ["news"]
        assert "subprotocol" not in body

    @pytest.mark.parametrize(
        "claims",
        [
            {"role": ["webpubsub.sendToGroup.admins"]},
            {"role": ["webpubsub.joinLeaveGroup"]},  # every group of the hub
            {"webpubsub.group": ["admins"]},
        ],
    )
    def test_token_beyond_the_policy_is_403(self, registry: EventHandlers, claims: dict[str, list[str]]) -> None:
        response = post(event_headers(), connect_body(claims=claims))
        assert response.status_code == 403

    def test_registered_connect_handler_replaces_the_default(self, registry: EventHandlers) -> None:
        @registry.on_connect
        def vip_only(request: ConnectRequest) -> ConnectResponse:
            if request.query.get("ticket") != ["vip"]:
                raise Forbidden("VIP ticket required")
            return ConnectResponse(user_id=request.context.user_id, groups=["vip"])

        assert post(event_headers(), connect_body()).status_code == 403
        body = json.loads(post(event_headers(), connect_body(query={"ticket": ["vip"]})).get_body())
        assert body == {"userId": "alice", "groups": ["vip"]}

    def test_handler_returning_none_is_204(self, registry: EventHandlers) -> None:
        registry.on_connect(lambda request: None)
        assert post(event_headers(), connect_body()).status_code == 204

    @pytest.mark.parametrize(
        "claims",
        [
            {"role": ["webpubsub.sendToGroup.admins"]},
            {"webpubsub.group": ["admins"]},
            {"roles": ["webpubsub.joinLeaveGroup"]},
            # .NET token handlers map `role` to this claim type; the official emulator builds the connect
            # event's claims from such a ClaimsPrincipal (tools/emulator ConnectEventRequest.cs, validated by
            # JwtSecurityTokenHandler in WebPubSubTokenService.cs), so the service may deliver roles here.
            {"http://schemas.microsoft.com/ws/2008/06/identity/claims/role": ["webpubsub.sendToGroup.admins"]},
        ],
    )
    def test_a_registered_connect_handler_never_skips_the_policy_check(
        self, registry: EventHandlers, claims: dict[str, list[str]]
    ) -> None:
        """Registering a handler replaces the default answer, not the refusal of tokens beyond the policy."""
        called: list[ConnectRequest] = []

        @registry.on_connect
        def accept_everyone(request: ConnectRequest) -> ConnectResponse:
            called.append(request)
            return ConnectResponse(user_id=request.context.user_id)

        assert post(event_headers(), connect_body(claims=claims)).status_code == 403
        assert called == []

    def test_the_policy_check_is_skipped_only_on_explicit_request(self, registry: EventHandlers) -> None:
        @registry.on_connect(check_token_policy=False)
        def trust_tokens(request: ConnectRequest) -> None:
            return None

        claims = {"role": ["webpubsub.sendToGroup.admins"]}
        assert post(event_headers(), connect_body(claims=claims)).status_code == 204

    @pytest.mark.parametrize(
        "claim_type", ["role", "roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"]
    )
    def test_roles_the_policy_grants_pass_under_every_claim_type(
        self, registry: EventHandlers, claim_type: str
    ) -> None:
        claims = {claim_type: ["webpubsub.joinLeaveGroup.news", "webpubsub.sendToGroup.news"]}
        assert post(event_headers(), connect_body(claims=claims)).status_code == 200

    def test_an_async_connect_handler_is_awaited(self, registry: EventHandlers) -> None:
        @registry.on_connect
        async def later(request: ConnectRequest) -> ConnectResponse:
            await asyncio.sleep(0)
            return ConnectResponse(user_id="from-async", groups=["news"])

        response = post(event_headers(), connect_body())
        assert response.status_code == 200
        assert json.loads(response.get_body()) == {"userId": "from-async", "groups": ["news"]}

    def test_an_async_connect_handler_can_refuse(self, registry: EventHandlers) -> None:
        @registry.on_connect
        async def refuse(request: ConnectRequest) -> ConnectResponse:
            raise Forbidden("not today")

        assert post(event_headers(), connect_body()).status_code == 403

    def test_a_second_connect_handler_for_the_same_hub_is_refused(self, registry: EventHandlers) -> None:
        registry.on_connect(lambda request: None)
        with pytest.raises(ValueError, match="already registered for every hub"):
            registry.on_connect(lambda request: None)
        registry.on_connect(hub="other")(lambda request: None)  # another hub has a place of its own


class TestNotifications:
    @pytest.mark.parametrize(
        ("event_type", "body"),
        [
            ("azure.webpubsub.sys.connected", b"{}"),
            ("azure.webpubsub.sys.disconnected", b'{"reason": "bye"}'),
            ("azure.webpubsub.gp.joined", b'{"group": "chat"}'),
            ("azure.webpubsub.gp.left", b'{"group": "chat"}'),
        ],
    )
    def test_notifications_are_204_and_reach_listeners(
        self, registry: EventHandlers, event_type: str, body: bytes
    ) -> None:
        seen: list[object] = []
        for register in (
            registry.on_connected,
            registry.on_disconnected,
            registry.on_group_joined,
            registry.on_group_left,
        ):
            register(seen.append)
        response = post(event_headers(event_type), body)
        assert response.status_code == 204
        assert response.get_body() == b""
        assert len(seen) == 1

    def test_async_listeners_run_to_completion_before_the_answer(self, registry: EventHandlers) -> None:
        seen: list[str] = []

        @registry.on_connected
        async def welcome(event: ConnectedEvent) -> None:
            await asyncio.sleep(0)
            seen.append(event.context.connection_id)

        assert post(event_headers("azure.webpubsub.sys.connected"), b"{}").status_code == 204
        assert seen == ["conn-1"]

    def test_listeners_for_one_hub_hear_only_that_hub(self) -> None:
        registry = EventHandlers()
        use_runtime(Runtime(local_settings(WEBPUBSUB_HUB="lobby"), registry=registry))
        heard: list[str] = []
        registry.on_connected(hub="LOBBY")(lambda event: heard.append("lobby"))
        registry.on_connected(hub="other")(lambda event: heard.append("other"))
        registry.on_connected(lambda event: heard.append("every hub"))
        assert post(event_headers("azure.webpubsub.sys.connected", hub="lobby"), b"{}").status_code == 204
        assert heard == ["lobby", "every hub"]

    def test_unknown_event_type_is_204_with_a_log_line(
        self, registry: EventHandlers, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            response = post(event_headers("azure.webpubsub.sys.somethingnew"), b"")
        assert response.status_code == 204
        assert "unknown event type azure.webpubsub.sys.somethingnew" in caplog.text


class TestUserEvents:
    def test_default_message_handler_accepts_without_reply(self, registry: EventHandlers) -> None:
        headers = event_headers("azure.webpubsub.user.message", content_type="text/plain")
        assert post(headers, b"hello").status_code == 204

    @pytest.mark.parametrize(
        ("content_type", "body", "reply_type"),
        [
            ("text/plain; charset=utf-8", "héllo".encode(), "text/plain; charset=utf-8"),
            ("application/json", b'{"n": 1}', "application/json; charset=utf-8"),
            ("application/octet-stream", b"\x00\x01\xff", "application/octet-stream"),
        ],
    )
    def test_registered_handler_replies_with_the_right_content_type(
        self, registry: EventHandlers, content_type: str, body: bytes, reply_type: str
    ) -> None:
        @registry.on_user_event("echo")
        def echo(event: UserEvent) -> UserEventResponse:
            return UserEventResponse(event.data, event.data_type)

        response = post(event_headers("azure.webpubsub.user.echo", content_type=content_type), body)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == reply_type
        assert response.get_body() == (b'{"n":1}' if "json" in content_type else body)

    def test_an_async_user_event_handler_replies(self, registry: EventHandlers) -> None:
        @registry.on_user_event("echo")
        async def echo(event: UserEvent) -> UserEventResponse:
            await asyncio.sleep(0)
            return UserEventResponse(f"async {event.data}")

        response = post(event_headers("azure.webpubsub.user.echo", content_type="text/plain"), b"hi")
        assert response.status_code == 200
        assert response.get_body() == b"async hi"

    def test_the_most_specific_user_event_handler_wins(self) -> None:
        """This event on this hub, then this event on every hub, then any event on this hub, then on every hub."""
        registry = EventHandlers()
        use_runtime(Runtime(local_settings(WEBPUBSUB_HUB="lobby"), registry=registry))
        registry.on_user_event()(lambda event: UserEventResponse("any event, every hub"))
        registry.on_user_event(hub="lobby")(lambda event: UserEventResponse("any event, lobby"))
        registry.on_user_event("ping")(lambda event: UserEventResponse("ping, every hub"))
        registry.on_user_event("ping", hub="Lobby")(lambda event: UserEventResponse("ping, lobby"))

        def reply(event_name: str) -> bytes:
            headers = event_headers(f"azure.webpubsub.user.{event_name}", hub="lobby", content_type="text/plain")
            return post(headers, b"").get_body()

        assert reply("ping") == b"ping, lobby"
        assert reply("other") == b"any event, lobby"

    def test_a_second_handler_for_the_same_user_event_is_refused(self, registry: EventHandlers) -> None:
        registry.on_user_event("echo")(lambda event: None)
        with pytest.raises(ValueError, match="user event 'echo' is already registered"):
            registry.on_user_event("echo")(lambda event: None)

    def test_state_round_trip(self, registry: EventHandlers) -> None:
        @registry.on_user_event("count")
        def count(event: UserEvent) -> UserEventResponse:
            event.context.state["count"] = event.context.state.get("count", 0) + 1
            return UserEventResponse(str(event.context.state["count"]))

        headers = event_headers("azure.webpubsub.user.count", content_type="text/plain")
        first = post(headers, b"")
        state = first.headers["ce-connectionState"]
        assert json.loads(base64.b64decode(state)) == {"count": 1}
        second = post({**headers, "ce-connectionState": state}, b"")
        assert second.get_body() == b"2"

    def test_unchanged_state_sends_no_header(self, registry: EventHandlers) -> None:
        registry.on_user_event()(lambda event: None)
        state = base64.b64encode(b'{"room": "lobby"}').decode()
        headers = event_headers("azure.webpubsub.user.any", content_type="text/plain", **{"ce-connectionState": state})
        response = post(headers, b"x")
        assert "ce-connectionState" not in response.headers

    def test_handler_bug_is_500_logged_with_event_id(
        self, registry: EventHandlers, caplog: pytest.LogCaptureFixture
    ) -> None:
        @registry.on_user_event("broken")
        def broken(event: UserEvent) -> UserEventResponse:
            raise RuntimeError("bug in app code")

        headers = event_headers("azure.webpubsub.user.broken", content_type="text/plain", **{"ce-id": "42"})
        with caplog.at_level(logging.ERROR):
            response = post(headers, b"x")
        assert response.status_code == 500
        assert b"bug in app code" not in response.get_body()
        assert "ce-id=42 connectionId=conn-1" in caplog.text


def mqtt_refusal(response: func.HttpResponse) -> dict[str, object]:
    """The `mqtt` object of a refused MQTT connect (the CONNACK the service sends)."""
    assert response.mimetype == "application/json"
    document = json.loads(response.get_body())
    assert set(document) == {"mqtt"}
    mqtt: dict[str, object] = document["mqtt"]
    return mqtt


class TestMqttClients:
    """MQTT clients through the whole event handler (reference-mqtt-cloud-events)."""

    def test_the_default_chat_accepts_an_mqtt_client_with_the_policy_roles(self, registry: EventHandlers) -> None:
        response = post(mqtt_event_headers(), mqtt_connect_body(4))
        assert response.status_code == 200
        # No subprotocol: the service's default for MQTT is mqtt.
        assert json.loads(response.get_body()) == {"userId": "alice", "roles": list(roles_for(["chat", "news"]))}

    @pytest.mark.parametrize(("version", "code"), [(4, 5), (5, 135)])
    def test_an_mqtt_client_without_a_user_is_refused_not_authorized(
        self, registry: EventHandlers, version: int, code: int
    ) -> None:
        response = post(mqtt_event_headers(user_id=None), mqtt_connect_body(version))
        assert response.status_code == 401
        assert mqtt_refusal(response)["code"] == code

    @pytest.mark.parametrize(("version", "code"), [(4, 5), (5, 135)])
    def test_a_token_beyond_the_policy_is_refused_not_authorized(
        self, registry: EventHandlers, version: int, code: int
    ) -> None:
        body = connect_body(
            subprotocols=["mqtt"], claims={"role": ["webpubsub.sendToGroup.admins"]}, mqtt={"protocolVersion": version}
        )
        response = post(mqtt_event_headers(), body)
        assert response.status_code == 403
        refusal = mqtt_refusal(response)
        assert refusal["code"] == code
        assert "admins" in str(refusal["reason"])

    @pytest.mark.parametrize(("version", "code", "status"), [(4, 5, 401), (5, 138, 403)])
    def test_a_handler_chooses_the_connack_code(
        self, registry: EventHandlers, version: int, code: int, status: int
    ) -> None:
        @registry.on_connect
        def ban(request: ConnectRequest) -> ConnectResponse:
            assert request.mqtt is not None
            if request.mqtt.username == "mallory":
                raise MqttConnectRefused(
                    MqttV5ConnectReasonCode.BANNED, "banned", user_properties=[MqttUserProperty("until", "never")]
                )
            return ConnectResponse(user_id=request.context.user_id)

        response = post(mqtt_event_headers(), mqtt_connect_body(version, username="mallory"))
        assert response.status_code == status
        refusal = mqtt_refusal(response)
        assert refusal["code"] == code
        assert post(mqtt_event_headers(), mqtt_connect_body(version, username="bob")).status_code == 200

    @pytest.mark.parametrize(("version", "code"), [(4, 4), (5, 134)])
    def test_a_handler_checking_the_password_refuses_bad_credentials(
        self, registry: EventHandlers, version: int, code: int
    ) -> None:
        @registry.on_connect
        def check_password(request: ConnectRequest) -> ConnectResponse:
            assert request.mqtt is not None
            if request.mqtt.password_bytes() != b"s3cret":
                raise BadRequest("wrong user name or password", code="bad_credentials")
            return ConnectResponse(user_id=request.mqtt.username)

        password = base64.b64encode(b"s3cret").decode()
        accepted = post(mqtt_event_headers(), mqtt_connect_body(version, username="bob", password=password))
        assert json.loads(accepted.get_body()) == {"userId": "bob"}
        for wrong in ("d3Jvbmc=", "not base64!"):
            response = post(mqtt_event_headers(), mqtt_connect_body(version, username="bob", password=wrong))
            assert response.status_code == 400
            assert mqtt_refusal(response)["code"] == code

    @pytest.mark.parametrize(("version", "code"), [(4, 3), (5, 128)])
    def test_a_handler_bug_is_a_server_code_without_details(
        self, registry: EventHandlers, version: int, code: int
    ) -> None:
        @registry.on_connect
        def broken(request: ConnectRequest) -> ConnectResponse:
            raise RuntimeError("secret internals")

        response = post(mqtt_event_headers(), mqtt_connect_body(version))
        assert response.status_code == 500
        assert mqtt_refusal(response) == {"code": code, "reason": "The event handler failed."}

    def test_an_unsigned_mqtt_connect_is_refused_before_parsing_with_the_apps_error(
        self, registry: EventHandlers
    ) -> None:
        response = post(mqtt_event_headers(signature=None), mqtt_connect_body())
        assert response.status_code == 401
        assert error_code(response) == "unauthenticated_event"

    def test_an_mqtt_connect_without_its_mqtt_object_is_a_bad_request(self, registry: EventHandlers) -> None:
        response = post(mqtt_event_headers(), connect_body(subprotocols=["mqtt"]))
        assert response.status_code == 400
        assert error_code(response) == "invalid_body"

    def test_listeners_see_the_session_and_the_disconnect_packet(self, registry: EventHandlers) -> None:
        seen: list[object] = []
        registry.on_connected(lambda event: seen.append(event.context.session_id))
        registry.on_disconnected(lambda event: seen.append(event.mqtt))
        assert post(mqtt_event_headers(CONNECTED), b"{}").status_code == 204
        body = {"reason": None, "mqtt": {"initiatedByClient": True, "disconnectPacket": {"code": 0x8E}}}
        assert post(mqtt_event_headers(DISCONNECTED), json.dumps(body).encode()).status_code == 204
        assert seen == [
            "client1-session",
            MqttDisconnectProperties(True, MqttDisconnectPacket(MqttDisconnectReasonCode.SESSION_TAKEN_OVER)),
        ]

    def test_the_log_line_names_the_client_protocol(
        self, registry: EventHandlers, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            post(mqtt_event_headers(), mqtt_connect_body())
            post(event_headers(), connect_body())
        protocols = [
            record.__dict__["webpubsub"]["protocol"] for record in caplog.records if "webpubsub" in record.__dict__
        ]
        assert protocols == ["mqtt", "default"]


class TestSeveralHubs:
    @pytest.fixture
    def hubs(self) -> EventHandlers:
        handlers = EventHandlers()
        settings = local_settings(
            WEBPUBSUB_HUBS="chat notifications", NEGOTIATE_GROUPS="chat", NEGOTIATE_GROUPS_notifications="alerts"
        )
        use_runtime(Runtime(settings, registry=handlers))
        return handlers

    def test_each_hub_gets_its_own_group_policy_at_connect(self, hubs: EventHandlers) -> None:
        chat = json.loads(post(event_headers(hub="chat"), connect_body()).get_body())
        alerts = json.loads(post(event_headers(hub="Notifications"), connect_body()).get_body())
        assert chat["roles"] == ["webpubsub.joinLeaveGroup.chat", "webpubsub.sendToGroup.chat"]
        assert alerts["roles"] == ["webpubsub.joinLeaveGroup.alerts", "webpubsub.sendToGroup.alerts"]

    def test_a_token_for_another_hubs_groups_is_refused(self, hubs: EventHandlers) -> None:
        claims = {"role": ["webpubsub.sendToGroup.chat"]}
        assert post(event_headers(hub="notifications"), connect_body(claims=claims)).status_code == 403
        assert post(event_headers(hub="chat"), connect_body(claims=claims)).status_code == 200

    def test_handlers_registered_for_one_hub_serve_only_it(self, hubs: EventHandlers) -> None:
        @hubs.on_user_event("ping", hub="notifications")
        def pong(event: UserEvent) -> UserEventResponse:
            return UserEventResponse("pong")

        ping = "azure.webpubsub.user.ping"
        assert post(event_headers(ping, hub="notifications", content_type="text/plain"), b"x").get_body() == b"pong"
        assert post(event_headers(ping, hub="chat", content_type="text/plain"), b"x").status_code == 204

    def test_only_the_configured_hubs_are_accepted(self, hubs: EventHandlers) -> None:
        response = post(event_headers(hub="lobby"), connect_body())
        assert response.status_code == 400
        assert error_code(response) == "wrong_hub"
        message = json.loads(response.get_body())["error"]["message"]
        assert "'chat', 'notifications'" in message


class TestBadInput:
    @pytest.mark.parametrize(
        ("headers", "body", "status", "code"),
        [
            (event_headers(**{"ce-hub": "other"}), connect_body(), 400, "wrong_hub"),
            (
                {k: v for k, v in event_headers().items() if k != "ce-connectionId"},
                connect_body(),
                400,
                "missing_header",
            ),
            ({k: v for k, v in event_headers().items() if k != "ce-type"}, connect_body(), 400, "missing_header"),
            (event_headers(), b"{broken", 400, "invalid_json"),
            (event_headers(content_type="text/plain"), connect_body(), 415, "unsupported_media_type"),
            (
                event_headers("azure.webpubsub.user.message", content_type="text/plain"),
                b"\xff\xfe",
                400,
                "invalid_encoding",
            ),
            (
                event_headers("azure.webpubsub.user.message", content_type="image/png"),
                b"x",
                415,
                "unsupported_media_type",
            ),
            (
                event_headers("azure.webpubsub.user.message", content_type="text/plain"),
                b"x" * 1_100_000,
                413,
                "payload_too_large",
            ),
        ],
    )
    def test_bad_input_is_a_4xx_naming_the_problem(
        self, registry: EventHandlers, headers: dict[str, str], body: bytes, status: int, code: str
    ) -> None:
        response = post(headers, body)
        assert response.status_code == status
        assert error_code(response) == code

    def test_body_limit_is_configurable(self) -> None:
        use_runtime(Runtime(local_settings(EVENTHANDLER_MAX_BODY_BYTES="2048")))
        headers = event_headers("azure.webpubsub.user.message", content_type="text/plain")
        assert post(headers, b"x" * 2048).status_code == 204
        assert post(headers, b"x" * 2049).status_code == 413

    def test_hub_comparison_ignores_case(self, registry: EventHandlers) -> None:
        assert post(event_headers(**{"ce-hub": "CHAT"}), connect_body()).status_code == 200


class TestLogging:
    def test_one_structured_line_per_event_without_secrets(
        self, registry: EventHandlers, caplog: pytest.LogCaptureFixture
    ) -> None:
        headers = event_headers(**{"ce-id": "99"})
        with caplog.at_level(logging.DEBUG):
            post(headers, connect_body())
            post(event_headers(signature="sha256=" + "0" * 64), connect_body())
        lines = [record for record in caplog.records if record.getMessage().startswith("event ")]
        assert len(lines) == 2
        first = lines[0].__dict__["webpubsub"]
        assert first["hub"] == "chat"
        assert first["event"] == "connect"
        assert first["connectionId"] == "conn-1"
        assert first["userId"] == "alice"
        assert first["eventId"] == "99"
        assert first["outcome"] == 200
        assert first["durationMs"] >= 0
        assert lines[1].__dict__["webpubsub"]["outcome"] == 401
        assert headers["ce-signature"] not in caplog.text
        assert headers["ce-signature"][7:] not in caplog.text
        assert EMULATOR_KEY not in caplog.text

    def test_control_characters_cannot_forge_log_lines(
        self, registry: EventHandlers, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            post(event_headers(user_id="mallory\nevent hub=chat outcome=200"), connect_body())
        assert all("\n" not in record.getMessage() for record in caplog.records)


header_text = st.text(st.characters(codec="latin-1", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "ce-type",
                "ce-hub",
                "ce-connectionId",
                "ce-userId",
                "ce-signature",
                "ce-awpsversion",
                "ce-specversion",
                "ce-connectionState",
                "Content-Type",
                "ce-id",
                "WebHook-Request-Origin",
                "ce-eventName",
                "Authorization",
            ]
        ),
        header_text,
    ),
    body=st.binary(max_size=256),
    method=st.sampled_from(["POST", "OPTIONS", "GET"]),
)
def test_random_requests_never_produce_a_5xx(
    registry: EventHandlers, headers: dict[str, str], body: bytes, method: str
) -> None:
    response = function_app.eventhandler(http_request(method, "eventhandler", headers=headers, body=body))
    assert response.status_code < 500


event_types = st.sampled_from(
    [
        CONNECT,
        "azure.webpubsub.sys.connected",
        "azure.webpubsub.sys.disconnected",
        "azure.webpubsub.gp.joined",
        "azure.webpubsub.gp.left",
        "azure.webpubsub.user.message",
        "azure.webpubsub.user.x",
        "azure.webpubsub.other",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    event_type=event_types,
    connection_id=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s and s.isprintable()),
    content_type=st.sampled_from(["application/json", "text/plain", "application/octet-stream", "", "x/y"]),
    body=st.one_of(st.binary(max_size=128), json_values.map(lambda value: json.dumps(value).encode())),
    state=st.one_of(
        st.none(), st.text(max_size=20), json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode())
    ),
)
def test_random_signed_events_never_produce_a_5xx(
    registry: EventHandlers, event_type: str, connection_id: str, content_type: str, body: bytes, state: str | None
) -> None:
    """Past authentication, every parser and the default handlers still answer only 2xx or 4xx."""
    headers = event_headers(event_type, connection_id=connection_id, content_type=content_type)
    if state is not None:
        headers["ce-connectionState"] = state
    assert post(headers, body).status_code < 500
