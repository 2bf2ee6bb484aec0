"""A local OpenID issuer for the service's own managed identity (event handler auth "ManagedIdentity").

With that auth type the real service calls the event handler with ``Authorization: Bearer`` and a
Microsoft Entra token of its managed identity for the configured resource; the app validates
issuer, audience, signature (RS256, keys from the issuer's JWKS) and the identity's object id.
Locally the service is its own issuer: it publishes an OpenID discovery document and a JWKS on
loopback http and signs tokens with a key pair made for this run, so the app's bearer validator
runs unchanged (``EVENTHANDLER_AUTH=bearer``) against it.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["ISSUER_PATH", "JWKS_PATH", "LocalIssuer", "UpstreamIdentity"]

ISSUER_PATH = "/_devstack/issuer"
DISCOVERY_PATH = ISSUER_PATH + "/.well-known/openid-configuration"
JWKS_PATH = ISSUER_PATH + "/discovery/keys"
#: Tokens live an hour, like Entra's; a cached one is renewed five minutes before it expires.
_TOKEN_LIFETIME_SECONDS = 3600
_RENEW_BEFORE_SECONDS = 300
LOCAL_TENANT_ID = "00000000-0000-0000-0000-00000000a295"


@dataclass(frozen=True)
class UpstreamIdentity:
    """What an app needs to validate the service's upstream tokens (EVENTHANDLER_BEARER_* settings)."""

    issuer: str
    jwks_uri: str
    principal_id: str

    def app_settings(self, audience: str) -> dict[str, str]:
        """The app settings for ``EVENTHANDLER_AUTH=bearer`` against this service."""
        return {
            "EVENTHANDLER_AUTH": "bearer",
            "EVENTHANDLER_BEARER_ISSUER": self.issuer,
            "EVENTHANDLER_BEARER_AUDIENCE": audience,
            "EVENTHANDLER_BEARER_JWKS_URI": self.jwks_uri,
            "EVENTHANDLER_BEARER_PRINCIPAL_ID": self.principal_id,
        }


class LocalIssuer:
    """Signs the service identity's tokens; the key pair is made on first use and lives for the process."""

    def __init__(self, principal_id: str) -> None:
        self.principal_id = principal_id
        self._lock = threading.Lock()
        self._key: rsa.RSAPrivateKey | None = None
        self._kid = uuid.uuid4().hex
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def identity(self, endpoint: str) -> UpstreamIdentity:
        base = endpoint.rstrip("/")
        return UpstreamIdentity(issuer=base + ISSUER_PATH, jwks_uri=base + JWKS_PATH, principal_id=self.principal_id)

    def discovery(self, endpoint: str) -> dict[str, Any]:
        identity = self.identity(endpoint)
        return {
            "issuer": identity.issuer,
            "jwks_uri": identity.jwks_uri,
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": [],
            "response_types_supported": [],
            "subject_types_supported": ["pairwise"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self._private_key().public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self._kid, "use": "sig", "alg": "RS256"}]}

    def token(self, endpoint: str, audience: str) -> str:
        """A token of the service's identity for ``audience``, cached like a managed-identity token."""
        key = (endpoint, audience)
        now = time.time()
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached[1] - _RENEW_BEFORE_SECONDS > now:
                return cached[0]
        issued = int(now)
        expires = issued + _TOKEN_LIFETIME_SECONDS
        claims = {
            "aud": audience,
            "iss": self.identity(endpoint).issuer,
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "sub": self.principal_id,
            "oid": self.principal_id,
            "tid": LOCAL_TENANT_ID,
            "azp": self.principal_id,
            "idtyp": "app",
            "ver": "2.0",
        }
        token = jwt.encode(claims, self._private_key(), algorithm="RS256", headers={"kid": self._kid})
        with self._lock:
            self._tokens[key] = (token, float(expires))
        return token

    def _private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._key
