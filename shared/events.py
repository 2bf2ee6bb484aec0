"""The event handler: where an app registers its handlers, the default chat behaviour, the dispatcher.

Register handlers without touching protocol code (import the module from function_app.py):

    from shared.events import handlers
    from shared.protocol import UserEvent, UserEventResponse

    @handlers.on_user_event("echo")
    def echo(event: UserEvent) -> UserEventResponse:
        return UserEventResponse(event.data, event.data_type)

Handlers may be plain functions or `async def`; a coroutine is awaited on the runtime's event
loop. Every registration may name a `hub`; without one it serves every hub the app serves, and a
handler for the event's own hub wins over one for every hub.

A handler registered for `connect` or for a user event replaces the default for that event, but
never the group policy check: before any connect handler runs, a token holding roles or groups the
policy does not grant is refused (403). An app widens what tokens may hold through the policy
itself; `@handlers.on_connect(check_token_policy=False)` is the explicit, documented opt-out.
Notification handlers (connected, disconnected, group joined/left) are added to the log line the
app always writes. Handlers must be idempotent: the service retries, so one `ce-id` can arrive
more than once. To reject a connection, raise `shared.errors.Unauthorized` or `Forbidden` with a
reason; anything else a handler raises is a bug and answers 500 (logged with ce-id and connectionId).

MQTT clients go through the same handlers: `request.mqtt` (connect) and `event.mqtt`
(disconnected) hold what their packets said, and a refusal reaches them as the CONNACK code for
their protocol version (Unauthorized and Forbidden: not authorized; BadRequest: bad user name or
password). Raise `shared.protocol.MqttConnectRefused(code, reason)` to choose the code yourself.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from shared.errors import AppError, BadRequest, Forbidden, Unauthorized
from shared.policy import Grant, GroupPolicy, groups_in_roles
from shared.protocol import (
    HEADER_REQUEST_ORIGIN,
    ConnectedEvent,
    ConnectionContext,
    ConnectRequest,
    ConnectResponse,
    DisconnectedEvent,
    Event,
    EventKind,
    GroupEvent,
    UnknownEvent,
    UserEvent,
    UserEventResponse,
    abuse_protection,
    check_body_size,
    choose_subprotocol,
    parse_context,
    parse_event,
    render_connect,
    render_notification,
    render_refusal,
    render_user_event,
)
from shared.upstream_auth import UpstreamAuthenticator
from shared.web import Request, Response, error_response

logger = logging.getLogger(__name__)

ConnectHandler = Callable[[ConnectRequest], "ConnectResponse | Awaitable[ConnectResponse | None] | None"]
UserEventHandler = Callable[[UserEvent], "UserEventResponse | Awaitable[UserEventResponse | None] | None"]
ConnectedListener = Callable[[ConnectedEvent], object]
DisconnectedListener = Callable[[DisconnectedEvent], object]
GroupListener = Callable[[GroupEvent], object]
_Listener = TypeVar("_Listener", bound=Callable[..., object])
AsyncRunner = Callable[[Awaitable[Any]], Any]

# The claim types a connect event may carry the token's roles under: the JWT claim `role` as the
# service SDKs write it, `roles` (Entra ID's spelling), and the .NET claim type URI that .NET-based
# token handlers (the official emulator's among them) map `role` to.
ROLE_CLAIM_TYPES = ("role", "roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
GROUP_CLAIM_TYPE = "webpubsub.group"


def _hub_key(hub: str | None) -> str | None:
    """Hub names are case-insensitive for the service, so registrations are too."""
    return None if hub is None else hub.lower()


@dataclass(frozen=True, slots=True)
class ConnectRegistration:
    handler: ConnectHandler
    check_token_policy: bool = True


@dataclass(frozen=True, slots=True)
class _Registered:
    hub: str | None
    listener: Callable[[Any], object]


class EventHandlers:
    """The registry of application handlers, filled with decorators."""

    def __init__(self) -> None:
        self._connect: dict[str | None, ConnectRegistration] = {}
        self._user_events: dict[tuple[str | None, str | None], UserEventHandler] = {}
        self._listeners: dict[EventKind, list[_Registered]] = {
            kind: []
            for kind in (EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.GROUP_JOINED, EventKind.GROUP_LEFT)
        }

    @overload
    def on_connect(self, handler: ConnectHandler, /) -> ConnectHandler: ...

    @overload
    def on_connect(
        self, handler: None = None, /, *, hub: str | None = None, check_token_policy: bool = True
    ) -> Callable[[ConnectHandler], ConnectHandler]: ...

    def on_connect(
        self, handler: ConnectHandler | None = None, /, *, hub: str | None = None, check_token_policy: bool = True
    ) -> ConnectHandler | Callable[[ConnectHandler], ConnectHandler]:
        """Decide connections (return a ConnectResponse, None for 204, or raise to reject).

        The group policy check runs first unless `check_token_policy=False` says otherwise.
        """

        def register(function: ConnectHandler) -> ConnectHandler:
            key = _hub_key(hub)
            if key in self._connect:
                raise ValueError(f"a connect handler is already registered for {_describe_hub(hub)}")
            self._connect[key] = ConnectRegistration(function, check_token_policy)
            return function

        return register(handler) if handler is not None else register

    def on_user_event(
        self, name: str | None = None, *, hub: str | None = None
    ) -> Callable[[UserEventHandler], UserEventHandler]:
        """Handle user event `name` (any user event without a handler of its own when name is None)."""

        def register(handler: UserEventHandler) -> UserEventHandler:
            key = (_hub_key(hub), name)
            if key in self._user_events:
                what = f"user event {name!r}" if name is not None else "every user event"
                raise ValueError(f"a handler for {what} is already registered for {_describe_hub(hub)}")
            self._user_events[key] = handler
            return handler

        return register

    def _listen(self, kind: EventKind, listener: _Listener | None, hub: str | None) -> Any:
        def register(function: _Listener) -> _Listener:
            self._listeners[kind].append(_Registered(_hub_key(hub), function))
            return function

        return register(listener) if listener is not None else register

    @overload
    def on_connected(self, listener: ConnectedListener, /) -> ConnectedListener: ...
    @overload
    def on_connected(
        self, listener: None = None, /, *, hub: str | None = None
    ) -> Callable[[ConnectedListener], ConnectedListener]: ...
    def on_connected(self, listener: ConnectedListener | None = None, /, *, hub: str | None = None) -> Any:
        """Add a listener for `connected` (bare, or with `hub=` for one hub only)."""
        return self._listen(EventKind.CONNECTED, listener, hub)

    @overload
    def on_disconnected(self, listener: DisconnectedListener, /) -> DisconnectedListener: ...
    @overload
    def on_disconnected(
        self, listener: None = None, /, *, hub: str | None = None
    ) -> Callable[[DisconnectedListener], DisconnectedListener]: ...
    def on_disconnected(self, listener: DisconnectedListener | None = None, /, *, hub: str | None = None) -> Any:
        return self._listen(EventKind.DISCONNECTED, listener, hub)

    @overload
    def on_group_joined(self, listener: GroupListener, /) -> GroupListener: ...
    @overload
    def on_group_joined(
        self, listener: None = None, /, *, hub: str | None = None
    ) -> Callable[[GroupListener], GroupListener]: ...
    def on_group_joined(self, listener: GroupListener | None = None, /, *, hub: str | None = None) -> Any:
        return self._listen(EventKind.GROUP_JOINED, listener, hub)

    @overload
    def on_group_left(self, listener: GroupListener, /) -> GroupListener: ...
    @overload
    def on_group_left(
        self, listener: None = None, /, *, hub: str | None = None
    ) -> Callable[[GroupListener], GroupListener]: ...
    def on_group_left(self, listener: GroupListener | None = None, /, *, hub: str | None = None) -> Any:
        return self._listen(EventKind.GROUP_LEFT, listener, hub)

    def connect_registration(self, hub: str) -> ConnectRegistration | None:
        return self._connect.get(_hub_key(hub)) or self._connect.get(None)

    def user_event_handler(self, hub: str, name: str) -> UserEventHandler | None:
        """The most specific handler: this event on this hub, on every hub, then any event on this hub, on every hub."""
        key = _hub_key(hub)
        for candidate in ((key, name), (None, name), (key, None), (None, None)):
            handler = self._user_events.get(candidate)
            if handler is not None:
                return handler
        return None

    def listeners(self, kind: EventKind, hub: str) -> list[Callable[[Any], object]]:
        key = _hub_key(hub)
        return [entry.listener for entry in self._listeners.get(kind, []) if entry.hub in {None, key}]


def _describe_hub(hub: str | None) -> str:
    return "every hub" if hub is None else f"hub {hub!r}"


# The process-wide registry the app's own modules decorate.
handlers = EventHandlers()


def token_roles(request: ConnectRequest) -> tuple[str, ...]:
    """The roles the client's token holds, under whichever claim type the service delivered them."""
    roles: list[str] = []
    for claim_type in ROLE_CLAIM_TYPES:
        for role in request.claims.get(claim_type, ()):
            if role not in roles:
                roles.append(role)
    return tuple(roles)


