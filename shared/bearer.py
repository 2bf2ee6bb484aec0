"""Validation of Entra ID (OpenID Connect) access tokens presented as `Authorization: Bearer`.

Used by negotiate (NEGOTIATE_AUTH=bearer) and by the event handler in entra mode
(EVENTHANDLER_AUTH=bearer, where the service calls with its managed identity's token). PyJWT does
the cryptography; this module decides which keys and claims count and turns every failure into an
error that says what was wrong without echoing the token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.config import BearerSettings
from shared.errors import DependencyUnavailable, Unauthorized

if TYPE_CHECKING:
    import jwt

logger = logging.getLogger(__name__)

# Asymmetric algorithms only: a symmetric (HS*) or unsigned ("none") token must never pass.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
REQUIRED_CLAIMS = ("exp", "iss", "aud")
# How long an unknown key id waits before it may trigger another download of the key set, so that
# tokens with made-up key ids cannot turn the app into a load generator against the issuer.
UNKNOWN_KID_REFRESH_SECONDS = 60.0
# Known keys are re-read this often anyway, so that a key the issuer withdrew stops verifying.
KEY_SET_MAX_AGE_SECONDS = 3600.0

FetchJson = Callable[[str, float], dict[str, Any]]


def fetch_json(url: str, timeout: float) -> dict[str, Any]:
    """GET a JSON document over https (http only on loopback, enforced by config)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        document = json.loads(response.read().decode("utf-8"))
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    return document


def invalid_token(reason: str) -> Unauthorized:
    """401 with the RFC 6750 challenge, so clients know to fetch a new token."""
    return Unauthorized(
        f"The bearer token was rejected: {reason}.",
        code="invalid_token",
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'},
    )


def bearer_token(authorization: str | None) -> str:
    """The token from an Authorization header, or 401 saying what is missing."""
    if not authorization:
        raise Unauthorized(
            "An Authorization: Bearer <token> header is required.",
            code="missing_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise invalid_token("the Authorization header must use the Bearer scheme")
    return token.strip()


class BearerValidator:
    """Checks signature (against the issuer's published keys), issuer, audience and lifetime."""

    def __init__(
        self,
        settings: BearerSettings,
        *,
        fetch: FetchJson = fetch_json,
        timeout_seconds: float = 5.0,
        leeway_seconds: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._settings = settings
        self._fetch = fetch
        self._timeout = timeout_seconds
        self._leeway = leeway_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._jwks_uri: str | None = settings.jwks_uri
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None

    @property
    def issuer(self) -> str:
        return self._settings.issuer

    def validate(self, token: str) -> dict[str, Any]:
        """Return the token's claims, or raise Unauthorized / DependencyUnavailable."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid_token("it is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise invalid_token("its signing algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise invalid_token("it names no signing key (kid)")
        key = self._signing_key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as error:
            raise invalid_token(_reason(error)) from None
        return claims

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            if (
                age is None
                or age > KEY_SET_MAX_AGE_SECONDS
                or (kid not in self._keys and age >= UNKNOWN_KID_REFRESH_SECONDS)
            ):
                self._refresh_keys(now)
            key: jwt.PyJWK | None = self._keys.get(kid)
        if key is None:
            raise invalid_token("it was signed by a key the issuer does not publish")
        return key

    def _refresh_keys(self, now: float) -> None:
        import jwt

        try:
            if self._jwks_uri is None:
                discovery = self._settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
                uri = self._fetch(discovery, self._timeout).get("jwks_uri")
                if not isinstance(uri, str) or not uri.startswith("https://"):
                    raise ValueError("the discovery document has no https jwks_uri")
                self._jwks_uri = uri
            document = self._fetch(self._jwks_uri, self._timeout)
            key_set = jwt.PyJWKSet.from_dict(document)
        except (OSError, ValueError, jwt.PyJWTError) as error:
            if self._keys:
                logger.warning(
                    "Could not refresh signing keys of %s (%s); keeping the known keys",
                    self._settings.issuer,
                    type(error).__name__,
                )
                self._fetched_at = now
                return
            raise DependencyUnavailable(
                "identity provider",
                f"cannot read the signing keys of {self._settings.issuer}: {type(error).__name__}: {error}",
            ) from None
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
        self._fetched_at = now


def _reason(error: Exception) -> str:
    import jwt

    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "it has expired"),
        (jwt.ImmatureSignatureError, "it is not valid yet"),
        (jwt.InvalidAudienceError, "it was issued for another audience"),
        (jwt.InvalidIssuerError, "it was issued by another issuer"),
        (jwt.InvalidSignatureError, "its signature does not verify"),
        (jwt.MissingRequiredClaimError, "it lacks a required claim (exp, iss or aud)"),
        (jwt.InvalidAlgorithmError, "its signing algorithm is not accepted"),
    ]
    for error_type, reason in reasons:
        if isinstance(error, error_type):
            return reason
    return "it is malformed"
