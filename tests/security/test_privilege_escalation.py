"""No request gets more groups or roles than the group policy (NEGOTIATE_GROUPS=chat,news) grants.

Negotiate may only narrow the policy; the connect event refuses any token that holds more than
negotiate would issue today; and the service enforces exactly the roles the app granted.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from devstack.webpubsub import RunningWebPubSub
from shared.policy import roles_for
from tests.support.apphost import ServedApp
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
