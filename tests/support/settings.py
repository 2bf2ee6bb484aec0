"""App settings for tests: the local-development baseline, entra mode, and the process environment."""

from __future__ import annotations

import os

import pytest

from shared.config import Settings, load_settings
from shared.runtime import reset_runtime
from tests.support.fakes import LOCAL_CONNECTION_STRING

LOCAL_ENVIRON = {
    "WEBPUBSUB_CREDENTIAL": "connectionstring",
    "WEBPUBSUB_CONNECTION_STRING": LOCAL_CONNECTION_STRING,
    "NEGOTIATE_AUTH": "anonymous",
    "PUBLISH_AUTH": "none",
}
# The prefixes of the app's own settings, cleared by `use_environment`.
APP_SETTING_PREFIXES = (
    "WEBPUBSUB_",
    "NEGOTIATE_",
    "EVENTHANDLER_",
    "KEYVAULT_",
    "HEALTH_",
    "TOKEN_",
    "CLIENT_PAGE",
    "PUBLISH_",
)


def local_settings(**overrides: str) -> Settings:
    """Settings as local development has them (connection string, anonymous negotiate), with overrides.

    Every concern must load: a test that wants an invalid concern builds its Settings with load_settings.
    """
    return load_settings({**LOCAL_ENVIRON, **overrides}).check()


def entra_settings(endpoint: str, **overrides: str) -> Settings:
    """Entra mode (no key) against `endpoint`, anonymous negotiate, unauthenticated events, with overrides."""
    environ = {
        "WEBPUBSUB_CREDENTIAL": "entra",
        "WEBPUBSUB_ENDPOINT": endpoint,
        "NEGOTIATE_AUTH": "anonymous",
        "EVENTHANDLER_AUTH": "none",
        "PUBLISH_AUTH": "none",
    }
    return load_settings({**environ, **overrides}).check()


# What else decides what the doctor reads: the App Service markers and the azd environment.
DOCTOR_CONTEXT_PREFIXES = ("WEBSITE_", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP")


def clear_app_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the app's settings (and the doctor's context) from the environment for one test."""
    for name in list(os.environ):
        if name.upper().startswith(APP_SETTING_PREFIXES + DOCTOR_CONTEXT_PREFIXES):
            monkeypatch.delenv(name)


def use_environment(**values: str) -> None:
    """Replace the app's settings in the process environment and forget the runtime built from the old ones.

    The autouse fixture of tests/conftest.py restores the environment after the test.
    """
    for name in [name for name in os.environ if name.startswith(APP_SETTING_PREFIXES)]:
        del os.environ[name]
    os.environ.update(values)
    reset_runtime()
