"""How /api/health finds out: the checks the settings call for, run in rounds that are cached and bounded.

One probe round checks every dependency the active settings use, concurrently (the probes are
`shared.probes`', the same the doctor runs):

    check          when             proves                                       on failure
    configuration  always           the settings load and validate               unhealthy
    webpubsub      always           HEAD {endpoint}/api/health answers 2xx       unhealthy
    access         always           the service accepts the app's credential     unhealthy
                                    for every served hub (key-signed REST call,
                                    or generateToken with the identity)
    credential     connectionstring the access key parses                        unhealthy
                   keyvault         the secret can be read from Key Vault now    degraded*
                   entra            the identity gets a token for Web PubSub**   unhealthy
    keyvault       keyvault         the vault answers HTTP at all                degraded*

    * degraded while a key read earlier is cached (tokens are still signed), else unhealthy.
    ** with a credential of its own (shared.probes.identity_credential): same identity, but one
       attempt and the probe's timeout per request (the app's credential retries for seconds).

Every check is required: 200 means all of them passed. `degraded` means some requests still work
(tokens are signed with the key cached before Key Vault failed); `unhealthy` means they cannot.
Both answer 503 with Retry-After. Development-only settings are listed as warnings and never
change the status, so local development stays healthy.

The round never outlives `HEALTH_DEADLINE_SECONDS`, even when a dependency accepts the connection
and never answers: each probe has its own timeout (a share of the deadline) and the round stops
waiting at the deadline. A probe that ignores its timeout keeps its thread, and the next round waits
for that same probe instead of starting another, so hung dependencies never pile up threads. Reports
are cached for `HEALTH_CACHE_SECONDS`, but never for less than MIN_PROBE_INTERVAL_SECONDS: the
route is anonymous, and a round reads Key Vault and calls the service. Concurrent requests share
one round in flight.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING

from shared.config import Concern, CredentialMode, HealthSettings, Settings
from shared.health.report import CheckResult, HealthReport, Status, failed_report, worst
from shared.probes import (
    Failure,
    HttpProbe,
    ProbeFailed,
    identity_credential,
    probe_identity,
    probe_service,
    probe_service_access,
    probe_vault_reachable,
    probe_vault_secret,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.runtime import Runtime
    from shared.tokens import TokenSource

logger = logging.getLogger("shared.health")

# Each probe gets this share of the deadline as its own timeout, so it normally reports its own
# reason ("connection refused", "no answer") before the round gives up on it.
PROBE_TIMEOUT_SHARE = 0.8
# The shortest time between two probe rounds, whatever HEALTH_CACHE_SECONDS says: anonymous callers
# must not be able to drive one Key Vault read or service call per request.
MIN_PROBE_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a failure means right now: the status, the public detail and the operator's."""

    status: Status
    detail: str
    log_detail: str = ""


def _unhealthy(failure: ProbeFailed) -> Verdict:
    return Verdict(Status.UNHEALTHY, failure.detail, failure.log_detail)


@dataclass(frozen=True, slots=True)
class Check:
    """A named probe: `probe(timeout)` returns a detail on success or raises ProbeFailed.

    `on_failure` turns a failure into the check's verdict, because what a failure means can depend
    on the moment (Key Vault down is survivable while a key is cached).
    """

    name: str
    probe: Callable[[float], str]
    on_failure: Callable[[ProbeFailed], Verdict] = _unhealthy


def _keyvault_failure(source: Callable[[], TokenSource], failure: ProbeFailed) -> Verdict:
    """With a key cached, tokens are still signed: degraded. Without one, negotiate fails: unhealthy."""
    cached = source().cached_key()
    if cached is not None and cached.has_key:
        age = "" if cached.age_seconds is None else f" read {cached.age_seconds:.0f} s ago"
        still = f"; still signing tokens with the key{age}"
        return Verdict(Status.DEGRADED, failure.detail + still, failure.log_detail + still)
    lost = "; no key is cached, so negotiate fails"
    return Verdict(Status.UNHEALTHY, failure.detail + lost, failure.log_detail + lost)


