"""The data-plane REST API (the subset the Python service SDK calls), under ``/api``.

Requests are authorised like the service: an access-key JWT whose ``aud`` is the request URL
(what the SDK's ``JwtCredentialPolicy`` sends), or a bearer token from the local
managed-identity endpoint (what ``DefaultAzureCredential`` fetches in ``entra`` mode). Routing
works on the raw, still percent-encoded path so that group and user names containing ``/``
are addressed correctly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .client_endpoint import HUB_NAME
from .connections import ClientConnection, ConnectionManager
from .permissions import GroupAction, is_valid_group_name
from .protocol import Payload, UnsupportedContentType
from .settings import ServiceSettings
from .tokens import TokenError, issue_client_token, validate_rest_token

__all__ = ["RestApi"]

logger = logging.getLogger("devstack.webpubsub.rest")

MAX_BODY_BYTES = 1024 * 1024
_PERMISSIONS = {"sendtogroup": GroupAction.SEND, "joinleavegroup": GroupAction.JOIN_LEAVE}


class RestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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
            raise RestError(400, "InvalidGroupName", "Group names are 1 to 1024 characters, not only whitespace.")
        if not value:
            raise RestError(400, "InvalidName", f"The {key} must not be empty.")
        return value

    def excluded(self) -> set[str]:
        return set(self.request.query_params.getlist("excluded"))

    def reason(self) -> str:
        return self.request.query_params.get("reason") or "Closed by the application server."


_Handler = Callable[["RestApi", _Call], Awaitable[Response]]


class RestApi:
    """The Starlette endpoint (``handle``) for every ``/api/...`` route."""

    def __init__(self, settings: ServiceSettings, manager: ConnectionManager) -> None:
        self.settings = settings
        self.manager = manager

    async def handle(self, request: Request) -> Response:
        segments = _segments(request)
        if segments == ["health"]:
            return Response(status_code=200)
        try:
            handler, params = _route(request.method, segments)
            if not HUB_NAME.fullmatch(params.get("hub", "")):
                raise RestError(400, "InvalidHubName", "The hub name is invalid.")
            self._authorize(request)
            response = await handler(self, _Call(request, params))
        except RestError as error:
            if error.status >= 400:
                logger.info("%s %s -> %s %s", request.method, request.url.path, error.status, error.code)
            return JSONResponse(
                {"code": error.code, "message": error.message},
                status_code=error.status,
                headers={"x-ms-error-code": error.code},
            )
        logger.info("%s %s -> %s", request.method, request.url.path, response.status_code)
        return response

    def _authorize(self, request: Request) -> None:
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() != "bearer ":
            raise RestError(401, "Unauthorized", "A bearer token is required.")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}{raw_path.decode('latin-1')}"
        if query := request.scope.get("query_string", b""):
            url += "?" + query.decode("latin-1")
        try:
            validate_rest_token(authorization[7:].strip(), self.settings.access_key, request_url=url)
        except TokenError as error:
            raise RestError(401, "Unauthorized", f"Unauthorized: {error}.") from error

    # ----- handlers -------------------------------------------------------------------------

    async def send_to_all(self, call: _Call) -> Response:
        payload = await _payload(call)
        excluded = call.excluded()
        targets = [c for c in self.manager.in_hub(call.hub) if c.connection_id not in excluded]
        self.manager.send_from_server(targets, payload)
        return Response(status_code=202)

    async def send_to_group(self, call: _Call) -> Response:
        payload = await _payload(call)
        excluded = call.excluded()
        targets = [c for c in self.manager.in_group(call.hub, call.name("group")) if c.connection_id not in excluded]
        self.manager.send_from_server(targets, payload)
        return Response(status_code=202)

    async def send_to_user(self, call: _Call) -> Response:
        payload = await _payload(call)
        self.manager.send_from_server(self.manager.of_user(call.hub, call.name("user")), payload)
        return Response(status_code=202)

    async def send_to_connection(self, call: _Call) -> Response:
        payload = await _payload(call)
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is not None:
            self.manager.send_from_server([connection], payload)
        return Response(status_code=202)

    async def connection_exists(self, call: _Call) -> Response:
        return _exists(self.manager.get(call.hub, call.params["connection"]) is not None)

    async def group_exists(self, call: _Call) -> Response:
        return _exists(bool(self.manager.in_group(call.hub, call.name("group"))))

    async def user_exists(self, call: _Call) -> Response:
        return _exists(bool(self.manager.of_user(call.hub, call.name("user"))))

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
        excluded, reason = call.excluded(), call.reason()
        for connection in connections:
            if connection.connection_id not in excluded:
                self.manager.close(connection, reason)
        return Response(status_code=204)

    async def add_connection_to_group(self, call: _Call) -> Response:
        connection = self._connection(call)
        self.manager.join(connection, call.name("group"))
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

    async def list_group_connections(self, call: _Call) -> Response:
        members = self.manager.in_group(call.hub, call.name("group"))
        value = [{"connectionId": c.connection_id, "userId": c.user_id} for c in members]
        return JSONResponse({"value": value, "nextLink": None})

    async def add_user_to_group(self, call: _Call) -> Response:
        self.manager.add_user_to_group(call.hub, call.name("user"), call.name("group"))
        return Response(status_code=200)

    async def remove_user_from_group(self, call: _Call) -> Response:
        self.manager.remove_user_from_group(call.hub, call.name("user"), call.name("group"))
        return Response(status_code=204)

    async def remove_user_from_all_groups(self, call: _Call) -> Response:
        self.manager.remove_user_from_all_groups(call.hub, call.name("user"))
        return Response(status_code=204)

    async def grant_permission(self, call: _Call) -> Response:
        action, target = _permission(call)
        self._connection(call).permissions.grant(action, target)
        return Response(status_code=200)

    async def revoke_permission(self, call: _Call) -> Response:
        action, target = _permission(call)
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is not None:
            connection.permissions.revoke(action, target)
        return Response(status_code=204)

    async def check_permission(self, call: _Call) -> Response:
        action, target = _permission(call)
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is None:
            return _exists(False)
        if target is None:
            return _exists(connection.permissions.allows_all(action))
        return _exists(connection.permissions.allows(action, target))

    async def generate_token(self, call: _Call) -> Response:
        query = call.request.query_params
        client_type = query.get("clientType", "Default")
        if client_type.lower() != "default":
            raise RestError(
                400, "UnsupportedClientType", "The local service issues tokens for the Default client type only."
            )
        try:
            minutes = int(query.get("minutesToExpire", "60"))
        except ValueError:
            minutes = 0
        if minutes < 1:
            raise RestError(400, "InvalidMinutesToExpire", "minutesToExpire must be a positive integer.")
        groups = query.getlist("group")
        if not all(map(is_valid_group_name, groups)):
            raise RestError(400, "InvalidGroupName", "Group names are 1 to 1024 characters, not only whitespace.")
        endpoint = f"{call.request.url.scheme}://{call.request.headers.get('host', call.request.url.netloc)}"
        token = issue_client_token(
            self.settings.access_key,
            endpoint=endpoint,
            hub=call.params["hub"],
            user_id=query.get("userId") or None,
            roles=query.getlist("role"),
            groups=groups,
            minutes_to_expire=minutes,
        )
        return JSONResponse({"token": token})

    def _connection(self, call: _Call) -> ClientConnection:
        connection = self.manager.get(call.hub, call.params["connection"])
        if connection is None:
            raise RestError(404, "ConnectionNotFound", "The connection does not exist.")
        return connection


_ROUTES: list[tuple[str, tuple[str, ...], _Handler]] = [
    ("POST", ("hubs", "{hub}", ":send"), RestApi.send_to_all),
    ("POST", ("hubs", "{hub}", ":generateToken"), RestApi.generate_token),
    ("POST", ("hubs", "{hub}", ":closeConnections"), RestApi.close_all),
    ("POST", ("hubs", "{hub}", "groups", "{group}", ":send"), RestApi.send_to_group),
    ("POST", ("hubs", "{hub}", "groups", "{group}", ":closeConnections"), RestApi.close_group),
    ("HEAD", ("hubs", "{hub}", "groups", "{group}"), RestApi.group_exists),
    ("GET", ("hubs", "{hub}", "groups", "{group}", "connections"), RestApi.list_group_connections),
    ("PUT", ("hubs", "{hub}", "groups", "{group}", "connections", "{connection}"), RestApi.add_connection_to_group),
    (
        "DELETE",
        ("hubs", "{hub}", "groups", "{group}", "connections", "{connection}"),
        RestApi.remove_connection_from_group,
    ),
    ("POST", ("hubs", "{hub}", "users", "{user}", ":send"), RestApi.send_to_user),
    ("POST", ("hubs", "{hub}", "users", "{user}", ":closeConnections"), RestApi.close_user),
    ("HEAD", ("hubs", "{hub}", "users", "{user}"), RestApi.user_exists),
    ("PUT", ("hubs", "{hub}", "users", "{user}", "groups", "{group}"), RestApi.add_user_to_group),
    ("DELETE", ("hubs", "{hub}", "users", "{user}", "groups", "{group}"), RestApi.remove_user_from_group),
    ("DELETE", ("hubs", "{hub}", "users", "{user}", "groups"), RestApi.remove_user_from_all_groups),
    ("POST", ("hubs", "{hub}", "connections", "{connection}", ":send"), RestApi.send_to_connection),
    ("HEAD", ("hubs", "{hub}", "connections", "{connection}"), RestApi.connection_exists),
    ("DELETE", ("hubs", "{hub}", "connections", "{connection}"), RestApi.close_connection),
    ("DELETE", ("hubs", "{hub}", "connections", "{connection}", "groups"), RestApi.remove_connection_from_all_groups),
    ("PUT", ("hubs", "{hub}", "permissions", "{permission}", "connections", "{connection}"), RestApi.grant_permission),
    (
        "DELETE",
        ("hubs", "{hub}", "permissions", "{permission}", "connections", "{connection}"),
        RestApi.revoke_permission,
    ),
    ("HEAD", ("hubs", "{hub}", "permissions", "{permission}", "connections", "{connection}"), RestApi.check_permission),
]


def _segments(request: Request) -> list[str]:
    """Path segments after ``/api``, each percent-decoded on its own."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw_path.decode("latin-1").split("?", 1)[0].split("/")
    return [unquote(part) for part in parts[2:]]  # drop "" and "api"


