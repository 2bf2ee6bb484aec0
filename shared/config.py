"""Settings: read from an environment mapping and validated in one place, one concern at a time.

Nothing else in the app reads `os.environ`; every other module receives a `Settings` (the runtime
loads it once per process). Each concern (the service and its credential, negotiate, the event
handler, health, the client page) is validated on its own: a bad negotiate setting fails negotiate
(500, the setting named in the log and in /api/health) while the event handler and health keep
working, and vice versa. A missing or invalid value raises `ConfigError` naming the setting when the
concern is used. This module is pure: no cache, no I/O, no logging; importing it does no work, so a bad
setting can never make the Functions host report "0 functions found".
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar
from urllib.parse import urlsplit

from shared.errors import ConfigError

# The service's hub-name rule (data-plane REST API, `hub` path parameter).
HUB_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
# WEBPUBSUB_HUBS separates hub names with whitespace or ';': a ',' is legal inside a hub name.
HUB_LIST_SEPARATOR = re.compile(r"[\s;]+")
# NEGOTIATE_GROUPS_<hub> gives one hub its own groups (the hub name as written, any case). App
# setting names allow letters, digits, '_' and '.', so a hub whose name has other characters
# uses NEGOTIATE_GROUPS.
PER_HUB_GROUPS_PREFIX = "NEGOTIATE_GROUPS_"
# Key Vault secret names: 1-127 letters, digits and dashes.
SECRET_NAME_PATTERN = re.compile(r"[0-9A-Za-z-]{1,127}")
HOST_PATTERN = re.compile(r"[A-Za-z0-9.-]{1,253}")
# A Microsoft Entra object id (of a managed identity, service principal or user).
OBJECT_ID_PATTERN = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
MAX_GROUP_NAME_LENGTH = 1024

_Choice = TypeVar("_Choice", bound=enum.StrEnum)
_Section = TypeVar("_Section")


class Concern(enum.StrEnum):
    """The parts of the app whose settings are validated independently."""

    SERVICE = "service"  # the Web PubSub service, its hub and the credential: every route but health needs it
    GROUP_POLICY = "group policy"  # which groups users may use: negotiate and the connect event share it
    NEGOTIATE = "negotiate"
    EVENT_HANDLER = "eventhandler"
    HEALTH = "health"
    CLIENT_PAGE = "client page"
    PUBLISH = "publish"  # who may call the publish and management API (/api/messages, ...)


class CredentialMode(enum.StrEnum):
    """Where negotiate's tokens (and the event signature keys) come from."""

    CONNECTION_STRING = "connectionstring"
    KEY_VAULT = "keyvault"
    ENTRA = "entra"


class NegotiateAuth(enum.StrEnum):
    """How negotiate learns who the caller is."""

    APP_SERVICE = "appservice"
    BEARER = "bearer"
    ANONYMOUS = "anonymous"


class EventAuth(enum.StrEnum):
    """How the event handler proves that a request comes from the Web PubSub service."""

    SIGNATURE = "signature"
    BEARER = "bearer"
    APP_SERVICE = "appservice"
    NONE = "none"


class PublishAuth(enum.StrEnum):
    """Who may call the publish and management API: other backends, never anonymous in production."""

    BEARER = "bearer"
    APP_SERVICE = "appservice"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class BearerSettings:
    """An Entra ID (or any OpenID Connect) issuer whose access tokens the app validates itself."""

    issuer: str
    audience: str
    jwks_uri: str | None = None
    # Event handler only (required there): only this principal's tokens count, the Web PubSub
    # resource's managed identity object id (lower case); otherwise any identity of the tenant that
    # can get a token for the audience would pass.
    principal_id: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """The Web PubSub service the app works with, its hubs, and where the credential comes from.

    `hub` is the default hub (negotiate without `?hub=`); `hubs` every hub the app serves, `hub` included.
    """

    hub: str
    credential: CredentialMode
    endpoint: str  # scheme://host[:port], lower-case, no trailing slash
    access_key: str | None = field(default=None, repr=False)  # only with CredentialMode.CONNECTION_STRING
    keyvault_uri: str | None = None
    key_secret_name: str | None = None
    keyvault_refresh_seconds: int = 300
    client_id: str | None = None
    hubs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.hubs:
            object.__setattr__(self, "hubs", (self.hub,))

    def served_hub(self, name: str) -> str | None:
        """The configured spelling of hub `name` (hub names are case-insensitive), or None if not served."""
        return next((hub for hub in self.hubs if hub.lower() == name.lower()), None)

    @property
    def service_host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""


