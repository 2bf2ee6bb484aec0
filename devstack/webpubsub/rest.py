"""The data-plane REST API (every operation of api-version 2024-12-01 but health's HEAD), under ``/api``.

Answers follow the real service as its recorded responses show them (the official Python SDK's
test recordings, see the README's table): status codes, ``x-ms-error-code`` with a JSON error body
``{"code", "message", "target", "details", "inner"}``, and ``api-supported-versions`` on every
hub operation. Requests are authorised like the service: an access-key JWT whose ``aud`` is the
request URL on the service's own endpoint (what the SDK's ``JwtCredentialPolicy`` sends), or a
bearer token from the local managed-identity endpoint whose identity holds a data-plane role
(Web PubSub Service Owner for everything, Web PubSub Service Reader for the read operations).
Routing works on the raw, still percent-encoded path so that names containing ``/`` are
addressed correctly.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .client_endpoint import HUB_NAME
from .connections import ClientConnection, ConnectionManager
from .odata import ConnectionFilter, FilterError, parse_filter
from .permissions import GroupAction, is_valid_group_name
from .protocol import Payload, UnsupportedContentType
from .settings import SERVICE_OWNER, SERVICE_READER, ServiceSettings
from .tokens import RestCaller, TokenError, TokenKeys, issue_client_token, validate_rest_token

__all__ = ["API_SUPPORTED_VERSIONS", "RestApi"]

logger = logging.getLogger("devstack.webpubsub.rest")

MAX_BODY_BYTES = 1024 * 1024
#: What the real service lists in ``api-supported-versions`` (2024-12-01 recordings).
API_SUPPORTED_VERSIONS = "2021-10-01, 2022-11-01, 2023-07-01, 2024-01-01, 2024-12-01"
_PERMISSIONS = {"sendtogroup": GroupAction.SEND, "joinleavegroup": GroupAction.JOIN_LEAVE}
#: ``:generateToken``'s client types and the client endpoint each token is good for.
_CLIENT_PATHS = {"default": "client", "mqtt": "clients/mqtt", "socketio": "clients/socketio"}
_MAX_PAGE_SIZE = 200
_GROUP_RULE = "Group names are 1 to 1024 characters, not only whitespace."
_JSON = "application/json; charset=utf-8"

Access = Literal["read", "write"]
#: Which data-plane role may do what: the Owner everything, the Reader the read operations.
_ROLE_ACCESS: dict[str, frozenset[Access]] = {
    SERVICE_OWNER: frozenset({"read", "write"}),
    SERVICE_READER: frozenset({"read"}),
}


class RestError(Exception):
    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target


def _not_existed(level: str, target: str, name: str) -> RestError:
    """The service's 404 for a missing connection, user or group (code names as recorded)."""
    return RestError(404, f"{level}.{target}.NotExisted", f"{target} `{name}` is not found.", target)


@dataclass(frozen=True)
class _Call:
    """One matched REST request: its path parameters and the request itself."""

    request: Request
    params: dict[str, str]

    @property
    def hub(self) -> str:
        return self.params["hub"].lower()

    def name(self, key: str) -> str:
        """A group or user path segment, validated."""
        value = self.params[key]
        if key == "group" and not is_valid_group_name(value):
            raise RestError(400, "InvalidGroupName", _GROUP_RULE, "group")
        if not value:
            raise RestError(400, "InvalidName", f"The {key} must not be empty.", key)
        return value

    def excluded(self) -> set[str]:
        return set(self.request.query_params.getlist("excluded"))

    def reason(self) -> str:
        return self.request.query_params.get("reason") or "Closed by the application server."

    def filter(self) -> ConnectionFilter | None:
        text = self.request.query_params.get("filter")
        return _parse_filter(text) if text else None


_Handler = Callable[["RestApi", _Call], Awaitable[Response]]


