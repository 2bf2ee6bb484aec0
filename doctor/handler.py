"""`handler`: what the Web PubSub service does against an event handler URL, and what it would log.

First the abuse-protection handshake the service runs before it sends any event (OPTIONS, then GET
when OPTIONS answers 404), reported with the service's own failure names. Then, as the service
sends them (CloudEvents binary mode, `ce-signature` over the connection id), a `connect` event, a
user `message` event and a `disconnected` event, checking what the service checks in the answers
(the causes of `HttpHandlerUnexpectedResponse`). Last, an unsigned and a wrongly signed `connect`,
which a handler must refuse with 401: anyone can reach a public URL and post those.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from doctor.net import DEFAULT_TIMEOUT_SECONDS, send
from doctor.report import Check, fail, fingerprint, ok, redact_url, skip, warn
from shared.probes import ProbeFailed
from shared.protocol import (
    BINARY,
    HEADER_AWPS_VERSION,
    HEADER_CONNECTION_ID,
    HEADER_EVENT_NAME,
    HEADER_HUB,
    HEADER_ID,
    HEADER_REQUEST_ORIGIN,
    HEADER_SIGNATURE,
    HEADER_SOURCE,
    HEADER_SPEC_VERSION,
    HEADER_TIME,
    HEADER_TYPE,
    HEADER_USER_ID,
    JSON,
    RESPONSE_ALLOWED_ORIGIN,
    TEXT,
    TYPE_CONNECT,
    TYPE_DISCONNECTED,
    USER_TYPE_PREFIX,
    signature_for,
)

# The names the service uses in its logs and live trace for these failures.
MISSING_ALLOWED_ORIGIN = "AbuseProtectionResponseMissingAllowedOrigin"
INVALID_STATUS_CODE = "AbuseProtectionResponseInvalidStatusCode"
HANDSHAKE_FAILED = "AbuseProtectionResponseFailed"
UNEXPECTED_RESPONSE = "HttpHandlerUnexpectedResponse"

CONNECT_REQUEST: dict[str, Any] = {
    "claims": {},
    "query": {},
    "headers": {},
    "subprotocols": [],
    "clientCertificates": [],
}
USER_EVENT_CONTENT_TYPES = frozenset({TEXT, JSON, BINARY})
TEST_USER_ID = "webpubsub-doctor"
TEST_MESSAGE = b"Test message from python -m doctor"

_FORGED_FIX = (
    "Check ce-signature (sha256= HMAC-SHA256 of ce-connectionId, keyed with the access key) on every event and "
    "answer 401 when it does not match; this app does that with EVENTHANDLER_AUTH=signature (bearer with entra)."
)

_NOT_SERVED_FIX = (
    "An event registered in the hub's event handler settings must be served at its URL: correct the URL template "
    "there ({event} and {hub} are filled in per event), or handle the event (this app serves every event at "
    "/api/eventhandler)."
)


@dataclass(frozen=True)
class HandlerTarget:
    """The handler URL (may hold {hub} and {event}) and what the service would send it."""

    url: str
    origin_host: str
    hub: str
    key: str | None = field(default=None, repr=False)
    key_note: str = ""
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    # Without a key (entra mode, EVENTHANDLER_AUTH=bearer): a token for the handler's audience, sent
    # as the service sends its managed identity's, and where it came from.
    bearer: str | None = field(default=None, repr=False)
    bearer_note: str = ""

    @property
    def authenticated(self) -> bool:
        return self.key is not None or self.bearer is not None

    @property
    def credential_note(self) -> str:
        return self.key_note if self.key is not None else self.bearer_note

    def url_for(self, event: str) -> str:
        """The URL template filled in as the service does; the handshake uses the event name `validate`."""
        return self.url.replace("{hub}", self.hub).replace("{event}", event)


def event_headers(
    target: HandlerTarget,
    *,
    event_type: str,
    event_name: str,
    connection_id: str,
    content_type: str,
    signature: str | None,
) -> dict[str, str]:
    """CloudEvents binary-mode headers exactly as the service sends them."""
    headers = {
        HEADER_SPEC_VERSION: "1.0",
        HEADER_TYPE: event_type,
        HEADER_SOURCE: f"/hubs/{target.hub}/client/{connection_id}",
        HEADER_ID: uuid.uuid4().hex,
        HEADER_TIME: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        HEADER_AWPS_VERSION: "1.0",
        HEADER_USER_ID: TEST_USER_ID,
        HEADER_CONNECTION_ID: connection_id,
        HEADER_HUB: target.hub,
        HEADER_EVENT_NAME: event_name,
        HEADER_REQUEST_ORIGIN: target.origin_host,
        "content-type": content_type,
    }
    if signature is not None:
        headers[HEADER_SIGNATURE] = signature
    return headers


def _signature(target: HandlerTarget, connection_id: str) -> str | None:
    return signature_for(target.key, connection_id) if target.key is not None else None


def _how(target: HandlerTarget) -> str:
    return "signed" if target.key is not None else "bearer-authenticated"


def _authorization(target: HandlerTarget) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.bearer}"} if target.key is None and target.bearer else {}


def _media_type(response: requests.Response) -> str:
    return (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def check_handshake(session: requests.Session, target: HandlerTarget) -> tuple[Check, bool]:
    """The abuse-protection validation; returns the finding and whether the handler was reachable."""
    url = target.url_for("validate")
    headers = {HEADER_REQUEST_ORIGIN: target.origin_host, HEADER_AWPS_VERSION: "1.0"}
    try:
        response = send(session, "OPTIONS", url, headers=headers, timeout=target.timeout)
        asked = "OPTIONS"
        if response.status_code == 404:
            response = send(session, "GET", url, headers=headers, timeout=target.timeout)
            asked = "OPTIONS answered 404, then GET"
    except ProbeFailed as error:
        return (
            fail(
                "handshake",
                f"the service cannot reach the handler: {error.log_detail}",
                error.fix + " The service must reach the URL from the internet (or through its private link).",
                code=HANDSHAKE_FAILED,
            ),
            False,
        )
    status = response.status_code
    if not 200 <= status < 300:
        return fail(
            "handshake", f"{asked} answered {status}", _handshake_status_fix(response), INVALID_STATUS_CODE
        ), True
    allowed = [value.strip() for value in (response.headers.get(RESPONSE_ALLOWED_ORIGIN) or "").split(",")]
    allowed = [value for value in allowed if value]
    if len(allowed) == 1 and (allowed[0] == "*" or allowed[0].lower() == target.origin_host.lower()):
        return ok("handshake", f"{asked} answered {status} with WebHook-Allowed-Origin: {allowed[0]}"), True
    seen = ", ".join(allowed) if allowed else "no WebHook-Allowed-Origin header"
    return (
        fail(
            "handshake",
            f"{asked} answered {status} with {seen}; the service needs exactly * or {target.origin_host}",
            "Answer the validation request (OPTIONS, with WebHook-Request-Origin) with the header "
            f"WebHook-Allowed-Origin: {target.origin_host} (or *), a single value.",
            MISSING_ALLOWED_ORIGIN,
        ),
        True,
    )


def _handshake_status_fix(response: requests.Response) -> str:
    status = response.status_code
    if status in {401, 403}:
        return (
            "Something in front of the handler wants credentials the service does not send. For a Functions route "
            "with a function key, add ?code=<key> to the event handler URL in the hub settings; this app's route "
            "is anonymous and checks events by signature instead (is App Service Authentication on for it?)."
        )
    if status == 404:
        return "Nothing serves this path: check the URL (this app: https://<app>.azurewebsites.net/api/eventhandler)."
    if status == 400:
        return (
            "The handler refused the origin: it must allow the service host sent as WebHook-Request-Origin "
            "(this app: WEBPUBSUB_ALLOWED_ORIGINS lists extra hosts)."
        )
    if status == 405:
        return "Answer OPTIONS on the event handler route (the service validates with OPTIONS before any event)."
    if 300 <= status < 400:
        location = redact_url(response.headers.get("Location") or "elsewhere")
        return f"The URL redirects to {location}: register the final https URL in the hub settings."
    return "Look at the handler's log for this request: it failed on the validation request."


def _send_event(
    session: requests.Session,
    target: HandlerTarget,
    event: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    authenticated: bool = True,
) -> requests.Response:
    """POST one event; an authenticated one carries the bearer token when there is no key to sign with."""
    sent = {**headers, **(_authorization(target) if authenticated else {})}
    return send(session, "POST", target.url_for(event), headers=sent, body=body, timeout=target.timeout)


def connect_response_problems(response: requests.Response) -> tuple[list[str], list[str]]:
    """(problems the service fails on, unknown fields it ignores) in a 200 answer to connect."""
    if not response.content.strip():
        return [], []
    try:
        document: Any = json.loads(response.content)
    except (UnicodeDecodeError, ValueError):
        return ["the body is not JSON"], []
    if document is None:
        return [], []
    if not isinstance(document, dict):
        return [f"the body is a JSON {type(document).__name__}, not an object"], []
    problems = []
    unknown = []
    for name, value in document.items():
        if value is None:
            continue
        if name in {"userId", "subprotocol"}:
            if not isinstance(value, str):
                problems.append(f'"{name}" must be a string')
            elif name == "subprotocol":
                problems.append(
                    f'"subprotocol" is {value!r} although the client offered none; '
                    "the service only accepts one of the offered subprotocols"
                )
        elif name in {"groups", "roles"}:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                problems.append(f'"{name}" must be a list of strings')
        else:
            unknown.append(name)
    return problems, unknown


def check_connect(session: requests.Session, target: HandlerTarget, connection_id: str) -> tuple[Check, bool]:
    """The signed connect event; returns the finding and whether the handler let the connection in."""
    headers = event_headers(
        target,
        event_type=TYPE_CONNECT,
        event_name="connect",
        connection_id=connection_id,
        content_type=JSON,
        signature=_signature(target, connection_id),
    )
    try:
        response = _send_event(session, target, "connect", headers, json.dumps(CONNECT_REQUEST).encode())
    except ProbeFailed as error:
        return fail(
            "connect", f"the connect event did not arrive: {error.log_detail}", error.fix, UNEXPECTED_RESPONSE
        ), False
    status = response.status_code
    if status == 204:
        return ok("connect", f"{_how(target)} connect event accepted (204)"), True
    if status == 200:
        return _connect_answer(response), True
    if status == 404:
        return fail(
            "connect",
            f"answered 404: nothing serves the connect event at {redact_url(target.url_for('connect'))}; the service "
            f"logs {UNEXPECTED_RESPONSE} and the client gets 404 on its WebSocket handshake",
            _NOT_SERVED_FIX,
            UNEXPECTED_RESPONSE,
        ), False
    if target.key is None and status in {401, 403}:
        return _bearer_refused(target), False
    if 400 <= status < 500:
        refused = warn(
            "connect",
            f"the handler refused the signed test connection with {status}; a client would get {status} on its "
            "WebSocket handshake",
            "Expected if the handler needs claims or a query the test does not send. Otherwise the handler checks "
            "signatures with another key than the service's: compare the keys.",
        )
        return refused, False
    failed = fail(
        "connect",
        f"answered {status}; the service logs {UNEXPECTED_RESPONSE} and the client's connection fails",
        "Look at the handler's log for this request; connect must answer 204, 200 with a JSON object, "
        "or 401/403 to refuse a client.",
        UNEXPECTED_RESPONSE,
    )
    return failed, False


def _connect_answer(response: requests.Response) -> Check:
    """A 200 answer to connect: the body must be empty or the JSON object the service expects."""
    problems, unknown = connect_response_problems(response)
    if problems:
        return fail(
            "connect",
            f"answered 200 but {'; '.join(problems)}; the client's connection fails",
            'Answer 204, or 200 with a JSON object of "userId" (string), "groups" and "roles" (lists of '
            'strings) and "subprotocol" (one the client offered).',
            UNEXPECTED_RESPONSE,
        )
    if response.content.strip() and _media_type(response) != JSON:
        return warn(
            "connect",
            f"answered 200 with a JSON body labelled {_media_type(response) or 'without a Content-Type'}",
            "Send the body as application/json.",
        )
    if unknown:
        return warn(
            "connect",
            f"answered 200; the service ignores the field(s) {', '.join(sorted(unknown))}",
            "Return only userId, groups, roles and subprotocol.",
        )
    return ok("connect", "connect event accepted (200)")


def check_user_event(
    session: requests.Session, target: HandlerTarget, connection_id: str, *, connected: bool = True
) -> Check:
    """The signed message event; `connected` says whether the handler let the test connection in."""
    headers = event_headers(
        target,
        event_type=USER_TYPE_PREFIX + "message",
        event_name="message",
        connection_id=connection_id,
        content_type=TEXT,
        signature=_signature(target, connection_id),
    )
    try:
        response = _send_event(session, target, "message", headers, TEST_MESSAGE)
    except ProbeFailed as error:
        return fail(
            "user event", f"the message event did not arrive: {error.log_detail}", error.fix, UNEXPECTED_RESPONSE
        )
    status = response.status_code
    if 200 <= status < 300:
        media_type = _media_type(response)
        if response.content and media_type not in USER_EVENT_CONTENT_TYPES:
            return fail(
                "user event",
                f"answered {status} with a body of Content-Type {media_type or '(none)'}; the service cannot "
                "forward it and logs " + UNEXPECTED_RESPONSE,
                "Label a reply text/plain, application/json or application/octet-stream, or answer 204.",
                UNEXPECTED_RESPONSE,
            )
        shown = f" ({media_type})" if response.content else ""
        return ok("user event", f"{_how(target)} message event accepted ({status}{shown})")
    if status == 404:
        return fail(
            "user event",
            f"answered 404: nothing serves the message event at {redact_url(target.url_for('message'))}; the "
            f"service logs {UNEXPECTED_RESPONSE}",
            _NOT_SERVED_FIX,
            UNEXPECTED_RESPONSE,
        )
    if status == 401 and not connected:
        return fail(
            "user event",
            f"answered 401 like the connect event: the handler refuses every event signed with the key from "
            f"{target.credential_note}" + (f" ({fingerprint(target.key)})" if target.key else ""),
            "The handler checks ce-signature with another access key than this one: compare them. `config` "
            "(service key) shows whether the service accepts this key; after a key is regenerated, the handler "
            "must be given the new one.",
        )
    if 400 <= status < 500:
        return fail(
            "user event",
            f"answered {status}; the service closes the sending client's connection when a user event fails",
            "Answer 2xx to user events you handle. A 401 here with a 2xx on connect means the handler treats "
            "user events differently: check its signature code for them.",
        )
    return fail(
        "user event",
        f"answered {status}; the service logs {UNEXPECTED_RESPONSE} and closes the client's connection",
        "Look at the handler's log for this request.",
        UNEXPECTED_RESPONSE,
    )


def check_disconnected(session: requests.Session, target: HandlerTarget, connection_id: str) -> Check:
    headers = event_headers(
        target,
        event_type=TYPE_DISCONNECTED,
        event_name="disconnected",
        connection_id=connection_id,
        content_type=JSON,
        signature=_signature(target, connection_id),
    )
    try:
        response = _send_event(session, target, "disconnected", headers, b'{"reason":null}')
    except ProbeFailed as error:
        return warn("disconnected", f"the disconnected event did not arrive: {error.log_detail}", error.fix)
    if 200 <= response.status_code < 300:
        return ok("disconnected", f"{_how(target)} disconnected event accepted ({response.status_code})")
    return warn(
        "disconnected",
        f"answered {response.status_code}; the service only logs that, but the handler misses disconnects",
        "Answer 2xx to connected and disconnected events.",
    )


def check_refused(session: requests.Session, target: HandlerTarget, *, forged: bool) -> Check:
    """An unsigned, or wrongly signed, connect must get 401."""
    name = "forged signature" if forged else "unsigned event"
    what = "a connect event signed with a wrong key" if forged else "an unsigned connect event"
    connection_id = uuid.uuid4().hex
    signature = signature_for(secrets.token_urlsafe(32), connection_id) if forged else None
    headers = event_headers(
        target,
        event_type=TYPE_CONNECT,
        event_name="connect",
        connection_id=connection_id,
        content_type=JSON,
        signature=signature,
    )
    try:
        response = _send_event(
            session, target, "connect", headers, json.dumps(CONNECT_REQUEST).encode(), authenticated=False
        )
    except ProbeFailed as error:
        return fail(name, f"{what} did not arrive: {error.log_detail}", error.fix)
    status = response.status_code
    if status == 401:
        return ok(name, f"{what} was refused with 401")
    if 400 <= status < 500:
        return warn(name, f"{what} was refused with {status}", "Refuse it with 401, which is what it is.")
    if 200 <= status < 300:
        return fail(
            name,
            f"{what} was accepted ({status}): the handler accepts forged events, so anyone who can reach the URL "
            "can connect as any user and act as any connection",
            _FORGED_FIX,
        )
    return fail(name, f"{what} got {status} instead of 401", _FORGED_FIX)


def _bearer_refused(target: HandlerTarget) -> Check:
    """The handler refused a real token for its audience: right if only the service's identity may pass."""
    return warn(
        "connect",
        f"the handler refused a valid token for its audience from {target.bearer_note}: expected when "
        "EVENTHANDLER_BEARER_PRINCIPAL_ID admits only the Web PubSub resource's identity (this one is not it), so "
        "the events themselves could not be tried",
        "If this identity should pass, check EVENTHANDLER_BEARER_AUDIENCE and EVENTHANDLER_BEARER_ISSUER against the "
        "token; otherwise nothing to do. `hubs` checks that the service sends its token for that audience.",
    )


