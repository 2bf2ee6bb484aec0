"""Probing the app's dependencies and naming their failures: the one module /api/health and the doctor share.

A probe does one cheap thing a dependency must get right for the app to work, within a timeout,
and returns a short detail, or raises `ProbeFailed` naming the failure (`Failure`) with a fix:

    probe                  proves                                                      failures
    probe_service          HEAD {endpoint}/api/health answers 2xx (anonymous)          network, not-the-service,
                                                                                       network-denied, service-error
    probe_service_access   the service accepts the app's credential, per served hub:   key-refused, identity-refused,
                           a signed HEAD users/{id} (access key) or generateToken      role-missing, no-token, no-key
                           (Entra ID), through the token source's own SDK client
    probe_identity         the identity gets a token for a scope                      no-token
    probe_vault_reachable  Key Vault answers HTTP at all                               network, service-error
    probe_vault_secret     the token source reads its key from Key Vault now          key-vault

Two texts per failure: `detail` is safe for anyone (health's anonymous body: no key, token,
resource name of the vault or secret, nor a role hint), `log_detail` adds what only the operator
should read (the log, the doctor). Network failures are named the way users can act on them: a
name that does not resolve (dns), a port nobody listens on (refused), dropped packets (timeout),
a TLS handshake that fails (tls).

The SDKs and `requests` are imported when a probe runs, so importing this module costs nothing.
"""

from __future__ import annotations

import enum
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.errors import ConfigError, DependencyUnavailable
from shared.tokens import describe_azure_error

if TYPE_CHECKING:
    import requests
    from azure.core.credentials import TokenCredential

    from shared.tokens import TokenSource

# The data-plane API version of the service's health operation; any 2xx answer counts as healthy.
SERVICE_API_VERSION = "2024-12-01"
KEYVAULT_API_VERSION = "7.5"
WEBPUBSUB_SCOPE = "https://webpubsub.azure.com/.default"
KEYVAULT_SCOPE = "https://vault.azure.net/.default"
# The user the access probe asks about (it need not exist) or issues a one-minute token for.
PROBE_USER_ID = "webpubsub-health-probe"
SERVICE_OWNER_ROLE = "Web PubSub Service Owner"


class Failure(enum.StrEnum):
    """What went wrong, by what fixes it; health logs it, the doctor prints its fix."""

    DNS = "dns"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    TLS = "tls"
    NETWORK = "network"
    NETWORK_DENIED = "network-denied"  # the resource answers 403 to this network
    NOT_THE_SERVICE = "not-the-service"  # the host answers, but is no Web PubSub service
    SERVICE_ERROR = "service-error"  # the dependency answered with an error of its own
    KEY_REFUSED = "key-refused"  # the service answers 401 to requests signed with the app's key
    IDENTITY_REFUSED = "identity-refused"  # the service answers 401 to the identity's token
    ROLE_MISSING = "role-missing"  # the service answers 403 to the identity
    NO_TOKEN = "no-token"  # the identity gets no token  # noqa: S105 (a failure's name)
    NO_KEY = "no-key"  # there is no access key to try
    KEY_VAULT = "key-vault"  # the secret cannot be read


NETWORK_FAILURES = frozenset({Failure.DNS, Failure.REFUSED, Failure.TIMEOUT, Failure.TLS, Failure.NETWORK})