class RestApi:
    """The Starlette endpoint (``handle``) for every ``/api/...`` route."""

    def __init__(self, settings: ServiceSettings, manager: ConnectionManager, endpoint: Callable[[], str]) -> None:
        self.settings = settings
        self.manager = manager
        #: The service's configured endpoint: access-key tokens must name a URL on it.
        self.endpoint = endpoint
        self.keys = TokenKeys.of(settings)

    async def handle(self, request: Request) -> Response:
        segments = _segments(request)
        if segments == ["health"]:
            return Response(status_code=200)
        try:
            handler, access, params = _route(request.method, segments)
            if not HUB_NAME.fullmatch(params.get("hub", "")):
                raise RestError(400, "InvalidHubName", "The hub name is invalid.", "hub")
            self._authorize(request, access)
            response = await handler(self, _Call(request, params))
        except RestError as error:
            if error.status >= 400:
                logger.info("%s %s -> %s %s", request.method, request.url.path, error.status, error.code)
            return _error_response(error, head=request.method == "HEAD")
        response.headers["api-supported-versions"] = API_SUPPORTED_VERSIONS
        logger.info("%s %s -> %s", request.method, request.url.path, response.status_code)
        return response

    def _authorize(self, request: Request, access: Access) -> None:
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() != "bearer ":
            raise RestError(401, "Unauthorized", "A bearer token is required.")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = self.endpoint() + raw_path.decode("latin-1")
        if query := request.scope.get("query_string", b""):
            url += "?" + query.decode("latin-1")
        try:
            caller = validate_rest_token(authorization[7:].strip(), self.keys, request_url=url)
        except TokenError as error:
            raise RestError(401, "Unauthorized", f"Unauthorized: {error}.") from error
        self._check_role(caller, access)

    def _check_role(self, caller: RestCaller, access: Access) -> None:
        """Entra callers need a data-plane role assignment that covers the operation (access keys do not)."""
        if caller.kind == "access-key":
            return
        role = self.settings.role_assignments.get(caller.principal_id or "")
        if role is None or access not in _ROLE_ACCESS[role]:
            needed = SERVICE_OWNER if access == "write" else f"{SERVICE_READER} or {SERVICE_OWNER}"
            raise RestError(
                403,
                "Error.Forbidden",
                f"The identity {caller.principal_id} has no data-plane role for this operation; assign {needed}.",
            )

    # ----- sending ------------------------------------------------------------------------

    async def send_to_all(self, call: _Call) -> Response:
        return await self._send(call, self.manager.in_hub(call.hub))

    async def send_to_group(self, call: _Call) -> Response:
        group = call.name("group")
        return await self._send(call, self.manager.in_group(call.hub, group), group=group)

    async def send_to_user(self, call: _Call) -> Response:
        return await self._send(call, self.manager.of_user(call.hub, call.name("user")))

    async def send_to_connection(self, call: _Call) -> Response:
        payload = await _payload(call)
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is not None:  # 202 either way: sending is fire-and-forget (recorded)
            self.manager.send_from_server([connection], payload)
        return Response(status_code=202)

    async def _send(self, call: _Call, candidates: list[ClientConnection], group: str | None = None) -> Response:
        selection = call.filter()
        payload = await _payload(call)
        self.manager.send_from_server(_selected(candidates, call.excluded(), selection), payload, group=group)
        return Response(status_code=202)

    # ----- existence and listing ----------------------------------------------------------

    async def connection_exists(self, call: _Call) -> Response:
        connection_id = call.params["connection"]
        if self.manager.get(call.hub, connection_id) is None:
            raise _not_existed("Warning", "Connection", connection_id)
        return Response(status_code=200)

    async def group_exists(self, call: _Call) -> Response:
        group = call.name("group")
        if not self.manager.in_group(call.hub, group):
            raise _not_existed("Warning", "Group", group)
        return Response(status_code=200)

    async def user_exists(self, call: _Call) -> Response:
        user = call.name("user")
        if not self.manager.of_user(call.hub, user):
            raise _not_existed("Warning", "User", user)
        return Response(status_code=200)

    async def list_group_connections(self, call: _Call) -> Response:
        """One page of the group's connections; ``nextLink`` only when more remain (as recorded)."""
        group = call.name("group")
        query = call.request.query_params
        page_size = _bounded_int(query.get("maxpagesize"), "maxpagesize", 1, _MAX_PAGE_SIZE, _MAX_PAGE_SIZE)
        top = _bounded_int(query.get("top"), "top", 1, 2**31 - 1, None)
        after, returned = _decode_continuation(query.get("continuationToken"))
        members = sorted(self.manager.in_group(call.hub, group), key=lambda c: c.connection_id)
        remaining = [c for c in members if after is None or c.connection_id > after]
        assert page_size is not None
        limit = page_size if top is None else min(page_size, top - returned)
        page = remaining[: max(limit, 0)]
        body: dict[str, object] = {"value": [{"connectionId": c.connection_id, "userId": c.user_id} for c in page]}
        returned += len(page)
        if page and len(remaining) > len(page) and (top is None or returned < top):
            token = _encode_continuation(page[-1].connection_id, returned)
            path = f"/api/hubs/{quote(call.params['hub'], safe='')}/groups/{quote(group, safe='')}/connections"
            parameters = [("top", str(top))] if top is not None else []
            parameters += [("maxpagesize", str(page_size)), ("continuationToken", token)]
            body["nextLink"] = f"{self.endpoint()}{path}?" + "&".join(f"{name}={value}" for name, value in parameters)
        return JSONResponse(body)

    # ----- closing ------------------------------------------------------------------------

    async def close_connection(self, call: _Call) -> Response:
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is not None:
            self.manager.close(connection, call.reason())
        return Response(status_code=204)

    async def close_all(self, call: _Call) -> Response:
        return self._close(self.manager.in_hub(call.hub), call)

    async def close_group(self, call: _Call) -> Response:
        return self._close(self.manager.in_group(call.hub, call.name("group")), call)

    async def close_user(self, call: _Call) -> Response:
        return self._close(self.manager.of_user(call.hub, call.name("user")), call)

    def _close(self, connections: list[ClientConnection], call: _Call) -> Response:
        reason = call.reason()
        for connection in _selected(connections, call.excluded(), None):
            self.manager.close(connection, reason)
        return Response(status_code=204)

    # ----- groups -------------------------------------------------------------------------

    async def add_connection_to_group(self, call: _Call) -> Response:
        group = call.name("group")
        connection_id = call.params["connection"]
        connection = self.manager.get(call.hub, connection_id)
        if connection is None:
            raise _not_existed("Error", "Connection", connection_id)
        self.manager.join(connection, group)
        return Response(status_code=200)

    async def remove_connection_from_group(self, call: _Call) -> Response:
        group = call.name("group")
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is not None:
            self.manager.leave(connection, group)
        return Response(status_code=204)

    async def remove_connection_from_all_groups(self, call: _Call) -> Response:
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is not None:
            for group in list(connection.groups):
                self.manager.leave(connection, group)
        return Response(status_code=204)

    async def add_user_to_group(self, call: _Call) -> Response:
        """Adds the user's current connections only; a user without any is 404 (recorded)."""
        user = call.name("user")
        if not self.manager.add_user_to_group(call.hub, user, call.name("group")):
            raise _not_existed("Warning", "User", user)
        return Response(status_code=200)

    async def remove_user_from_group(self, call: _Call) -> Response:
        self.manager.remove_user_from_group(call.hub, call.name("user"), call.name("group"))
        return Response(status_code=204)

    async def remove_user_from_all_groups(self, call: _Call) -> Response:
        self.manager.remove_user_from_all_groups(call.hub, call.name("user"))
        return Response(status_code=204)

    async def add_to_groups(self, call: _Call) -> Response:
        """``:addToGroups``: every connection of the hub the filter selects joins every listed group."""
        groups, selection = await _groups_body(call, filter_required=True)
        for connection in _selected(self.manager.in_hub(call.hub), set(), selection):
            for group in groups:
                self.manager.join(connection, group)
        return Response(status_code=200)

    async def remove_from_groups(self, call: _Call) -> Response:
        """``:removeFromGroups``: the selected connections (all, without a filter) leave the listed groups."""
        groups, selection = await _groups_body(call, filter_required=False)
        for connection in _selected(self.manager.in_hub(call.hub), set(), selection):
            for group in groups:
                self.manager.leave(connection, group)
        return Response(status_code=200)

    # ----- permissions --------------------------------------------------------------------

    async def grant_permission(self, call: _Call) -> Response:
        action, target = _permission(call)
        self._permission_subject(call).permissions.grant(action, target)
        return Response(status_code=200)

    async def revoke_permission(self, call: _Call) -> Response:
        action, target = _permission(call)
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is not None:
            connection.permissions.revoke(action, target)
        return Response(status_code=204)

    async def check_permission(self, call: _Call) -> Response:
        action, target = _permission(call)
        connection = self._permission_subject(call)
        allowed = (
            connection.permissions.allows_all(action)
            if target is None
            else connection.permissions.allows(action, target)
        )
        if not allowed:
            raise RestError(404, "Info.Permission.NotGranted", "The connection does not have the permission.")
        return Response(status_code=200)

    def _permission_subject(self, call: _Call) -> ClientConnection:
        connection_id = call.params["connection"]
        connection = self.manager.get(call.hub, connection_id)
        if connection is None:
            raise _not_existed("Info", "Connection", connection_id)
        return connection

    # ----- tokens -------------------------------------------------------------------------

    async def generate_token(self, call: _Call) -> Response:
        query = call.request.query_params
        client_type = query.get("clientType", "Default")
        client_path = _CLIENT_PATHS.get(client_type.lower())
        if client_path is None:
            raise RestError(400, "InvalidClientType", "clientType must be Default, MQTT or SocketIO.", "clientType")
        minutes = _bounded_int(query.get("minutesToExpire"), "minutesToExpire", 1, 2**31 - 1, 60)
        assert minutes is not None
        groups = query.getlist("group")
        if not all(map(is_valid_group_name, groups)):
            raise RestError(400, "InvalidGroupName", _GROUP_RULE, "group")
        token = issue_client_token(
            self.keys.client,
            endpoint=self.endpoint(),
            hub=call.params["hub"],
            user_id=query.get("userId") or None,
            roles=query.getlist("role"),
            groups=groups,
            minutes_to_expire=minutes,
            client_path=client_path,
        )
        return JSONResponse({"token": token})


