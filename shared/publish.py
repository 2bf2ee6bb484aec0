"""The publish API: other backends send messages and manage groups, connections and permissions over HTTP.

Four routes, one style: a POST with a JSON body that names its target the same way everywhere
(`{"all": true}`, `{"group": g}`, `{"user": u}`, `{"connection": c}`), an optional `"hub"`, and for
the management routes an `"action"`:

    POST /api/messages     {"to": target, "data": ..., "dataType": "text"|"json"|"binary", "excluded": [...],
                            "filter": "..."}                                             -> 202
    POST /api/groups       {"action": "add"|"remove", "group": g, "user": u | "connection": c}
                           {"action": "removeFromAll", "user": u | "connection": c}      -> 204
    POST /api/connections  {"action": "close", "to": target, "reason": "...", "excluded": [...]} -> 204
                           {"action": "exists", "to": {"user"|"group"|"connection": ...}}        -> 200 {"exists"}
    POST /api/permissions  {"action": "grant"|"revoke"|"check", "permission": "sendToGroup"|"joinLeaveGroup",
                            "connection": c, "group": g}                                 -> 204, check: 200 {"granted"}

User and connection ids travel in the body, never in the path, so any id the service accepts works
unescaped. Callers are authenticated first (PUBLISH_AUTH; nothing about the body is revealed to a
stranger), then the body is validated completely before the service is called: every mistake is a
4xx naming the field. An end user's negotiate identity never suffices: bearer and appservice callers
must hold the app role PUBLISH_ROLE.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.bearer import BearerValidator, bearer_token
from shared.config import PublishAuth, PublishSettings
from shared.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from shared.service_client import MAX_MESSAGE_BYTES, DataType, Permission, ServiceClient
from shared.web import Request, Response, json_response

logger = logging.getLogger(__name__)

# The largest request body: a 1 MB message as JSON or text. Binary data travels as base64, so it
# may be at most 3/4 of this once decoded. FUNCTIONS_REQUEST_BODY_SIZE_LIMIT (infra) allows it.
MAX_BODY_BYTES = MAX_MESSAGE_BYTES
MAX_EXCLUDED = 1000
PRINCIPAL_HEADER = "x-ms-client-principal"
# Claim types App Service Authentication may list roles under (its `role_typ` names the one in use).
_PRINCIPAL_ROLE_TYPES = ("roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
TARGET_KINDS = ("all", "group", "user", "connection")


@dataclass(frozen=True, slots=True)
class Publisher:
    """Who called, for the log: an object id, an application id, or 'anonymous'."""

    name: str


class PublishAuthenticator(Protocol):
    """Proves the caller may publish, or raises Unauthorized (401) / Forbidden (403)."""

    def authenticate(self, request: Request) -> Publisher: ...


def _missing_role(role: str) -> Forbidden:
    return Forbidden(
        f"The caller is authenticated but does not hold the app role {role!r} (PUBLISH_ROLE).",
        code="missing_role",
    )


class BearerPublisher:
    """An Entra ID access token (issuer, audience, signature, expiry) whose `roles` claim holds `role`."""

    def __init__(self, validator: BearerValidator, role: str):
        self._validator = validator
        self._role = role

    def authenticate(self, request: Request) -> Publisher:
        claims = self._validator.validate(bearer_token(request.header("authorization")))
        roles = claims.get("roles")
        if not isinstance(roles, list) or self._role not in roles:
            raise _missing_role(self._role)
        for claim in ("oid", "azp", "appid", "sub"):
            value = claims.get(claim)
            if isinstance(value, str) and value:
                return Publisher(value[:128])
        return Publisher("unnamed")


class AppServicePublisher:
    """App Service Authentication's principal (X-MS-CLIENT-PRINCIPAL, base64 JSON) with `role` among its roles.

    Configuration allows this mode only when the platform reports authentication on, so the header
    cannot be forged: the platform strips client-sent copies.
    """

    def __init__(self, role: str):
        self._role = role

    def authenticate(self, request: Request) -> Publisher:
        raw = request.header(PRINCIPAL_HEADER)
        if not raw:
            raise Unauthorized(
                "Sign in first: App Service Authentication supplied no principal for this request.",
                code="not_signed_in",
            )
        try:
            principal = json.loads(base64.b64decode(raw, validate=True))
            claims = principal["claims"]
            role_type = principal.get("role_typ")
            pairs = [(claim["typ"], claim["val"]) for claim in claims]
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            raise Unauthorized("The App Service principal header is malformed.", code="invalid_principal") from None
        role_types = {role_type, *_PRINCIPAL_ROLE_TYPES} - {None}
        if not any(kind in role_types and value == self._role for kind, value in pairs):
            raise _missing_role(self._role)
        name = request.header("x-ms-client-principal-id") or request.header("x-ms-client-principal-name")
        return Publisher((name or "unnamed")[:128])


class OpenPublisher:
    """PUBLISH_AUTH=none, local development only: every caller may publish (listed as a shortcut)."""

    def authenticate(self, request: Request) -> Publisher:
        return Publisher("anonymous")


class ClosedPublisher:
    """No PUBLISH_* setting at all: the API is not set up, so it is closed to everyone, saying how to open it."""

    def authenticate(self, request: Request) -> Publisher:
        raise NotFound(
            "The publish API is not configured: set PUBLISH_BEARER_ISSUER and PUBLISH_BEARER_AUDIENCE "
            "(PUBLISH_AUTH=bearer, the default) or PUBLISH_AUTH=appservice.",
            code="publish_not_configured",
        )


def build_publish_authenticator(settings: PublishSettings) -> PublishAuthenticator:
    if settings.auth is PublishAuth.BEARER:
        if settings.bearer is None:
            return ClosedPublisher()
        return BearerPublisher(BearerValidator(settings.bearer), settings.role)
    if settings.auth is PublishAuth.APP_SERVICE:
        return AppServicePublisher(settings.role)
    return OpenPublisher()


# --- the body ------------------------------------------------------------------------------------


class _Body:
    """The request's JSON object, read field by field; each mistake is a 400 naming the field."""

    def __init__(self, request: Request, allowed: Sequence[str]):
        if request.content_type not in {"", "application/json"}:
            raise UnsupportedMediaType(
                "Send the body as application/json (with curl: --json '...', or -H 'Content-Type: application/json')."
            )
        if len(request.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        if not request.body.strip():
            raise BadRequest("The request body is empty; send a JSON object.", code="invalid_body")
        try:
            document: Any = json.loads(request.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
        if not isinstance(document, dict):
            raise BadRequest("The request body must be a JSON object.", code="invalid_body")
        unknown = [key for key in document if key not in allowed]
        if unknown:
            raise BadRequest(f"Unknown field {unknown[0][:64]!r}; expected {', '.join(allowed)}.", code="unknown_field")
        self._document: Mapping[str, Any] = document

    def has(self, name: str) -> bool:
        return name in self._document

    def raw(self, name: str) -> Any:
        return self._document.get(name)

    def text(self, name: str) -> str:
        value = self.optional_text(name)
        if value is None:
            raise BadRequest(f'"{name}" is required.', code=f"missing_{name}")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self._document.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise BadRequest(f'"{name}" must be a non-empty string.', code=f"invalid_{name}")
        return value

    def choice(self, name: str, allowed: Sequence[str]) -> str:
        value = self.text(name)
        if value not in allowed:
            raise BadRequest(
                f'"{name}" must be one of {", ".join(allowed)}, not {str(value)[:32]!r}.', code=f"invalid_{name}"
            )
        return value

    def strings(self, name: str) -> list[str] | None:
        value = self._document.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise BadRequest(f'"{name}" must be a list of connection ids.', code=f"invalid_{name}")
        if len(value) > MAX_EXCLUDED:
            raise BadRequest(f'"{name}" lists more than {MAX_EXCLUDED} connection ids.', code=f"invalid_{name}")
        return value


@dataclass(frozen=True, slots=True)
class Target:
    """Exactly one of: every connection, a group, a user, a connection."""

    kind: str
    name: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"all": True} if self.kind == "all" else {self.kind: self.name}


def parse_target(value: Any, field: str, kinds: Sequence[str] = TARGET_KINDS) -> Target:
    shape = " | ".join('{"all": true}' if kind == "all" else f'{{"{kind}": "..."}}' for kind in kinds)
    if not isinstance(value, dict) or len(value) != 1:
        raise BadRequest(f'"{field}" must be one of {shape}.', code="invalid_target")
    ((kind, name),) = value.items()
    if kind not in kinds:
        raise BadRequest(f'"{field}" names an unknown target {str(kind)[:32]!r}; use {shape}.', code="unknown_target")
    if kind == "all":
        if name is not True:
            raise BadRequest(f'"{field}": {{"all": true}} is the only way to address everyone.', code="invalid_target")
        return Target("all")
    if not isinstance(name, str) or not name:
        raise BadRequest(f'"{field}": the {kind} must be a non-empty string.', code="invalid_target")
    return Target(kind, name)


def _member(body: _Body) -> Target:
    """`"user"` or `"connection"`: exactly one."""
    present = [kind for kind in ("user", "connection") if body.has(kind)]
    if len(present) != 1:
        raise BadRequest('Name exactly one of "user" or "connection".', code="invalid_target")
    return Target(present[0], body.text(present[0]))


def _data(body: _Body) -> tuple[Any, DataType]:
    if body.raw("data") is None:
        raise BadRequest('"data" is required.', code="missing_data")
    data = body.raw("data")
    raw_type = body.raw("dataType")
    if raw_type is None:
        kind = DataType.TEXT if isinstance(data, str) else DataType.JSON
    else:
        allowed = [item.value for item in DataType]
        if raw_type not in allowed:
            raise BadRequest(
                f'"dataType" must be one of {", ".join(allowed)}, not {str(raw_type)[:32]!r}.', code="invalid_data_type"
            )
        kind = DataType(raw_type)
    if kind is DataType.BINARY:
        if not isinstance(data, str):
            raise BadRequest('"data" must be a base64 string when "dataType" is binary.', code="invalid_data")
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest('"data" is not valid base64.', code="invalid_base64") from None
    elif kind is DataType.TEXT and not isinstance(data, str):
        raise BadRequest('"data" must be a string when "dataType" is text.', code="invalid_data")
    if data in ("", b""):
        raise BadRequest('"data" is empty.', code="empty_data")
    return data, kind


# --- the routes ----------------------------------------------------------------------------------


class PublishApi:
    """The four routes; `clients(hub)` gives the server-side client of a served hub (NotFound otherwise)."""

    def __init__(self, *, authenticator: PublishAuthenticator, clients: Callable[[str | None], ServiceClient]):
        self._authenticator = authenticator
        self._clients = clients

    def _client(self, body: _Body) -> ServiceClient:
        return self._clients(body.optional_text("hub"))

    def messages(self, request: Request) -> Response:
        publisher = self._authenticator.authenticate(request)  # first: strangers learn nothing about bodies
        body = _Body(request, ("to", "data", "dataType", "excluded", "filter", "hub"))
        target = parse_target(body.raw("to"), "to")
        data, kind = _data(body)
        excluded = body.strings("excluded")
        odata_filter = body.optional_text("filter")
        if excluded and target.kind not in {"all", "group"}:
            raise BadRequest('"excluded" applies to {"all": true} and {"group": ...} only.', code="invalid_excluded")
        if odata_filter and target.kind == "connection":
            raise BadRequest('"filter" does not apply to one connection.', code="invalid_filter")
        client = self._client(body)
        if target.kind == "all":
            sent = client.send_to_all(data, data_type=kind, excluded=excluded, odata_filter=odata_filter)
        elif target.kind == "group":
            assert target.name is not None
            sent = client.send_to_group(target.name, data, data_type=kind, excluded=excluded, odata_filter=odata_filter)
        elif target.kind == "user":
            assert target.name is not None
            sent = client.send_to_user(target.name, data, data_type=kind, odata_filter=odata_filter)
        else:
            assert target.name is not None
            sent = client.send_to_connection(target.name, data, data_type=kind)
        self._log(publisher, f"sent {sent.size} bytes of {kind.value}", target, client.hub)
        return json_response(
            202, {"hub": client.hub, "to": target.describe(), "dataType": kind.value, "bytes": sent.size}
        )

    def groups(self, request: Request) -> Response:
        publisher = self._authenticator.authenticate(request)
        body = _Body(request, ("action", "group", "user", "connection", "hub"))
        action = body.choice("action", ("add", "remove", "removeFromAll"))
        member = _member(body)
        assert member.name is not None
        client = self._client(body)
        if action == "removeFromAll":
            if body.has("group"):
                raise BadRequest('"removeFromAll" removes from every group; leave out "group".', code="invalid_group")
            if member.kind == "user":
                client.remove_user_from_all_groups(member.name)
            else:
                client.remove_connection_from_all_groups(member.name)
            self._log(publisher, "removed from all groups", member, client.hub)
            return Response(204)
        group = body.text("group")
        operations = {
            ("add", "user"): client.add_user_to_group,
            ("remove", "user"): client.remove_user_from_group,
            ("add", "connection"): client.add_connection_to_group,
            ("remove", "connection"): client.remove_connection_from_group,
        }
        operations[(action, member.kind)](group, member.name)
        self._log(publisher, f"{action} group {group[:64]!r}", member, client.hub)
        return Response(204)

    def connections(self, request: Request) -> Response:
        publisher = self._authenticator.authenticate(request)
        body = _Body(request, ("action", "to", "reason", "excluded", "hub"))
        action = body.choice("action", ("close", "exists"))
        if action == "exists":
            target = parse_target(body.raw("to"), "to", ("group", "user", "connection"))
            if body.has("reason") or body.has("excluded"):
                raise BadRequest('"exists" takes only "to" (and "hub").', code="unknown_field")
            client = self._client(body)
            assert target.name is not None
            checks = {"group": client.group_exists, "user": client.user_exists, "connection": client.connection_exists}
            exists = checks[target.kind](target.name)
            return json_response(200, {"hub": client.hub, "to": target.describe(), "exists": exists})
        target = parse_target(body.raw("to"), "to")
        reason = body.optional_text("reason")
        excluded = body.strings("excluded")
        if excluded and target.kind == "connection":
            raise BadRequest('"excluded" does not apply to one connection.', code="invalid_excluded")
        client = self._client(body)
        if target.kind == "all":
            client.close_all_connections(reason=reason, excluded=excluded)
        elif target.kind == "group":
            assert target.name is not None
            client.close_group_connections(target.name, reason=reason, excluded=excluded)
        elif target.kind == "user":
            assert target.name is not None
            client.close_user_connections(target.name, reason=reason, excluded=excluded)
        else:
            assert target.name is not None
            client.close_connection(target.name, reason=reason)
        self._log(publisher, "closed connections", target, client.hub)
        return Response(204)

    def permissions(self, request: Request) -> Response:
        publisher = self._authenticator.authenticate(request)
        body = _Body(request, ("action", "permission", "connection", "group", "hub"))
        action = body.choice("action", ("grant", "revoke", "check"))
        permission = Permission(body.choice("permission", [item.value for item in Permission]))
        connection = body.text("connection")
        group = body.text("group")
        client = self._client(body)
        if action == "check":
            granted = client.has_permission(permission, connection, group)
            return json_response(200, {"hub": client.hub, "permission": permission.value, "granted": granted})
        if action == "grant":
            client.grant_permission(permission, connection, group)
        else:
            client.revoke_permission(permission, connection, group)
        what = f"{action} {permission.value} on group {group[:64]!r}"
        self._log(publisher, what, Target("connection", connection), client.hub)
        return Response(204)

    @staticmethod
    def _log(publisher: Publisher, what: str, target: Target, hub: str) -> None:
        """One line per accepted call: who, what, to whom; never the data."""
        shown = "everyone" if target.kind == "all" else f"{target.kind} {str(target.name)[:64]!r}"
        logger.info("Publish API: %s %s, %s, on hub %s", publisher.name, what, shown, hub)
