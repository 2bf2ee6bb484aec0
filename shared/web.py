"""Framework-neutral HTTP request and response values.

The application logic speaks these instead of `azure.functions` types so that it can be tested
and reused without the Functions runtime; `shared.adapter` converts at the edge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import AppError

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# `json.dumps(value, separators=(",", ":"), ensure_ascii=False)` without building an encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# Sent with every JSON answer: tokens and errors must never be cached or sniffed as HTML.
_JSON_HEADERS: Mapping[str, str] = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request. Header names are lower-case; repeated header lines are joined with ','."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    route: Mapping[str, str] = field(default_factory=dict)  # the route template's values, e.g. {"group": "chat"}

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_values(self, name: str) -> list[str]:
        """All values of a repeated query parameter, in order."""
        return [value for key, value in self.query if key == name]

    def query_value(self, name: str) -> str | None:
        values = self.query_values(name)
        return values[0] if values else None

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case ('' when absent)."""
        raw = self.header("content-type") or ""
        return raw.split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP response; `content_type` is the full Content-Type header value, if any."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None


def json_body(value: Any) -> bytes:
    """Compact UTF-8 JSON; strings UTF-8 cannot encode (lone surrogates, which valid JSON input can
    hold as escapes) are written as `\\uXXXX` escapes, so the value survives unchanged instead of failing."""
    try:
        return _COMPACT_JSON(value).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def utf8_text(text: str) -> bytes:
    """`text` as UTF-8; a surrogate pair split over two code points is joined, a lone surrogate becomes
    U+FFFD (as a browser's TextEncoder does), since plain text has no escape for it."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode("utf-8")


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json_body(payload), {**_JSON_HEADERS, **(headers or {})}, JSON_CONTENT_TYPE)


def error_response(error: AppError) -> Response:
    """Render an AppError as `{"error": {"code", "message"}}` with its status and headers."""
    payload = {"error": {"code": error.code, "message": error.public_message}}
    return json_response(error.status, payload, error.headers)