FIXES: Mapping[Failure, str] = {
    Failure.DNS: (
        "Check the host name. Behind a private endpoint the name resolves only inside the virtual network "
        "(through its private DNS zone): run this from there."
    ),
    Failure.REFUSED: (
        "Start the server, or correct the port (locally: Functions host 7071, local Web PubSub service 8080)."
    ),
    Failure.TIMEOUT: (
        "A firewall, network security group or disabled public network access drops the traffic: allow outbound "
        "HTTPS (port 443) from here to the host, or go through the private endpoint."
    ),
    Failure.TLS: (
        "Use https with a certificate this machine trusts (a TLS-intercepting proxy breaks it), or http locally."
    ),
    Failure.NETWORK: "Check the network path (proxy, firewall) between this machine and the host.",
    Failure.NETWORK_DENIED: (
        "Allow this network in the resource's Networking settings (public network access, or an ACL rule for "
        "server connections), or come in through the private endpoint."
    ),
    Failure.NOT_THE_SERVICE: (
        "Use the resource's host name (az webpubsub show --query hostName) as WEBPUBSUB_ENDPOINT or as the "
        "connection string's Endpoint."
    ),
    Failure.SERVICE_ERROR: "Check the dependency's health in the portal, and its logs for this request.",
    Failure.KEY_REFUSED: (
        "The access key is not one of this resource's keys: copy the current connection string (or key) from the "
        "resource's Keys page, into WEBPUBSUB_CONNECTION_STRING or the Key Vault secret. Locally, the app's "
        "connection string and the local service must use the same key."
    ),
    Failure.IDENTITY_REFUSED: (
        "The service does not accept the identity's token: the identity must belong to the resource's tenant "
        "(check AZURE_CLIENT_ID for a user-assigned identity)."
    ),
    Failure.ROLE_MISSING: (
        f"Assign the app's identity the {SERVICE_OWNER_ROLE} role on the resource (Contributor is not enough); "
        "role assignments take a few minutes to apply."
    ),
    Failure.NO_TOKEN: (
        "In Azure, turn on the app's managed identity (and set AZURE_CLIENT_ID for a user-assigned one); "
        "on a workstation, sign in with `az login`."
    ),
    Failure.NO_KEY: "Fix what keeps the key from being read first (the credential check says what).",
    Failure.KEY_VAULT: (
        "Grant the app's identity the Key Vault Secrets User role on the vault, check WEBPUBSUB_KEY_SECRET_NAME, "
        "store the bare access key (or the connection string) in it, and let the app's network through the "
        "vault's firewall."
    ),
}

# The cause of a network failure without the host: for bodies that must not name resources.
_NETWORK_WORDS: Mapping[Failure, str] = {
    Failure.DNS: "the host name does not resolve",
    Failure.REFUSED: "connection refused",
    Failure.TIMEOUT: "no answer in time",
    Failure.TLS: "the TLS handshake failed",
    Failure.NETWORK: "the connection failed",
}


class ProbeFailed(Exception):
    """A dependency did not do its part: `failure` names how, `detail` is safe to show anyone.

    `log_detail` (default: `detail`) may name resources and roles, for the log and the doctor.
    """

    def __init__(self, failure: Failure, detail: str, *, log_detail: str | None = None):
        super().__init__(detail)
        self.failure = failure
        self.detail = detail
        self.log_detail = log_detail or detail

    @property
    def fix(self) -> str:
        return FIXES[self.failure]

    @property
    def network(self) -> bool:
        return self.failure in NETWORK_FAILURES

    def prefixed(self, prefix: str) -> ProbeFailed:
        """The same failure with `prefix` before both texts (which request failed, for example)."""
        return ProbeFailed(self.failure, f"{prefix}{self.detail}", log_detail=f"{prefix}{self.log_detail}")


# SDK options and the one credential factory


def probe_options(timeout: float) -> dict[str, Any]:
    """Per-request SDK options for a probe: `timeout` per network step, and no retries (they only hide the failure)."""
    return {"connection_timeout": timeout, "read_timeout": timeout, "retry_total": 0}


def identity_credential(client_id: str | None, timeout: float | None = None) -> TokenCredential:
    """The app's identity as DefaultAzureCredential finds it (AZURE_CLIENT_ID picks a user-assigned one).

    Without `timeout`: the app's credential, bounded by shared.tokens.IDENTITY_OPTIONS. With it: a
    probe's, which answers within about `timeout` (one attempt, `timeout` per request and per
    developer tool), because per-call options never reach azure-identity's own HTTP requests.
    """
    from azure.identity import DefaultAzureCredential

    from shared.tokens import IDENTITY_OPTIONS

    options: dict[str, Any] = dict(IDENTITY_OPTIONS)
    if timeout is not None:
        options.update(probe_options(timeout), process_timeout=timeout)
    return DefaultAzureCredential(managed_identity_client_id=client_id, **options)


