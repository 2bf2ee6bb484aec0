"""The server-side client: how app code talks back to clients through the service's REST API.

    from shared.service_client import get_service_client

    service = get_service_client()              # the default hub; get_service_client("notifications")
    service.send_to_group("chat", {"text": "maintenance at noon"}, excluded=[connection_id])
    service.add_user_to_group("moderators", "alice")
    service.close_user_connections("mallory", reason="banned")

One `ServiceClient` per hub, on the SDK client the token source already built for that hub: the same
credential (the connection string's key, the cached Key Vault key with its rotation, or the managed
identity), the same connection pool, the same bounded timeouts and retries. Nothing here holds a key.

Every SDK failure is mapped here, once, to the app's errors, so the routes and handlers built on it
answer consistently: a missing connection, user or group is `NotFound` (404); input the service
refuses is `BadRequest` (400); the service refusing the app's credential (401, 403) is
`DependencyUnavailable` naming the cause (a key that does not match, or the identity lacking the Web
PubSub Service Owner role); timeouts, connection failures and 5xx are `DependencyUnavailable` (503
with Retry-After). Messages never hold keys or tokens.

`AsyncServiceClient` offers the same operations to `async def` code. It runs the sync client in the
default thread pool instead of keeping a second, `.aio` SDK client, which would need an async
credential beside the app's one and a connection pool per event loop; the loop is never blocked.
The price is throughput under fan-out: `make bench`'s talkback figure measures 0.6x to 0.9x the
`.aio` client's sends/s with 32 in flight, the sync pipeline's CPU per call being the limit
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from shared.errors import BadRequest, DependencyUnavailable, NotFound, PayloadTooLarge
from shared.policy import validate_group_name
from shared.tokens import describe_azure_error

if TYPE_CHECKING:
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

    from shared.tokens import TokenSource

logger = logging.getLogger(__name__)

_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")

# The service's limit for one message sent through the REST API (1 MB); larger ones are refused here
# with 413 instead of by the service.
MAX_MESSAGE_BYTES = 1024 * 1024
# Ids travel in URL paths; the service refuses longer ones anyway.
MAX_ID_LENGTH = 1024
MAX_REASON_LENGTH = 512
MAX_FILTER_LENGTH = 4096
# list_connections: the service's largest page ("between 1 and 200", the REST API's maxpagesize).
MAX_PAGE_SIZE = 200
SERVICE_OWNER_ROLE = "Web PubSub Service Owner"


class DataType(enum.StrEnum):
    """How a message's data travels, and what the client receives (`dataType` in the client protocols)."""

    TEXT = "text"
    JSON = "json"
    BINARY = "binary"


_CONTENT_TYPES = {
    DataType.TEXT: "text/plain",
    DataType.JSON: "application/json",
    DataType.BINARY: "application/octet-stream",
}


class Permission(enum.StrEnum):
    """The permissions the service grants per connection and group."""

    SEND_TO_GROUP = "sendToGroup"
    JOIN_LEAVE_GROUP = "joinLeaveGroup"


@dataclass(frozen=True, slots=True)
class Message:
    """A message ready to send: its data in the SDK's form and its content type."""

    body: Any
    data_type: DataType
    size: int


@dataclass(frozen=True, slots=True)
class GroupMember:
    connection_id: str
    user_id: str | None


def message(data: str | bytes | Any, data_type: DataType | str | None = None) -> Message:
    """Check and encode `data`: str is text, bytes binary, anything else JSON, unless `data_type` says.

    Raises BadRequest for data that does not fit its type and PayloadTooLarge beyond MAX_MESSAGE_BYTES.
    """
    kind = _data_type(data, data_type)
    if kind is DataType.BINARY:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BadRequest("Binary data must be bytes.", code="invalid_data")
        body: Any = bytes(data)
        size = len(body)
    elif kind is DataType.TEXT:
        if not isinstance(data, str):
            raise BadRequest("Text data must be a string.", code="invalid_data")
        body = data.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        size = len(body.encode("utf-8"))
    else:
        try:
            size = len(json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8", "surrogatepass"))
        except (TypeError, ValueError, RecursionError):
            raise BadRequest("JSON data must be a JSON value (no NaN or infinity).", code="invalid_data") from None
        body = data
    if size > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(f"The message is {size} bytes; the limit is {MAX_MESSAGE_BYTES} bytes.")
    return Message(body, kind, size)


def _data_type(data: Any, data_type: DataType | str | None) -> DataType:
    if data_type is None:
        if isinstance(data, str):
            return DataType.TEXT
        if isinstance(data, bytes | bytearray | memoryview):
            return DataType.BINARY
        return DataType.JSON
    try:
        return DataType(data_type)
    except ValueError:
        allowed = ", ".join(kind.value for kind in DataType)
        raise BadRequest(
            f"dataType {str(data_type)[:32]!r} is not one of {allowed}.", code="invalid_data_type"
        ) from None


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise BadRequest(f"The {kind} id must be 1-{MAX_ID_LENGTH} printable characters.", code=f"invalid_{kind}")
    return value


def _check_group(group: str) -> str:
    if not isinstance(group, str):
        raise BadRequest("The group name must be a string.", code="invalid_group")
    return validate_group_name(group)


def _check_reason(reason: str | None) -> str | None:
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH):
        raise BadRequest(
            f"The reason must be a string of at most {MAX_REASON_LENGTH} characters.", code="invalid_reason"
        )
    return reason


