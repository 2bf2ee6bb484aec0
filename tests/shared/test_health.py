"""Health probes against stand-ins on real sockets: answering, refusing, silent, failing and slow.

The Web PubSub service and the Key Vault host are real servers on free ports (Key Vault's over TLS,
as its URI must be https); the Key Vault secret read and the identity use the fakes of tests.fakes,
so the real SDK runs against them, except where azure-identity's own credential meets a silent
managed-identity endpoint.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import __version__, health
from shared.config import load_settings
from shared.health import HealthMonitor, HealthReport, HttpProbe, Status
from shared.health.monitor import MIN_PROBE_INTERVAL_SECONDS
from shared.runtime import Runtime, get_runtime, use_runtime
from shared.tokens import KeyVaultTokenSource
from tests.support.clock import Clock
from tests.support.fakes import EMULATOR_KEY, FakeAdapter, FakeCredential, FakeKeyVault, transport_for
from tests.support.settings import entra_settings, local_settings
from tests.support.standins import IDENTITY_HEADER, StandIn, refusing, serve, silent, use_identity_endpoint

# Generous slack for a loaded CI machine: the bound checked is "deadline + margin", not a speed.
MARGIN_SECONDS = 1.5
SECRET_NAME = "wps-key"
HEALTH_PATH = "/api/health"
# What generateToken answers, for entra-mode stand-ins of the service.
TOKEN_BODY = json.dumps({"token": "issued-client-token"}).encode()


def connection_string(endpoint: str) -> str:
    return f"Endpoint={endpoint};AccessKey={EMULATOR_KEY};Version=1.0;"


def local_runtime(endpoint: str, **overrides: str) -> Runtime:
    return Runtime(local_settings(WEBPUBSUB_CONNECTION_STRING=connection_string(endpoint), **overrides))


def timed(monitor: HealthMonitor) -> tuple[HealthReport, float]:
    started = time.monotonic()
    report = monitor.report()
    return report, time.monotonic() - started


def assert_within_deadline(report: HealthReport, elapsed: float, deadline: float) -> None:
    assert elapsed <= deadline + MARGIN_SECONDS
    for result in report.checks.values():
        assert result.duration_ms <= (deadline + MARGIN_SECONDS) * 1000


def body(report: HealthReport) -> dict[str, Any]:
    response = health.render(report)
    payload: dict[str, Any] = json.loads(response.body)
    return payload


# Connection-string mode: the service probe


def test_every_check_passes_against_an_answering_service(servers: ExitStack) -> None:
    service = StandIn(200)
    runtime = local_runtime(serve(servers, service))
    report = HealthMonitor(runtime).report()

    assert report.status is Status.HEALTHY
    assert list(report.checks) == ["configuration", "webpubsub", "access", "credential"]
    assert {result.status for result in report.checks.values()} == {Status.HEALTHY}
    assert service.seen_at(HEALTH_PATH) == ["HEAD /api/health?api-version=2024-12-01"]
    # The access key is tried with a signed REST call; a user that does not exist proves it as well.
    assert service.seen_at("/api/hubs/chat/users/webpubsub-health-probe") == [
        "HEAD /api/hubs/chat/users/webpubsub-health-probe?api-version=2024-12-01"
    ]
    assert report.checks["access"].detail == "the service accepts the app's access key for hub chat"
    assert "answered 200" in report.checks["webpubsub"].detail
    assert "connectionstring" in report.checks["configuration"].detail
    response = health.render(report)
    assert response.status == 200
    assert "Retry-After" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert json.loads(response.body) == {
        "status": "healthy",
        "hubs": ["chat"],
        "checks": {name: result.to_json() for name, result in report.checks.items()},
        "warnings": list(runtime.settings.development_shortcuts),
        "version": __version__,
    }


def test_development_shortcuts_are_warnings_that_keep_the_status_healthy(servers: ExitStack) -> None:
    runtime = local_runtime(serve(servers, StandIn(204)), EVENTHANDLER_AUTH="none")
    report = HealthMonitor(runtime).report()
    assert report.status is Status.HEALTHY
    assert len(report.warnings) == 4
    assert any("NEGOTIATE_AUTH=anonymous" in warning for warning in report.warnings)
    assert any("EVENTHANDLER_AUTH=none" in warning for warning in report.warnings)
    assert any("WEBPUBSUB_CREDENTIAL=connectionstring" in warning for warning in report.warnings)
    assert any("PUBLISH_AUTH=none" in warning for warning in report.warnings)


def test_a_service_with_production_settings_has_no_warnings(servers: ExitStack) -> None:
    settings = load_settings(
        {
            "WEBPUBSUB_CREDENTIAL": "entra",
            "WEBPUBSUB_ENDPOINT": serve(servers, entra_service()),
            "NEGOTIATE_AUTH": "bearer",
            "NEGOTIATE_BEARER_ISSUER": "https://login.example.test/tenant/v2.0",
            "NEGOTIATE_BEARER_AUDIENCE": "api://negotiate",
            "EVENTHANDLER_AUTH": "bearer",
            "EVENTHANDLER_BEARER_ISSUER": "https://login.example.test/tenant/v2.0",
            "EVENTHANDLER_BEARER_AUDIENCE": "api://events",
            "EVENTHANDLER_BEARER_PRINCIPAL_ID": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
        }
    )
    report = HealthMonitor(Runtime(settings, credential=FakeCredential()), identity=FakeCredential()).report()
    assert report.status is Status.HEALTHY
    assert report.warnings == ()


Dependency = Callable[[ExitStack], str]


@pytest.mark.parametrize(
    ("dependency", "words"),
    [
        pytest.param(refusing, "connection refused", id="refuses-connections"),
        pytest.param(silent, "connected, but no answer within 0.4 s", id="accepts-and-never-answers"),
        pytest.param(lambda stack: serve(stack, StandIn(503)), "answered HTTP 503", id="answers-5xx"),
        pytest.param(lambda stack: serve(stack, StandIn(404)), "WEBPUBSUB_ENDPOINT", id="answers-404"),
        pytest.param(
            lambda stack: serve(stack, StandIn(200, delay=3.0)),
            "connected, but no answer within 0.4 s",
            id="answers-too-late",
        ),
    ],
)
def test_a_failing_service_makes_the_app_unhealthy_within_the_deadline(
    servers: ExitStack, dependency: Dependency, words: str
) -> None:
    deadline = 0.5
    runtime = local_runtime(dependency(servers), HEALTH_DEADLINE_SECONDS=str(deadline))
    report, elapsed = timed(HealthMonitor(runtime))

    assert report.status is Status.UNHEALTHY
    assert report.checks["webpubsub"].status is Status.UNHEALTHY
    assert words in report.checks["webpubsub"].detail
    assert report.checks["webpubsub"].detail.startswith("HEAD http://127.0.0.1:")  # says where
    assert report.checks["credential"].status is Status.HEALTHY  # the other checks still report
    assert_within_deadline(report, elapsed, deadline)
    response = health.render(report)
    assert response.status == 503
    assert response.headers["Retry-After"] == "10"
    assert json.loads(response.body)["status"] == "unhealthy"


def test_a_slow_answer_within_the_deadline_is_healthy_and_its_duration_is_reported(servers: ExitStack) -> None:
    runtime = local_runtime(serve(servers, StandIn(200, delay=0.3)), HEALTH_DEADLINE_SECONDS="5")
    report = HealthMonitor(runtime).report()
    assert report.status is Status.HEALTHY
    assert report.checks["webpubsub"].duration_ms >= 300


def test_retry_after_follows_the_cache_time(servers: ExitStack) -> None:
    runtime = local_runtime(refusing(servers), HEALTH_CACHE_SECONDS="2.5")
    assert health.render(HealthMonitor(runtime).report()).headers["Retry-After"] == "3"


# Cache and single flight


def test_many_calls_within_the_cache_time_probe_once(servers: ExitStack) -> None:
    service = StandIn(200)
    clock = Clock()
    monitor = HealthMonitor(local_runtime(serve(servers, service), HEALTH_CACHE_SECONDS="10"), clock=clock)
    first = monitor.report()
    for _ in range(50):
        assert monitor.report() is first
    assert len(service.seen_at(HEALTH_PATH)) == 1
    clock.now += 10
    assert monitor.report() is not first
    assert len(service.seen_at(HEALTH_PATH)) == 2
    assert monitor.rounds == 2


def test_concurrent_calls_share_one_probe_round(servers: ExitStack) -> None:
    service = StandIn(200)
    service.gate.clear()  # hold the probe until every caller is waiting
    monitor = HealthMonitor(local_runtime(serve(servers, service), HEALTH_DEADLINE_SECONDS="10"))
    reports: list[HealthReport] = []
    callers = [threading.Thread(target=lambda: reports.append(monitor.report())) for _ in range(16)]
    for caller in callers:
        caller.start()
    wait_until(lambda: len(service.seen_at(HEALTH_PATH)) == 1)
    assert all(caller.is_alive() for caller in callers)
    time.sleep(0.1)  # any caller not sharing the round would reach the service now
    service.gate.set()
    for caller in callers:
        caller.join(10)
    assert len(reports) == 16
    assert all(report is reports[0] for report in reports)
    assert reports[0].status is Status.HEALTHY
    assert len(service.seen_at(HEALTH_PATH)) == 1
    assert monitor.rounds == 1


def test_without_a_cache_rounds_are_still_at_least_the_floor_apart(servers: ExitStack) -> None:
    """HEALTH_CACHE_SECONDS=0 must not let anonymous callers drive one service call (or vault read) per request."""
    service = StandIn(200)
    clock = Clock()
    monitor = HealthMonitor(local_runtime(serve(servers, service), HEALTH_CACHE_SECONDS="0"), clock=clock)
    for _ in range(20):
        monitor.report()
    assert monitor.rounds == 1
    assert len(service.seen_at(HEALTH_PATH)) == 1
    clock.advance(MIN_PROBE_INTERVAL_SECONDS)
    for _ in range(3):
        monitor.report()
    assert monitor.rounds == 2
    assert len(service.seen_at(HEALTH_PATH)) == 2
    assert health.render(monitor.report()).status == 200


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# Entra ID mode: the identity probe, and probes that ignore their timeout


class RecordingCredential(FakeCredential):
    """A credential that remembers the scopes asked for and can be held until `gate` is set."""

    def __init__(self, *, available: bool = True):
        super().__init__(available=available)
        self.scopes: list[tuple[str, ...]] = []
        self.gate = threading.Event()
        self.gate.set()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        self.gate.wait(30)
        return super().get_token(*scopes, **kwargs)


def entra_runtime(endpoint: str, **overrides: str) -> Runtime:
    """Entra mode; the app's own credential (generateToken's, for the access check) is a fake."""
    return Runtime(entra_settings(endpoint, **overrides), credential=FakeCredential())


def entra_service() -> StandIn:
    """A service stand-in that also answers generateToken."""
    return StandIn(200, body=TOKEN_BODY)


def entra_monitor(
    endpoint: str, credential: FakeCredential, clock: Callable[[], float] = time.monotonic, **overrides: str
) -> HealthMonitor:
    """A monitor whose identity probe asks `credential` instead of a DefaultAzureCredential."""
    return HealthMonitor(entra_runtime(endpoint, **overrides), identity=credential, clock=clock)


def test_entra_mode_proves_the_identity_gets_a_web_pubsub_token(servers: ExitStack) -> None:
    credential = RecordingCredential()
    service = entra_service()
    report = entra_monitor(serve(servers, service), credential).report()
    assert report.status is Status.HEALTHY
    assert list(report.checks) == ["configuration", "webpubsub", "access", "credential"]
    # The access check asks generateToken itself, the call negotiate makes (and the role it needs).
    assert service.seen_at("/api/hubs/chat/:generateToken")
    assert "accepts the app's identity for hub chat" in report.checks["access"].detail
    assert credential.scopes == [("https://webpubsub.azure.com/.default",)]
    assert "fake-entra-token" not in json.dumps(body(report))


def test_entra_mode_without_a_token_is_unhealthy(servers: ExitStack) -> None:
    report = entra_monitor(serve(servers, entra_service()), FakeCredential(available=False)).report()
    assert report.status is Status.UNHEALTHY
    assert report.checks["credential"].status is Status.UNHEALTHY
    assert "could not get a token" in report.checks["credential"].detail
    assert "identity endpoint unreachable" in report.checks["credential"].log_detail


def test_a_probe_that_ignores_its_timeout_is_cut_off_and_never_started_twice(servers: ExitStack) -> None:
    deadline = 0.5
    credential = RecordingCredential()
    credential.gate.clear()  # get_token hangs
    before = set(probe_threads())
    clock = Clock()
    monitor = entra_monitor(
        serve(servers, entra_service()),
        credential,
        clock,
        HEALTH_DEADLINE_SECONDS=str(deadline),
        HEALTH_CACHE_SECONDS="0",
    )
    try:
        first, elapsed = timed(monitor)
        clock.advance(MIN_PROBE_INTERVAL_SECONDS)
        assert first.checks["credential"].status is Status.UNHEALTHY
        assert first.checks["credential"].detail == "no answer within 0.5 s"
        assert first.checks["webpubsub"].status is Status.HEALTHY
        assert_within_deadline(first, elapsed, deadline)

        second, elapsed = timed(monitor)
        assert "its probe has been running for" in second.checks["credential"].detail
        assert_within_deadline(second, elapsed, deadline)
        assert len(credential.scopes) == 1  # the next round waited for the same probe
        assert len(set(probe_threads()) - before) <= 3  # one worker per check, whatever the number of rounds
    finally:
        credential.gate.set()

    def next_round_healthy() -> bool:
        clock.advance(MIN_PROBE_INTERVAL_SECONDS)
        return monitor.report().status is Status.HEALTHY

    wait_until(next_round_healthy)


def test_the_identity_probe_gives_up_on_a_silent_identity_endpoint_within_its_own_timeout(
    servers: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """azure-identity's DefaultAzureCredential, as the probe builds it, against an endpoint that never answers.

    The app's own credential would wait minutes here; the probe's has no retries and the probe's timeout,
    so it ends by itself and reports the read timeout, and the next round starts a fresh probe.
    """
    deadline = 1.0
    use_identity_endpoint(monkeypatch, silent(servers))
    clock = Clock()
    monitor = HealthMonitor(
        entra_runtime(serve(servers, entra_service()), HEALTH_DEADLINE_SECONDS=str(deadline), HEALTH_CACHE_SECONDS="0"),
        clock=clock,
    )
    for _ in range(2):
        clock.advance(MIN_PROBE_INTERVAL_SECONDS)
        report, elapsed = timed(monitor)
        credential = report.checks["credential"]
        assert credential.status is Status.UNHEALTHY
        assert credential.detail.startswith("the app's identity could not get a token")
        assert "ManagedIdentityCredential" in credential.log_detail  # the reason is the operator's, in the log
        assert "read timeout=0.8" in credential.log_detail  # the probe's own timeout ended it, not the deadline
        assert report.checks["webpubsub"].status is Status.HEALTHY
        assert_within_deadline(report, elapsed, deadline)
    assert IDENTITY_HEADER not in json.dumps(body(report))


def test_the_identity_probe_asks_once_for_the_apps_client_id(
    servers: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request per probe (the SDK's default retries a 503 several times), for AZURE_CLIENT_ID's identity."""
    identity = StandIn(503)
    use_identity_endpoint(monkeypatch, serve(servers, identity))
    client_id = "00000000-0000-0000-0000-00000000c1d0"
    runtime = entra_runtime(serve(servers, entra_service()), AZURE_CLIENT_ID=client_id, HEALTH_DEADLINE_SECONDS="5")
    report = HealthMonitor(runtime).report()
    assert report.checks["credential"].status is Status.UNHEALTHY
    assert len(identity.seen) == 1
    assert f"client_id={client_id}" in identity.seen[0]
    assert "resource=https://webpubsub.azure.com" in identity.seen[0]


