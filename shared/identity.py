"""Who is calling negotiate, by NEGOTIATE_AUTH.

In the production modes the user id comes from something the caller cannot choose: the principal
App Service Authentication verified, or a validated Entra ID access token. Only `anonymous`
(local development) takes it from the query string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.bearer import BearerValidator, bearer_token
from shared.config import NegotiateAuth, NegotiateSettings
from shared.errors import BadRequest, Unauthorized
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


class BearerCaller:
    """A validated Entra ID access token; the user id is its `oid` (stable across apps), else `sub`."""

    def __init__(self, validator: BearerValidator):
        self._validator = validator

    def identify(self, request: Request) -> Caller:
        claims = self._validator.validate(bearer_token(request.header("authorization")))
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
        return BearerCaller(BearerValidator(settings.bearer))
    return AppServicePrincipal()