@dataclass(frozen=True, slots=True)
class GroupPolicySettings:
    """NEGOTIATE_GROUPS for every hub, and the hubs with a NEGOTIATE_GROUPS_<hub> of their own."""

    groups: tuple[str, ...] = ("chat",)
    groups_by_hub: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # keyed by lower-case hub

    def groups_for(self, hub: str) -> tuple[str, ...]:
        return self.groups_by_hub.get(hub.lower(), self.groups)


@dataclass(frozen=True, slots=True)
class NegotiateSettings:
    auth: NegotiateAuth
    bearer: BearerSettings | None = None
    token_lifetime_minutes: int = 60
    # Bearer mode: accept app-only tokens (service principals, managed identities) as callers.
    accept_app_tokens: bool = False


@dataclass(frozen=True, slots=True)
class EventHandlerSettings:
    auth: EventAuth
    bearer: BearerSettings | None
    extra_origins: tuple[str, ...] = ()  # WEBPUBSUB_ALLOWED_ORIGINS; the service host is always allowed
    max_body_bytes: int = 1024 * 1024
    # EVENTHANDLER_AUTH=appservice: the object id (lower case) App Service Authentication must report
    # for the caller, the Web PubSub resource's managed identity; every other signed-in principal is refused.
    app_service_principal_id: str | None = None


@dataclass(frozen=True, slots=True)
class HealthSettings:
    deadline_seconds: float = 2.0
    cache_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class ClientPageSettings:
    enabled: bool = True


DEFAULT_PUBLISH_ROLE = "WebPubSub.Publish"


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """The publish API's callers: a bearer token or App Service principal holding `role`, or anyone (none).

    With no PUBLISH_* setting at all the API is not configured (`configured` is False): it stays
    closed, answering 404 with the settings to set, and the rest of the app is unaffected.
    """

    auth: PublishAuth
    bearer: BearerSettings | None = None
    role: str = DEFAULT_PUBLISH_ROLE

    @property
    def configured(self) -> bool:
        return self.auth is not PublishAuth.BEARER or self.bearer is not None


