"""The MQTT client endpoint, ``/clients/mqtt/hubs/{hub}``: MQTT 3.1.1 and 5.0 over WebSocket.

As the service documents it (MicrosoftDocs azure-docs ``articles/azure-web-pubsub``:
``howto-connect-mqtt-websocket-client.md``, ``reference-mqtt-cloud-events.md``,
``reference-mqtt-support-status.md``): the client offers the ``mqtt`` subprotocol and brings an
access token made for the MQTT client type (``access_token`` query or ``Authorization: Bearer``);
a missing or bad token is refused before the upgrade, like on the other endpoint. Then every
CONNECT becomes a ``connect`` event whose answer decides the CONNACK; ``connected`` follows only
for a new session, ``disconnected`` when a session ends (its expiry interval, at most 30 s, after
its last WebSocket closed). Topics are groups: SUBSCRIBE needs the right to join the group,
PUBLISH the right to send to it, and ``$webpubsub/server/events/{event}`` is a request to the
event handler whose answer comes back on ``.../{event}/succeeded`` or ``/failed``. Not served:
wildcard and shared subscriptions, retained messages, topic aliases, enhanced authentication
(as in the service), and keep-alive enforcement, receive-maximum flow control and will delays.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from .client_endpoint import (
    HUB_NAME,
    HandshakeRefusal,
    apply_connect_response,
    authenticate,
    connect_event_body,
    refuse_handshake,
)
from .connections import ClientConnection, ConnectionManager, Transport
from .mqtt_packets import (
    ASSIGNED_CLIENT_IDENTIFIER,
    CONTENT_TYPE,
    CORRELATION_DATA,
    MQTT_V5,
    MQTT_V311,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    REASON_STRING,
    RETAIN_AVAILABLE,
    SESSION_EXPIRY_INTERVAL,
    SHARED_SUBSCRIPTION_AVAILABLE,
    TOPIC_ALIAS,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    Auth,
    Connect,
    Disconnect,
    MalformedPacket,
    PacketReader,
    PingReq,
    ProtocolViolation,
    PubAck,
    Publish,
    Subscribe,
    Unsubscribe,
    Will,
    encode_connack,
    encode_pingresp,
    encode_pub_response,
    encode_suback,
    encode_unsuback,
)
from .mqtt_session import (
    CLIENT_IDENTIFIER_NOT_VALID,
    DISCONNECT_WITH_WILL_MESSAGE,
    EVENT_TOPIC_PREFIX,
    MALFORMED_PACKET,
    NOT_AUTHORIZED,
    PAYLOAD_FORMAT_INVALID,
    PROTOCOL_ERROR,
    RETAIN_NOT_SUPPORTED,
    SERVER_UNAVAILABLE,
    SESSION_TAKEN_OVER,
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
    SUBACK_FAILURE_V311,
    TOPIC_ALIAS_INVALID,
    TOPIC_FILTER_INVALID,
    TOPIC_NAME_INVALID,
    V311_IDENTIFIER_REJECTED,
    V311_SERVER_UNAVAILABLE,
    V311_UNACCEPTABLE_PROTOCOL_VERSION,
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
    DisconnectRecord,
    MqttSession,
    MqttSubscription,
    connack_refusal,
    is_valid_client_id,
    payload_from_mqtt,
    user_properties_json,
    user_properties_of,
)
from .permissions import GroupAction, is_valid_group_name
from .protocol import Payload, is_valid_event_name
from .settings import ServiceSettings
from .tokens import ClientIdentity, TokenKeys
from .upstream import EventContext, UpstreamDispatcher

__all__ = ["MQTT_PATH", "MQTT_SUBPROTOCOL", "MqttEndpoint"]

logger = logging.getLogger("devstack.webpubsub.mqtt")

MQTT_SUBPROTOCOL = "mqtt"
MQTT_PATH = "/clients/mqtt/hubs/{hub}"
#: The client path MQTT tokens name in their audience (``:generateToken?clientType=MQTT``).
MQTT_CLIENT_PATH = "clients/mqtt"
_MAX_PACKET_BYTES = 1024 * 1024
#: Topics under this prefix are the service's own, never groups.
_SERVICE_TOPICS = "$webpubsub/"


class _Closing(Exception):
    """The service ends the physical connection: MQTT 5.0 clients get a DISCONNECT with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MqttEndpoint:
    """Serves ``/clients/mqtt/hubs/{hub}`` (see ``handle``)."""

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
        self.endpoint = endpoint
        self.keys = TokenKeys.of(settings)

    async def handle(self, websocket: WebSocket) -> None:
        await websocket.receive()  # websocket.connect: the handshake is ours to answer
        raw_hub = websocket.path_params.get("hub", "")
        if not HUB_NAME.fullmatch(raw_hub):
            await refuse_handshake(websocket, 400, "The hub name is missing or invalid.")
            return
        offered = [str(name) for name in websocket.scope.get("subprotocols", [])]
        if MQTT_SUBPROTOCOL not in (name.lower() for name in offered):
            await refuse_handshake(websocket, 400, "MQTT clients must offer the 'mqtt' WebSocket subprotocol.")
            return
        try:
            identity = authenticate(
                websocket, self.keys.client, endpoint=self.endpoint(), hub=raw_hub, client_path=MQTT_CLIENT_PATH
            )
        except HandshakeRefusal as refusal:
            await refuse_handshake(websocket, refusal.status, refusal.reason)
            return
        try:
            await websocket.accept(subprotocol=MQTT_SUBPROTOCOL)
        except OSError:
            return
        transport = Transport(websocket, self.settings.outbound_queue_frames)
        physical = _Physical(self, websocket, transport, raw_hub.lower(), identity, offered)
        writer = asyncio.get_running_loop().create_task(transport.run_writer())
        try:
            await physical.run()
        finally:
            if transport.close_request is not None:
                await asyncio.wait({writer}, timeout=1.0)
            writer.cancel()