# Network failures


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps: causes, contexts, urllib3 reasons, azure-core inner errors."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            getattr(current, "reason", None),
            getattr(current, "inner_exception", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _where(url: str) -> tuple[str, str]:
    """(host, host:port) of a URL, for messages; never the path or query (a query may hold a key)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme in {"https", "wss"} else 80)
    except ValueError:
        return "the host", "the host"
    host = parts.hostname or "the host"
    return host, f"{host}:{port}"


def classify(error: BaseException, url: str, timeout: float) -> ProbeFailed:
    """Name a failure to reach `url`: dns, refused, timeout, tls, or plain network.

    `log_detail` names the host; `detail` only the cause (the host may be a private resource's).
    """
    import requests
    from urllib3.exceptions import NewConnectionError, TimeoutError as Urllib3Timeout

    host, address = _where(url)
    chain = list(_chain(error))

    def failed(failure: Failure, log_detail: str, cause: str | None = None) -> ProbeFailed:
        return ProbeFailed(failure, cause or _NETWORK_WORDS[failure], log_detail=log_detail)

    if any(isinstance(item, socket.gaierror) for item in chain):
        return failed(Failure.DNS, f"the host name {host} does not resolve (DNS)")
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            why = f"the TLS handshake failed: the certificate is not trusted ({item.verify_message})"
            return failed(Failure.TLS, f"the TLS certificate of {host} is not trusted ({item.verify_message})", why)
    for item in chain:
        if isinstance(item, ssl.SSLError):
            why = f"the TLS handshake failed ({item.reason or type(item).__name__})"
            return failed(
                Failure.TLS, f"the TLS handshake with {host} failed ({item.reason or type(item).__name__})", why
            )
    if any(isinstance(item, requests.exceptions.SSLError) for item in chain):
        return failed(Failure.TLS, f"the TLS handshake with {host} failed")
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return failed(Failure.REFUSED, f"{address} refused the connection (nothing listens there)")
    # urllib3 derives NewConnectionError (any failed connect) from its timeout class: not a timeout.
    timeouts = (requests.Timeout, Urllib3Timeout, TimeoutError)
    timed_out = [item for item in chain if isinstance(item, timeouts) and not isinstance(item, NewConnectionError)]
    if timed_out:
        connecting = any(isinstance(item, requests.exceptions.ConnectTimeout) for item in timed_out)
        cause = (
            f"could not connect within {timeout:g} s"
            if connecting
            else f"connected, but no answer within {timeout:g} s"
        )
        return failed(Failure.TIMEOUT, f"no answer from {address} within {timeout:g} s", cause)
    if any(isinstance(item, ConnectionResetError) for item in chain):
        return failed(Failure.NETWORK, f"{address} reset the connection", "the connection was reset")
    return failed(Failure.NETWORK, f"the connection to {address} failed ({type(error).__name__})")


def http_request(
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    session: requests.Session | None = None,
    verify: bool | str = True,
) -> requests.Response:
    """One plain HTTP request, never following redirects (the service does not either); raises ProbeFailed.

    The SDKs have no health operation, so this uses `requests` (which the Azure SDKs' transport
    already brings), with the same proxy and CA settings as the SDKs. `verify` is requests' own:
    True for the usual CA bundle, or the path of one to trust instead.
    """
    import requests

    sender = session.request if session is not None else requests.request
    try:
        response = sender(
            method,
            url,
            headers=dict(headers or {}),
            data=body,
            timeout=(timeout, timeout),
            allow_redirects=False,
            verify=verify,
        )
    except requests.RequestException as error:
        raise classify(error, url, timeout) from None
    return response


HttpStatus = Callable[[str, str, float], int]


class HttpProbe:
    """`status(method, url, timeout)`: the status code of one request, or ProbeFailed saying why there was none."""

    def __init__(self, *, verify: bool | str = True, session: requests.Session | None = None):
        self._verify = verify
        self._session = session

    def status(self, method: str, url: str, timeout: float) -> int:
        response = http_request(method, url, timeout=timeout, session=self._session, verify=self._verify)
        response.close()
        return response.status_code


# The probes


def probe_service(http: HttpProbe, endpoint: str, timeout: float) -> str:
    """HEAD /api/health, which the service answers without credentials: is this host the service, up?"""
    url = f"{endpoint}/api/health?api-version={SERVICE_API_VERSION}"
    request = f"HEAD {url}"
    try:
        status = http.status("HEAD", url, timeout)
    except ProbeFailed as failure:
        raise failure.prefixed(f"{request}: ") from None
    if 200 <= status < 300:
        return f"{request} answered {status}"
    if status == 403:
        raise ProbeFailed(Failure.NETWORK_DENIED, f"{request} answered HTTP 403: the resource refuses this network")
    if status in {401, 404}:
        raise ProbeFailed(
            Failure.NOT_THE_SERVICE,
            f"{request} answered HTTP {status}: this host is not a Web PubSub service "
            "(check WEBPUBSUB_ENDPOINT, or the connection string's Endpoint)",
        )
    raise ProbeFailed(Failure.SERVICE_ERROR, f"{request} answered HTTP {status}")


def probe_service_access(
    source: TokenSource,
    endpoint: str,
    hubs: Sequence[str],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The service accepts the app's credential for every hub in `hubs`, asked as negotiate would ask.

    With an access key (connectionstring, keyvault) negotiate signs tokens locally, so nothing
    else tells whether the service knows that key: a key-signed HEAD users/{id} (200 and 404 both
    prove acceptance, 401 refuses the key). With Entra ID, generateToken itself, for one minute: it
    needs the role negotiate needs. Both go through the token source's own SDK client for the hub,
    with the probe's timeout and no retries; `timeout` is shared by all hubs.
    """
    try:
        keys = source.access_keys()
    except DependencyUnavailable as error:
        raise ProbeFailed(
            Failure.NO_KEY, "not tried: no access key could be read", log_detail=error.log_message
        ) from None
    except ConfigError as error:
        raise ProbeFailed(Failure.NO_KEY, "not tried: no usable access key", log_detail=error.log_message) from None
    credential = "access key" if keys else "identity"
    ends = clock() + timeout
    for hub in hubs:
        remaining = max(0.1, ends - clock())
        _ask(source, endpoint, hub, bool(keys), remaining)
    served = ", ".join(hubs)
    return f"the service accepts the app's {credential} for hub{'s' if len(hubs) > 1 else ''} {served}"


def _ask(source: TokenSource, endpoint: str, hub: str, with_key: bool, timeout: float) -> None:
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    options = probe_options(timeout)
    try:
        client = source.service_client(hub)
        if with_key:
            client.user_exists(user_id=PROBE_USER_ID, **options)
        else:
            client.get_client_access_token(
                user_id=PROBE_USER_ID,
                minutes_to_expire=1,
                # Per request, as in EntraTokenSource: plain http is only configured for a local service.
                enforce_https=endpoint.startswith("https://"),
                **options,
            )
    except ClientAuthenticationError as error:
        if error.response is None:  # the credential itself failed: no token to send
            raise ProbeFailed(
                Failure.NO_TOKEN,
                f"hub {hub}: the app's identity could not get a token for the service",
                log_detail=f"hub {hub}: the app's identity could not get a token: {describe_azure_error(error)}",
            ) from None
        raise _refused(hub, with_key, 401, describe_azure_error(error)) from None
    except HttpResponseError as error:
        status = error.status_code or 0
        if 200 <= status < 300:  # accepted, in words the SDK does not expect (it knows 200 and 404)
            return
        if status in {401, 403}:
            raise _refused(hub, with_key, status, describe_azure_error(error)) from None
        failure = Failure.NOT_THE_SERVICE if status == 404 else Failure.SERVICE_ERROR
        raise ProbeFailed(
            failure, f"hub {hub}: the service answered HTTP {status}", log_detail=describe_azure_error(error)
        ) from None
    except (DependencyUnavailable, ConfigError) as error:
        raise ProbeFailed(Failure.NO_KEY, f"hub {hub}: no credential to try", log_detail=error.log_message) from None
    except AzureError as error:
        raise classify(error, endpoint, timeout).prefixed(f"hub {hub}: ") from None


def _refused(hub: str, with_key: bool, status: int, described: str) -> ProbeFailed:
    """The service's refusal of the app's credential, named by its cause."""
    if with_key and status == 401:
        return ProbeFailed(
            Failure.KEY_REFUSED,
            f"hub {hub}: the service refuses the app's access key (HTTP 401): it is not one of the service's keys, "
            "so every client token the app signs is refused too",
            log_detail=f"hub {hub}: the service refuses the app's access key: {described}",
        )
    if with_key:
        return ProbeFailed(
            Failure.NETWORK_DENIED,
            f"hub {hub}: the service answered HTTP 403 to a request signed with the app's key: it refuses this network",
            log_detail=f"hub {hub}: {described}",
        )
    if status == 401:
        return ProbeFailed(
            Failure.IDENTITY_REFUSED,
            f"hub {hub}: the service refuses the app's identity's token (HTTP 401)",
            log_detail=f"hub {hub}: {described}",
        )
    return ProbeFailed(
        Failure.ROLE_MISSING,
        f"hub {hub}: the service refuses the app's identity (HTTP 403): it lacks the {SERVICE_OWNER_ROLE} role, "
        "so negotiate cannot get client tokens",
        log_detail=f"hub {hub}: {described}",
    )


def probe_identity(credential: TokenCredential, timeout: float, scope: str = WEBPUBSUB_SCOPE) -> str:
    """A token for `scope` from `credential` (built to answer within `timeout`: see identity_credential)."""
    from azure.core.exceptions import AzureError

    try:
        token = credential.get_token(scope)
    except (AzureError, ValueError) as error:
        detail = describe_azure_error(error)
        # DefaultAzureCredential says what each credential of its chain answered, one per line;
        # in Azure the managed identity's line is the reason.
        managed = next((line.strip() for line in str(error).splitlines() if "ManagedIdentityCredential:" in line), "")
        if managed:
            detail += f" {managed[:200]}"
        raise ProbeFailed(
            Failure.NO_TOKEN,
            f"the app's identity could not get a token for {scope}",
            log_detail=f"the app's identity could not get a token for {scope}: {detail}",
        ) from None
    minutes = max(0, round((token.expires_on - datetime.now(UTC).timestamp()) / 60))
    return f"the app's identity got a token for {scope} (valid {minutes} min)"


def probe_vault_reachable(http: HttpProbe, vault_uri: str, timeout: float) -> str:
    """Any HTTP answer proves the network path; without a token Key Vault answers 401 (its challenge)."""
    try:
        status = http.status("GET", f"{vault_uri}secrets?api-version={KEYVAULT_API_VERSION}", timeout)
    except ProbeFailed as failure:
        raise failure.prefixed("Key Vault: ") from None
    if status >= 500:
        raise ProbeFailed(Failure.SERVICE_ERROR, f"Key Vault answered HTTP {status}")
    if status == 401:
        return "reachable (answered 401 to a request without a token, as expected)"
    return f"reachable (answered HTTP {status})"


def probe_vault_secret(source: TokenSource, timeout: float) -> str:
    """The token source reads its key from Key Vault now (`TokenSource.check`), within `timeout`."""
    try:
        return source.check(timeout)
    except DependencyUnavailable as error:
        raise ProbeFailed(
            Failure.KEY_VAULT, f"reading the access key failed: {error.summary}", log_detail=error.log_message
        ) from None
    except ConfigError as error:
        raise ProbeFailed(Failure.KEY_VAULT, error.detail, log_detail=error.log_message) from None