def _route(method: str, segments: list[str]) -> tuple[_Handler, dict[str, str]]:
    path_matched = False
    for route_method, pattern, handler in _ROUTES:
        params = _match(pattern, segments)
        if params is None:
            continue
        path_matched = True
        if route_method == method:
            return handler, params
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


async def _payload(call: _Call) -> Payload:
    if call.request.query_params.get("filter"):
        raise RestError(400, "FilterNotSupported", "OData filters are not supported by the local service.")
    body = await call.request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RestError(413, "PayloadTooLarge", "Messages are limited to 1 MB.")
    try:
        return Payload.from_content_type(call.request.headers.get("content-type"), body)
    except UnsupportedContentType as error:
        raise RestError(
            415, "UnsupportedMediaType", f"{error}; use text/plain, application/json or application/octet-stream."
        ) from error
    except ValueError as error:
        raise RestError(400, "InvalidPayload", "The message body does not match its content type.") from error


def _permission(call: _Call) -> tuple[GroupAction, str | None]:
    action = _PERMISSIONS.get(call.params["permission"].lower())
    if action is None:
        raise RestError(400, "InvalidPermission", "Permission must be sendToGroup or joinLeaveGroup.")
    target = call.request.query_params.get("targetName") or None
    return action, target


def _exists(found: bool) -> Response:
    return Response(status_code=200 if found else 404)
