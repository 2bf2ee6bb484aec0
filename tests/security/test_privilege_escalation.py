"""No request gets more groups or roles than the group policy (NEGOTIATE_GROUPS=chat,news) grants.

Negotiate may only narrow the policy; the connect event refuses any token that holds more than
negotiate would issue today; and the service enforces exactly the roles the app granted.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jwt
import pytest

from devstack.webpubsub import RunningWebPubSub
from shared.config import load_settings
from shared.errors import Forbidden
from shared.events import EventHandlers
from shared.policy import roles_for
from shared.protocol import ConnectRequest, ConnectResponse
from shared.runtime import Runtime, use_runtime
from tests.support.apphost import ServedApp
from tests.support.events import CONNECT, connect_body, event_headers
from tests.support.functions import error_code
from tests.support.security import (
    POLICY_GROUPS,
    SERVICE_KEY,
    client_token,
    client_url,
    negotiated,
    open_client,
    refused_status,
)

POLICY_ROLES = set(roles_for(POLICY_GROUPS))

ESCALATIONS = {
    "outside-policy": ["admins"],
    "policy-plus-one": ["chat", "admins"],
    "wildcard": ["*"],
    "glob": ["chat*"],
    "regex": [".*"],
    "percent": ["%"],
    "comma-list": ["chat,admins"],
    "role-name": ["webpubsub.sendToGroup.admins"],
    "hub-wide-role": ["webpubsub.joinLeaveGroup"],
    "upper-case": ["CHAT"],
    "padded": [" chat"],
    "trailing-space": ["chat "],
    "cyrillic-lookalike": ["\u0441hat"],
    "zero-width": ["chat\u200b"],
    "control-character": ["chat\n"],
    "empty": [""],
    "too-many": ["chat"] * 101,
}


def token_claims(service: RunningWebPubSub, document: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        document["token"], SERVICE_KEY, algorithms=["HS256"], audience=f"{service.endpoint}/client/hubs/chat"
    )
    return claims


@pytest.mark.parametrize("name", sorted(ESCALATIONS))
@pytest.mark.parametrize("via", ["query", "body"])
def test_negotiate_never_grants_beyond_the_policy(
    app: ServedApp, service: RunningWebPubSub, name: str, via: str
) -> None:
    groups = ESCALATIONS[name]
    if via == "query":
        response = app.client.get("negotiate", params=[("userId", "mallory"), *(("group", g) for g in groups)])
    else:
        response = app.client.post(
            "negotiate",
            params={"userId": "mallory"},
            headers={"Content-Type": "application/json"},
            content=json.dumps({"groups": groups}).encode(),
        )
    assert response.status_code in {400, 403}, response.text
    assert "token" not in response.json()


@pytest.mark.parametrize(
    ("count", "status", "code"),
    [(20_000, 413, "payload_too_large"), (101, 400, "too_many_groups")],  # over 16 KB; under it, over 100 groups
)
def test_a_huge_group_list_is_refused(
    app: ServedApp, service: RunningWebPubSub, count: int, status: int, code: str
) -> None:
    body = json.dumps({"groups": [f"g{n}" for n in range(count)]}).encode()
    response = app.client.post("negotiate", params={"userId": "mallory"}, content=body)
    assert response.status_code == status
    assert error_code(response) == code
    assert "token" not in response.json()


@pytest.mark.parametrize("groups", [[], ["chat"], ["news", "chat", "news"]])
def test_granted_roles_stay_within_the_policy(app: ServedApp, service: RunningWebPubSub, groups: list[str]) -> None:
    """The controls: permitted requests succeed, and the token holds only policy roles and groups."""
    claims = token_claims(service, negotiated(app, "bob", group=groups))
    assert set(claims.get("role", [])) <= POLICY_ROLES
    assert set(claims.get("webpubsub.group", [])) <= set(POLICY_GROUPS)
    if groups:
        assert set(claims["role"]) == set(roles_for(groups))


@pytest.mark.parametrize(
    "claims",
    [
        {"role": ["webpubsub.joinLeaveGroup"]},
        {"role": ["webpubsub.sendToGroup"]},
        {"role": ["webpubsub.sendToGroup.admins"]},
        {"role": ["webpubsub.joinLeaveGroup.chat", "webpubsub.joinLeaveGroup.admins"]},
        {"role": ["admin"]},
        {"webpubsub.group": ["admins"]},
        {"webpubsub.group": ["chat", "admins"]},
    ],
    ids=["join-any", "send-any", "send-admins", "policy-plus-one", "arbitrary-role", "join-admins", "joins-plus-one"],
)
def test_connect_refuses_tokens_beyond_the_policy(
    app: ServedApp, service: RunningWebPubSub, claims: dict[str, list[str]]
) -> None:
    """Tokens signed with the real key (say, issued before NEGOTIATE_GROUPS shrank) still cannot connect."""
    token = client_token(service, SERVICE_KEY, sub="mallory", **claims)
    assert refused_status(client_url(service, token)) == 403
    record = service.upstream_log.wait_for(lambda r: r.event_name == "connect" and r.status is not None)
    assert record.status == 403


def test_a_connection_cannot_use_groups_outside_the_policy(app: ServedApp, service: RunningWebPubSub) -> None:
    """The roles the app granted are what the service enforces: no group beyond the policy."""
    with open_client(negotiated(app, "carol", group="chat")["url"]) as client:
        for ack_id, frame in enumerate(
            [
                {"type": "joinGroup", "group": "admins"},
                {"type": "joinGroup", "group": "*"},
                {"type": "sendToGroup", "group": "admins", "dataType": "text", "data": "hi"},
            ],
            start=1,
        ):
            client.send(json.dumps({**frame, "ackId": ack_id}))
            ack = json.loads(client.recv(timeout=10))
            assert ack["type"] == "ack"
            assert ack["ackId"] == ack_id
            assert ack["success"] is False
            assert ack["error"]["name"] == "Forbidden"
        client.send(json.dumps({"type": "joinGroup", "group": "chat", "ackId": 9}))
        assert json.loads(client.recv(timeout=10))["success"] is True


def test_a_registered_connect_handler_never_lets_a_token_beyond_the_policy_in(
    app: ServedApp, service: RunningWebPubSub
) -> None:
    """The README's own connect handler: registering it replaces the default answer, not the policy check."""
    calls: list[str] = []
    registry = EventHandlers()

    @registry.on_connect
    def connect(request: ConnectRequest) -> ConnectResponse:
        calls.append(request.context.user_id or "")
        if request.query.get("room") != ["lobby"]:
            raise Forbidden("Only the lobby is open")
        return ConnectResponse(user_id=request.context.user_id, groups=["lobby"])

    use_runtime(Runtime(load_settings(os.environ), registry=registry))
    beyond = client_token(service, SERVICE_KEY, sub="mallory", role=["webpubsub.sendToGroup.admins"])
    assert refused_status(client_url(service, beyond) + "&room=lobby") == 403
    assert calls == []
    within = client_token(service, SERVICE_KEY, sub="carol", role=["webpubsub.sendToGroup.chat"])
    with open_client(client_url(service, within) + "&room=lobby"):
        pass
    assert calls == ["carol"]