def check_handler(target: HandlerTarget, session: requests.Session | None = None) -> list[Check]:
    """Every check of the `handler` command, in the order the service would run into them."""
    scheme = urlsplit(target.url).scheme.lower()
    if scheme not in {"http", "https"}:
        return [fail("url", f"{redact_url(target.url)} is not an http(s) URL", "Pass the event handler URL.")]
    own_session = session is None
    session = session or requests.Session()
    try:
        handshake, reachable = check_handshake(session, target)
        findings = [handshake]
        if not reachable:
            findings.append(skip("events", "not sent: the handler cannot be reached"))
            return findings
        if not target.authenticated:
            findings.append(skip("signed events", f"not sent: {target.credential_note}"))
        else:
            connection_id = uuid.uuid4().hex
            connect, connected = check_connect(session, target, connection_id)
            findings.append(connect)
            if target.key is None and not connected:  # the token was refused: every other event would be too
                findings.append(check_refused(session, target, forged=False))
                return findings
            findings.append(check_user_event(session, target, connection_id, connected=connected))
            if connected:  # the service sends disconnected only for connections it let in
                findings.append(check_disconnected(session, target, connection_id))
        findings.append(check_refused(session, target, forged=False))
        findings.append(check_refused(session, target, forged=True))
        return findings
    finally:
        if own_session:
            session.close()
