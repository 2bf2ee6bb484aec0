"""Where the doctor's settings come from: local.settings.json, the environment, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor.target import (
    AzureAccess,
    LocalSettingsError,
    Overrides,
    apply_overrides,
    collect_settings,
    read_local_settings,
    resolve_target,
    signing_key,
)
from shared.config import Concern, CredentialMode
from tests.support.fakes import (
    EMULATOR_KEY,
    LOCAL_CONNECTION_STRING,
    FakeAdapter,
    FakeCredential,
    FakeKeyVault,
    transport_for,
)

ENDPOINT = "https://contoso.webpubsub.azure.com"
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu"
LOCAL = {
    "WEBPUBSUB_CREDENTIAL": "connectionstring",
    "WEBPUBSUB_CONNECTION_STRING": LOCAL_CONNECTION_STRING,
    "NEGOTIATE_AUTH": "anonymous",
}


def write_settings(folder: Path, document: object) -> Path:
    path = folder / "local.settings.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_values_are_read_as_the_strings_the_host_would_set(tmp_path: Path) -> None:
    path = write_settings(
        tmp_path, {"IsEncrypted": False, "Values": {"A": "x", "B": True, "C": 5, "D": None}, "Host": {"x": 1}}
    )
    assert read_local_settings(path) == {"A": "x", "B": "true", "C": "5"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"Values": {"WEBPUBSUB_CONNECTION_STRING": "Endpoint=x;AccessKey=secret-key"', "not valid JSON (line"),
        ('{"IsEncrypted": true, "Values": {"A": "secret-key"}}', "func settings decrypt"),
        ('["secret-key"]', "JSON object"),
        ('{"Values": ["secret-key"]}', '"Values"'),
        ('{"Values": {"A": {"nested": "secret-key"}}}', '"Values.A"'),
    ],
)
def test_unusable_files_are_explained_without_their_values(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LocalSettingsError) as caught:
        read_local_settings(path)
    assert message in str(caught.value)
    assert "secret-key" not in str(caught.value)


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    write_settings(tmp_path, {"Values": {**LOCAL, "WEBPUBSUB_HUB": "fromfile"}})
    source = collect_settings({"WEBPUBSUB_HUB": "fromenv"}, tmp_path)
    assert source.environ["WEBPUBSUB_HUB"] == "fromenv"
    assert source.environ["NEGOTIATE_AUTH"] == "anonymous"
    assert source.from_file == frozenset(LOCAL)
    assert source.describe().status == "ok"
    assert "3 value(s) from" in source.describe().summary


def test_a_broken_file_is_reported_and_the_environment_still_used(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text("{", encoding="utf-8")
    source = collect_settings(LOCAL, tmp_path)
    assert source.file_problem is not None
    assert source.describe().status == "warn"
    assert resolve_target(source).service is not None


def test_without_a_file_only_the_environment_counts(tmp_path: Path) -> None:
    source = collect_settings(LOCAL, tmp_path)
    assert source.file is None
    assert source.describe().summary == "settings read from the environment"


@pytest.mark.parametrize(("marker", "expected"), [("WEBSITE_SITE_NAME", True), ("UNRELATED", False)])
def test_app_service_sites_count_as_production(tmp_path: Path, marker: str, expected: bool) -> None:
    assert collect_settings({marker: "my-app"}, tmp_path).production is expected


def test_a_connection_string_override_selects_its_mode() -> None:
    environ = {"WEBPUBSUB_CREDENTIAL": "entra", "WEBPUBSUB_ENDPOINT": ENDPOINT}
    changed = apply_overrides(environ, Overrides(connection_string=LOCAL_CONNECTION_STRING, hub="lobby"))
    assert environ["WEBPUBSUB_CREDENTIAL"] == "connectionstring"
    assert environ["WEBPUBSUB_CONNECTION_STRING"] == LOCAL_CONNECTION_STRING
    assert environ["WEBPUBSUB_HUB"] == "lobby"
    assert set(changed) == {"WEBPUBSUB_CREDENTIAL", "WEBPUBSUB_CONNECTION_STRING", "WEBPUBSUB_HUB"}


def test_key_and_endpoint_replace_their_part_of_the_connection_string() -> None:
    environ = dict(LOCAL)
    apply_overrides(environ, Overrides(key=OTHER_KEY))
    assert (
        environ["WEBPUBSUB_CONNECTION_STRING"] == f"Endpoint=http://localhost:8080;AccessKey={OTHER_KEY};Version=1.0;"
    )
    apply_overrides(environ, Overrides(endpoint=ENDPOINT))
    assert environ["WEBPUBSUB_CONNECTION_STRING"] == f"Endpoint={ENDPOINT};AccessKey={OTHER_KEY};Version=1.0;"


def test_endpoint_and_key_alone_make_a_connection_string() -> None:
    environ: dict[str, str] = {}
    apply_overrides(environ, Overrides(endpoint=ENDPOINT, key=EMULATOR_KEY))
    assert environ["WEBPUBSUB_CREDENTIAL"] == "connectionstring"
    assert environ["WEBPUBSUB_CONNECTION_STRING"] == f"Endpoint={ENDPOINT};AccessKey={EMULATOR_KEY};Version=1.0;"


def test_in_entra_mode_the_endpoint_override_is_the_endpoint_setting(tmp_path: Path) -> None:
    environ = {"WEBPUBSUB_CREDENTIAL": "entra", "WEBPUBSUB_ENDPOINT": "https://old.webpubsub.azure.com"}
    overrides = Overrides(endpoint=ENDPOINT, key=EMULATOR_KEY)
    apply_overrides(environ, overrides)
    assert environ == {"WEBPUBSUB_CREDENTIAL": "entra", "WEBPUBSUB_ENDPOINT": ENDPOINT}
    target = resolve_target(collect_settings(environ, tmp_path), overrides)
    assert (target.endpoint, target.key, target.key_origin) == (ENDPOINT, EMULATOR_KEY, "--key")


def test_a_target_is_found_even_when_unrelated_settings_do_not_load(tmp_path: Path) -> None:
    environ = {**LOCAL, "NEGOTIATE_AUTH": "appservice", "WEBPUBSUB_HUB": "lobby"}  # no App Service auth here
    target = resolve_target(collect_settings(environ, tmp_path))
    assert target.service is not None  # the service's own settings load: only negotiate's do not
    assert target.load_error is None
    assert target.settings.problems[Concern.NEGOTIATE].setting == "NEGOTIATE_AUTH"
    assert (target.endpoint, target.hub, target.key) == ("http://localhost:8080", "lobby", EMULATOR_KEY)
    described = target.describe()
    assert described.status == "ok"
    assert "other settings do not load" in described.summary
    assert EMULATOR_KEY not in described.summary


def test_a_broken_connection_string_is_a_warning_for_the_target(tmp_path: Path) -> None:
    environ = {**LOCAL, "WEBPUBSUB_CONNECTION_STRING": "Endpoint=http://localhost:8080"}
    target = resolve_target(collect_settings(environ, tmp_path))
    assert target.endpoint is None
    assert target.describe().status == "warn"


def test_signing_keys_come_from_key_vault_as_the_app_reads_them(tmp_path: Path) -> None:
    environ = {
        "WEBPUBSUB_CREDENTIAL": "keyvault",
        "WEBPUBSUB_ENDPOINT": ENDPOINT,
        "KEYVAULT_URI": "https://test.vault.azure.net/",
        "WEBPUBSUB_KEY_SECRET_NAME": "wps-key",
        "NEGOTIATE_AUTH": "anonymous",
    }
    vault = FakeKeyVault({"wps-key": EMULATOR_KEY})
    access = AzureAccess(credential=FakeCredential(), sdk_options={"transport": transport_for(FakeAdapter(vault))})
    key, note = signing_key(resolve_target(collect_settings(environ, tmp_path)), access)
    assert (key, note) == (EMULATOR_KEY, "Key Vault secret wps-key")
    vault.available = False
    key, note = signing_key(resolve_target(collect_settings(environ, tmp_path)), access)
    assert key is None
    assert "could not be read from Key Vault" in note


def test_entra_mode_has_no_key_and_says_so(tmp_path: Path) -> None:
    environ = {"WEBPUBSUB_CREDENTIAL": CredentialMode.ENTRA.value, "WEBPUBSUB_ENDPOINT": ENDPOINT}
    key, note = signing_key(resolve_target(collect_settings(environ, tmp_path)), AzureAccess())
    assert key is None
    assert "entra" in note


def test_no_configuration_means_no_key(tmp_path: Path) -> None:
    key, note = signing_key(resolve_target(collect_settings({}, tmp_path)), AzureAccess())
    assert key is None
    assert "--key" in note


def test_sdk_clients_get_short_timeouts_and_no_retries() -> None:
    options = AzureAccess(timeout=2, sdk_options={"transport": "fake"}).client_options()
    assert options == {"connection_timeout": 2, "read_timeout": 2, "retry_total": 0, "transport": "fake"}
