"""What the doctor diagnoses: the app's settings, read the way the app reads them, plus overrides.

The app reads its settings from the environment; the Functions host fills the environment from
`local.settings.json` `Values` when it runs locally. The doctor does both, with the environment
winning as it does under Core Tools, then applies the command line (`--connection-string`,
`--key`, `--endpoint`, `--hub`) and hands the result to `shared.config.load_settings`, the app's
own validation, concern by concern: `token` and `handler` need only the service's settings (the
endpoint, hub and key), and when even those do not load they take what parses on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.net import DEFAULT_TIMEOUT_SECONDS, run_with_deadline
from doctor.report import Check, fingerprint, ok, warn
from shared.config import (
    Concern,
    CredentialMode,
    EventAuth,
    ServiceSettings,
    Settings,
    load_settings,
    normalize_endpoint,
    parse_connection_string,
)
from shared.errors import ConfigError, DependencyUnavailable
from shared.local_settings import (
    LocalSettingsError as LocalSettingsError,  # the doctor's callers catch it here
    apply_values,
    read_local_settings as read_local_settings_file,
)
from shared.probes import ProbeFailed

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.tokens import KeyVaultTokenSource, TokenSource

LOCAL_SETTINGS_FILE = "local.settings.json"
# Set by App Service on every site; their presence means "this runs in Azure".
PRODUCTION_MARKERS = ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID")
DEFAULT_HUB = "chat"

_CREDENTIAL = "WEBPUBSUB_CREDENTIAL"
_CONNECTION_STRING = "WEBPUBSUB_CONNECTION_STRING"
_ENDPOINT = "WEBPUBSUB_ENDPOINT"
_HUB = "WEBPUBSUB_HUB"
# The settings that decide the endpoint, hub and key: the only ones `token` and `handler` depend on.
_TARGET_SETTINGS = frozenset(
    {_CREDENTIAL, _CONNECTION_STRING, _ENDPOINT, _HUB, "KEYVAULT_URI", "WEBPUBSUB_KEY_SECRET_NAME"}
)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values that replace the configured ones."""

    connection_string: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    endpoint: str | None = None
    hub: str | None = None