def _check_excluded(excluded: Iterable[str] | None) -> list[str] | None:
    if excluded is None:
        return None
    ids = list(excluded)
    for connection_id in ids:
        _check_id("connection", connection_id)
    return ids or None


def _check_filter(odata_filter: str | None) -> str | None:
    if odata_filter is not None and (not isinstance(odata_filter, str) or len(odata_filter) > MAX_FILTER_LENGTH):
        raise BadRequest(
            f"The filter must be a string of at most {MAX_FILTER_LENGTH} characters.", code="invalid_filter"
        )
    return odata_filter or None


def _error_code(error: Any) -> str:
    """The service's x-ms-error-code, if it sent one (safe to show: a fixed identifier)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    code = headers.get("x-ms-error-code") if hasattr(headers, "get") else None
    return str(code)[:80] if code else ""


class ServiceClient:
    """The service's REST operations for one hub, with the SDK's errors mapped to the app's.

    It asks the token source for the hub's SDK client on every call (a dictionary lookup), so a key
    rotated in Key Vault is used as soon as the token source has read it.
    """

    def __init__(self, tokens: TokenSource, hub: str, *, endpoint: str = "https://"):
        self._tokens = tokens
        self._hub = hub
        # Entra ID tokens over plain http: configuration accepts http only for a local service on
        # loopback. Per call, since azure-core's bearer policy reads it from each request's options
        # (and the key credential's policy does not consume it, so it is left out there).
        self._bearer_options: dict[str, Any] = {} if endpoint.startswith("https://") else {"enforce_https": False}

    @property
    def hub(self) -> str:
        return self._hub

    def _sdk(self) -> WebPubSubServiceClient:
        return self._tokens.service_client(self._hub)

    def _call(self, what: str, operation: Callable[[WebPubSubServiceClient], _Result]) -> _Result:
        """Run one SDK call; every failure leaves as one of the app's errors (see the module docstring)."""
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

        sdk = self._sdk()  # outside the try: Key Vault's own DependencyUnavailable passes unchanged
        try:
            options = {} if self._tokens.access_keys() else self._bearer_options
            return operation(_with_options(sdk, options))
        except ClientAuthenticationError as error:
            if error.response is None:  # no answer from the service: the identity got no token
                raise DependencyUnavailable(
                    "Entra ID", f"the managed identity could not get a token: {describe_azure_error(error)}"
                ) from None
            if self._tokens.access_keys(refresh=True) and self._sdk() is not sdk:
                # The key was rotated and Key Vault already holds the new one: retry once with it.
                return self._call(what, operation)
            raise self._refused(error) from None
        except HttpResponseError as error:
            status = error.status_code or 0
            if status == 404:
                raise NotFound(f"{what} is not in hub {self._hub!r}.", code="not_found") from None
            if status in {401, 403}:
                raise self._refused(error) from None
            if 400 <= status < 500 and status not in {408, 429}:
                code = _error_code(error)
                raise BadRequest(
                    f"{what}: the service refused the request" + (f" ({code})." if code else "."),
                    code="refused_by_service",
                ) from None
            raise DependencyUnavailable("Web PubSub", f"{what}: {describe_azure_error(error)}") from None
        except AzureError as error:  # timeouts, refused connections, DNS
            raise DependencyUnavailable("Web PubSub", f"{what}: {describe_azure_error(error)}") from None

    def _refused(self, error: Any) -> DependencyUnavailable:
        status = getattr(error, "status_code", None) or getattr(getattr(error, "response", None), "status_code", 0)
        holds_key = bool(self._tokens.access_keys())
        if status == 403:
            cause = (
                f"the service refused the app's identity (HTTP 403): it needs the {SERVICE_OWNER_ROLE} role "
                "on the Web PubSub resource"
            )
            if holds_key:
                cause = "the service refused the app's access key (HTTP 403): check that local auth (keys) is enabled"
        elif holds_key:
            cause = (
                "the service refused the app's access key (HTTP 401): the key does not match the service's "
                "(WEBPUBSUB_CONNECTION_STRING, or the secret in Key Vault)"
            )
        else:
            cause = (
                "the service refused the identity's token (HTTP 401): check WEBPUBSUB_ENDPOINT and that the "
                f"identity holds the {SERVICE_OWNER_ROLE} role"
            )
        return DependencyUnavailable("Web PubSub", cause)

    # --- send ---------------------------------------------------------------------------------

    def send_to_all(
        self,
        data: Any,
        *,
        data_type: DataType | str | None = None,
        excluded: Iterable[str] | None = None,
        odata_filter: str | None = None,
    ) -> Message:
        """Send to every connection of the hub, except `excluded`, that matches the OData `odata_filter`."""
        sent = message(data, data_type)
        skip, where = _check_excluded(excluded), _check_filter(odata_filter)
        self._call(
            "send to all",
            lambda sdk: sdk.send_to_all(
                sent.body, content_type=_CONTENT_TYPES[sent.data_type], excluded=skip, filter=where
            ),
        )
        return sent

    def send_to_group(
        self,
        group: str,
        data: Any,
        *,
        data_type: DataType | str | None = None,
        excluded: Iterable[str] | None = None,
        odata_filter: str | None = None,
    ) -> Message:
        _check_group(group)
        sent = message(data, data_type)
        skip, where = _check_excluded(excluded), _check_filter(odata_filter)
        self._call(
            f"send to group {group[:64]!r}",
            lambda sdk: sdk.send_to_group(
                group, sent.body, content_type=_CONTENT_TYPES[sent.data_type], excluded=skip, filter=where
            ),
        )
        return sent

    def send_to_user(
        self, user_id: str, data: Any, *, data_type: DataType | str | None = None, odata_filter: str | None = None
    ) -> Message:
        """Send to every connection of `user_id` (none connected: the service accepts and drops it)."""
        _check_id("user", user_id)
        sent = message(data, data_type)
        where = _check_filter(odata_filter)
        self._call(
            "send to a user",
            lambda sdk: sdk.send_to_user(user_id, sent.body, content_type=_CONTENT_TYPES[sent.data_type], filter=where),
        )
        return sent

    def send_to_connection(self, connection_id: str, data: Any, *, data_type: DataType | str | None = None) -> Message:
        _check_id("connection", connection_id)
        sent = message(data, data_type)
        self._call(
            "send to a connection",
            lambda sdk: sdk.send_to_connection(connection_id, sent.body, content_type=_CONTENT_TYPES[sent.data_type]),
        )
        return sent

    # --- groups -------------------------------------------------------------------------------

    def add_connection_to_group(self, group: str, connection_id: str) -> None:
        _check_group(group)
        _check_id("connection", connection_id)
        self._call(f"Connection {connection_id[:64]!r}", lambda sdk: sdk.add_connection_to_group(group, connection_id))

    def remove_connection_from_group(self, group: str, connection_id: str) -> None:
        _check_group(group)
        _check_id("connection", connection_id)
        self._call(
            f"Connection {connection_id[:64]!r}", lambda sdk: sdk.remove_connection_from_group(group, connection_id)
        )

    def add_user_to_group(self, group: str, user_id: str) -> None:
        """Add every current connection of `user_id` (the service answers 404 for a user with none)."""
        _check_group(group)
        _check_id("user", user_id)
        self._call(f"User {user_id[:64]!r} (no connection now)", lambda sdk: sdk.add_user_to_group(group, user_id))

    def remove_user_from_group(self, group: str, user_id: str) -> None:
        _check_group(group)
        _check_id("user", user_id)
        self._call(f"User {user_id[:64]!r} (no connection now)", lambda sdk: sdk.remove_user_from_group(group, user_id))

    def remove_user_from_all_groups(self, user_id: str) -> None:
        _check_id("user", user_id)
        self._call(f"User {user_id[:64]!r} (no connection now)", lambda sdk: sdk.remove_user_from_all_groups(user_id))

    def remove_connection_from_all_groups(self, connection_id: str) -> None:
        _check_id("connection", connection_id)
        self._call(
            f"Connection {connection_id[:64]!r}", lambda sdk: sdk.remove_connection_from_all_groups(connection_id)
        )

    # --- connections --------------------------------------------------------------------------

    def close_connection(self, connection_id: str, *, reason: str | None = None) -> None:
        _check_id("connection", connection_id)
        _check_reason(reason)
        self._call(f"Connection {connection_id[:64]!r}", lambda sdk: sdk.close_connection(connection_id, reason=reason))

    def close_user_connections(
        self, user_id: str, *, reason: str | None = None, excluded: Iterable[str] | None = None
    ) -> None:
        _check_id("user", user_id)
        _check_reason(reason)
        skip = _check_excluded(excluded)
        self._call(
            f"User {user_id[:64]!r}", lambda sdk: sdk.close_user_connections(user_id, excluded=skip, reason=reason)
        )

    def close_group_connections(
        self, group: str, *, reason: str | None = None, excluded: Iterable[str] | None = None
    ) -> None:
        _check_group(group)
        _check_reason(reason)
        skip = _check_excluded(excluded)
        self._call(
            f"Group {group[:64]!r}", lambda sdk: sdk.close_group_connections(group, excluded=skip, reason=reason)
        )

    def close_all_connections(self, *, reason: str | None = None, excluded: Iterable[str] | None = None) -> None:
        _check_reason(reason)
        skip = _check_excluded(excluded)
        self._call("close all connections", lambda sdk: sdk.close_all_connections(excluded=skip, reason=reason))

    # --- permissions --------------------------------------------------------------------------

    def grant_permission(self, permission: Permission | str, connection_id: str, group: str) -> None:
        """Let `connection_id` send to (or join and leave) `group` without a role in its token."""
        granted = _checked_permission(permission, connection_id, group)
        self._call(
            f"Connection {connection_id[:64]!r}",
            lambda sdk: sdk.grant_permission(granted, connection_id, target_name=group),
        )

    def revoke_permission(self, permission: Permission | str, connection_id: str, group: str) -> None:
        """Withdraw a permission granted by `grant_permission` or held through the token's roles."""
        revoked = _checked_permission(permission, connection_id, group)
        self._call(
            f"Connection {connection_id[:64]!r}",
            lambda sdk: sdk.revoke_permission(revoked, connection_id, target_name=group),
        )

    def has_permission(self, permission: Permission | str, connection_id: str, group: str) -> bool:
        checked = _checked_permission(permission, connection_id, group)
        return self._exists("connection", lambda sdk: sdk.has_permission(checked, connection_id, target_name=group))

    # --- existence and presence -----------------------------------------------------------------

    def _exists(self, what: str, operation: Callable[[WebPubSubServiceClient], bool]) -> bool:
        """The SDK answers False for a 404; a 404 that reaches us anyway means the same."""
        try:
            return bool(self._call(what, operation))
        except NotFound:
            return False

    def connection_exists(self, connection_id: str) -> bool:
        _check_id("connection", connection_id)
        return self._exists("connection", lambda sdk: sdk.connection_exists(connection_id))

    def user_exists(self, user_id: str) -> bool:
        """Whether `user_id` has at least one connection now."""
        _check_id("user", user_id)
        return self._exists("user", lambda sdk: sdk.user_exists(user_id))

    def group_exists(self, group: str) -> bool:
        """Whether `group` has at least one connection now."""
        _check_group(group)
        return self._exists("group", lambda sdk: sdk.group_exists(group))

    def list_connections(self, group: str, *, limit: int = 10_000) -> tuple[tuple[GroupMember, ...], bool]:
        """The connections in `group` now (service API 2024-12-01), at most `limit`; and whether there were more.

        The SDK follows the service's pages (MAX_PAGE_SIZE each) as the iteration goes, and it stops
        after `limit + 1`, so a huge group costs a bounded number of calls.
        """
        _check_group(group)
        if limit < 1:
            raise BadRequest("The limit must be at least 1.", code="invalid_limit")

        def collect(sdk: WebPubSubServiceClient) -> tuple[tuple[GroupMember, ...], bool]:
            found: list[GroupMember] = []
            for member in sdk.list_connections(group=group, maxpagesize=min(MAX_PAGE_SIZE, limit + 1)):
                if len(found) == limit:
                    return tuple(found), True
                found.append(GroupMember(member.connection_id, member.user_id))
            return tuple(found), False

        return self._call(f"group {group[:64]!r}", collect)