class Settings:
    """Every concern's settings, each either valid or the ConfigError that names its bad setting.

    Reading a concern whose settings are invalid raises that ConfigError, so only the routes that
    need it fail. Health is the exception: it must always answer, so invalid health settings read as
    the defaults (and the error is still listed in `problems`).
    """

    __slots__ = ("_client_page", "_event_handler", "_group_policy", "_health", "_negotiate", "_publish", "_service")

    def __init__(
        self,
        *,
        service: ServiceSettings | ConfigError,
        group_policy: GroupPolicySettings | ConfigError,
        negotiate: NegotiateSettings | ConfigError,
        event_handler: EventHandlerSettings | ConfigError,
        health: HealthSettings | ConfigError,
        client_page: ClientPageSettings | ConfigError,
        publish: PublishSettings | ConfigError,
    ):
        self._service = service
        self._group_policy = group_policy
        self._negotiate = negotiate
        self._event_handler = event_handler
        self._health = health
        self._client_page = client_page
        self._publish = publish

    @property
    def service(self) -> ServiceSettings:
        return _valid(self._service)

    @property
    def group_policy(self) -> GroupPolicySettings:
        return _valid(self._group_policy)

    @property
    def negotiate(self) -> NegotiateSettings:
        return _valid(self._negotiate)

    @property
    def event_handler(self) -> EventHandlerSettings:
        return _valid(self._event_handler)

    @property
    def health(self) -> HealthSettings:
        return self._health if isinstance(self._health, HealthSettings) else HealthSettings()

    @property
    def client_page(self) -> ClientPageSettings:
        return _valid(self._client_page)

    @property
    def publish(self) -> PublishSettings:
        return _valid(self._publish)

    @property
    def problems(self) -> dict[Concern, ConfigError]:
        """The invalid concerns, each with the error naming its first bad setting."""
        sections = {
            Concern.SERVICE: self._service,
            Concern.GROUP_POLICY: self._group_policy,
            Concern.NEGOTIATE: self._negotiate,
            Concern.EVENT_HANDLER: self._event_handler,
            Concern.HEALTH: self._health,
            Concern.CLIENT_PAGE: self._client_page,
            Concern.PUBLISH: self._publish,
        }
        return {concern: value for concern, value in sections.items() if isinstance(value, ConfigError)}

    def check(self) -> Settings:
        """Raise the first problem, if any: for callers that need every concern valid (tests, infra checks)."""
        for error in self.problems.values():
            raise error
        return self

    @property
    def development_shortcuts(self) -> tuple[str, ...]:
        """Development-only choices in effect; logged at start-up and listed by /api/health."""
        found = []
        if isinstance(self._service, ServiceSettings) and self._service.credential is CredentialMode.CONNECTION_STRING:
            found.append(
                "WEBPUBSUB_CREDENTIAL=connectionstring keeps the access key in an app setting; "
                "use keyvault or entra in production"
            )
        if isinstance(self._negotiate, NegotiateSettings) and self._negotiate.auth is NegotiateAuth.ANONYMOUS:
            found.append("NEGOTIATE_AUTH=anonymous lets every caller choose its own user id")
        if isinstance(self._event_handler, EventHandlerSettings) and self._event_handler.auth is EventAuth.NONE:
            found.append("EVENTHANDLER_AUTH=none accepts events without proof that they come from the service")
        if isinstance(self._publish, PublishSettings) and self._publish.auth is PublishAuth.NONE:
            found.append("PUBLISH_AUTH=none lets any caller send messages and manage groups and connections")
        return tuple(found)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={getattr(self, '_' + name)!r}"
            for name in ("service", "group_policy", "negotiate", "event_handler", "health", "client_page", "publish")
        )
        return f"Settings({parts})"


def _valid(section: _Section | ConfigError) -> _Section:
    if isinstance(section, ConfigError):
        raise section
    return section


# The settings each concern reads; infra and the diagnostics command check against them.
SETTINGS_BY_CONCERN: Mapping[Concern, frozenset[str]] = {
    Concern.SERVICE: frozenset(
        {
            "WEBPUBSUB_HUB",
            "WEBPUBSUB_HUBS",
            "WEBPUBSUB_CREDENTIAL",
            "WEBPUBSUB_CONNECTION_STRING",
            "WEBPUBSUB_ENDPOINT",
            "KEYVAULT_URI",
            "WEBPUBSUB_KEY_SECRET_NAME",
            "KEYVAULT_REFRESH_SECONDS",
            "AZURE_CLIENT_ID",
        }
    ),
    Concern.GROUP_POLICY: frozenset({"NEGOTIATE_GROUPS"}),
    Concern.NEGOTIATE: frozenset(
        {
            "NEGOTIATE_AUTH",
            "NEGOTIATE_BEARER_ISSUER",
            "NEGOTIATE_BEARER_AUDIENCE",
            "NEGOTIATE_BEARER_JWKS_URI",
            "NEGOTIATE_BEARER_ALLOW_APP_TOKENS",
            "TOKEN_LIFETIME_MINUTES",
        }
    ),
    Concern.EVENT_HANDLER: frozenset(
        {
            "EVENTHANDLER_AUTH",
            "EVENTHANDLER_BEARER_ISSUER",
            "EVENTHANDLER_BEARER_AUDIENCE",
            "EVENTHANDLER_BEARER_JWKS_URI",
            "EVENTHANDLER_BEARER_PRINCIPAL_ID",
            "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID",
            "WEBPUBSUB_ALLOWED_ORIGINS",
            "EVENTHANDLER_MAX_BODY_BYTES",
        }
    ),
    Concern.HEALTH: frozenset({"HEALTH_DEADLINE_SECONDS", "HEALTH_CACHE_SECONDS"}),
    Concern.CLIENT_PAGE: frozenset({"CLIENT_PAGE_ENABLED"}),
    Concern.PUBLISH: frozenset(
        {"PUBLISH_AUTH", "PUBLISH_BEARER_ISSUER", "PUBLISH_BEARER_AUDIENCE", "PUBLISH_BEARER_JWKS_URI", "PUBLISH_ROLE"}
    ),
}
# Every public setting the app reads, besides the per-hub NEGOTIATE_GROUPS_<hub> (group policy).
SETTING_NAMES = frozenset().union(*SETTINGS_BY_CONCERN.values())


