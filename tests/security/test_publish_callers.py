"""The publish API over real HTTP: only a caller holding the publish role sends anything; everyone else
gets 401 or 403 before the body is looked at.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from devstack.webpubsub import RunningWebPubSub
from tests.support.apphost import ServedApp
from tests.support.functions import error_code
from tests.support.issuer import Issuer
from tests.support.security import BEARER_AUDIENCE, service_settings
from tests.support.settings import use_environment

PUBLISH_AUDIENCE = "api://publish"
ROLE = "WebPubSub.Publish"
MESSAGE = {"to": {"all": True}, "data": "announcement"}


@pytest.fixture
def bearer_publish(service: RunningWebPubSub, issuer: Issuer, jwks_url: str) -> RunningWebPubSub:
    use_environment(
        **service_settings(service),
        PUBLISH_AUTH="bearer",
        PUBLISH_BEARER_ISSUER=issuer.issuer,
        PUBLISH_BEARER_AUDIENCE=PUBLISH_AUDIENCE,
        PUBLISH_BEARER_JWKS_URI=jwks_url,
    )
    return service


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (None, 401, "missing_token"),
        ("Basic YWRtaW46YWRtaW4=", 401, "invalid_token"),
        ({"audience": PUBLISH_AUDIENCE, "roles": [ROLE], "issuer": "https://evil.example/"}, 401, "invalid_token"),
        ({"audience": BEARER_AUDIENCE, "roles": [ROLE]}, 401, "invalid_token"),  # negotiate's audience
        ({"audience": PUBLISH_AUDIENCE, "roles": [ROLE], "lifetime": -600}, 401, "invalid_token"),
        ({"audience": PUBLISH_AUDIENCE}, 403, "missing_role"),
        ({"audience": PUBLISH_AUDIENCE, "roles": ["Chat.Send"]}, 403, "missing_role"),
        ({"audience": PUBLISH_AUDIENCE, "scp": "user_impersonation", "oid": "alice"}, 403, "missing_role"),
    ],
    ids=["none", "basic", "wrong-issuer", "wrong-audience", "expired", "no-role", "other-role", "end-user"],
)
def test_only_a_publisher_may_send(
    app: ServedApp,
    bearer_publish: RunningWebPubSub,
    issuer: Issuer,
    token: str | dict[str, Any] | None,
    status: int,
    code: str,
) -> None:
    headers: dict[str, str] = {}
    if isinstance(token, str):
        headers["Authorization"] = token
    elif isinstance(token, dict):
        claims = dict(token)
        forged_issuer = claims.pop("issuer", None)
        signer = Issuer(issuer=forged_issuer) if forged_issuer else issuer
        headers["Authorization"] = f"Bearer {signer.token(**claims)}"
    for route, body in (("messages", MESSAGE), ("connections", {"action": "close", "to": {"all": True}})):
        response = app.client.post(route, json=body, headers=headers)
        assert response.status_code == status, response.text
        assert error_code(response) == code
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_with_the_role_publishes(app: ServedApp, bearer_publish: RunningWebPubSub, issuer: Issuer) -> None:
    token = issuer.token(audience=PUBLISH_AUDIENCE, roles=[ROLE], azp="crm-backend", idtyp="app")
    response = app.client.post("messages", json=MESSAGE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text


def test_a_forged_app_service_principal_is_worthless_in_bearer_mode(
    app: ServedApp, bearer_publish: RunningWebPubSub
) -> None:
    principal = {"claims": [{"typ": "roles", "val": ROLE}], "role_typ": "roles"}
    forged = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode()}
    response = app.client.post("messages", json=MESSAGE, headers=forged)
    assert response.status_code == 401


def test_appservice_mode_cannot_be_chosen_without_app_service_authentication(
    app: ServedApp, service: RunningWebPubSub
) -> None:
    """Without the platform's flag the principal header could be forged: the mode refuses to load."""
    use_environment(**service_settings(service), PUBLISH_AUTH="appservice")
    principal = {"claims": [{"typ": "roles", "val": ROLE}], "role_typ": "roles"}
    forged = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode()}
    response = app.client.post("messages", json=MESSAGE, headers=forged)
    assert response.status_code == 500
    assert error_code(response) == "configuration_error"
    negotiate = app.client.get("negotiate", params={"userId": "alice"})
    assert negotiate.status_code == 200  # the publish API's setting takes down nothing else
