"""Who the caller is cannot be forged: App Service principal headers count only behind App Service Authentication.

The X-MS-CLIENT-PRINCIPAL-* headers are trustworthy only when the platform's authentication layer
strips client-sent copies. Anywhere else (anonymous and bearer modes, or appservice mode without
the platform flag) a caller can send them, so the app must ignore them or refuse to run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.webpubsub import RunningWebPubSub
from tests.support.apphost import ServedApp
from tests.support.functions import error_code
from tests.support.issuer import Issuer
from tests.support.security import BEARER_AUDIENCE, SERVICE_KEY, bearer_settings
from tests.support.settings import use_environment

FORGED_PRINCIPAL = {
    "X-MS-CLIENT-PRINCIPAL-ID": "admin",
    "X-MS-CLIENT-PRINCIPAL-NAME": "admin@contoso.example",
    "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    "X-MS-CLIENT-PRINCIPAL": base64.b64encode(
        json.dumps({"userId": "admin", "userRoles": ["admin"]}).encode()
    ).decode(),
}


def subject(service: RunningWebPubSub, document: dict[str, Any]) -> str:
    claims = jwt.decode(
        document["token"], SERVICE_KEY, algorithms=["HS256"], audience=f"{service.endpoint}/client/hubs/chat"
    )
    return str(claims["sub"])


def test_anonymous_mode_ignores_principal_headers(app: ServedApp, service: RunningWebPubSub) -> None:
    response = app.client.get("negotiate", params={"userId": "alice"}, headers=FORGED_PRINCIPAL)
    assert response.status_code == 200
    assert subject(service, response.json()) == "alice"
    without_user = app.client.get("negotiate", headers=FORGED_PRINCIPAL)
    assert without_user.status_code == 400
    assert error_code(without_user) == "missing_user_id"


def test_bearer_mode_ignores_principal_headers(
    app: ServedApp, service: RunningWebPubSub, issuer: Issuer, jwks_url: str
) -> None:
    use_environment(**bearer_settings(issuer, jwks_url, service))
    forged_only = app.client.get("negotiate", params={"userId": "admin"}, headers=FORGED_PRINCIPAL)
    assert forged_only.status_code == 401
    assert "token" not in forged_only.json()
    token = issuer.user_token(audience=BEARER_AUDIENCE, oid="oid-42")
    headers = {**FORGED_PRINCIPAL, "Authorization": f"Bearer {token}"}
    response = app.client.get("negotiate", params={"userId": "admin"}, headers=headers)
    assert response.status_code == 200
    assert subject(service, response.json()) == "oid-42"


@pytest.mark.parametrize(
    "claims",
    [{"idtyp": "app", "roles": ["Chat.Send"]}, {"roles": ["Chat.Send"]}, {}],
    ids=["idtyp-app", "client-credentials", "no-scope"],
)
def test_bearer_mode_refuses_app_only_tokens(
    app: ServedApp, service: RunningWebPubSub, issuer: Issuer, jwks_url: str, claims: dict[str, Any]
) -> None:
    """A service principal or managed identity of the tenant is not a chat user: no connection for it."""
    use_environment(**bearer_settings(issuer, jwks_url, service))
    token = issuer.token(audience=BEARER_AUDIENCE, oid="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", **claims)
    response = app.client.get("negotiate", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert error_code(response) == "app_token_not_accepted"
    assert "token" not in response.json()
    use_environment(**bearer_settings(issuer, jwks_url, service), NEGOTIATE_BEARER_ALLOW_APP_TOKENS="true")
    assert app.client.get("negotiate", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def forged_tokens(issuer: Issuer) -> dict[str, str]:
    """Tokens an attacker can make without the issuer's private key."""
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": BEARER_AUDIENCE, "oid": "admin", "iat": now, "exp": now + 600}
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        issuer.private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": issuer.kid}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signing_input = header + b"." + payload
    confused = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    unsigned_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": issuer.kid}).encode()).rstrip(b"=")
    return {
        "own-key-same-kid": jwt.encode(claims, own_key, algorithm="RS256", headers={"kid": issuer.kid}),
        "hs256-with-public-key": (signing_input + b"." + base64.urlsafe_b64encode(confused).rstrip(b"=")).decode(),
        "alg-none": (unsigned_header + b"." + payload + b".").decode(),
        "other-audience": issuer.user_token(audience="api://someone-else", oid="admin"),
        "expired": issuer.user_token(audience=BEARER_AUDIENCE, oid="admin", lifetime=-3600),
    }


@pytest.mark.parametrize("name", ["own-key-same-kid", "hs256-with-public-key", "alg-none", "other-audience", "expired"])
def test_bearer_mode_refuses_tokens_made_without_the_issuers_key(
    app: ServedApp, service: RunningWebPubSub, issuer: Issuer, jwks_url: str, name: str
) -> None:
    use_environment(**bearer_settings(issuer, jwks_url, service))
    token = forged_tokens(issuer)[name]
    response = app.client.get("negotiate", headers={**FORGED_PRINCIPAL, "Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"
    assert "token" not in response.json()


def test_appservice_mode_without_the_platform_flag_refuses_to_run(app: ServedApp, service: RunningWebPubSub) -> None:
    """Not behind App Service Authentication, anyone could send the headers: no token, for anyone."""
    use_environment(
        WEBPUBSUB_CREDENTIAL="connectionstring",
        WEBPUBSUB_CONNECTION_STRING=service.connection_string,
        NEGOTIATE_AUTH="appservice",
    )
    response = app.client.get("negotiate", headers=FORGED_PRINCIPAL)
    assert response.status_code == 500
    assert error_code(response) == "configuration_error"
    assert "token" not in response.json()
    health = app.client.get("health")
    assert health.status_code == 503
    assert "NEGOTIATE_AUTH" in health.json()["checks"]["configuration"]["detail"]


def test_event_handler_appservice_mode_without_the_platform_flag_refuses_to_run(
    app: ServedApp, service: RunningWebPubSub
) -> None:
    use_environment(
        WEBPUBSUB_CREDENTIAL="connectionstring",
        WEBPUBSUB_CONNECTION_STRING=service.connection_string,
        NEGOTIATE_AUTH="anonymous",
        EVENTHANDLER_AUTH="appservice",
    )
    headers = {
        **FORGED_PRINCIPAL,
        "ce-awpsversion": "1.0",
        "ce-specversion": "1.0",
        "ce-type": "azure.webpubsub.sys.connect",
        "ce-hub": "chat",
        "ce-connectionId": "c1",
        "ce-userId": "admin",
        "Content-Type": "application/json",
    }
    response = app.client.post("eventhandler", headers=headers, content=b"{}")
    assert response.status_code == 500
    assert error_code(response) == "configuration_error"


def test_appservice_mode_behind_the_platform_uses_its_principal(app: ServedApp, service: RunningWebPubSub) -> None:
    """The control: with the platform flag, the platform-supplied principal is the user."""
    use_environment(
        WEBPUBSUB_CREDENTIAL="connectionstring",
        WEBPUBSUB_CONNECTION_STRING=service.connection_string,
        NEGOTIATE_AUTH="appservice",
        WEBSITE_AUTH_ENABLED="true",
    )
    response = app.client.get("negotiate", params={"userId": "someone"}, headers={"X-MS-CLIENT-PRINCIPAL-ID": "p-1"})
    assert response.status_code == 200
    assert subject(service, response.json()) == "p-1"