# Services and emulators deliver a token's roles under more than one claim type: the JWT claim `role`,
# Entra ID's `roles`, and the .NET role claim type URI, which the official emulator's connect claims
# carry (it validates client tokens with .NET's JwtSecurityTokenHandler, which maps `role` to that URI).
ROLE_CLAIM_TYPES = ["role", "roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"]


@pytest.mark.parametrize("claim_type", ROLE_CLAIM_TYPES)
@pytest.mark.parametrize("registered", [False, True], ids=["default-handler", "registered-handler"])
def test_roles_beyond_the_policy_are_refused_under_every_claim_type(
    app: ServedApp, service: RunningWebPubSub, claim_type: str, registered: bool
) -> None:
    registry = EventHandlers()
    if registered:
        registry.on_connect(lambda request: ConnectResponse(user_id=request.context.user_id))
    use_runtime(Runtime(load_settings(os.environ), registry=registry))
    headers = event_headers(CONNECT, user_id="mallory", key=SERVICE_KEY)
    beyond = {claim_type: ["webpubsub.sendToGroup.admins"]}
    response = app.client.post("eventhandler", headers=headers, content=connect_body(claims=beyond))
    assert response.status_code == 403
    assert error_code(response) == "forbidden"
    within = {claim_type: ["webpubsub.sendToGroup.chat"]}
    assert app.client.post("eventhandler", headers=headers, content=connect_body(claims=within)).status_code == 200
