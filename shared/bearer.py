"""Validation of Entra ID (OpenID Connect) access tokens presented as `Authorization: Bearer`.

Used by negotiate (NEGOTIATE_AUTH=bearer) and by the event handler in entra mode
(EVENTHANDLER_AUTH=bearer, where the service calls with its managed identity's token). PyJWT does
the cryptography; this module decides which keys and claims count and turns every failure into an
error that says what was wrong without echoing the token.

The issuer's signing keys are a dependency that may be slow, hostile or down, and every request
needs them, so reading them is bounded on every side:

- one download at a time per validator, in a thread of its own: callers wait for it at most their
  own `wait_seconds` and then answer 503, while the download goes on for the next callers;
- the download (discovery and keys together) has a deadline for the whole, not per socket read,
  a size cap, sends `Accept-Encoding: identity` and follows no redirect;
- a failed download is remembered: no other is started before its back-off has passed (1 s,
  doubling to 60 s), and meanwhile callers get 503 at once instead of waiting again;
- a token whose key id is already known never waits: when the known keys are due for a re-read,
  the re-read runs in the background and the known key verifies the token meanwhile.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.config import BearerSettings
from shared.errors import DependencyUnavailable, Unauthorized

if TYPE_CHECKING:
    import jwt
    import requests

logger = logging.getLogger(__name__)

# Asymmetric algorithms only: a symmetric (HS*) or unsigned ("none") token must never pass.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
REQUIRED_CLAIMS = ("exp", "iss", "aud")
# How long an unknown key id waits before it may trigger another download of the key set, so that
# tokens with made-up key ids cannot turn the app into a load generator against the issuer.
UNKNOWN_KID_REFRESH_SECONDS = 60.0
# Known keys are re-read this often anyway, so that a key the issuer withdrew stops verifying.
KEY_SET_MAX_AGE_SECONDS = 3600.0
# The whole download (discovery document and key set) ends within this, however the server trickles.
DOWNLOAD_DEADLINE_SECONDS = 5.0
# How long a request waits for a download in flight before it answers 503.
KEY_WAIT_SECONDS = 5.0
# Entra ID's key set is about 10 KB; anything this large is not a key set.
MAX_DOCUMENT_BYTES = 512 * 1024
CONNECT_TIMEOUT_SECONDS = 3.0
# One socket read never blocks longer than this, so the deadline is checked at least this often.
READ_TIMEOUT_SECONDS = 1.0
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
_CHUNK_BYTES = 16 * 1024

FetchJson = Callable[[str, float], dict[str, Any]]


class KeyDocumentError(ValueError):
    """The key endpoint answered, but not with a document the app will read."""


class KeyDocumentClient:
    """GETs the small JSON documents of an issuer (discovery, key set) with `requests`, bounded.

    `timeout` is the time left for the whole document. Bytes are read one socket read at a time
    (each at most READ_TIMEOUT_SECONDS), so a server trickling a byte a second is cut off at the
    deadline; a body over `max_bytes` (declared or sent) is refused; a redirect is an error, never
    followed; a compressed body is refused (identity is asked for, and decompressing would let a
    small trickle keep the reader busy without producing bytes to count).
    """

    def __init__(self, *, max_bytes: int = MAX_DOCUMENT_BYTES):
        self._max_bytes = max_bytes
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    def _client(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                import requests

                self._session = requests.Session()
            return self._session

    def __call__(self, url: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        response = self._client().get(
            url,
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), min(READ_TIMEOUT_SECONDS, timeout)),
            allow_redirects=False,
            stream=True,
        )
        with response:
            if response.is_redirect or 300 <= response.status_code < 400:
                raise KeyDocumentError(f"redirected with HTTP {response.status_code} (redirects are not followed)")
            if response.status_code != 200:
                raise KeyDocumentError(f"HTTP {response.status_code}")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in {"", "identity"}:
                raise KeyDocumentError(f"compressed with {encoding[:20]} although identity was asked for")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise KeyDocumentError(f"larger than {self._max_bytes} bytes")
            body = bytearray()
            while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=False):
                body += chunk
                if len(body) > self._max_bytes:
                    raise KeyDocumentError(f"larger than {self._max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not complete within {timeout:g} s")
        try:
            document = json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise KeyDocumentError("not JSON") from None
        if not isinstance(document, dict):
            raise KeyDocumentError("not a JSON object")
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


def _describe(error: BaseException) -> str:
    """What went wrong with a download, for the log and the 503's detail (never a key or token)."""
    text = str(error).splitlines()[0][:160] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class BearerValidator:
    """Checks signature (against the issuer's published keys), issuer, audience and lifetime.

    `fetch(url, seconds_left)` reads one JSON document (tests pass a fake); `clock` times the key
    set's age and the back-off; `wait_seconds` is how long `validate` waits for a key download by
    default, `download_seconds` the deadline of the whole download.
    """

    def __init__(
        self,
        settings: BearerSettings,
        *,
        fetch: FetchJson | None = None,
        wait_seconds: float = KEY_WAIT_SECONDS,
        download_seconds: float = DOWNLOAD_DEADLINE_SECONDS,
        leeway_seconds: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._settings = settings
        self._fetch: FetchJson = fetch if fetch is not None else KeyDocumentClient()
        self._wait_seconds = wait_seconds
        self._download_seconds = download_seconds
        self._leeway = leeway_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._jwks_uri: str | None = settings.jwks_uri
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # when the keys in use were read
        self._download: threading.Event | None = None  # set when the download in flight ends
        self._failures = 0  # consecutive failed downloads
        self._retry_at = 0.0  # no download starts before this (back-off after a failure)
        self._last_failure: str | None = None

    @property
    def issuer(self) -> str:
        return self._settings.issuer

    def validate(self, token: str, *, wait_seconds: float | None = None) -> dict[str, Any]:
        """Return the token's claims, or raise Unauthorized / DependencyUnavailable.

        `wait_seconds` overrides how long this call may wait for the issuer's keys.
        """
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
        key = self._signing_key(kid, self._wait_seconds if wait_seconds is None else wait_seconds)
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

    # --- the keys ---------------------------------------------------------------------------

    def _signing_key(self, kid: str, wait_seconds: float) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            key = self._keys.get(kid)
            if key is not None:
                if self._fetched_at is not None and now - self._fetched_at > KEY_SET_MAX_AGE_SECONDS:
                    self._start_download(now)  # in the background: this token does not wait for it
                return key
            download = self._download or (self._start_download(now) if self._may_look_for_new_keys(now) else None)
            if download is None:
                raise self._no_key(now)
        if not download.wait(max(wait_seconds, 0.0)):
            raise DependencyUnavailable(
                "identity provider",
                f"the signing keys of {self.issuer} did not arrive within {wait_seconds:g} s",
                retry_after_seconds=max(1, math.ceil(self._download_seconds)),
            )
        with self._lock:
            key = self._keys.get(kid)
            if key is None:
                raise self._no_key(self._clock())
            return key

    def _may_look_for_new_keys(self, now: float) -> bool:
        """Whether an unknown key id may start a download (the lock is held)."""
        if now < self._retry_at:
            return False
        return self._fetched_at is None or now - self._fetched_at >= UNKNOWN_KID_REFRESH_SECONDS

    def _no_key(self, now: float) -> Unauthorized | DependencyUnavailable:
        if self._keys:
            return invalid_token("it was signed by a key the issuer does not publish")
        return DependencyUnavailable(
            "identity provider",
            f"cannot read the signing keys of {self.issuer}: {self._last_failure or 'not read yet'}",
            retry_after_seconds=max(1, math.ceil(self._retry_at - now)),
        )

    def _start_download(self, now: float) -> threading.Event | None:
        """The download in flight, starting one unless one runs or the back-off forbids it (lock held)."""
        if self._download is None and now >= self._retry_at:
            self._download = threading.Event()
            threading.Thread(target=self._run_download, name="signing-keys", daemon=True).start()
        return self._download

    def _run_download(self) -> None:
        keys: dict[str, jwt.PyJWK] | None = None
        failure: str | None = None
        try:
            keys = self._read_keys()
        except Exception as error:  # whatever the endpoint did, it is a failed download
            failure = _describe(error)
        with self._lock:
            now = self._clock()
            if keys is not None:
                self._keys, self._fetched_at = keys, now
                self._failures, self._retry_at, self._last_failure = 0, now, None
            else:
                self._failures += 1
                self._retry_at = now + min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (self._failures - 1))
                self._last_failure = failure
            done, self._download = self._download, None
            known = len(self._keys)
        if failure is not None:
            logger.warning(
                "Could not read the signing keys of %s (%s)%s",
                self.issuer,
                failure,
                f"; keeping the {known} known key(s)" if known else "",
            )
        if done is not None:
            done.set()

    def _read_keys(self) -> dict[str, jwt.PyJWK]:
        import jwt

        deadline = time.monotonic() + self._download_seconds
        if self._jwks_uri is None:
            discovery = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            uri = self._fetch(discovery, _left(deadline)).get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith("https://"):
                raise KeyDocumentError("the discovery document has no https jwks_uri")
            self._jwks_uri = uri
        key_set = jwt.PyJWKSet.from_dict(self._fetch(self._jwks_uri, _left(deadline)))
        return {key.key_id: key for key in key_set.keys if key.key_id}


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the download deadline has passed")
    return left


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