class TokenPolicyCheck:
    """Refuses a connect whose token holds roles or groups the group policy would not grant today.

    Runs before any connect handler: after NEGOTIATE_GROUPS shrinks, old tokens are refused with 403
    instead of keeping access, and a token minted elsewhere with wider roles cannot get in.
    """

    def __init__(self, policy: GroupPolicy):
        self._policy = policy

    def check(self, request: ConnectRequest) -> Grant:
        """Return the grant the token was checked against (the default connect handler answers with it)."""
        user_id = request.context.user_id or ""
        grant = self._policy.grant(user_id)
        permitted_roles = grant.permitted_roles
        roles = token_roles(request)
        for role in roles:
            if role not in permitted_roles:
                raise Forbidden(f"The token holds role {role[:80]!r}, which the group policy does not grant.")
        for group in (*request.claims.get(GROUP_CLAIM_TYPE, ()), *groups_in_roles(roles)):
            if group not in grant.groups:
                raise Forbidden(f"The token names group {group[:80]!r}, which the group policy does not permit.")
        return grant


class ChatDefaults:
    """What the app does when no handler is registered: a chat with the negotiate group policy."""

    def __init__(self, policy: GroupPolicy):
        self._policy = policy

    def connect(self, request: ConnectRequest, grant: Grant | None = None) -> ConnectResponse:
        """Accept a user the token named, with the policy's roles, joining the groups the token asked for.

        `grant` is the policy's grant for this user when the caller already has it (the token check).
        """
        user_id = request.context.user_id
        if not user_id:
            raise Unauthorized("The client's token carries no user id; get a URL from /api/negotiate.", code="no_user")
        if grant is None:
            grant = self._policy.grant(user_id)
        joins = list(request.claims.get(GROUP_CLAIM_TYPE, ()))
        return ConnectResponse(
            user_id=user_id,
            groups=joins or None,
            roles=grant.roles,
            subprotocol=choose_subprotocol(request.subprotocols),
        )

    def user_event(self, event: UserEvent) -> UserEventResponse | None:
        """No reply: chat messages travel through groups (sendToGroup), which never reach the app.

        Answering 2xx keeps the client connected (a non-2xx makes the service drop it); register a
        handler for `message` or your own events to act on them.
        """
        if event.context.event_name != "message":
            logger.info(
                "No handler is registered for user event %r; accepted without a reply", _safe(event.context.event_name)
            )
        return None


