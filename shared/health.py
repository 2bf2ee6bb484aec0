"""/api/health: can this app serve clients right now, and if not, why not.

One probe round checks every dependency the active settings use, concurrently:

    check          when             proves                                       on failure
    configuration  always           the settings load and validate               unhealthy
    webpubsub      always           HEAD {endpoint}/api/health answers 2xx       unhealthy
    credential     connectionstring the access key parses                        unhealthy
                   keyvault         the secret can be read from Key Vault now    degraded*
                   entra            the identity gets a token for Web PubSub**   unhealthy
    keyvault       keyvault         the vault answers HTTP at all                degraded*

    * degraded while a key read earlier is cached (tokens are still signed), else unhealthy.
    ** with a DefaultAzureCredential of its own: same identity, but one attempt and the probe's
       timeout per request (the app's credential retries for minutes against a silent endpoint).

Every check is required: 200 means all of them passed. `degraded` means some requests still work
(tokens are signed with the key cached before Key Vault failed); `unhealthy` means they cannot.
Both answer 503 with Retry-After. Development-only settings are listed as warnings and never
change the status, so local development stays healthy.

The round never outlives `HEALTH_DEADLINE_SECONDS`, even when a dependency accepts the connection
and never answers: each probe has its own timeout (a share of the deadline) and the round stops
waiting at the deadline. A probe that ignores its timeout keeps its thread, and the next round waits
for that same probe instead of starting another, so hung dependencies never pile up threads. Reports
are cached for `HEALTH_CACHE_SECONDS`, and concurrent requests share one round in flight.

The body is for anyone who asks (the route is anonymous): details name settings, hosts and reasons,
never a key, token, connection string or the value of a setting.

Importing this module loads no SDK; probes import what they need when they run.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from shared import __version__
from shared.config import Concern, CredentialMode, HealthSettings, Settings
from shared.errors import ConfigError, DependencyUnavailable
from shared.runtime import Runtime, get_runtime
from shared.tokens import KeyVaultTokenSource, TokenSource, describe_azure_error
from shared.web import Response, json_response

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

# The data-plane API version of the service's health operation; any 2xx answer counts as healthy.
SERVICE_API_VERSION = "2024-12-01"
KEYVAULT_API_VERSION = "7.5"
WEBPUBSUB_SCOPE = "https://webpubsub.azure.com/.default"
# Each probe gets this share of the deadline as its own timeout, so it normally reports its own
# reason ("connection refused", "no answer") before the round gives up on it.
PROBE_TIMEOUT_SHARE = 0.8
# Retry-After when there are no settings to take the cache time from.
FALLBACK_RETRY_AFTER_SECONDS = 10


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_SEVERITY = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}


def worst(statuses: Sequence[Status]) -> Status:
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.HEALTHY)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome; `detail` is shown to anonymous callers, so it never holds a secret."""

    status: Status
    duration_ms: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "durationMs": self.duration_ms, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: Status
    checks: Mapping[str, CheckResult]
    warnings: tuple[str, ...] = ()
    version: str = __version__
    retry_after_seconds: int = FALLBACK_RETRY_AFTER_SECONDS

    @property
    def http_status(self) -> int:
        return 200 if self.status is Status.HEALTHY else 503

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "checks": {name: result.to_json() for name, result in self.checks.items()},
            "warnings": list(self.warnings),
            "version": self.version,
        }


class ProbeFailed(Exception):
    """A dependency did not do its part; the message says how, safely enough to show anyone."""


def _unhealthy(detail: str) -> tuple[Status, str]:
    return Status.UNHEALTHY, detail


@dataclass(frozen=True, slots=True)
class Check:
    """A named probe: `probe(timeout)` returns a detail on success or raises ProbeFailed.

    `on_failure` turns a failure's detail into the check's status and final detail, because what a
    failure means can depend on the moment (Key Vault down is survivable while a key is cached).
    """

    name: str
    probe: Callable[[float], str]
    on_failure: Callable[[str], tuple[Status, str]] = _unhealthy


