"""The composition root and the one owner of process-wide state, each piece built on first use, once.

Settings, credentials, SDK clients, the event loop for async handlers and the health monitor are
created lazily and then shared by every request of the process (connection pools and token caches
included). `reset_runtime()` forgets all of them at once. Tests build a `Runtime` with their own
settings and collaborators and install it with `use_runtime`.

Each collaborator reads only the concerns it needs (`shared.config.Concern`), so a bad negotiate
setting raises ConfigError from `negotiator` while `events` and `health_monitor` keep working.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from shared.config import CredentialMode, ServiceSettings, Settings, load_settings
from shared.errors import NotFound
from shared.events import EventDispatcher, EventHandlers, handlers
from shared.identity import CallerIdentifier, build_identifier
from shared.negotiate import Negotiator
from shared.policy import GroupPolicy
from shared.tokens import (
    IDENTITY_OPTIONS as IDENTITY_OPTIONS,
    EntraTokenSource,
    KeyTokenSource,
    KeyVaultTokenSource,
    TokenSource,
)
from shared.upstream_auth import UpstreamAuthenticator, build_authenticator

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.health import HealthMonitor
    from shared.presence import Presence
    from shared.publish import PublishApi
    from shared.service_client import AsyncServiceClient, ServiceClient

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")


class AsyncRunner:
    """One event loop in a daemon thread, so sync code (the event handler) can run `async def` handlers.

    The loop lives as long as the runtime, so async SDK clients bound to it keep their connections.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="async-handlers", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, awaitable: Awaitable[_Result]) -> _Result:
        """Run `awaitable` on the loop and wait for its result (its exception is raised here)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a coroutine on the handlers' loop cannot wait for that same loop")

        async def wait_for() -> _Result:
            return await awaitable

        future: concurrent.futures.Future[_Result] = asyncio.run_coroutine_threadsafe(wait_for(), self.loop)
        return future.result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()


class Runtime:
    """Settings plus the collaborators built from them; pass any of them in to replace it.

    `sdk_options` go to every Web PubSub and Key Vault SDK client the runtime builds (tests pass a
    transport there). `policy` replaces the group policy of every hub, `policies` that of the hubs
    it names; the others are built from the settings (NEGOTIATE_GROUPS, NEGOTIATE_GROUPS_<hub>).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        credential: TokenCredential | None = None,
        token_source: TokenSource | None = None,
        identifier: CallerIdentifier | None = None,
        policy: GroupPolicy | None = None,
        policies: Mapping[str, GroupPolicy] | None = None,
        authenticator: UpstreamAuthenticator | None = None,
        registry: EventHandlers | None = None,
        sdk_options: Mapping[str, Any] | None = None,
    ):
        self.settings = settings
        self._credential = credential
        self._token_source = token_source
        self._identifier = identifier
        self._policy = policy
        self._policies = {hub.lower(): hub_policy for hub, hub_policy in (policies or {}).items()}
        self._authenticator = authenticator
        self._registry = registry or handlers
        self._sdk_options = dict(sdk_options or {})
        self._negotiator: Negotiator | None = None
        self._events: EventDispatcher | None = None
        self._health_monitor: HealthMonitor | None = None
        self._service_clients: dict[str, tuple[ServiceClient, AsyncServiceClient]] = {}
        self._publish: PublishApi | None = None
        self._presence: Presence | None = None
        self.async_runner = AsyncRunner()
        self._lock = threading.RLock()

    def credential(self) -> TokenCredential:
        """One DefaultAzureCredential per process (managed identity in Azure, developer login locally).

        It gives up within IDENTITY_OPTIONS' bounds; tokens are cached by the credential itself.
        """
        with self._lock:
            if self._credential is None:
                from shared.probes import identity_credential

                self._credential = identity_credential(self.settings.service.client_id)
            return self._credential

    @property
    def token_source(self) -> TokenSource:
        with self._lock:
            if self._token_source is None:
                quiet_sdk_request_logs()
                self._token_source = build_token_source(self.settings.service, self.credential, self._sdk_options)
            return self._token_source

    def policy_for(self, hub: str) -> GroupPolicy:
        """The group policy of `hub`, built once per hub; negotiate and connect events share it."""
        key = hub.lower()
        with self._lock:
            policy = self._policies.get(key)
            if policy is None:
                policy = self._policy or GroupPolicy(self.settings.group_policy.groups_for(hub))
                self._policies[key] = policy
            return policy

    @property
    def policy(self) -> GroupPolicy:
        """The default hub's group policy."""
        return self.policy_for(self.settings.service.hub)

    @property
    def identifier(self) -> CallerIdentifier:
        with self._lock:
            if self._identifier is None:
                self._identifier = build_identifier(self.settings.negotiate)
            return self._identifier

    @property
    def negotiator(self) -> Negotiator:
        with self._lock:
            if self._negotiator is None:
                service = self.settings.service
                self._negotiator = Negotiator(
                    hubs=service.hubs,
                    default_hub=service.hub,
                    identifier=self.identifier,
                    policy=self.policy_for,
                    tokens=self.token_source,
                    lifetime_minutes=self.settings.negotiate.token_lifetime_minutes,
                )
            return self._negotiator

    def served_hub(self, hub: str | None) -> str:
        """The configured spelling of `hub` (the default hub for None); NotFound for a hub not served."""
        service = self.settings.service
        if hub is None:
            return service.hub
        served = service.served_hub(hub)
        if served is None:
            listed = ", ".join(repr(name) for name in service.hubs)
            raise NotFound(f"This app serves hub {listed}, not {hub[:128]!r}.", code="unknown_hub")
        return served

    def _clients_for(self, hub: str | None) -> tuple[ServiceClient, AsyncServiceClient]:
        name = self.served_hub(hub)
        with self._lock:
            clients = self._service_clients.get(name.lower())
            if clients is None:
                from shared.service_client import AsyncServiceClient, ServiceClient

                client = ServiceClient(self.token_source, name, endpoint=self.settings.service.endpoint)
                clients = (client, AsyncServiceClient(client))
                self._service_clients[name.lower()] = clients
            return clients

    def service_client(self, hub: str | None = None) -> ServiceClient:
        """The server-side client for `hub` (default hub for None), on the token source's SDK client."""
        return self._clients_for(hub)[0]

    def async_service_client(self, hub: str | None = None) -> AsyncServiceClient:
        return self._clients_for(hub)[1]

    @property
    def publish(self) -> PublishApi:
        """The publish and management API (/api/messages, ...); needs the publish and service settings."""
        with self._lock:
            if self._publish is None:
                from shared.publish import PublishApi, build_publish_authenticator

                self._publish = PublishApi(
                    authenticator=build_publish_authenticator(self.settings.publish),
                    clients=self.service_client,
                )
            return self._publish

    @property
    def presence(self) -> Presence:
        """Who is online in a group, for callers negotiate would let use that group."""
        with self._lock:
            if self._presence is None:
                from shared.presence import Presence

                self._presence = Presence(
                    identifier=self.identifier, policy=self.policy_for, clients=self.service_client
                )
            return self._presence

    @property
    def authenticator(self) -> UpstreamAuthenticator:
        with self._lock:
            if self._authenticator is None:
                self._authenticator = build_authenticator(self.settings.event_handler, lambda: self.token_source)
            return self._authenticator

    @property
    def events(self) -> EventDispatcher:
        with self._lock:
            if self._events is None:
                service = self.settings.service
                event_handler = self.settings.event_handler
                self._events = EventDispatcher(
                    hubs=service.hubs,
                    allowed_origins=tuple(dict.fromkeys((service.service_host, *event_handler.extra_origins))),
                    max_body_bytes=event_handler.max_body_bytes,
                    authenticator=self.authenticator,
                    registry=self._registry,
                    policy=self.policy_for,
                    run_async=self.async_runner.run,
                )
            return self._events

    @property
    def health_monitor(self) -> HealthMonitor:
        with self._lock:
            if self._health_monitor is None:
                from shared.health import HealthMonitor

                self._health_monitor = HealthMonitor(self)
            return self._health_monitor

    def use_health_monitor(self, monitor: HealthMonitor) -> None:
        """Replace the health monitor (tests that give it their own probes or clock)."""
        with self._lock:
            if self._health_monitor is not None:
                self._health_monitor.close()
            self._health_monitor = monitor

    def close(self) -> None:
        """End what runs in the background: the health probes (waiting for them) and the handlers' loop."""
        with self._lock:
            monitor, self._health_monitor = self._health_monitor, None
        if monitor is not None:
            monitor.close(wait=True)
        self.async_runner.close()


