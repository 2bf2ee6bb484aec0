"""The event handler: where an app registers its handlers, the default chat behaviour, the dispatcher.

Register handlers without touching protocol code (import the module from function_app.py):

    from shared.events import handlers
    from shared.protocol import UserEvent, UserEventResponse

    @handlers.on_user_event("echo")
    def echo(event: UserEvent) -> UserEventResponse:
        return UserEventResponse(event.data, event.data_type)

A handler registered for `connect` or for a user event replaces the default for that event;
notification handlers (connected, disconnected, group joined/left) are added to the log line the
app always writes. Handlers must be idempotent: the service retries, so one `ce-id` can arrive
more than once. To reject a connection, raise `shared.errors.Unauthorized` or `Forbidden` with a
reason; anything else a handler raises is a bug and answers 500 (logged with ce-id and connectionId).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from shared.config import Settings
from shared.errors import AppError, BadRequest, Forbidden, Unauthorized
from shared.policy import GroupPolicy, groups_in_roles
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
    render_user_event,
)
from shared.upstream_auth import UpstreamAuthenticator
from shared.web import Request, Response, error_response, json_response

logger = logging.getLogger(__name__)

ConnectHandler = Callable[[ConnectRequest], ConnectResponse | None]
UserEventHandler = Callable[[UserEvent], UserEventResponse | None]
_Notification = TypeVar("_Notification", ConnectedEvent, DisconnectedEvent, GroupEvent)
_Handler = TypeVar("_Handler", bound=Callable[..., object])


class EventHandlers:
    """The registry of application handlers, filled with decorators."""

    def __init__(self) -> None:
        self.connect: ConnectHandler | None = None
        self.user_events: dict[str, UserEventHandler] = {}
        self.any_user_event: UserEventHandler | None = None
        self.connected: list[Callable[[ConnectedEvent], None]] = []
        self.disconnected: list[Callable[[DisconnectedEvent], None]] = []
        self.group_joined: list[Callable[[GroupEvent], None]] = []
        self.group_left: list[Callable[[GroupEvent], None]] = []

    def on_connect(self, handler: ConnectHandler) -> ConnectHandler:
        """Replace the default connect policy; return a ConnectResponse, None (204), or raise to reject."""
        self.connect = handler
        return handler

    def on_user_event(self, name: str | None = None) -> Callable[[UserEventHandler], UserEventHandler]:
        """Handle user event `name` (any user event without a handler of its own when name is None)."""

        def register(handler: UserEventHandler) -> UserEventHandler:
            if name is None:
                self.any_user_event = handler
            else:
                self.user_events[name] = handler
            return handler

        return register

    def on_connected(self, handler: Callable[[ConnectedEvent], None]) -> Callable[[ConnectedEvent], None]:
        self.connected.append(handler)
        return handler

    def on_disconnected(self, handler: Callable[[DisconnectedEvent], None]) -> Callable[[DisconnectedEvent], None]:
        self.disconnected.append(handler)
        return handler

    def on_group_joined(self, handler: Callable[[GroupEvent], None]) -> Callable[[GroupEvent], None]:
        self.group_joined.append(handler)
        return handler

    def on_group_left(self, handler: Callable[[GroupEvent], None]) -> Callable[[GroupEvent], None]:
        self.group_left.append(handler)
        return handler

    def user_event_handler(self, name: str) -> UserEventHandler | None:
        return self.user_events.get(name) or self.any_user_event


# The process-wide registry the app's own modules decorate.
handlers = EventHandlers()


class ChatDefaults:
    """What the app does when no handler is registered: a chat with the negotiate group policy."""

    def __init__(self, policy: GroupPolicy):
        self._policy = policy

    def connect(self, request: ConnectRequest) -> ConnectResponse:
        """Accept a user the token named, with the policy's roles; refuse tokens the policy would not issue.

        A token's roles and groups (present in `claims`) must all be ones negotiate would grant today:
        after NEGOTIATE_GROUPS shrinks, old tokens are refused with 403 instead of keeping access.
        """
        user_id = request.context.user_id
        if not user_id:
            raise Unauthorized("The client's token carries no user id; get a URL from /api/negotiate.", code="no_user")
        grant = self._policy.grant(user_id)
        permitted_roles = set(grant.roles)
        for role in request.claims.get("role", ()):
            if role not in permitted_roles:
                raise Forbidden(f"The token holds role {role[:80]!r}, which the group policy does not grant.")
        joins = list(request.claims.get("webpubsub.group", ()))
        for group in (*joins, *groups_in_roles(request.claims.get("role", ()))):
            if group not in grant.groups:
                raise Forbidden(f"The token names group {group[:80]!r}, which the group policy does not permit.")
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


class EventDispatcher:
    """One HTTP request from the service in, one answer out; never an unhandled exception."""

    def __init__(
        self,
        *,
        settings: Settings,
        authenticator: UpstreamAuthenticator,
        registry: EventHandlers,
        defaults: ChatDefaults,
    ):
        self._settings = settings
        self._authenticator = authenticator
        self._registry = registry
        self._defaults = defaults

    def handle(self, request: Request) -> Response:
        if request.method in {"OPTIONS", "GET"}:
            return self._validate_webhook(request)
        started = time.perf_counter()
        context: ConnectionContext | None = None
        try:
            if request.method != "POST":
                raise BadRequest("Events are POSTed.", code="method_not_allowed")
            check_body_size(request.body, self._settings.max_event_body_bytes)  # before any parsing
            context = parse_context(request.headers)
            self._authenticator.authenticate(request, context)  # before any handler code runs
            if context.hub.lower() != self._settings.hub.lower():
                raise BadRequest(
                    f"This app serves hub {self._settings.hub!r}, not {context.hub[:128]!r} (WEBPUBSUB_HUB).",
                    code="wrong_hub",
                )
            event = parse_event(
                context,
                request.body,
                request.header("content-type"),
                max_body_bytes=self._settings.max_event_body_bytes,
            )
            response = self._dispatch(event)
        except AppError as error:
            response = error_response(error)
            if error.status >= 500:
                logger.error("Event failed: %s", error.log_message)
        except Exception:
            logger.exception(
                "An event handler failed: ce-id=%s connectionId=%s",
                _safe(context.event_id if context else None),
                _safe(context.connection_id if context else None),
            )
            response = json_response(500, {"error": {"code": "handler_failed", "message": "The event handler failed."}})
        self._log(context, response.status, started)
        return response

    def _validate_webhook(self, request: Request) -> Response:
        try:
            response = abuse_protection(request.header(HEADER_REQUEST_ORIGIN), self._settings.allowed_origins)
        except AppError as error:
            logger.warning(
                "Refused webhook validation from origin %s: %s",
                _safe(request.header(HEADER_REQUEST_ORIGIN)),
                error.code,
            )
            return error_response(error)
        logger.info("Webhook validation allowed for %s", response.headers.get("WebHook-Allowed-Origin"))
        return response

    def _dispatch(self, event: Event) -> Response:
        state = event.context.state
        if isinstance(event, ConnectRequest):
            connect = self._registry.connect or self._defaults.connect
            return render_connect(connect(event), state)
        if isinstance(event, UserEvent):
            handler = self._registry.user_event_handler(event.context.event_name) or self._defaults.user_event
            return render_user_event(handler(event), state)
        if isinstance(event, ConnectedEvent):
            self._notify(self._registry.connected, event)
        elif isinstance(event, DisconnectedEvent):
            self._notify(self._registry.disconnected, event)
        elif isinstance(event, GroupEvent):
            kind = event.context.kind
            self._notify(
                self._registry.group_joined if kind is EventKind.GROUP_JOINED else self._registry.group_left, event
            )
        elif isinstance(event, UnknownEvent):
            logger.info("Ignoring unknown event type %s", _safe(event.context.event_type))
        return render_notification(state)

    @staticmethod
    def _notify(listeners: list[Callable[[_Notification], None]], event: _Notification) -> None:
        for listener in listeners:
            listener(event)

    def _log(self, context: ConnectionContext | None, status: int, started: float) -> None:
        """One structured line per event; never keys, tokens or signatures."""
        duration_ms = (time.perf_counter() - started) * 1000
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        fields = {
            "hub": context.hub if context else None,
            "event": (context.event_name or context.event_type) if context else None,
            "connectionId": context.connection_id if context else None,
            "userId": context.user_id if context else None,
            "eventId": context.event_id if context else None,
        }
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "event hub=%s event=%s connectionId=%s userId=%s eventId=%s outcome=%d durationMs=%.2f",
                *(_safe(value) for value in fields.values()),
                status,
                duration_ms,
                extra={"webpubsub": {**fields, "outcome": status, "durationMs": round(duration_ms, 2)}},
            )
