"""Client connections, their groups and users, message fan-out, and reliable recovery.

A :class:`ClientConnection` is the *logical* connection the service and the event handler know
(one connection id, one upstream lifetime). It is carried by at most one :class:`Transport`
(a physical WebSocket) at a time; a reliable connection survives the loss of its transport for
the recovery window and resumes on a new one, replaying what the client has not acknowledged.

Everything here runs on the service's event loop and is never touched from another thread, so
plain sets and dicts are enough: a state change and the frames it causes happen without an
``await`` in between, which is what keeps replay ahead of newer messages.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.websockets import WebSocket

from .mqtt_session import (
    ADMINISTRATIVE_ACTION,
    QUOTA_EXCEEDED,
    SERVER_MESSAGES_TOPIC,
    DisconnectRecord,
    MqttSession,
)
from .permissions import RolePermissions
from .protobuf_protocol import PROTOBUF_CODEC, ProtobufCodec
from .protocol import JSON_CODEC, Codec, Frame, Payload
from .settings import ServiceSettings
from .upstream import EventContext, EventLane, UpstreamDispatcher

__all__ = ["SUPPORTED_SUBPROTOCOLS", "ClientConnection", "ConnectionManager", "Transport", "codec_for"]

logger = logging.getLogger("devstack.webpubsub.connections")

_CODECS: tuple[Codec, ...] = (JSON_CODEC, PROTOBUF_CODEC)
#: Every subprotocol the service speaks; any other (or none) makes a simple WebSocket client.
SUPPORTED_SUBPROTOCOLS = tuple(name for codec in _CODECS for name in codec.subprotocols)


def codec_for(subprotocol: str | None) -> Codec | None:
    """The codec of a predefined subprotocol; None for a simple WebSocket client."""
    for codec in _CODECS:
        if subprotocol is not None and subprotocol.lower() in codec.subprotocols:
            return codec
    return None


@dataclass(frozen=True)
class _CloseRequest:
    code: int
    reason: str
    #: False when the service drops the socket but keeps a reliable connection recoverable.
    final: bool


class Transport:
    """One physical WebSocket: frames are queued and written in order by a single writer task.

    Queueing keeps senders (REST calls, other clients' group messages) from ever waiting on a
    slow client; a full queue marks the client as too slow and the caller closes it.
    """

    def __init__(self, websocket: WebSocket, max_frames: int) -> None:
        self.websocket = websocket
        self._queue: asyncio.Queue[Frame | _CloseRequest] = asyncio.Queue()
        self._max_frames = max_frames
        self.close_request: _CloseRequest | None = None
        self.failed = False

    def send(self, frame: Frame) -> bool:
        """Queue a frame; False only if the client is not keeping up."""
        if self.close_request is not None or self.failed:
            return True
        if self._queue.qsize() >= self._max_frames:
            return False
        self._queue.put_nowait(frame)
        return True

    def close(self, code: int, reason: str, *, final: bool, last_frame: Frame | None = None) -> None:
        """Write ``last_frame`` (if any) after what is queued, then close the socket."""
        if self.close_request is not None:
            return
        if last_frame is not None and not self.failed:
            self._queue.put_nowait(last_frame)
        self.close_request = _CloseRequest(code, reason[:120], final)
        self._queue.put_nowait(self.close_request)

    async def run_writer(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _CloseRequest):
                    await self.websocket.close(item.code, item.reason)
                    return
                if isinstance(item, str):
                    await self.websocket.send_text(item)
                else:
                    await self.websocket.send_bytes(item)
        except Exception:  # the client went away mid-write; the reader notices and detaches
            self.failed = True


class ClientConnection:
    """One logical client connection and everything the service remembers about it."""

    def __init__(
        self,
        *,
        connection_id: str,
        hub: str,
        user_id: str | None,
        roles: Iterable[str],
        subprotocol: str | None,
        origin_host: str,
        connection_state: str | None,
        mqtt: MqttSession | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.hub = hub
        self.user_id = user_id
        self.roles = tuple(roles)
        self.permissions = RolePermissions(self.roles)
        #: The subprotocol accepted in the handshake (what ``ce-subprotocol`` reports).
        self.subprotocol = subprotocol
        #: How frames are parsed and rendered; None for a simple WebSocket client (raw frames).
        self.codec = codec_for(subprotocol)
        self.reliable = self.codec is not None and (subprotocol or "").lower() == self.codec.reliable_subprotocol
        self.origin_host = origin_host
        self.connection_state = connection_state
        self.groups: set[str] = set()
        #: ackIds already handled successfully (or in flight): repeats get a ``Duplicate`` ack.
        self.ack_ids: set[int] = set()
        self.reconnection_token = secrets.token_urlsafe(32) if self.reliable else None
        #: invocationIds whose invokeResponse is still due; cancelled ones get none.
        self.invocations: set[str] = set()
        self.transport: Transport | None = None
        self.lane = EventLane(connection_id)
        self.closed = False
        self.unacked: collections.OrderedDict[int, Frame] = collections.OrderedDict()
        self._last_sequence_id = 0
        self._next_event_id = 1  # ce-id 0 was the connect event
        #: Ends a dropped reliable connection once the recovery window has passed.
        self.recovery_timer: asyncio.TimerHandle | None = None
        #: The MQTT session, for an MQTT client (whose connection id is its client id).
        self.mqtt = mqtt

    @property
    def mode(self) -> str:
        """``raw``, ``json``, ``reliable``, ``protobuf``, ``protobuf.reliable`` or ``mqtt`` (for the debug route)."""
        if self.mqtt is not None:
            return "mqtt"
        if self.codec is None:
            return "raw"
        if isinstance(self.codec, ProtobufCodec):
            return "protobuf.reliable" if self.reliable else "protobuf"
        return "reliable" if self.reliable else "json"

    @property
    def speaks_subprotocol(self) -> bool:
        """A PubSub client (JSON or protobuf), not a simple WebSocket client."""
        return self.codec is not None

    def next_event_id(self) -> int:
        event_id = self._next_event_id
        self._next_event_id += 1
        return event_id

    def next_sequence_id(self) -> int:
        self._last_sequence_id += 1
        return self._last_sequence_id

    def event_context(self) -> EventContext:
        return EventContext(
            hub=self.hub,
            connection_id=self.connection_id,
            user_id=self.user_id,
            subprotocol=self.subprotocol,
            connection_state=self.connection_state,
            origin_host=self.origin_host,
            physical_connection_id=self.mqtt.physical_connection_id if self.mqtt else None,
            session_id=self.mqtt.session_id if self.mqtt else None,
        )

    def retention_seconds(self, recovery_window: float) -> float:
        """How long the connection outlives a lost socket: a reliable one the recovery window, an
        MQTT session its expiry interval (capped by the window), any other one not at all."""
        if self.mqtt is not None:
            return min(self.mqtt.expiry_seconds, recovery_window)
        return recovery_window if self.reliable else 0.0

    def disconnected_body(self, reason: str | None) -> dict[str, object]:
        return self.mqtt.disconnected_body(reason) if self.mqtt is not None else {"reason": reason}

    def send_control(self, frame: Frame) -> None:
        """Acks, pongs, system messages: not sequenced, lost if no socket is attached."""
        if self.transport is not None and not self.closed:
            self.transport.send(frame)


def new_connection_id() -> str:
    return uuid.uuid4().hex


class ConnectionManager:
    """All live connections of the service, indexed by hub, group and user."""

    def __init__(self, settings: ServiceSettings, dispatcher: UpstreamDispatcher) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self._connections: dict[str, ClientConnection] = {}
        self._group_members: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        self._user_connections: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        #: Lanes of ended connections still delivering their last events (``disconnected``).
        self._finishing_lanes: set[EventLane] = set()
        #: Set whenever a connection ends or its last events are delivered; see ``is_quiet``.
        self.changed = threading.Event()

    # ----- lifetime -------------------------------------------------------------------------

    def register(self, connection: ClientConnection, groups: Iterable[str]) -> None:
        self._connections[connection.connection_id] = connection
        if connection.user_id is not None:
            self._user_connections[(connection.hub, connection.user_id)].add(connection.connection_id)
        for group in groups:
            self.join(connection, group)
        logger.info(
            "connected %s hub=%s user=%s mode=%s",
            connection.connection_id,
            connection.hub,
            connection.user_id,
            connection.mode,
        )

    def attach(self, connection: ClientConnection, transport: Transport, *, replay: bool) -> None:
        """Give the connection a (new) socket; on recovery, resend what the client has not acked."""
        previous = connection.transport
        connection.transport = transport
        if connection.recovery_timer is not None:
            connection.recovery_timer.cancel()
            connection.recovery_timer = None
        if replay:
            for frame in connection.unacked.values():
                transport.send(frame)
        if previous is not None:
            previous.close(1000, "superseded by a recovered connection", final=False)

    def detach(
        self, connection: ClientConnection, transport: Transport, *, recoverable: bool, reason: str | None
    ) -> None:
        """The socket ended: a reliable connection waits for recovery, any other one is gone."""
        if connection.transport is not transport:
            return  # an older socket of a connection that has since recovered
        connection.transport = None
        if connection.closed:
            return
        retention = connection.retention_seconds(self.settings.recovery_window_seconds) if recoverable else 0.0
        if retention > 0:
            loop = asyncio.get_running_loop()
            connection.recovery_timer = loop.call_later(retention, self._expire, connection)
            logger.info("connection %s dropped; recoverable for %.0f s", connection.connection_id, retention)
            return
        self._remove(connection, reason)

    def recoverable(self, hub: str, connection_id: str, reconnection_token: str) -> ClientConnection | None:
        connection = self._connections.get(connection_id)
        if (
            connection is None
            or connection.closed
            or connection.hub != hub
            or connection.reconnection_token is None
            or not secrets.compare_digest(connection.reconnection_token, reconnection_token)
        ):
            return None
        return connection

    def close(
        self, connection: ClientConnection, reason: str, *, code: int = 1000, mqtt_code: int = ADMINISTRATIVE_ACTION
    ) -> None:
        """Close by the service: tell a PubSub client why (an MQTT 5.0 client with a DISCONNECT
        carrying ``mqtt_code``), then end the connection for good."""
        if connection.closed:
            return
        transport = connection.transport
        last_frame: Frame | None = None
        if connection.mqtt is not None:
            session = connection.mqtt
            session.last_disconnect = DisconnectRecord(False, mqtt_code if session.v5 else None, None, reason)
            last_frame = session.farewell(mqtt_code, reason) if transport is not None else None
        elif connection.codec is not None:
            last_frame = connection.codec.disconnected(reason)
        if transport is not None:
            transport.close(code, reason, final=True, last_frame=last_frame)
        self._remove(connection, reason)

    def drop_transport(self, connection_id: str, code: int = 1012) -> bool:
        """Close the socket but keep a reliable connection recoverable, as a service restart does.

        A development and test hook: it lets a client's recovery be exercised on demand.
        """
        connection = self._connections.get(connection_id)
        if connection is None or connection.transport is None:
            return False
        connection.transport.close(code, "dropped for a recovery test", final=False)
        return True

    async def shutdown(self, grace_seconds: float = 2.0) -> None:
        for connection in list(self._connections.values()):
            if connection.recovery_timer is not None:
                connection.recovery_timer.cancel()
            self._remove(connection, "the service is shutting down")
        lanes = list(self._finishing_lanes)
        await asyncio.gather(*(lane.wait_finished(grace_seconds) for lane in lanes))

    def _expire(self, connection: ClientConnection) -> None:
        connection.recovery_timer = None
        if connection.transport is None and not connection.closed:
            self._remove(connection, "the connection was not recovered in time")

    def _remove(self, connection: ClientConnection, reason: str | None) -> None:
        connection.closed = True
        self._connections.pop(connection.connection_id, None)
        for group in list(connection.groups):
            self.leave(connection, group)
        if connection.user_id is not None:
            members = self._user_connections.get((connection.hub, connection.user_id))
            if members is not None:
                members.discard(connection.connection_id)
                if not members:
                    del self._user_connections[(connection.hub, connection.user_id)]
        context = connection.event_context()
        event_id = connection.next_event_id()
        dispatcher = self.dispatcher

        body = connection.disconnected_body(reason)

        async def send_disconnected() -> None:
            await dispatcher.notify(context, "disconnected", body, event_id)

        connection.lane.submit(send_disconnected)
        connection.lane.finish()
        self._finishing_lanes.add(connection.lane)
        connection.lane.when_finished(self._lane_finished)
        self.changed.set()
        logger.info("disconnected %s hub=%s: %s", connection.connection_id, connection.hub, reason)

    def _lane_finished(self, lane: EventLane) -> None:
        self._finishing_lanes.discard(lane)
        self.changed.set()

    def is_quiet(self) -> bool:
        """No connection is open or recoverable, and every ended one has sent its last event."""
        return not self._connections and not self._finishing_lanes

    # ----- groups and users -----------------------------------------------------------------

    def join(self, connection: ClientConnection, group: str) -> None:
        connection.groups.add(group)
        self._group_members[(connection.hub, group)].add(connection.connection_id)

    def leave(self, connection: ClientConnection, group: str) -> None:
        connection.groups.discard(group)
        members = self._group_members.get((connection.hub, group))
        if members is not None:
            members.discard(connection.connection_id)
            if not members:
                del self._group_members[(connection.hub, group)]

    def by_id(self, connection_id: str) -> ClientConnection | None:
        """A connection of any hub: MQTT client ids must not collide with another hub's or protocol's."""
        return self._connections.get(connection_id)

    def get(self, hub: str, connection_id: str) -> ClientConnection | None:
        connection = self._connections.get(connection_id)
        return connection if connection is not None and connection.hub == hub else None

    def in_hub(self, hub: str) -> list[ClientConnection]:
        return [connection for connection in self._connections.values() if connection.hub == hub]

    def in_group(self, hub: str, group: str) -> list[ClientConnection]:
        ids = self._group_members.get((hub, group), set())
        return [self._connections[connection_id] for connection_id in sorted(ids)]

    def of_user(self, hub: str, user_id: str) -> list[ClientConnection]:
        ids = self._user_connections.get((hub, user_id), set())
        return [self._connections[connection_id] for connection_id in sorted(ids)]

    def add_user_to_group(self, hub: str, user_id: str, group: str) -> bool:
        """Join the user's *current* connections to the group; False when the user has none.

        As in the service, nothing is remembered for the user: a connection made later is not
        in the group (Azure/azure-webpubsub#325).
        """
        connections = self.of_user(hub, user_id)
        for connection in connections:
            self.join(connection, group)
        return bool(connections)

    def remove_user_from_group(self, hub: str, user_id: str, group: str) -> None:
        for connection in self.of_user(hub, user_id):
            self.leave(connection, group)

    def remove_user_from_all_groups(self, hub: str, user_id: str) -> None:
        for connection in self.of_user(hub, user_id):
            for group in list(connection.groups):
                self.leave(connection, group)

    def snapshot(self) -> list[dict[str, object]]:
        """A JSON-friendly view for the debug route and for tests."""
        return [
            {
                "connectionId": connection.connection_id,
                "hub": connection.hub,
                "userId": connection.user_id,
                "mode": connection.mode,
                "groups": sorted(connection.groups),
                "roles": list(connection.roles),
                "attached": connection.transport is not None,
                "unacked": len(connection.unacked),
            }
            for connection in self._connections.values()
        ]

    # ----- data messages --------------------------------------------------------------------

    def send_from_server(
        self, connections: Iterable[ClientConnection], payload: Payload, *, group: str | None = None
    ) -> None:
        """A REST message: to a group's members as a group message for MQTT clients (topic = group),
        else on ``$webpubsub/server/messages``; published with QoS 1."""
        topic = group if group is not None else SERVER_MESSAGES_TOPIC
        render = _once_per_codec(lambda codec, sequence_id: codec.server_message(payload, sequence_id))
        for connection in list(connections):
            self._deliver(connection, payload, render, topic=topic, qos=1)

    def send_from_client(
        self, sender: ClientConnection, group: str, payload: Payload, *, no_echo: bool, qos: int = 1
    ) -> None:
        """A client's group message; ``qos`` is an MQTT publisher's (a PubSub client's counts as 1)."""
        render = _once_per_codec(
            lambda codec, sequence_id: codec.group_message(group, sender.user_id, payload, sequence_id)
        )
        for connection in self.in_group(sender.hub, group):
            if connection is sender:
                subscription = connection.mqtt.subscription(group) if connection.mqtt is not None else None
                if no_echo or (subscription is not None and subscription.no_local):
                    continue
            self._deliver(connection, payload, render, topic=group, qos=qos)

    def acknowledge(self, connection: ClientConnection, sequence_id: int) -> None:
        """The client has everything up to ``sequence_id``: stop keeping it for replay."""
        while connection.unacked:
            first = next(iter(connection.unacked))
            if first > sequence_id:
                break
            connection.unacked.popitem(last=False)

    def _deliver(
        self,
        connection: ClientConnection,
        payload: Payload,
        render: Callable[[Codec, int | None], Frame],
        *,
        topic: str,
        qos: int,
    ) -> None:
        """Queue a data message: ``render`` makes a PubSub client's frame; a simple client gets the raw
        data, an MQTT client a PUBLISH to ``topic`` at min(``qos``, its subscription's QoS)."""
        if connection.closed:
            return
        frame: Frame
        codec = connection.codec
        if connection.mqtt is not None:
            session = connection.mqtt
            delivery_qos = session.delivery_qos(topic, qos)
            if delivery_qos == 0 and connection.transport is None:
                return  # QoS 0 is not kept for an offline session
            packet = session.publish(topic, payload, delivery_qos)
            if packet is None:
                self.close(connection, "too many unacknowledged messages", code=1008, mqtt_code=QUOTA_EXCEEDED)
                return
            frame = packet
        elif codec is None:
            frame = payload.body if payload.data_type in ("binary", "protobuf") else payload.body.decode("utf-8")
        elif not connection.reliable:
            frame = render(codec, None)
        else:
            sequence_id = connection.next_sequence_id()
            frame = render(codec, sequence_id)
            connection.unacked[sequence_id] = frame
            if len(connection.unacked) > self.settings.reliable_buffer_messages:
                self.close(connection, "the reliable message buffer is full", code=1008)
                return
        if connection.transport is not None and not connection.transport.send(frame):
            self.close(connection, "SlowClient", code=1008)


def _once_per_codec(render: Callable[[Codec, int | None], Frame]) -> Callable[[Codec, int | None], Frame]:
    """``render``, remembering its frame per codec when there is no sequence id.

    Every recipient of one message with the same subprotocol and no sequence id gets the same
    frame, so it is rendered once, not once per member of the group (a JSON encode, and a JSON
    decode of the payload, per recipient was a sixth of the service's time in a busy chat).
    """
    rendered: dict[int, Frame] = {}

    def cached(codec: Codec, sequence_id: int | None) -> Frame:
        if sequence_id is not None:
            return render(codec, sequence_id)
        frame = rendered.get(id(codec))
        if frame is None:
            frame = rendered[id(codec)] = render(codec, None)
        return frame

    return cached
