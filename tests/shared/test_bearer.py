"""Bearer token validation: signature against the issuer's keys, issuer, audience, lifetime.

And the signing-key download, bounded on every side: one at a time, waiters that give up on their
own, failures remembered with back-off, known keys that never wait; against real sockets, a key
endpoint that trickles, sends too much, redirects or fails (tests.support.standins.KeyEndpoint).
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.bearer import (
    FIRST_RETRY_SECONDS,
    KEY_SET_MAX_AGE_SECONDS,
    MAX_RETRY_SECONDS,
    UNKNOWN_KID_REFRESH_SECONDS,
    BearerValidator,
    KeyDocumentClient,
    KeyDocumentError,
    bearer_token,
)
from shared.config import BearerSettings
from shared.errors import DependencyUnavailable, Unauthorized
from tests.support.clock import Clock
from tests.support.issuer import Issuer
from tests.support.standins import KeyBehaviour, KeyEndpoint
from tests.support.threads import run_concurrently


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


class GatedKeys:
    """A key endpoint held shut until `gate` opens, that counts its downloads and can fail."""

    def __init__(self, issuer: Issuer):
        self.issuer = issuer
        self.gate = threading.Event()
        self.downloads = 0
        self.failing = False

    def fetch(self, url: str, timeout: float) -> dict[str, Any]:
        self.downloads += 1
        self.gate.wait(10)
        if self.failing:
            raise OSError("connection refused")
        return self.issuer.jwks


def keyed_validator(keys: GatedKeys, **kwargs: Any) -> BearerValidator:
    settings = BearerSettings(keys.issuer.issuer, "api://negotiate", "https://login.example.test/keys")
    return BearerValidator(settings, fetch=keys.fetch, **kwargs)


def loaded_validator(issuer: Issuer) -> tuple[GatedKeys, Clock, BearerValidator]:
    """A validator on a test clock that has read the issuer's keys once (the gate open)."""
    keys = GatedKeys(issuer)
    keys.gate.set()
    clock = Clock()
    check = keyed_validator(keys, clock=clock)
    check.validate(issuer.token())
    return keys, clock, check


def outcomes(check: BearerValidator, token: str, callers: int, wait_seconds: float) -> list[str]:
    """What `callers` concurrent validations end with: 'valid' or the error's class name."""
    results: list[str] = []

    def call() -> None:
        try:
            check.validate(token, wait_seconds=wait_seconds)
            results.append("valid")
        except (Unauthorized, DependencyUnavailable) as error:
            results.append(type(error).__name__)

    run_concurrently(call, callers)
    return results


def test_concurrent_callers_at_cold_start_share_one_download(issuer: Issuer) -> None:
    keys = GatedKeys(issuer)
    check = keyed_validator(keys)
    threading.Timer(0.3, keys.gate.set).start()
    assert outcomes(check, issuer.token(), callers=8, wait_seconds=10) == ["valid"] * 8
    assert keys.downloads == 1


def test_waiters_give_up_at_their_own_deadline_and_the_download_goes_on(issuer: Issuer) -> None:
    keys = GatedKeys(issuer)
    check = keyed_validator(keys)
    assert outcomes(check, issuer.token(), callers=4, wait_seconds=0.1) == ["DependencyUnavailable"] * 4
    keys.gate.set()
    assert outcomes(check, issuer.token(), callers=2, wait_seconds=10) == ["valid"] * 2
    assert keys.downloads == 1  # the callers that gave up did not start downloads of their own


def test_a_failed_download_is_remembered_with_back_off(issuer: Issuer) -> None:
    keys = GatedKeys(issuer)
    keys.gate.set()
    keys.failing = True
    clock = Clock()
    check = keyed_validator(keys, clock=clock)
    with pytest.raises(DependencyUnavailable) as first:
        check.validate(issuer.token())
    assert "OSError" in first.value.detail
    for _ in range(20):  # within the back-off: answered at once, no download
        with pytest.raises(DependencyUnavailable) as refused:
            check.validate(issuer.token())
        assert int(refused.value.headers["Retry-After"]) >= 1
    assert keys.downloads == 1
    delay = FIRST_RETRY_SECONDS
    for attempt in range(2, 10):
        clock.advance(delay)
        with pytest.raises(DependencyUnavailable):
            check.validate(issuer.token())
        assert keys.downloads == attempt
        delay = min(MAX_RETRY_SECONDS, delay * 2)
    keys.failing = False
    clock.advance(MAX_RETRY_SECONDS)
    assert check.validate(issuer.token())["iss"] == issuer.issuer


def test_a_known_key_never_waits_for_the_re_read(issuer: Issuer) -> None:
    keys, clock, check = loaded_validator(issuer)
    keys.gate.clear()  # the next download hangs
    clock.advance(KEY_SET_MAX_AGE_SECONDS + 1)
    for _ in range(5):
        check.validate(issuer.token(), wait_seconds=0)  # no wait at all, and still valid
    assert keys.downloads == 2  # one re-read started in the background, not one per token
    keys.gate.set()