_R: Access = "read"
_W: Access = "write"
_ROUTES: list[tuple[str, tuple[str, ...], Access, _Handler]] = [
    ("POST", ("hubs", "{hub}", ":send"), _W, RestApi.send_to_all),
    ("POST", ("hubs", "{hub}", ":generateToken"), _W, RestApi.generate_token),
    ("POST", ("hubs", "{hub}", ":closeConnections"), _W, RestApi.close_all),
    ("POST", ("hubs", "{hub}", ":addToGroups"), _W, RestApi.add_to_groups),
    ("POST", ("hubs", "{hub}", ":removeFromGroups"), _W, RestApi.remove_from_groups),
    ("POST", ("hubs", "{hub}", "groups", "{group}", ":send"), _W, RestApi.send_to_group),
    ("POST", ("hubs", "{hub}", "groups", "{group}", ":closeConnections"), _W, RestApi.close_group),
    ("HEAD", ("hubs", "{hub}", "groups", "{group}"), _R, RestApi.group_exists),
    ("GET", ("hubs", "{hub}", "groups", "{group}", "connections"), _R, RestApi.list_group_connections),
    ("PUT", ("hubs", "{hub}", "groups", "{group}", "connections", "{connection}"), _W, RestApi.add_connection_to_group),
    (
        "DELETE",
        ("hubs", "{hub}", "groups", "{group}", "connections", "{connection}"),
        _W,
        RestApi.remove_connection_from_group,
    ),
    ("POST", ("hubs", "{hub}", "users", "{user}", ":send"), _W, RestApi.send_to_user),
    ("POST", ("hubs", "{hub}", "users", "{user}", ":closeConnections"), _W, RestApi.close_user),
    ("HEAD", ("hubs", "{hub}", "users", "{user}"), _R, RestApi.user_exists),
    ("PUT", ("hubs", "{hub}", "users", "{user}", "groups", "{group}"), _W, RestApi.add_user_to_group),
    ("DELETE", ("hubs", "{hub}", "users", "{user}", "groups", "{group}"), _W, RestApi.remove_user_from_group),
    ("DELETE", ("hubs", "{hub}", "users", "{user}", "groups"), _W, RestApi.remove_user_from_all_groups),
    ("POST", ("hubs", "{hub}", "connections", "{connection}", ":send"), _W, RestApi.send_to_connection),
    ("HEAD", ("hubs", "{hub}", "connections", "{connection}"), _R, RestApi.connection_exists),
    ("DELETE", ("hubs", "{hub}", "connections", "{connection}"), _W, RestApi.close_connection),
    (
        "DELETE",
        ("hubs", "{hub}", "connections", "{connection}", "groups"),
        _W,
        RestApi.remove_connection_from_all_groups,
    ),
    (
        "PUT",
        ("hubs", "{hub}", "permissions", "{permission}", "connections", "{connection}"),
        _W,
        RestApi.grant_permission,
    ),
    (
        "DELETE",
        ("hubs", "{hub}", "permissions", "{permission}", "connections", "{connection}"),
        _W,
        RestApi.revoke_permission,
    ),
    (
        "HEAD",
        ("hubs", "{hub}", "permissions", "{permission}", "connections", "{connection}"),
        _R,
        RestApi.check_permission,
    ),
]


