"""Who the caller is, in every NEGOTIATE_AUTH mode, including forged headers."""

from __future__ import annotations

from typing import Any

import pytest

from shared.bearer import BearerValidator
from shared.config import BearerSettings
from shared.errors import BadRequest, Forbidden, Unauthorized
from shared.identity import AnonymousCaller, AppServicePrincipal, BearerCaller, build_identifier
from shared.web import Request
from tests.support.issuer import Issuer
from tests.support.settings import local_settings


def request(headers: dict[str, str] | None = None, query: list[tuple[str, str]] | None = None) -> Request:
    return Request("GET", "http://localhost/api/negotiate", headers=headers or {}, query=query or [])


def test_appservice_takes_the_platform_principal() -> None:
    assert AppServicePrincipal().identify(request({"x-ms-client-principal-id": "oid-1"})).user_id == "oid-1"


@pytest.mark.parametrize("headers", [{}, {"x-ms-client-principal-id": "  "}, {"x-ms-client-principal-name": "a"}])
def test_appservice_without_principal_is_unauthorized(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized):
        AppServicePrincipal().identify(request(headers))


def test_bearer_uses_oid_then_sub(issuer: Issuer) -> None:
    caller = BearerCaller(BearerValidator(BearerSettings(issuer.issuer, "api://negotiate"), fetch=issuer.fetch))
    token = issuer.user_token(oid="oid-7", sub="pairwise-sub")
    assert caller.identify(request({"authorization": f"Bearer {token}"})).user_id == "oid-7"
    token = issuer.user_token(sub="only-sub")
    assert caller.identify(request({"authorization": f"Bearer {token}"})).user_id == "only-sub"


def test_bearer_ignores_forged_principal_header(issuer: Issuer) -> None:
    """In bearer mode the App Service header is just another client-chosen header."""
    caller = BearerCaller(BearerValidator(BearerSettings(issuer.issuer, "api://negotiate"), fetch=issuer.fetch))
    token = issuer.user_token(oid="real-user")
    headers = {"authorization": f"Bearer {token}", "x-ms-client-principal-id": "admin"}
    assert caller.identify(request(headers)).user_id == "real-user"
    with pytest.raises(Unauthorized):
        caller.identify(request({"x-ms-client-principal-id": "admin"}))


def test_anonymous_takes_the_query_and_ignores_forged_headers() -> None:
    caller = AnonymousCaller()
    forged = {"x-ms-client-principal-id": "admin"}
    assert caller.identify(request(forged, [("userId", "dev-1")])).user_id == "dev-1"
    with pytest.raises(BadRequest) as caught:
        caller.identify(request(forged))
    assert caught.value.code == "missing_user_id"


@pytest.mark.parametrize("user_id", ["", " ", "a\nb", "x" * 1025])
def test_anonymous_rejects_malformed_user_ids(user_id: str) -> None:
    with pytest.raises(BadRequest):
        AnonymousCaller().identify(request(query=[("userId", user_id)]))


def test_identifier_follows_the_mode() -> None:
    assert isinstance(build_identifier(local_settings().negotiate), AnonymousCaller)
    appservice = local_settings(NEGOTIATE_AUTH="appservice", WEBSITE_AUTH_ENABLED="true")
    assert isinstance(build_identifier(appservice.negotiate), AppServicePrincipal)
    bearer = local_settings(
        NEGOTIATE_AUTH="bearer", NEGOTIATE_BEARER_ISSUER="https://issuer.example", NEGOTIATE_BEARER_AUDIENCE="a"
    )
    assert isinstance(build_identifier(bearer.negotiate), BearerCaller)


@pytest.mark.parametrize(
    "claims",
    [
        {"idtyp": "app", "roles": ["Chat.Send"]},  # the optional claim, where configured
        {"roles": ["Chat.Send"]},  # client credentials without idtyp: no delegated scopes
        {"scp": "   "},
        {"scp": "user_impersonation", "idtyp": "app"},
    ],
)
def test_bearer_refuses_app_only_tokens_as_users(issuer: Issuer, claims: dict[str, Any]) -> None:
    """A service principal or managed identity is not a user: negotiate would issue it a chat connection."""
    caller = BearerCaller(BearerValidator(BearerSettings(issuer.issuer, "api://negotiate"), fetch=issuer.fetch))
    token = issuer.token(oid="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", **claims)
    with pytest.raises(Forbidden) as refused:
        caller.identify(request({"authorization": f"Bearer {token}"}))
    assert refused.value.code == "app_token_not_accepted"


def test_bearer_accepts_app_only_tokens_when_the_setting_allows_them(issuer: Issuer) -> None:
    validator = BearerValidator(BearerSettings(issuer.issuer, "api://negotiate"), fetch=issuer.fetch)
    caller = BearerCaller(validator, accept_app_tokens=True)
    token = issuer.token(oid="service-oid", idtyp="app", roles=["Chat.Send"])
    assert caller.identify(request({"authorization": f"Bearer {token}"})).user_id == "service-oid"
