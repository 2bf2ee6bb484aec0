"""/api/health: can this app serve clients right now, and if not, why not.

`report` holds what health answers (statuses, the body), `monitor` how it finds out (the checks,
their scheduling, cache and deadline); both probe through `shared.probes`, as the doctor does.
Importing this package loads no SDK and no HTTP client; probes import what they need when they run.
"""

from __future__ import annotations

import logging

from shared import __version__
from shared.health.monitor import HealthMonitor as HealthMonitor
from shared.health.report import (
    CheckResult as CheckResult,
    HealthReport as HealthReport,
    Status as Status,
    failed_report,
    render as render,
)
from shared.probes import HttpProbe as HttpProbe
from shared.runtime import get_runtime
from shared.web import Response, json_response

logger = logging.getLogger(__name__)


def current_report() -> HealthReport:
    return get_runtime().health_monitor.report()


def health() -> Response:
    """GET /api/health: 200 when every check passes, else 503 with Retry-After; never raises."""
    try:
        return render(current_report())
    except Exception:
        logger.exception("Health check failed unexpectedly")
        return render(failed_report("the health check failed; see the log"))


def live() -> Response:
    """GET /api/health/live: the process answers; no settings, no dependencies."""
    return json_response(200, {"status": "alive", "version": __version__})
