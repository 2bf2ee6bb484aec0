"""The Azure Web PubSub CloudEvents upstream protocol, and nothing else.

The service POSTs every client event to the event handler in CloudEvents binary mode: attributes in
`ce-*` headers, the payload in the body. This module turns those headers and bytes into typed
events, checks `ce-signature` and the abuse-protection handshake, and renders typed results back
into status, headers and body. It is pure (no `azure.functions`, no SDKs, no settings) so it can be
tested alone and reused behind any web framework.

MQTT clients reach the same event handler: their events carry `ce-physicalConnectionId` (and, after
connect, `ce-sessionId`), their connect body an `mqtt` object, and a refused connect is answered
`{"mqtt": {"code": ...}}` with the CONNACK code for the client's protocol version.

References: https://learn.microsoft.com/azure/azure-web-pubsub/reference-cloud-events,
https://learn.microsoft.com/azure/azure-web-pubsub/reference-mqtt-cloud-events
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Literal

from shared.errors import AppError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.web import Response, error_response, json_body, json_response, utf8_text

logger = logging.getLogger(__name__)

# Request headers (lower-case: shared.web.Request stores them so).
HEADER_TYPE = "ce-type"
HEADER_SPEC_VERSION = "ce-specversion"
HEADER_AWPS_VERSION = "ce-awpsversion"
HEADER_ID = "ce-id"
HEADER_TIME = "ce-time"
HEADER_SOURCE = "ce-source"
HEADER_HUB = "ce-hub"
HEADER_CONNECTION_ID = "ce-connectionid"
HEADER_USER_ID = "ce-userid"
HEADER_EVENT_NAME = "ce-eventname"
HEADER_SUBPROTOCOL = "ce-subprotocol"
HEADER_SIGNATURE = "ce-signature"
HEADER_CONNECTION_STATE = "ce-connectionstate"
HEADER_REQUEST_ORIGIN = "webhook-request-origin"
# MQTT clients only: one id per network connection, one per session (absent from `connect`).
HEADER_PHYSICAL_CONNECTION_ID = "ce-physicalconnectionid"
HEADER_SESSION_ID = "ce-sessionid"
# Response headers, in the service's spelling.
RESPONSE_CONNECTION_STATE = "ce-connectionState"
RESPONSE_ALLOWED_ORIGIN = "WebHook-Allowed-Origin"

TYPE_CONNECT = "azure.webpubsub.sys.connect"
TYPE_CONNECTED = "azure.webpubsub.sys.connected"
TYPE_DISCONNECTED = "azure.webpubsub.sys.disconnected"
TYPE_GROUP_JOINED = "azure.webpubsub.gp.joined"
TYPE_GROUP_LEFT = "azure.webpubsub.gp.left"
USER_TYPE_PREFIX = "azure.webpubsub.user."

TEXT = "text/plain"
JSON = "application/json"
BINARY = "application/octet-stream"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# Subprotocols the app will select at connect, in the order it prefers them when a client offers several.
SUBPROTOCOLS = (
    "json.reliable.webpubsub.azure.v1",
    "json.webpubsub.azure.v1",
    "protobuf.reliable.webpubsub.azure.v1",
    "protobuf.webpubsub.azure.v1",
)

DataType = Literal["text", "json", "binary"]


class ClientProtocol(enum.StrEnum):
    """The client endpoints of a hub; each needs a token for its own URL (the token's audience).

    `socketio` is served by Web PubSub for Socket.IO resources only.
    """

    DEFAULT = "default"  # WebSocket, plain or with the json/protobuf subprotocols
    MQTT = "mqtt"
    SOCKETIO = "socketio"

    @property
    def path_prefix(self) -> str:
        """The client URL is `<endpoint><path_prefix><hub>`."""
        return _CLIENT_PATH_PREFIXES[self]


_CLIENT_PATH_PREFIXES = {
    ClientProtocol.DEFAULT: "/client/hubs/",
    ClientProtocol.MQTT: "/clients/mqtt/hubs/",
    ClientProtocol.SOCKETIO: "/clients/socketio/hubs/",
}


class EventKind(enum.StrEnum):
    CONNECT = "connect"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    GROUP_JOINED = "joined"
    GROUP_LEFT = "left"
    USER = "user"
    UNKNOWN = "unknown"


_SYSTEM_KINDS = {
    TYPE_CONNECT: EventKind.CONNECT,
    TYPE_CONNECTED: EventKind.CONNECTED,
    TYPE_DISCONNECTED: EventKind.DISCONNECTED,
    TYPE_GROUP_JOINED: EventKind.GROUP_JOINED,
    TYPE_GROUP_LEFT: EventKind.GROUP_LEFT,
}


def kind_of(event_type: str) -> EventKind:
    if event_type.startswith(USER_TYPE_PREFIX) and len(event_type) > len(USER_TYPE_PREFIX):
        return EventKind.USER
    return _SYSTEM_KINDS.get(event_type, EventKind.UNKNOWN)


class ConnectionState(MutableMapping[str, Any]):
    """Per-connection state the service stores for the app and replays on every event.

    Carried as base64(JSON object) in `ce-connectionState`; an invalid value reads as empty (the
    service treats the value as opaque, so only our own writes are trusted to be well-formed).
    Handlers change it like a dict; the response carries the header only when it changed.
    """

    def __init__(self, values: Mapping[str, Any] | None = None):
        self._values: dict[str, Any] = dict(values or {})
        self.changed = False

    @classmethod
    def decode(cls, header: str | None) -> ConnectionState:
        if not header:
            return cls()
        try:
            values = json.loads(base64.b64decode(header, validate=True))
        except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):  # nesting deeper than json allows
            logger.warning("Ignoring a ce-connectionState that is not base64 JSON")
            return cls()
        if not isinstance(values, dict):
            logger.warning("Ignoring a ce-connectionState that is not a JSON object")
            return cls()
        return cls(values)

    def encode(self) -> str:
        return base64.b64encode(json.dumps(self._values, separators=(",", ":")).encode("utf-8")).decode("ascii")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        json.dumps(value)  # refuse what cannot travel back to the service, at the handler's line
        self._values[key] = value
        self.changed = True

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        self.changed = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        if self._values:
            self._values.clear()
            self.changed = True


class MqttProtocolVersion(enum.IntEnum):
    """`mqtt.protocolVersion` of a connect: the protocol level of the client's CONNECT packet."""

    V311 = 4  # MQTT 3.1.1
    V500 = 5  # MQTT 5.0


class MqttV311ConnectReturnCode(enum.IntEnum):
    """The refusing CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3)."""

    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class MqttV5ConnectReasonCode(enum.IntEnum):
    """The refusing CONNACK reason codes of MQTT 5.0 (section 3.2.2.2)."""

    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USERNAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    BAD_AUTHENTICATION_METHOD = 0x8C
    TOPIC_NAME_INVALID = 0x90
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    CONNECTION_RATE_EXCEEDED = 0x9F


class MqttDisconnectReasonCode(enum.IntEnum):
    """DISCONNECT reason codes of MQTT 5.0 (section 3.14.2.1); 3.1.1 clients always report 0."""

    NORMAL_DISCONNECTION = 0x00
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    NOT_AUTHORIZED = 0x87
    SERVER_BUSY = 0x89
    SERVER_SHUTTING_DOWN = 0x8B
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


MqttConnectCode = MqttV311ConnectReturnCode | MqttV5ConnectReasonCode

_V311 = MqttV311ConnectReturnCode
_V5 = MqttV5ConnectReasonCode
# Each refusing code: the HTTP status the event handler answers with (the mapping of the official
# server SDKs, web-pubsub-express and Microsoft.Azure.WebPubSub.AspNetCore) and the nearest code of
# the other protocol version, so a refusal reaches every client with a code its version defines.
_V311_CODES: Mapping[MqttV311ConnectReturnCode, tuple[int, MqttV5ConnectReasonCode]] = {
    _V311.UNACCEPTABLE_PROTOCOL_VERSION: (400, _V5.UNSUPPORTED_PROTOCOL_VERSION),
    _V311.IDENTIFIER_REJECTED: (400, _V5.CLIENT_IDENTIFIER_NOT_VALID),
    _V311.SERVER_UNAVAILABLE: (503, _V5.SERVER_UNAVAILABLE),
    _V311.BAD_USERNAME_OR_PASSWORD: (401, _V5.BAD_USERNAME_OR_PASSWORD),
    _V311.NOT_AUTHORIZED: (401, _V5.NOT_AUTHORIZED),
}
_V5_CODES: Mapping[MqttV5ConnectReasonCode, tuple[int, MqttV311ConnectReturnCode]] = {
    _V5.UNSPECIFIED_ERROR: (500, _V311.SERVER_UNAVAILABLE),
    _V5.MALFORMED_PACKET: (400, _V311.NOT_AUTHORIZED),
    _V5.PROTOCOL_ERROR: (400, _V311.NOT_AUTHORIZED),
    _V5.IMPLEMENTATION_SPECIFIC_ERROR: (400, _V311.NOT_AUTHORIZED),
    _V5.UNSUPPORTED_PROTOCOL_VERSION: (400, _V311.UNACCEPTABLE_PROTOCOL_VERSION),
    _V5.CLIENT_IDENTIFIER_NOT_VALID: (400, _V311.IDENTIFIER_REJECTED),
    _V5.BAD_USERNAME_OR_PASSWORD: (401, _V311.BAD_USERNAME_OR_PASSWORD),
    _V5.NOT_AUTHORIZED: (401, _V311.NOT_AUTHORIZED),
    _V5.SERVER_UNAVAILABLE: (500, _V311.SERVER_UNAVAILABLE),
    _V5.SERVER_BUSY: (500, _V311.SERVER_UNAVAILABLE),
    _V5.BANNED: (403, _V311.NOT_AUTHORIZED),
    _V5.BAD_AUTHENTICATION_METHOD: (400, _V311.BAD_USERNAME_OR_PASSWORD),
    _V5.TOPIC_NAME_INVALID: (400, _V311.NOT_AUTHORIZED),
    _V5.PACKET_TOO_LARGE: (400, _V311.NOT_AUTHORIZED),
    _V5.QUOTA_EXCEEDED: (429, _V311.SERVER_UNAVAILABLE),
    _V5.PAYLOAD_FORMAT_INVALID: (400, _V311.NOT_AUTHORIZED),
    _V5.RETAIN_NOT_SUPPORTED: (400, _V311.NOT_AUTHORIZED),
    _V5.QOS_NOT_SUPPORTED: (400, _V311.NOT_AUTHORIZED),
    _V5.USE_ANOTHER_SERVER: (500, _V311.SERVER_UNAVAILABLE),
    _V5.SERVER_MOVED: (500, _V311.SERVER_UNAVAILABLE),
    _V5.CONNECTION_RATE_EXCEEDED: (429, _V311.SERVER_UNAVAILABLE),
}


def mqtt_status_for(code: MqttConnectCode) -> int:
    """The HTTP status a refusal with this CONNACK code is answered with."""
    if isinstance(code, MqttV311ConnectReturnCode):
        return _V311_CODES[code][0]
    return _V5_CODES[code][0]


def mqtt_code_for_version(code: MqttConnectCode, version: MqttProtocolVersion) -> MqttConnectCode:
    """`code` if the client's protocol version defines it, else that version's nearest code."""
    if version is MqttProtocolVersion.V500:
        return _V311_CODES[code][1] if isinstance(code, MqttV311ConnectReturnCode) else code
    return _V5_CODES[code][1] if isinstance(code, MqttV5ConnectReasonCode) else code


def mqtt_code_for_status(status: int, version: MqttProtocolVersion) -> MqttConnectCode:
    """The CONNACK code for an app error's status, as the official server SDKs choose it.

    400 is a bad user name or password (what a client can fix in its CONNECT), other 4xx (401
    Unauthorized, 403 Forbidden) not authorized, 503 server unavailable, other 5xx an unspecified
    error (MQTT 3.1.1 has none: server unavailable).
    """
    v5 = version is MqttProtocolVersion.V500
    if status == 400:
        return _V5.BAD_USERNAME_OR_PASSWORD if v5 else _V311.BAD_USERNAME_OR_PASSWORD
    if 400 <= status < 500:
        return _V5.NOT_AUTHORIZED if v5 else _V311.NOT_AUTHORIZED
    if status == 503:
        return _V5.SERVER_UNAVAILABLE if v5 else _V311.SERVER_UNAVAILABLE
    return _V5.UNSPECIFIED_ERROR if v5 else _V311.SERVER_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class MqttUserProperty:
    """One MQTT 5.0 user property: a name and a value, both strings (names may repeat)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class MqttConnectProperties:
    """The `mqtt` object of an MQTT client's connect: what its CONNECT packet said."""

    protocol_version: MqttProtocolVersion
    username: str | None = None
    # Base64 of the packet's binary password, as the service sends it; `password_bytes()` decodes it.
    password: str | None = field(default=None, repr=False)
    user_properties: tuple[MqttUserProperty, ...] = ()  # MQTT 5.0 clients only
    clean_start: bool | None = None

    def password_bytes(self) -> bytes | None:
        """The password as the client sent it; BadRequest (bad user name or password) if not base64."""
        if self.password is None:
            return None
        try:
            return base64.b64decode(self.password, validate=True)
        except binascii.Error:
            raise BadRequest("mqtt.password is not base64.", code="invalid_password") from None


@dataclass(frozen=True, slots=True)
class MqttDisconnectPacket:
    """The last DISCONNECT packet of the session, sent by the client or by the service."""

    code: int  # a MqttDisconnectReasonCode for MQTT 5.0; always 0 for MQTT 3.1.1
    user_properties: tuple[MqttUserProperty, ...] = ()


@dataclass(frozen=True, slots=True)
class MqttDisconnectProperties:
    """The `mqtt` object of an MQTT session's `disconnected` event."""

    initiated_by_client: bool
    disconnect_packet: MqttDisconnectPacket | None = None  # None: the network connection was lost


class MqttConnectRefused(AppError):
    """Raise from a connect handler to refuse an MQTT client with exactly this CONNACK code.

    A code the client's protocol version does not define is replaced by that version's nearest
    one (BANNED reaches an MQTT 3.1.1 client as NOT_AUTHORIZED). `reason` and `user_properties`
    reach MQTT 5.0 clients only. Raised for a WebSocket client, it is an ordinary 401 refusal.
    """

    status = 401
    default_code = "connect_refused"

    def __init__(
        self, code: MqttConnectCode, reason: str | None = None, *, user_properties: Sequence[MqttUserProperty] = ()
    ):
        if not isinstance(code, MqttV311ConnectReturnCode | MqttV5ConnectReasonCode):
            raise TypeError("code must be a MqttV311ConnectReturnCode or a MqttV5ConnectReasonCode")
        super().__init__(reason or code.name.replace("_", " ").lower())
        self.mqtt_code = code
        self.reason = reason
        self.user_properties = tuple(user_properties)


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """The `ce-*` attributes every event carries."""

    event_type: str
    hub: str
    connection_id: str
    event_name: str
    event_id: str | None = None  # the service may retry: the same ce-id can arrive more than once
    user_id: str | None = None
    subprotocol: str | None = None
    source: str | None = None
    time: str | None = None
    origin: str | None = None
    state: ConnectionState = field(default_factory=ConnectionState)
    signature: str | None = field(default=None, repr=False)
    physical_connection_id: str | None = None  # MQTT only
    session_id: str | None = None  # MQTT only, on every event but connect

    @property
    def kind(self) -> EventKind:
        return kind_of(self.event_type)

    @property
    def client_protocol(self) -> ClientProtocol:
        """MQTT when the event carries `ce-physicalConnectionId`, which the service sends with every MQTT event."""
        return ClientProtocol.MQTT if self.physical_connection_id else ClientProtocol.DEFAULT


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    thumbprint: str
    content: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """`sys.connect`: the service waits for the answer before completing the WebSocket handshake."""

    context: ConnectionContext
    claims: Mapping[str, Sequence[str]] = field(default_factory=dict)
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    subprotocols: Sequence[str] = ()
    client_certificates: Sequence[ClientCertificate] = ()
    mqtt: MqttConnectProperties | None = None  # set exactly for MQTT clients


@dataclass(frozen=True, slots=True)
class ConnectedEvent:
    """For MQTT clients: a new session began (`context.session_id`); reconnecting to one sends none."""

    context: ConnectionContext


@dataclass(frozen=True, slots=True)
class DisconnectedEvent:
    """For MQTT clients: the session ended, with the last DISCONNECT packet in `mqtt`."""

    context: ConnectionContext
    reason: str | None = None
    mqtt: MqttDisconnectProperties | None = None  # set exactly for MQTT clients


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """Group presence (`gp.joined` / `gp.left`)."""

    context: ConnectionContext
    group: str


@dataclass(frozen=True, slots=True)
class UserEvent:
    """`user.<event>`: the service waits and relays a non-empty answer to the client."""

    context: ConnectionContext
    data: Any  # str for text, bytes for binary, the parsed value for json
    data_type: DataType


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    context: ConnectionContext


Event = ConnectRequest | ConnectedEvent | DisconnectedEvent | GroupEvent | UserEvent | UnknownEvent


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """Accepting a connection; every field is optional and unset ones are omitted on the wire."""

    user_id: str | None = None
    groups: Sequence[str] | None = None
    roles: Sequence[str] | None = None
    subprotocol: str | None = None
    # Sent to MQTT 5.0 clients in the CONNACK; ignored for other clients.
    mqtt_user_properties: Sequence[MqttUserProperty] = ()


@dataclass(frozen=True, slots=True)
class UserEventResponse:
    """A reply the service delivers to the client that sent the event."""

    data: Any
    data_type: DataType = "text"


def header_values(raw: str | None) -> list[str]:
    """Split a header whose repeated lines were joined with ','; whitespace around commas is ignored."""
    if not raw:
        return []
    return [item.strip() for item in raw.split(",") if item.strip()]


def signature_for(key: str, connection_id: str) -> str:
    """`sha256=<hex>`: HMAC-SHA256 keyed with the access key string (UTF-8) over the connection id."""
    return "sha256=" + hmac.digest(key.encode("utf-8"), connection_id.encode("utf-8"), "sha256").hex()


def is_signature_valid(connection_id: str, signature_header: str | None, keys: Iterable[str]) -> bool:
    """True when any signature in the header matches any key (the service signs with both keys).

    Hex is compared case-insensitively and in constant time.
    """
    provided = [
        value.encode("ascii", "replace")
        for value in (item.lower() for item in header_values(signature_header))
        if value.startswith("sha256=")
    ]
    if not provided:
        return False
    for key in keys:
        expected = signature_for(key, connection_id).encode("ascii")
        for candidate in provided:
            if hmac.compare_digest(candidate, expected):
                return True
    return False


def abuse_protection(origin_header: str | None, allowed_hosts: Sequence[str]) -> Response:
    """Answer the service's webhook validation (OPTIONS, or GET after a 404).

    Allowed only when a requested origin is one of our hosts; the answer names that configured
    host, never the caller's string, so the endpoint cannot be enlisted by an arbitrary sender.
    """
    requested = [host.lower() for host in header_values(origin_header)]
    if not requested:
        raise BadRequest("WebHook-Request-Origin is required for webhook validation.", code="missing_origin")
    for host in allowed_hosts:
        if host.lower() in requested:
            return Response(200, headers={RESPONSE_ALLOWED_ORIGIN: host})
    raise BadRequest(
        "WebHook-Request-Origin is not the Web PubSub service this app is configured for "
        "(WEBPUBSUB_ENDPOINT or WEBPUBSUB_ALLOWED_ORIGINS).",
        code="origin_not_allowed",
    )


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise BadRequest(f"The {name} header is required.", code="missing_header")
    return value


def parse_context(headers: Mapping[str, str]) -> ConnectionContext:
    """The `ce-*` attributes; raises BadRequest naming a missing or malformed header."""
    if not headers.get(HEADER_AWPS_VERSION):
        raise BadRequest(
            f"The {HEADER_AWPS_VERSION} header is required: this is not a Web PubSub event.", code="missing_header"
        )
    spec_version = headers.get(HEADER_SPEC_VERSION)
    if spec_version is not None and spec_version.strip() != "1.0":
        raise BadRequest(f"Unsupported {HEADER_SPEC_VERSION} {spec_version[:16]!r}; expected 1.0.", code="bad_header")
    event_type = _required(headers, HEADER_TYPE)
    event_name = headers.get(HEADER_EVENT_NAME, "").strip()
    if kind_of(event_type) is EventKind.USER:
        event_name = event_type[len(USER_TYPE_PREFIX) :]
    return ConnectionContext(
        event_type=event_type,
        hub=_required(headers, HEADER_HUB),
        connection_id=_required(headers, HEADER_CONNECTION_ID),
        event_name=event_name,
        event_id=headers.get(HEADER_ID) or None,
        user_id=headers.get(HEADER_USER_ID) or None,
        subprotocol=headers.get(HEADER_SUBPROTOCOL) or None,
        source=headers.get(HEADER_SOURCE) or None,
        time=headers.get(HEADER_TIME) or None,
        origin=headers.get(HEADER_REQUEST_ORIGIN) or None,
        state=ConnectionState.decode(headers.get(HEADER_CONNECTION_STATE)),
        signature=headers.get(HEADER_SIGNATURE) or None,
        physical_connection_id=headers.get(HEADER_PHYSICAL_CONNECTION_ID, "").strip() or None,
        session_id=headers.get(HEADER_SESSION_ID, "").strip() or None,
    )


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    media, _, parameters = (content_type or "").partition(";")
    charset = None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media.strip().lower(), charset


def _utf8(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"The {what} is not valid UTF-8.", code="invalid_encoding") from None


def _json_object(body: bytes, content_type: str | None, event_type: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    media, _ = _media_type(content_type)
    if media != JSON:
        raise UnsupportedMediaType(f"{event_type} events carry {JSON}, not {media or 'no content type'}.")
    try:
        document = json.loads(_utf8(body, "body"))
    except (ValueError, RecursionError):
        raise BadRequest(f"The {event_type} body is not valid JSON.", code="invalid_json") from None
    if not isinstance(document, dict):
        raise BadRequest(f"The {event_type} body must be a JSON object.", code="invalid_body")
    return document


def _all_strings(items: list[Any]) -> bool:
    """Every item is a str: one C-level pass (this runs for every claim, query value and header of a connect)."""
    return all(map(isinstance, items, repeat(str)))


def _string_lists(document: Mapping[str, Any], name: str) -> dict[str, list[str]]:
    value = document.get(name)
    if value is None:
        return {}
    if isinstance(value, dict):
        lists: dict[str, list[str]] = {}
        for key, items in value.items():  # checked and copied in the same pass
            if not isinstance(items, list) or not all(map(isinstance, items, repeat(str))):
                break
            lists[str(key)] = items.copy()
        else:
            return lists
    raise BadRequest(f'The connect body\'s "{name}" must map names to lists of strings.', code="invalid_body")


def _mqtt_object(document: Mapping[str, Any], event: str) -> Mapping[str, Any]:
    value = document.get("mqtt")
    if not isinstance(value, dict):
        raise BadRequest(f'The {event} body of an MQTT client needs an "mqtt" object.', code="invalid_body")
    return value


def _optional(document: Mapping[str, Any], name: str, kind: type[Any], what: str) -> Any:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):  # JSON true is no number
        raise BadRequest(f'"{what}.{name}" must be a {kind.__name__}.', code="invalid_body")
    return value


def _user_properties(document: Mapping[str, Any], what: str) -> tuple[MqttUserProperty, ...]:
    value = document.get("userProperties")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)
        for item in value
    ):
        raise BadRequest(f'"{what}.userProperties" must be a list of {{"name", "value"}} strings.', code="invalid_body")
    return tuple(MqttUserProperty(item["name"], item["value"]) for item in value)