def _error_response(error: RestError, *, head: bool) -> Response:
    """The service's error shape: JSON body (none for HEAD) with ``x-ms-error-code`` and the versions."""
    headers = {"x-ms-error-code": error.code, "api-supported-versions": API_SUPPORTED_VERSIONS}
    if head:
        return Response(status_code=error.status, headers=headers, media_type=_JSON)
    body = {"code": error.code, "message": error.message, "target": error.target, "details": None, "inner": None}
    return JSONResponse(body, status_code=error.status, headers=headers, media_type=_JSON)


def _segments(request: Request) -> list[str]:
    """Path segments after ``/api``, each percent-decoded on its own."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw_path.decode("latin-1").split("?", 1)[0].split("/")
    return [unquote(part) for part in parts[2:]]  # drop "" and "api"


def _route(method: str, segments: list[str]) -> tuple[_Handler, Access, dict[str, str]]:
    path_matched = False
    for route_method, pattern, access, handler in _ROUTES:
        params = _match(pattern, segments)
        if params is None:
            continue
        path_matched = True
        if route_method == method:
            return handler, access, params
    if path_matched:
        raise RestError(405, "MethodNotAllowed", f"{method} is not supported on this path.")
    raise RestError(404, "NotFound", "No such API in the local Web PubSub service.")


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for expected, actual in zip(pattern, segments, strict=True):
        if expected.startswith("{"):
            params[expected[1:-1]] = actual
        elif expected.lower() != actual.lower():
            return None
    return params


def _selected(
    connections: Iterable[ClientConnection], excluded: set[str], selection: ConnectionFilter | None
) -> list[ClientConnection]:
    return [
        connection
        for connection in connections
        if connection.connection_id not in excluded
        and (selection is None or selection.matches(connection.connection_id, connection.user_id, connection.groups))
    ]


def _parse_filter(text: str) -> ConnectionFilter:
    try:
        return parse_filter(text)
    except FilterError as error:
        raise RestError(400, "InvalidFilter", f"The filter is invalid: {error}.", "filter") from error


async def _payload(call: _Call) -> Payload:
    body = await call.request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RestError(413, "PayloadTooLarge", "Messages are limited to 1 MB.")
    unsupported = RestError(
        415, "UnsupportedMediaType", "Use text/plain, application/json or application/octet-stream."
    )
    try:
        payload = Payload.from_content_type(call.request.headers.get("content-type"), body)
    except UnsupportedContentType as error:
        raise unsupported from error
    except ValueError as error:
        raise RestError(400, "InvalidPayload", "The message body does not match its content type.") from error
    if payload.data_type == "protobuf":
        raise unsupported
    return payload


async def _groups_body(call: _Call, *, filter_required: bool) -> tuple[list[str], ConnectionFilter | None]:
    """The ``{"groups": [...], "filter": "..."}`` body of ``:addToGroups`` / ``:removeFromGroups``."""
    body = await call.request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RestError(413, "PayloadTooLarge", "The request body is limited to 1 MB.")
    try:
        document = json.loads(body or b"null")
    except ValueError as error:
        raise RestError(400, "InvalidRequestBody", "The body must be JSON.") from error
    groups = document.get("groups") if isinstance(document, dict) else None
    if not isinstance(groups, list) or not groups or not all(map(is_valid_group_name, groups)):
        raise RestError(400, "InvalidGroupName", f"'groups' must be a non-empty list. {_GROUP_RULE}", "groups")
    text = document.get("filter")
    if text is not None and not isinstance(text, str):
        raise RestError(400, "InvalidFilter", "'filter' must be a string.", "filter")
    if filter_required and not text:
        raise RestError(400, "InvalidFilter", "'filter' is required.", "filter")
    return groups, _parse_filter(text) if text else None


def _permission(call: _Call) -> tuple[GroupAction, str | None]:
    action = _PERMISSIONS.get(call.params["permission"].lower())
    if action is None:
        raise RestError(400, "InvalidPermission", "Permission must be sendToGroup or joinLeaveGroup.", "permission")
    target = call.request.query_params.get("targetName") or None
    if target is not None and not is_valid_group_name(target):
        raise RestError(400, "InvalidGroupName", _GROUP_RULE, "targetName")
    return action, target


def _bounded_int(raw: str | None, name: str, low: int, high: int, default: int | None) -> int | None:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise RestError(400, "InvalidQueryParameter", f"{name} must be an integer from {low} to {high}.", name)
    return value


def _encode_continuation(after: str, returned: int) -> str:
    """An opaque, URL-safe page token: the last connection id of the page and how many were returned."""
    raw = json.dumps({"after": after, "returned": returned}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_continuation(token: str | None) -> tuple[str | None, int]:
    if not token:
        return None, 0
    invalid = RestError(400, "InvalidContinuationToken", "The continuation token is not valid.", "continuationToken")
    try:
        document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error) as error:
        raise invalid from error
    after, returned = (document.get("after"), document.get("returned")) if isinstance(document, dict) else (0, 0)
    if not isinstance(after, str) or not isinstance(returned, int) or isinstance(returned, bool) or returned < 0:
        raise invalid
    return after, returned