def build_checks(runtime: Runtime, http: HttpProbe, identity: TokenCredential | None = None) -> tuple[Check, ...]:
    """The checks the runtime's settings call for (configuration is checked before any of them).

    `identity` replaces the credential the entra probe builds for itself (see identity_credential).
    """
    if Concern.SERVICE in runtime.settings.problems:
        return ()  # nothing to probe without an endpoint and a credential: the configuration check says why
    settings = runtime.settings.service

    def token_source() -> TokenSource:
        return runtime.token_source

    def access(timeout: float) -> str:
        return probe_service_access(token_source(), settings.endpoint, settings.hubs, timeout)

    checks = [Check("webpubsub", partial(probe_service, http, settings.endpoint)), Check("access", access)]
    if settings.credential is CredentialMode.ENTRA:
        timeout = runtime.settings.health.deadline_seconds * PROBE_TIMEOUT_SHARE
        provider: Callable[[], TokenCredential] = (
            (lambda: identity)
            if identity is not None
            else cache(partial(identity_credential, settings.client_id, timeout))
        )
        checks.append(Check("credential", lambda timeout: probe_identity(provider(), timeout)))
        return tuple(checks)
    on_failure = partial(_keyvault_failure, token_source)
    checks.append(Check("credential", lambda timeout: probe_vault_secret(token_source(), timeout), on_failure))
    if settings.credential is CredentialMode.KEY_VAULT:
        assert settings.keyvault_uri is not None  # guaranteed by load_settings
        checks.append(Check("keyvault", partial(probe_vault_reachable, http, settings.keyvault_uri), on_failure))
    return tuple(checks)


@dataclass(frozen=True, slots=True)
class _Outcome:
    verdict: Verdict
    finished_at: float


@dataclass(frozen=True, slots=True)
class _Running:
    started_at: float
    future: Future[_Outcome] = field(repr=False)


def _run_check(check: Check, timeout: float) -> _Outcome:
    try:
        verdict = Verdict(Status.HEALTHY, check.probe(timeout))
    except ProbeFailed as failure:
        verdict = check.on_failure(failure)
    except Exception:
        logger.exception("Health check %r failed unexpectedly", check.name)
        unexpected = "the check failed unexpectedly; the app's log has the details"
        verdict = check.on_failure(ProbeFailed(Failure.SERVICE_ERROR, unexpected))
    return _Outcome(verdict, time.monotonic())


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
        self._cache_seconds = max(MIN_PROBE_INTERVAL_SECONDS, self._settings.cache_seconds)
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
            if cached is not None and self._clock() - self._cached_at < self._cache_seconds:
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
            return failed_report("the health round failed; see the log")

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
        hubs = ", ".join(repr(hub) for hub in service.hubs)
        served = f"hub {hubs}" if len(service.hubs) == 1 else f"hubs {hubs} (default {service.hub!r})"
        detail = f"settings are valid (WEBPUBSUB_CREDENTIAL={service.credential.value}, {served})"
        return CheckResult(Status.HEALTHY, 0, detail)

    def _collect(self, check: Check, running: _Running, started: float, deadline: float) -> CheckResult:
        # Time this round spent on the check: a probe left over from an earlier round counts from now.
        since = max(started, running.started_at)
        if running.future.done():
            try:
                outcome = running.future.result()
            except Exception as error:  # on_failure itself failed, or the probe was cancelled
                failed = Verdict(Status.UNHEALTHY, f"the check failed ({type(error).__name__})")
                outcome = _Outcome(failed, time.monotonic())
            verdict = outcome.verdict
            return CheckResult(
                verdict.status, _milliseconds(outcome.finished_at - since), verdict.detail, verdict.log_detail
            )
        detail = f"no answer within {deadline:g} s"
        if running.started_at < started:
            detail += f" (its probe has been running for {time.monotonic() - running.started_at:.0f} s)"
        try:
            verdict = check.on_failure(ProbeFailed(Failure.TIMEOUT, detail))
        except Exception:
            logger.exception("Health check %r could not judge its timeout", check.name)
            verdict = Verdict(Status.UNHEALTHY, detail)
        return CheckResult(verdict.status, _milliseconds(time.monotonic() - since), verdict.detail, verdict.log_detail)

    def _report(self, results: Mapping[str, CheckResult]) -> HealthReport:
        return HealthReport(
            status=worst([result.status for result in results.values()]),
            checks=results,
            warnings=self._all_settings.development_shortcuts,
            retry_after_seconds=max(1, math.ceil(self._cache_seconds)),
            hubs=() if Concern.SERVICE in self._all_settings.problems else self._all_settings.service.hubs,
        )

    def _log_change(self, report: HealthReport) -> None:
        if report.status is self._last_status:
            return
        self._last_status = report.status
        failing = "; ".join(
            f"{name}: {result.for_log}" for name, result in report.checks.items() if result.status is not Status.HEALTHY
        )
        if report.status is Status.HEALTHY:
            logger.info("Health: healthy")
        else:
            logger.warning("Health: %s (%s)", report.status.value, failing)


def _milliseconds(seconds: float) -> int:
    return max(0, round(seconds * 1000))
