"""Tokens the service accepts and issues: client access tokens, REST tokens, local identity tokens.

Validation follows the service (and its emulator): HS256 signed with the access key string's
UTF-8 bytes, ``exp`` required, five minutes of clock skew tolerated, and an ``aud`` that names
the URL on the service's endpoint. Error messages are short and never contain the token.

Which keys count is :class:`TokenKeys`: the access key only while local (key) auth is on, as
``disableLocalAuth`` switches it off in Azure; the local identity endpoint's tokens and, without
local auth, ``:generateToken``'s client tokens are signed with keys derived from a secret made
for the settings object, never from the (often published) access key.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import jwt

from .settings import ServiceSettings

__all__ = [
    "ENTRA_AUDIENCE",
    "ClientIdentity",
    "RestCaller",
    "TokenError",
    "TokenKeys",
    "client_identity_from_claims",
    "issue_client_token",
    "issue_identity_token",
    "validate_client_token",
    "validate_rest_token",
]

#: Resource (audience) of Microsoft Entra tokens for the Web PubSub data plane.
ENTRA_AUDIENCE = "https://webpubsub.azure.com"
CLOCK_SKEW_SECONDS = 300
_IDENTITY_ISSUER = "devstack-local-managed-identity"
_USER_ID_CLAIMS = ("sub", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier")
_ROLE_CLAIMS = ("role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_GROUP_CLAIM = "webpubsub.group"


class TokenError(Exception):
    """A token was missing, malformed, expired, signed with another key or meant for another URL."""


@dataclass(frozen=True)
class TokenKeys:
    """The HS256 keys of one service: access key (None without local auth), identity and client keys."""

    access_key: bytes | None
    identity: bytes = field(repr=False)
    client: bytes = field(repr=False)

    @classmethod
    def of(cls, settings: ServiceSettings) -> TokenKeys:
        access_key = settings.access_key.encode()
        identity = hmac.new(settings.signing_secret, b"local managed identity", hashlib.sha256).digest()
        internal = hmac.new(settings.signing_secret, b"client access tokens", hashlib.sha256).digest()
        return cls(
            access_key=access_key if settings.local_auth else None,
            identity=identity,
            client=access_key if settings.local_auth else internal,
        )


@dataclass(frozen=True)
class ClientIdentity:
    """Who a client connection is, as its access token says."""

    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class RestCaller:
    """Who called the REST API: the access key (full access) or an Entra identity (its role decides)."""

    kind: Literal["access-key", "managed-identity"]
    principal_id: str | None = None


def validate_client_token(
    token: str, key: bytes, *, endpoint: str, hub: str, client_path: str = "client"
) -> ClientIdentity:
    """Check a client access token against the service's own endpoint.

    The token's audience must be ``<endpoint>/<client_path>/hubs/<hub>`` for the *configured*
    endpoint (never the client's ``Host`` header, which a web page can choose), in its http(s) or
    ws(s) spelling, compared case-insensitively, trailing slash tolerated. ``client_path`` is
    ``clients/mqtt`` on the MQTT endpoint: a token is good for the client type it was made for.
    """
    claims = _decode_hs256(token, key)
    expected = f"{endpoint.rstrip('/')}/{client_path}/hubs/{hub}"
    if not any(_same_url(audience, expected) for audience in _audiences(claims)):
        raise TokenError("the token's audience does not match this endpoint and hub")
    return client_identity_from_claims(claims)


def client_identity_from_claims(claims: Mapping[str, Any]) -> ClientIdentity:
    user_id = next((str(claims[name]) for name in _USER_ID_CLAIMS if claims.get(name)), None)
    roles = tuple(role for name in _ROLE_CLAIMS for role in _strings(claims.get(name)))
    groups = tuple(_strings(claims.get(_GROUP_CLAIM)))
    return ClientIdentity(user_id=user_id, roles=roles, groups=groups, claims=dict(claims))


def validate_rest_token(token: str, keys: TokenKeys, *, request_url: str) -> RestCaller:
    """Accept an access-key token for this exact request, or a token of the local identity endpoint.

    ``request_url`` is the configured endpoint plus the request's raw path and query.
    Access-key tokens are what the SDK's JwtCredentialPolicy sends: ``aud`` is the full request
    URL; like the emulator, the URL without its query is accepted too.
    """
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise TokenError("the bearer token is not a JWT") from error
    if ENTRA_AUDIENCE in {audience.rstrip("/") for audience in _audiences(unverified)}:
        claims = _decode_hs256(token, keys.identity)
        if claims.get("iss") != _IDENTITY_ISSUER:
            raise TokenError("the Entra token was not issued by this local service")
        principal = claims.get("oid")
        if not isinstance(principal, str) or not principal:
            raise TokenError("the Entra token names no identity (oid)")
        return RestCaller("managed-identity", principal)
    if keys.access_key is None:
        raise TokenError("access key authentication is disabled for this service; use Microsoft Entra ID")
    claims = _decode_hs256(token, keys.access_key)
    without_query = request_url.split("?", 1)[0]
    if not any(_same_url(aud, request_url) or _same_url(aud, without_query) for aud in _audiences(claims)):
        raise TokenError("the token's audience is not this request's URL")
    return RestCaller("access-key")


def issue_client_token(
    key: bytes,
    *,
    endpoint: str,
    hub: str,
    user_id: str | None,
    roles: Iterable[str],
    groups: Iterable[str],
    minutes_to_expire: int,
    client_path: str = "client",
) -> str:
    """Sign a client access token the way the service's ``:generateToken`` does.

    ``client_path`` is ``client`` for Web PubSub clients, ``clients/mqtt`` or
    ``clients/socketio`` for those client types: the token is only good for that endpoint.
    """
    now = int(time.time())
    payload: dict[str, Any] = {
        "aud": f"{endpoint.rstrip('/')}/{client_path}/hubs/{hub}",
        "iat": now,
        "nbf": now,
        "exp": now + 60 * minutes_to_expire,
    }
    if user_id:
        payload["sub"] = user_id
    if roles := list(roles):
        payload["role"] = roles
    if groups := list(groups):
        payload[_GROUP_CLAIM] = groups
    return jwt.encode(payload, key, algorithm="HS256")


def issue_identity_token(key: bytes, *, principal_id: str, lifetime_seconds: int) -> tuple[str, int]:
    """Sign a stand-in Entra token for the Web PubSub resource; returns the token and its expiry.

    ``key`` is ``TokenKeys.identity``: a restarted service with the same settings still accepts
    the tokens the app's credential cached, and nobody can mint them from the access key.
    """
    now = int(time.time())
    expires_on = now + lifetime_seconds
    payload = {
        "aud": ENTRA_AUDIENCE,
        "iss": _IDENTITY_ISSUER,
        "sub": principal_id,
        "oid": principal_id,
        "iat": now,
        "nbf": now,
        "exp": expires_on,
    }
    return jwt.encode(payload, key, algorithm="HS256"), expires_on


def _decode_hs256(token: str, key: bytes) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            options={"require": ["exp"], "verify_aud": False},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.ExpiredSignatureError as error:
        raise TokenError("the token has expired") from error
    except jwt.InvalidSignatureError as error:
        raise TokenError("the token's signature is not valid for this access key") from error
    except jwt.MissingRequiredClaimError as error:
        raise TokenError("the token has no expiry (exp)") from error
    except jwt.PyJWTError as error:
        raise TokenError("the token is malformed or not yet valid") from error
    return claims


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    return list(_strings(claims.get("aud")))


def _strings(value: Any) -> Iterable[str]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value)
    return (str(value),)


def _same_url(left: str, right: str) -> bool:
    """Compare URLs as the service does: case-insensitively, ws ≡ http, default ports implied."""
    return _normalized(left) == _normalized(right)


def _normalized(url: str) -> tuple[str, str, int | None, str, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in ("http", "https"):
        return None
    default_port = 443 if scheme == "https" else 80
    path = unquote(parts.path).rstrip("/").lower()
    return scheme, (parts.hostname or "").lower(), port or default_port, path, unquote(parts.query).lower()
