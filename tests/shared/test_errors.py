"""Each error carries its status and a stable code; what the caller reads never holds the details."""

from __future__ import annotations

import pytest

from shared.errors import (
    AppError,
    BadRequest,
    ConfigError,
    DependencyUnavailable,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)


@pytest.mark.parametrize(
    ("error_type", "status", "code"),
    [
        (AppError, 500, "internal_error"),
        (BadRequest, 400, "bad_request"),
        (Unauthorized, 401, "unauthorized"),
        (Forbidden, 403, "forbidden"),
        (NotFound, 404, "not_found"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (UnsupportedMediaType, 415, "unsupported_media_type"),
    ],
)
def test_each_error_has_its_status_and_default_code(error_type: type[AppError], status: int, code: str) -> None:
    error = error_type("what went wrong")
    assert (error.status, error.code, error.public_message, error.headers) == (status, code, "what went wrong", {})
    assert error_type("x", code="specific").code == "specific"


def test_a_configuration_error_names_the_setting_in_the_log_only() -> None:
    error = ConfigError("WEBPUBSUB_HUB", "must start with a letter, got '1chat'")
    assert error.status == 500
    assert error.code == "configuration_error"
    assert error.log_message == "WEBPUBSUB_HUB: must start with a letter, got '1chat'"
    assert "WEBPUBSUB_HUB" not in error.public_message
    assert "1chat" not in error.public_message


def test_an_unavailable_dependency_asks_to_retry_and_keeps_its_detail_for_the_log() -> None:
    error = DependencyUnavailable("Key Vault", "ServiceRequestError: connection refused", retry_after_seconds=7)
    assert error.status == 503
    assert error.headers == {"Retry-After": "7"}
    assert error.public_message == "Key Vault is unavailable; retry later."
    assert "connection refused" in error.log_message
    assert "connection refused" not in error.public_message
