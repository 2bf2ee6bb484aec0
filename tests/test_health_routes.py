"""GET /api/health and /api/health/live as the Functions host calls them, against the local service."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

import function_app
from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub
from shared import __version__
from tests.conftest import http_request


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
    assert set(payload["checks"]) == {"configuration", "webpubsub", "credential"}
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


def test_live_is_200_even_with_invalid_settings() -> None:
    os.environ["WEBPUBSUB_CREDENTIAL"] = "nonsense"
    response = function_app.health_live(http_request("GET", "health/live"))
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "alive", "version": __version__}
