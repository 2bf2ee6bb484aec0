"""The client WebSocket endpoint: handshake, the connect event, recovery, and the frame loop.

Everything that can refuse a client happens *before* the WebSocket upgrade and is sent as a
plain HTTP response (401 bad token, 400 bad request, the event handler's 4xx, 500 when the
handler fails), because that is what clients of the real service see. Recovery of a reliable
connection is the exception: like the service, it is accepted and then closed with 1008, which
tells clients to stop recovering and connect afresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from .connections import SUPPORTED_SUBPROTOCOLS, ClientConnection, ConnectionManager, Transport, new_connection_id
from .permissions import GroupAction, is_valid_group_name
from .protocol import (
    BadClientRequest,
    CancelInvocation,
    Invoke,
    JoinGroup,
    LeaveGroup,
    MalformedFrame,
    Payload,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    WrongFrameType,
)
from .settings import ServiceSettings
from .tokens import ClientIdentity, TokenError, TokenKeys, validate_client_token
from .upstream import EventContext, UpstreamDispatcher, UserEventOutcome

__all__ = [
    "HUB_NAME",
    "ClientEndpoint",
    "HandshakeRefusal",
    "apply_connect_response",
    "authenticate",
    "bearer_token",
    "connect_event_body",
    "refuse_handshake",
]

logger = logging.getLogger("devstack.webpubsub.clients")

HUB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
#: Close codes with which a client says it is leaving for good: normal closure, going away, and
#: 1005, a close frame without a code, which is what a browser sends for ``close()`` without
#: arguments. Anything else (including a lost network, 1006) leaves a reliable connection
#: waiting for recovery.
_FINAL_CLIENT_CLOSE_CODES = frozenset({1000, 1001, 1005})
#: How an event handler's failure answers an invoke: its 4xx by name, anything else as a server error.
_INVOKE_ERROR_NAMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
_MAX_INVOKE_ERROR_MESSAGE = 1024


class HandshakeRefusal(Exception):
    """The upgrade is refused with this HTTP status and text (what clients of the service see)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientEndpoint:
    """Serves ``/client/hubs/{hub}`` and ``/client/?hub=`` for every client protocol (see ``handle``)."""

    def __init__(
        self,
        settings: ServiceSettings,
        manager: ConnectionManager,
        dispatcher: UpstreamDispatcher,
        endpoint: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.dispatcher = dispatcher
        #: The service's configured public endpoint: what tokens must name, never the client's Host.
        self.endpoint = endpoint
        self.keys = TokenKeys.of(settings)

    async def handle(self, websocket: WebSocket) -> None:
        await websocket.receive()  # the websocket.connect message: the handshake is now ours to answer
        raw_hub = websocket.path_params.get("hub") or websocket.query_params.get("hub") or ""
        if not HUB_NAME.fullmatch(raw_hub):
            await refuse_handshake(websocket, 400, "The hub name is missing or invalid.")
            return
        hub = raw_hub.lower()
        offered = [str(name) for name in websocket.scope.get("subprotocols", [])]
        recovering_id = websocket.query_params.get("awps_connection_id")
        if recovering_id:
            await self._recover(websocket, hub, offered, recovering_id)
            return
        try:
            connection, groups = await self._admit(websocket, raw_hub, hub, offered)
        except HandshakeRefusal as refusal:
            logger.info("handshake refused (%s): %s", refusal.status, refusal.reason)
            await refuse_handshake(websocket, refusal.status, refusal.reason)
            return
        try:
            await websocket.accept(subprotocol=connection.subprotocol)
        except OSError:  # the client gave up while the event handler was deciding
            logger.info("client of %s left before the handshake completed", connection.connection_id)
            return
        transport = Transport(websocket, self.settings.outbound_queue_frames)
        self.manager.attach(connection, transport, replay=False)
        self.manager.register(connection, groups)
        if connection.codec is not None:
            connection.send_control(
                connection.codec.connected(connection.user_id, connection.connection_id, connection.reconnection_token)
            )
        context, event_id = connection.event_context(), connection.next_event_id()

        async def send_connected() -> None:
            await self.dispatcher.notify(context, "connected", {}, event_id)

        connection.lane.submit(send_connected)
        await self._serve(connection, transport)

    async def _admit(
        self, websocket: WebSocket, raw_hub: str, hub: str, offered: list[str]
    ) -> tuple[ClientConnection, list[str]]:
        """Authenticate, ask the event handler, and build the connection; or raise HandshakeRefusal."""
        endpoint = self.endpoint()
        identity = authenticate(websocket, self.keys.client, endpoint=endpoint, hub=raw_hub)

        connection_id = new_connection_id()
        origin_host = urlsplit(endpoint).hostname or "localhost"
        subprotocol = next((name for name in offered if name.lower() in SUPPORTED_SUBPROTOCOLS), None)
        user_id, roles, groups = identity.user_id, list(identity.roles), list(identity.groups)
        connection_state: str | None = None

        context = EventContext(hub, connection_id, user_id, subprotocol, None, origin_host)
        outcome = await self.dispatcher.connect(context, connect_event_body(websocket, identity, offered))
        if outcome is not None:
            if not outcome.accepted:
                status = outcome.status if 400 <= outcome.status < 500 else 500
                raise HandshakeRefusal(status, _status_text(status))
            connection_state = outcome.connection_state
            body = outcome.body or {}
            try:
                user_id, roles, groups, subprotocol = apply_connect_response(
                    body, user_id, roles, groups, subprotocol, offered
                )
            except ValueError as error:
                logger.warning("connect response rejected: %s", error)
                raise HandshakeRefusal(500, "The event handler's connect response is invalid.") from error

        connection = ClientConnection(
            connection_id=connection_id,
            hub=hub,
            user_id=user_id,
            roles=roles,
            subprotocol=subprotocol,
            origin_host=origin_host,
            connection_state=connection_state or None,
        )
        return connection, groups

    async def _recover(self, websocket: WebSocket, hub: str, offered: list[str], connection_id: str) -> None:
        token = websocket.query_params.get("awps_reconnection_token") or ""
        connection = self.manager.recoverable(hub, connection_id, token)
        if connection is None:
            fallback = next((name for name in offered if name.lower() in SUPPORTED_SUBPROTOCOLS), None)
            await websocket.accept(subprotocol=fallback)
            await websocket.close(1008, "The connection could not be recovered.")
            logger.info("recovery of %s refused", connection_id)
            return
        accepted = connection.subprotocol if connection.subprotocol in offered else None
        await websocket.accept(subprotocol=accepted)
        transport = Transport(websocket, self.settings.outbound_queue_frames)
        if connection.codec is not None:
            transport.send(
                connection.codec.connected(connection.user_id, connection.connection_id, connection.reconnection_token)
            )
        self.manager.attach(connection, transport, replay=True)
        logger.info("recovered %s (%d messages replayed)", connection_id, len(connection.unacked))
        await self._serve(connection, transport)

    async def _serve(self, connection: ClientConnection, transport: Transport) -> None:
        """Read frames until the socket ends, then detach it from the connection."""
        websocket = transport.websocket
        writer = asyncio.get_running_loop().create_task(transport.run_writer())
        close_code, close_reason = 1006, ""
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    close_code, close_reason = int(message.get("code", 1006)), str(message.get("reason") or "")
                    break
                if connection.closed or connection.transport is not transport:
                    continue  # closing, or superseded by a recovered socket: ignore stragglers
                text, data = message.get("text"), message.get("bytes")
                if connection.codec is None:
                    payload = Payload("text", text.encode()) if text is not None else Payload("binary", data or b"")
                    await self._submit_event(connection, "message", payload, ack_id=None)
                else:
                    await self._on_frame(connection, text, data)
        finally:
            reason: str | None
            if transport.close_request is not None:
                recoverable, reason = not transport.close_request.final, transport.close_request.reason
            elif close_code in _FINAL_CLIENT_CLOSE_CODES:
                recoverable, reason = False, close_reason or None  # the client's own words, if any
            else:
                recoverable, reason = True, f"The connection was lost (close code {close_code})."
            self.manager.detach(connection, transport, recoverable=recoverable, reason=reason)
            if transport.close_request is not None:
                # Let an ordered close finish writing its last frames; the peer has answered it.
                await asyncio.wait({writer}, timeout=1.0)
            writer.cancel()

    async def _on_frame(self, connection: ClientConnection, text: str | None, data: bytes | None) -> None:
        codec = connection.codec
        assert codec is not None
        try:
            request = codec.parse(text, data)
        except WrongFrameType as error:
            self.manager.close(connection, str(error), code=1003)
            return
        except MalformedFrame as error:
            self.manager.close(connection, f"The client message is not a valid protocol message: {error}.", code=1007)
            return
        except BadClientRequest as error:
            if error.ack_id is not None:
                connection.send_control(codec.ack(error.ack_id, "BadRequest", str(error)))
            elif error.invocation_id is not None:
                connection.send_control(codec.invoke_response(error.invocation_id, None, "BadRequest", str(error)))
            else:
                logger.info("ignored a bad request from %s: %s", connection.connection_id, error)
            return
        if isinstance(request, Ping):
            connection.send_control(codec.pong())
            return
        if isinstance(request, Invoke):
            await self._submit_invoke(connection, request)
            return
        if isinstance(request, CancelInvocation):
            # The event handler is already called; its answer is dropped instead of delivered.
            connection.invocations.discard(request.invocation_id)
            return
        if isinstance(request, SequenceAck):
            self.manager.acknowledge(connection, request.sequence_id)
            return
        ack_id = request.ack_id
        if ack_id is not None and ack_id in connection.ack_ids:
            connection.send_control(codec.ack(ack_id, "Duplicate", f"Message with ack-id: {ack_id} has been processed"))
            return
        if isinstance(request, SendEvent):
            await self._submit_event(connection, request.event, request.payload, ack_id=ack_id)
            return
        action = GroupAction.SEND if isinstance(request, SendToGroup) else GroupAction.JOIN_LEAVE
        if not connection.permissions.allows(action, request.group):
            verb = {JoinGroup: "join", LeaveGroup: "leave", SendToGroup: "send to"}[type(request)]
            if ack_id is not None:
                connection.send_control(
                    codec.ack(
                        ack_id, "Forbidden", f"The client does not have permission to {verb} group '{request.group}'."
                    )
                )
            return
        if isinstance(request, JoinGroup):
            self.manager.join(connection, request.group)
        elif isinstance(request, LeaveGroup):
            self.manager.leave(connection, request.group)
        else:
            self.manager.send_from_client(connection, request.group, request.payload, no_echo=request.no_echo)
        if ack_id is not None:
            connection.ack_ids.add(ack_id)
            connection.send_control(codec.ack(ack_id))

    async def _submit_invoke(self, connection: ClientConnection, request: Invoke) -> None:
        """Send the invoke upstream as a user event; the handler's reply (or failure) answers the client."""
        codec = connection.codec
        assert codec is not None
        invocation_id = request.invocation_id
        if invocation_id in connection.invocations:
            message = f"Invocation '{invocation_id}' is already in progress."
            connection.send_control(codec.invoke_response(invocation_id, None, "BadRequest", message))
            return
        await connection.lane.capacity.acquire()
        connection.invocations.add(invocation_id)
        event_id = connection.next_event_id()
        context = connection.event_context()
        dispatcher = self.dispatcher
        payload = request.payload or Payload("binary", b"")

        async def send_invoke() -> None:
            try:
                outcome = await dispatcher.user_event(context, request.event, payload, event_id)
                if connection.closed or invocation_id not in connection.invocations:
                    return  # cancelled by the client, or gone
                connection.invocations.discard(invocation_id)
                if outcome.connection_state is not None:
                    connection.connection_state = outcome.connection_state or None
                if outcome.succeeded:
                    connection.send_control(codec.invoke_response(invocation_id, outcome.reply))
                else:
                    name, message = _invoke_error(outcome)
                    connection.send_control(codec.invoke_response(invocation_id, None, name, message))
            finally:
                connection.lane.capacity.release()

        connection.lane.submit(send_invoke)

    async def _submit_event(
        self, connection: ClientConnection, event_name: str, payload: Payload, *, ack_id: int | None
    ) -> None:
        """Queue a user event on the connection's lane; its reply and ack follow when it returns."""
        await connection.lane.capacity.acquire()
        if ack_id is not None:
            connection.ack_ids.add(ack_id)  # in flight: a repeat is a duplicate already
        event_id = connection.next_event_id()
        context = connection.event_context()
        manager, dispatcher = self.manager, self.dispatcher

        async def send_event() -> None:
            try:
                outcome = await dispatcher.user_event(context, event_name, payload, event_id)
                if connection.closed:
                    return
                if outcome.connection_state is not None:
                    connection.connection_state = outcome.connection_state or None
                if outcome.succeeded:
                    if outcome.reply is not None:
                        manager.send_from_server([connection], outcome.reply)
                    if ack_id is not None and connection.codec is not None:
                        connection.send_control(connection.codec.ack(ack_id))
                elif connection.codec is not None:
                    if ack_id is not None:
                        connection.ack_ids.discard(ack_id)
                        connection.send_control(
                            connection.codec.ack(ack_id, "InternalServerError", "Internal server error")
                        )
                else:
                    manager.close(connection, "The event handler failed to handle the message.", code=1011)
            finally:
                connection.lane.capacity.release()

        connection.lane.submit(send_event)


def authenticate(
    websocket: WebSocket, key: bytes, *, endpoint: str, hub: str, client_path: str = "client"
) -> ClientIdentity:
    """The client's identity from its access token (query or bearer header); HandshakeRefusal otherwise."""
    token = websocket.query_params.get("access_token") or bearer_token(websocket.headers.get("authorization"))
    if not token:
        raise HandshakeRefusal(401, "An access token is required (access_token query or Authorization header).")
    try:
        identity = validate_client_token(token, key, endpoint=endpoint, hub=hub, client_path=client_path)
    except TokenError as error:
        raise HandshakeRefusal(401, f"Unauthorized: {error}.") from error
    if not all(is_valid_group_name(group) for group in identity.groups):
        raise HandshakeRefusal(400, "The token contains an invalid group name.")
    return identity


async def refuse_handshake(websocket: WebSocket, status: int, reason: str) -> None:
    """Answer the handshake with a plain HTTP response instead of upgrading."""
    try:
        await websocket.send_denial_response(PlainTextResponse(reason, status_code=status))
    except RuntimeError:  # a server without the denial extension: uvicorn turns this into 403
        await websocket.close(1008, reason[:120])


def _invoke_error(outcome: UserEventOutcome) -> tuple[str, str]:
    """The invoke error for a failed event handler call: a 4xx with its own words, else a server error.

    A handler that refuses (4xx) speaks to the client, so its text body is the message; a failing
    or unreachable handler's details stay in the service's log.
    """
    status = outcome.status
    if status is not None and 400 <= status < 500:
        message = (outcome.error_text or "").strip()[:_MAX_INVOKE_ERROR_MESSAGE]
        return _INVOKE_ERROR_NAMES.get(status, "BadRequest"), message or f"The event handler answered {status}."
    return "InternalServerError", "The event handler failed to handle the invocation."


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def _status_text(status: int) -> str:
    if status == 500:
        return "The event handler could not be reached or failed."
    return f"The event handler rejected the connection ({status})."


def connect_event_body(websocket: WebSocket, identity: ClientIdentity, offered: list[str]) -> dict[str, Any]:
    """The ``connect`` event body: every dictionary value is an array of strings."""
    query: defaultdict[str, list[str]] = defaultdict(list)
    for name, value in websocket.query_params.multi_items():
        if name != "access_token":
            query[name].append(value)
    headers: defaultdict[str, list[str]] = defaultdict(list)
    for raw_name, raw_value in websocket.scope["headers"]:
        name = raw_name.decode("latin-1")
        if name.lower() != "authorization":
            headers[name].append(raw_value.decode("latin-1"))
    return {
        "claims": {name: _claim_values(value) for name, value in identity.claims.items()},
        "query": dict(query),
        "headers": dict(headers),
        "subprotocols": offered,
        "clientCertificates": [],
    }


def _claim_values(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, str) else json.dumps(item) for item in items]


