"""Fixtures shared by all tests: settings builders, request builders, signing keys."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.config import Settings, load_settings, reset_settings
from shared.runtime import use_runtime
from tests.fakes import LOCAL_CONNECTION_STRING

LOCAL_ENVIRON = {
    "WEBPUBSUB_CREDENTIAL": "connectionstring",
    "WEBPUBSUB_CONNECTION_STRING": LOCAL_CONNECTION_STRING,
    "NEGOTIATE_AUTH": "anonymous",
}


def local_settings(**overrides: str) -> Settings:
    """Settings as local development has them (connection string, anonymous negotiate), with overrides."""
    return load_settings({**LOCAL_ENVIRON, **overrides})


def entra_settings(endpoint: str, **overrides: str) -> Settings:
    """Entra mode (no key) against `endpoint`, anonymous negotiate, unauthenticated events, with overrides."""
    environ = {
        "WEBPUBSUB_CREDENTIAL": "entra",
        "WEBPUBSUB_ENDPOINT": endpoint,
        "NEGOTIATE_AUTH": "anonymous",
        "EVENTHANDLER_AUTH": "none",
    }
    return load_settings({**environ, **overrides})


def http_request(
    method: str,
    route: str,
    *,
    query: list[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> func.HttpRequest:
    """A func.HttpRequest as the worker builds it: the URL keeps the query, params holds one value each."""
    query = query or []
    url = f"http://localhost:7071/api/{route}" + (f"?{urlencode(query)}" if query else "")
    return func.HttpRequest(
        method=method, url=url, headers=dict(headers or {}), params=dict(query), route_params={}, body=body
    )


@pytest.fixture(autouse=True)
def _isolated_runtime() -> Iterator[None]:
    """No test sees another's settings or runtime."""
    saved = dict(os.environ)
    reset_settings()
    use_runtime(None)
    yield
    os.environ.clear()
    os.environ.update(saved)
    reset_settings()
    use_runtime(None)


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

    def token(self, *, audience: str = "api://negotiate", lifetime: int = 600, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + lifetime, **claims}
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    """Stand-in servers and sockets (tests.standins) the test starts, all closed when it ends."""
    with ExitStack() as stack:
        yield stack
