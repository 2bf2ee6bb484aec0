"""Negotiate: who is calling, which hub, groups and client protocol, and a client access URL for exactly that.

The response `{"url", "baseUrl", "token", "expiresOn"}` works unmodified as the URL source of the
official clients (they read `url`); `expiresOn` tells every client when to negotiate again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from shared.identity import CallerIdentifier
from shared.policy import GroupPolicy
from shared.protocol import ClientProtocol
from shared.tokens import TokenSource
from shared.web import Request, Response, json_response

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class NegotiateOptions:
    """What the client asked for; None where it did not ask (the defaults apply)."""

    groups: list[str] | None = None
    hub: str | None = None
    protocol: str | None = None


def _body(request: Request) -> Mapping[str, Any]:
    if request.method != "POST" or not request.body.strip():
        return {}
    if len(request.body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    if request.content_type not in {"", "application/json"}:
        raise UnsupportedMediaType("Send the body as application/json.", code="unsupported_media_type")
    try:
        document: Any = json.loads(request.body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting deeper than json allows
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(document, dict):
        raise BadRequest('The request body must be a JSON object like {"groups": ["chat"]}.', code="invalid_body")
    return document


def _one(request: Request, document: Mapping[str, Any], name: str, code: str) -> str | None:
    """A single-valued option from `?name=` and/or the body's `"name"`: at most one value, case aside."""
    values = request.query_values(name)
    if name in document:
        if not isinstance(document[name], str):
            raise BadRequest(f'"{name}" must be a string.', code=code)
        values.append(document[name])
    if len({value.lower() for value in values}) > 1:
        raise BadRequest(f"Give one {name}, not several.", code=code)
    return values[0] if values else None


def negotiate_options(request: Request) -> NegotiateOptions:
    """Repeated `?group=` and/or `{"groups": [...]}`; `?hub=` / `"hub"`; `?protocol=` / `"protocol"`.

    `groups` None means the client did not ask, which grants every permitted group without joining any.
    """
    document = _body(request)
    groups = request.query_values("group")
    asked = bool(groups)
    if "groups" in document:
        listed = document["groups"]
        if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
            raise BadRequest('"groups" must be a list of group names.', code="invalid_groups")
        groups.extend(listed)
        asked = True
    return NegotiateOptions(
        groups=groups if asked else None,
        hub=_one(request, document, "hub", "invalid_hub"),
        protocol=_one(request, document, "protocol", "invalid_protocol"),
    )


def client_protocol(name: str | None) -> ClientProtocol:
    if name is None:
        return ClientProtocol.DEFAULT
    try:
        return ClientProtocol(name.lower())
    except ValueError:
        allowed = ", ".join(protocol.value for protocol in ClientProtocol)
        raise BadRequest(f"protocol {name[:32]!r} is not one of {allowed}.", code="unknown_protocol") from None


def _utc_timestamp(moment: datetime) -> str:
    """`moment` as `YYYY-MM-DDTHH:MM:SSZ` (what strftime would write, for half the cost; whole seconds)."""
    return moment.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


class Negotiator:
    """Turns an authenticated request into a client access URL with least-privilege roles.

    `hubs` are the hubs it issues for (`default_hub` without `?hub=`); `policy` gives each hub's group policy.
    """

    def __init__(
        self,
        *,
        hubs: Sequence[str],
        default_hub: str,
        identifier: CallerIdentifier,
        policy: Callable[[str], GroupPolicy],
        tokens: TokenSource,
        lifetime_minutes: int,
    ):
        self._hubs = {hub.lower(): hub for hub in hubs}
        self._default_hub = default_hub
        self._identifier = identifier
        self._policy = policy
        self._tokens = tokens
        self._lifetime_minutes = lifetime_minutes

    def _hub(self, name: str | None) -> str:
        if name is None:
            return self._default_hub
        hub = self._hubs.get(name.lower())
        if hub is None:
            served = ", ".join(repr(hub) for hub in self._hubs.values())
            raise NotFound(f"This app serves hub {served}, not {name[:128]!r}.", code="unknown_hub")
        return hub

    def negotiate(self, request: Request) -> Response:
        caller = self._identifier.identify(request)  # first: nothing else is revealed to strangers
        options = negotiate_options(request)
        hub = self._hub(options.hub)
        protocol = client_protocol(options.protocol)
        grant = self._policy(hub).grant(caller.user_id, options.groups)
        access = self._tokens.client_access(
            hub=hub,
            user_id=caller.user_id,
            roles=grant.roles,
            groups=grant.join,
            minutes=self._lifetime_minutes,
            client_protocol=protocol,
        )
        logger.info(
            "Negotiated a %s client access URL for user %s on hub %s: %d group(s), joining %d, valid %d min",
            protocol.value,
            caller.user_id,
            hub,
            len(grant.groups),
            len(grant.join),
            self._lifetime_minutes,
        )
        return json_response(
            200,
            {
                "url": access.url,
                "baseUrl": access.base_url,
                "token": access.token,
                "expiresOn": _utc_timestamp(access.expires_on),
            },
        )
