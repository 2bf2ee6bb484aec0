"""What the doctor found: one line per check, for people or (with --json) for scripts.

Every check says what it saw and, when something is wrong, what to do about it. Output goes
through `Report.render_*`, which masks every secret the command registered (keys, tokens,
connection strings, URL query values), so a careless message can never print one.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but look at it; does not change the exit code
    FAIL = "fail"  # broken; the exit code becomes 1
    SKIP = "skip"  # not checked, and the line says why


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. `code` is the service's own failure name when there is one."""

    name: str
    status: Status
    summary: str
    fix: str = ""
    code: str | None = None


def ok(name: str, summary: str) -> Check:
    return Check(name, Status.OK, summary)


def warn(name: str, summary: str, fix: str = "", code: str | None = None) -> Check:
    return Check(name, Status.WARN, summary, fix, code)


def fail(name: str, summary: str, fix: str = "", code: str | None = None) -> Check:
    return Check(name, Status.FAIL, summary, fix, code)


def skip(name: str, summary: str) -> Check:
    return Check(name, Status.SKIP, summary)


def fingerprint(secret: str) -> str:
    """A short, irreversible name for a secret, so two can be compared without showing either."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def redact_url(url: str) -> str:
    """The URL with every query value masked: `?code=` holds a Functions key, `access_token=` a token."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.query:
        return url
    query = urlencode([(name, MASK) for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def url_query_values(url: str) -> list[str]:
    try:
        return [value for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    except ValueError:
        return []


@dataclass
class Report:
    """The checks of one command, and the secrets its output must never contain."""

    command: str
    checks: list[Check] = field(default_factory=list)
    _secrets: set[str] = field(default_factory=set, repr=False)

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    def extend(self, checks: Iterable[Check]) -> None:
        self.checks.extend(checks)

    def conceal(self, *secrets: str | None) -> None:
        """Register values to mask wherever they appear in the output (short ones are ignored)."""
        self._secrets.update(secret for secret in secrets if secret and len(secret) >= 6)

    @property
    def ok(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {status.value: sum(check.status is status for check in self.checks) for status in Status}

    def _mask(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def render_text(self) -> str:
        lines = []
        for check in self.checks:
            line = f"{check.status.value.upper():<4} {check.name}: "
            line += f"{check.code}: {check.summary}" if check.code else check.summary
            if check.fix and check.status in {Status.FAIL, Status.WARN}:
                line += f" Fix: {check.fix}"
            lines.append(line)
        counts = self.counts()
        verdict = "all checks passed" if self.ok else "problems found"
        lines.append(
            f"{self.command}: {verdict} ({counts['fail']} failed, {counts['warn']} warnings, "
            f"{counts['ok']} ok, {counts['skip']} skipped)"
        )
        return self._mask("\n".join(lines))

    def render_json(self) -> str:
        document = {
            "command": self.command,
            "ok": self.ok,
            "counts": self.counts(),
            "checks": [
                {
                    "name": check.name,
                    "status": check.status.value,
                    "code": check.code,
                    "summary": self._mask(check.summary),
                    "fix": self._mask(check.fix),
                }
                for check in self.checks
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)
