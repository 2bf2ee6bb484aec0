"""Settings: read from the environment once, on first use, and validated in one place.

Nothing else in the app reads `os.environ`; every other module receives a `Settings`. A missing
or invalid value raises `ConfigError` naming the setting, so the operator reads one precise line
(in the log and in /api/health) instead of a failure deep inside a request. Importing this module
does no work, so a bad setting can never make the Functions host report "0 functions found".
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from shared.errors import ConfigError

logger = logging.getLogger(__name__)

# The service's hub-name rule (data-plane REST API, `hub` path parameter).
HUB_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
# Key Vault secret names: 1-127 letters, digits and dashes.
SECRET_NAME_PATTERN = re.compile(r"[0-9A-Za-z-]{1,127}")
HOST_PATTERN = re.compile(r"[A-Za-z0-9.-]{1,253}")
MAX_GROUP_NAME_LENGTH = 1024

_Choice = TypeVar("_Choice", bound=enum.StrEnum)

# Invalid values are quoted in errors (the log and /api/health) to make typos obvious; a longer value
# is no typo of a mode, number or flag, and may be a key or connection string pasted into the wrong setting.
MAX_QUOTED_VALUE_LENGTH = 24


def _quoted(raw: str) -> str:
    if len(raw) <= MAX_QUOTED_VALUE_LENGTH and raw.isprintable():
        return repr(raw)
    return f"a value of {len(raw)} characters (not shown: it may be a secret meant for another setting)"


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


@dataclass(frozen=True, slots=True)
class BearerSettings:
    """An Entra ID (or any OpenID Connect) issuer whose access tokens the app validates itself."""

    issuer: str
    audience: str
    jwks_uri: str | None = None
    # Only this principal's tokens count (the Web PubSub resource's managed identity object id);
    # without it, any identity in the tenant that can get a token for the audience would pass.
    principal_id: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings; see the README's configuration table for each one."""

    hub: str
    credential: CredentialMode
    endpoint: str  # scheme://host[:port], lower-case, no trailing slash
    access_key: str | None = field(repr=False)  # only with CredentialMode.CONNECTION_STRING
    keyvault_uri: str | None
    key_secret_name: str | None
    keyvault_refresh_seconds: int
    client_id: str | None
    negotiate_auth: NegotiateAuth
    negotiate_bearer: BearerSettings | None
    groups: tuple[str, ...]
    token_lifetime_minutes: int
    event_auth: EventAuth
    event_bearer: BearerSettings | None
    allowed_origins: tuple[str, ...]  # the service host first, then WEBPUBSUB_ALLOWED_ORIGINS
    max_event_body_bytes: int
    health_deadline_seconds: float
    health_cache_seconds: float
    client_page_enabled: bool

    @property
    def service_host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    @property
    def development_shortcuts(self) -> tuple[str, ...]:
        """Development-only choices in effect; logged at start-up and listed by /api/health."""
        found = []
        if self.credential is CredentialMode.CONNECTION_STRING:
            found.append(
                "WEBPUBSUB_CREDENTIAL=connectionstring keeps the access key in an app setting; "
                "use keyvault or entra in production"
            )
        if self.negotiate_auth is NegotiateAuth.ANONYMOUS:
            found.append("NEGOTIATE_AUTH=anonymous lets every caller choose its own user id")
        if self.event_auth is EventAuth.NONE:
            found.append("EVENTHANDLER_AUTH=none accepts events without proof that they come from the service")
        return tuple(found)