def read_local_settings(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json file, as the strings Core Tools would put in the environment."""
    return dict(read_local_settings_file(path).values)


@dataclass(frozen=True)
class SettingsSource:
    """The merged environment the app would see, and where its values came from."""

    environ: Mapping[str, str] = field(repr=False)
    file: Path | None = None
    from_file: frozenset[str] = frozenset()
    file_problem: str | None = None
    overridden: tuple[str, ...] = ()

    @property
    def production(self) -> bool:
        return any((self.environ.get(name) or "").strip() for name in PRODUCTION_MARKERS)

    def describe(self) -> Check:
        """One line saying where the settings were read from."""
        parts = ["the environment"]
        if self.file is not None and self.file_problem is None:
            parts.append(f"{len(self.from_file)} value(s) from {self.file} (the environment wins)")
        if self.overridden:
            parts.append("the command line for " + ", ".join(self.overridden))
        summary = "settings read from " + "; ".join(parts)
        if self.file_problem:
            return warn(
                "settings-file",
                f"{summary}; {self.file_problem}",
                "Fix the file, or set the values as environment variables.",
            )
        return ok("settings-file", summary)


def apply_overrides(environ: dict[str, str], overrides: Overrides) -> tuple[str, ...]:
    """Write the command-line values into `environ` as settings; returns the setting names changed.

    --connection-string selects connectionstring mode. In that mode --endpoint and --key replace
    the matching part of the connection string; in the other modes --endpoint is WEBPUBSUB_ENDPOINT
    and --key is only used to sign and verify, as the service's key.
    """
    changed: list[str] = []

    def put(name: str, value: str) -> None:
        environ[name] = value
        if name not in changed:
            changed.append(name)

    if overrides.hub:
        put(_HUB, overrides.hub)
    if overrides.connection_string:
        put(_CREDENTIAL, CredentialMode.CONNECTION_STRING.value)
        put(_CONNECTION_STRING, overrides.connection_string)
    if not (overrides.endpoint or overrides.key):
        return tuple(changed)
    credential = (environ.get(_CREDENTIAL) or "").strip().lower()
    uses_connection_string = credential == CredentialMode.CONNECTION_STRING.value or (
        not credential and overrides.key is not None
    )
    if uses_connection_string:
        endpoint, key = overrides.endpoint, overrides.key
        current = (environ.get(_CONNECTION_STRING) or "").strip()
        if current and (endpoint is None or key is None):
            with contextlib.suppress(ConfigError):
                current_endpoint, current_key = parse_connection_string(current)
                endpoint = endpoint or current_endpoint
                key = key or current_key
        if endpoint and key:
            put(_CREDENTIAL, CredentialMode.CONNECTION_STRING.value)
            put(_CONNECTION_STRING, f"Endpoint={endpoint};AccessKey={key};Version=1.0;")
            return tuple(changed)
    if overrides.endpoint:
        put(_ENDPOINT, overrides.endpoint)
    return tuple(changed)


def collect_settings(environ: Mapping[str, str], cwd: Path, overrides: Overrides | None = None) -> SettingsSource:
    """The environment the app would run with here: local.settings.json Values, environment, overrides."""
    path = cwd / LOCAL_SETTINGS_FILE
    file_values: dict[str, str] = {}
    problem = None
    found_file = None
    if path.is_file():
        found_file = path
        try:
            file_values = read_local_settings(path)
        except LocalSettingsError as error:
            problem = str(error)
    merged = dict(environ)
    skipped = apply_values(file_values, merged)  # a non-empty environment variable wins, as under Core Tools
    changed = apply_overrides(merged, overrides or Overrides())
    return SettingsSource(
        environ=merged,
        file=found_file,
        from_file=frozenset(name for name in file_values if name not in skipped),
        file_problem=problem,
        overridden=changed,
    )


@dataclass(frozen=True)
class Target:
    """The service endpoint, hub and key the checks compare against."""

    endpoint: str | None
    hub: str
    settings: Settings  # every concern, as the app loads them
    service: ServiceSettings | None  # None when the service's own settings do not load
    load_error: ConfigError | None  # the service's, which decides endpoint, hub and key
    key: str | None = field(default=None, repr=False)
    key_origin: str = ""
    mode: str = ""  # WEBPUBSUB_CREDENTIAL as configured, also when the settings do not load

    def describe(self) -> Check:
        where = f"endpoint {self.endpoint or '(none)'}, hub {self.hub}"
        if self.key:
            where += f", key from {self.key_origin} ({fingerprint(self.key)})"
        if self.load_error is None:
            if self.settings.problems:
                return ok("settings", f"{where} (other settings do not load; `config` says which)")
            return ok("settings", where)
        return warn(
            "settings",
            f"{self.load_error.log_message}; using {where}",
            "Run `python -m doctor config` for the full diagnosis.",
        )


def _partial_target(environ: Mapping[str, str]) -> tuple[str | None, str, str | None]:
    """Endpoint, hub and key from whichever settings parse on their own."""
    hub = (environ.get(_HUB) or "").strip() or DEFAULT_HUB
    credential = (environ.get(_CREDENTIAL) or "").strip().lower()
    endpoint: str | None = None
    key: str | None = None
    raw_connection_string = (environ.get(_CONNECTION_STRING) or "").strip()
    if raw_connection_string and credential in {"", CredentialMode.CONNECTION_STRING.value}:
        with contextlib.suppress(ConfigError):
            endpoint, key = parse_connection_string(raw_connection_string)
    raw_endpoint = (environ.get(_ENDPOINT) or "").strip()
    if endpoint is None and raw_endpoint:
        with contextlib.suppress(ConfigError):
            endpoint = normalize_endpoint(_ENDPOINT, raw_endpoint, allow_http=True)
    return endpoint, hub, key


def resolve_target(source: SettingsSource, overrides: Overrides | None = None) -> Target:
    overrides = overrides or Overrides()
    settings = load_settings(source.environ)
    load_error = settings.problems.get(Concern.SERVICE)
    service = None if load_error else settings.service
    endpoint: str | None
    key: str | None
    if service is not None:
        endpoint, hub, key = service.endpoint, service.hub, service.access_key
    else:
        endpoint, hub, key = _partial_target(source.environ)
    origin = "the connection string" if key else ""
    if overrides.key:
        key, origin = overrides.key, "--key"
    mode = service.credential.value if service else (source.environ.get(_CREDENTIAL) or "").strip().lower()
    return Target(
        endpoint=endpoint,
        hub=hub,
        settings=settings,
        service=service,
        load_error=load_error,
        key=key,
        key_origin=origin,
        mode=mode,
    )


def _management_client(credential: TokenCredential, subscription: str) -> Any:
    from doctor.hubs import management_client

    return management_client(credential, subscription)


@dataclass
class AzureAccess:
    """How the doctor reaches Azure: one credential, and SDK clients that fail within seconds.

    Tests pass a fake `credential` and `sdk_options={"transport": ...}`.
    """

    timeout: float = DEFAULT_TIMEOUT_SECONDS
    credential: TokenCredential | None = None
    sdk_options: Mapping[str, Any] = field(default_factory=dict)
    # (credential, subscription) -> a WebPubSubManagementClient; tests pass a fake.
    management_client: Callable[[TokenCredential, str], Any] = field(default=_management_client)

    def credential_for(self, settings: ServiceSettings) -> TokenCredential:
        """The app's identity (shared.probes.identity_credential), answering within the doctor's timeout."""
        if self.credential is None:
            from shared.probes import identity_credential

            self.credential = identity_credential(settings.client_id, self.timeout)
        return self.credential

    def client_options(self) -> dict[str, Any]:
        """SDK client options: the probe's timeout, and no retries (a retry would only hide the failure)."""
        from shared.probes import probe_options

        return {**probe_options(self.timeout), **self.sdk_options}

    @property
    def deadline(self) -> float:
        """Total time for one SDK probe: a credential may try several sources before it answers."""
        return self.timeout * 3


def key_source(settings: ServiceSettings, key: str, access: AzureAccess) -> TokenSource:
    """The app's token source for `key`, with the doctor's SDK options."""
    from shared.tokens import KeyTokenSource

    return KeyTokenSource(settings.endpoint, key, sdk_options=access.client_options())


def entra_source(settings: ServiceSettings, access: AzureAccess) -> TokenSource:
    """The app's entra token source, with the doctor's credential and SDK options."""
    from shared.tokens import EntraTokenSource

    return EntraTokenSource(
        endpoint=settings.endpoint,
        credential_provider=lambda: access.credential_for(settings),
        sdk_options=access.client_options(),
    )


def keyvault_source(settings: ServiceSettings, access: AzureAccess) -> KeyVaultTokenSource:
    """The app's Key Vault token source, reading with the doctor's credential and SDK options."""
    from azure.keyvault.secrets import SecretClient

    from shared.tokens import KeyVaultTokenSource

    assert settings.keyvault_uri is not None  # keyvault mode guarantees both
    assert settings.key_secret_name is not None
    vault_uri = settings.keyvault_uri

    def secret_client() -> SecretClient:
        return SecretClient(vault_url=vault_uri, credential=access.credential_for(settings), **access.client_options())

    return KeyVaultTokenSource(
        endpoint=settings.endpoint,
        vault_uri=vault_uri,
        secret_name=settings.key_secret_name,
        refresh_seconds=settings.keyvault_refresh_seconds,
        credential_provider=lambda: access.credential_for(settings),
        secret_client_factory=secret_client,
        sdk_options=access.client_options(),
    )


def read_keyvault_key(settings: ServiceSettings, access: AzureAccess) -> str:
    """The access key as the app reads it from Key Vault, through the app's own token source.

    Raises DependencyUnavailable or ConfigError as the app would, or ProbeFailed on the deadline.
    """
    source = keyvault_source(settings, access)
    keys = run_with_deadline(source.access_keys, access.deadline)
    return keys[0]


def signing_key(target: Target, access: AzureAccess) -> tuple[str | None, str]:
    """The access key to sign or verify with and where it came from, or None and why there is none."""
    if target.key:
        return target.key, target.key_origin
    settings = target.service
    if settings is not None and settings.credential is CredentialMode.KEY_VAULT:
        try:
            return read_keyvault_key(settings, access), f"Key Vault secret {settings.key_secret_name}"
        except DependencyUnavailable as error:
            reason = error.detail
        except ConfigError as error:
            reason = error.log_message
        except ProbeFailed as error:
            reason = error.log_detail
        return None, f"the key could not be read from Key Vault ({reason}); pass --key"
    if target.mode == CredentialMode.ENTRA.value:
        return None, "WEBPUBSUB_CREDENTIAL=entra: the app holds no access key; pass --key to use one"
    return None, "no access key is configured; pass --key or --connection-string"


def event_token(target: Target, access: AzureAccess) -> tuple[str | None, str]:
    """A token for the event handler's audience (EVENTHANDLER_AUTH=bearer), as the service would send one.

    From the doctor's credential: the app's managed identity in its console, the developer's login
    or the local identity endpoint elsewhere. Returns the token and who it is from, or None and why not.
    """
    settings = target.service
    if settings is None or Concern.EVENT_HANDLER in target.settings.problems:
        return None, "no key, and the event handler's settings do not load"
    bearer = target.settings.event_handler.bearer
    if target.settings.event_handler.auth is not EventAuth.BEARER or bearer is None:
        return None, f"no access key, and EVENTHANDLER_AUTH={target.settings.event_handler.auth.value} takes no token"
    scope = bearer.audience.rstrip("/") + "/.default"
    try:
        credential = access.credential_for(settings)
        token = run_with_deadline(lambda: credential.get_token(scope), access.deadline)
    except ProbeFailed as error:
        return None, f"no access key, and no token for {bearer.audience}: {error.log_detail}"
    except Exception as error:  # any credential failure: the reason is the report's
        return None, f"no access key, and no token for {bearer.audience} ({type(error).__name__}: {str(error)[:160]})"
    who = f"identity {settings.client_id}" if settings.client_id else "the doctor's credential"
    return token.token, f"{who} (a token for {bearer.audience})"
