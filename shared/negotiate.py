"""Negotiate: who is calling, which groups they may use, and a client access URL for exactly that.

The response `{"url", "baseUrl", "token", "expiresOn"}` works unmodified as the URL source of the
official clients (they read `url`); `expiresOn` tells every client when to negotiate again.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.identity import CallerIdentifier
from shared.policy import GroupPolicy
from shared.tokens import TokenSource
from shared.web import Request, Response, json_response

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024


def requested_groups(request: Request) -> list[str] | None:
    """Groups the client asked for: repeated `?group=` and/or a JSON body `{"groups": [...]}`.

    None means the client did not ask, which grants every permitted group without joining any.
    """
    groups = request.query_values("group")
    asked = bool(groups)
    if request.method == "POST" and request.body.strip():
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
        if "groups" in document:
            listed = document["groups"]
            if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
                raise BadRequest('"groups" must be a list of group names.', code="invalid_groups")
            groups.extend(listed)
            asked = True
    return groups if asked else None


class Negotiator:
    """Turns an authenticated request into a client access URL with least-privilege roles."""

    def __init__(
        self,
        *,
        hub: str,
        identifier: CallerIdentifier,
        policy: GroupPolicy,
        tokens: TokenSource,
        lifetime_minutes: int,
    ):
        self._hub = hub
        self._identifier = identifier
        self._policy = policy
        self._tokens = tokens
        self._lifetime_minutes = lifetime_minutes

    def negotiate(self, request: Request) -> Response:
        caller = self._identifier.identify(request)  # first: nothing else is revealed to strangers
        grant = self._policy.grant(caller.user_id, requested_groups(request))
        access = self._tokens.client_access(
            hub=self._hub, user_id=caller.user_id, roles=grant.roles, groups=grant.join, minutes=self._lifetime_minutes
        )
        logger.info(
            "Negotiated a client access URL for user %s: %d group(s), joining %d, valid %d min",
            caller.user_id,
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
                "expiresOn": access.expires_on.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