class _WithOptions:
    """An SDK client whose every call gets `options` added."""

    __slots__ = ("_options", "_sdk")

    def __init__(self, sdk: WebPubSubServiceClient, options: dict[str, Any]):
        self._sdk = sdk
        self._options = options

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self._sdk, name), **self._options)


def _with_options(sdk: WebPubSubServiceClient, options: dict[str, Any]) -> WebPubSubServiceClient:
    """`sdk`, with `options` added to every call made through it."""
    if not options:
        return sdk
    return cast("WebPubSubServiceClient", _WithOptions(sdk, options))


def _checked_permission(permission: Permission | str, connection_id: str, group: str) -> str:
    """The permission's service name, once the permission, connection id and group are all valid."""
    name = _permission(permission)
    _check_id("connection", connection_id)
    _check_group(group)
    return name


def _permission(permission: Permission | str) -> str:
    try:
        return Permission(permission).value
    except ValueError:
        allowed = ", ".join(item.value for item in Permission)
        raise BadRequest(
            f"permission {str(permission)[:32]!r} is not one of {allowed}.", code="invalid_permission"
        ) from None


def _offloaded(method: Callable[_Params, _Result]) -> Callable[_Params, Any]:
    @functools.wraps(method)
    async def run(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        return await asyncio.to_thread(method, *args, **kwargs)

    return run


class AsyncServiceClient:
    """`ServiceClient`'s operations as coroutines, for `async def` handlers and functions.

    Each call runs the sync client in the default thread pool (see the module docstring for why);
    errors are the same app errors.
    """

    def __init__(self, client: ServiceClient):
        self._client = client
        for name in _OPERATIONS:
            setattr(self, name, _offloaded(getattr(client, name)))

    @property
    def hub(self) -> str:
        return self._client.hub

    if TYPE_CHECKING:  # what `__init__` binds, typed for callers

        async def send_to_all(
            self,
            data: Any,
            *,
            data_type: DataType | str | None = None,
            excluded: Iterable[str] | None = None,
            odata_filter: str | None = None,
        ) -> Message: ...
        async def send_to_group(
            self,
            group: str,
            data: Any,
            *,
            data_type: DataType | str | None = None,
            excluded: Iterable[str] | None = None,
            odata_filter: str | None = None,
        ) -> Message: ...
        async def send_to_user(
            self, user_id: str, data: Any, *, data_type: DataType | str | None = None, odata_filter: str | None = None
        ) -> Message: ...
        async def send_to_connection(
            self, connection_id: str, data: Any, *, data_type: DataType | str | None = None
        ) -> Message: ...
        async def add_connection_to_group(self, group: str, connection_id: str) -> None: ...
        async def remove_connection_from_group(self, group: str, connection_id: str) -> None: ...
        async def add_user_to_group(self, group: str, user_id: str) -> None: ...
        async def remove_user_from_group(self, group: str, user_id: str) -> None: ...
        async def remove_user_from_all_groups(self, user_id: str) -> None: ...
        async def remove_connection_from_all_groups(self, connection_id: str) -> None: ...
        async def close_connection(self, connection_id: str, *, reason: str | None = None) -> None: ...
        async def close_user_connections(
            self, user_id: str, *, reason: str | None = None, excluded: Iterable[str] | None = None
        ) -> None: ...
        async def close_group_connections(
            self, group: str, *, reason: str | None = None, excluded: Iterable[str] | None = None
        ) -> None: ...
        async def close_all_connections(
            self, *, reason: str | None = None, excluded: Iterable[str] | None = None
        ) -> None: ...
        async def grant_permission(self, permission: Permission | str, connection_id: str, group: str) -> None: ...
        async def revoke_permission(self, permission: Permission | str, connection_id: str, group: str) -> None: ...
        async def has_permission(self, permission: Permission | str, connection_id: str, group: str) -> bool: ...
        async def connection_exists(self, connection_id: str) -> bool: ...
        async def user_exists(self, user_id: str) -> bool: ...
        async def group_exists(self, group: str) -> bool: ...
        async def list_connections(
            self, group: str, *, limit: int = 10_000
        ) -> tuple[tuple[GroupMember, ...], bool]: ...


_OPERATIONS: Sequence[str] = tuple(
    name for name, value in vars(ServiceClient).items() if callable(value) and not name.startswith("_")
)


def get_service_client(hub: str | None = None) -> ServiceClient:
    """The process's client for `hub` (the default hub when None); built once, on first use.

    Raises ConfigError when the service settings are invalid and NotFound for a hub the app does not serve.
    """
    from shared.runtime import get_runtime

    return get_runtime().service_client(hub)


def get_async_service_client(hub: str | None = None) -> AsyncServiceClient:
    from shared.runtime import get_runtime

    return get_runtime().async_service_client(hub)