def _mqtt_connect(document: Mapping[str, Any]) -> MqttConnectProperties:
    mqtt = _mqtt_object(document, "connect")
    version = mqtt.get("protocolVersion")
    if not isinstance(version, int) or isinstance(version, bool) or version not in set(MqttProtocolVersion):
        raise BadRequest(
            '"mqtt.protocolVersion" must be 4 (MQTT 3.1.1) or 5 (MQTT 5.0).', code="unsupported_mqtt_version"
        )
    return MqttConnectProperties(
        protocol_version=MqttProtocolVersion(version),
        username=_optional(mqtt, "username", str, "mqtt"),
        password=_optional(mqtt, "password", str, "mqtt"),
        user_properties=_user_properties(mqtt, "mqtt"),
        clean_start=_optional(mqtt, "cleanStart", bool, "mqtt"),
    )


def _mqtt_disconnected(document: Mapping[str, Any]) -> MqttDisconnectProperties:
    mqtt = _mqtt_object(document, "disconnected")
    initiated = _optional(mqtt, "initiatedByClient", bool, "mqtt")
    packet = _optional(mqtt, "disconnectPacket", dict, "mqtt")
    disconnect_packet = None
    if packet is not None:
        code = _optional(packet, "code", int, "mqtt.disconnectPacket")
        disconnect_packet = MqttDisconnectPacket(
            code=code or 0, user_properties=_user_properties(packet, "mqtt.disconnectPacket")
        )
    return MqttDisconnectProperties(initiated_by_client=bool(initiated), disconnect_packet=disconnect_packet)


