"""What /api/health answers: the checks' outcomes, the verdict, and the JSON body anyone may read.

The body names settings, hosts, the served hubs and causes, never a key, token, connection string,
the value of a setting, the vault or secret name or a role to grant (those go to the log: each
result keeps a `log_detail` for it, and the doctor prints them).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import __version__
from shared.web import Response, json_response

# Retry-After when there are no settings to take the cache time from.
FALLBACK_RETRY_AFTER_SECONDS = 10


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_SEVERITY = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}


def worst(statuses: Sequence[Status]) -> Status:
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.HEALTHY)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome; `detail` is shown to anonymous callers, `log_detail` only to the operator."""

    status: Status
    duration_ms: int
    detail: str
    log_detail: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "durationMs": self.duration_ms, "detail": self.detail}

    @property
    def for_log(self) -> str:
        return self.log_detail or self.detail


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: Status
    checks: Mapping[str, CheckResult]
    warnings: tuple[str, ...] = ()
    version: str = __version__
    retry_after_seconds: int = FALLBACK_RETRY_AFTER_SECONDS
    hubs: tuple[str, ...] = ()  # the hubs the app serves, the default first

    @property
    def http_status(self) -> int:
        return 200 if self.status is Status.HEALTHY else 503

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "hubs": list(self.hubs),
            "checks": {name: result.to_json() for name, result in self.checks.items()},
            "warnings": list(self.warnings),
            "version": self.version,
        }


def failed_report(detail: str) -> HealthReport:
    """The answer when health itself broke: unhealthy, and the log has the rest."""
    return HealthReport(status=Status.UNHEALTHY, checks={"health": CheckResult(Status.UNHEALTHY, 0, detail)})


def render(report: HealthReport) -> Response:
    headers = {} if report.http_status == 200 else {"Retry-After": str(report.retry_after_seconds)}
    return json_response(report.http_status, report.to_json(), headers)