class _Physical:
    """One WebSocket of an MQTT client: its CONNECT, then its packets until it ends."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        websocket: WebSocket,
        transport: Transport,
        hub: str,
        identity: ClientIdentity,
        offered: list[str],
    ) -> None:
        self.endpoint = endpoint
        self.manager = endpoint.manager
        self.websocket = websocket
        self.transport = transport
        self.hub = hub
        self.identity = identity
        self.offered = offered
        self.reader = PacketReader(_MAX_PACKET_BYTES)
        self.physical_id = uuid.uuid4().hex
        self.connection: ClientConnection | None = None
        self.client_disconnect: DisconnectRecord | None = None
        self.close_code = 1006

    @property
    def version(self) -> int:
        return self.reader.version or MQTT_V311

    async def run(self) -> None:
        pending: list[Any] = []
        try:
            while not pending:
                chunk = await self._receive()
                if chunk is None:
                    return
                pending = list(self.reader.feed(chunk))
            first = pending.pop(0)
            assert isinstance(first, Connect)
            if not await self._open(first):
                return
            while True:
                for packet in pending:
                    await self._on_packet(packet)
                    if self.client_disconnect is not None:
                        return
                chunk = await self._receive()
                if chunk is None:
                    return
                pending = list(self.reader.feed(chunk))
        except (MalformedPacket, ProtocolViolation, _Closing) as error:
            code = (
                error.code
                if isinstance(error, _Closing)
                else (MALFORMED_PACKET if isinstance(error, MalformedPacket) else PROTOCOL_ERROR)
            )
            self._close_for(code, str(error))
        finally:
            self._ended()

    async def _receive(self) -> bytes | None:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self.close_code = int(message.get("code", 1006))
            return None
        if message.get("bytes") is None:
            raise _Closing(PROTOCOL_ERROR, "MQTT packets must be sent in binary WebSocket frames")
        data: bytes = message["bytes"]
        return data

    # ----- CONNECT ------------------------------------------------------------------------

    async def _open(self, connect: Connect) -> bool:
        """Answer the CONNECT with a CONNACK; True when a session now serves this socket."""
        version = connect.protocol_version
        if version not in (MQTT_V311, MQTT_V5) or connect.protocol_name != "MQTT":
            self._refuse(MQTT_V311, V311_UNACCEPTABLE_PROTOCOL_VERSION, "unsupported MQTT protocol version")
            return False
        client_id, assigned = connect.client_id, False
        if not client_id and (version == MQTT_V5 or connect.clean_start):
            client_id, assigned = uuid.uuid4().hex, True
        existing = self.manager.by_id(client_id) if client_id else None
        if not is_valid_client_id(client_id) or (
            existing is not None and (existing.mqtt is None or existing.hub != self.hub)
        ):
            code = CLIENT_IDENTIFIER_NOT_VALID if version == MQTT_V5 else V311_IDENTIFIER_REJECTED
            self._refuse(version, code, "client identifiers are 1 to 128 letters and digits, unique in the service")
            return False
        if connect.properties.get(0x15) is not None:  # Authentication Method: enhanced auth is not served
            self._refuse(version, 0x8C, "enhanced authentication is not supported")
            return False

        origin_host = urlsplit(self.endpoint.endpoint()).hostname or "localhost"
        user_id, roles, groups = self.identity.user_id, list(self.identity.roles), list(self.identity.groups)
        context = EventContext(
            self.hub, client_id, user_id, MQTT_SUBPROTOCOL, None, origin_host, physical_connection_id=self.physical_id
        )
        body = connect_event_body(self.websocket, self.identity, self.offered)
        body["mqtt"] = _connect_properties(connect)
        outcome = await self.endpoint.dispatcher.connect(context, body)
        connack_user: tuple[tuple[str, str], ...] = ()
        connection_state: str | None = None
        if outcome is not None:
            if not outcome.accepted:
                code, reason, user = connack_refusal(version, outcome.status, outcome.body)
                logger.info("MQTT connect of %s refused by the event handler: CONNACK 0x%02x", client_id, code)
                self._refuse(version, code, reason, user)
                return False
            connection_state = outcome.connection_state or None
            answer = outcome.body or {}
            try:
                user_id, roles, groups, _ = apply_connect_response(
                    answer, user_id, roles, groups, MQTT_SUBPROTOCOL, self.offered
                )
                mqtt_answer = answer.get("mqtt")
                if isinstance(mqtt_answer, dict):
                    connack_user = user_properties_of(mqtt_answer.get("userProperties"))
            except ValueError as error:
                logger.warning("MQTT connect response rejected: %s", error)
                code = SERVER_UNAVAILABLE if version == MQTT_V5 else V311_SERVER_UNAVAILABLE
                self._refuse(version, code, "the event handler's connect response is invalid")
                return False

        requested = connect.properties.get(SESSION_EXPIRY_INTERVAL, 0) if version == MQTT_V5 else None
        window = self.endpoint.settings.recovery_window_seconds
        expiry = (0.0 if connect.clean_start else window) if requested is None else min(float(requested), window)
        properties: dict[int, Any] = {}
        if version == MQTT_V5:
            properties = {RETAIN_AVAILABLE: 0, WILDCARD_SUBSCRIPTION_AVAILABLE: 0, SHARED_SUBSCRIPTION_AVAILABLE: 0}
            if assigned:
                properties[ASSIGNED_CLIENT_IDENTIFIER] = client_id
            if requested is not None and requested > window:
                properties[SESSION_EXPIRY_INTERVAL] = int(window)

        existing = self.manager.get(self.hub, client_id)  # again: the event handler took its time
        resumed = existing is not None and existing.mqtt is not None and not connect.clean_start
        if existing is not None and not resumed:
            self.manager.close(existing, "Session taken over by a new connection.", mqtt_code=SESSION_TAKEN_OVER)
        self.transport.send(encode_connack(version, resumed, 0, properties, connack_user))
        if resumed:
            assert existing is not None
            assert existing.mqtt is not None
            connection, session = existing, existing.mqtt
            if existing.transport is not None:
                farewell = session.farewell(SESSION_TAKEN_OVER, "Session taken over by a new connection.")
                existing.transport.close(1000, "session taken over", final=False, last_frame=farewell)
            session.version, session.physical_connection_id = version, self.physical_id
            session.expiry_seconds, session.will = expiry, connect.will
            self.manager.attach(connection, self.transport, replay=False)
            for packet in session.redelivery():
                self.transport.send(packet)
            logger.info("MQTT session %s resumed (%d messages redelivered)", client_id, len(session.outbound))
        else:
            session = MqttSession(
                version=version,
                client_id=client_id,
                physical_connection_id=self.physical_id,
                expiry_seconds=expiry,
                will=connect.will,
                max_in_flight=self.endpoint.settings.reliable_buffer_messages,
            )
            connection = ClientConnection(
                connection_id=client_id,
                hub=self.hub,
                user_id=user_id,
                roles=roles,
                subprotocol=MQTT_SUBPROTOCOL,
                origin_host=origin_host,
                connection_state=connection_state,
                mqtt=session,
            )
            self.manager.attach(connection, self.transport, replay=False)
            self.manager.register(connection, groups)
            context, event_id = connection.event_context(), connection.next_event_id()
            dispatcher = self.endpoint.dispatcher

            async def send_connected() -> None:
                await dispatcher.notify(context, "connected", {}, event_id)

            connection.lane.submit(send_connected)
        self.connection = connection
        return True

    def _refuse(self, version: int, code: int, reason: str | None, user: tuple[tuple[str, str], ...] = ()) -> None:
        """A failed CONNACK, then the socket closes (no session, no ``disconnected``)."""
        values = {REASON_STRING: reason} if reason and version == MQTT_V5 else None
        packet = encode_connack(version, False, code, values, user if version == MQTT_V5 else ())
        self.transport.close(1000, "connection refused", final=True, last_frame=packet)

    # ----- packets after CONNECT ----------------------------------------------------------

    async def _on_packet(self, packet: Any) -> None:
        connection, session = self._session()
        if isinstance(packet, Publish):
            await self._on_publish(connection, session, packet)
        elif isinstance(packet, PubAck):
            self._on_ack(session, packet)
        elif isinstance(packet, Subscribe):
            self._on_subscribe(connection, session, packet)
        elif isinstance(packet, Unsubscribe):
            self._on_unsubscribe(connection, session, packet)
        elif isinstance(packet, PingReq):
            self.transport.send(encode_pingresp())
        elif isinstance(packet, Disconnect):
            self._on_disconnect(session, packet)
        elif isinstance(packet, Auth):
            raise _Closing(PROTOCOL_ERROR, "enhanced authentication is not supported")

    def _session(self) -> tuple[ClientConnection, MqttSession]:
        connection = self.connection
        assert connection is not None
        assert connection.mqtt is not None
        return connection, connection.mqtt

    async def _on_publish(self, connection: ClientConnection, session: MqttSession, publish: Publish) -> None:
        if publish.properties.get(TOPIC_ALIAS) is not None:
            raise _Closing(TOPIC_ALIAS_INVALID, "topic aliases are not supported")
        if publish.retain and session.v5:
            raise _Closing(RETAIN_NOT_SUPPORTED, "retained messages are not supported")
        if not publish.topic or "+" in publish.topic or "#" in publish.topic:
            raise _Closing(TOPIC_NAME_INVALID, "a PUBLISH topic must be a non-empty name without wildcards")
        if publish.qos == 2 and publish.packet_id in session.inbound_qos2:
            self._acknowledge(session, publish, 0)  # a resent QoS 2 message: already delivered once
            return
        try:
            payload = payload_from_mqtt(session.version, publish.properties.get(CONTENT_TYPE), publish.payload)
        except ValueError:
            self._acknowledge(session, publish, PAYLOAD_FORMAT_INVALID)
            return
        if publish.topic.startswith(EVENT_TOPIC_PREFIX):
            event_name = publish.topic[len(EVENT_TOPIC_PREFIX) :]
            if not is_valid_event_name(event_name):
                self._acknowledge(session, publish, TOPIC_NAME_INVALID)
                return
            self._acknowledge(session, publish, 0)
            await self._request(connection, session, publish, event_name, payload)
            return
        group = publish.topic
        if group.startswith(_SERVICE_TOPICS) or not is_valid_group_name(group):
            self._acknowledge(session, publish, TOPIC_NAME_INVALID)
            return
        if not connection.permissions.allows(GroupAction.SEND, group):
            # 3.1.1 cannot say no: the message is acknowledged and dropped (MQTT-3.3.5-2).
            self._acknowledge(session, publish, NOT_AUTHORIZED)
            return
        self.manager.send_from_client(connection, group, payload, no_echo=False, qos=publish.qos)
        self._acknowledge(session, publish, 0)

    def _acknowledge(self, session: MqttSession, publish: Publish, code: int) -> None:
        if publish.packet_id is None:
            return
        if publish.qos == 1:
            self.transport.send(encode_pub_response(PUBACK, session.version, publish.packet_id, code))
        else:
            if code < 0x80:
                session.inbound_qos2.add(publish.packet_id)
            self.transport.send(encode_pub_response(PUBREC, session.version, publish.packet_id, code))

    async def _request(
        self, connection: ClientConnection, session: MqttSession, publish: Publish, event_name: str, payload: Payload
    ) -> None:
        """``$webpubsub/server/events/{event}``: a user event; the answer is published back to the client."""
        await connection.lane.capacity.acquire()
        event_id, context = connection.next_event_id(), connection.event_context()
        headers = tuple((f"mqtt-{name}", value) for name, value in publish.properties.user)
        correlation = publish.properties.get(CORRELATION_DATA)
        dispatcher, manager = self.endpoint.dispatcher, self.manager

        async def send_request() -> None:
            try:
                outcome = await dispatcher.user_event(context, event_name, payload, event_id, headers)
                if connection.closed:
                    return
                if outcome.connection_state is not None:
                    connection.connection_state = outcome.connection_state or None
                outcome_name = "succeeded" if outcome.succeeded else "failed"
                reply = outcome.reply
                if reply is None and outcome.error_text:
                    reply = Payload("text", outcome.error_text.encode())
                user = outcome.mqtt_headers
                if outcome.status is not None:
                    user += (("azure-status-code", str(outcome.status)),)
                extra = {CORRELATION_DATA: correlation} if correlation is not None else None
                if publish.qos == 0 and connection.transport is None:
                    return
                topic = f"{EVENT_TOPIC_PREFIX}{event_name}/{outcome_name}"
                packet = session.publish(topic, reply or Payload("binary", b""), publish.qos, user=user, extra=extra)
                if packet is None:
                    manager.close(connection, "too many unacknowledged messages", code=1008)
                elif connection.transport is not None:
                    connection.transport.send(packet)
            finally:
                connection.lane.capacity.release()

        connection.lane.submit(send_request)

    def _on_ack(self, session: MqttSession, ack: PubAck) -> None:
        if ack.kind == PUBACK:
            session.outbound.pop(ack.packet_id, None)
        elif ack.kind == PUBREC:
            if session.outbound.pop(ack.packet_id, None) is not None and ack.reason_code < 0x80:
                session.released[ack.packet_id] = None
                self.transport.send(encode_pub_response(PUBREL, session.version, ack.packet_id))
        elif ack.kind == PUBREL:
            known = ack.packet_id in session.inbound_qos2
            session.inbound_qos2.discard(ack.packet_id)
            code = 0 if known else 0x92  # 5.0: packet identifier not found
            self.transport.send(encode_pub_response(PUBCOMP, session.version, ack.packet_id, code))
        else:
            session.released.pop(ack.packet_id, None)

    def _on_subscribe(self, connection: ClientConnection, session: MqttSession, subscribe: Subscribe) -> None:
        codes: list[int] = []
        subscription_id = subscribe.properties.subscription_ids[0] if subscribe.properties.subscription_ids else None
        for item in subscribe.subscriptions:
            topic = item.topic_filter
            refusal: int | None = None
            if topic.startswith("$share/"):
                refusal = SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            elif "+" in topic or "#" in topic:
                refusal = WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
            elif not topic.startswith(_SERVICE_TOPICS):
                if not is_valid_group_name(topic):
                    refusal = TOPIC_FILTER_INVALID
                elif not connection.permissions.allows(GroupAction.JOIN_LEAVE, topic):
                    refusal = NOT_AUTHORIZED
            if refusal is not None:
                codes.append(refusal if session.v5 else SUBACK_FAILURE_V311)
                continue
            session.subscriptions[topic] = MqttSubscription(item.qos, item.no_local and session.v5, subscription_id)
            if not topic.startswith(_SERVICE_TOPICS):
                self.manager.join(connection, topic)
            codes.append(item.qos)
        self.transport.send(encode_suback(session.version, subscribe.packet_id, codes))

    def _on_unsubscribe(self, connection: ClientConnection, session: MqttSession, unsubscribe: Unsubscribe) -> None:
        codes: list[int] = []
        for topic in unsubscribe.topic_filters:
            group = not topic.startswith(_SERVICE_TOPICS)
            if group and not connection.permissions.allows(GroupAction.JOIN_LEAVE, topic):
                codes.append(NOT_AUTHORIZED)
                continue
            existed = session.subscriptions.pop(topic, None) is not None or topic in connection.groups
            if group:
                self.manager.leave(connection, topic)
            codes.append(0 if existed else 0x11)  # 0x11: no subscription existed
        self.transport.send(encode_unsuback(session.version, unsubscribe.packet_id, codes))

    def _on_disconnect(self, session: MqttSession, disconnect: Disconnect) -> None:
        properties = disconnect.properties
        self.client_disconnect = DisconnectRecord(
            initiated_by_client=True,
            packet_code=disconnect.reason_code,
            user_properties=properties.user if session.v5 else None,
            reason=properties.get(REASON_STRING),
        )
        requested = properties.get(SESSION_EXPIRY_INTERVAL)
        if requested is not None:
            session.expiry_seconds = min(float(requested), self.endpoint.settings.recovery_window_seconds)
        if disconnect.reason_code != DISCONNECT_WITH_WILL_MESSAGE:
            session.will = None  # a normal DISCONNECT discards the will
        self.transport.close(1000, "", final=False)

    # ----- the end of the socket -----------------------------------------------------------

    def _close_for(self, code: int, reason: str) -> None:
        """The service closes this socket for a protocol error; the session follows its expiry."""
        connection = self.connection
        session = connection.mqtt if connection is not None else None
        logger.info("MQTT connection %s closed: %s", connection.connection_id if connection else "-", reason)
        if session is not None:
            self.client_disconnect = DisconnectRecord(False, code if session.v5 else None, None, reason)
            self.transport.close(1000, reason, final=False, last_frame=session.farewell(code, reason))
        else:
            self.transport.close(1002, reason, final=True)

    def _ended(self) -> None:
        connection = self.connection
        if connection is None or connection.transport is not self.transport:
            return  # never opened, or taken over by a newer socket
        session = connection.mqtt
        assert session is not None
        if not connection.closed:
            record = self.client_disconnect or DisconnectRecord(
                False, None, None, f"The connection was lost (close code {self.close_code})."
            )
            session.last_disconnect = record
            if session.will is not None:
                self._publish_will(connection, session.will, session.version)
                session.will = None
        self.manager.detach(connection, self.transport, recoverable=True, reason=None)

    def _publish_will(self, connection: ClientConnection, will: Will, version: int) -> None:
        topic = will.topic
        if not topic or "+" in topic or "#" in topic or topic.startswith(_SERVICE_TOPICS):
            return
        if not is_valid_group_name(topic) or not connection.permissions.allows(GroupAction.SEND, topic):
            return
        try:
            payload = payload_from_mqtt(version, will.properties.get(CONTENT_TYPE), will.payload)
        except ValueError:
            return
        self.manager.send_from_client(connection, topic, payload, no_echo=False, qos=will.qos)


def _connect_properties(connect: Connect) -> dict[str, Any]:
    """The ``mqtt`` part of the ``connect`` event (``reference-mqtt-cloud-events.md``)."""
    user = connect.properties.user
    return {
        "protocolVersion": connect.protocol_version,
        "cleanStart": connect.clean_start,
        "username": connect.username,
        "password": base64.b64encode(connect.password).decode("ascii") if connect.password is not None else None,
        "userProperties": user_properties_json(user) if connect.protocol_version == MQTT_V5 and user else None,
    }
