"""Bearer token validation: signature against the issuer's keys, issuer, audience, lifetime."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.bearer import UNKNOWN_KID_REFRESH_SECONDS, BearerValidator, bearer_token
from shared.config import BearerSettings
from shared.errors import DependencyUnavailable, Unauthorized
from tests.support.issuer import Issuer


def validator(issuer: Issuer, **kwargs: Any) -> BearerValidator:
    return BearerValidator(BearerSettings(issuer.issuer, "api://negotiate"), fetch=issuer.fetch, **kwargs)


def rejection(check: BearerValidator, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        check.validate(token)
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    return caught.value.message


def test_valid_token_returns_claims_after_discovery(issuer: Issuer) -> None:
    issuer.fetches.clear()
    claims = validator(issuer).validate(issuer.token(oid="u1"))
    assert claims["oid"] == "u1"
    assert issuer.fetches == [
        "https://login.example.test/tenant/v2.0/.well-known/openid-configuration",
        "https://login.example.test/keys",
    ]


def test_configured_jwks_uri_skips_discovery(issuer: Issuer) -> None:
    issuer.fetches.clear()
    settings = BearerSettings(issuer.issuer, "api://negotiate", "https://login.example.test/keys")
    BearerValidator(settings, fetch=issuer.fetch).validate(issuer.token())
    assert issuer.fetches == ["https://login.example.test/keys"]


def test_keys_are_cached_across_tokens(issuer: Issuer) -> None:
    check = validator(issuer)
    issuer.fetches.clear()
    for _ in range(20):
        check.validate(issuer.token())
    assert len(issuer.fetches) == 2


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda i: i.token(lifetime=-300), "expired"),
        (lambda i: i.token(audience="api://other"), "another audience"),
        (lambda i: i.token(iss="https://evil.example/"), "another issuer"),
        (lambda i: i.token(nbf=int(time.time()) + 3600), "not valid yet"),
        (lambda i: i.token()[:-6] + "AAAAAA", "signature does not verify"),
        (lambda i: "not-a-jwt", "not a well-formed JWT"),
    ],
)
def test_bad_tokens_are_rejected_with_the_reason(issuer: Issuer, make: Any, reason: str) -> None:
    assert reason in rejection(validator(issuer), make(issuer))


def test_symmetric_and_unsigned_tokens_never_pass(issuer: Issuer) -> None:
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "api://negotiate", "exp": now + 60}
    hs = jwt.encode(claims, "a-guessable-shared-secret-of-32-bytes", algorithm="HS256", headers={"kid": issuer.kid})
    assert "algorithm" in rejection(validator(issuer), hs)
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": issuer.kid})
    assert "algorithm" in rejection(validator(issuer), unsigned)


def test_token_from_another_key_is_rejected(issuer: Issuer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "api://negotiate", "exp": now + 60}
    same_kid = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": issuer.kid})
    assert "signature" in rejection(validator(issuer), same_kid)
    other_kid = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "unknown"})
    assert "does not publish" in rejection(validator(issuer), other_kid)


def test_unknown_key_ids_cannot_flood_the_issuer(issuer: Issuer) -> None:
    now_value = [1000.0]
    check = validator(issuer, clock=lambda: now_value[0])
    check.validate(issuer.token())
    issuer.fetches.clear()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": issuer.issuer, "aud": "api://negotiate", "exp": int(time.time()) + 60}
    for number in range(10):
        rejection(check, jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": f"k{number}"}))
    assert issuer.fetches == []
    now_value[0] += UNKNOWN_KID_REFRESH_SECONDS
    rejection(check, jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "later"}))
    assert len(issuer.fetches) == 1


def test_unreachable_issuer_is_a_dependency_failure(issuer: Issuer) -> None:
    def unreachable(url: str, timeout: float) -> dict[str, Any]:
        raise OSError("connection refused")

    check = BearerValidator(BearerSettings(issuer.issuer, "api://negotiate"), fetch=unreachable)
    with pytest.raises(DependencyUnavailable) as caught:
        check.validate(issuer.token())
    assert caught.value.headers["Retry-After"]


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_missing_or_non_bearer_authorization_is_unauthorized(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"