class HttpProbe:
    """One plain HTTP request with a timeout: its status code, or ProbeFailed saying why there was none.

    The SDKs have no health operation, so this uses `requests` (which the Azure SDKs' transport
    already brings), with the same proxy and CA settings as the SDKs and without following redirects.
    `verify` is requests' own: True for the usual CA bundle, or the path of one to trust instead.
    """

    def __init__(self, *, verify: bool | str = True):
        self._verify = verify

    def status(self, method: str, url: str, timeout: float) -> int:
        import requests

        try:
            with requests.request(
                method, url, timeout=(timeout, timeout), allow_redirects=False, verify=self._verify
            ) as response:
                return response.status_code
        except requests.exceptions.ConnectTimeout:
            raise ProbeFailed(f"could not connect within {timeout:g} s") from None
        except requests.exceptions.ReadTimeout:
            raise ProbeFailed(f"connected, but no answer within {timeout:g} s") from None
        except requests.exceptions.SSLError as error:
            raise ProbeFailed(f"the TLS handshake failed: {_root_cause(error)}") from None
        except requests.exceptions.ConnectionError as error:
            raise ProbeFailed(f"could not connect: {_root_cause(error)}") from None
        except requests.exceptions.RequestException as error:
            raise ProbeFailed(f"the request failed: {type(error).__name__}") from None


