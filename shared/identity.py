"""Who is calling negotiate, by NEGOTIATE_AUTH.

In the production modes the user id comes from something the caller cannot choose: the principal
App Service Authentication verified, or a validated Entra ID access token. Only `anonymous`
(local development) takes it from the query string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.bearer import BearerValidator, bearer_token
from shared.config import NegotiateAuth, NegotiateSettings
from shared.errors import BadRequest, Forbidden, Unauthorized
from shared.web import Request

PRINCIPAL_ID_HEADER = "x-ms-client-principal-id"
MAX_USER_ID_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str


class CallerIdentifier(Protocol):
    """Establishes the caller's user id or raises (401 no identity, 400 malformed input)."""

    def identify(self, request: Request) -> Caller: ...


def _is_valid_user_id(value: str) -> bool:
    return bool(value.strip()) and len(value) <= MAX_USER_ID_LENGTH and value.isprintable()


class AppServicePrincipal:
    """The principal App Service Authentication verified; the platform strips client-sent copies.

    Configuration refuses this mode unless the platform reports authentication as enabled.
    """

    def identify(self, request: Request) -> Caller:
        principal = request.header(PRINCIPAL_ID_HEADER)
        if principal is None or not _is_valid_user_id(principal):
            raise Unauthorized(
                "Sign in first: App Service Authentication supplied no principal for this request.",
                code="not_signed_in",
            )
        return Caller(principal)


def is_app_only(claims: Mapping[str, Any]) -> bool:
    """Whether an Entra ID access token names an application rather than a signed-in user.

    `idtyp: app` says so where the optional claim is configured ("the most accurate way for an API
    to determine if a token is an app token", Entra's optional-claims reference); without it, a
    delegated (user) token always carries the scopes the user consented to in `scp`, which
    app-only tokens never have (they carry `roles`).
    """
    if claims.get("idtyp") == "app":
        return True
    scopes = claims.get("scp")
    return not (isinstance(scopes, str) and scopes.strip())


class BearerCaller:
    """A validated Entra ID access token; the user id is its `oid` (stable across apps), else `sub`.

    App-only tokens (service principals, managed identities) are refused with 403 unless
    `accept_app_tokens` (NEGOTIATE_BEARER_ALLOW_APP_TOKENS): negotiate hands out connections to users.
    """

    def __init__(self, validator: BearerValidator, *, accept_app_tokens: bool = False):
        self._validator = validator
        self._accept_app_tokens = accept_app_tokens

    def identify(self, request: Request) -> Caller:
        claims = self._validator.validate(bearer_token(request.header("authorization")))
        if not self._accept_app_tokens and is_app_only(claims):
            raise Forbidden(
                "The bearer token was issued to an application, not a signed-in user (no delegated scp claim); "
                "this app does not accept app-only tokens.",
                code="app_token_not_accepted",
            )
        for claim in ("oid", "sub"):
            value = claims.get(claim)
            if isinstance(value, str) and _is_valid_user_id(value):
                return Caller(value)
        raise Unauthorized("The bearer token carries no user (oid or sub claim).", code="invalid_token")


class AnonymousCaller:
    """Local development only: the caller names itself with `?userId=`."""

    def identify(self, request: Request) -> Caller:
        user_id = request.query_value("userId")
        if user_id is None:
            raise BadRequest(
                "The userId query parameter is required (NEGOTIATE_AUTH=anonymous).", code="missing_user_id"
            )
        if not _is_valid_user_id(user_id):
            raise BadRequest(
                f"userId must be 1-{MAX_USER_ID_LENGTH} printable characters, not only spaces.",
                code="invalid_user_id",
            )
        return Caller(user_id)


def build_identifier(settings: NegotiateSettings) -> CallerIdentifier:
    if settings.auth is NegotiateAuth.ANONYMOUS:
        return AnonymousCaller()
    if settings.auth is NegotiateAuth.BEARER:
        assert settings.bearer is not None  # guaranteed by load_settings
        return BearerCaller(BearerValidator(settings.bearer), accept_app_tokens=settings.accept_app_tokens)
    return AppServicePrincipal()
