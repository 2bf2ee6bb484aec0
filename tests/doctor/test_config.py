"""`python -m doctor config`: the traps in the settings, and the probes in every mode.

The local Web PubSub service answers the connectionstring probes for real; Key Vault, Entra ID and
a remote service are answered by fakes at the SDKs' transport, so the real SDK clients run.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests

from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub, ServiceSettings
from doctor.cli import main
from doctor.config import check_config, check_setting_names
from doctor.target import AzureAccess, collect_settings
from tests.support.fakes import (
    EMULATOR_KEY,
    FakeAdapter,
    FakeCredential,
    FakeKeyVault,
    Reply,
    Seen,
    json_reply,
    transport_for,
)

ENDPOINT = "https://contoso.webpubsub.azure.com"
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu"
KEYVAULT_MODE = {
    "WEBPUBSUB_CREDENTIAL": "keyvault",
    "WEBPUBSUB_ENDPOINT": ENDPOINT,
    "KEYVAULT_URI": "https://test.vault.azure.net/",
    "WEBPUBSUB_KEY_SECRET_NAME": "wps-key",
    "NEGOTIATE_AUTH": "anonymous",
}
ENTRA_MODE = {
    "WEBPUBSUB_CREDENTIAL": "entra",
    "WEBPUBSUB_ENDPOINT": ENDPOINT,
    "NEGOTIATE_AUTH": "anonymous",
    "EVENTHANDLER_AUTH": "bearer",
    "EVENTHANDLER_BEARER_ISSUER": "https://login.microsoftonline.com/tenant/v2.0",
    "EVENTHANDLER_BEARER_AUDIENCE": "api://events",
    "EVENTHANDLER_BEARER_PRINCIPAL_ID": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
}


@pytest.fixture(scope="module")
def local_service() -> Iterator[RunningWebPubSub]:
    with LocalWebPubSub(ServiceSettings(event_handlers=())).run_in_thread() as running:
        yield running


def local_settings_file(folder: Path, connection_string: str, **extra: str) -> None:
    values = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "WEBPUBSUB_CREDENTIAL": "connectionstring",
        "WEBPUBSUB_CONNECTION_STRING": connection_string,
        "NEGOTIATE_AUTH": "anonymous",
        **extra,
    }
    (folder / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))


def doctor(*argv: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    out = io.StringIO()
    code = main(["config", *argv, "--json", "--timeout", "3"], out=out)
    text = out.getvalue()
    return code, {check["name"]: check for check in json.loads(text)["checks"]}, text


class FakeAzure:
    """Key Vault, and a remote Web PubSub service checking the key its REST calls are signed with."""

    def __init__(self, vault: FakeKeyVault | None = None, *, health: int = 200, generate_token: int = 200):
        self.vault = vault or FakeKeyVault({"wps-key": EMULATOR_KEY})
        self.health = health
        self.generate_token = generate_token

    def __call__(self, seen: Seen) -> Reply:
        if urlsplit(seen.url).hostname == "test.vault.azure.net":
            return self.vault(seen)
        if seen.path == "/api/health":
            return self.health, {}, b""
        if seen.path.endswith("/:generateToken"):
            if self.generate_token != 200:
                return json_reply(self.generate_token, {"code": "Forbidden", "message": "denied"})
            token = jwt.encode({"exp": int(time.time()) + 60}, "issued-by-the-fake-service-for-this-test")
            return json_reply(200, {"token": token})
        try:
            bearer = seen.headers.get("Authorization", "").removeprefix("Bearer ")
            jwt.decode(bearer, EMULATOR_KEY, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.PyJWTError:
            return 401, {}, b""
        return 404, {}, b""  # HEAD /users/<id>: no such user, which is fine


def fake_access(azure: FakeAzure, credential: FakeCredential | None = None) -> tuple[AzureAccess, requests.Session]:
    adapter = FakeAdapter(azure)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    access = AzureAccess(
        timeout=2, credential=credential or FakeCredential(), sdk_options={"transport": transport_for(adapter)}
    )
    return access, session


def run_with_fakes(
    environ: dict[str, str], tmp_path: Path, azure: FakeAzure, credential: FakeCredential | None = None
) -> dict[str, Any]:
    access, session = fake_access(azure, credential)
    checks = check_config(collect_settings(environ, tmp_path), access, session)
    return {check.name: check for check in checks}


def test_the_local_settings_pass_against_the_local_service(local_service: RunningWebPubSub, tmp_path: Path) -> None:
    local_settings_file(tmp_path, local_service.connection_string)
    code, checks, text = doctor()
    assert code == 0, checks
    assert checks["service"]["summary"].endswith("/api/health?api-version=2024-12-01 answered 200")
    assert checks["service access"]["status"] == "ok"
    assert checks["development settings"]["status"] == "ok"
    assert EMULATOR_KEY not in text


def test_a_key_the_service_does_not_know_is_caught(local_service: RunningWebPubSub, tmp_path: Path) -> None:
    local_settings_file(tmp_path, local_service.connection_string)
    code, checks, text = doctor("--key", OTHER_KEY)
    assert code == 1
    assert checks["service access"]["status"] == "fail"
    assert "401" in checks["service access"]["summary"]
    assert OTHER_KEY not in text


def test_an_unreachable_service_is_named_as_such(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    local_settings_file(tmp_path, f"Endpoint=http://127.0.0.1:{port};AccessKey={EMULATOR_KEY};Version=1.0;")
    code, checks, _ = doctor()
    assert code == 1
    assert "refused" in checks["service"]["summary"]
    assert checks["service access"]["status"] == "skip"


def test_the_port_given_twice_is_caught(tmp_path: Path) -> None:
    local_settings_file(tmp_path, f"Endpoint=http://localhost:8080;Port=8080;AccessKey={EMULATOR_KEY};Version=1.0;")
    code, checks, text = doctor()
    assert code == 1
    assert checks["configuration"]["status"] == "fail"
    assert "WEBPUBSUB_CONNECTION_STRING" in checks["configuration"]["summary"]
    assert "port twice" in checks["configuration"]["summary"]
    assert "port in Endpoint only" in checks["configuration"]["fix"]
    assert EMULATOR_KEY not in text


def test_an_invalid_hub_name_is_caught(tmp_path: Path) -> None:
    local_settings_file(tmp_path, f"Endpoint=http://localhost:8080;AccessKey={EMULATOR_KEY};", WEBPUBSUB_HUB="1-chat")
    code, checks, _ = doctor()
    assert code == 1
    assert checks["configuration"]["summary"].startswith("the app refuses WEBPUBSUB_HUB:")
    assert "(breaks every route but health)" in checks["configuration"]["summary"]


def test_a_malformed_key_vault_uri_is_caught(tmp_path: Path) -> None:
    environ = {**KEYVAULT_MODE, "KEYVAULT_URI": "test.vault.azure.net"}
    checks = run_with_fakes(environ, tmp_path, FakeAzure())
    assert checks["configuration"].status == "fail"
    assert "KEYVAULT_URI" in checks["configuration"].summary
    assert "vault.azure.net" in checks["configuration"].fix


def test_an_http_endpoint_with_entra_is_refused_for_remote_hosts(tmp_path: Path) -> None:
    environ = {**ENTRA_MODE, "WEBPUBSUB_ENDPOINT": "http://contoso.webpubsub.azure.com"}
    checks = run_with_fakes(environ, tmp_path, FakeAzure())
    assert checks["configuration"].status == "fail"
    assert "https" in checks["configuration"].summary


def test_an_http_endpoint_with_entra_is_a_warning_on_loopback(tmp_path: Path) -> None:
    environ = {**ENTRA_MODE, "WEBPUBSUB_ENDPOINT": "http://localhost:8080"}
    checks = run_with_fakes(environ, tmp_path, FakeAzure(health=200))
    assert checks["endpoint"].status == "warn"
    assert "entra" in checks["endpoint"].summary


def test_a_plain_http_connection_string_for_a_remote_host_fails(tmp_path: Path) -> None:
    local_settings_file(tmp_path, f"Endpoint=http://contoso.webpubsub.azure.com;AccessKey={EMULATOR_KEY};")
    environ = collect_settings({}, tmp_path).environ
    checks = run_with_fakes(dict(environ), tmp_path, FakeAzure())
    assert checks["endpoint"].status == "fail"
    assert "plain http" in checks["endpoint"].summary


def test_development_settings_fail_on_an_app_service_site(local_service: RunningWebPubSub, tmp_path: Path) -> None:
    local_settings_file(tmp_path, local_service.connection_string, WEBSITE_SITE_NAME="my-function-app")
    code, checks, _ = doctor()
    assert code == 1
    finding = checks["development settings"]
    assert finding["status"] == "fail"
    assert "NEGOTIATE_AUTH=anonymous" in finding["summary"]
    assert "WEBPUBSUB_CREDENTIAL=connectionstring" in finding["summary"]


def test_misspelled_setting_names_are_pointed_out() -> None:
    finding = check_setting_names({"WEBPUBSUB_CONNECTIONSTRING": "x", "PATH": "/bin", "NEGOTIATE_AUTH": "anonymous"})
    assert finding.status == "warn"
    assert "WEBPUBSUB_CONNECTIONSTRING (did you mean WEBPUBSUB_CONNECTION_STRING?)" in finding.summary
    assert "PATH" not in finding.summary


def test_per_hub_group_settings_are_known_names() -> None:
    finding = check_setting_names({"WEBPUBSUB_HUBS": "chat alerts", "NEGOTIATE_GROUPS_alerts": "x"})
    assert finding.status == "ok"
    assert check_setting_names({"WEBPUBSUB_HUB_S": "chat alerts"}).status == "warn"


def test_without_any_endpoint_nothing_is_probed(tmp_path: Path) -> None:
    code, checks, _ = doctor()
    assert code == 1
    assert checks["configuration"]["status"] == "fail"
    assert checks["service"]["status"] == "skip"


def test_key_vault_mode_reads_the_secret_and_checks_the_key_with_the_service(tmp_path: Path) -> None:
    azure = FakeAzure()
    checks = run_with_fakes(KEYVAULT_MODE, tmp_path, azure)
    assert {name: check.status for name, check in checks.items()} == {
        "settings-file": "ok",
        "setting names": "ok",
        "configuration": "ok",
        "endpoint": "ok",
        "development settings": "ok",
        "service": "ok",
        "identity": "ok",
        "key vault": "ok",
        "service access": "ok",
    }
    assert azure.vault.reads == 1


def test_a_stale_key_in_key_vault_is_refused_by_the_service(tmp_path: Path) -> None:
    checks = run_with_fakes(KEYVAULT_MODE, tmp_path, FakeAzure(FakeKeyVault({"wps-key": OTHER_KEY})))
    assert checks["key vault"].status == "ok"
    assert checks["service access"].status == "fail"


@pytest.mark.parametrize(
    ("vault", "expected"),
    [
        (FakeKeyVault({}), "does not exist"),
        (FakeKeyVault({"wps-key": EMULATOR_KEY}, status_override=403), "Key Vault Secrets User"),
        (FakeKeyVault({"wps-key": "  "}), "empty"),
    ],
)
def test_key_vault_failures_say_why(tmp_path: Path, vault: FakeKeyVault, expected: str) -> None:
    checks = run_with_fakes(KEYVAULT_MODE, tmp_path, FakeAzure(vault))
    assert checks["key vault"].status == "fail"
    assert expected in checks["key vault"].summary + checks["key vault"].fix
    assert checks["service access"].status == "skip"


def test_key_vault_mode_without_an_identity_token_names_the_identity(tmp_path: Path) -> None:
    azure = FakeAzure()
    checks = run_with_fakes(KEYVAULT_MODE, tmp_path, azure, FakeCredential(available=False))
    assert checks["identity"].status == "fail"
    assert "no token for https://vault.azure.net/.default" in checks["identity"].summary
    assert "az login" in checks["identity"].fix
    assert checks["key vault"].status == "skip"
    assert checks["service access"].status == "skip"
    assert azure.vault.reads == 0


def test_entra_mode_gets_a_token_and_a_client_token(tmp_path: Path) -> None:
    credential = FakeCredential()
    checks = run_with_fakes(ENTRA_MODE, tmp_path, FakeAzure(), credential)
    assert checks["identity"].status == "ok"
    assert "https://webpubsub.azure.com/.default" in checks["identity"].summary
    assert checks["service access"].status == "ok"
    assert "accepts the app's identity" in checks["service access"].summary


def test_an_identity_without_a_token_is_explained(tmp_path: Path) -> None:
    checks = run_with_fakes(ENTRA_MODE, tmp_path, FakeAzure(), FakeCredential(available=False))
    assert checks["identity"].status == "fail"
    assert "az login" in checks["identity"].fix
    assert checks["service access"].status == "skip"


def test_an_identity_without_the_owner_role_is_explained(tmp_path: Path) -> None:
    checks = run_with_fakes(ENTRA_MODE, tmp_path, FakeAzure(generate_token=403))
    assert checks["service access"].status == "fail"
    assert "Web PubSub Service Owner" in checks["service access"].summary + checks["service access"].fix


def test_a_service_refusing_this_network_is_explained(tmp_path: Path) -> None:
    checks = run_with_fakes(ENTRA_MODE, tmp_path, FakeAzure(health=403))
    assert checks["service"].status == "fail"
    assert "refuses this network" in checks["service"].summary
    assert checks["service access"].status == "skip"


def test_entra_mode_passes_against_the_local_service_and_its_identity_endpoint(
    local_service: RunningWebPubSub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real credential and SDK client over loopback http: the per-request enforce_https is what lets it pass."""
    for name, value in local_service.identity_environment().items():
        monkeypatch.setenv(name, value)
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"Values": {**ENTRA_MODE, "WEBPUBSUB_ENDPOINT": local_service.endpoint}})
    )
    code, checks, text = doctor()
    assert code == 0, text
    assert checks["endpoint"]["status"] == "warn"  # entra over http: fine on loopback only
    assert checks["identity"]["status"] == "ok"
    assert checks["service access"]["status"] == "ok", checks["service access"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (the kernel does) and never answers: what a dropping firewall looks like."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_service_that_never_answers_is_given_up_on_after_the_timeout(tmp_path: Path, silent_port: int) -> None:
    local_settings_file(tmp_path, f"Endpoint=http://127.0.0.1:{silent_port};AccessKey={EMULATOR_KEY};Version=1.0;")
    out = io.StringIO()
    code = main(["config", "--json", "--timeout", "0.5"], out=out)
    checks = {check["name"]: check for check in json.loads(out.getvalue())["checks"]}
    assert code == 1
    summary = checks["service"]["summary"]
    assert summary.startswith(f"cannot reach the service: HEAD http://127.0.0.1:{silent_port}/api/health")
    assert summary.endswith(f"no answer from 127.0.0.1:{silent_port} within 0.5 s")
    assert "firewall" in checks["service"]["fix"]
    assert checks["service access"]["status"] == "skip"


class HangingCredential:
    """An identity endpoint that never answers, until the test lets it go."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.release.wait(30)
        raise AssertionError("the doctor should have given up long before")


def test_an_identity_that_never_answers_is_given_up_on(tmp_path: Path) -> None:
    credential = HangingCredential()
    adapter = FakeAdapter(FakeAzure())
    access = AzureAccess(timeout=0.2, credential=credential, sdk_options={"transport": transport_for(adapter)})
    with requests.Session() as session:
        session.mount("https://", adapter)
        try:
            found = check_config(collect_settings(ENTRA_MODE, tmp_path), access, session)
        finally:
            credential.release.set()
    checks = {check.name: check for check in found}
    assert checks["identity"].status == "fail"
    assert "no answer within 0.6 s" in checks["identity"].summary
    assert checks["service access"].status == "skip"
