"""The REST API, driven by the official service SDK; and entra mode through the local identity endpoint."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator

import httpx
import jwt
import pytest
from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest, HttpResponse
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub, ServiceSettings
from devstack.webpubsub.settings import SERVICE_OWNER, SERVICE_READER
from tests.support.local_service import (
    ACCESS_KEY,
    JSON_PROTOCOL,
    RELIABLE_PROTOCOL,
    client_token,
    client_url,
    close_code,
    json_client,
    open_socket,
    refused_handshake,
)

API_VERSION = "2024-12-01"


@pytest.fixture
def rest(service: RunningWebPubSub, hub: str) -> Iterator[WebPubSubServiceClient]:
    with WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub) as client:
        yield client


def rest_token(url: str, key: str = ACCESS_KEY) -> str:
    """What the SDK's JwtCredentialPolicy sends: HS256 with the access key, aud = the request URL."""
    return jwt.encode({"aud": url, "exp": int(time.time()) + 60}, key.encode(), algorithm="HS256")


def test_health_needs_no_credentials(service: RunningWebPubSub) -> None:
    assert httpx.head(f"{service.endpoint}/api/health?api-version={API_VERSION}").status_code == 200


def test_send_to_all_in_each_content_type_reaches_json_and_plain_clients(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with (
        json_client(service, hub) as json_listener,
        open_socket(client_url(service, hub, client_token(service.endpoint, hub))) as plain_listener,
    ):
        rest.send_to_all("hello", content_type="text/plain")
        rest.send_to_all({"n": 1})
        rest.send_to_all(b"\x00\xff", content_type="application/octet-stream")  # type: ignore[call-overload]
        assert [json_listener.receive() for _ in range(3)] == [
            {"type": "message", "from": "server", "dataType": "text", "data": "hello"},
            {"type": "message", "from": "server", "dataType": "json", "data": {"n": 1}},
            {"type": "message", "from": "server", "dataType": "binary", "data": "AP8="},
        ]
        assert [plain_listener.recv(timeout=5) for _ in range(3)] == ["hello", '{"n": 1}', b"\x00\xff"]


def test_send_to_all_skips_excluded_connections(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with json_client(service, hub) as excluded, json_client(service, hub) as included:
        rest.send_to_all("x", content_type="text/plain", excluded=[excluded.connection_id])
        assert included.receive()["data"] == "x"
        assert excluded.request({"type": "ping"}) == {"type": "pong"}


def test_send_to_user_connection_and_group(service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient) -> None:
    with (
        json_client(service, hub, user_id="ann") as ann_phone,
        json_client(service, hub, user_id="ann") as ann_laptop,
        json_client(service, hub, user_id="ben", groups=["team"]) as ben,
    ):
        rest.send_to_user("ann", "for ann", content_type="text/plain")
        assert ann_phone.receive()["data"] == ann_laptop.receive()["data"] == "for ann"
        rest.send_to_connection(ann_laptop.connection_id, "for the laptop", content_type="text/plain")
        assert ann_laptop.receive()["data"] == "for the laptop"
        rest.send_to_group("team", "for the team", content_type="text/plain")
        assert ben.receive() == {"type": "message", "from": "server", "dataType": "text", "data": "for the team"}
        assert ann_phone.request({"type": "ping"}) == {"type": "pong"}


def test_connection_group_membership_and_existence(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with json_client(service, hub, user_id="cat") as client:
        assert rest.connection_exists(client.connection_id)
        assert rest.user_exists("cat")
        assert not rest.user_exists("nobody")
        assert not rest.group_exists("g")
        rest.add_connection_to_group("g", client.connection_id)
        assert rest.group_exists("g")
        assert [(m.connection_id, m.user_id) for m in rest.list_connections(group="g")] == [
            (client.connection_id, "cat")
        ]
        rest.send_to_group("g", "in", content_type="text/plain")
        assert client.receive()["data"] == "in"
        rest.remove_connection_from_group("g", client.connection_id)
        assert not rest.group_exists("g")
    assert not rest.connection_exists("0" * 32)
    with pytest.raises(ResourceNotFoundError):
        rest.add_connection_to_group("g", "0" * 32)


def test_adding_a_user_to_a_group_joins_only_the_users_current_connections(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    # Azure/azure-webpubsub#325 (service team): AddUserToGroup adds the user's *current*
    # connections; a connection the user opens afterwards is not joined automatically.
    with json_client(service, hub, user_id="dee") as first:
        rest.add_user_to_group("vip", "dee")
        with json_client(service, hub, user_id="dee") as later:
            rest.send_to_group("vip", "welcome", content_type="text/plain")
            assert first.receive()["data"] == "welcome"
            assert later.request({"type": "ping"}) == {"type": "pong"}  # nothing arrived before the pong
            rest.remove_user_from_group("vip", "dee")
            assert not rest.group_exists("vip")


def test_adding_a_user_without_connections_is_404_user_not_existed(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    # Recorded against the real service (azure-sdk-assets, python webpubsubservice
    # test_generated_api_coverage test_add_user_to_group_not_found, api-version 2024-12-01).
    with pytest.raises(ResourceNotFoundError) as missing:
        rest.add_user_to_group("vip", "nobody")
    response = missing.value.response
    assert isinstance(response, HttpResponse)
    assert response.headers["x-ms-error-code"] == "Warning.User.NotExisted"
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {
        "code": "Warning.User.NotExisted",
        "message": "User `nobody` is not found.",
        "target": "User",
        "details": None,
        "inner": None,
    }


#: Each case as the real service answered it in the SDK's 2024-12-01 recordings (azure-sdk-assets,
#: python webpubsubservice test_generated_api_coverage / test_live_api_coverage): an operation on a
#: connection, user or group that does not exist.
MISSING_RESOURCE_ANSWERS = [
    ("PUT", "groups/g/connections/fake-connection-id", "", 404, "Error.Connection.NotExisted"),
    (
        "PUT",
        "permissions/sendToGroup/connections/fake-connection-id",
        "targetName=g",
        404,
        "Info.Connection.NotExisted",
    ),
    (
        "HEAD",
        "permissions/sendToGroup/connections/fake-connection-id",
        "targetName=g",
        404,
        "Info.Connection.NotExisted",
    ),
    ("HEAD", "connections/fake-connection-id", "", 404, "Warning.Connection.NotExisted"),
    ("HEAD", "users/fake-user", "", 404, "Warning.User.NotExisted"),
    ("HEAD", "groups/fake-group", "", 404, "Warning.Group.NotExisted"),
    ("DELETE", "permissions/sendToGroup/connections/fake-connection-id", "targetName=g", 204, None),
    ("POST", "connections/fake-connection-id/:send", "", 202, None),
    ("DELETE", "connections/fake-connection-id", "reason=test", 204, None),
    ("DELETE", "users/fake-user/groups/g", "", 204, None),
    ("DELETE", "connections/fake-connection-id/groups", "", 204, None),
    ("POST", "groups/g/:closeConnections", "excluded=fake-conn-1&excluded=fake-conn-2&reason=test", 204, None),
]


@pytest.mark.parametrize(("method", "path", "query", "status", "error_code"), MISSING_RESOURCE_ANSWERS)
def test_operations_on_missing_resources_answer_as_the_service_does(
    service: RunningWebPubSub, hub: str, method: str, path: str, query: str, status: int, error_code: str | None
) -> None:
    url = f"{service.endpoint}/api/hubs/{hub}/{path}?api-version={API_VERSION}" + (f"&{query}" if query else "")
    headers = {"Authorization": "Bearer " + rest_token(url), "Content-Type": "application/json"}
    response = httpx.request(method, url, headers=headers, content=b'{"hello":"world"}' if method == "POST" else None)
    assert response.status_code == status
    assert response.headers["api-supported-versions"] == "2021-10-01, 2022-11-01, 2023-07-01, 2024-01-01, 2024-12-01"
    assert response.headers.get("x-ms-error-code") == error_code
    if error_code is not None:
        assert response.headers["content-type"] == "application/json; charset=utf-8"
    if error_code is not None and method != "HEAD":
        assert response.json()["code"] == error_code


def test_odata_filter_selects_the_connections_a_send_reaches(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    # Filters on send to all / group / user: 202 in the real service's recordings (2022-11-01
    # test_send_with_filter, 2024-12-01 live coverage); the language: reference-odata-filter
    # (identifiers userId, connectionId, groups; eq ne, in, and or not, functions).
    with (
        json_client(service, hub, user_id="ann", groups=["vip"]) as ann,
        json_client(service, hub, user_id="ben", groups=["vip"]) as ben,
        json_client(service, hub, user_id="cy") as cy,
    ):
        rest.send_to_all("to ann", content_type="text/plain", filter="userId eq 'ann'")
        rest.send_to_all(
            "vip but not ben", content_type="text/plain", filter="'vip' in groups and not(userId eq 'ben')"
        )
        rest.send_to_group(
            "vip", "ben by length", content_type="text/plain", filter="length(userId) eq 3 and startswith(userId, 'b')"
        )
        rest.send_to_all("cy by connection", content_type="text/plain", filter=f"connectionId eq '{cy.connection_id}'")
        rest.send_to_user("ann", "not ann", content_type="text/plain", filter="userId ne 'ann'")
        rest.send_to_all("listed", content_type="text/plain", filter="userId in ('cy', 'nobody')")
        assert [ann.receive()["data"] for _ in range(2)] == ["to ann", "vip but not ben"]
        assert ben.receive()["data"] == "ben by length"
        assert [cy.receive()["data"] for _ in range(2)] == ["cy by connection", "listed"]
        for client in (ann, ben, cy):
            assert client.request({"type": "ping"}) == {"type": "pong"}


@pytest.mark.parametrize("bad_filter", ["userId eq", "userId eq 'a' or", "color eq 'red'", "length(userId, 1) eq 2"])
def test_an_invalid_odata_filter_is_400_invalid_filter(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient, bad_filter: str
) -> None:
    with pytest.raises(HttpResponseError) as refused:
        rest.send_to_all("x", content_type="text/plain", filter=bad_filter)
    assert refused.value.status_code == 400
    assert isinstance(refused.value.response, HttpResponse)
    assert refused.value.response.headers["x-ms-error-code"] == "InvalidFilter"


def test_add_to_groups_and_remove_from_groups_apply_to_the_filtered_connections(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    # POST :addToGroups / :removeFromGroups with {"groups", "filter"}: 200, and the connection is
    # then listed in the group (2024-12-01 live coverage recording). The SDK 1.3 has no method for
    # them, so they go through send_request like the recording's test.
    with json_client(service, hub, user_id="eve") as eve, json_client(service, hub, user_id="fay") as fay:
        add = HttpRequest(
            "POST",
            f"/api/hubs/{hub}/:addToGroups",
            params={"api-version": API_VERSION},
            json={"groups": ["g1", "g2"], "filter": "userId eq 'eve'"},
        )
        assert rest.send_request(add).status_code == 200
        assert [m.connection_id for m in rest.list_connections(group="g2")] == [eve.connection_id]
        remove = HttpRequest(
            "POST", f"/api/hubs/{hub}/:removeFromGroups", params={"api-version": API_VERSION}, json={"groups": ["g1"]}
        )
        assert rest.send_request(remove).status_code == 200
        assert not rest.group_exists("g1")
        assert rest.group_exists("g2")
        assert fay.request({"type": "ping"}) == {"type": "pong"}
        missing_filter = HttpRequest(
            "POST", f"/api/hubs/{hub}/:addToGroups", params={"api-version": API_VERSION}, json={"groups": ["g3"]}
        )
        assert rest.send_request(missing_filter).status_code == 400


def test_list_connections_honours_top_and_pages_with_next_link(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with contextlib.ExitStack() as stack:
        members = [stack.enter_context(json_client(service, hub, user_id=f"u{n}", groups=["g"])) for n in range(5)]
        every = sorted(member.connection_id for member in members)
        # `top` limits the whole listing: 3 of 6 in the real service's recording (test_list_connections).
        assert len(list(rest.list_connections(group="g", top=3))) == 3
        # The SDK follows nextLink page by page and sees every connection once.
        assert sorted(m.connection_id for m in rest.list_connections(group="g", maxpagesize=2)) == every
        assert len(list(rest.list_connections(group="g", top=3, maxpagesize=2))) == 3

        url = f"{service.endpoint}/api/hubs/{hub}/groups/g/connections?api-version={API_VERSION}&maxpagesize=2&top=4"
        first = httpx.get(url, headers={"Authorization": "Bearer " + rest_token(url)}).json()
        assert len(first["value"]) == 2
        # nextLink as in the spec's example (WebPubSub_ListConnectionsInGroup.json): an absolute URL
        # on the endpoint with top, maxpagesize and continuationToken.
        assert re.fullmatch(
            re.escape(f"{service.endpoint}/api/hubs/{hub}/groups/g/connections?top=4&maxpagesize=2&continuationToken=")
            + r"[A-Za-z0-9_-]+",
            first["nextLink"],
        )
        second_url = first["nextLink"] + f"&api-version={API_VERSION}"
        second = httpx.get(second_url, headers={"Authorization": "Bearer " + rest_token(second_url)}).json()
        # The last page (top reached) has no nextLink key at all, as in the recordings.
        assert len(second["value"]) == 2
        assert "nextLink" not in second
        assert sorted(m["connectionId"] for m in first["value"] + second["value"]) == every[:4]


@pytest.mark.parametrize("query", ["maxpagesize=0", "maxpagesize=201", "top=0", "continuationToken=not-a-token"])
def test_list_connections_refuses_bad_paging_parameters(service: RunningWebPubSub, hub: str, query: str) -> None:
    url = f"{service.endpoint}/api/hubs/{hub}/groups/g/connections?api-version={API_VERSION}&{query}"
    response = httpx.get(url, headers={"Authorization": "Bearer " + rest_token(url)})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"


def test_close_connections_of_a_group_except_excluded(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with (
        json_client(service, hub, groups=["g"]) as closed,
        json_client(service, hub, groups=["g"]) as kept,
    ):
        rest.close_group_connections("g", excluded=[kept.connection_id], reason="bye")
        assert closed.receive() == {"type": "system", "event": "disconnected", "message": "bye"}
        assert not rest.connection_exists(closed.connection_id)
        assert rest.connection_exists(kept.connection_id)


def test_granted_permission_lets_a_client_send_to_a_group(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with json_client(service, hub) as client:
        frame = {"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x"}
        assert client.request({**frame, "ackId": 1})["error"]["name"] == "Forbidden"
        rest.grant_permission("sendToGroup", client.connection_id, target_name="g")
        assert rest.has_permission("sendToGroup", client.connection_id, target_name="g")
        assert client.request({**frame, "ackId": 2})["success"] is True
        rest.revoke_permission("sendToGroup", client.connection_id, target_name="g")
        assert not rest.has_permission("sendToGroup", client.connection_id, target_name="g")


def test_wrong_access_key_is_unauthorized(service: RunningWebPubSub, hub: str) -> None:
    wrong = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210ZYXWVUTS"
    with (
        WebPubSubServiceClient(service.endpoint, hub, AzureKeyCredential(wrong)) as client,
        pytest.raises(ClientAuthenticationError) as refused,
    ):
        client.send_to_all("x", content_type="text/plain")
    assert refused.value.status_code == 401


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "token-for-another-url"])
def test_requests_without_a_valid_bearer_token_are_unauthorized(
    service: RunningWebPubSub, hub: str, authorization: str | None
) -> None:
    url = f"{service.endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
    headers = {"Content-Type": "text/plain"}
    if authorization == "token-for-another-url":
        headers["Authorization"] = "Bearer " + rest_token(f"{service.endpoint}/api/hubs/other/:send")
    elif authorization:
        headers["Authorization"] = authorization
    response = httpx.post(url, content=b"x", headers=headers)
    assert response.status_code == 401
    assert response.headers["x-ms-error-code"] == "Unauthorized"


@pytest.mark.parametrize("audience_of", [lambda url: url, lambda url: url.split("?")[0].upper()])
def test_access_key_token_audience_is_the_request_url_with_or_without_query_in_any_case(
    service: RunningWebPubSub, hub: str, audience_of: Callable[[str], str]
) -> None:
    url = f"{service.endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
    headers = {"Content-Type": "text/plain", "Authorization": "Bearer " + rest_token(audience_of(url))}
    assert httpx.post(url, content=b"x", headers=headers).status_code == 202


def test_generate_token_issues_a_token_clients_can_connect_with(service: RunningWebPubSub, hub: str) -> None:
    url = (
        f"{service.endpoint}/api/hubs/{hub}/:generateToken?api-version={API_VERSION}"
        "&userId=gus&role=webpubsub.sendToGroup&group=g1&group=g2&minutesToExpire=5"
    )
    response = httpx.post(url, headers={"Authorization": "Bearer " + rest_token(url)})
    assert response.status_code == 200
    token = response.json()["token"]
    claims = jwt.decode(
        token, ACCESS_KEY.encode(), algorithms=["HS256"], audience=f"{service.endpoint}/client/hubs/{hub}"
    )
    assert (claims["sub"], claims["role"], claims["webpubsub.group"]) == (
        "gus",
        ["webpubsub.sendToGroup"],
        ["g1", "g2"],
    )
    assert 0 < claims["exp"] - time.time() <= 300
    with open_socket(client_url(service, hub, token), "json.webpubsub.azure.v1") as client:
        assert json.loads(client.recv(timeout=5))["userId"] == "gus"


def test_identity_endpoint_requires_its_header_and_the_web_pubsub_resource(service: RunningWebPubSub) -> None:
    environment = service.identity_environment()
    endpoint, secret = environment["IDENTITY_ENDPOINT"], environment["IDENTITY_HEADER"]
    params = {"api-version": "2019-08-01", "resource": "https://webpubsub.azure.com"}
    assert httpx.get(endpoint, params=params).status_code == 401
    assert httpx.get(endpoint, params=params, headers={"X-IDENTITY-HEADER": "guess"}).status_code == 401
    other = {**params, "resource": "https://vault.azure.net"}
    assert httpx.get(endpoint, params=other, headers={"X-IDENTITY-HEADER": secret}).status_code == 400
    issued = httpx.get(endpoint, params=params, headers={"X-IDENTITY-HEADER": secret}).json()
    assert issued["token_type"] == "Bearer"
    assert int(issued["expires_on"]) > time.time()


@pytest.mark.parametrize("credential_type", [ManagedIdentityCredential, DefaultAzureCredential])
def test_entra_mode_runs_against_the_local_identity_endpoint(
    service: RunningWebPubSub, hub: str, monkeypatch: pytest.MonkeyPatch, credential_type: type[TokenCredential]
) -> None:
    for name, value in service.identity_environment().items():
        monkeypatch.setenv(name, value)
    with (
        credential_type() as credential,  # type: ignore[attr-defined]
        WebPubSubServiceClient(service.endpoint, hub, credential) as client,
    ):
        # Plain http: azure-core refuses bearer tokens unless told that is intended.
        access = client.get_client_access_token(user_id="eve", groups=["g"], enforce_https=False)
        assert access["url"].startswith(
            service.endpoint.replace("http://", "ws://") + f"/client/hubs/{hub}?access_token="
        )
        with open_socket(access["url"], "json.webpubsub.azure.v1") as listener:
            assert json.loads(listener.recv(timeout=5))["userId"] == "eve"
            client.send_to_group("g", "via entra", content_type="text/plain", enforce_https=False)
            assert json.loads(listener.recv(timeout=5))["data"] == "via entra"
            client.send_to_all({"to": "all"}, enforce_https=False)
            assert json.loads(listener.recv(timeout=5))["data"] == {"to": "all"}


def test_entra_tokens_from_elsewhere_are_refused(service: RunningWebPubSub, hub: str) -> None:
    forged = jwt.encode(
        {"aud": "https://webpubsub.azure.com", "exp": int(time.time()) + 600},
        b"some-other-signing-key-that-is-long-enough",
        algorithm="HS256",
    )
    url = f"{service.endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
    response = httpx.post(
        url, content=b"x", headers={"Content-Type": "text/plain", "Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(("client_type", "path"), [("MQTT", "clients/mqtt"), ("SocketIO", "clients/socketio")])
def test_generate_token_for_mqtt_and_socketio_clients_names_their_endpoint(
    service: RunningWebPubSub, hub: str, client_type: str, path: str
) -> None:
    # clientType=MQTT answered 200 {"token"} in the 2024-12-01 live coverage recording; the client
    # types (Default, MQTT, SocketIO) and their endpoints are the 2024-12-01 spec's.
    url = (
        f"{service.endpoint}/api/hubs/{hub}/:generateToken?api-version={API_VERSION}&userId=mo&clientType={client_type}"
    )
    response = httpx.post(url, headers={"Authorization": "Bearer " + rest_token(url)})
    assert response.status_code == 200
    claims = jwt.decode(
        response.json()["token"],
        ACCESS_KEY.encode(),
        algorithms=["HS256"],
        audience=f"{service.endpoint}/{path}/hubs/{hub}",
    )
    assert claims["sub"] == "mo"
    bad = url.replace(client_type, "Carrier-Pigeon")
    assert httpx.post(bad, headers={"Authorization": "Bearer " + rest_token(bad)}).status_code == 400


def test_a_revoked_permission_is_refused_by_the_service_even_when_a_role_granted_it(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    # The server grants or revokes a client's permissions at run time through the REST API
    # (reference-json-webpubsub-subprotocol, "Permissions"); the service enforces the result.
    with json_client(service, hub, roles=["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"]) as client:

        def send(group: str, ack_id: int) -> dict[str, object]:
            return client.request(
                {"type": "sendToGroup", "group": group, "dataType": "text", "data": "x", "ackId": ack_id}
            )

        assert send("g", 1)["success"] is True
        rest.revoke_permission("sendToGroup", client.connection_id, target_name="g")
        refused = send("g", 2)
        assert refused["success"] is False
        assert refused["error"]["name"] == "Forbidden"  # type: ignore[index]
        assert not rest.has_permission("sendToGroup", client.connection_id, target_name="g")
        assert send("h", 3)["success"] is True  # only that group was revoked
        rest.grant_permission("sendToGroup", client.connection_id, target_name="g")
        assert send("g", 4)["success"] is True
        rest.revoke_permission("joinLeaveGroup", client.connection_id)  # no target: every group
        assert client.request({"type": "joinGroup", "group": "any", "ackId": 5})["success"] is False


def test_closing_a_groups_connections_ends_reliable_ones_for_good(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    # A close by the server sends DisconnectedMessage and closes the transport; the connection's
    # state is gone, so a reliable client's recovery attempt is refused with 1008 and it must
    # connect anew (protocols/client/client-spec.md §1.3 and §1.4; close code 1000 with the reason
    # as recorded against the real service).
    with json_client(service, hub, protocol=RELIABLE_PROTOCOL, groups=["g"]) as member:
        reconnection_token = member.connected["reconnectionToken"]
        rest.close_group_connections("g", reason="room closed")
        assert member.receive() == {"type": "system", "event": "disconnected", "message": "room closed"}
        assert close_code(member.connection) == 1000
    recovery = client_url(
        service, hub, awps_connection_id=member.connection_id, awps_reconnection_token=reconnection_token
    )
    with open_socket(recovery, RELIABLE_PROTOCOL) as retry:
        assert close_code(retry) == 1008
    assert not rest.connection_exists(member.connection_id)


def identity_token(service: RunningWebPubSub, object_id: str | None = None) -> str:
    """A token of the local managed-identity endpoint for the given identity (default: the system one)."""
    environment = service.identity_environment()
    params = {"api-version": "2019-08-01", "resource": "https://webpubsub.azure.com"}
    if object_id is not None:
        params["object_id"] = object_id
    issued = httpx.get(
        environment["IDENTITY_ENDPOINT"], params=params, headers={"X-IDENTITY-HEADER": environment["IDENTITY_HEADER"]}
    )
    return str(issued.json()["access_token"])


def test_entra_callers_need_a_data_plane_role(hub: str) -> None:
    # Entra ID callers of the data plane need a role assignment: Web PubSub Service Owner for
    # sending and tokens, Web PubSub Service Reader for reading; without one the service answers
    # 403 (concept-azure-ad-authorization; microsoft/aspire#8382 shows the 403 for a control-plane
    # role only).
    settings = ServiceSettings(role_assignments={"owner-oid": SERVICE_OWNER, "reader-oid": SERVICE_READER})
    with LocalWebPubSub(settings).run_in_thread() as service:
        send = f"{service.endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
        token = f"{service.endpoint}/api/hubs/{hub}/:generateToken?api-version={API_VERSION}"
        exists = f"{service.endpoint}/api/hubs/{hub}/users/u?api-version={API_VERSION}"
        for object_id, send_status, token_status, exists_status in [
            ("owner-oid", 202, 200, 404),
            ("reader-oid", 403, 403, 404),
            ("stranger-oid", 403, 403, 403),
            (None, 403, 403, 403),  # the system-assigned identity holds no role in these settings
        ]:
            headers = {"Authorization": "Bearer " + identity_token(service, object_id), "Content-Type": "text/plain"}
            assert httpx.post(send, content=b"x", headers=headers).status_code == send_status, object_id
            assert httpx.post(token, headers=headers).status_code == token_status, object_id
            assert httpx.head(exists, headers=headers).status_code == exists_status, object_id
        refused = httpx.post(
            send, content=b"x", headers={"Authorization": "Bearer " + identity_token(service, "stranger-oid")}
        )
        assert refused.headers["x-ms-error-code"] == "Error.Forbidden"
        assert "stranger-oid" in refused.json()["message"]


def test_the_default_system_identity_is_service_owner(service: RunningWebPubSub, hub: str) -> None:
    url = f"{service.endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
    headers = {"Authorization": "Bearer " + identity_token(service), "Content-Type": "text/plain"}
    assert httpx.post(url, content=b"x", headers=headers).status_code == 202
    stranger = {**headers, "Authorization": "Bearer " + identity_token(service, "another-identity")}
    assert httpx.post(url, content=b"x", headers=stranger).status_code == 403


def test_identity_tokens_cannot_be_minted_from_the_published_access_key(service: RunningWebPubSub, hub: str) -> None:
    # The default access key is public (the emulator's README). Identity tokens signed with a key
    # derived from it would let anyone act as the Service Owner; they are refused.
    derived = hmac.new(ACCESS_KEY.encode(), b"devstack local managed identity", hashlib.sha256).digest()
    forged = jwt.encode(
        {
            "aud": "https://webpubsub.azure.com",
            "iss": "devstack-local-managed-identity",
            "oid": "local-system-assigned-identity",
            "exp": int(time.time()) + 600,
        },
        derived,
        algorithm="HS256",
    )
    url = f"{service.endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
    response = httpx.post(
        url, content=b"x", headers={"Authorization": f"Bearer {forged}", "Content-Type": "text/plain"}
    )
    assert response.status_code == 401


def test_without_local_auth_only_entra_callers_and_generated_tokens_count(hub: str) -> None:
    # disableLocalAuth (what the templates set in entra mode): access-key tokens no longer authorise
    # REST calls or client connections; Entra callers with a role and :generateToken's tokens do
    # (howto-disable-local-auth).
    with LocalWebPubSub(ServiceSettings(local_auth=False, event_handlers=())).run_in_thread() as service:
        url = f"{service.endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
        by_key = httpx.post(
            url, content=b"x", headers={"Authorization": "Bearer " + rest_token(url), "Content-Type": "text/plain"}
        )
        assert by_key.status_code == 401
        assert "disabled" in by_key.json()["message"]
        assert refused_handshake(client_url(service, hub, client_token(service.endpoint, hub)), JSON_PROTOCOL)[0] == 401
        generate = f"{service.endpoint}/api/hubs/{hub}/:generateToken?api-version={API_VERSION}&userId=lou"
        entra = {"Authorization": "Bearer " + identity_token(service)}
        token = httpx.post(generate, headers=entra).json()["token"]
        with open_socket(client_url(service, hub, token), JSON_PROTOCOL) as client:
            assert json.loads(client.recv(timeout=5))["userId"] == "lou"
            assert httpx.post(url, content=b"hi", headers={**entra, "Content-Type": "text/plain"}).status_code == 202
            assert json.loads(client.recv(timeout=5))["data"] == "hi"
