"""GET /api/health and /api/health/live as the Functions host calls them, against the local service."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest

import function_app
from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub
from shared import __version__
from tests.support.functions import http_request


@pytest.fixture(scope="module")
def service() -> Iterator[RunningWebPubSub]:
    with LocalWebPubSub().run_in_thread() as running:
        yield running


def test_health_is_200_against_the_local_service_with_development_warnings(service: RunningWebPubSub) -> None:
    os.environ.update(
        {
            "WEBPUBSUB_CREDENTIAL": "connectionstring",
            "WEBPUBSUB_CONNECTION_STRING": service.connection_string,
            "NEGOTIATE_AUTH": "anonymous",
        }
    )
    response = function_app.health(http_request("GET", "health"))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    payload = json.loads(response.get_body())
    assert payload["status"] == "healthy"
    assert set(payload["checks"]) == {"configuration", "webpubsub", "access", "credential"}
    assert all(set(check) == {"status", "durationMs", "detail"} for check in payload["checks"].values())
    assert any("NEGOTIATE_AUTH=anonymous" in warning for warning in payload["warnings"])
    assert payload["version"] == __version__
    assert service.service.settings.access_key not in response.get_body().decode()


def test_health_in_entra_mode_uses_the_managed_identity(service: RunningWebPubSub) -> None:
    """azure-identity's real DefaultAzureCredential, pointed at the local service's identity endpoint."""
    os.environ.update(
        {
            "WEBPUBSUB_CREDENTIAL": "entra",
            "WEBPUBSUB_ENDPOINT": service.endpoint,
            "NEGOTIATE_AUTH": "anonymous",
            "EVENTHANDLER_AUTH": "none",
            "HEALTH_DEADLINE_SECONDS": "10",
            **service.identity_environment(),
        }
    )
    response = function_app.health(http_request("GET", "health"))
    payload = json.loads(response.get_body())
    assert payload["checks"]["credential"]["status"] == "healthy", payload
    assert response.status_code == 200


def test_health_with_invalid_settings_is_503_naming_the_setting() -> None:
    os.environ["WEBPUBSUB_CREDENTIAL"] = "nonsense"
    response = function_app.health(http_request("GET", "health"))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    payload = json.loads(response.get_body())
    assert payload["status"] == "unhealthy"
    assert "WEBPUBSUB_CREDENTIAL" in payload["checks"]["configuration"]["detail"]


# Values short enough that the log quotes them (typos are shown there), but secret-looking.
SECRET_LOOKING = "pw=Sup3r-S3cret!"


@pytest.mark.parametrize(
    ("setting", "rule"),
    [
        ("WEBPUBSUB_CREDENTIAL", "must be one of connectionstring, keyvault, entra"),
        ("HEALTH_CACHE_SECONDS", "must be a number from 0 to 300"),
        ("TOKEN_LIFETIME_MINUTES", "must be a whole number"),
        ("CLIENT_PAGE_ENABLED", "must be true or false"),
    ],
)
def test_health_names_a_bad_setting_and_its_rule_but_never_its_value(
    setting: str, rule: str, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ.update({"WEBPUBSUB_CREDENTIAL": "connectionstring", "NEGOTIATE_AUTH": "anonymous"})
    os.environ["WEBPUBSUB_CONNECTION_STRING"] = "Endpoint=http://localhost:8080;AccessKey=k;Version=1.0;"
    os.environ[setting] = SECRET_LOOKING
    with caplog.at_level(logging.ERROR):
        response = function_app.health(http_request("GET", "health"))  # anonymous: no credentials sent
    assert response.status_code == 503
    text = response.get_body().decode()
    assert "Sup3r-S3cret" not in text
    detail = json.loads(text)["checks"]["configuration"]["detail"]
    assert detail.startswith(f"{setting}: {rule}")
    assert detail.endswith("(the value is quoted in the app's log)")
    assert any("Sup3r-S3cret" in record.getMessage() for record in caplog.records)  # the operator still sees it


def test_live_is_200_even_with_invalid_settings() -> None:
    os.environ["WEBPUBSUB_CREDENTIAL"] = "nonsense"
    response = function_app.health_live(http_request("GET", "health/live"))
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "alive", "version": __version__}
