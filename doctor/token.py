"""`token`: why the service would refuse a client access token, before a client tries.

A client URL (`wss://host/client/hubs/<hub>?access_token=...`) names the endpoint and hub the
client connects to, so the token is checked against them; a bare JWT is checked against the
configured endpoint and hub. The service answers 401 on the WebSocket handshake for a token that
is expired, not yet valid, meant for another audience (scheme, host, port or hub) or signed with
another key, and 404 for a path that is not a client path. Roles decide what a connection may do
with groups once it is open. The token itself is never printed, only a short fingerprint.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

from doctor.report import Check, fail, fingerprint, ok, skip, warn
from shared.config import MAX_GROUP_NAME_LENGTH
from shared.policy import JOIN_LEAVE_ROLE_PREFIX, SEND_ROLE_PREFIX

CLIENT_PATH = re.compile(r"/client/hubs/([^/]+)/?")
# How far in the future `iat` may lie before it counts as clock skew rather than rounding.
SKEW_TOLERANCE_SECONDS = 60
# Token validators (the service's included) commonly accept tokens this far past exp.
CLOCK_SKEW_ALLOWANCE_SECONDS = 300
_WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """Where a client URL points: the service endpoint (http/https, as in `aud`) and the hub."""

    endpoint: str
    hub: str

    @property
    def audience(self) -> str:
        return f"{self.endpoint}/client/hubs/{self.hub}"


@dataclass(frozen=True, slots=True)
class _Url:
    scheme: str
    host: str
    port: int | None
    path: str


def _split(url: str) -> _Url | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return _Url(scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme), parts.path)


def bare_token(text: str) -> str:
    """The JWT in `text`, also when pasted with the `Bearer ` of an Authorization header."""
    text = text.strip()
    scheme, _, rest = text.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else text


def is_client_url(text: str) -> bool:
    return text.strip().lower().startswith(tuple(f"{scheme}://" for scheme in _WEBSOCKET_SCHEMES))


def parse_client_url(url: str) -> tuple[ClientAddress | None, str | None, list[Check]]:
    """(where the URL points, its access_token, findings). A wrong path is what the service 404s."""
    findings: list[Check] = []
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None, None, [fail("url", "the URL cannot be parsed", "Pass the URL exactly as negotiate returned it.")]
    scheme = _WEBSOCKET_SCHEMES.get(parts.scheme.lower(), "")
    host = parts.hostname or ""
    query = parse_qs(parts.query)
    token = next(iter(query.get("access_token", [])), None)
    match = CLIENT_PATH.fullmatch(parts.path)
    hub = unquote(match.group(1)) if match else None
    if hub is None and parts.path.rstrip("/") == "/client":
        hub = next(iter(query.get("hub", [])), None)
    address = None
    if not host:
        findings.append(fail("url", "the URL has no host", "Pass the URL exactly as negotiate returned it."))
    elif hub is None:
        findings.append(
            fail(
                "url",
                f"the path {parts.path or '/'} is not a client path; the service answers 404 there",
                "Clients connect to <endpoint>/client/hubs/<hub>; use the url that negotiate returns, unchanged.",
            )
        )
    else:
        netloc = f"[{host}]" if ":" in host else host
        address = ClientAddress(f"{scheme}://{netloc}" + (f":{port}" if port else ""), hub)
        findings.append(ok("url", f"client URL for hub {hub} at {address.endpoint}"))
    if not token:
        findings.append(
            fail(
                "url",
                "the URL carries no access_token; the service answers 401",
                "Use the url that negotiate returns; a client that sends the token as 'Authorization: Bearer' "
                "should pass that token to this command instead.",
            )
        )
    return address, token, findings


def _list_claim(claims: dict[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


def _when(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # beyond the calendar: say what the token holds
        return f"{timestamp:.0f} (seconds since 1970, beyond any date)"


def _span(seconds: float) -> str:
    """A duration as people say it, in its two largest units: '2 h 5 min', '3 min 20 s', '45 s'."""
    rest = round(abs(seconds))
    units = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            units.append(f"{count} {unit}")
    return " ".join(units[:2]) or "0 s"


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None  # JSON allows NaN and Infinity, and those are no time
    return float(value)


def check_lifetime(claims: dict[str, Any], now: datetime) -> Check:
    """Expired, not yet valid, or issued by a clock that runs ahead; every time in UTC."""
    current = now.timestamp()
    stamp = f"UTC now {_when(current)}"
    expires = _number(claims, "exp")
    not_before = _number(claims, "nbf")
    issued = _number(claims, "iat")
    for name in ("exp", "nbf", "iat"):
        if name in claims and _number(claims, name) is None:
            return fail("lifetime", f"the {name} claim is not a number of seconds", "Issue tokens with the SDK.")
    if expires is not None and expires <= current:
        issued_text = f", issued {_when(issued)}" if issued is not None else ""
        grace = ""
        if current - expires < CLOCK_SKEW_ALLOWANCE_SECONDS:
            grace = " (within the usual 5 min clock-skew allowance the service may still accept it, not for long)"
        return fail(
            "lifetime",
            f"expired at {_when(expires)}, {_span(current - expires)} ago ({stamp}{issued_text}); "
            f"the service answers 401 on connect{grace}",
            "Negotiate again right before connecting and after every disconnect: the service checks the token only "
            "when a connection opens (TOKEN_LIFETIME_MINUTES sets its lifetime). If it cannot have expired yet, "
            "compare this machine's clock with the issuer's.",
        )
    if not_before is not None and not_before > current:
        return fail(
            "lifetime",
            f"not valid before {_when(not_before)}, {_span(not_before - current)} from now ({stamp}); "
            "the service answers 401 until then",
            "The clock of the machine that issued the token runs ahead: synchronize it (NTP).",
        )
    if issued is not None and issued > current + SKEW_TOLERANCE_SECONDS:
        return warn(
            "lifetime",
            f"issued at {_when(issued)}, {_span(issued - current)} in the future ({stamp}): "
            "the issuer's clock runs ahead of this machine's by about that much",
            "Synchronize the clocks (NTP); a larger skew makes fresh tokens fail as not yet valid.",
        )
    if expires is None:
        return fail(
            "lifetime",
            f"the token has no exp claim ({stamp}); the service refuses tokens without an expiry (401)",
            "Issue tokens with the SDK, which sets exp (negotiate uses TOKEN_LIFETIME_MINUTES).",
        )
    issued_text = f", issued {_when(issued)}" if issued is not None else ""
    return ok("lifetime", f"valid until {_when(expires)}, {_span(expires - current)} left ({stamp}{issued_text})")


def audience_differences(audience: str, expected: ClientAddress) -> list[str]:
    """Which parts of `aud` differ from `<endpoint>/client/hubs/<hub>`: scheme, host, port, hub."""
    actual = _split(audience)
    wanted = _split(expected.endpoint)
    if actual is None or wanted is None or not actual.host:
        return [f"{audience!r} is not a URL"]
    differences = []
    if actual.scheme != wanted.scheme:
        differences.append(f"scheme: token for {actual.scheme}, service at {wanted.scheme}")
    if actual.host != wanted.host:
        differences.append(f"host: token for {actual.host}, service at {wanted.host}")
    if actual.port != wanted.port:
        differences.append(f"port: token for {actual.port}, service at {wanted.port}")
    match = CLIENT_PATH.fullmatch(actual.path)
    if match is None:
        differences.append(f"path: {actual.path or '/'} is not /client/hubs/<hub>")
    elif unquote(match.group(1)).lower() != expected.hub.lower():
        differences.append(f"hub: token for {unquote(match.group(1))}, client connects to {expected.hub}")
    return differences


def check_audience(claims: dict[str, Any], expected: ClientAddress) -> Check:
    audiences = _list_claim(claims, "aud")
    if not audiences:
        return fail(
            "audience",
            f"the token has no aud claim; the service expects {expected.audience} and answers 401",
            "Issue client tokens with the SDK (negotiate), which sets aud.",
        )
    findings = [(audience, audience_differences(audience, expected)) for audience in audiences]
    if any(not differences for _, differences in findings):
        return ok("audience", f"aud matches {expected.audience}")
    audience, differences = findings[0]
    parts = {difference.split(":", 1)[0] for difference in differences}
    if parts <= {"hub"}:
        fix = (
            "Negotiate for the hub the client connects to: WEBPUBSUB_HUB must match the hub in the client URL "
            "and the hub configured on the service."
        )
    else:
        fix = (
            "Issue the token with the connection string (or endpoint) of the resource the client connects to, and "
            "give the port in one place only; a client pointed at a host that is not the resource gets 404."
        )
    return fail(
        "audience",
        f"aud {audience} does not match {expected.audience} ({'; '.join(differences)}); the service answers 401",
        fix,
    )


# The service's wildcard group roles (webpubsub.joinLeaveGroups.<pattern>, webpubsub.sendToGroups.<pattern>):
# `?` one character but `.`, `*` any run without `.`, `**` any run, `\` escapes the next character; at
# most this many `*` (those of `**` included), else the role grants nothing. The local service
# (devstack/webpubsub/permissions.py) implements the same grammar on its own; tests/support/roles.py
# holds the documented examples both are tested with.
MAX_PATTERN_STARS = 5


def group_pattern(pattern: str) -> re.Pattern[str] | None:
    """A group-name pattern as a regular expression, or None when it is malformed (it grants nothing)."""
    regex = ""
    stars = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            if index + 1 == len(pattern):
                return None
            regex += re.escape(pattern[index + 1])
            index += 2
            continue
        if pattern.startswith("**", index):
            regex += ".*"
            stars += 2
            index += 2
            continue
        stars += char == "*"
        regex += {"*": "[^.]*", "?": "[^.]"}.get(char, re.escape(char))
        index += 1
    if not pattern or stars > MAX_PATTERN_STARS:
        return None
    return re.compile(regex, re.DOTALL)


def permits(roles: Sequence[str], prefix: str, group: str) -> bool:
    """Whether `roles` allow the action of `prefix` (with its trailing dot) on `group`."""
    base = prefix.rstrip(".")  # webpubsub.joinLeaveGroup alone covers every group
    plural = base + "s."  # webpubsub.joinLeaveGroups.<pattern>
    for role in roles:
        if role in {base, prefix + group}:
            return True
        if role.startswith(plural):
            pattern = group_pattern(role[len(plural) :])
            if pattern is not None and pattern.fullmatch(group):
                return True
    return False


def group_name_problem(group: str) -> str | None:
    """Why the service refuses `group` as a group name (1 to 1024 characters, not only whitespace), if it does."""
    if not group or group.isspace():
        return "it is empty or only whitespace"
    if len(group) > MAX_GROUP_NAME_LENGTH:
        return f"it has {len(group)} characters, more than the service's {MAX_GROUP_NAME_LENGTH}"
    return None


def check_group(claims: dict[str, Any], group: str) -> Check:
    shown = group if len(group) <= 64 else group[:64] + "..."
    problem = group_name_problem(group)
    if problem is not None:
        return fail(
            f"group {shown!r}",
            f"not a group name the service accepts: {problem}; joining it or sending to it is refused whatever "
            "the roles",
            f"Group names are 1 to {MAX_GROUP_NAME_LENGTH} characters and not only whitespace.",
        )
    if not group.isprintable():
        return warn(
            f"group {shown!r}",
            "the name holds control characters: the service accepts it, but this app's negotiate refuses it "
            "(?group= and NEGOTIATE_GROUPS take printable names)",
            "Use printable characters only.",
        )
    roles = _list_claim(claims, "role")
    needed = ((JOIN_LEAVE_ROLE_PREFIX, "join or leave it"), (SEND_ROLE_PREFIX, "send to it"))
    missing = [(prefix + group, action) for prefix, action in needed if not permits(roles, prefix, group)]
    name = f"group {group}"
    if not missing:
        return ok(name, f"may join, leave and send to {group}")
    joined = group in _list_claim(claims, "webpubsub.group")
    note = " (the token joins it at connect)" if joined else ""
    return fail(
        name,
        f"may not {' or '.join(action for _, action in missing)}{note}: missing role "
        f"{' and '.join(role for role, _ in missing)}; the service acks those requests with Forbidden",
        f"Permit {group} in NEGOTIATE_GROUPS (negotiate grants both roles for every permitted group), "
        f"or ask negotiate for it with ?group={group}.",
    )


def check_signature(token: str, key: str | None, key_note: str) -> Check:
    if key is None:
        return skip("signature", f"not checked: {key_note}")
    where = f"{key_note} ({fingerprint(key)})"
    try:
        with warnings.catch_warnings():
            # A short key is the operator's choice to report, not a reason to stop.
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
    except jwt.InvalidSignatureError:
        return fail(
            "signature",
            f"the signature does not match the key from {where}; the service answers 401",
            "Sign with the access key of the resource the client connects to. After a key is regenerated, the "
            "app must pick up the new one (restart it, or wait KEYVAULT_REFRESH_SECONDS with Key Vault).",
        )
    except jwt.InvalidAlgorithmError:
        return fail(
            "signature",
            "the token is not signed with HS256; access-key tokens are",
            "Issue client tokens with the SDK (negotiate).",
        )
    except jwt.PyJWTError as error:
        return fail("signature", f"the token cannot be verified ({type(error).__name__})", "Issue tokens with the SDK.")
    return ok("signature", f"signed with the key from {where}")


def check_token(
    text: str,
    *,
    configured: ClientAddress | None,
    key: str | None,
    key_note: str,
    groups: Sequence[str] = (),
    now: datetime | None = None,
) -> list[Check]:
    """Every check of the `token` command for a client URL or a bare JWT."""
    now = now or datetime.now(UTC)
    findings: list[Check] = []
    expected = configured
    token: str | None = bare_token(text)
    if is_client_url(text):
        address, token, findings = parse_client_url(text)
        if address is not None:
            if configured is not None and audience_differences(address.audience, configured):
                findings.append(
                    warn(
                        "configured",
                        f"the URL points at {address.audience}, the app is configured for {configured.audience}",
                        "Expected when checking another environment's URL; otherwise negotiate and the client "
                        "disagree on the resource or hub.",
                    )
                )
            expected = address
    if not token:
        return findings
    try:
        header = jwt.get_unverified_header(token)
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        findings.append(
            fail(
                "decode",
                f"this is not a JWT ({fingerprint(token)})",
                "Pass the url from negotiate, or its access_token value, complete and unchanged.",
            )
        )
        return findings
    user = claims.get("sub")
    roles = _list_claim(claims, "role")
    joined = _list_claim(claims, "webpubsub.group")
    summary = (
        f"{header.get('alg')} token {fingerprint(token)} for "
        + (f"user {user}" if user else "no user id (sub)")
        + f"; roles: {', '.join(roles) or 'none'}; joins at connect: {', '.join(joined) or 'none'}"
    )
    if header.get("alg") == "HS256":
        findings.append(ok("decode", summary))
    else:
        findings.append(
            warn("decode", summary, "Tokens signed with an access key use HS256; issue them with the SDK (negotiate).")
        )
    findings.append(check_lifetime(claims, now))
    if expected is None:
        findings.append(
            skip("audience", "not checked: no endpoint is configured; pass the client URL, or --endpoint and --hub")
        )
    else:
        findings.append(check_audience(claims, expected))
    findings.extend(check_group(claims, group) for group in groups)
    findings.append(check_signature(token, key, key_note))
    return findings
