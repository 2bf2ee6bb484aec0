"""A fake OpenID Connect issuer: an RSA key pair, its JWKS, and tokens it signs."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class Issuer:
    """A fake OpenID Connect issuer: an RSA key pair, its JWKS, and a token minting helper."""

    def __init__(self, issuer: str = "https://login.example.test/tenant/v2.0", kid: str = "key-1"):
        self.issuer = issuer
        self.kid = kid
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.fetches: list[str] = []

    @property
    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def fetch(self, url: str, timeout: float) -> dict[str, Any]:
        """Stands in for the HTTP GETs of discovery and JWKS."""
        self.fetches.append(url)
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": self.issuer, "jwks_uri": "https://login.example.test/keys"}
        if url == "https://login.example.test/keys":
            return self.jwks
        raise OSError(f"unexpected URL {url}")

    def user_token(self, **claims: Any) -> str:
        """A delegated (user) access token, as Entra ID issues it: with the consented scopes in `scp`."""
        return self.token(**{"scp": "user_impersonation", **claims})

    def token(self, *, audience: str = "api://negotiate", lifetime: int = 600, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + lifetime, **claims}
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})