def _connect(context: ConnectionContext, document: Mapping[str, Any]) -> ConnectRequest:
    subprotocols = document.get("subprotocols") or []
    if not isinstance(subprotocols, list) or not _all_strings(subprotocols):
        raise BadRequest('The connect body\'s "subprotocols" must be a list of strings.', code="invalid_body")
    certificates = document.get("clientCertificates") or []
    if not isinstance(certificates, list) or not all(
        isinstance(item, dict) and isinstance(item.get("thumbprint", ""), str) for item in certificates
    ):
        raise BadRequest('The connect body\'s "clientCertificates" is malformed.', code="invalid_body")
    return ConnectRequest(
        context=context,
        claims=_string_lists(document, "claims"),
        query=_string_lists(document, "query"),
        headers=_string_lists(document, "headers"),
        subprotocols=tuple(subprotocols),
        client_certificates=tuple(
            ClientCertificate(str(item.get("thumbprint", "")), str(item.get("content", ""))) for item in certificates
        )
        if certificates
        else (),
        mqtt=_mqtt_connect(document) if context.client_protocol is ClientProtocol.MQTT else None,
    )


def _user_event(context: ConnectionContext, body: bytes, content_type: str | None) -> UserEvent:
    media, charset = _media_type(content_type)
    if media == BINARY:
        return UserEvent(context, body, "binary")
    if media not in {TEXT, JSON}:
        raise UnsupportedMediaType(
            f"User events carry {TEXT}, {JSON} or {BINARY}, not {media or 'no content type'}.",
        )
    if charset not in {None, "utf-8", "utf8"}:
        raise UnsupportedMediaType(f"Text must be UTF-8, not {charset}.")
    text = _utf8(body, "message")
    if media == TEXT:
        return UserEvent(context, text, "text")
    try:
        return UserEvent(context, json.loads(text), "json")
    except (ValueError, RecursionError):
        raise BadRequest("The message is declared as JSON but is not valid JSON.", code="invalid_json") from None