def build_token_source(
    service: ServiceSettings,
    credential: Callable[[], TokenCredential],
    sdk_options: Mapping[str, Any] | None = None,
) -> TokenSource:
    if service.credential is CredentialMode.CONNECTION_STRING:
        assert service.access_key is not None  # guaranteed by load_settings
        return KeyTokenSource(service.endpoint, service.access_key, sdk_options=sdk_options)
    if service.credential is CredentialMode.KEY_VAULT:
        assert service.keyvault_uri is not None
        assert service.key_secret_name is not None
        return KeyVaultTokenSource(
            endpoint=service.endpoint,
            vault_uri=service.keyvault_uri,
            secret_name=service.key_secret_name,
            refresh_seconds=service.keyvault_refresh_seconds,
            credential_provider=credential,
            sdk_options=sdk_options,
        )
    return EntraTokenSource(endpoint=service.endpoint, credential_provider=credential, sdk_options=sdk_options)


# azure-core logs every request and response of every SDK client at INFO, ten lines each, which the
# Functions host ships to Application Insights: one line per call from the app itself is enough.
SDK_REQUEST_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def quiet_sdk_request_logs() -> None:
    """Raise azure-core's per-request log to WARNING, unless the operator configured that logger."""
    sdk_logger = logging.getLogger(SDK_REQUEST_LOGGER)
    if sdk_logger.level == logging.NOTSET:
        sdk_logger.setLevel(logging.WARNING)


def log_settings(settings: Settings) -> None:
    """Say once what is wrong and which development shortcuts are on: the operator's first clue."""
    for concern, error in settings.problems.items():
        logger.error("Configuration of %s is invalid: %s", concern.value, error.log_message)
    for shortcut in settings.development_shortcuts:
        logger.warning("Development-only setting in use: %s", shortcut)


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, built from the environment on first use (never raises)."""
    global _runtime
    runtime = _runtime
    if runtime is None:
        with _lock:
            if _runtime is None:
                settings = load_settings(os.environ)
                log_settings(settings)
                _runtime = Runtime(settings)
            runtime = _runtime
    return runtime


def use_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, the local host), or None to rebuild from the environment on next use.

    The runtime it replaces is closed: its probes and loop end, its caches are gone.
    """
    global _runtime
    with _lock:
        previous, _runtime = _runtime, runtime
    if previous is not None and previous is not runtime:
        previous.close()


def reset_runtime() -> None:
    """Forget every process-wide cache: settings, credentials, SDK clients, the health monitor."""
    use_runtime(None)
