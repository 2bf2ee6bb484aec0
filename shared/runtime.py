"""The composition root: everything built from the settings, each piece on first use, once.

Configuration, credentials and SDK clients are created lazily and then shared by every request of
the process (connection pools and token caches included). Tests build a `Runtime` with their own
settings and collaborators and install it with `use_runtime`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.config import CredentialMode, Settings, get_settings
from shared.events import ChatDefaults, EventDispatcher, EventHandlers, handlers
from shared.identity import CallerIdentifier, build_identifier
from shared.negotiate import Negotiator
from shared.policy import GroupPolicy
from shared.tokens import SDK_CLIENT_OPTIONS, EntraTokenSource, KeyTokenSource, KeyVaultTokenSource, TokenSource
from shared.upstream_auth import UpstreamAuthenticator, build_authenticator

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# azure-identity's defaults wait minutes on a managed-identity endpoint that accepts connections and
# never answers (long reads, then retries with back-off), and per-call options do not reach its HTTP
# requests. Bounded here, a silent identity costs negotiate or a Key Vault read at most
# about 16 s (three attempts), then a 503.
# The retries are the other SDK clients' (SDK_CLIENT_OPTIONS); the identity endpoint is local to the
# host, so its timeouts are shorter.
IDENTITY_OPTIONS: dict[str, Any] = {
    **SDK_CLIENT_OPTIONS,
    "connection_timeout": 3,
    "read_timeout": 5,
    "process_timeout": 10,  # the developer tools (az, azd) the chain asks when run locally
}


class Runtime:
    """Settings plus the collaborators built from them; pass any of them in to replace it."""

    def __init__(
        self,
        settings: Settings,
        *,
        credential: TokenCredential | None = None,
        token_source: TokenSource | None = None,
        identifier: CallerIdentifier | None = None,
        policy: GroupPolicy | None = None,
        authenticator: UpstreamAuthenticator | None = None,
        registry: EventHandlers | None = None,
    ):
        self.settings = settings
        self._credential = credential
        self._token_source = token_source
        self._identifier = identifier
        self._policy = policy
        self._authenticator = authenticator
        self._registry = registry or handlers
        self._negotiator: Negotiator | None = None
        self._events: EventDispatcher | None = None
        self._lock = threading.RLock()

    def credential(self) -> TokenCredential:
        """One DefaultAzureCredential per process (managed identity in Azure, developer login locally).

        It gives up within IDENTITY_OPTIONS' bounds; tokens are cached by the credential itself.
        """
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential(
                    managed_identity_client_id=self.settings.client_id, **IDENTITY_OPTIONS
                )
            return self._credential

    @property
    def token_source(self) -> TokenSource:
        with self._lock:
            if self._token_source is None:
                self._token_source = build_token_source(self.settings, self.credential)
            return self._token_source

    @property
    def policy(self) -> GroupPolicy:
        with self._lock:
            if self._policy is None:
                self._policy = GroupPolicy(self.settings.groups)
            return self._policy

    @property
    def identifier(self) -> CallerIdentifier:
        with self._lock:
            if self._identifier is None:
                self._identifier = build_identifier(self.settings)
            return self._identifier

    @property
    def negotiator(self) -> Negotiator:
        with self._lock:
            if self._negotiator is None:
                self._negotiator = Negotiator(
                    identifier=self.identifier,
                    policy=self.policy,
                    tokens=self.token_source,
                    lifetime_minutes=self.settings.token_lifetime_minutes,
                )
            return self._negotiator

    @property
    def authenticator(self) -> UpstreamAuthenticator:
        with self._lock:
            if self._authenticator is None:
                self._authenticator = build_authenticator(self.settings, self.token_source)
            return self._authenticator

    @property
    def events(self) -> EventDispatcher:
        with self._lock:
            if self._events is None:
                self._events = EventDispatcher(
                    settings=self.settings,
                    authenticator=self.authenticator,
                    registry=self._registry,
                    defaults=ChatDefaults(self.policy),
                )
            return self._events


def build_token_source(settings: Settings, credential: Callable[[], TokenCredential]) -> TokenSource:
    if settings.credential is CredentialMode.CONNECTION_STRING:
        assert settings.access_key is not None  # guaranteed by load_settings
        return KeyTokenSource(settings.endpoint, settings.hub, settings.access_key)
    if settings.credential is CredentialMode.KEY_VAULT:
        assert settings.keyvault_uri is not None
        assert settings.key_secret_name is not None
        return KeyVaultTokenSource(
            endpoint=settings.endpoint,
            hub=settings.hub,
            vault_uri=settings.keyvault_uri,
            secret_name=settings.key_secret_name,
            refresh_seconds=settings.keyvault_refresh_seconds,
            credential_provider=credential,
        )
    return EntraTokenSource(endpoint=settings.endpoint, hub=settings.hub, credential_provider=credential)


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, built on first use; raises ConfigError while settings are invalid."""
    global _runtime
    if _runtime is None:
        settings = get_settings()
        with _lock:
            if _runtime is None:
                _runtime = Runtime(settings)
    return _runtime


def use_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, the local host), or None to rebuild from the environment."""
    global _runtime
    with _lock:
        _runtime = runtime