def check_body_size(body: bytes, max_body_bytes: int) -> None:
    if len(body) > max_body_bytes:
        raise PayloadTooLarge(f"The event body is larger than {max_body_bytes} bytes (EVENTHANDLER_MAX_BODY_BYTES).")


def parse_event(context: ConnectionContext, body: bytes, content_type: str | None, *, max_body_bytes: int) -> Event:
    """Turn an authenticated request's body into the typed event for its `ce-type`."""
    check_body_size(body, max_body_bytes)
    kind = context.kind
    if kind is EventKind.USER:
        return _user_event(context, body, content_type)
    if kind is EventKind.UNKNOWN:
        return UnknownEvent(context)
    document = _json_object(body, content_type, context.event_type)
    if kind is EventKind.CONNECT:
        return _connect(context, document)
    if kind is EventKind.CONNECTED:
        return ConnectedEvent(context)
    if kind is EventKind.DISCONNECTED:
        reason = document.get("reason")
        mqtt = _mqtt_disconnected(document) if context.client_protocol is ClientProtocol.MQTT else None
        return DisconnectedEvent(context, reason if isinstance(reason, str) else None, mqtt)
    group = document.get("group")
    if not isinstance(group, str) or not group:
        raise BadRequest(f'The {context.event_type} body needs a "group" string.', code="invalid_body")
    return GroupEvent(context, group)


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """One of the client's own offers, never anything else; our preferred one when it offered several."""
    for candidate in SUBPROTOCOLS:
        if candidate in offered:
            return candidate
    return None


