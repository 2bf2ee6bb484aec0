"""The server-side client against the real SDK, with a fake service at its transport: the requests it
makes, and how every kind of failure maps to the app's errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shared.errors import BadRequest, DependencyUnavailable, NotFound, PayloadTooLarge
from shared.service_client import (
    MAX_MESSAGE_BYTES,
    AsyncServiceClient,
    DataType,
    Permission,
    ServiceClient,
    message,
)
from shared.tokens import EntraTokenSource, KeyTokenSource
from tests.support.fakes import (
    EMULATOR_KEY,
    FakeAdapter,
    FakeCredential,
    Reply,
    Seen,
    down,
    json_reply,
    transport_for,
    webpubsub_success,
)

ENDPOINT = "https://contoso.webpubsub.azure.com"


def accepted(_: Seen) -> Reply:
    return 202, {}, b""


def client_for(handler: Any, *, entra: bool = False) -> tuple[ServiceClient, FakeAdapter]:
    adapter = FakeAdapter(handler)
    options = {"transport": transport_for(adapter), "retry_total": 0}
    if entra:
        tokens: Any = EntraTokenSource(endpoint=ENDPOINT, credential_provider=FakeCredential, sdk_options=options)
    else:
        tokens = KeyTokenSource(ENDPOINT, EMULATOR_KEY, sdk_options=options)
    return ServiceClient(tokens, "chat", endpoint=ENDPOINT), adapter


def test_send_to_group_posts_the_text_with_excluded_and_filter() -> None:
    client, adapter = client_for(accepted)
    sent = client.send_to_group("chat", "hello", excluded=["c1", "c2"], odata_filter="userId ne 'bob'")
    (seen,) = adapter.seen
    assert (seen.method, seen.path) == ("POST", "/api/hubs/chat/groups/chat/:send")
    assert seen.query["excluded"] == ["c1", "c2"]
    assert seen.query["filter"] == ["userId ne 'bob'"]
    assert seen.headers["Content-Type"].startswith("text/plain")
    assert seen.body == b"hello"
    assert (sent.data_type, sent.size) == (DataType.TEXT, 5)


@pytest.mark.parametrize(
    ("data", "content_type"), [({"n": 1}, "application/json"), (b"\x00\xff", "application/octet-stream")]
)
def test_the_data_type_follows_the_data(data: Any, content_type: str) -> None:
    client, adapter = client_for(accepted)
    client.send_to_user("alice", data)
    (seen,) = adapter.seen
    assert seen.path == "/api/hubs/chat/users/alice/:send"
    assert seen.headers["Content-Type"].startswith(content_type)
    assert (json.loads(seen.body) if content_type == "application/json" else seen.body) == data


def test_every_operation_reaches_its_rest_path() -> None:
    client, adapter = client_for(webpubsub_success)
    client.send_to_all("x")
    client.send_to_connection("c1", "x")
    client.add_user_to_group("mods", "alice")
    client.remove_user_from_group("mods", "alice")
    client.remove_user_from_all_groups("alice")
    client.add_connection_to_group("mods", "c1")
    client.remove_connection_from_group("mods", "c1")
    client.remove_connection_from_all_groups("c1")
    client.close_connection("c1", reason="bye")
    client.close_user_connections("alice", reason="bye")
    client.close_group_connections("mods")
    client.close_all_connections(excluded=["c9"])
    client.grant_permission(Permission.SEND_TO_GROUP, "c1", "mods")
    client.revoke_permission("joinLeaveGroup", "c1", "mods")
    paths = [(seen.method, seen.path) for seen in adapter.seen]
    assert paths == [
        ("POST", "/api/hubs/chat/:send"),
        ("POST", "/api/hubs/chat/connections/c1/:send"),
        ("PUT", "/api/hubs/chat/users/alice/groups/mods"),
        ("DELETE", "/api/hubs/chat/users/alice/groups/mods"),
        ("DELETE", "/api/hubs/chat/users/alice/groups"),
        ("PUT", "/api/hubs/chat/groups/mods/connections/c1"),
        ("DELETE", "/api/hubs/chat/groups/mods/connections/c1"),
        ("DELETE", "/api/hubs/chat/connections/c1/groups"),
        ("DELETE", "/api/hubs/chat/connections/c1"),
        ("POST", "/api/hubs/chat/users/alice/:closeConnections"),
        ("POST", "/api/hubs/chat/groups/mods/:closeConnections"),
        ("POST", "/api/hubs/chat/:closeConnections"),
        ("PUT", "/api/hubs/chat/permissions/sendToGroup/connections/c1"),
        ("DELETE", "/api/hubs/chat/permissions/joinLeaveGroup/connections/c1"),
    ]
    assert adapter.seen[-2].query["targetName"] == ["mods"]
    assert adapter.seen[8].query["reason"] == ["bye"]


def test_existence_is_a_boolean_and_a_404_means_no() -> None:
    def answer(seen: Seen) -> Reply:
        if "alice" in seen.path:
            return 200, {}, b""
        return json_reply(404, {"code": "Warning.User.NotExisted"}, {"x-ms-error-code": "Warning.User.NotExisted"})

    client, _ = client_for(answer)
    assert client.user_exists("alice") is True
    assert client.user_exists("bob") is False
    assert client.has_permission(Permission.SEND_TO_GROUP, "bob-connection", "chat") is False


def test_list_connections_follows_pages_and_stops_at_the_limit() -> None:
    def page(seen: Seen) -> Reply:
        start = int(seen.query.get("continuationToken", ["0"])[0])
        members = [{"connectionId": f"c{n}", "userId": f"u{n % 2}"} for n in range(start, min(start + 2, 5))]
        body: dict[str, Any] = {"value": members}
        if start + 2 < 5:
            body["nextLink"] = f"{ENDPOINT}/api/hubs/chat/groups/chat/connections?continuationToken={start + 2}"
        return json_reply(200, body)

    client, adapter = client_for(page)
    members, more = client.list_connections("chat")
    assert ([m.connection_id for m in members], more) == (["c0", "c1", "c2", "c3", "c4"], False)
    assert members[1].user_id == "u1"
    assert adapter.seen[0].query["maxpagesize"] == ["200"]  # the service's largest page
    adapter.seen.clear()
    limited, more = client.list_connections("chat", limit=3)
    assert (len(limited), more) == (3, True)
    assert len(adapter.seen) == 2  # no page beyond the one that showed there are more


def test_a_missing_target_is_not_found() -> None:
    client, _ = client_for(lambda _: json_reply(404, {"code": "Warning.User.NotExisted"}))
    with pytest.raises(NotFound) as missing:
        client.add_user_to_group("chat", "nobody")
    assert missing.value.status == 404


def test_a_refused_request_is_a_bad_request_naming_the_services_code() -> None:
    client, _ = client_for(lambda _: json_reply(400, {"code": "InvalidFilter"}, {"x-ms-error-code": "InvalidFilter"}))
    with pytest.raises(BadRequest) as refused:
        client.send_to_all("x", odata_filter="nonsense ((")
    assert "InvalidFilter" in refused.value.message


def test_a_refused_key_is_a_503_saying_the_keys_do_not_match() -> None:
    client, _ = client_for(lambda _: json_reply(401, {"code": "Unauthorized"}))
    with pytest.raises(DependencyUnavailable) as refused:
        client.send_to_all("x")
    assert "does not match" in refused.value.detail
    assert EMULATOR_KEY not in refused.value.detail
    assert refused.value.headers["Retry-After"].isdigit()


def test_an_identity_without_the_role_is_a_503_naming_the_role() -> None:
    client, _ = client_for(lambda _: json_reply(403, {"code": "Error.Forbidden"}), entra=True)
    with pytest.raises(DependencyUnavailable) as refused:
        client.close_all_connections()
    assert "Web PubSub Service Owner" in refused.value.detail


def test_an_identity_that_gets_no_token_is_entra_being_unavailable() -> None:
    adapter = FakeAdapter(accepted)
    tokens = EntraTokenSource(
        endpoint=ENDPOINT,
        credential_provider=lambda: FakeCredential(available=False),
        sdk_options={"transport": transport_for(adapter), "retry_total": 0},
    )
    with pytest.raises(DependencyUnavailable) as refused:
        ServiceClient(tokens, "chat", endpoint=ENDPOINT).send_to_all("x")
    assert refused.value.dependency == "Entra ID"
    assert adapter.seen == []


@pytest.mark.parametrize("handler", [down, lambda _: json_reply(500, {}), lambda _: json_reply(429, {})])
def test_an_unreachable_or_failing_service_is_a_503(handler: Any) -> None:
    client, _ = client_for(handler)
    with pytest.raises(DependencyUnavailable) as failed:
        client.send_to_group("chat", "x")
    assert failed.value.dependency == "Web PubSub"


def test_bad_input_is_refused_before_the_service_is_called() -> None:
    client, adapter = client_for(accepted)
    with pytest.raises(PayloadTooLarge):
        client.send_to_all("x" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(BadRequest):
        client.send_to_group("", "x")
    with pytest.raises(BadRequest):
        client.send_to_user("alice", "x", data_type="xml")
    with pytest.raises(BadRequest):
        client.send_to_connection("c1", {"n": float("nan")})
    with pytest.raises(BadRequest):
        client.grant_permission("admin", "c1", "chat")
    with pytest.raises(BadRequest):
        client.close_connection("c1", reason="r" * 600)
    assert adapter.seen == []


def test_message_sizes_count_utf8_bytes() -> None:
    assert message("é").size == 2
    assert message({"a": "é"}).size == len(b'{"a":"\\u00e9"}')  # compact JSON, as ASCII
    assert message(b"\x00" * 3, "binary").size == 3
    with pytest.raises(BadRequest):
        message("text", "binary")


def test_the_async_client_runs_the_same_operations() -> None:
    client, adapter = client_for(accepted)
    asynchronous = AsyncServiceClient(client)

    async def run() -> None:
        await asyncio.gather(*(asynchronous.send_to_user(f"user{n}", "hi") for n in range(5)))

    asyncio.run(run())
    assert sorted(seen.path for seen in adapter.seen) == [f"/api/hubs/chat/users/user{n}/:send" for n in range(5)]
    with pytest.raises(BadRequest):
        asyncio.run(asynchronous.send_to_group("", "x"))