def _safe(value: str | None, limit: int = 128) -> str:
    """Header values are attacker-controlled: keep log lines one line and short."""
    if value is None:
        return "-"
    return "".join(char if char.isprintable() else "?" for char in value[:limit])


def _run_sync(awaitable: Awaitable[Any]) -> Any:
    raise TypeError("an async handler needs an event loop; the runtime provides one")


class EventDispatcher:
    """One HTTP request from the service in, one answer out; never an unhandled exception.

    `policy` gives each hub's group policy; it is asked for on the first connect event of the hub,
    so the webhook handshake and the other events keep working while NEGOTIATE_GROUPS is invalid.
    """

    def __init__(
        self,
        *,
        hubs: Sequence[str],
        allowed_origins: Sequence[str],
        max_body_bytes: int,
        authenticator: UpstreamAuthenticator,
        registry: EventHandlers,
        policy: Callable[[str], GroupPolicy],
        run_async: AsyncRunner = _run_sync,
    ):
        self._hubs = {hub.lower(): hub for hub in hubs}
        self._allowed_origins = tuple(allowed_origins)
        self._max_body_bytes = max_body_bytes
        self._authenticator = authenticator
        self._registry = registry
        self._policy = policy
        self._run_async = run_async

    def handle(self, request: Request) -> Response:
        if request.method in {"OPTIONS", "GET"}:
            return self._validate_webhook(request)
        started = time.perf_counter()
        context: ConnectionContext | None = None
        event: Event | None = None
        try:
            if request.method != "POST":
                raise BadRequest("Events are POSTed.", code="method_not_allowed")
            check_body_size(request.body, self._max_body_bytes)  # before any parsing
            context = parse_context(request.headers)
            self._authenticator.authenticate(request, context)  # before any handler code runs
            if context.hub.lower() not in self._hubs:
                served = ", ".join(repr(hub) for hub in self._hubs.values())
                raise BadRequest(
                    f"This app serves hub {served}, not {context.hub[:128]!r} (WEBPUBSUB_HUB, WEBPUBSUB_HUBS).",
                    code="wrong_hub",
                )
            event = parse_event(
                context, request.body, request.header("content-type"), max_body_bytes=self._max_body_bytes
            )
            response = self._dispatch(event)
        except AppError as error:
            response = render_refusal(error, event)
            if error.status >= 500:
                logger.error("Event failed: %s", error.log_message)
        except Exception:
            logger.exception(
                "An event handler failed: ce-id=%s connectionId=%s",
                _safe(context.event_id if context else None),
                _safe(context.connection_id if context else None),
            )
            response = render_refusal(AppError("The event handler failed.", code="handler_failed"), event)
        self._log(context, response.status, started)
        return response

    def _validate_webhook(self, request: Request) -> Response:
        try:
            response = abuse_protection(request.header(HEADER_REQUEST_ORIGIN), self._allowed_origins)
        except AppError as error:
            logger.warning(
                "Refused webhook validation from origin %s: %s",
                _safe(request.header(HEADER_REQUEST_ORIGIN)),
                error.code,
            )
            return error_response(error)
        logger.info("Webhook validation allowed for %s", response.headers.get("WebHook-Allowed-Origin"))
        return response

    def _resolve(self, result: Any) -> Any:
        """A handler's result; a coroutine (an `async def` handler) is run to completion first."""
        if inspect.isawaitable(result):
            return self._run_async(result)
        return result

    def _dispatch(self, event: Event) -> Response:
        state = event.context.state
        hub = event.context.hub
        if isinstance(event, ConnectRequest):
            registration = self._registry.connect_registration(hub)
            grant = None
            if registration is None or registration.check_token_policy:
                grant = TokenPolicyCheck(self._policy(hub)).check(event)
            if registration is not None:
                return render_connect(self._resolve(registration.handler(event)), state)
            # One grant per connect: the check's, which is the policy's grant for this same user.
            return render_connect(ChatDefaults(self._policy(hub)).connect(event, grant), state)
        if isinstance(event, UserEvent):
            handler = self._registry.user_event_handler(hub, event.context.event_name)
            if handler is None:
                return render_user_event(ChatDefaults(self._policy(hub)).user_event(event), state)
            return render_user_event(self._resolve(handler(event)), state)
        if isinstance(event, UnknownEvent):
            logger.info("Ignoring unknown event type %s", _safe(event.context.event_type))
        else:
            for listener in self._registry.listeners(event.context.kind, hub):
                self._resolve(listener(event))
        return render_notification(state)

    def _log(self, context: ConnectionContext | None, status: int, started: float) -> None:
        """One structured line per event; never keys, tokens or signatures."""
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if not logger.isEnabledFor(level):
            return  # the fields are only worked out for a line that is written
        duration_ms = (time.perf_counter() - started) * 1000
        fields = {
            "hub": context.hub if context else None,
            "event": (context.event_name or context.event_type) if context else None,
            "protocol": context.client_protocol.value if context else None,
            "connectionId": context.connection_id if context else None,
            "userId": context.user_id if context else None,
            "eventId": context.event_id if context else None,
        }
        logger.log(
            level,
            "event hub=%s event=%s protocol=%s connectionId=%s userId=%s eventId=%s outcome=%d durationMs=%.2f",
            *(_safe(value) for value in fields.values()),
            status,
            duration_ms,
            extra={"webpubsub": {**fields, "outcome": status, "durationMs": round(duration_ms, 2)}},
        )
