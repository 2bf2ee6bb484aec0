"""Presence: who may ask, paging over users, and the short cache that absorbs refresh storms."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared.adapter import handle
from shared.identity import AnonymousCaller
from shared.policy import GroupPolicy
from shared.presence import Presence
from shared.service_client import ServiceClient
from shared.tokens import KeyTokenSource
from shared.web import Request, Response
from tests.support.clock import Clock
from tests.support.fakes import EMULATOR_KEY, FakeAdapter, Reply, Seen, json_reply, transport_for
from tests.support.threads import run_concurrently

ENDPOINT = "https://contoso.webpubsub.azure.com"
MEMBERS = [
    {"connectionId": "c1", "userId": "zoe"},
    {"connectionId": "c2", "userId": "adam"},
    {"connectionId": "c3", "userId": "zoe"},
    {"connectionId": "c4", "userId": None},
]


def presence(*, delay: float = 0.0, clock: Clock | None = None) -> tuple[Presence, FakeAdapter]:
    def listing(_: Seen) -> Reply:
        time.sleep(delay)
        return json_reply(200, {"value": MEMBERS})

    adapter = FakeAdapter(listing)
    tokens = KeyTokenSource(ENDPOINT, EMULATOR_KEY, sdk_options={"transport": transport_for(adapter)})
    client = ServiceClient(tokens, "chat")
    options: dict[str, Any] = {"clock": clock} if clock else {}
    return (
        Presence(
            identifier=AnonymousCaller(), policy=lambda _: GroupPolicy(["chat"]), clients=lambda _: client, **options
        ),
        adapter,
    )


def ask(api: Presence, group: str = "chat", **query: str) -> Response:
    request = Request(
        "GET",
        f"http://localhost/api/groups/{group}/users",
        query=list({"userId": "adam", **query}.items()),
        route={"group": group},
    )
    return handle(request, api.users)


def test_users_are_counted_sorted_and_paged() -> None:
    api, _ = presence()
    body = json.loads(ask(api).body)
    assert body["users"] == [{"userId": "adam", "connections": 1}, {"userId": "zoe", "connections": 2}]
    assert (body["connections"], body["next"], body["truncated"]) == (4, None, False)
    first = json.loads(ask(api, top="1").body)
    assert (first["users"], first["next"]) == ([{"userId": "adam", "connections": 1}], "adam")
    second = json.loads(ask(api, top="1", after="adam").body)
    assert (second["users"], second["next"]) == ([{"userId": "zoe", "connections": 2}], None)


def test_a_group_the_caller_may_not_use_is_403_without_a_service_call() -> None:
    api, adapter = presence()
    response = ask(api, group="admins")
    assert response.status == 403
    assert adapter.seen == []


@pytest.mark.parametrize("top", ["0", "1001", "ten"])
def test_a_bad_page_size_is_400(top: str) -> None:
    api, _ = presence()
    assert ask(api, top=top).status == 400


def test_a_caller_without_identity_is_refused() -> None:
    api, adapter = presence()
    request = Request("GET", "http://localhost/api/groups/chat/users", route={"group": "chat"})
    assert handle(request, api.users).status == 400  # anonymous mode: ?userId= is required
    assert adapter.seen == []


def test_the_cache_serves_a_storm_with_one_service_call_and_expires() -> None:
    clock = Clock()
    api, adapter = presence(delay=0.2, clock=clock)
    statuses: list[int] = []
    run_concurrently(lambda: statuses.append(ask(api).status), callers=20)
    assert statuses == [200] * 20
    assert len(adapter.seen) == 1
    clock.advance(5)
    ask(api)
    assert len(adapter.seen) == 2