def _root_cause(error: BaseException) -> str:
    """The innermost cause of a connection failure, in words ('connection refused', not a URL pool dump)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "reason", None) or current.__cause__ or current.__context__
        if not isinstance(current, BaseException):
            current = None
    cause = seen[-1]
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if type(cause).__name__ == "gaierror":
        return "the host name does not resolve"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return type(cause).__name__


# The probes. Each returns a short, secret-free detail or raises ProbeFailed.


def probe_service(http: HttpProbe, endpoint: str, timeout: float) -> str:
    url = f"{endpoint}/api/health?api-version={SERVICE_API_VERSION}"
    try:
        status = http.status("HEAD", url, timeout)
    except ProbeFailed as failure:
        raise ProbeFailed(f"HEAD {url}: {failure}") from None
    if 200 <= status < 300:
        return f"HEAD {url} answered {status}"
    hint = " (check that WEBPUBSUB_ENDPOINT, or the connection string's Endpoint, is the service)"
    raise ProbeFailed(f"HEAD {url} answered HTTP {status}" + (hint if status in {401, 403, 404} else ""))


def probe_vault_reachable(http: HttpProbe, vault_uri: str, timeout: float) -> str:
    """Any HTTP answer proves the network path; without a token Key Vault answers 401 (its challenge)."""
    status = http.status("GET", f"{vault_uri}secrets?api-version={KEYVAULT_API_VERSION}", timeout)
    if status >= 500:
        raise ProbeFailed(f"Key Vault answered HTTP {status}")
    if status == 401:
        return "reachable (answered 401 to a request without a token, as expected)"
    return f"reachable (answered HTTP {status})"


def probe_vault_secret(source: TokenSource, secret_name: str, timeout: float) -> str:
    if not isinstance(source, KeyVaultTokenSource):
        return probe_access_key(source, timeout)
    try:
        source.probe(timeout)
    except DependencyUnavailable as error:
        raise ProbeFailed(f"reading secret {secret_name!r} failed: {error.detail}") from None
    except ConfigError as error:
        raise ProbeFailed(error.log_message) from None
    return f"read the access key from Key Vault secret {secret_name!r} just now"


def probe_access_key(source: TokenSource, timeout: float) -> str:
    if not source.access_keys():
        raise ProbeFailed("the token source holds no access key")
    return "the access key parses; tokens are signed locally"


def identity_probe_credential(client_id: str | None, timeout: float) -> TokenCredential:
    """The app's identity as DefaultAzureCredential finds it, built to answer within `timeout`.

    The app's own credential keeps azure-identity's defaults: against a managed-identity endpoint that
    accepts the connection and never answers, one get_token takes minutes (long read timeouts, then
    retries with back-off), and per-call options do not reach its HTTP requests. This one is built
    with the same identity (`AZURE_CLIENT_ID`) and the SDK's own options: no retries, `timeout` per
    connection and per read, and per developer tool (az, azd, pwsh) when run locally.
    """
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        managed_identity_client_id=client_id,
        retry_total=0,
        connection_timeout=timeout,
        read_timeout=timeout,
        process_timeout=timeout,
    )


def probe_identity(credential: Callable[[], TokenCredential], timeout: float) -> str:
    from azure.core.exceptions import ClientAuthenticationError

    try:
        credential().get_token(WEBPUBSUB_SCOPE)
    except ClientAuthenticationError as error:
        detail = describe_azure_error(error)
        # DefaultAzureCredential says what each credential of its chain answered, one per line;
        # in Azure the managed identity's line is the reason.
        managed = next((line.strip() for line in str(error).splitlines() if "ManagedIdentityCredential:" in line), "")
        if managed:
            detail += f" {managed[:200]}"
        raise ProbeFailed(f"the app's identity could not get a token: {detail}") from None
    return f"the app's identity got a token for {WEBPUBSUB_SCOPE}"


def _keyvault_failure(source: Callable[[], TokenSource], detail: str) -> tuple[Status, str]:
    """With a key cached, tokens are still signed: degraded. Without one, negotiate fails: unhealthy."""
    current = source()
    status = current.status() if isinstance(current, KeyVaultTokenSource) else None
    if status is not None and status.has_key:
        age = "" if status.age_seconds is None else f" read {status.age_seconds:.0f} s ago"
        return Status.DEGRADED, f"{detail}; still signing tokens with the key{age}"
    return Status.UNHEALTHY, f"{detail}; no key is cached, so negotiate fails"


def build_checks(runtime: Runtime, http: HttpProbe, identity: TokenCredential | None = None) -> tuple[Check, ...]:
    """The checks the runtime's settings call for (configuration is checked before any of them).

    `identity` replaces the credential the entra probe builds for itself (see identity_probe_credential).
    """
    if Concern.SERVICE in runtime.settings.problems:
        return ()  # nothing to probe without an endpoint and a credential: the configuration check says why
    settings = runtime.settings.service

    def token_source() -> TokenSource:
        return runtime.token_source

    checks = [Check("webpubsub", partial(probe_service, http, settings.endpoint))]
    if settings.credential is CredentialMode.ENTRA:
        timeout = runtime.settings.health.deadline_seconds * PROBE_TIMEOUT_SHARE
        provider: Callable[[], TokenCredential] = (
            (lambda: identity)
            if identity is not None
            else cache(partial(identity_probe_credential, settings.client_id, timeout))
        )
        checks.append(Check("credential", partial(probe_identity, provider)))
    elif settings.credential is CredentialMode.KEY_VAULT:
        assert settings.keyvault_uri is not None  # guaranteed by load_settings
        assert settings.key_secret_name is not None
        secret_name = settings.key_secret_name
        on_failure = partial(_keyvault_failure, token_source)
        checks.append(
            Check("credential", lambda timeout: probe_vault_secret(token_source(), secret_name, timeout), on_failure)
        )
        checks.append(Check("keyvault", partial(probe_vault_reachable, http, settings.keyvault_uri), on_failure))
    else:
        checks.append(Check("credential", lambda timeout: probe_access_key(token_source(), timeout)))
    return tuple(checks)


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: Status
    detail: str
    finished_at: float


@dataclass(frozen=True, slots=True)
class _Running:
    started_at: float
    future: Future[_Outcome] = field(repr=False)


def _run_check(check: Check, timeout: float) -> _Outcome:
    try:
        detail = check.probe(timeout)
        status = Status.HEALTHY
    except ProbeFailed as failure:
        status, detail = check.on_failure(str(failure))
    except Exception:
        logger.exception("Health check %r failed unexpectedly", check.name)
        status, detail = check.on_failure("the check failed unexpectedly; the app's log has the details")
    return _Outcome(status, detail, time.monotonic())


class HealthMonitor:
    """Probe rounds for one runtime: cached, single-flight, bounded by the deadline, never raising.

    `http` and `identity` replace the HTTP client and the entra probe's credential (tests).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        http: HttpProbe | None = None,
        identity: TokenCredential | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.runtime = runtime
        self._all_settings: Settings = runtime.settings
        self._settings: HealthSettings = runtime.settings.health
        self._checks = build_checks(runtime, http or HttpProbe(), identity)
        # One worker per check is enough: a check never has two probes running (see _start).
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(self._checks)), thread_name_prefix="health-probe")
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: HealthReport | None = None
        self._cached_at = 0.0
        self._in_flight: Future[HealthReport] | None = None
        self._running: dict[str, _Running] = {}
        self._last_status: Status | None = None
        self.rounds = 0  # probe rounds so far; the cache tests read it

    def report(self) -> HealthReport:
        """The cached report if fresh, else the one round in flight, else a new round run here."""
        with self._lock:
            cached = self._cached
            if cached is not None and self._clock() - self._cached_at < self._settings.cache_seconds:
                return cached
            flight = self._in_flight
            if flight is None:
                flight = self._in_flight = Future()
                leader = True
            else:
                leader = False
        if not leader:
            return flight.result()
        report: HealthReport | None = None
        try:
            report = self._guarded_round()
        finally:  # whatever happens, nobody is left waiting on this round
            with self._lock:
                self._in_flight = None
                if report is not None:
                    self._cached, self._cached_at = report, self._clock()
            if report is None:
                flight.set_exception(RuntimeError("the health round was interrupted"))
            else:
                flight.set_result(report)
        self._log_change(report)
        return report

    def _guarded_round(self) -> HealthReport:
        try:
            return self._round()
        except Exception:  # a bug in a round must still produce an answer, for everyone waiting too
            logger.exception("Health round failed unexpectedly")
            failed = CheckResult(Status.UNHEALTHY, 0, "the health round failed; see the log")
            return HealthReport(status=Status.UNHEALTHY, checks={"health": failed})

    def close(self, *, wait: bool = False) -> None:
        """Stop taking probes; a probe still running finishes in the background, or first with `wait`."""
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def _start(self, check: Check, timeout: float) -> _Running:
        """A new probe, or the one a previous round gave up on if it is still running."""
        running = self._running.get(check.name)
        if running is None or running.future.done():
            running = _Running(time.monotonic(), self._executor.submit(_run_check, check, timeout))
            self._running[check.name] = running
        return running

    def _round(self) -> HealthReport:
        self.rounds += 1
        deadline = self._settings.deadline_seconds
        started = time.monotonic()
        running = {check.name: self._start(check, deadline * PROBE_TIMEOUT_SHARE) for check in self._checks}
        wait([probe.future for probe in running.values()], timeout=deadline)
        results = {"configuration": self._configuration_result()}
        for check in self._checks:
            results[check.name] = self._collect(check, running[check.name], started, deadline)
        return self._report(results)

    def _configuration_result(self) -> CheckResult:
        """Healthy when every concern's settings are valid, else each bad setting by name (never its value)."""
        problems = self._all_settings.problems
        if problems:
            detail = "; ".join(error.detail for error in problems.values())
            return CheckResult(Status.UNHEALTHY, 0, detail)
        service = self._all_settings.service
        detail = f"settings are valid (WEBPUBSUB_CREDENTIAL={service.credential.value}, hub {service.hub!r})"
        return CheckResult(Status.HEALTHY, 0, detail)

    def _collect(self, check: Check, running: _Running, started: float, deadline: float) -> CheckResult:
        # Time this round spent on the check: a probe left over from an earlier round counts from now.
        since = max(started, running.started_at)
        if running.future.done():
            try:
                outcome = running.future.result()
            except Exception as error:  # on_failure itself failed, or the probe was cancelled
                outcome = _Outcome(Status.UNHEALTHY, f"the check failed ({type(error).__name__})", time.monotonic())
            return CheckResult(outcome.status, _milliseconds(outcome.finished_at - since), outcome.detail)
        detail = f"no answer within {deadline:g} s"
        if running.started_at < started:
            detail += f" (its probe has been running for {time.monotonic() - running.started_at:.0f} s)"
        try:
            status, detail = check.on_failure(detail)
        except Exception:
            logger.exception("Health check %r could not judge its timeout", check.name)
            status = Status.UNHEALTHY
        return CheckResult(status, _milliseconds(time.monotonic() - since), detail)

    def _report(self, results: Mapping[str, CheckResult]) -> HealthReport:
        return HealthReport(
            status=worst([result.status for result in results.values()]),
            checks=results,
            warnings=self._all_settings.development_shortcuts,
            retry_after_seconds=max(1, math.ceil(self._settings.cache_seconds)),
        )

    def _log_change(self, report: HealthReport) -> None:
        if report.status is self._last_status:
            return
        self._last_status = report.status
        failing = "; ".join(
            f"{name}: {result.detail}" for name, result in report.checks.items() if result.status is not Status.HEALTHY
        )
        if report.status is Status.HEALTHY:
            logger.info("Health: healthy")
        else:
            logger.warning("Health: %s (%s)", report.status.value, failing)


def _milliseconds(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def current_report() -> HealthReport:
    return get_runtime().health_monitor.report()


def render(report: HealthReport) -> Response:
    headers = {} if report.http_status == 200 else {"Retry-After": str(report.retry_after_seconds)}
    return json_response(report.http_status, report.to_json(), headers)


def health() -> Response:
    """GET /api/health: 200 when every check passes, else 503 with Retry-After; never raises."""
    try:
        return render(current_report())
    except Exception:
        logger.exception("Health check failed unexpectedly")
        failed = CheckResult(Status.UNHEALTHY, 0, "the health check failed; see the log")
        return render(HealthReport(status=Status.UNHEALTHY, checks={"health": failed}))


def live() -> Response:
    """GET /api/health/live: the process answers; no settings, no dependencies."""
    return json_response(200, {"status": "alive", "version": __version__})
