"""The issuer's signing-key endpoint slow, hostile or down, behind negotiate (bearer) and entra-mode events.

Real sockets: the app is served by the local Functions host and reads its keys from a
`KeyEndpoint` stand-in that trickles, sends far too much, redirects or fails. Every such request
is a 503 with Retry-After, answered while the endpoint misbehaves (not after it finished), and
the same process serves again once the endpoint behaves.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import httpx
import pytest

from tests.support.apphost import ServedApp
from tests.support.events import CONNECT, connect_body, event_headers
from tests.support.fakes import LOCAL_CONNECTION_STRING
from tests.support.functions import error_code
from tests.support.issuer import Issuer
from tests.support.settings import use_environment
from tests.support.standins import KeyBehaviour, KeyEndpoint
from tests.support.threads import run_concurrently

AUDIENCE = "api://negotiate"
SERVICE_PRINCIPAL = "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f"


def use_bearer_negotiate(issuer: Issuer, jwks_url: str) -> None:
    use_environment(
        WEBPUBSUB_CREDENTIAL="connectionstring",
        WEBPUBSUB_CONNECTION_STRING=LOCAL_CONNECTION_STRING,
        NEGOTIATE_AUTH="bearer",
        NEGOTIATE_BEARER_ISSUER=issuer.issuer,
        NEGOTIATE_BEARER_AUDIENCE=AUDIENCE,
        NEGOTIATE_BEARER_JWKS_URI=jwks_url,
    )


def negotiate(app: ServedApp, issuer: Issuer) -> httpx.Response:
    token = issuer.user_token(audience=AUDIENCE, oid="alice-oid")
    return app.client.get("negotiate", headers={"Authorization": f"Bearer {token}"})


def concurrent_statuses(app: ServedApp, issuer: Issuer, callers: int) -> list[int]:
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(base_url=app.url(""), timeout=30) as client:
            token = issuer.user_token(audience=AUDIENCE, oid="alice-oid")
            statuses.append(client.get("negotiate", headers={"Authorization": f"Bearer {token}"}).status_code)

    run_concurrently(call, callers)
    return statuses


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert error_code(response) == "dependency_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_a_trickling_key_endpoint_costs_negotiate_a_bounded_wait(
    app: ServedApp, issuer: Issuer, servers: ExitStack
) -> None:
    endpoint = KeyEndpoint(issuer.jwks, KeyBehaviour.TRICKLE)
    endpoint.trickle_seconds = 0.1  # a byte at a time, each far within any per-read timeout
    use_bearer_negotiate(issuer, endpoint.serve(servers))
    assert_unavailable(negotiate(app, issuer))
    assert endpoint.bytes_sent < len(str(issuer.jwks)) / 2  # answered long before the keys could arrive


def test_concurrent_negotiates_at_cold_start_share_one_download_of_a_failing_endpoint(
    app: ServedApp, issuer: Issuer, servers: ExitStack
) -> None:
    endpoint = KeyEndpoint(issuer.jwks, KeyBehaviour.FAIL)
    use_bearer_negotiate(issuer, endpoint.serve(servers))
    assert concurrent_statuses(app, issuer, callers=8) == [503] * 8
    assert concurrent_statuses(app, issuer, callers=8) == [503] * 8  # within the back-off: no new download
    assert endpoint.requests == ["/keys"]
    endpoint.behaviour = KeyBehaviour.ANSWER
    deadline = time.monotonic() + 20
    while (status := negotiate(app, issuer).status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200  # the same process serves once the endpoint behaves


def test_a_huge_key_document_is_not_read_into_memory(
    app: ServedApp, issuer: Issuer, servers: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = KeyEndpoint(issuer.jwks, KeyBehaviour.HUGE)
    endpoint.huge_bytes = 40 * 1024 * 1024
    use_bearer_negotiate(issuer, endpoint.serve(servers))
    assert_unavailable(negotiate(app, issuer))
    assert "larger than 524288 bytes" in caplog.text  # the download stopped at the cap, not at 40 MB


def test_a_redirect_to_another_origin_is_not_followed(app: ServedApp, issuer: Issuer, servers: ExitStack) -> None:
    elsewhere = KeyEndpoint(issuer.jwks)
    redirecting = KeyEndpoint(issuer.jwks, KeyBehaviour.REDIRECT)
    redirecting.redirect_to = elsewhere.serve(servers)
    use_bearer_negotiate(issuer, redirecting.serve(servers))
    assert_unavailable(negotiate(app, issuer))
    assert elsewhere.requests == []


@pytest.mark.parametrize("behaviour", [KeyBehaviour.TRICKLE, KeyBehaviour.SILENT])
def test_entra_mode_events_answer_503_while_the_key_endpoint_stalls(
    app: ServedApp, issuer: Issuer, servers: ExitStack, behaviour: KeyBehaviour
) -> None:
    endpoint = KeyEndpoint(issuer.jwks, behaviour)
    use_environment(
        WEBPUBSUB_CREDENTIAL="connectionstring",
        WEBPUBSUB_CONNECTION_STRING=LOCAL_CONNECTION_STRING,
        NEGOTIATE_AUTH="anonymous",
        EVENTHANDLER_AUTH="bearer",
        EVENTHANDLER_BEARER_ISSUER=issuer.issuer,
        EVENTHANDLER_BEARER_AUDIENCE=AUDIENCE,
        EVENTHANDLER_BEARER_JWKS_URI=endpoint.serve(servers),
        EVENTHANDLER_BEARER_PRINCIPAL_ID=SERVICE_PRINCIPAL,
    )
    token = issuer.token(audience=AUDIENCE, oid=SERVICE_PRINCIPAL)
    headers = event_headers(CONNECT, signature=None, Authorization=f"Bearer {token}")
    assert_unavailable(app.client.post("eventhandler", headers=headers, content=connect_body()))
