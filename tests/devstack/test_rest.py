"""The REST API, driven by the official service SDK; and entra mode through the local identity endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import jwt
import pytest
from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from devstack.webpubsub import RunningWebPubSub

from .conftest import ACCESS_KEY, client_token, client_url, json_client, open_socket

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


def test_user_group_membership_also_applies_to_the_users_later_connections(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with json_client(service, hub, user_id="dee") as first:
        rest.add_user_to_group("vip", "dee")
        with json_client(service, hub, user_id="dee") as later:
            rest.send_to_group("vip", "welcome", content_type="text/plain")
            assert first.receive()["data"] == later.receive()["data"] == "welcome"
            rest.remove_user_from_group("vip", "dee")
            assert not rest.group_exists("vip")


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


def test_odata_filters_are_reported_as_unsupported(
    service: RunningWebPubSub, hub: str, rest: WebPubSubServiceClient
) -> None:
    with pytest.raises(HttpResponseError) as refused:
        rest.send_to_all("x", content_type="text/plain", filter="userId eq 'a'")
    assert refused.value.status_code == 400


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