def apply_connect_response(
    body: dict[str, Any],
    user_id: str | None,
    roles: list[str],
    groups: list[str],
    subprotocol: str | None,
    offered: list[str],
) -> tuple[str | None, list[str], list[str], str | None]:
    """Merge a 200 connect response into the token's identity, as the service does.

    ``userId`` replaces the token's user; ``roles`` replaces its roles (an empty list clears
    them); a non-empty ``groups`` replaces its groups; ``subprotocol`` must be one the client
    offered. ValueError when the response is malformed.
    """
    if "userId" in body and body["userId"] is not None:
        if not isinstance(body["userId"], str):
            raise ValueError("userId must be a string")
        user_id = body["userId"] or None
    if "roles" in body and body["roles"] is not None:
        if not _is_string_list(body["roles"]):
            raise ValueError("roles must be an array of strings")
        roles = list(body["roles"])
    if body.get("groups"):
        if not _is_string_list(body["groups"]) or not all(map(is_valid_group_name, body["groups"])):
            raise ValueError("groups must be an array of valid group names")
        groups = list(body["groups"])
    if body.get("subprotocol"):
        chosen = body["subprotocol"]
        match = next((name for name in offered if isinstance(chosen, str) and name.lower() == chosen.lower()), None)
        if match is None:
            raise ValueError("subprotocol must be one the client offered")
        subprotocol = match
    return user_id, roles, groups, subprotocol


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