# Every public setting the app reads; infra and the diagnostics command check against it.
SETTING_NAMES = frozenset(
    {
        "WEBPUBSUB_HUB",
        "WEBPUBSUB_CREDENTIAL",
        "WEBPUBSUB_CONNECTION_STRING",
        "WEBPUBSUB_ENDPOINT",
        "KEYVAULT_URI",
        "WEBPUBSUB_KEY_SECRET_NAME",
        "KEYVAULT_REFRESH_SECONDS",
        "AZURE_CLIENT_ID",
        "NEGOTIATE_AUTH",
        "NEGOTIATE_BEARER_ISSUER",
        "NEGOTIATE_BEARER_AUDIENCE",
        "NEGOTIATE_BEARER_JWKS_URI",
        "NEGOTIATE_GROUPS",
        "TOKEN_LIFETIME_MINUTES",
        "EVENTHANDLER_AUTH",
        "EVENTHANDLER_BEARER_ISSUER",
        "EVENTHANDLER_BEARER_AUDIENCE",
        "EVENTHANDLER_BEARER_JWKS_URI",
        "EVENTHANDLER_BEARER_PRINCIPAL_ID",
        "WEBPUBSUB_ALLOWED_ORIGINS",
        "EVENTHANDLER_MAX_BODY_BYTES",
        "HEALTH_DEADLINE_SECONDS",
        "HEALTH_CACHE_SECONDS",
        "CLIENT_PAGE_ENABLED",
    }
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
            raise ConfigError(name, f"must be one of {allowed}, not {_quoted(raw)}") from None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number from {low} to {high}, not {_quoted(raw)}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be from {low} to {high}, not {value}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number from {low:g} to {high:g}, not {_quoted(raw)}") from None
        if not low <= value <= high:  # also rejects NaN
            raise ConfigError(name, f"must be from {low:g} to {high:g}, not {raw}")
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
        raise ConfigError(name, f"must be true or false, not {_quoted(raw)}")


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


def parse_groups(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ("chat",)
    groups: list[str] = []
    for item in raw.split(","):
        group = item.strip()
        if not group:
            continue
        if len(group) > MAX_GROUP_NAME_LENGTH:
            raise ConfigError("NEGOTIATE_GROUPS", f"group names are at most {MAX_GROUP_NAME_LENGTH} characters")
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
    why = f"when {mode_setting}=bearer"
    issuer = _https_url(reader, f"{prefix}_ISSUER", required=True, why=why)
    audience = reader.require(f"{prefix}_AUDIENCE", why)
    jwks_uri = _https_url(reader, f"{prefix}_JWKS_URI", required=False)
    assert issuer is not None  # required=True guarantees it
    principal_id = reader.get(f"{prefix}_PRINCIPAL_ID") if prefix == "EVENTHANDLER_BEARER" else None
    return BearerSettings(issuer=issuer, audience=audience, jwks_uri=jwks_uri, principal_id=principal_id)


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


def _allowed_origins(reader: _Reader, service_host: str) -> tuple[str, ...]:
    origins = [service_host]
    raw = reader.get("WEBPUBSUB_ALLOWED_ORIGINS")
    for item in (raw or "").split(","):
        host = item.strip().lower()
        if not host:
            continue
        if not HOST_PATTERN.fullmatch(host):
            raise ConfigError("WEBPUBSUB_ALLOWED_ORIGINS", "must be comma-separated host names, without scheme")
        if host not in origins:
            origins.append(host)
    return tuple(origins)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate `environ` into Settings; raises ConfigError naming the first bad setting."""
    reader = _Reader(environ)

    hub = reader.get("WEBPUBSUB_HUB") or "chat"
    if not HUB_PATTERN.fullmatch(hub):
        raise ConfigError(
            "WEBPUBSUB_HUB",
            "must start with a letter and hold at most 128 letters, digits and _`,.[] characters",
        )

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

    app_service_auth = (reader.get(APP_SERVICE_AUTH_FLAG) or "").lower() == "true"
    not_behind_auth = (
        "requires App Service Authentication, which is off here (the platform sets "
        f"{APP_SERVICE_AUTH_FLAG}=true when it is on); without it the principal headers could be forged"
    )

    negotiate_auth = reader.choice("NEGOTIATE_AUTH", NegotiateAuth, NegotiateAuth.APP_SERVICE)
    negotiate_bearer = None
    if negotiate_auth is NegotiateAuth.APP_SERVICE and not app_service_auth:
        raise ConfigError(
            "NEGOTIATE_AUTH",
            f"=appservice (the default) {not_behind_auth}. Enable it, or choose bearer "
            "(or anonymous for local development)",
        )
    if negotiate_auth is NegotiateAuth.BEARER:
        negotiate_bearer = _bearer(reader, "NEGOTIATE_BEARER", "NEGOTIATE_AUTH")

    default_event_auth = None if credential is CredentialMode.ENTRA else EventAuth.SIGNATURE
    event_auth = reader.choice(
        "EVENTHANDLER_AUTH",
        EventAuth,
        default_event_auth,
        " with WEBPUBSUB_CREDENTIAL=entra (the app holds no key to check signatures)",
    )
    event_bearer = None
    if event_auth is EventAuth.SIGNATURE and credential is CredentialMode.ENTRA:
        raise ConfigError(
            "EVENTHANDLER_AUTH", "=signature needs an access key, which entra mode does not have; use bearer"
        )
    if event_auth is EventAuth.BEARER:
        event_bearer = _bearer(reader, "EVENTHANDLER_BEARER", "EVENTHANDLER_AUTH")
    if event_auth is EventAuth.APP_SERVICE and not app_service_auth:
        raise ConfigError("EVENTHANDLER_AUTH", f"=appservice {not_behind_auth}")

    client_id = reader.get("AZURE_CLIENT_ID")
    service_host = urlsplit(endpoint).hostname or ""

    return Settings(
        hub=hub,
        credential=credential,
        endpoint=endpoint,
        access_key=access_key,
        keyvault_uri=keyvault_uri,
        key_secret_name=secret_name,
        keyvault_refresh_seconds=reader.integer("KEYVAULT_REFRESH_SECONDS", 300, 5, 86400),
        client_id=client_id,
        negotiate_auth=negotiate_auth,
        negotiate_bearer=negotiate_bearer,
        groups=parse_groups(environ.get("NEGOTIATE_GROUPS")),
        token_lifetime_minutes=reader.integer("TOKEN_LIFETIME_MINUTES", 60, 1, 1440),
        event_auth=event_auth,
        event_bearer=event_bearer,
        allowed_origins=_allowed_origins(reader, service_host),
        max_event_body_bytes=reader.integer("EVENTHANDLER_MAX_BODY_BYTES", 1024 * 1024, 1024, 16 * 1024 * 1024),
        health_deadline_seconds=reader.number("HEALTH_DEADLINE_SECONDS", 2.0, 0.1, 30.0),
        health_cache_seconds=reader.number("HEALTH_CACHE_SECONDS", 10.0, 0.0, 300.0),
        client_page_enabled=reader.flag("CLIENT_PAGE_ENABLED", True),
    )


_lock = threading.Lock()
_loaded: Settings | ConfigError | None = None


def get_settings() -> Settings:
    """Settings from the process environment, loaded once; a ConfigError is remembered too."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                try:
                    _loaded = load_settings(os.environ)
                except ConfigError as error:
                    logger.error("Configuration is invalid: %s", error.log_message)
                    _loaded = error
                else:
                    for shortcut in _loaded.development_shortcuts:
                        logger.warning("Development-only setting in use: %s", shortcut)
    if isinstance(_loaded, ConfigError):
        raise ConfigError(_loaded.setting, _loaded.reason)
    return _loaded


def reset_settings() -> None:
    """Forget the loaded settings (tests, and the local host after it loads local.settings.json)."""
    global _loaded
    with _lock:
        _loaded = None