def is_setting_name(name: str) -> bool:
    """A name the app reads: one of SETTING_NAMES or a per-hub NEGOTIATE_GROUPS_<hub>."""
    return name in SETTING_NAMES or (
        name.upper().startswith(PER_HUB_GROUPS_PREFIX) and len(name) > len(PER_HUB_GROUPS_PREFIX)
    )


# Set by the platform (not by users) when App Service Authentication is on; the app only trusts
# the X-MS-CLIENT-PRINCIPAL-* headers then, because only then does the platform strip forged copies.
APP_SERVICE_AUTH_FLAG = "WEBSITE_AUTH_ENABLED"


class _Reader:
    """Reads trimmed values from a mapping; an empty value counts as unset."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def raw(self, name: str) -> str | None:
        """The value as set, untrimmed: for settings where an empty value means "none"."""
        return self._environ.get(name)

    def names_with_prefix(self, prefix: str) -> list[str]:
        """Every setting name that starts with `prefix` (in any case), for settings named per hub."""
        return [name for name in self._environ if name.upper().startswith(prefix)]

    def require(self, name: str, why: str) -> str:
        value = self.get(name)
        if value is None:
            raise ConfigError(name, f"is required {why}")
        return value

    def choice(self, name: str, enum_type: type[_Choice], default: _Choice | None, why: str = "") -> _Choice:
        raw = self.get(name)
        allowed = ", ".join(member.value for member in enum_type)
        if raw is None:
            if default is None:
                raise ConfigError(name, f"is required{why}: set it to one of {allowed}")
            return default
        try:
            return enum_type(raw.lower())
        except ValueError:
            raise ConfigError(name, f"must be one of {allowed}", value=raw) from None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number from {low} to {high}", value=raw) from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be from {low} to {high}", value=raw)
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number from {low:g} to {high:g}", value=raw) from None
        if not low <= value <= high:  # also rejects NaN
            raise ConfigError(name, f"must be from {low:g} to {high:g}", value=raw)
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"true", "1", "yes", "on"}:
            return True
        if lowered in {"false", "0", "no", "off"}:
            return False
        raise ConfigError(name, "must be true or false", value=raw)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_endpoint(setting: str, raw: str, *, allow_http: bool) -> str:
    """Return `scheme://host[:port]` in lower case, or raise naming the setting."""
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        raise ConfigError(setting, "the endpoint is not a valid URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in {"http", "https"} or not host:
        raise ConfigError(setting, "the endpoint must look like https://<name>.webpubsub.azure.com")
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(setting, "the endpoint must be scheme and host only, without a path or query")
    if scheme == "http" and not allow_http:
        raise ConfigError(setting, "must use https (plain http is only accepted for a local service on loopback)")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


def parse_connection_string(raw: str) -> tuple[str, str]:
    """Return (endpoint, access key) from a Web PubSub connection string.

    Refuses a port given twice: `Endpoint=http://localhost:8080;Port=8080` makes the SDK build
    `http://localhost:8080:8080`, a trap that is otherwise only visible as failed connections.
    Error messages never repeat the string, which holds the key.
    """
    name = "WEBPUBSUB_CONNECTION_STRING"
    fields: dict[str, str] = {}
    for segment in raw.split(";"):
        segment = segment.strip()
        if not segment:
            continue
        key, sep, value = segment.partition("=")
        if not sep:
            raise ConfigError(name, "is malformed: expected Key=Value pairs separated by ';'")
        fields[key.strip().lower()] = value.strip()
    if fields.get("authtype"):
        raise ConfigError(name, "uses AuthType (identity); set WEBPUBSUB_CREDENTIAL=entra and WEBPUBSUB_ENDPOINT")
    if not fields.get("endpoint"):
        raise ConfigError(name, "has no Endpoint=...")
    if not fields.get("accesskey"):
        raise ConfigError(name, "has no AccessKey=...")
    endpoint_text = fields["endpoint"]
    if fields.get("port"):
        try:
            has_port = urlsplit(endpoint_text).port is not None
        except ValueError:
            raise ConfigError(name, "the Endpoint is not a valid URL") from None
        if has_port:
            raise ConfigError(
                name,
                "gives the port twice (in Endpoint and as Port=); the SDK would build host:port:port. "
                "Keep the port in Endpoint only, e.g. Endpoint=http://localhost:8080;AccessKey=...;Version=1.0;",
            )
        if not fields["port"].isdigit():
            raise ConfigError(name, "Port= must be a number")
        endpoint_text = f"{endpoint_text.rstrip('/')}:{fields['port']}"
    endpoint = normalize_endpoint(name, endpoint_text, allow_http=True)
    return endpoint, fields["accesskey"]


def parse_groups(raw: str | None, setting: str = "NEGOTIATE_GROUPS") -> tuple[str, ...]:
    if raw is None:
        return ("chat",)
    groups: list[str] = []
    for item in raw.split(","):
        group = item.strip()
        if not group:
            continue
        if len(group) > MAX_GROUP_NAME_LENGTH:
            raise ConfigError(setting, f"group names are at most {MAX_GROUP_NAME_LENGTH} characters")
        if group not in groups:
            groups.append(group)
    return tuple(groups)


def _https_url(reader: _Reader, name: str, *, required: bool, why: str = "") -> str | None:
    raw = reader.require(name, why) if required else reader.get(name)
    if raw is None:
        return None
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise ConfigError(name, "is not a valid URL") from None
    host = parts.hostname or ""
    if not host or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host))):
        raise ConfigError(name, "must be an https:// URL")
    return raw


def _bearer(reader: _Reader, prefix: str, mode_setting: str) -> BearerSettings:
    why = f"when {mode_setting}=bearer" + ("" if reader.get(mode_setting) else " (the default)")
    issuer = _https_url(reader, f"{prefix}_ISSUER", required=True, why=why)
    audience = reader.require(f"{prefix}_AUDIENCE", why)
    jwks_uri = _https_url(reader, f"{prefix}_JWKS_URI", required=False)
    assert issuer is not None  # required=True guarantees it
    return BearerSettings(issuer=issuer, audience=audience, jwks_uri=jwks_uri)


def _service_principal(reader: _Reader, name: str, mode: str) -> str:
    """The Web PubSub resource's managed identity object id, required by the event handler's `mode`."""
    raw = reader.require(
        name,
        f"when EVENTHANDLER_AUTH={mode}: the object (principal) id of the Web PubSub resource's managed "
        "identity, so that no other identity of the tenant passes",
    )
    if not OBJECT_ID_PATTERN.fullmatch(raw):
        raise ConfigError(name, "must be an object id (a GUID such as 5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f)", value=raw)
    return raw.lower()


def _keyvault_uri(reader: _Reader) -> str:
    name = "KEYVAULT_URI"
    raw = reader.require(name, "when WEBPUBSUB_CREDENTIAL=keyvault")
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise ConfigError(name, "is not a valid URL; expected https://<vault-name>.vault.azure.net/") from None
    if parts.scheme != "https" or not parts.hostname or parts.path not in {"", "/"} or parts.query:
        raise ConfigError(name, "must look like https://<vault-name>.vault.azure.net/ (https, no path)")
    return f"https://{parts.netloc.lower()}/"


def _extra_origins(reader: _Reader) -> tuple[str, ...]:
    origins: list[str] = []
    for item in (reader.get("WEBPUBSUB_ALLOWED_ORIGINS") or "").split(","):
        host = item.strip().lower()
        if not host:
            continue
        if not HOST_PATTERN.fullmatch(host):
            raise ConfigError("WEBPUBSUB_ALLOWED_ORIGINS", "must be comma-separated host names, without scheme")
        if host not in origins:
            origins.append(host)
    return tuple(origins)


def _app_service_auth_enabled(reader: _Reader) -> bool:
    return (reader.get(APP_SERVICE_AUTH_FLAG) or "").lower() == "true"


NOT_BEHIND_APP_SERVICE_AUTH = (
    "requires App Service Authentication, which is off here (the platform sets "
    f"{APP_SERVICE_AUTH_FLAG}=true when it is on); without it the principal headers could be forged"
)


_HUB_RULE = "must start with a letter and hold at most 128 letters, digits and _`,.[] characters"


def served_hubs(reader: _Reader) -> tuple[str, tuple[str, ...]]:
    """The default hub and every served hub: WEBPUBSUB_HUB alone, or WEBPUBSUB_HUBS (and which is default).

    WEBPUBSUB_HUB, when set beside WEBPUBSUB_HUBS, must be one of them and is the default;
    otherwise the first listed hub is.
    """
    hub = reader.get("WEBPUBSUB_HUB")
    if hub is not None and not HUB_PATTERN.fullmatch(hub):
        raise ConfigError("WEBPUBSUB_HUB", _HUB_RULE)
    listed = reader.get("WEBPUBSUB_HUBS")
    if listed is None:
        hub = hub or "chat"
        return hub, (hub,)
    hubs: list[str] = []
    for name in HUB_LIST_SEPARATOR.split(listed):
        if not name:
            continue
        if "," in name:
            raise ConfigError(
                "WEBPUBSUB_HUBS",
                "separates hub names with spaces or ';', not ',' (a ',' is part of a hub name for the service)",
                value=listed,
            )
        if not HUB_PATTERN.fullmatch(name):
            raise ConfigError("WEBPUBSUB_HUBS", f"names a hub that {_HUB_RULE}", value=name)
        if any(name.lower() == other.lower() for other in hubs):
            raise ConfigError("WEBPUBSUB_HUBS", "names a hub twice (hub names ignore case)", value=name)
        hubs.append(name)
    if not hubs:
        raise ConfigError("WEBPUBSUB_HUBS", "names no hub; list one or more, separated by spaces")
    if hub is None:
        return hubs[0], tuple(hubs)
    default = next((name for name in hubs if name.lower() == hub.lower()), None)
    if default is None:
        raise ConfigError(
            "WEBPUBSUB_HUB", "must be one of WEBPUBSUB_HUBS (it is the hub negotiate uses without ?hub=)", value=hub
        )
    return default, tuple(hubs)


def load_service(reader: _Reader) -> ServiceSettings:
    hub, hubs = served_hubs(reader)
    credential = reader.choice("WEBPUBSUB_CREDENTIAL", CredentialMode, None)
    access_key: str | None = None
    keyvault_uri: str | None = None
    secret_name: str | None = None
    if credential is CredentialMode.CONNECTION_STRING:
        raw = reader.require("WEBPUBSUB_CONNECTION_STRING", "when WEBPUBSUB_CREDENTIAL=connectionstring")
        endpoint, access_key = parse_connection_string(raw)
    else:
        raw_endpoint = reader.require("WEBPUBSUB_ENDPOINT", f"when WEBPUBSUB_CREDENTIAL={credential.value}")
        host = urlsplit(raw_endpoint.strip()).hostname or ""
        endpoint = normalize_endpoint("WEBPUBSUB_ENDPOINT", raw_endpoint, allow_http=is_loopback_host(host))
    if credential is CredentialMode.KEY_VAULT:
        keyvault_uri = _keyvault_uri(reader)
        secret_name = reader.require("WEBPUBSUB_KEY_SECRET_NAME", "when WEBPUBSUB_CREDENTIAL=keyvault")
        if not SECRET_NAME_PATTERN.fullmatch(secret_name):
            raise ConfigError("WEBPUBSUB_KEY_SECRET_NAME", "must be 1-127 letters, digits and dashes")
    return ServiceSettings(
        hub=hub,
        hubs=hubs,
        credential=credential,
        endpoint=endpoint,
        access_key=access_key,
        keyvault_uri=keyvault_uri,
        key_secret_name=secret_name,
        keyvault_refresh_seconds=reader.integer("KEYVAULT_REFRESH_SECONDS", 300, 5, 86400),
        client_id=reader.get("AZURE_CLIENT_ID"),
    )


def load_negotiate(reader: _Reader) -> NegotiateSettings:
    auth = reader.choice("NEGOTIATE_AUTH", NegotiateAuth, NegotiateAuth.APP_SERVICE)
    bearer = None
    if auth is NegotiateAuth.APP_SERVICE and not _app_service_auth_enabled(reader):
        raise ConfigError(
            "NEGOTIATE_AUTH",
            f"=appservice (the default) {NOT_BEHIND_APP_SERVICE_AUTH}. Enable it, or choose bearer "
            "(or anonymous for local development)",
        )
    accept_app_tokens = False
    if auth is NegotiateAuth.BEARER:
        bearer = _bearer(reader, "NEGOTIATE_BEARER", "NEGOTIATE_AUTH")
        accept_app_tokens = reader.flag("NEGOTIATE_BEARER_ALLOW_APP_TOKENS", False)
    return NegotiateSettings(
        auth=auth,
        bearer=bearer,
        token_lifetime_minutes=reader.integer("TOKEN_LIFETIME_MINUTES", 60, 1, 1440),
        accept_app_tokens=accept_app_tokens,
    )


def load_group_policy(reader: _Reader) -> GroupPolicySettings:
    """NEGOTIATE_GROUPS, and each NEGOTIATE_GROUPS_<hub>, which must name a served hub once."""
    try:
        served: dict[str, str] | None = {hub.lower(): hub for hub in served_hubs(reader)[1]}
    except ConfigError:
        served = None  # the service concern names the hub setting; the hub names are not checked here
    groups_by_hub: dict[str, tuple[str, ...]] = {}
    for name in sorted(reader.names_with_prefix(PER_HUB_GROUPS_PREFIX)):
        key = name[len(PER_HUB_GROUPS_PREFIX) :].lower()
        if served is not None and key not in served:
            listed = ", ".join(served.values())
            raise ConfigError(name, f"names no hub this app serves ({listed}; WEBPUBSUB_HUB, WEBPUBSUB_HUBS)")
        if key in groups_by_hub:
            raise ConfigError(name, "is set twice for one hub, in different letter cases")
        groups_by_hub[key] = parse_groups(reader.raw(name) or "", setting=name)
    return GroupPolicySettings(groups=parse_groups(reader.raw("NEGOTIATE_GROUPS")), groups_by_hub=groups_by_hub)


def _credential_mode(reader: _Reader) -> CredentialMode | None:
    """WEBPUBSUB_CREDENTIAL when it is valid, for the defaults other concerns derive from it."""
    raw = (reader.get("WEBPUBSUB_CREDENTIAL") or "").lower()
    return CredentialMode(raw) if raw in set(CredentialMode) else None


def load_event_handler(reader: _Reader) -> EventHandlerSettings:
    credential = _credential_mode(reader)
    # Without a valid credential mode the event handler fails on the service's own error anyway.
    default_auth = None if credential is CredentialMode.ENTRA else EventAuth.SIGNATURE
    auth = reader.choice(
        "EVENTHANDLER_AUTH",
        EventAuth,
        default_auth,
        " with WEBPUBSUB_CREDENTIAL=entra (the app holds no key to check signatures)",
    )
    bearer = None
    if auth is EventAuth.SIGNATURE and credential is CredentialMode.ENTRA:
        raise ConfigError(
            "EVENTHANDLER_AUTH", "=signature needs an access key, which entra mode does not have; use bearer"
        )
    app_service_principal_id = None
    if auth is EventAuth.BEARER:
        bearer = replace(
            _bearer(reader, "EVENTHANDLER_BEARER", "EVENTHANDLER_AUTH"),
            principal_id=_service_principal(reader, "EVENTHANDLER_BEARER_PRINCIPAL_ID", "bearer"),
        )
    if auth is EventAuth.APP_SERVICE:
        if not _app_service_auth_enabled(reader):
            raise ConfigError("EVENTHANDLER_AUTH", f"=appservice {NOT_BEHIND_APP_SERVICE_AUTH}")
        app_service_principal_id = _service_principal(reader, "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID", "appservice")
    return EventHandlerSettings(
        auth=auth,
        bearer=bearer,
        extra_origins=_extra_origins(reader),
        max_body_bytes=reader.integer("EVENTHANDLER_MAX_BODY_BYTES", 1024 * 1024, 1024, 16 * 1024 * 1024),
        app_service_principal_id=app_service_principal_id,
    )


def load_health(reader: _Reader) -> HealthSettings:
    return HealthSettings(
        deadline_seconds=reader.number("HEALTH_DEADLINE_SECONDS", 2.0, 0.1, 30.0),
        cache_seconds=reader.number("HEALTH_CACHE_SECONDS", 10.0, 0.0, 300.0),
    )


def load_client_page(reader: _Reader) -> ClientPageSettings:
    return ClientPageSettings(enabled=reader.flag("CLIENT_PAGE_ENABLED", True))


# An app role value: Entra ID allows no spaces in it (it is what the `roles` claim carries).
APP_ROLE_PATTERN = re.compile(r"[!-~]{1,120}")


def load_publish(reader: _Reader) -> PublishSettings:
    auth = reader.choice("PUBLISH_AUTH", PublishAuth, PublishAuth.BEARER)
    role = reader.get("PUBLISH_ROLE") or DEFAULT_PUBLISH_ROLE
    if not APP_ROLE_PATTERN.fullmatch(role):
        raise ConfigError("PUBLISH_ROLE", "must be an app role value: 1-120 visible characters, no spaces", value=role)
    bearer = None
    untouched = not any(reader.get(name) for name in SETTINGS_BY_CONCERN[Concern.PUBLISH])
    if untouched:
        # An app that never set up the publish API keeps it closed (404 naming the settings) rather
        # than failing its health over a route it does not use.
        return PublishSettings(auth=PublishAuth.BEARER, bearer=None, role=role)
    if auth is PublishAuth.BEARER:
        bearer = _bearer(reader, "PUBLISH_BEARER", "PUBLISH_AUTH")
    if auth is PublishAuth.APP_SERVICE and not _app_service_auth_enabled(reader):
        raise ConfigError("PUBLISH_AUTH", f"=appservice {NOT_BEHIND_APP_SERVICE_AUTH}")
    return PublishSettings(auth=auth, bearer=bearer, role=role)


def _section(load: Callable[[_Reader], _Section], reader: _Reader) -> _Section | ConfigError:
    try:
        return load(reader)
    except ConfigError as error:
        return error


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate `environ`, each concern on its own; never raises (a concern's error is raised on use)."""
    reader = _Reader(environ)
    return Settings(
        service=_section(load_service, reader),
        group_policy=_section(load_group_policy, reader),
        negotiate=_section(load_negotiate, reader),
        event_handler=_section(load_event_handler, reader),
        health=_section(load_health, reader),
        client_page=_section(load_client_page, reader),
        publish=_section(load_publish, reader),
    )