def _with_state(headers: dict[str, str], state: ConnectionState) -> dict[str, str]:
    if state.changed:
        headers[RESPONSE_CONNECTION_STATE] = state.encode()
    return headers


def render_connect(response: ConnectResponse | None, state: ConnectionState) -> Response:
    """204 when there is nothing to say, else 200 with only the keys that are set."""
    headers = _with_state({}, state)
    if response is None:
        return Response(204, headers=headers)
    payload: dict[str, Any] = {}
    if response.user_id is not None:
        payload["userId"] = response.user_id
    if response.groups is not None:
        payload["groups"] = list(response.groups)
    if response.roles is not None:
        payload["roles"] = list(response.roles)
    if response.subprotocol is not None:
        payload["subprotocol"] = response.subprotocol
    if response.mqtt_user_properties:
        payload["mqtt"] = {"userProperties": _user_property_list(response.mqtt_user_properties)}
    if not payload:
        return Response(204, headers=headers)
    return json_response(200, payload, headers)


def render_user_event(response: UserEventResponse | None, state: ConnectionState) -> Response:
    """The reply's Content-Type tells the service how to deliver it (text, json or binary)."""
    headers = _with_state({}, state)
    if response is None:
        return Response(204, headers=headers)
    if response.data_type == "binary":
        if not isinstance(response.data, bytes | bytearray):
            raise TypeError("a binary reply needs bytes")
        return Response(200, bytes(response.data), headers, BINARY)
    if response.data_type == "json":
        return Response(200, json_body(response.data), headers, JSON_CONTENT_TYPE)
    if not isinstance(response.data, str):
        raise TypeError("a text reply needs str")
    return Response(200, utf8_text(response.data), headers, TEXT_CONTENT_TYPE)


def render_notification(state: ConnectionState) -> Response:
    return Response(204, headers=_with_state({}, state))


def _user_property_list(properties: Sequence[MqttUserProperty]) -> list[dict[str, str]]:
    return [{"name": item.name, "value": item.value} for item in properties]


def render_refusal(error: AppError, event: Event | None) -> Response:
    """An error as the service expects it: for an MQTT client's connect, the CONNACK it should send.

    Every other refusal (and one that happens before the event is parsed) is the app's JSON error.
    An MqttConnectRefused carries its own code; any other error gets the code for its status.
    """
    mqtt = event.mqtt if isinstance(event, ConnectRequest) else None
    if mqtt is None:
        return error_response(error)
    version = mqtt.protocol_version
    document: dict[str, Any]
    if isinstance(error, MqttConnectRefused):
        code = mqtt_code_for_version(error.mqtt_code, version)
        status = mqtt_status_for(code)
        document = {"code": int(code)}
        if error.reason is not None:
            document["reason"] = error.reason
        if error.user_properties:
            document["userProperties"] = _user_property_list(error.user_properties)
    else:
        status = error.status
        document = {"code": int(mqtt_code_for_status(status, version)), "reason": error.public_message}
    return json_response(status, {"mqtt": document}, error.headers)
