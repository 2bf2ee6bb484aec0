"""local.settings.json as Core Tools reads it: the one reader of the local host and the doctor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor.target import collect_settings
from shared.local_settings import CorsSettings, LocalSettings, LocalSettingsError, apply_values, read_local_settings


def write_settings(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_local_settings_are_read_as_core_tools_reads_them(tmp_path: Path) -> None:
    # Json.NET's rendering of non-string values: the JSON text, booleans in lower case.
    text = """{
        "IsEncrypted": false,
        "values": {"TEXT": "x", "NUMBER": 7, "DECIMAL": 1.50, "ON": true, "OFF": false, "NOTHING": null, "EMPTY": ""},
        "Host": {"localHttpPort": 7072, "cors": "http://a.example,,http://b.example/", "CORSCredentials": "true"}
    }"""
    settings = read_local_settings(write_settings(tmp_path / "local.settings.json", text))
    assert settings.values == {"TEXT": "x", "NUMBER": "7", "DECIMAL": "1.50", "ON": "true", "OFF": "false", "EMPTY": ""}
    assert settings.port == 7072
    assert settings.cors == CorsSettings(("http://a.example", "http://b.example"), credentials=True)


def test_a_missing_local_settings_file_means_defaults(tmp_path: Path) -> None:
    assert read_local_settings(tmp_path / "absent.json") == LocalSettings({}, 7071, None)


def test_a_zero_port_means_the_default(tmp_path: Path) -> None:
    path = write_settings(tmp_path / "local.settings.json", '{"Host": {"LocalHttpPort": 0}}')
    assert read_local_settings(path).port == 7071


def test_the_example_settings_are_readable() -> None:
    settings = read_local_settings(Path("local.settings.json.example"))
    assert settings.values["NEGOTIATE_AUTH"] == "anonymous"
    assert settings.port == 7071
    assert settings.cors == CorsSettings(("http://localhost:5173",))


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("{not json", "not valid JSON"),
        ([], "must hold a JSON object"),
        ({"IsEncrypted": True, "Values": {"A": "secret-value"}}, "encrypted"),
        ({"Values": ["secret-value"]}, '"Values" must be a JSON object'),
        ({"Values": {"NESTED": {"a": "secret-value"}}}, '"Values.NESTED" must be a string'),
        ({"Host": ["secret-value"]}, '"Host" must be a JSON object'),
        ({"Host": {"LocalHttpPort": "seventy"}}, "LocalHttpPort must be a port number"),
        ({"Host": {"LocalHttpPort": 70000}}, "between 1 and 65535"),
        ({"Host": {"CORS": "*", "CORSCredentials": True}}, "cannot be combined"),
        ({"Host": {"CORSCredentials": "maybe"}}, "CORSCredentials must be true or false"),
    ],
)
def test_unusable_local_settings_are_refused_clearly(tmp_path: Path, document: object, problem: str) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    with pytest.raises(LocalSettingsError, match=problem) as refused:
        read_local_settings(path)
    assert str(path) in str(refused.value) or problem == "cannot be combined"
    assert "secret-value" not in str(refused.value)


def test_environment_variables_win_over_local_settings() -> None:
    environ = {"ALREADY": "from the environment", "BLANK": ""}
    skipped = apply_values({"ALREADY": "from the file", "BLANK": "filled", "NEW": "new", "EMPTY": ""}, environ)
    assert skipped == ["ALREADY"]
    assert environ == {"ALREADY": "from the environment", "BLANK": "filled", "NEW": "new", "EMPTY": ""}


def test_the_doctor_merges_the_file_with_the_same_precedence(tmp_path: Path) -> None:
    """An empty environment variable does not hide the file's value, under Core Tools or in the doctor."""
    write_settings(tmp_path / "local.settings.json", '{"Values": {"WEBPUBSUB_HUB": "fromfile", "FLAG": true}}')
    source = collect_settings({"WEBPUBSUB_HUB": "", "OTHER": "x"}, tmp_path)
    assert (source.environ["WEBPUBSUB_HUB"], source.environ["FLAG"]) == ("fromfile", "true")
    assert source.from_file == frozenset({"WEBPUBSUB_HUB", "FLAG"})
