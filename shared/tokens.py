"""Token sources: where client access tokens, and the keys that sign events, come from.

Negotiate only sees the `TokenSource` interface, so it never knows which of the three is in use:

- `KeyTokenSource` (connectionstring): signs an HS256 token locally with the SDK; no network.
- `KeyVaultTokenSource` (keyvault): the same, with the access key read from Key Vault, cached,
  refreshed in the background after a TTL, and kept in use when Key Vault is unreachable.
- `EntraTokenSource` (entra): the SDK asks the service's generateToken API with a managed
  identity; the app holds no key at all.

The Azure SDKs are imported on first use, and each client is created once and reused, so
importing this module costs nothing at cold start and requests share connections and token caches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.config import parse_connection_string
from shared.errors import ConfigError, DependencyUnavailable
from shared.protocol import ClientProtocol

if TYPE_CHECKING:
    from azure.core.credentials import AzureKeyCredential, TokenCredential
    from azure.keyvault.secrets import SecretClient
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

logger = logging.getLogger(__name__)

# Dependencies must fail fast: a negotiate call that waits minutes helps nobody. These are passed
# to every Azure SDK client (azure-core transport and retry options).
SDK_CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": 5,
    "read_timeout": 10,
    "retry_total": 2,
    "retry_backoff_factor": 0.2,
    "retry_backoff_max": 2,
}

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

CredentialProvider = Callable[[], "TokenCredential"]

# The SDK's names (and generateToken's `clientType` values); the SDK builds each one's URL and audience.
_SDK_CLIENT_PROTOCOLS: Mapping[ClientProtocol, str] = {
    ClientProtocol.DEFAULT: "Default",
    ClientProtocol.MQTT: "MQTT",
    ClientProtocol.SOCKETIO: "SocketIO",
}


@dataclass(frozen=True, slots=True)
class ClientAccess:
    """What negotiate returns: the URL a client connects to and when its token expires."""

    base_url: str
    token: str = field(repr=False)
    url: str = field(repr=False)
    expires_on: datetime


class TokenSource(Protocol):
    """The one interface negotiate, the events, health and the server-side client use, whatever the credential."""

    def client_access(
        self,
        *,
        hub: str,
        user_id: str,
        roles: Sequence[str],
        groups: Sequence[str],
        minutes: int,
        client_protocol: ClientProtocol = ClientProtocol.DEFAULT,
    ) -> ClientAccess:
        """A client access URL for `user_id` on `hub` with exactly these roles, joining `groups` at connect.

        The URL (and the token's audience) is the endpoint of `client_protocol`.
        """
        ...

    def access_keys(self, *, refresh: bool = False) -> tuple[str, ...]:
        """The access keys events are signed with (none in entra mode); `refresh` re-reads them."""
        ...

    def service_client(self, hub: str) -> WebPubSubServiceClient:
        """The SDK client token issuing uses for `hub`; the app's own REST calls share it (and its credential)."""
        ...

    def check(self, timeout: float) -> str:
        """Prove now, within about `timeout`, that the credential is usable (health, the doctor).

        Returns a secret-free detail; raises DependencyUnavailable or ConfigError like a first use.
        Reading a key from elsewhere does that read; a key held in the settings only has to parse.
        """
        ...

    def cached_key(self) -> KeyVaultStatus | None:
        """The key held from an earlier read, for judging a failed read; None when keys are not read from elsewhere."""
        ...


class _ClientsByHub:
    """One SDK client per hub, built on first use from one credential, then shared by every request."""

    def __init__(self, endpoint: str, credential: Callable[[], Any], sdk_options: Mapping[str, Any]):
        self._endpoint = endpoint
        self._credential = credential
        self._options = {**SDK_CLIENT_OPTIONS, **sdk_options}
        self._clients: dict[str, WebPubSubServiceClient] = {}
        self._lock = threading.Lock()

    def get(self, hub: str) -> WebPubSubServiceClient:
        client = self._clients.get(hub)
        if client is None:
            with self._lock:
                client = self._clients.get(hub)
                if client is None:
                    from azure.messaging.webpubsubservice import WebPubSubServiceClient

                    client = WebPubSubServiceClient(
                        endpoint=self._endpoint, hub=hub, credential=self._credential(), **self._options
                    )
                    self._clients[hub] = client
        return client


def describe_azure_error(error: BaseException) -> str:
    """A one-line, secret-free description of an Azure SDK failure for the log."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    prefix = type(error).__name__ + (f" (HTTP {status})" if status else "")
    return f"{prefix}: {text}" if text else prefix


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class KeyTokenSource:
    """HS256 tokens signed locally with an access key (connectionstring mode, and Key Vault's key).

    `sdk_options` go to the SDK clients it builds (tests pass a transport).
    """

    def __init__(self, endpoint: str, key: str, *, sdk_options: Mapping[str, Any] | None = None):
        self._endpoint = endpoint
        self._key = key
        self._sdk_options = dict(sdk_options or {})
        self._credential: AzureKeyCredential | None = None
        self._clients = _ClientsByHub(endpoint, self._key_credential, self._sdk_options)

    @property
    def key(self) -> str:
        return self._key

    def _key_credential(self) -> AzureKeyCredential:
        if self._credential is None:
            from azure.core.credentials import AzureKeyCredential

            self._credential = AzureKeyCredential(self._key)
        return self._credential

    def service_client(self, hub: str) -> WebPubSubServiceClient:
        return self._clients.get(hub)

    def client_access(
        self,
        *,
        hub: str,
        user_id: str,
        roles: Sequence[str],
        groups: Sequence[str],
        minutes: int,
        client_protocol: ClientProtocol = ClientProtocol.DEFAULT,
    ) -> ClientAccess:
        # Taken before signing, so the reported expiry is never later than the token's `exp`.
        issued = _now()
        result = self.service_client(hub).get_client_access_token(
            user_id=user_id,
            roles=list(roles),
            groups=list(groups),
            minutes_to_expire=minutes,
            client_protocol=_SDK_CLIENT_PROTOCOLS[client_protocol],
        )
        return ClientAccess(
            base_url=result["baseUrl"],
            token=result["token"],
            url=result["url"],
            expires_on=issued + timedelta(minutes=minutes),
        )

    def access_keys(self, *, refresh: bool = False) -> tuple[str, ...]:
        return (self._key,)

    def check(self, timeout: float) -> str:
        return "the access key parses; tokens are signed locally"

    def cached_key(self) -> KeyVaultStatus | None:
        return None


def key_from_secret(value: str | None, endpoint: str) -> str:
    """The access key from a Key Vault secret holding either the bare key or a connection string."""
    text = (value or "").strip()
    if not text:
        raise ConfigError("WEBPUBSUB_KEY_SECRET_NAME", "the secret is empty")
    if "accesskey=" not in text.lower():
        return text
    try:
        secret_endpoint, key = parse_connection_string(text)
    except ConfigError as error:
        raise ConfigError(
            "WEBPUBSUB_KEY_SECRET_NAME", f"the secret holds a malformed connection string ({error.reason})"
        ) from None
    if secret_endpoint != endpoint:
        raise ConfigError(
            "WEBPUBSUB_KEY_SECRET_NAME",
            f"the secret's connection string is for {secret_endpoint}, but WEBPUBSUB_ENDPOINT is {endpoint}",
        )
    return key


@dataclass(frozen=True, slots=True)
class KeyVaultStatus:
    """What health reports about the cached key: whether there is one, its age, the last failure."""

    has_key: bool
    age_seconds: float | None
    last_error: str | None


class KeyVaultTokenSource:
    """Access key read from Key Vault; never one Key Vault read per request.

    The first use reads the secret (blocking; 503 if Key Vault is down). After
    `refresh_seconds`, the next request starts one background re-read and keeps issuing with the
    cached key meanwhile; if Key Vault is unreachable the cached key stays in use and health reports
    the failure. After a failure no read is tried for `retry_seconds`. `access_keys(refresh=True)`
    (a signature mismatch, e.g. after rotation) re-reads at most once per `forced_refresh_seconds`,
    so forged events cannot flood Key Vault.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        vault_uri: str,
        secret_name: str,
        refresh_seconds: float,
        credential_provider: CredentialProvider,
        secret_client_factory: Callable[[], SecretClient] | None = None,
        sdk_options: Mapping[str, Any] | None = None,
        retry_seconds: float = 5.0,
        forced_refresh_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._endpoint = endpoint
        self._sdk_options = dict(sdk_options or {})
        self._vault_uri = vault_uri
        self._secret_name = secret_name
        self._refresh_seconds = refresh_seconds
        self._retry_seconds = retry_seconds
        self._forced_refresh_seconds = forced_refresh_seconds
        self._credential_provider = credential_provider
        self._secret_client_factory = secret_client_factory
        self._clock = clock
        self._client: SecretClient | None = None
        self._signer: KeyTokenSource | None = None
        self._read_at: float | None = None  # last successful read
        self._attempted_at: float | None = None  # last read, successful or not
        self._last_error: str | None = None
        self._last_summary = "Key Vault is unavailable"
        self._refreshing = threading.Lock()  # at most one read at a time
        self.reads = 0  # Key Vault reads so far; health and the tests read it

    def _secret_client(self) -> SecretClient:
        if self._client is None:
            if self._secret_client_factory is not None:
                self._client = self._secret_client_factory()
            else:
                from azure.keyvault.secrets import SecretClient

                self._client = SecretClient(
                    vault_url=self._vault_uri, credential=self._credential_provider(), **SDK_CLIENT_OPTIONS
                )
        return self._client

    def _read(self, **request_options: Any) -> None:
        """Read the secret once (caller holds `_refreshing`); on success swap in a signer for the key.

        `request_options` go to the SDK call (per-request timeouts and retries, for `probe`).
        """
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
        )

        self.reads += 1
        self._attempted_at = self._clock()
        try:
            secret = self._secret_client().get_secret(self._secret_name, **request_options)
            key = key_from_secret(secret.value, self._endpoint)
        except ResourceNotFoundError:
            raise self._failed(
                f"secret {self._secret_name!r} does not exist in {self._vault_uri}", "the secret does not exist"
            ) from None
        except HttpResponseError as error:
            hint = ""
            if error.status_code == 403:
                hint = " (the app's identity needs the Key Vault Secrets User role on the vault)"
            summary = f"Key Vault answered HTTP {error.status_code}"
            if isinstance(error, ClientAuthenticationError) and error.response is None:
                summary = "the app's identity could not get a token for Key Vault"
            raise self._failed(describe_azure_error(error) + hint, summary) from None
        except AzureError as error:
            raise self._failed(
                describe_azure_error(error), f"Key Vault could not be reached ({type(error).__name__})"
            ) from None
        except ConfigError as error:
            self._last_error = error.log_message
            raise
        if self._signer is None or self._signer.key != key:
            if self._signer is not None:
                logger.info("The Web PubSub access key in Key Vault changed; issuing with the new key")
            self._signer = KeyTokenSource(self._endpoint, key, sdk_options=self._sdk_options)
        self._read_at = self._attempted_at
        self._last_error = None

    def _failed(self, detail: str, summary: str | None = None) -> DependencyUnavailable:
        """`detail` names the vault and secret (the log); `summary` does not (anonymous readers)."""
        self._last_error = detail
        if summary is not None:
            self._last_summary = summary
        return DependencyUnavailable(
            "Key Vault", detail, retry_after_seconds=max(1, round(self._retry_seconds)), summary=self._last_summary
        )

    def _since(self, moment: float | None) -> float:
        return float("inf") if moment is None else self._clock() - moment

    def _refresh_due(self) -> bool:
        return self._since(self._read_at) >= self._refresh_seconds and (
            self._since(self._attempted_at) >= self._retry_seconds
        )

    def _refresh_in_background(self) -> None:
        try:
            self._read()
        except (DependencyUnavailable, ConfigError) as error:
            logger.warning("Key Vault refresh failed; still issuing with the cached key: %s", error.log_message)
        finally:
            self._refreshing.release()

    def _current(self) -> KeyTokenSource:
        signer = self._signer
        if signer is not None:
            if self._refresh_due() and self._refreshing.acquire(blocking=False):
                threading.Thread(target=self._refresh_in_background, name="keyvault-refresh", daemon=True).start()
            return signer
        with self._refreshing:
            if self._signer is None:
                if self._since(self._attempted_at) < self._retry_seconds and self._last_error:
                    raise self._failed(self._last_error)
                self._read()
            assert self._signer is not None  # _read either set it or raised
            return self._signer

    def client_access(
        self,
        *,
        hub: str,
        user_id: str,
        roles: Sequence[str],
        groups: Sequence[str],
        minutes: int,
        client_protocol: ClientProtocol = ClientProtocol.DEFAULT,
    ) -> ClientAccess:
        return self._current().client_access(
            hub=hub, user_id=user_id, roles=roles, groups=groups, minutes=minutes, client_protocol=client_protocol
        )

    def service_client(self, hub: str) -> WebPubSubServiceClient:
        """The current key's client: after a rotation, calls use the new key at once."""
        return self._current().service_client(hub)

    def access_keys(self, *, refresh: bool = False) -> tuple[str, ...]:
        if (
            refresh
            and self._signer is not None
            and self._since(self._attempted_at) >= self._forced_refresh_seconds
            and self._refreshing.acquire(blocking=False)
        ):
            try:
                self._read()
            except (DependencyUnavailable, ConfigError) as error:
                logger.warning("Key Vault re-read after a signature mismatch failed: %s", error.log_message)
            finally:
                self._refreshing.release()
        return self._current().access_keys()

    def check(self, timeout: float) -> str:
        """Read the secret now, for /api/health: proof that Key Vault and the identity work at this moment.

        An ordinary read (one at a time; a success refreshes the cached key, a failure keeps it and
        shows in `cached_key()`), but with `timeout` per network step and no retries, so a hung vault
        cannot hold it long. Raises DependencyUnavailable or ConfigError, like a first read.
        """
        if not self._refreshing.acquire(timeout=timeout):
            message = f"a read started earlier is still running after {timeout:g} s"
            raise DependencyUnavailable("Key Vault", message, summary=message)
        try:
            self._read(connection_timeout=timeout, read_timeout=timeout, retry_total=0)
        finally:
            self._refreshing.release()
        return "read the access key from Key Vault just now"

    def cached_key(self) -> KeyVaultStatus:
        return KeyVaultStatus(
            has_key=self._signer is not None,
            age_seconds=None if self._read_at is None else self._since(self._read_at),
            last_error=self._last_error,
        )


class EntraTokenSource:
    """Tokens from the service's generateToken API, authorized by the app's managed identity.

    `sdk_options` go to the SDK clients it builds (tests pass a transport).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        credential_provider: CredentialProvider,
        sdk_options: Mapping[str, Any] | None = None,
    ):
        self._endpoint = endpoint
        self._clients = _ClientsByHub(endpoint, credential_provider, sdk_options or {})

    def service_client(self, hub: str) -> WebPubSubServiceClient:
        return self._clients.get(hub)

    def client_access(
        self,
        *,
        hub: str,
        user_id: str,
        roles: Sequence[str],
        groups: Sequence[str],
        minutes: int,
        client_protocol: ClientProtocol = ClientProtocol.DEFAULT,
    ) -> ClientAccess:
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

        issued = _now()
        try:
            result = self.service_client(hub).get_client_access_token(
                user_id=user_id,
                roles=list(roles),
                groups=list(groups),
                minutes_to_expire=minutes,
                client_protocol=_SDK_CLIENT_PROTOCOLS[client_protocol],  # generateToken's clientType
                # Per request: azure-core's bearer policy reads it from the request's options only.
                # Plain http is only accepted by configuration for a local service on loopback.
                enforce_https=self._endpoint.startswith("https://"),
            )
        except ClientAuthenticationError as error:
            if error.response is None:
                raise DependencyUnavailable(
                    "Entra ID", f"the managed identity could not get a token: {describe_azure_error(error)}"
                ) from None
            raise DependencyUnavailable(
                "Web PubSub", f"the service refused the identity's token: {describe_azure_error(error)}"
            ) from None
        except HttpResponseError as error:
            hints = {
                400: f" (the service refused the request for client protocol {client_protocol.value})",
                403: " (the app's identity needs the Web PubSub Service Owner role)",
                404: " (check WEBPUBSUB_ENDPOINT and WEBPUBSUB_HUB)",
            }
            detail = describe_azure_error(error) + hints.get(error.status_code or 0, "")
            raise DependencyUnavailable("Web PubSub", detail) from None
        except AzureError as error:
            raise DependencyUnavailable("Web PubSub", describe_azure_error(error)) from None
        return ClientAccess(
            base_url=result["baseUrl"],
            token=result["token"],
            url=result["url"],
            expires_on=_token_expiry(result["token"]) or issued + timedelta(minutes=minutes),
        )

    def access_keys(self, *, refresh: bool = False) -> tuple[str, ...]:
        return ()

    def check(self, timeout: float) -> str:
        return "the app holds no key: tokens come from the service's generateToken API"

    def cached_key(self) -> KeyVaultStatus | None:
        return None


def _token_expiry(token: str) -> datetime | None:
    """The `exp` the service wrote into a token it issued (read, not verified: we only report it)."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError):
        return None
