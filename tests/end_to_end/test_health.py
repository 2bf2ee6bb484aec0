"""/api/health against the product as `make run` starts it: it must notice a key the service refuses.

With the app's access key different from the service's, negotiate still signs tokens (locally) and
clients hang on "connecting"; health must say so, naming the cause, and which hub the app serves.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from devstack.webpubsub import connection_string
from shared.runtime import reset_runtime
from tests.support.fakes import EMULATOR_KEY
from tests.support.stack import running_stack

OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvuts"


def test_health_reports_an_access_key_the_local_service_refuses(tmp_path: Path) -> None:
    with running_stack(tmp_path, HEALTH_CACHE_SECONDS="1") as stack:
        assert stack.service is not None
        healthy = httpx.get(stack.url("health"), timeout=10)
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["hubs"] == ["chat"]
        assert healthy.json()["checks"]["access"]["status"] == "healthy"

        # The app now signs with a key the service does not have (a regenerated or mistyped key).
        os.environ["WEBPUBSUB_CONNECTION_STRING"] = connection_string(stack.service.endpoint, OTHER_KEY)
        reset_runtime()
        negotiated = httpx.get(stack.url("negotiate"), params={"userId": "ada"}, timeout=10)
        assert negotiated.status_code == 200  # negotiate cannot tell: it signs locally
        response = httpx.get(stack.url("health"), timeout=10)

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    body = response.json()
    assert body["hubs"] == ["chat"]
    assert body["checks"]["webpubsub"]["status"] == "healthy"  # the service answers; it refuses the key
    access = body["checks"]["access"]
    assert access["status"] == "unhealthy"
    assert "hub chat: the service refuses the app's access key (HTTP 401)" in access["detail"]
    assert OTHER_KEY not in response.text
    assert EMULATOR_KEY not in response.text
