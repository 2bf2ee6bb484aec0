"""An MQTT-over-WebSocket test client: paho-mqtt (the client the service's docs use for Python), made synchronous.

Each call waits for the broker's answer (CONNACK, SUBACK, PUBACK...) and returns its codes, so a
test reads top to bottom. MQTT 3.1.1 answers come back as paho reports them: paho turns a 3.1.1
CONNACK return code into the 5.0 reason code of the same meaning (5 → 135, 3 → 136, ...);
``V311_RETURN_CODES`` turns them back.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

MQTT_V311 = MQTTProtocolVersion.MQTTv311
MQTT_V5 = MQTTProtocolVersion.MQTTv5
#: paho's 5.0 reason code for each MQTT 3.1.1 CONNACK return code.
V311_RETURN_CODES = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


def mqtt_token(endpoint: str, hub: str, key: str, *, expires_in: float = 3600, **claims: Any) -> str:
    """An MQTT client access token (audience ``<endpoint>/clients/mqtt/hubs/<hub>``), made with PyJWT."""
    payload = {"aud": f"{endpoint}/clients/mqtt/hubs/{hub}", "exp": int(time.time() + expires_in), **claims}
    return jwt.encode(payload, key.encode(), algorithm="HS256")


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Connack:
    reason_code: int
    session_present: bool
    reason_string: str | None
    user_properties: list[tuple[str, str]]
    assigned_client_id: str | None

    @property
    def v311_code(self) -> int:
        return V311_RETURN_CODES[self.reason_code]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    content_type: str | None
    user_properties: list[tuple[str, str]]
    correlation_data: bytes | None


class MqttTestClient:
    """One paho client on ``ws://<endpoint>/clients/mqtt/hubs/<hub>`` with its network loop in a thread."""

    def __init__(
        self,
        endpoint: str,
        hub: str,
        token: str | None,
        *,
        client_id: str,
        version: MQTTProtocolVersion = MQTT_V5,
        clean_start: bool = True,
        token_in_header: bool = False,
    ) -> None:
        self.version = version
        self.clean_start = clean_start
        parts = urlsplit(endpoint)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            transport="websockets",
            protocol=version,
            reconnect_on_failure=False,
            clean_session=None if version == MQTT_V5 else clean_start,
        )
        path = f"/clients/mqtt/hubs/{hub}"
        headers: dict[str, str] = {}
        if token is not None and token_in_header:
            headers["Authorization"] = f"Bearer {token}"
        elif token is not None:
            path += f"?access_token={token}"
        self.client.ws_set_options(path=path, headers=headers or None)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.disconnects: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self._connack: queue.Queue[Connack] = queue.Queue()
        self._acks: dict[int, queue.Queue[list[int]]] = {}
        self._lock = threading.Lock()
        client = self.client
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_codes
        client.on_unsubscribe = self._on_codes
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect

    # ----- calls ---------------------------------------------------------------------------

    def connect(
        self,
        *,
        session_expiry: int | None = None,
        username: str | None = None,
        password: bytes | None = None,
        user_properties: list[tuple[str, str]] | None = None,
        will: tuple[str, bytes, int] | None = None,
        timeout: float = 5.0,
    ) -> Connack:
        client = self.client
        if username is not None or password is not None:
            client.username_pw_set(username, password)  # type: ignore[arg-type]
        if will is not None:
            client.will_set(will[0], will[1], qos=will[2])
        properties: Properties | None = None
        if self.version == MQTT_V5:
            properties = _properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                properties.SessionExpiryInterval = session_expiry
            if user_properties:
                properties.UserProperty = user_properties
            client.connect(self.host, self.port, 30, clean_start=self.clean_start, properties=properties)
        else:
            client.connect(self.host, self.port, 30)
        client.loop_start()
        return self._connack.get(timeout=timeout)

    def subscribe(self, topic: str, qos: int = 1, *, no_local: bool = False, timeout: float = 5.0) -> list[int]:
        """The SUBACK's codes (granted QoS, or a failure code)."""
        if self.version == MQTT_V5:
            options = SubscribeOptions(qos=qos, noLocal=no_local)
            return self._await_codes(lambda: self.client.subscribe(topic, options=options), timeout)
        return self._await_codes(lambda: self.client.subscribe(topic, qos=qos), timeout)

    def unsubscribe(self, topic: str, timeout: float = 5.0) -> list[int]:
        return self._await_codes(lambda: self.client.unsubscribe(topic), timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        *,
        content_type: str | None = None,
        user_properties: list[tuple[str, str]] | None = None,
        correlation_data: bytes | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Publish; for QoS 1 and 2 wait for the broker's acknowledgement and return its reason code."""
        properties: Properties | None = None
        if self.version == MQTT_V5:
            properties = _properties(PacketTypes.PUBLISH)
            if content_type is not None:
                properties.ContentType = content_type
            if user_properties:
                properties.UserProperty = user_properties
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
        with self._lock:
            info = self.client.publish(topic, payload, qos=qos, properties=properties)
            waiter: queue.Queue[list[int]] = self._acks.setdefault(info.mid, queue.Queue())
        if qos == 0:
            return 0
        return waiter.get(timeout=timeout)[0]

    def next_message(self, timeout: float = 5.0) -> Received:
        return self.messages.get(timeout=timeout)

    def no_message(self, wait: float = 0.3) -> bool:
        try:
            self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def disconnect(self, *, reason_code: int = 0, user_properties: list[tuple[str, str]] | None = None) -> None:
        """A DISCONNECT packet, then the client closes its socket."""
        properties: Properties | None = None
        if self.version == MQTT_V5 and user_properties:
            properties = _properties(PacketTypes.DISCONNECT)
            properties.UserProperty = user_properties
        code = ReasonCode(PacketTypes.DISCONNECT, identifier=reason_code) if self.version == MQTT_V5 else None
        self.client.disconnect(reasoncode=code, properties=properties)
        self.client.loop_stop()

    def drop(self) -> None:
        """Lose the network: the socket closes without DISCONNECT (and without a WebSocket close frame)."""
        self.client._thread_terminate = True
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            getattr(sock, "_socket").close()  # noqa: B009 - paho's WebSocket wrapper keeps the TCP socket there

    def stop(self) -> None:
        """Disconnect if still connected, and close the socket in any case (a refused client keeps it open)."""
        self.client.loop_stop()
        if self.client.is_connected():
            self.client.disconnect()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    # ----- callbacks -----------------------------------------------------------------------

    def _await_codes(self, call: Any, timeout: float) -> list[int]:
        with self._lock:
            _, mid = call()
            waiter: queue.Queue[list[int]] = self._acks.setdefault(mid, queue.Queue())
        return waiter.get(timeout=timeout)

    def _on_connect(self, client: paho.Client, _: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        values = properties if isinstance(properties, Properties) else None
        self._connack.put(
            Connack(
                reason_code=reason.value,
                session_present=bool(flags.session_present),
                reason_string=getattr(values, "ReasonString", None),
                user_properties=list(getattr(values, "UserProperty", []) or []),
                assigned_client_id=getattr(values, "AssignedClientIdentifier", None),
            )
        )

    def _on_codes(self, _: paho.Client, __: Any, mid: int, codes: list[ReasonCode], ___: Any) -> None:
        with self._lock:
            waiter = self._acks.setdefault(mid, queue.Queue())
        waiter.put([code.value for code in codes])

    def _on_publish(self, _: paho.Client, __: Any, mid: int, reason: ReasonCode, ___: Any) -> None:
        with self._lock:
            waiter = self._acks.setdefault(mid, queue.Queue())
        waiter.put([reason.value])

    def _on_message(self, _: paho.Client, __: Any, message: paho.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        self.messages.put(
            Received(
                topic=message.topic,
                payload=message.payload,
                qos=message.qos,
                content_type=getattr(properties, "ContentType", None),
                user_properties=list(getattr(properties, "UserProperty", []) or []),
                correlation_data=getattr(properties, "CorrelationData", None),
            )
        )

    def _on_disconnect(self, _: paho.Client, __: Any, ___: Any, reason: ReasonCode, properties: Any) -> None:
        self.disconnects.put((reason.value, getattr(properties, "ReasonString", None)))