def test_checks_probe_concurrently(servers: ExitStack) -> None:
    """The service answers only once the identity has been asked, and the identity answers only once the
    service has been asked: probes run one after the other would both time out."""
    service = entra_service()
    service.gate.clear()

    class AfterTheService(FakeCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            service.gate.set()  # the service may answer now
            wait_until(lambda: len(service.seen_at(HEALTH_PATH)) == 1)
            return super().get_token(*scopes, **kwargs)

    report = entra_monitor(serve(servers, service), AfterTheService(), HEALTH_DEADLINE_SECONDS="10").report()
    assert report.checks["webpubsub"].status is Status.HEALTHY, report.checks["webpubsub"].detail
    assert report.checks["credential"].status is Status.HEALTHY, report.checks["credential"].detail


class Exploding(FakeCredential):
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise RuntimeError("internal state: token=abc123-very-secret")


def test_an_unexpected_error_in_a_probe_is_a_failed_check_without_its_message(
    servers: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="shared.health"):
        report = entra_monitor(serve(servers, entra_service()), Exploding()).report()
    assert report.checks["credential"].status is Status.UNHEALTHY
    assert "unexpectedly" in report.checks["credential"].detail
    assert "abc123" not in json.dumps(body(report))
    assert "Traceback" not in json.dumps(body(report))
    assert any(record.exc_info for record in caplog.records)  # the operator gets the stack trace


def test_a_bug_in_a_round_still_answers_everyone(servers: ExitStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = HealthMonitor(local_runtime(serve(servers, StandIn(200))))

    def broken() -> HealthReport:
        raise KeyError("bug")

    monkeypatch.setattr(monitor, "_round", broken)
    report = monitor.report()
    assert report.status is Status.UNHEALTHY
    assert health.render(report).status == 503
    assert "bug" not in json.dumps(body(report))


# Key Vault mode: the secret read (degraded with a cached key) and the vault's reachability


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, so a stand-in can play an https Key Vault host."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "health test vault")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def vault_host(stack: ExitStack, tls_files: tuple[Path, Path], status: int = 401) -> str:
    """An https stand-in answering like Key Vault does without a token: 401 with its challenge."""
    challenge = {"WWW-Authenticate": 'Bearer authorization="https://login.example.test/t", resource="x"'}
    cert_file, key_file = tls_files
    url = serve(stack, StandIn(status, headers=challenge), ssl_certfile=str(cert_file), ssl_keyfile=str(key_file))
    return url.replace("http://", "https://") + "/"


def keyvault_monitor(
    vault: FakeKeyVault,
    vault_url: str,
    endpoint: str,
    tls_files: tuple[Path, Path],
    clock: Callable[[], float] = time.monotonic,
    **overrides: str,
) -> tuple[HealthMonitor, KeyVaultTokenSource]:
    settings = load_settings(
        {
            "WEBPUBSUB_CREDENTIAL": "keyvault",
            "WEBPUBSUB_ENDPOINT": endpoint,
            "KEYVAULT_URI": vault_url,
            "WEBPUBSUB_KEY_SECRET_NAME": SECRET_NAME,
            "NEGOTIATE_AUTH": "anonymous",
            **overrides,
        }
    )
    credential = FakeCredential()
    adapter = FakeAdapter(vault)
    source = KeyVaultTokenSource(
        endpoint=settings.service.endpoint,
        vault_uri="https://test.vault.azure.net/",
        secret_name=SECRET_NAME,
        refresh_seconds=300,
        credential_provider=lambda: credential,
        secret_client_factory=lambda: SecretClient(
            "https://test.vault.azure.net/", credential, transport=transport_for(adapter)
        ),
    )
    runtime = Runtime(settings, credential=credential, token_source=source)
    return HealthMonitor(runtime, http=HttpProbe(verify=str(tls_files[0])), clock=clock), source


def test_keyvault_mode_reads_the_secret_and_reaches_the_vault(servers: ExitStack, tls_files: tuple[Path, Path]) -> None:
    vault = FakeKeyVault({SECRET_NAME: EMULATOR_KEY})
    clock = Clock()
    monitor, source = keyvault_monitor(
        vault, vault_host(servers, tls_files), serve(servers, StandIn(200)), tls_files, clock, HEALTH_CACHE_SECONDS="0"
    )
    report = monitor.report()
    assert report.status is Status.HEALTHY
    assert list(report.checks) == ["configuration", "webpubsub", "access", "credential", "keyvault"]
    assert "read the access key" in report.checks["credential"].detail
    assert "answered 401" in report.checks["keyvault"].detail
    assert source.access_keys() == (EMULATOR_KEY,)  # the probe's read filled the cache
    reads = vault.reads
    clock.advance(MIN_PROBE_INTERVAL_SECONDS)
    monitor.report()
    assert vault.reads == reads + 1  # each round proves the secret can be read now, not from the cache
    assert EMULATOR_KEY not in json.dumps(body(report))


def test_keyvault_down_with_a_cached_key_is_degraded(servers: ExitStack, tls_files: tuple[Path, Path]) -> None:
    vault = FakeKeyVault({SECRET_NAME: EMULATOR_KEY})
    unreachable = refusing(servers).replace("http://", "https://") + "/"
    monitor, source = keyvault_monitor(vault, unreachable, serve(servers, StandIn(200)), tls_files)
    source.access_keys()  # negotiate read the key earlier
    vault.available = False

    report = monitor.report()
    assert report.status is Status.DEGRADED
    assert report.checks["webpubsub"].status is Status.HEALTHY
    assert report.checks["credential"].status is Status.DEGRADED
    assert "still signing tokens with the key" in report.checks["credential"].detail
    assert report.checks["keyvault"].status is Status.DEGRADED
    assert "connection refused" in report.checks["keyvault"].detail
    response = health.render(report)
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert source.access_keys() == (EMULATOR_KEY,)  # the failed probe kept the cached key


def test_keyvault_down_without_a_cached_key_is_unhealthy(servers: ExitStack, tls_files: tuple[Path, Path]) -> None:
    vault = FakeKeyVault({SECRET_NAME: EMULATOR_KEY}, available=False)
    monitor, _ = keyvault_monitor(vault, vault_host(servers, tls_files), serve(servers, StandIn(200)), tls_files)
    report = monitor.report()
    assert report.status is Status.UNHEALTHY
    assert report.checks["credential"].status is Status.UNHEALTHY
    assert "no key is cached" in report.checks["credential"].detail
    assert report.checks["keyvault"].status is Status.HEALTHY  # reachable: the fault is elsewhere


def test_a_missing_secret_is_named(servers: ExitStack, tls_files: tuple[Path, Path]) -> None:
    monitor, _ = keyvault_monitor(
        FakeKeyVault({}), vault_host(servers, tls_files), serve(servers, StandIn(200)), tls_files
    )
    report = monitor.report()
    assert report.status is Status.UNHEALTHY
    assert "the secret does not exist" in report.checks["credential"].detail
    # The vault and the secret are named for the operator (log, doctor), not for anonymous callers.
    assert f"secret {SECRET_NAME!r} does not exist" in report.checks["credential"].log_detail
    assert SECRET_NAME not in json.dumps(body(report))
    assert "test.vault.azure.net" not in json.dumps(body(report))


def test_a_hung_keyvault_is_cut_off_at_the_deadline(servers: ExitStack, tls_files: tuple[Path, Path]) -> None:
    deadline = 0.5
    vault = FakeKeyVault({SECRET_NAME: EMULATOR_KEY})
    monitor, source = keyvault_monitor(
        vault, vault_host(servers, tls_files), serve(servers, StandIn(200)), tls_files, HEALTH_DEADLINE_SECONDS="0.5"
    )
    source.access_keys()
    vault.delay_seconds = 3  # answered at the transport, so no socket timeout can end it
    report, elapsed = timed(monitor)
    assert report.status is Status.DEGRADED
    assert report.checks["credential"].detail.startswith("no answer within 0.5 s")
    assert_within_deadline(report, elapsed, deadline)


def test_a_vault_host_that_accepts_and_never_answers_is_reported_within_the_deadline(
    servers: ExitStack, tls_files: tuple[Path, Path]
) -> None:
    """The TLS handshake itself hangs; the reachability probe's own timeout ends it."""
    deadline = 0.5
    vault = FakeKeyVault({SECRET_NAME: EMULATOR_KEY})
    hanging = silent(servers).replace("http://", "https://") + "/"
    monitor, source = keyvault_monitor(
        vault, hanging, serve(servers, StandIn(200)), tls_files, HEALTH_DEADLINE_SECONDS=str(deadline)
    )
    source.access_keys()
    report, elapsed = timed(monitor)
    assert report.status is Status.DEGRADED
    assert report.checks["keyvault"].status is Status.DEGRADED
    assert "within 0.4 s" in report.checks["keyvault"].detail
    assert "still signing tokens with the key" in report.checks["keyvault"].detail
    assert_within_deadline(report, elapsed, deadline)


def test_a_vault_host_that_is_not_trusted_is_reported(servers: ExitStack, tls_files: tuple[Path, Path]) -> None:
    vault = FakeKeyVault({SECRET_NAME: EMULATOR_KEY})
    monitor, source = keyvault_monitor(vault, vault_host(servers, tls_files), serve(servers, StandIn(200)), tls_files)
    source.access_keys()
    report = HealthMonitor(monitor.runtime).report()  # the usual CA bundle: the stand-in's certificate is unknown
    assert report.checks["keyvault"].status is Status.DEGRADED
    assert "TLS handshake failed" in report.checks["keyvault"].detail


# Configuration


def test_invalid_settings_are_unhealthy_and_name_the_setting() -> None:
    os.environ["WEBPUBSUB_CREDENTIAL"] = "nonsense"
    report = health.current_report()
    assert report.status is Status.UNHEALTHY
    assert list(report.checks) == ["configuration"]  # without the service's settings nothing can be probed
    detail = report.checks["configuration"].detail
    assert detail.startswith("WEBPUBSUB_CREDENTIAL: must be one of")
    assert "nonsense" not in detail  # anyone may read it; the log quotes the value
    response = health.render(report)
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert response.headers["Cache-Control"] == "no-store"


def test_a_negotiate_misconfiguration_is_named_while_the_service_is_still_probed(servers: ExitStack) -> None:
    """One concern's bad setting makes health 503 naming it; the dependencies are still checked."""
    service = StandIn(200)
    os.environ.update(
        {
            "WEBPUBSUB_CREDENTIAL": "connectionstring",
            "WEBPUBSUB_CONNECTION_STRING": connection_string(serve(servers, service)),
            "NEGOTIATE_AUTH": "appservice",
        }
    )
    report = health.current_report()
    assert report.status is Status.UNHEALTHY
    assert report.checks["configuration"].detail.startswith("NEGOTIATE_AUTH:")
    assert report.checks["webpubsub"].status is Status.HEALTHY
    assert report.checks["credential"].status is Status.HEALTHY


def test_a_configuration_error_never_shows_the_connection_string() -> None:
    os.environ.update(
        {
            "WEBPUBSUB_CREDENTIAL": "connectionstring",
            "WEBPUBSUB_CONNECTION_STRING": f"Endpoint=http://localhost:8080;Port=8080;AccessKey={EMULATOR_KEY};",
            "NEGOTIATE_AUTH": "anonymous",
        }
    )
    response = health.health()
    assert response.status == 503
    text = response.body.decode()
    assert "WEBPUBSUB_CONNECTION_STRING" in text
    assert EMULATOR_KEY not in text


def test_closing_the_runtime_ends_its_monitor_and_its_threads(servers: ExitStack) -> None:
    service = StandIn(200)
    runtime = local_runtime(serve(servers, service))
    use_runtime(runtime)
    before = set(probe_threads())
    first = get_runtime().health_monitor
    assert health.current_report().status is Status.HEALTHY
    workers = set(probe_threads()) - before
    assert workers  # the round ran on the monitor's own threads

    runtime.close()
    assert not any(worker.is_alive() for worker in workers)
    assert get_runtime().health_monitor is not first
    assert health.current_report().status is Status.HEALTHY
    assert len(service.seen_at(HEALTH_PATH)) == 2  # same runtime, but the cache ended with the old monitor
    runtime.close()
    runtime.close()  # nothing left to end: no error


def probe_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("health-probe")]


def test_the_process_monitor_follows_the_runtime(servers: ExitStack) -> None:
    service = StandIn(200)
    use_runtime(local_runtime(serve(servers, service)))
    assert health.current_report().status is Status.HEALTHY
    assert health.current_report().status is Status.HEALTHY
    assert len(service.seen_at(HEALTH_PATH)) == 1  # cached between calls
    use_runtime(local_runtime(refusing(servers)))
    assert health.current_report().status is Status.UNHEALTHY  # new settings, new monitor, no stale cache


def test_an_unexpected_error_outside_the_monitor_still_answers_503_without_its_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> HealthReport:
        raise RuntimeError("internal state: key=abc123-very-secret")

    monkeypatch.setattr(health, "current_report", broken)
    with caplog.at_level(logging.ERROR, logger="shared.health"):
        response = health.health()
    assert response.status == 503
    assert response.headers["Retry-After"]
    payload = json.loads(response.body)
    assert payload["status"] == "unhealthy"
    assert "abc123" not in response.body.decode()
    assert any(record.exc_info for record in caplog.records)


# Liveness, version, lazy imports


def test_live_needs_no_settings_and_no_dependency() -> None:
    os.environ["WEBPUBSUB_CREDENTIAL"] = "nonsense"
    response = health.live()
    assert response.status == 200
    assert json.loads(response.body) == {"status": "alive", "version": __version__}
    assert response.headers["Cache-Control"] == "no-store"


def test_reported_version_is_the_project_version() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"]


def test_importing_health_loads_no_sdk_and_no_http_client() -> None:
    code = (
        "import sys, shared.health;"
        "print([m for m in ('requests', 'azure.core', 'azure.identity', 'azure.keyvault.secrets',"
        " 'azure.messaging.webpubsubservice', 'jwt') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