def test_a_key_withdrawn_by_the_issuer_stops_verifying_after_the_re_read(issuer: Issuer) -> None:
    keys, clock, check = loaded_validator(issuer)
    old_token = issuer.token()
    rotated = Issuer(issuer=issuer.issuer, kid="key-2")
    keys.issuer = rotated
    clock.advance(KEY_SET_MAX_AGE_SECONDS + 1)
    check.validate(old_token)  # still verifies while the re-read runs
    assert check.validate(rotated.token(), wait_seconds=10)["iss"] == issuer.issuer  # waits for that re-read
    assert keys.downloads == 2
    assert "does not publish" in rejection(check, old_token)


def test_unknown_key_ids_do_not_wait_during_the_back_off(issuer: Issuer) -> None:
    keys, clock, check = loaded_validator(issuer)
    keys.failing = True
    clock.advance(UNKNOWN_KID_REFRESH_SECONDS)
    stranger = Issuer(issuer=issuer.issuer, kid="key-unknown")
    assert "does not publish" in rejection(check, stranger.token())  # the re-read failed
    assert "does not publish" in rejection(check, stranger.token())  # back-off: no second download
    assert keys.downloads == 2
    assert check.validate(issuer.token())["iss"] == issuer.issuer  # the known keys are kept


# --- the real download, against hostile key endpoints on real sockets ---------------------------


def real_validator(issuer: Issuer, url: str, **kwargs: Any) -> BearerValidator:
    return BearerValidator(BearerSettings(issuer.issuer, "api://negotiate", url), **kwargs)


def test_the_download_reads_a_well_behaved_endpoint(issuer: Issuer, servers: ExitStack) -> None:
    endpoint = KeyEndpoint(issuer.jwks)
    check = real_validator(issuer, endpoint.serve(servers))
    assert check.validate(issuer.token())["iss"] == issuer.issuer
    assert endpoint.requests == ["/keys"]


def test_a_trickling_endpoint_is_cut_off_at_the_whole_download_deadline(issuer: Issuer, servers: ExitStack) -> None:
    endpoint = KeyEndpoint(issuer.jwks, KeyBehaviour.TRICKLE)
    endpoint.trickle_seconds = 0.05  # each byte well within any per-read timeout
    check = real_validator(issuer, endpoint.serve(servers), download_seconds=0.5)
    with pytest.raises(DependencyUnavailable) as refused:
        check.validate(issuer.token(), wait_seconds=10)
    assert "TimeoutError" in refused.value.detail
    assert endpoint.bytes_sent < len(str(issuer.jwks)) / 2


def test_a_huge_key_document_is_refused_at_the_size_cap(issuer: Issuer, servers: ExitStack) -> None:
    endpoint = KeyEndpoint(issuer.jwks, KeyBehaviour.HUGE)
    check = real_validator(issuer, endpoint.serve(servers), download_seconds=30)
    with pytest.raises(DependencyUnavailable) as refused:
        check.validate(issuer.token(), wait_seconds=30)
    assert "larger than 524288 bytes" in refused.value.detail  # stopped at the cap, long before the 300 MB


@pytest.mark.parametrize("same_host", [True, False])
def test_redirects_are_never_followed(issuer: Issuer, servers: ExitStack, same_host: bool) -> None:
    target = KeyEndpoint(issuer.jwks)
    target_url = target.serve(servers)
    redirecting = KeyEndpoint(issuer.jwks, KeyBehaviour.REDIRECT)
    url = redirecting.serve(servers)
    redirecting.redirect_to = url.replace("/keys", "/elsewhere") if same_host else target_url
    with pytest.raises(DependencyUnavailable) as refused:
        real_validator(issuer, url).validate(issuer.token())
    assert "redirect" in refused.value.detail
    assert redirecting.requests == ["/keys"]
    assert target.requests == []


def test_a_failing_endpoint_is_asked_once_per_back_off(issuer: Issuer, servers: ExitStack) -> None:
    endpoint = KeyEndpoint(issuer.jwks, KeyBehaviour.FAIL)
    check = real_validator(issuer, endpoint.serve(servers))
    assert outcomes(check, issuer.token(), callers=8, wait_seconds=10) == ["DependencyUnavailable"] * 8
    assert outcomes(check, issuer.token(), callers=8, wait_seconds=10) == ["DependencyUnavailable"] * 8
    assert endpoint.requests == ["/keys"]


def test_the_document_client_refuses_what_is_not_a_json_object(servers: ExitStack) -> None:
    endpoint = KeyEndpoint({"keys": []})
    url = endpoint.serve(servers)
    assert KeyDocumentClient()(url, 5) == {"keys": []}
    endpoint.jwks = ["not", "an", "object"]  # type: ignore[assignment]
    with pytest.raises(KeyDocumentError, match="not a JSON object"):
        KeyDocumentClient()(url, 5)
    with pytest.raises(KeyDocumentError, match="larger than"):
        KeyDocumentClient(max_bytes=4)(url, 5)
