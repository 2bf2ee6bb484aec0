"""The small exception hierarchy that the adapter layer turns into HTTP answers.

    AppError                     500  base; public message is safe to show
    ├── BadRequest               400  the caller sent something malformed
    ├── Unauthorized             401  no identity, or an identity we cannot verify
    ├── Forbidden                403  a verified identity asked for more than it may have
    ├── NotFound                 404  nothing is served at this path (or it is switched off)
    ├── PayloadTooLarge          413
    ├── UnsupportedMediaType     415
    ├── DependencyUnavailable    503  Key Vault, Entra ID or the service is down; carries Retry-After
    └── ConfigError              500  a setting is missing or invalid; public body stays generic

Every message passed to these classes ends up in a response body or a log line, so callers
never put keys, tokens, signatures or connection strings in them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class AppError(Exception):
    """An error with a status code, a stable machine-readable code and a safe message."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def public_message(self) -> str:
        """What the caller may read; subclasses that hide details override it."""
        return self.message

    @property
    def log_message(self) -> str:
        """What the operator reads in the log; may be more precise than the public message."""
        return self.message


class BadRequest(AppError):
    status = 400
    default_code = "bad_request"


class Unauthorized(AppError):
    status = 401
    default_code = "unauthorized"


class Forbidden(AppError):
    status = 403
    default_code = "forbidden"


class NotFound(AppError):
    status = 404
    default_code = "not_found"


class PayloadTooLarge(AppError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status = 415
    default_code = "unsupported_media_type"


class DependencyUnavailable(AppError):
    """A dependency failed; the caller should retry after a while, the operator reads `detail`.

    `detail` may name resources (a vault, a secret) and roles; `summary` names the cause without them.
    """

    status = 503
    default_code = "dependency_unavailable"

    def __init__(self, dependency: str, detail: str, *, retry_after_seconds: int = 5, summary: str | None = None):
        super().__init__(
            f"{dependency} is unavailable; retry later.",
            headers={"Retry-After": str(retry_after_seconds)},
        )
        self.dependency = dependency
        self.detail = detail
        self.retry_after_seconds = retry_after_seconds
        # The cause without resource names or role hints, for anonymous readers (/api/health's body).
        self.summary = summary or f"{dependency} is unavailable"

    @property
    def log_message(self) -> str:
        return f"{self.dependency} unavailable: {self.detail}"


class ConfigError(AppError):
    """A setting is missing or invalid; names the setting so the fix is obvious.

    `value` is the rejected value, if any. It is quoted in `log_message` (the operator's log) to make
    typos obvious, and never in `detail` or the public message, which anyone may read: a value in
    the wrong setting may be a secret.
    """

    status = 500
    default_code = "configuration_error"

    def __init__(self, setting: str, reason: str, *, value: str | None = None):
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason
        self.value = value

    @property
    def public_message(self) -> str:
        return "The app is misconfigured; its log names the setting to fix."

    @property
    def detail(self) -> str:
        """The setting and the rule, without the value: safe for /api/health's anonymous body."""
        suffix = " (the value is quoted in the app's log)" if self.value is not None else ""
        return f"{self.setting}: {self.reason}{suffix}"

    @property
    def log_message(self) -> str:
        if self.value is None:
            return f"{self.setting}: {self.reason}"
        return f"{self.setting}: {self.reason}, not {quoted(self.value)}"


# A longer value is no typo of a mode, number or flag, and may be a key or connection string
# pasted into the wrong setting: the log gives its length only.
MAX_QUOTED_VALUE_LENGTH = 24


def quoted(raw: str) -> str:
    """A rejected setting value as the log shows it."""
    if len(raw) <= MAX_QUOTED_VALUE_LENGTH and raw.isprintable():
        return repr(raw)
    return f"a value of {len(raw)} characters (not shown: it may be a secret meant for another setting)"
